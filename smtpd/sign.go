package smtpd

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/mime/dkim"
	"github.com/trackrelay/trackrelay/store"
)

// DKIM signs each copy after the rewrite, as it streams to the upstream
// (RFC 6376; Ed25519 RFC 8463; SPEC §13), with the active keys of the
// copy's account for its From domain. Only keys whose record was seen
// published are active: the store's records say which (the relay's key
// checks set them), and Load reads them again whenever they change.
//
// What a copy gets:
//   - From domain without an active key of the account: nothing changes;
//     a message its sender signed passes untracked, as before, unless its
//     credential tracks signed mail anyway (trackSignedAnyway).
//   - With a key, unsigned by the sender: tracked as its credential says,
//     then signed.
//   - With a key, signed by the sender, and the account's ResignSigned
//     set: tracked and re-signed; the sender's broken signatures are
//     dropped unless KeepSenderSignature (mime/dkim says why dropping is
//     the default).
//   - With a key, signed by the sender, ResignSigned off: untracked, so
//     the sender's signature stays valid, and signed beside it (both
//     kept: both verify).
//
// A copy is never tracked when its sender signed it and it is not
// re-signed: that would only break the sender's signature.
type DKIM struct {
	log      *slog.Logger
	keys     atomic.Pointer[dkimKeys]
	loadMu   sync.Mutex // one Load at a time: each builds on the last
	outcomes *prometheus.CounterVec
}

// dkimKeys is one reading of the records, swapped whole.
type dkimKeys struct {
	accounts map[string]*dkimAccount
	parsed   map[string]parsedKey // by record key, so a reload parses only new keys
}

type dkimAccount struct {
	resign     bool                  // store.Account.ResignSigned
	keepSender bool                  // store.Account.KeepSenderSignature
	domains    map[string][]dkim.Key // active keys by From domain, RSA first
}

type parsedKey struct {
	pem    string
	signer crypto.Signer
}

// DKIM outcomes, the label of trackrelay_dkim_copies_total.
const (
	DKIMSigned           = "signed"            // signed and sent
	DKIMUnsignable       = "unsignable"        // no RFC 5322 header with a From field: sent unsigned
	DKIMNotDeterministic = "not_deterministic" // the two renderings differed: the try was aborted
)

// NewDKIM returns a signer without keys (Load gives it some); reg, when
// set, gets its counter.
func NewDKIM(log *slog.Logger, reg prometheus.Registerer) (*DKIM, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DKIM{log: log, outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackrelay_dkim_copies_total",
		Help: "Copies with an active DKIM key for their From domain, by outcome: signed, unsignable (sent unsigned) or not_deterministic (try aborted).",
	}, []string{"outcome"})}
	for _, o := range []string{DKIMSigned, DKIMUnsignable, DKIMNotDeterministic} {
		d.outcomes.WithLabelValues(o)
	}
	if reg != nil {
		if err := reg.Register(d.outcomes); err != nil {
			return nil, err
		}
	}
	d.keys.Store(&dkimKeys{})
	return d, nil
}

// Load reads every active key and the settings of their accounts from
// the store and swaps them in; copies delivered from then on use them.
// A key whose private key does not parse is left out and logged. It
// returns how many keys sign.
func (d *DKIM) Load(ctx context.Context, st store.RecordStore) (int, error) {
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	recs, err := store.List[store.DKIMKey](ctx, st, store.KindDKIMKey, "")
	if err != nil {
		return 0, err
	}
	prev := d.keys.Load()
	next := &dkimKeys{accounts: map[string]*dkimAccount{}, parsed: map[string]parsedKey{}}
	n := 0
	for i := range recs {
		k := &recs[i]
		if k.State != store.DKIMActive {
			continue
		}
		_, id, _ := k.RecordID()
		pk, ok := prev.parsed[id]
		if !ok || pk.pem != k.Private {
			s, err := dkim.ParsePrivateKey([]byte(k.Private))
			if err != nil {
				d.log.Error("dkim key unusable: it does not sign", "account", k.Account, "domain", k.Domain, "selector", k.Selector, "err", err)
				continue
			}
			pk = parsedKey{pem: k.Private, signer: s}
		}
		next.parsed[id] = pk
		a := next.accounts[k.Account]
		if a == nil {
			a = &dkimAccount{domains: map[string][]dkim.Key{}}
			next.accounts[k.Account] = a
		}
		a.domains[k.Domain] = append(a.domains[k.Domain], dkim.Key{Domain: k.Domain, Selector: k.Selector, Signer: pk.signer})
		n++
	}
	for name, a := range next.accounts {
		for _, keys := range a.domains {
			// RSA first: every verifier checks it; Ed25519 goes beside it.
			slices.SortStableFunc(keys, func(x, y dkim.Key) int {
				kx, _ := dkim.KindOf(x.Signer)
				ky, _ := dkim.KindOf(y.Signer)
				switch {
				case kx == ky:
					return 0
				case kx == dkim.RSA:
					return -1
				}
				return 1
			})
		}
		acct, err := store.Get[store.Account](ctx, st, store.KindAccount, name)
		if errors.Is(err, store.ErrNotFound) {
			continue // keys of an account that is gone: they keep signing its queued mail
		} else if err != nil {
			return 0, err
		}
		a.resign, a.keepSender = acct.ResignSigned, acct.KeepSenderSignature
	}
	d.keys.Store(next)
	return n, nil
}

// keysFor returns the account's settings and its active keys for the
// first of domains that has any.
func (d *DKIM) keysFor(account string, domains []string) (*dkimAccount, []dkim.Key) {
	a := d.keys.Load().accounts[account]
	if a == nil {
		return nil, nil
	}
	for _, dom := range domains {
		if keys := a.domains[dom]; len(keys) > 0 {
			return a, keys
		}
	}
	return a, nil
}

// Signing returns the selectors of the keys that sign account's mail
// from domain now, in signing order.
func (d *DKIM) Signing(account, domain string) []string {
	_, keys := d.keysFor(account, []string{domain})
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k.Selector)
	}
	return out
}

// signPlan is what the signer decided for one try of a copy.
type signPlan struct {
	d           *DKIM
	log         *slog.Logger
	keys        []dkim.Key
	keep        bool // keep the sender's DKIM-Signature fields
	trackSigned bool // track the copy although its sender signed it
}

// trackSignedAnyway is the credential's track_signed setting (the
// operator's choice to track DKIM-signed mail and break its signature),
// which applies to mail without a key of the account.
func trackSignedAnyway(c *store.Copy) bool { return c.TrackSigned }

// dkimPlan reads the header of the spooled message in f (then seeks back
// to its start) when the copy's account has signing keys, and decides
// how the copy is tracked and signed. A zero plan changes nothing.
func (q *Queue) dkimPlan(c *store.Copy, f io.ReadSeeker) (signPlan, error) {
	d := q.cfg.DKIM
	p := signPlan{trackSigned: trackSignedAnyway(c)}
	if d == nil || d.keys.Load().accounts[c.Account] == nil {
		return p, nil
	}
	p.d, p.log = d, q.log.With("copy", store.FormatID(c.ID))
	info, err := dkim.Inspect(f)
	if _, serr := f.Seek(0, io.SeekStart); serr != nil {
		return p, fmt.Errorf("smtpd: dkim: %w", serr)
	}
	if errors.Is(err, dkim.ErrUnsignable) {
		p.unsignable(err)
		return p, nil
	} else if err != nil {
		return p, fmt.Errorf("smtpd: dkim: %w", err)
	}
	acct, keys := d.keysFor(c.Account, info.FromDomains)
	if len(keys) == 0 {
		return p, nil
	}
	p.keys = keys
	if info.Signed() {
		if acct.resign || p.trackSigned {
			p.trackSigned, p.keep = true, acct.keepSender
		} else {
			p.keep = true // untouched: the sender's signature still verifies
		}
	}
	return p, nil
}

func (p *signPlan) unsignable(err error) {
	p.d.outcomes.WithLabelValues(DKIMUnsignable).Inc()
	p.log.Warn("dkim: copy cannot be signed, sent unsigned", "err", err)
}

// wrap returns write signing what it writes, or write itself when there
// is nothing to sign. write must give the same bytes at every call (the
// copy is rendered twice unless it is small: mime/dkim.Sign).
func (p *signPlan) wrap(write func(io.Writer) error) func(io.Writer) error {
	if len(p.keys) == 0 {
		return write
	}
	return func(w io.Writer) error {
		err := dkim.Sign(w, write, p.keys, dkim.Options{KeepExisting: p.keep})
		switch {
		case err == nil:
			p.d.outcomes.WithLabelValues(DKIMSigned).Inc()
			return nil
		case errors.Is(err, dkim.ErrUnsignable):
			// Nothing reached w yet.
			p.unsignable(err)
			return write(w)
		case errors.Is(err, dkim.ErrNotDeterministic):
			// The signature does not match what was sent: the upstream
			// connection is dropped (never DATA's final dot) and the copy
			// retried.
			p.d.outcomes.WithLabelValues(DKIMNotDeterministic).Inc()
			p.log.Error("dkim: the copy rendered differently the second time; try aborted")
			return errLocal{err}
		}
		return err
	}
}
