package domaincheck

import (
	"bytes"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/trackrelay/trackrelay/rewrite"
)

// FuzzNormalize: a name Normalize accepts is short, lower-case ASCII, and
// a fixed point.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"link.example.com", "Bücher.Example.", "127.0.0.1", "a..b", "xn--bcher-kva.example", "-a.b", "[::1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			return
		}
		if len(out) > maxName || out != strings.ToLower(out) || !strings.Contains(out, ".") {
			t.Fatalf("Normalize(%q) = %q", in, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] >= 0x80 {
				t.Fatalf("Normalize(%q) = %q: not ASCII", in, out)
			}
		}
		again, err := Normalize(out)
		if err != nil || again != out {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q, %v", in, out, out, again, err)
		}
	})
}

// FuzzVerify: no value but the host's own verifies.
func FuzzVerify(f *testing.F) {
	c, _ := NewChallenger(rewrite.Key{ID: 1, Secret: bytes.Repeat([]byte("s"), 32)})
	f.Add("link.example.com", c.Value("link.example.com"))
	f.Add("link.example.com", "trackrelay-domain-check v1 1 AAAA")
	f.Add("a.b", "trackrelay-domain-check v1 300 x")
	f.Fuzz(func(t *testing.T, host, value string) {
		if c.Verify(host, value) && strings.TrimSpace(value) != c.Value(host) {
			t.Fatalf("Verify(%q, %q) with the value %q", host, value, c.Value(host))
		}
	})
}

// FuzzAnswer: any DNS message the resolver could receive is walked
// without a panic, and an A query gives only IPv4 addresses (an AAAA
// answer may hold a v4-mapped one, which compares as IPv4).
func FuzzAnswer(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("link.example.com.", dns.TypeA)
	m.Answer = append(m.Answer,
		&dns.CNAME{Hdr: dns.RR_Header{Name: "link.example.com.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: "t.example.net."},
		&dns.A{Hdr: dns.RR_Header{Name: "t.example.net.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: []byte{192, 0, 2, 1}})
	b, _ := m.Pack()
	f.Add(b, "link.example.com")
	f.Fuzz(func(t *testing.T, raw []byte, owner string) {
		in := new(dns.Msg)
		if in.Unpack(raw) != nil {
			return
		}
		_, addrs := answerFor(in, owner, dns.TypeA)
		for _, a := range addrs {
			if !a.Is4() {
				t.Fatalf("an A query gave %s", a)
			}
		}
		answerFor(in, owner, dns.TypeAAAA)
	})
}
