package domaincheck_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/redirector/acmetest"
	"github.com/trackrelay/trackrelay/redirector/domaincheck"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

var (
	ourKey   = rewrite.Key{ID: 3, Secret: bytes.Repeat([]byte("k"), 32)}
	otherKey = rewrite.Key{ID: 3, Secret: bytes.Repeat([]byte("x"), 32)}
)

// world is the test's Internet, all on loopback: one DNS server, and on
// one port P of several loopback addresses
//
//	127.0.0.1  the redirector, with our keys
//	127.0.0.2  a web server that is not ours (Server: nginx)
//	127.0.0.3  a CDN edge (Server: cloudflare, CF-Ray)
//	127.0.0.4  nothing (refused)
//	127.0.0.5  a redirector with other keys
//	127.0.0.6  a server that accepts and never answers
type world struct {
	dns  *acmetest.DNS
	port int
	ch   *domaincheck.Challenger
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dns: acmetest.StartDNS(t)}
	var err error
	if w.ch, err = domaincheck.NewChallenger(ourKey); err != nil {
		t.Fatal(err)
	}
	addr := startRedirector(t, "127.0.0.1:0", ourKey)
	_, p, _ := net.SplitHostPort(addr)
	w.port, _ = strconv.Atoi(p)
	at := func(ip string) string { return net.JoinHostPort(ip, p) }
	serveHTTP(t, at("127.0.0.2"), func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Server", "nginx/1.22.1")
		http.NotFound(rw, r)
	})
	serveHTTP(t, at("127.0.0.3"), func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Server", "cloudflare")
		rw.Header().Set("CF-Ray", "8a1b2c3d4e5f-AMS")
		rw.WriteHeader(http.StatusForbidden)
	})
	startRedirector(t, at("127.0.0.5"), otherKey)
	ln, err := net.Listen("tcp", at("127.0.0.6"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // accept, read, never answer
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()

	d := w.dns
	d.SetA("track.relay.test", "127.0.0.1")
	d.SetA("foreign.relay.test", "127.0.0.2")
	d.SetA("down.relay.test", "127.0.0.4")
	d.SetA("otherkeys.relay.test", "127.0.0.5")
	d.SetA("stall.relay.test", "127.0.0.6")
	d.SetA("dual.relay.test", "127.0.0.1")
	d.SetAAAA("dual.relay.test", "::1") // nothing listens there
	d.SetA("edge.cdn.test", "127.0.0.3")
	d.SetA("www.elsewhere.test", "127.0.0.2")
	return w
}

// startRedirector runs a real redirector serving the challenge with key,
// and returns its address.
func startRedirector(t *testing.T, addr string, key rewrite.Key) string {
	t.Helper()
	codec, _ := rewrite.NewCodec(key)
	ch, _ := domaincheck.NewChallenger(key)
	svc, err := redirector.Start(redirector.Options{
		Handler:     redirector.Config{Codec: codec, Domains: []string{"click.relay.test"}, Challenger: ch},
		JournalPath: filepath.Join(t.TempDir(), "journal.db"),
		Listen:      addr,
		Sink:        redirector.SinkFunc(func(context.Context, []store.Hit) error { return nil }),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	})
	return svc.Addr().String()
}

func serveHTTP(t *testing.T, addr string, h http.HandlerFunc) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

func (w *world) checker(target string) *domaincheck.Checker {
	return &domaincheck.Checker{Target: target, Resolver: w.dns.Addr, Challenger: w.ch, HTTPPort: w.port, Timeout: time.Second}
}

func TestCheck(t *testing.T) {
	w := newWorld(t)
	d := w.dns
	d.SetCNAME("link.shop.test", "track.relay.test")
	d.SetCNAME("LINK2.shop.test", "TRACK.relay.test.")
	d.SetCNAME("alias.shop.test", "hop.shop.test")
	d.SetCNAME("hop.shop.test", "track.relay.test")
	d.SetCNAME("wrong.shop.test", "www.elsewhere.test")
	d.SetCNAME("dangling.shop.test", "gone.elsewhere.test")
	d.SetCNAME("proxied.shop.test", "edge.cdn.test")
	d.SetApex("apex.test")
	d.SetA("apex.test", "127.0.0.1")
	d.SetApex("apex-wrong.test")
	d.SetA("apex-wrong.test", "127.0.0.2")
	d.SetA("flat.shop.test", "127.0.0.1") // a CNAME flattened by the DNS host
	d.SetApex("apex-cdn.test")
	d.SetA("apex-cdn.test", "127.0.0.3")
	d.SetCNAME("down.shop.test", "down.relay.test")
	d.SetCNAME("foreign.shop.test", "foreign.relay.test")
	d.SetCNAME("otherkeys.shop.test", "otherkeys.relay.test")
	d.SetCNAME("stall.shop.test", "stall.relay.test")
	d.SetCNAME("dual.shop.test", "dual.relay.test")
	d.SetA("broken.shop.test", "127.0.0.1")
	d.SetServFail("broken.shop.test")
	d.SetA("silent.shop.test", "127.0.0.1")
	d.SetDrop("silent.shop.test")
	d.SetCNAME("loop1.shop.test", "loop2.shop.test")
	d.SetCNAME("loop2.shop.test", "loop1.shop.test")

	cdn := []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}
	cases := []struct {
		name, domain, target string
		allow                []netip.Prefix
		want                 domaincheck.Problem
		says                 []string // in Message
		advises              []string // in Advice
		proxy                string
		apex                 bool
		records              []string
		notes                int
	}{
		{name: "cname right", domain: "link.shop.test", target: "track.relay.test", want: domaincheck.OK,
			says: []string{"verified"}, records: []string{"link.shop.test. 3600 IN CNAME track.relay.test."}},
		{name: "case and dots", domain: "Link2.Shop.Test.", target: "track.relay.test", want: domaincheck.OK},
		{name: "cname chain through the user's own alias", domain: "alias.shop.test", target: "track.relay.test", want: domaincheck.OK},
		{name: "flattened cname", domain: "flat.shop.test", target: "track.relay.test", want: domaincheck.OK},
		{name: "apex right", domain: "apex.test", target: "track.relay.test", want: domaincheck.OK, apex: true,
			records: []string{"apex.test. 3600 IN A 127.0.0.1"}},
		{name: "dual-stack target, one address answers", domain: "dual.shop.test", target: "dual.relay.test", want: domaincheck.OK, notes: 1},
		{name: "no record", domain: "nothing.shop.test", target: "track.relay.test", want: domaincheck.NoRecord,
			says: []string{"nothing.shop.test has no DNS record"}, advises: []string{`"nothing.shop.test. 3600 IN CNAME track.relay.test."`, `"nothing.shop.test. 3600 IN A 127.0.0.1"`},
			records: []string{"nothing.shop.test. 3600 IN CNAME track.relay.test."}},
		{name: "cname elsewhere", domain: "wrong.shop.test", target: "track.relay.test", want: domaincheck.WrongCNAME,
			says: []string{"CNAME to www.elsewhere.test", "not to track.relay.test"}, advises: []string{"point at track.relay.test"}},
		{name: "cname to a name that does not exist", domain: "dangling.shop.test", target: "track.relay.test", want: domaincheck.WrongCNAME,
			says: []string{"gone.elsewhere.test does not exist"}},
		{name: "cname to a cdn, named", domain: "proxied.shop.test", target: "track.relay.test", allow: cdn, want: domaincheck.WrongCNAME,
			says: []string{"Cloudflare"}, advises: []string{"DNS only"}, proxy: "Cloudflare"},
		{name: "cname to a cdn on a private address, not asked", domain: "proxied.shop.test", target: "track.relay.test", want: domaincheck.WrongCNAME},
		{name: "apex wrong addresses", domain: "apex-wrong.test", target: "track.relay.test", want: domaincheck.WrongAddress, apex: true,
			says: []string{"127.0.0.2", "not an address of track.relay.test (127.0.0.1)"}, advises: []string{`"apex-wrong.test. 3600 IN A 127.0.0.1"`},
			records: []string{"apex-wrong.test. 3600 IN A 127.0.0.1"}},
		{name: "apex behind a cdn", domain: "apex-cdn.test", target: "track.relay.test", allow: cdn, want: domaincheck.WrongAddress, apex: true,
			says: []string{"Cloudflare", "proxy or CDN"}, advises: []string{"Turn off proxying"}, proxy: "Cloudflare"},
		{name: "record right, host down", domain: "down.shop.test", target: "down.relay.test", want: domaincheck.NotAnswering,
			says: []string{"DNS record of down.shop.test is right", "127.0.0.4"}, advises: []string{"Nothing to change in DNS"}},
		{name: "record right, host stalls", domain: "stall.shop.test", target: "stall.relay.test", want: domaincheck.HTTPTimeout,
			says: []string{"did not answer within"}},
		{name: "record right, a foreign server answers", domain: "foreign.shop.test", target: "foreign.relay.test", want: domaincheck.Foreign,
			says: []string{"not the redirector", "HTTP 404", "Server: nginx/1.22.1"}},
		{name: "a redirector with other keys", domain: "otherkeys.shop.test", target: "otherkeys.relay.test", want: domaincheck.WrongChallenge,
			says: []string{"other token keys"}, advises: []string{"key_file"}},
		{name: "resolver fails", domain: "broken.shop.test", target: "track.relay.test", want: domaincheck.DNSError, says: []string{"answered SERVFAIL for broken.shop.test"}},
		{name: "resolver silent", domain: "silent.shop.test", target: "track.relay.test", want: domaincheck.DNSTimeout, says: []string{"did not answer"}},
		{name: "cname loop", domain: "loop1.shop.test", target: "track.relay.test", want: domaincheck.DNSError, says: []string{"SERVFAIL"}},
		{name: "bad name", domain: "not a name", target: "track.relay.test", want: domaincheck.BadName},
		{name: "ip literal", domain: "127.0.0.1", target: "track.relay.test", want: domaincheck.BadName, says: []string{"IP address"}},
		{name: "target without records", domain: "link.shop.test", target: "missing.relay.test", want: domaincheck.TargetUnresolved,
			advises: []string{"operator"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := w.checker(tc.target)
			c.AllowFetch = tc.allow
			if tc.want == domaincheck.DNSTimeout {
				c.Timeout = 300 * time.Millisecond
			}
			r := c.Check(context.Background(), tc.domain)
			t.Logf("%s: %s / %s / %q %v", r.Problem, r.Message, r.Advice, r.Records, r.Notes)
			if r.Problem != tc.want || r.Verified != (tc.want == domaincheck.OK) {
				t.Fatalf("got %q verified=%v, want %q", r.Problem, r.Verified, tc.want)
			}
			if r.Message == "" || (!r.Verified && r.Advice == "") {
				t.Errorf("message %q advice %q: want both", r.Message, r.Advice)
			}
			for _, s := range tc.says {
				if !strings.Contains(r.Message, s) {
					t.Errorf("message %q lacks %q", r.Message, s)
				}
			}
			for _, s := range tc.advises {
				if !strings.Contains(r.Advice, s) {
					t.Errorf("advice %q lacks %q", r.Advice, s)
				}
			}
			if r.Proxy != tc.proxy {
				t.Errorf("proxy %q, want %q", r.Proxy, tc.proxy)
			}
			if tc.records != nil && (r.Apex != tc.apex || strings.Join(r.Records, "|") != strings.Join(tc.records, "|")) {
				t.Errorf("apex %v records %q, want %v %q", r.Apex, r.Records, tc.apex, tc.records)
			}
			if len(r.Notes) != tc.notes {
				t.Errorf("notes %q, want %d", r.Notes, tc.notes)
			}
		})
	}
}

// TestCheckFollowsTheFix: the check fails with the right words, the user
// creates the record, and the same check passes.
func TestCheckFollowsTheFix(t *testing.T) {
	w := newWorld(t)
	c := w.checker("track.relay.test")
	r := c.Check(context.Background(), "click.newshop.test")
	if r.Problem != domaincheck.NoRecord || len(r.Records) != 1 {
		t.Fatalf("before: %+v", r)
	}
	// The record, as the check gave it.
	f := strings.Fields(r.Records[0])
	if len(f) != 5 || f[3] != "CNAME" {
		t.Fatalf("record %q", r.Records[0])
	}
	w.dns.SetCNAME(f[0], f[4])
	if r := c.Check(context.Background(), "click.newshop.test"); !r.Verified {
		t.Fatalf("after creating %q: %+v", r.Records, r)
	}
}

// TestCheckChasesChains: against a server that answers only the first
// CNAME of a chain, the checker asks for the rest itself, and stops at a
// loop.
func TestCheckChasesChains(t *testing.T) {
	w := newWorld(t)
	w.dns.SetChase(false)
	w.dns.SetCNAME("alias.shop.test", "hop.shop.test")
	w.dns.SetCNAME("hop.shop.test", "track.relay.test")
	w.dns.SetCNAME("loop1.shop.test", "loop2.shop.test")
	w.dns.SetCNAME("loop2.shop.test", "loop1.shop.test")
	c := w.checker("track.relay.test")
	if r := c.Check(context.Background(), "alias.shop.test"); !r.Verified || strings.Join(r.Chain, " ") != "hop.shop.test track.relay.test" {
		t.Errorf("chain: %+v", r)
	}
	if r := c.Check(context.Background(), "loop1.shop.test"); r.Problem != domaincheck.DNSError || !strings.Contains(r.Message, "loop") {
		t.Errorf("loop: %+v", r)
	}
}

// TestCheckUsesTheConfiguredResolver: every name is asked of the resolver
// configured, not the system's (which does not know the test names).
func TestCheckUsesTheConfiguredResolver(t *testing.T) {
	w := newWorld(t)
	w.dns.SetCNAME("link.shop.test", "track.relay.test")
	if r := w.checker("track.relay.test").Check(context.Background(), "link.shop.test"); !r.Verified {
		t.Fatalf("%+v", r)
	}
	if w.dns.Queries("link.shop.test") == 0 || w.dns.Queries("track.relay.test") == 0 {
		t.Error("the configured resolver was not asked")
	}
}

func TestChallenger(t *testing.T) {
	old := rewrite.Key{ID: 1, Secret: bytes.Repeat([]byte("o"), 32)}
	ours, _ := domaincheck.NewChallenger(ourKey, old)
	olderRedirector, _ := domaincheck.NewChallenger(old)
	other, _ := domaincheck.NewChallenger(otherKey)
	v := ours.Value("link.shop.test")
	cases := []struct {
		name, host, value string
		want              bool
	}{
		{"same host", "link.shop.test", v, true},
		{"case, port and dot do not matter", "LINK.Shop.test.:8080", v, true},
		{"trailing newline", "link.shop.test", v + "\n", true},
		{"another host", "link2.shop.test", v, false},
		{"a redirector not yet rotated", "link.shop.test", olderRedirector.Value("link.shop.test"), true},
		{"other keys, same id", "link.shop.test", other.Value("link.shop.test"), false},
		{"unknown key id", "link.shop.test", strings.Replace(v, " 3 ", " 9 ", 1), false},
		{"tampered", "link.shop.test", v[:len(v)-1] + "A", false},
		{"empty", "link.shop.test", "", false},
		{"long", "link.shop.test", v + strings.Repeat("A", 200), false},
	}
	for _, tc := range cases {
		if got := ours.Verify(tc.host, tc.value); got != tc.want {
			t.Errorf("%s: Verify(%q, %q) = %v", tc.name, tc.host, tc.value, got)
		}
	}
	if !strings.HasPrefix(v, "trackrelay-domain-check v1 3 ") || len(v) > 96 {
		t.Errorf("value %q", v)
	}
	if _, err := domaincheck.NewChallenger(rewrite.Key{ID: 1, Secret: []byte("short")}); err == nil {
		t.Error("a short key was accepted")
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct{ in, want string }{
		{"link.example.com", "link.example.com"},
		{"Link.Example.COM.", "link.example.com"},
		{" link.example.com ", "link.example.com"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"a-b.c-d.example", "a-b.c-d.example"},
		{"localhost", ""},
		{"", ""},
		{".", ""},
		{"127.0.0.1", ""},
		{"[::1]", ""},
		{"link.example.com:443", ""},
		{"-x.example.com", ""},
		{"x-.example.com", ""},
		{"a..example.com", ""},
		{"a_b.example.com", ""},
		{"*.example.com", ""},
		{"http://link.example.com/", ""},
		{strings.Repeat("a", 64) + ".example.com", ""},
		{strings.Repeat("abcdefghi.", 26) + "com", ""},
	}
	for _, tc := range cases {
		got, err := domaincheck.Normalize(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
