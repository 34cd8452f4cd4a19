package webhook

import (
	"net/netip"
	"net/url"
	"testing"
	"time"
)

// FuzzCheckURL: whatever the input, CheckURL does not panic, and a URL
// it accepts is http(s) with a host, no user info and no fragment, whose
// address literal (if any) the policy accepts too.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/x?token=1", "http://127.0.0.1:8080/", "https://[::1]/", "https://[fe80::1%25eth0]/",
		"https://0x7f.1/", "https://user@host/", "https://host/#f", "https://host:0/", "//host/x", "https:host",
		"https://[64:ff9b::a00:1]/", "HTTPS://LOCALHOST./", "https://10.0.0.1/",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, dev bool) {
		p := Policy{AllowHTTP: dev, AllowLoopback: dev}
		if p.CheckURL(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, err)
		}
		if u.Scheme != "https" && !(dev && u.Scheme == "http") || u.Hostname() == "" || u.User != nil || u.Fragment != "" {
			t.Fatalf("accepted %q", raw)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
			if err := p.CheckAddr(ip, nil); err != nil {
				t.Fatalf("accepted %q although its address is refused: %v", raw, err)
			}
		}
	})
}

// FuzzRetryAfter: any Retry-After value gives a wait in [0, MaxRetryAfter].
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "x"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 || d > MaxRetryAfter {
			t.Fatalf("Retry-After %q: %v", v, d)
		}
	})
}
