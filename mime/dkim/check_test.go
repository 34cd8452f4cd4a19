package dkim

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestCheck asks the test DNS server about a key in every state its
// record can be in, and checks the verdict and its words.
func TestCheck(t *testing.T) {
	d := startDNS(t)
	rsaK, edK := testKeys(t)
	otherRSA, err := GenerateKey(RSA)
	if err != nil {
		t.Fatal(err)
	}
	otherEd, err := GenerateKey(Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(k any) string {
		r, err := Record(k)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	pkcs1 := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(rsaK.Public().(*rsa.PublicKey)))
	name := "sel._domainkey.sender.example"
	cases := []struct {
		name  string
		setup func()
		key   any
		want  Status
		words string // in Problem (or a note, for Published)
		chain int    // CNAMEs reported
	}{
		{name: "rsa published", setup: func() { d.setTXT(name, rec(rsaK)) }, key: rsaK, want: Published},
		{name: "ed25519 published", setup: func() { d.setTXT(name, rec(edK)) }, key: edK.Public(), want: Published},
		{name: "pkcs1 rsa record", setup: func() { d.setTXT(name, pkcs1) }, key: rsaK, want: Published},
		{name: "no v= and extra tags", setup: func() {
			d.setTXT(name, "k=ed25519; h=sha256; s=email; n=hi; x=unknown; "+strings.TrimPrefix(rec(edK), "v=DKIM1; k=ed25519; "))
		}, key: edK, want: Published},
		{name: "folded base64", setup: func() {
			r := rec(rsaK)
			d.setTXT(name, r[:100]+" \t "+r[100:])
		}, key: rsaK, want: Published},
		{name: "testing mode", setup: func() { d.setTXT(name, rec(edK)+"; t=y") }, key: edK, want: Published, words: "testing mode"},
		{name: "nxdomain", setup: func() { d.setRR("x.example", nil) }, key: rsaK, want: NoRecord, words: "no TXT record at " + name},
		{name: "nodata", setup: func() {
			d.setRR(name, &dns.A{Hdr: dns.RR_Header{Name: fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		}, key: rsaK, want: NoRecord, words: "publish the key record"},
		{name: "several", setup: func() { d.setTXT(name, rec(rsaK), "v=spf1 -all") }, key: rsaK, want: SeveralRecords, words: "2 TXT records"},
		{name: "other rsa key", setup: func() { d.setTXT(name, rec(otherRSA)) }, key: rsaK, want: OtherKey, words: "another rsa key (SHA-256 " + Fingerprint(otherRSA)},
		{name: "other ed25519 key", setup: func() { d.setTXT(name, rec(otherEd)) }, key: edK, want: OtherKey, words: "this key's is " + Fingerprint(edK)},
		{name: "other kind", setup: func() { d.setTXT(name, rec(edK)) }, key: rsaK, want: OtherKey, words: "holds an ed25519 key, this key is rsa"},
		{name: "revoked", setup: func() { d.setTXT(name, "v=DKIM1; k=rsa; p=") }, key: rsaK, want: Revoked, words: "revoked"},
		{name: "bad base64", setup: func() { d.setTXT(name, "v=DKIM1; p=!!!!") }, key: rsaK, want: SyntaxError, words: "p= is not base64"},
		{name: "not a key", setup: func() { d.setTXT(name, "v=DKIM1; p=AAAA") }, key: rsaK, want: SyntaxError, words: "not an RSA public key"},
		{name: "short ed25519", setup: func() { d.setTXT(name, "v=DKIM1; k=ed25519; p=AAAA") }, key: edK, want: SyntaxError, words: "3 bytes"},
		{name: "no p", setup: func() { d.setTXT(name, "v=DKIM1; k=rsa") }, key: rsaK, want: SyntaxError, words: "no p= tag"},
		{name: "v not first", setup: func() { d.setTXT(name, "k=rsa; v=DKIM1; p=AAAA") }, key: rsaK, want: SyntaxError, words: "v= must come first"},
		{name: "wrong version", setup: func() { d.setTXT(name, "v=DKIM2; p=AAAA") }, key: rsaK, want: SyntaxError, words: "not DKIM1"},
		{name: "unknown k", setup: func() { d.setTXT(name, "v=DKIM1; k=dsa; p=AAAA") }, key: rsaK, want: SyntaxError, words: "unknown key type k=dsa"},
		{name: "duplicate tag", setup: func() { d.setTXT(name, rec(rsaK)+"; p=AAAA") }, key: rsaK, want: SyntaxError, words: "tag p appears twice"},
		{name: "no equals", setup: func() { d.setTXT(name, "v=DKIM1; rsa; p=AAAA") }, key: rsaK, want: SyntaxError, words: `tag 2 ("rsa") has no '='`},
		{name: "spf record", setup: func() { d.setTXT(name, "v=spf1 include:example.com -all") }, key: rsaK, want: SyntaxError, words: "not DKIM1"},
		{name: "sha1 only", setup: func() { d.setTXT(name, rec(rsaK)+"; h=sha1") }, key: rsaK, want: Unusable, words: "does not allow sha256"},
		{name: "not for email", setup: func() { d.setTXT(name, rec(rsaK)+"; s=other") }, key: rsaK, want: Unusable, words: "does not allow email"},
		{name: "cname followed by the resolver", setup: func() {
			d.setCNAME(name, "sel.keys.operator.example")
			d.setTXT("sel.keys.operator.example", rec(rsaK))
		}, key: rsaK, want: Published, chain: 1},
		{name: "cname chain asked hop by hop", setup: func() {
			d.set(func() { d.noChase = true })
			d.setCNAME(name, "a.operator.example")
			d.setCNAME("a.operator.example", "b.operator.example")
			d.setTXT("b.operator.example", rec(edK))
		}, key: edK, want: Published, chain: 2},
		{name: "cname to another key", setup: func() {
			d.setCNAME(name, "sel.keys.operator.example")
			d.setTXT("sel.keys.operator.example", rec(otherRSA))
		}, key: rsaK, want: OtherKey, chain: 1, words: "another rsa key"},
		{name: "dangling cname", setup: func() { d.setCNAME(name, "gone.operator.example") }, key: rsaK, want: NoRecord, chain: 1, words: "ends at gone.operator.example, which has no TXT record"},
		{name: "large record over tcp", setup: func() {
			// Too big for a UDP answer of 512 bytes: the server truncates
			// and Check asks again over TCP.
			d.set(func() { d.udpMax = 512 })
			d.setTXT(name, rec(rsaK)+"; n="+strings.Repeat("x", 600))
		}, key: rsaK, want: Published},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d.set(func() { d.zone, d.rcode, d.noChase, d.udpMax = map[string][]dns.RR{}, map[string]int{}, false, 0 })
			tcp := d.tcp.Load()
			c.setup()
			v, err := Check(context.Background(), d.addr, "Sender.Example.", "sel", c.key)
			if err != nil {
				t.Fatal(err)
			}
			if v.Status != c.want || v.OK() != (c.want == Published) {
				t.Fatalf("status %v, want %v: %s", v.Status, c.want, v)
			}
			text := v.Problem + strings.Join(v.Notes, ";")
			if !strings.Contains(text, c.words) || (c.want == Published && v.Problem != "") || (c.want != Published && v.Problem == "") {
				t.Errorf("words %q, want %q", text, c.words)
			}
			if len(v.CNAMEs) != c.chain || v.Name != name {
				t.Errorf("name %s, chain %v, want %d CNAMEs", v.Name, v.CNAMEs, c.chain)
			}
			if strings.Contains(c.name, "tcp") && d.tcp.Load() == tcp {
				t.Error("no query over TCP")
			}
			if !strings.HasPrefix(v.String(), name) || !strings.Contains(v.String(), c.want.String()) {
				t.Errorf("String() = %q", v.String())
			}
		})
	}
}

// TestCheckLookupFails: when the lookup itself fails, Check returns an
// error, not a verdict.
func TestCheckLookupFails(t *testing.T) {
	d := startDNS(t)
	rsaK, _ := testKeys(t)
	name := "sel._domainkey.sender.example"
	d.setRcode(name, dns.RcodeServerFailure)
	if _, err := Check(context.Background(), d.addr, "sender.example", "sel", rsaK); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("SERVFAIL: %v", err)
	}
	d.setRcode(name, dns.RcodeRefused)
	if _, err := Check(context.Background(), d.addr, "sender.example", "sel", rsaK); err == nil || !strings.Contains(err.Error(), "REFUSED") {
		t.Errorf("REFUSED: %v", err)
	}
	d.set(func() { delete(d.rcode, fqdn(name)) })
	d.setCNAME("loop1.example", "loop2.example")
	d.setCNAME("loop2.example", "loop1.example")
	d.setCNAME(name, "loop1.example")
	d.set(func() { d.noChase = true })
	if _, err := Check(context.Background(), d.addr, "sender.example", "sel", rsaK); err == nil || !strings.Contains(err.Error(), "CNAME loop") {
		t.Errorf("loop: %v", err)
	}
	// A resolver that does not answer: an unanswered UDP port.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Check(ctx, pc.LocalAddr().String(), "sender.example", "sel", rsaK); err == nil {
		t.Error("silent resolver: no error")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("silent resolver: took %v, past the context's deadline", time.Since(start))
	}
	// Bad arguments.
	for _, c := range []struct{ domain, sel string }{{"no_domain", "sel"}, {"sender.example", "bad selector"}} {
		if _, err := Check(context.Background(), d.addr, c.domain, c.sel, rsaK); err == nil {
			t.Errorf("%q %q: no error", c.domain, c.sel)
		}
	}
}

func TestResolvers(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1:53", "192.0.2.1:5353": "192.0.2.1:5353", "[2001:db8::1]": "[2001:db8::1]:53", "2001:db8::1": "[2001:db8::1]:53", "[2001:db8::1]:54": "[2001:db8::1]:54"} {
		got, err := resolvers(in)
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("resolvers(%q) = %v, %v, want %s", in, got, err, want)
		}
	}
}
