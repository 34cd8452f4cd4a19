package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/mime/dkim"
	"github.com/trackrelay/trackrelay/store"
)

// DKIM keys of an account's From domains (SPEC §13; RFC 6376, RFC 8463):
// made, checked in DNS, rotated and removed at run time. A key signs only
// while it is active, and it becomes active only when a check has seen
// its record published.
//
// Life of a key:
//   - pending: made; its record is not (yet) seen published. It does not
//     sign. Checks (this API's, and the relay's every few minutes) look
//     it up; the first that finds it published makes it active.
//   - active: signs. When a newer key of the same domain and type becomes
//     active (a rotation), this one becomes retiring. Should its record
//     vanish or change, it goes back to pending and stops signing: a
//     signature no receiver can verify is worse than none.
//   - retiring: no longer signs, but its record must stay published until
//     RetireAt (config dkim.retire_after, a week by default), so that
//     mail signed with it shortly before still verifies when a receiver
//     checks it late (a queued copy is signed afresh at each try, so it
//     always carries the newest key). Then it is retired.
//   - retired: the record may be removed from DNS; the private key is
//     erased from the record.
//
// Old and new keys do not sign side by side during the overlap: the new
// key signs only once its record is published and checked, so the old
// signature would add nothing a receiver needs, and an RSA-2048
// signature costs about a millisecond of CPU per copy. An RSA and an
// Ed25519 key of a domain are both active and both sign (not every
// verifier checks Ed25519 yet).

func init() {
	routes = append(routes,
		route{http.MethodGet, "/v1/dkim", buffered, (*server).listDKIM},
		route{http.MethodPost, "/v1/dkim", direct, (*server).makeDKIM},
		route{http.MethodGet, "/v1/dkim/{domain}", buffered, (*server).getDKIM},
		route{http.MethodPost, "/v1/dkim/{domain}/check", direct, (*server).checkDKIM},
		route{http.MethodPost, "/v1/dkim/{domain}/rotate", direct, (*server).rotateDKIM},
		route{http.MethodDelete, "/v1/dkim/{domain}/{selector}", direct, (*server).removeDKIM},
	)
}

// DKIMSettings are the relay's DKIM settings the API uses (config
// section [dkim]). The zero value checks through /etc/resolv.conf's
// resolver and retires a replaced key after DefaultRetireAfter.
type DKIMSettings struct {
	// Resolver is host[:port] of the DNS server records are checked
	// against; "" is /etc/resolv.conf's.
	Resolver string
	// RetireAfter is how long a replaced key stays published, not signing.
	RetireAfter time.Duration
	// CNAMEZone, when set, offers each key's record as a CNAME to a TXT
	// record the operator hosts in this zone.
	CNAMEZone string
}

// DefaultRetireAfter is DKIMSettings.RetireAfter when it is 0.
const DefaultRetireAfter = 7 * 24 * time.Hour

func (d DKIMSettings) retireAfter() time.Duration {
	if d.RetireAfter <= 0 {
		return DefaultRetireAfter
	}
	return d.RetireAfter
}

// DKIMKey is a key as the API shows it: never its private key.
type DKIMKey struct {
	Account  string `json:"account"`
	Domain   string `json:"domain"`
	Selector string `json:"selector"`
	Type     string `json:"type"` // rsa or ed25519
	State    string `json:"state"`
	// Signing says whether the key signs mail now (active).
	Signing bool   `json:"signing"`
	Problem string `json:"problem,omitempty"`
	// Name is where the record goes: SELECTOR._domainkey.DOMAIN.
	Name string `json:"name"`
	// Record is the TXT value; ZoneLine the whole record as one
	// zone-file line.
	Record   string `json:"record"`
	ZoneLine string `json:"zone_line"`
	// CNAME is the alternative to ZoneLine when the operator hosts the
	// records: a zone-file line pointing Name at Hosted's name.
	CNAME string `json:"cname,omitempty"`
	// Hosted is the TXT record the operator publishes for the CNAME.
	Hosted   string `json:"hosted,omitempty"`
	Created  string `json:"created"`
	Checked  string `json:"checked,omitempty"`
	RetireAt string `json:"retire_at,omitempty"`
}

// DKIMDomain is the keys of one From domain of an account.
type DKIMDomain struct {
	Domain string `json:"domain"`
	// Published is true when every key that must be published (pending,
	// active, retiring) was seen published at its last check.
	Published bool      `json:"published"`
	Keys      []DKIMKey `json:"keys"`
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// dkimKeyOf is the API's view of k.
func (s *server) dkimKeyOf(k *store.DKIMKey) DKIMKey {
	out := DKIMKey{
		Account: k.Account, Domain: k.Domain, Selector: k.Selector, Type: k.Algorithm, State: k.State,
		Signing: k.State == store.DKIMActive, Problem: k.Problem, Record: k.Record,
		Created: formatTime(k.Created), Checked: formatTime(k.Checked),
	}
	out.Name, _ = dkim.RecordName(k.Domain, k.Selector)
	if k.State == store.DKIMRetiring || k.State == store.DKIMRetired {
		out.RetireAt = formatTime(k.RetireAt)
	}
	kr, err := dkim.ParseRecord(k.Record)
	if err != nil {
		return out
	}
	out.ZoneLine, _ = dkim.ZoneLine(k.Domain, k.Selector, kr.Key)
	if z := s.cfg.DKIM.CNAMEZone; z != "" {
		if hosted, err := dkim.ZoneLine(k.Domain+"."+z, k.Selector, kr.Key); err == nil {
			target, _ := dkim.RecordName(k.Domain+"."+z, k.Selector)
			out.CNAME = out.Name + ". IN CNAME " + target + "."
			out.Hosted = hosted
		}
	}
	return out
}

// mustPublish reports whether k's record must be in DNS now.
func mustPublish(k *store.DKIMKey) bool { return k.State != store.DKIMRetired }

func (s *server) dkimDomainOf(domain string, keys []store.DKIMKey) DKIMDomain {
	out := DKIMDomain{Domain: domain, Published: true, Keys: []DKIMKey{}}
	for i := range keys {
		k := &keys[i]
		out.Keys = append(out.Keys, s.dkimKeyOf(k))
		if mustPublish(k) && (k.Problem != "" || k.Checked.IsZero() || k.State == store.DKIMPending) {
			out.Published = false
		}
	}
	return out
}

// dkimScope is the account a DKIM call acts on: the key's own; for an
// operator the one named with ?account=, or every account ("") when
// none is named and all may be true.
func (s *server) dkimScope(r *http.Request, p *Principal, all bool) (string, error) {
	if p.Operator && all && p.Account == "" {
		return "", nil
	}
	return s.account(r, p)
}

// domainKeys returns the keys of domain in scope (account "" = every
// account), oldest first.
func domainKeys(ctx context.Context, st store.RecordStore, account, domain string) ([]store.DKIMKey, error) {
	all, err := store.List[store.DKIMKey](ctx, st, store.KindDKIMKey, account)
	if err != nil {
		return nil, err
	}
	var out []store.DKIMKey
	for _, k := range all {
		if k.Domain == domain {
			out = append(out, k)
		}
	}
	slices.SortStableFunc(out, func(a, b store.DKIMKey) int { return a.Created.Compare(b.Created) })
	return out, nil
}

func pathDomain(r *http.Request) (string, error) {
	d, err := dkim.NormalizeDomain(r.PathValue("domain"))
	if err != nil {
		return "", badRequest("domain: %v", err)
	}
	return d, nil
}

func (s *server) listDKIM(w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.dkimScope(r, p, true)
	if err != nil {
		return err
	}
	keys, err := store.List[store.DKIMKey](r.Context(), s.cfg.Store, store.KindDKIMKey, acct)
	if err != nil {
		return err
	}
	slices.SortStableFunc(keys, func(a, b store.DKIMKey) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Domain, b.Domain), a.Created.Compare(b.Created))
	})
	out := make([]DKIMKey, 0, len(keys))
	for i := range keys {
		out = append(out, s.dkimKeyOf(&keys[i]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// scopedDomainKeys returns the keys of the path's domain in the caller's
// scope; none is "not found", whether the domain has keys of another
// account or none at all.
func (s *server) scopedDomainKeys(r *http.Request, p *Principal) (string, string, []store.DKIMKey, error) {
	domain, err := pathDomain(r)
	if err != nil {
		return "", "", nil, err
	}
	acct, err := s.dkimScope(r, p, true)
	if err != nil {
		return "", "", nil, err
	}
	keys, err := domainKeys(r.Context(), s.cfg.Store, acct, domain)
	if err != nil {
		return "", "", nil, err
	}
	if len(keys) == 0 {
		if acct == "" {
			return "", "", nil, errorf(http.StatusNotFound, "dkim: no keys for %s", domain)
		}
		return "", "", nil, errorf(http.StatusNotFound, "dkim: account %s has no keys for %s", acct, domain)
	}
	return domain, acct, keys, nil
}

func (s *server) getDKIM(w http.ResponseWriter, r *http.Request, p *Principal) error {
	domain, _, keys, err := s.scopedDomainKeys(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.dkimDomainOf(domain, keys))
	return nil
}

// dkimRequest is the body of a keygen or a rotation.
type dkimRequest struct {
	Domain string `json:"domain"`
	Type   string `json:"type"`
}

func (s *server) makeDKIM(w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	var req dkimRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return err
	}
	domain, err := dkim.NormalizeDomain(req.Domain)
	if err != nil {
		return badRequest("domain: %v", err)
	}
	if !strings.Contains(domain, ".") {
		return badRequest("domain: %s is not a domain mail is sent from", domain)
	}
	kind, err := keyType(req.Type)
	if err != nil {
		return err
	}
	k, err := NewDKIMKey(r.Context(), s.cfg.Store, acct, domain, kind, s.cfg.Now())
	if err != nil {
		return err
	}
	s.log.Info("dkim key made", "account", acct, "domain", domain, "selector", k.Selector, "type", k.Algorithm)
	s.changed()
	writeJSON(w, http.StatusCreated, s.dkimKeyOf(k))
	return nil
}

func keyType(t string) (dkim.Kind, error) {
	if t == "" {
		return dkim.RSA, nil
	}
	k, err := dkim.ParseKind(t)
	if err != nil {
		return "", badRequest("type: want rsa or ed25519")
	}
	return k, nil
}

// NewDKIMKey makes a key of kind for account's From domain, pending, under
// a selector no key of the domain uses (of any account: the selector
// names the record in the domain's DNS).
func NewDKIMKey(ctx context.Context, st store.RecordStore, account, domain string, kind dkim.Kind, now time.Time) (*store.DKIMKey, error) {
	signer, err := dkim.GenerateKey(kind)
	if err != nil {
		return nil, err
	}
	pem, err := dkim.MarshalPrivateKey(signer)
	if err != nil {
		return nil, err
	}
	rec, err := dkim.Record(signer)
	if err != nil {
		return nil, err
	}
	for range 5 {
		var lookupErr error
		sel := dkim.NewSelector(kind, now, func(sel string) bool {
			_, err := st.GetRecord(ctx, store.KindDKIMKey, store.DKIMKeyID(domain, sel))
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				lookupErr = err
			}
			return err == nil
		})
		if lookupErr != nil {
			return nil, lookupErr
		}
		k := &store.DKIMKey{Account: account, Domain: domain, Selector: sel, Algorithm: string(kind),
			Private: string(pem), Record: rec, State: store.DKIMPending, Created: now.UTC()}
		err := store.Create(ctx, st, k)
		if errors.Is(err, store.ErrExists) {
			continue // made at the same moment by another call: take the next name
		}
		return k, err
	}
	return nil, errorf(http.StatusConflict, "dkim: no free selector for %s, try again", domain)
}

func (s *server) checkDKIM(w http.ResponseWriter, r *http.Request, p *Principal) error {
	domain, _, keys, err := s.scopedDomainKeys(r, p)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	out := make([]store.DKIMKey, 0, len(keys))
	for i := range keys {
		k := &keys[i]
		if k.State == store.DKIMRetired {
			out = append(out, *k)
			continue
		}
		nk, err := CheckDKIMKey(r.Context(), s.cfg.Store, s.cfg.DKIM, store.DKIMKeyID(k.Domain, k.Selector), now, s.log)
		if err != nil {
			return err
		}
		out = append(out, *nk)
	}
	// An activation may have retired an older key of the same list.
	for i := range out {
		if cur, err := store.Get[store.DKIMKey](r.Context(), s.cfg.Store, store.KindDKIMKey, store.DKIMKeyID(out[i].Domain, out[i].Selector)); err == nil {
			out[i] = *cur
		}
	}
	s.changed()
	writeJSON(w, http.StatusOK, s.dkimDomainOf(domain, out))
	return nil
}

func (s *server) rotateDKIM(w http.ResponseWriter, r *http.Request, p *Principal) error {
	domain, acct, keys, err := s.scopedDomainKeys(r, p)
	if err != nil {
		return err
	}
	var req struct {
		Type string `json:"type"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(r.Body, &req); err != nil {
			return err
		}
	}
	if acct == "" {
		// An operator without ?account=: the domain's keys must be of one
		// account.
		acct = keys[0].Account
		for _, k := range keys {
			if k.Account != acct {
				return badRequest("account: %s has keys of several accounts: name one with ?account=NAME", domain)
			}
		}
	}
	var kinds []dkim.Kind
	if req.Type != "" {
		k, err := keyType(req.Type)
		if err != nil {
			return err
		}
		kinds = []dkim.Kind{k}
	} else {
		for _, k := range keys {
			if kd := dkim.Kind(k.Algorithm); k.State == store.DKIMActive && !slices.Contains(kinds, kd) {
				kinds = append(kinds, kd)
			}
		}
		if len(kinds) == 0 {
			return errorf(http.StatusConflict, "dkim: %s has no active key to rotate: check the pending one, or make one with POST /v1/dkim", domain)
		}
	}
	for _, k := range keys {
		if k.State == store.DKIMPending && slices.Contains(kinds, dkim.Kind(k.Algorithm)) {
			return errorf(http.StatusConflict, "dkim: a new %s key of %s (selector %s) is waiting for its record to be published: publish it and check, or delete it first", k.Algorithm, domain, k.Selector)
		}
	}
	now := s.cfg.Now()
	for _, kind := range kinds {
		k, err := NewDKIMKey(r.Context(), s.cfg.Store, acct, domain, kind, now)
		if err != nil {
			return err
		}
		s.log.Info("dkim key made for a rotation", "account", acct, "domain", domain, "selector", k.Selector, "type", k.Algorithm)
		keys = append(keys, *k)
	}
	s.changed()
	writeJSON(w, http.StatusCreated, s.dkimDomainOf(domain, keys))
	return nil
}

func (s *server) removeDKIM(w http.ResponseWriter, r *http.Request, p *Principal) error {
	domain, _, keys, err := s.scopedDomainKeys(r, p)
	if err != nil {
		return err
	}
	sel := strings.ToLower(r.PathValue("selector"))
	var k *store.DKIMKey
	for i := range keys {
		if keys[i].Selector == sel {
			k = &keys[i]
		}
	}
	if k == nil {
		return errorf(http.StatusNotFound, "dkim: no key %s for %s", clip(sel), domain)
	}
	if k.State == store.DKIMActive && r.URL.Query().Get("force") != "true" {
		return errorf(http.StatusConflict, "dkim: key %s signs mail of %s: rotate first, or add ?force=true to stop signing with it now", sel, domain)
	}
	if err := store.Delete(r.Context(), s.cfg.Store, store.KindDKIMKey, store.DKIMKeyID(domain, sel)); err != nil {
		return err
	}
	s.log.Info("dkim key removed", "account", k.Account, "domain", domain, "selector", sel, "state", k.State)
	s.changed()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// CheckDKIMKey looks up the record of the key with record id id and
// records what it found (SPEC §13): a pending key seen published becomes
// active, and the older active keys of its account, domain and type
// become retiring; an active key whose record is gone or wrong goes back
// to pending; a retiring key past its RetireAt is retired. A lookup that
// fails changes no state: the problem is noted and the next check tries
// again. log tells of state changes.
func CheckDKIMKey(ctx context.Context, st store.RecordStore, set DKIMSettings, id string, now time.Time, log *slog.Logger) (*store.DKIMKey, error) {
	return checkDKIMKey(ctx, st, set, id, now, 0, log)
}

// errUnchanged leaves a record as it is: the check found what it says.
var errUnchanged = errors.New("api: dkim: unchanged")

// checkDKIMKey is CheckDKIMKey recording a check that found nothing new
// only when the record's Checked is quiet or more old (0: always).
func checkDKIMKey(ctx context.Context, st store.RecordStore, set DKIMSettings, id string, now time.Time, quiet time.Duration, log *slog.Logger) (*store.DKIMKey, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now = now.UTC()
	cur, err := store.Get[store.DKIMKey](ctx, st, store.KindDKIMKey, id)
	if err != nil {
		return nil, err
	}
	if cur.State == store.DKIMRetiring && !cur.RetireAt.After(now) || cur.State == store.DKIMRetired {
		return retireDKIMKey(ctx, st, id, now, log)
	}
	kr, err := dkim.ParseRecord(cur.Record)
	if err != nil {
		return nil, fmt.Errorf("api: dkim key %s: stored record: %w", id, err)
	}
	verdict, lookupErr := dkim.Check(ctx, set.Resolver, cur.Domain, cur.Selector, kr.Key)
	if lookupErr != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var out *store.DKIMKey
	activated := false
	err = store.Update[store.DKIMKey](ctx, st, store.KindDKIMKey, id, false, func(k *store.DKIMKey) (*store.DKIMKey, error) {
		activated = false
		was := *k
		k.Checked = now
		switch {
		case lookupErr != nil:
			k.Problem = "the DNS lookup failed, try again later: " + lookupErr.Error()
		case verdict.OK():
			k.Problem = ""
			if k.State == store.DKIMPending {
				k.State, activated = store.DKIMActive, true
			}
		default:
			k.Problem = verdict.String()
			if k.State == store.DKIMActive {
				k.State = store.DKIMPending
			}
		}
		out = k
		if k.State == was.State && k.Problem == was.Problem && now.Sub(was.Checked) < quiet {
			out = &was
			return nil, errUnchanged
		}
		return k, nil
	})
	if errors.Is(err, errUnchanged) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	switch {
	case activated:
		log.Info("dkim key published: it signs now", "account", out.Account, "domain", out.Domain, "selector", out.Selector)
		if err := retireOlder(ctx, st, out, now.Add(set.retireAfter()), log); err != nil {
			return out, err
		}
	case cur.State == store.DKIMActive && out.State == store.DKIMPending:
		log.Warn("dkim key record no longer published right: it stops signing until it is", "account", out.Account,
			"domain", out.Domain, "selector", out.Selector, "problem", out.Problem)
	}
	return out, nil
}

// retireOlder makes the other active keys of k's account, domain and type
// retiring, until retireAt.
func retireOlder(ctx context.Context, st store.RecordStore, k *store.DKIMKey, retireAt time.Time, log *slog.Logger) error {
	keys, err := domainKeys(ctx, st, k.Account, k.Domain)
	if err != nil {
		return err
	}
	for _, o := range keys {
		if o.Selector == k.Selector || o.Algorithm != k.Algorithm || o.State != store.DKIMActive {
			continue
		}
		err := store.Update[store.DKIMKey](ctx, st, store.KindDKIMKey, store.DKIMKeyID(o.Domain, o.Selector), false, func(x *store.DKIMKey) (*store.DKIMKey, error) {
			if x.State == store.DKIMActive {
				x.State, x.RetireAt = store.DKIMRetiring, retireAt.UTC()
			}
			return x, nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		log.Info("dkim key replaced: it no longer signs; keep its record published until it retires", "account", o.Account,
			"domain", o.Domain, "selector", o.Selector, "replaced_by", k.Selector, "retire_at", retireAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// retireDKIMKey retires a key (its time is up) and erases its private
// key: it will never sign again.
func retireDKIMKey(ctx context.Context, st store.RecordStore, id string, now time.Time, log *slog.Logger) (*store.DKIMKey, error) {
	var out *store.DKIMKey
	changed := false
	err := store.Update[store.DKIMKey](ctx, st, store.KindDKIMKey, id, false, func(k *store.DKIMKey) (*store.DKIMKey, error) {
		changed = k.State != store.DKIMRetired || k.Private != ""
		k.State, k.Private, k.Problem = store.DKIMRetired, "", ""
		out = k
		return k, nil
	})
	if err == nil && changed {
		log.Info("dkim key retired: its record may be removed from DNS", "account", out.Account, "domain", out.Domain, "selector", out.Selector)
	}
	return out, err
}

// DKIMMaintainer is the relay's periodic work on every key: Run checks
// the pending keys every CheckEvery, the active and retiring ones every
// RecheckEvery, and retires the retiring ones whose time is up. A check
// that finds nothing new is remembered here rather than written to the
// record (at most once a day: every record write makes every cache of
// records on every node reload), so its Checked time lags by up to a day.
type DKIMMaintainer struct {
	Store        store.RecordStore
	Settings     DKIMSettings
	CheckEvery   time.Duration
	RecheckEvery time.Duration
	Log          *slog.Logger

	checked map[string]time.Time // record id -> last check by this maintainer
}

// quietChecks is how old a key's Checked may grow while the checks find
// nothing new.
const quietChecks = 24 * time.Hour

// Run checks the keys due at now and returns how many changed state. It
// is not safe to call from several goroutines at once.
func (m *DKIMMaintainer) Run(ctx context.Context, now time.Time) (int, error) {
	keys, err := store.List[store.DKIMKey](ctx, m.Store, store.KindDKIMKey, "")
	if err != nil {
		return 0, err
	}
	if m.checked == nil {
		m.checked = map[string]time.Time{}
	}
	seen := map[string]time.Time{}
	changed := 0
	var errs []error
	for _, k := range keys {
		id := store.DKIMKeyID(k.Domain, k.Selector)
		last := k.Checked
		if t := m.checked[id]; t.After(last) {
			last = t
		}
		seen[id] = last
		every := m.RecheckEvery
		switch {
		case k.State == store.DKIMRetired:
			continue
		case k.State == store.DKIMPending:
			every = m.CheckEvery
		case k.State == store.DKIMRetiring && !k.RetireAt.After(now):
			every = 0
		}
		if now.Sub(last) < every {
			continue
		}
		nk, err := checkDKIMKey(ctx, m.Store, m.Settings, id, now, quietChecks, m.Log)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			if ctx.Err() != nil {
				return changed, ctx.Err()
			}
			errs = append(errs, err)
			continue
		}
		seen[id] = now
		if nk.State != k.State {
			changed++
		}
	}
	m.checked = seen // forgets removed keys
	return changed, errors.Join(errs...)
}
