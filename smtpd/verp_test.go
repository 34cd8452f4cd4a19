package smtpd

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

func TestVERPLocal(t *testing.T) {
	for _, tc := range []struct{ from, want string }{
		{"news@shop.test", "news"},
		{"News.Letter+tag@shop.test", "news.letter"},
		{".odd..dots.@x.test", "odd..dots"},
		{"bücher@x.test", "bcher"},
		{"\"quoted local\"@x.test", "quotedlocal"},
		{"+@x.test", "bounce"},
		{"@x.test", "bounce"},
		{strings.Repeat("a", 80) + "@x.test", strings.Repeat("a", maxVERPLocal)},
	} {
		if got := verpLocal(tc.from); got != tc.want {
			t.Errorf("verpLocal(%q) = %q, want %q", tc.from, got, tc.want)
		}
	}
}

// Delivery relays each copy with its own VERP envelope sender, on the
// account's verified bounce domain or else the relay's; the message
// bytes are those of a delivery without VERP; a null sender stays null.
func TestDeliverWithVERP(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, nil)
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none", PoolSize: 2})
	var verp *VERP
	r := newDLRig(t, "", map[string]Upstream{"up": up}, func(c *QueueConfig) {
		v, err := NewVERP(VERPConfig{Codec: c.Codec, Domain: "b.relay.test", Records: c.Store.(store.RecordStore), TTL: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		verp, c.VERP = v, v
	})
	ctx := context.Background()
	if err := store.Create(ctx, r.st, &store.Account{Name: dlCred.Account, BounceDomain: "bounce.shop.test"}); err != nil {
		t.Fatal(err)
	}
	// The account's own domain is pending: the relay's is used.
	if err := store.Create(ctx, r.st, &store.Domain{Name: "bounce.shop.test", Account: dlCred.Account, Kind: store.DomainBounce, State: store.DomainPending}); err != nil {
		t.Fatal(err)
	}
	r.run()
	rc := r.submit([]byte(htmlMsg), "one@x.test", "two@x.test")
	dlWait(t, "2 deliveries", func() bool { return len(u.bodies("one@x.test")) == 1 && len(u.bodies("two@x.test")) == 1 })
	for i, rcpt := range []string{"one@x.test", "two@x.test"} {
		u.mu.Lock()
		from := u.from[rcpt]
		u.mu.Unlock()
		id, domain, err := verp.ParseAddress(ctx, from)
		if err != nil || id != rc.CopyIDs[i] || domain != "b.relay.test" || !strings.HasPrefix(from, "news+") {
			t.Fatalf("%s: MAIL FROM %q: copy %x, domain %q, %v; want copy %x at b.relay.test", rcpt, from, id, domain, err, rc.CopyIDs[i])
		}
		if got, want := u.bodies(rcpt)[0], r.expected([]byte(htmlMsg), rc.CopyIDs[i]); !bytes.Equal(got, want) {
			t.Errorf("%s: the message bytes changed with VERP", rcpt)
		}
	}
	// Verified, the account's own bounce domain takes over.
	err := store.Update[store.Domain](ctx, r.st, store.KindDomain, "bounce.shop.test", false, func(d *store.Domain) (*store.Domain, error) {
		d.State, d.Verified = store.DomainVerified, time.Now()
		return d, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond) // past the lookup's TTL
	rc = r.submit([]byte(htmlMsg), "three@x.test")
	dlWait(t, "delivery", func() bool { return len(u.bodies("three@x.test")) == 1 })
	u.mu.Lock()
	from := u.from["three@x.test"]
	u.mu.Unlock()
	if id, domain, err := verp.ParseAddress(ctx, from); err != nil || id != rc.CopyIDs[0] || domain != "bounce.shop.test" {
		t.Fatalf("own bounce domain: MAIL FROM %q (%x, %q, %v)", from, id, domain, err)
	}
	// The null sender stays null.
	_, err = r.spool.Submit(ctx, &Submission{Cred: dlCred, From: "", Recipients: []string{"four@x.test"}}, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	dlWait(t, "delivery", func() bool { return len(u.bodies("four@x.test")) == 1 })
	u.mu.Lock()
	from = u.from["four@x.test"]
	u.mu.Unlock()
	if from != "" {
		t.Errorf("null sender relayed as %q", from)
	}
	// Without VERP the envelope is the client's.
	var none *VERP
	if got := none.Sender(&store.Copy{From: "news@shop.test", ID: 1}); got != "news@shop.test" {
		t.Errorf("nil VERP: %q", got)
	}
}

// An account that names no bounce domain uses its first verified one;
// one with none verified, or another account's, uses the relay's.
func TestVERPAccountDomain(t *testing.T) {
	st, err := store.OpenRelay(t.TempDir()+"/relay.db", store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for _, a := range []*store.Account{{Name: "a2"}, {Name: "a3"}, {Name: "a4", BounceDomain: "b.a2.test"}} {
		if err := store.Create(ctx, st, a); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for _, d := range []*store.Domain{
		{Name: "a.a2.test", Account: "a2", Kind: store.DomainBounce, State: store.DomainPending},
		{Name: "b.a2.test", Account: "a2", Kind: store.DomainBounce, State: store.DomainVerified, Verified: now},
		{Name: "c.a2.test", Account: "a2", Kind: store.DomainClick, State: store.DomainVerified, Verified: now},
		{Name: "a.a3.test", Account: "a3", Kind: store.DomainBounce, State: store.DomainFailing, Verified: now},
	} {
		if err := store.Create(ctx, st, d); err != nil {
			t.Fatal(err)
		}
	}
	v, err := NewVERP(VERPConfig{Codec: dlCodec(t), Domain: "relay.test", Records: st})
	if err != nil {
		t.Fatal(err)
	}
	for acct, want := range map[string]string{"a2": "b.a2.test", "a3": "relay.test", "a4": "relay.test", "none": "relay.test"} {
		if got := v.domainFor(acct); got != want {
			t.Errorf("%s: %q, want %q", acct, got, want)
		}
	}
	// The MX side takes a domain once verified, also while it fails.
	for d, want := range map[string]bool{"relay.test": true, "b.a2.test": true, "a.a3.test": true, "a.a2.test": false, "c.a2.test": false, "x.test": false} {
		if got := v.IsBounceDomain(ctx, d); got != want {
			t.Errorf("IsBounceDomain(%s) = %v", d, got)
		}
	}
}
