package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

const keyOperator = "operator-key-0123456789abcdef"

// dkimEnv is the real API over a real store, with keys of accounts shop
// and other and an operator key, checking DKIM records against a real
// DNS server the test fills in.
type dkimEnv struct {
	*env
	dns  *dkimtest.DNS
	logs *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newDKIMEnv(t *testing.T, cnameZone string) *dkimEnv {
	t.Helper()
	dir := t.TempDir()
	relay, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	spool, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: relay, MaxMessageBytes: 1 << 20, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	for _, a := range []string{"shop", "other"} {
		if err := store.Create(context.Background(), relay, &store.Account{Name: a}); err != nil {
			t.Fatal(err)
		}
	}
	kr, err := NewKeyring([]Key{
		{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "shop-api", Account: "shop"}},
		{Hash: hashKey(t, keyOther), Cred: &smtpd.Credential{Username: "other-api", Account: "other"}},
		{Hash: hashKey(t, keyOperator), Operator: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := &dkimEnv{dns: dkimtest.StartDNS(t), logs: &syncBuf{}}
	d.env = &env{t: t, relay: relay, spool: spool, now: time.Date(2026, 7, 6, 10, 0, 0, 0, time.UTC)}
	h := New(Config{
		Submitter: spool, Store: relay, Keys: kr,
		DKIM: DKIMSettings{Resolver: d.dns.Addr, RetireAfter: 48 * time.Hour, CNAMEZone: cnameZone},
		Log:  slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:  func() time.Time { return d.now },
	})
	d.srv = newTestServer(h)
	t.Cleanup(d.srv.Close)
	return d
}

// call makes a request with key and a JSON body (when body is not nil)
// and decodes a 2xx answer into out.
func (d *dkimEnv) call(method, path, key string, body, out any) (int, []byte) {
	d.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	st, _, b := d.do(method, path, key, rd, "Content-Type", "application/json")
	if out != nil && st/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			d.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return st, b
}

func (d *dkimEnv) keygen(key, domain, typ string) DKIMKey {
	d.t.Helper()
	var k DKIMKey
	st, b := d.call(http.MethodPost, "/v1/dkim", key, map[string]string{"domain": domain, "type": typ}, &k)
	if st != http.StatusCreated {
		d.t.Fatalf("keygen %s: %d %s", domain, st, b)
	}
	return k
}

func (d *dkimEnv) check(key, domain string) DKIMDomain {
	d.t.Helper()
	var dd DKIMDomain
	if st, b := d.call(http.MethodPost, "/v1/dkim/"+domain+"/check", key, nil, &dd); st != http.StatusOK {
		d.t.Fatalf("check %s: %d %s", domain, st, b)
	}
	return dd
}

func (d *dkimEnv) stored(domain, selector string) *store.DKIMKey {
	d.t.Helper()
	k, err := store.Get[store.DKIMKey](context.Background(), d.relay, store.KindDKIMKey, store.DKIMKeyID(domain, selector))
	if err != nil {
		d.t.Fatal(err)
	}
	return k
}

func stateOf(dd DKIMDomain, selector string) string {
	for _, k := range dd.Keys {
		if k.Selector == selector {
			return k.State
		}
	}
	return "absent"
}

var zoneLineRE = regexp.MustCompile(`^(tr202607[re](-\d+)?)\._domainkey\.shop\.example\. IN TXT( "[^"]{1,255}")+$`)

// TestDKIMKeygen: a key is made pending, with its record as one zone-file
// line (a name server reads it: the DNS server is filled from it), for
// RSA (the default) and Ed25519; the private key is never shown or
// logged; bad requests get clear answers.
func TestDKIMKeygen(t *testing.T) {
	d := newDKIMEnv(t, "")
	rk := d.keygen(keyShop, "Shop.Example.", "")
	ek := d.keygen(keyShop, "shop.example", "ed25519")
	for _, k := range []DKIMKey{rk, ek} {
		if k.State != store.DKIMPending || k.Signing || k.Account != "shop" || k.Domain != "shop.example" {
			t.Errorf("new key: %+v", k)
		}
		if !zoneLineRE.MatchString(k.ZoneLine) {
			t.Errorf("zone line %q", k.ZoneLine)
		}
		if k.Name != k.Selector+"._domainkey.shop.example" {
			t.Errorf("name %q", k.Name)
		}
		d.dns.SetZoneLine(t, k.ZoneLine)
	}
	if rk.Type != "rsa" || !strings.HasPrefix(rk.Record, "v=DKIM1; k=rsa; p=") || rk.Selector != "tr202607r" {
		t.Errorf("rsa key: %+v", rk)
	}
	if ek.Type != "ed25519" || !strings.HasPrefix(ek.Record, "v=DKIM1; k=ed25519; p=") || ek.Selector != "tr202607e" {
		t.Errorf("ed25519 key: %+v", ek)
	}
	// Both records, published from the zone lines, check out.
	if dd := d.check(keyShop, "shop.example"); !dd.Published || stateOf(dd, rk.Selector) != store.DKIMActive || stateOf(dd, ek.Selector) != store.DKIMActive {
		t.Fatalf("after publishing the zone lines: %+v", dd)
	}
	// A second RSA key of the same month gets the next name.
	if k := d.keygen(keyShop, "shop.example", "rsa"); k.Selector != "tr202607r-2" {
		t.Errorf("second key's selector %q", k.Selector)
	}

	// The private key never leaves the store.
	priv := d.stored("shop.example", rk.Selector).Private
	if !strings.Contains(priv, "PRIVATE KEY") {
		t.Fatalf("stored key is not PEM: %.40q", priv)
	}
	secret := strings.Split(priv, "\n")[2] // a line of the key's base64
	_, list := d.call(http.MethodGet, "/v1/dkim", keyShop, nil, nil)
	_, one := d.call(http.MethodGet, "/v1/dkim/shop.example", keyShop, nil, nil)
	for _, b := range []string{string(list), string(one), d.logs.String()} {
		if strings.Contains(b, secret) || strings.Contains(b, "PRIVATE") || strings.Contains(b, "private") {
			t.Fatalf("the private key shows:\n%.300s", b)
		}
	}

	for _, tc := range []struct {
		body any
		want string
	}{
		{map[string]string{"domain": "shop.example", "type": "dsa"}, "type: want rsa or ed25519"},
		{map[string]string{"domain": "not a domain"}, "domain:"},
		{map[string]string{"domain": "localhost"}, "domain:"},
		{map[string]string{}, "domain:"},
		{map[string]string{"domain": "shop.example", "private_key": "x"}, "private_key"},
	} {
		st, b := d.call(http.MethodPost, "/v1/dkim", keyShop, tc.body, nil)
		wantError(t, st, b, http.StatusBadRequest, tc.want)
	}
}

// TestDKIMScoping: an account sees and changes only its own keys; another
// account's keys of the same domain are "not found" to it, and its own
// key of that domain gets a selector of its own. An operator sees every
// account's, or one account's with ?account=.
func TestDKIMScoping(t *testing.T) {
	d := newDKIMEnv(t, "")
	mine := d.keygen(keyShop, "shop.example", "ed25519")
	theirs := d.keygen(keyOther, "shop.example", "ed25519")
	if mine.Selector == theirs.Selector {
		t.Fatalf("two keys of one domain share selector %s", mine.Selector)
	}
	var list []DKIMKey
	d.call(http.MethodGet, "/v1/dkim", keyOther, nil, &list)
	if len(list) != 1 || list[0].Selector != theirs.Selector || list[0].Account != "other" {
		t.Fatalf("other's list: %+v", list)
	}
	var dd DKIMDomain
	d.call(http.MethodGet, "/v1/dkim/shop.example", keyOther, nil, &dd)
	if len(dd.Keys) != 1 || dd.Keys[0].Selector != theirs.Selector {
		t.Fatalf("other's view of shop.example: %+v", dd)
	}
	// Other cannot touch shop's key.
	st, b := d.call(http.MethodDelete, "/v1/dkim/shop.example/"+mine.Selector, keyOther, nil, nil)
	wantError(t, st, b, http.StatusNotFound, "no key "+mine.Selector)
	d.keygen(keyShop, "only-shop.example", "ed25519")
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/dkim/only-shop.example"},
		{http.MethodPost, "/v1/dkim/only-shop.example/check"},
		{http.MethodPost, "/v1/dkim/only-shop.example/rotate"},
	} {
		st, b := d.call(c.method, c.path, keyOther, nil, nil)
		wantError(t, st, b, http.StatusNotFound, "account other has no keys for only-shop.example")
	}
	d.dns.SetZoneLine(t, mine.ZoneLine)
	d.check(keyOther, "shop.example") // checks other's key only
	if k := d.stored("shop.example", mine.Selector); k.State != store.DKIMPending || !k.Checked.IsZero() {
		t.Fatalf("other's check touched shop's key: %+v", k)
	}
	if st, _ := d.call(http.MethodDelete, "/v1/dkim/shop.example/"+mine.Selector, keyShop, nil, nil); st != http.StatusNoContent {
		t.Fatalf("shop deleting its own key: %d", st)
	}
	if k := d.stored("shop.example", theirs.Selector); k.Account != "other" {
		t.Fatalf("other's key: %+v", k)
	}

	// The operator.
	d.call(http.MethodGet, "/v1/dkim", keyOperator, nil, &list)
	if len(list) != 2 {
		t.Fatalf("operator's list: %+v", list)
	}
	d.call(http.MethodGet, "/v1/dkim?account=shop", keyOperator, nil, &list)
	if len(list) != 1 || list[0].Domain != "only-shop.example" {
		t.Fatalf("operator's list of shop: %+v", list)
	}
	st, b = d.call(http.MethodGet, "/v1/dkim?account=nobody", keyOperator, nil, nil)
	wantError(t, st, b, http.StatusNotFound, "not found")
	st, b = d.call(http.MethodPost, "/v1/dkim", keyOperator, map[string]string{"domain": "x.example"}, nil)
	wantError(t, st, b, http.StatusBadRequest, "?account=")
	var k DKIMKey
	if st, b := d.call(http.MethodPost, "/v1/dkim?account=other", keyOperator, map[string]string{"domain": "x.example", "type": "ed25519"}, &k); st != http.StatusCreated || k.Account != "other" {
		t.Fatalf("operator's keygen for other: %d %s", st, b)
	}
}

// TestDKIMLifecycle: pending until published, then active; a rotation
// makes a new pending key while the old one still signs; once the new
// record is published and checked it signs and the old one is retiring,
// its record still expected, until RetireAt, then retired with its
// private key erased. An active key whose record vanishes goes back to
// pending. An active key is deleted only with force.
func TestDKIMLifecycle(t *testing.T) {
	d := newDKIMEnv(t, "")
	old := d.keygen(keyShop, "shop.example", "ed25519")
	dd := d.check(keyShop, "shop.example")
	if dd.Published || stateOf(dd, old.Selector) != store.DKIMPending || !strings.Contains(dd.Keys[0].Problem, "no TXT record") {
		t.Fatalf("unpublished key: %+v", dd)
	}
	d.dns.SetTXT(old.Name, "v=DKIM1; k=ed25519; p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	if dd = d.check(keyShop, "shop.example"); stateOf(dd, old.Selector) != store.DKIMPending || !strings.Contains(dd.Keys[0].Problem, "another key") {
		t.Fatalf("wrong record: %+v", dd)
	}
	d.dns.SetZoneLine(t, old.ZoneLine)
	if dd = d.check(keyShop, "shop.example"); !dd.Published || stateOf(dd, old.Selector) != store.DKIMActive || dd.Keys[0].Problem != "" {
		t.Fatalf("published key: %+v", dd)
	}

	// Rotate: a new pending key; the old one still signs.
	d.now = d.now.Add(31 * 24 * time.Hour)
	if st, _ := d.call(http.MethodPost, "/v1/dkim/shop.example/rotate", keyShop, nil, &dd); st != http.StatusCreated || len(dd.Keys) != 2 {
		t.Fatalf("rotate: %d %+v", st, dd)
	}
	nw := dd.Keys[1]
	if nw.State != store.DKIMPending || nw.Selector != "tr202608e" || stateOf(dd, old.Selector) != store.DKIMActive {
		t.Fatalf("after rotate: %+v", dd)
	}
	st, b := d.call(http.MethodPost, "/v1/dkim/shop.example/rotate", keyShop, nil, nil)
	wantError(t, st, b, http.StatusConflict, "waiting for its record")
	if dd = d.check(keyShop, "shop.example"); dd.Published || stateOf(dd, old.Selector) != store.DKIMActive || stateOf(dd, nw.Selector) != store.DKIMPending {
		t.Fatalf("new record unpublished: %+v", dd)
	}
	d.dns.SetZoneLine(t, nw.ZoneLine)
	dd = d.check(keyShop, "shop.example")
	if !dd.Published || stateOf(dd, nw.Selector) != store.DKIMActive || stateOf(dd, old.Selector) != store.DKIMRetiring {
		t.Fatalf("new record published: %+v", dd)
	}
	if ra := dd.Keys[0].RetireAt; ra != d.now.Add(48*time.Hour).Format(time.RFC3339) {
		t.Errorf("retire_at %q, want two days on", ra)
	}
	// The retiring key's record must stay: its absence is a problem.
	d.dns.Remove(old.Name)
	if dd = d.check(keyShop, "shop.example"); dd.Published || stateOf(dd, old.Selector) != store.DKIMRetiring || dd.Keys[0].Problem == "" {
		t.Fatalf("retiring record removed early: %+v", dd)
	}
	// Its time up, it is retired, its private key erased.
	d.now = d.now.Add(49 * time.Hour)
	if dd = d.check(keyShop, "shop.example"); !dd.Published || stateOf(dd, old.Selector) != store.DKIMRetired {
		t.Fatalf("after retire_at: %+v", dd)
	}
	if k := d.stored("shop.example", old.Selector); k.Private != "" || k.Record == "" {
		t.Fatalf("retired key keeps its private key, or lost its record: %+v", k.Private != "")
	}

	// The active key's record vanishes: it stops signing.
	d.dns.Remove(nw.Name)
	if dd = d.check(keyShop, "shop.example"); dd.Published || stateOf(dd, nw.Selector) != store.DKIMPending {
		t.Fatalf("active key's record removed: %+v", dd)
	}
	d.dns.SetZoneLine(t, nw.ZoneLine)
	d.check(keyShop, "shop.example")
	st, b = d.call(http.MethodDelete, "/v1/dkim/shop.example/"+nw.Selector, keyShop, nil, nil)
	wantError(t, st, b, http.StatusConflict, "force=true")
	if st, b := d.call(http.MethodDelete, "/v1/dkim/shop.example/"+nw.Selector+"?force=true", keyShop, nil, nil); st != http.StatusNoContent {
		t.Fatalf("forced delete: %d %s", st, b)
	}
	if st, b := d.call(http.MethodPost, "/v1/dkim/shop.example/rotate", keyShop, nil, nil); st != http.StatusConflict || !strings.Contains(string(b), "no active key") {
		t.Fatalf("rotate without an active key: %d %s", st, b)
	}
}

// TestDKIMCNAME: with a CNAME zone, each key also offers a CNAME to a
// record the operator hosts; publishing those two (and not the TXT at
// the domain) makes the key active.
func TestDKIMCNAME(t *testing.T) {
	d := newDKIMEnv(t, "dkim.relay.test")
	k := d.keygen(keyShop, "shop.example", "rsa")
	wantCNAME := k.Name + ". IN CNAME " + k.Selector + "._domainkey.shop.example.dkim.relay.test."
	if k.CNAME != wantCNAME || !strings.HasPrefix(k.Hosted, k.Selector+"._domainkey.shop.example.dkim.relay.test. IN TXT \"v=DKIM1; k=rsa; p=") {
		t.Fatalf("cname %q, hosted %q", k.CNAME, k.Hosted)
	}
	d.dns.SetZoneLine(t, k.CNAME)
	if dd := d.check(keyShop, "shop.example"); dd.Published || !strings.Contains(dd.Keys[0].Problem, "CNAME") {
		t.Fatalf("CNAME to nothing: %+v", dd)
	}
	d.dns.SetZoneLine(t, k.Hosted)
	if dd := d.check(keyShop, "shop.example"); !dd.Published || dd.Keys[0].State != store.DKIMActive {
		t.Fatalf("CNAME to the hosted record: %+v", dd)
	}
}

// TestMaintainDKIM: the relay's periodic work checks pending keys every
// checkEvery and published ones every recheckEvery, and retires
// retiring keys whose time is up.
func TestMaintainDKIM(t *testing.T) {
	d := newDKIMEnv(t, "")
	ctx := context.Background()
	m := &DKIMMaintainer{Store: d.relay, Settings: DKIMSettings{Resolver: d.dns.Addr, RetireAfter: time.Hour}, CheckEvery: time.Minute, RecheckEvery: time.Hour}
	k := d.keygen(keyShop, "shop.example", "ed25519")
	now := d.now
	maintain := func(at time.Time) int {
		t.Helper()
		n, err := m.Run(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	version := func() uint64 {
		v, err := d.relay.RecordsVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if n := maintain(now); n != 0 || d.stored("shop.example", k.Selector).Checked.IsZero() {
		t.Fatalf("unpublished key: %d changes, checked %v", n, d.stored("shop.example", k.Selector).Checked)
	}
	d.dns.SetZoneLine(t, k.ZoneLine)
	if n := maintain(now.Add(30 * time.Second)); n != 0 {
		t.Fatalf("checked again before check_interval: %d changes", n)
	}
	if n := maintain(now.Add(time.Minute)); n != 1 || d.stored("shop.example", k.Selector).State != store.DKIMActive {
		t.Fatalf("published key: %d changes, state %s", n, d.stored("shop.example", k.Selector).State)
	}
	// A recheck that finds the record as before writes nothing (every
	// write makes every node reload its records).
	v := version()
	if n := maintain(now.Add(2 * time.Hour)); n != 0 || version() != v {
		t.Fatalf("an unchanged recheck: %d changes, records version %d -> %d", n, v, version())
	}
	now = now.Add(2 * time.Hour)
	d.dns.Remove(k.Name)
	if n := maintain(now.Add(30 * time.Minute)); n != 0 || d.stored("shop.example", k.Selector).State != store.DKIMActive {
		t.Fatal("an active key was checked again before recheck_interval")
	}
	if n := maintain(now.Add(2 * time.Hour)); n != 1 || d.stored("shop.example", k.Selector).State != store.DKIMPending {
		t.Fatal("an active key whose record vanished still signs")
	}
	// Rotation through maintenance alone.
	d.dns.SetZoneLine(t, k.ZoneLine)
	maintain(now.Add(3 * time.Hour))
	d.now = now.Add(3 * time.Hour)
	var dd DKIMDomain
	d.call(http.MethodPost, "/v1/dkim/shop.example/rotate", keyShop, nil, &dd)
	nw := dd.Keys[len(dd.Keys)-1]
	d.dns.SetZoneLine(t, nw.ZoneLine)
	maintain(now.Add(4 * time.Hour))
	if o, n := d.stored("shop.example", k.Selector), d.stored("shop.example", nw.Selector); o.State != store.DKIMRetiring || n.State != store.DKIMActive {
		t.Fatalf("after the new key's record: old %s, new %s", o.State, n.State)
	}
	maintain(now.Add(5*time.Hour + time.Second))
	if o := d.stored("shop.example", k.Selector); o.State != store.DKIMRetired || o.Private != "" {
		t.Fatalf("retiring key past retire_at: %s", o.State)
	}
}
