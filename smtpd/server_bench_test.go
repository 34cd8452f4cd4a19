package smtpd

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkAuthReconnect measures a client that connects, authenticates
// and sends one message per connection (EHLO, AUTH PLAIN, MAIL, RCPT, DATA,
// QUIT) against a bcrypt hash at the default cost. Each iteration sends one
// message three ways, timed apart: with the verification cache (the
// normal case after the first login), with the cache cleared (first-time
// bcrypt every time), and from a trusted network without AUTH (the
// ceiling). Plaintext on loopback isolates the cost of AUTH from TLS.
// Reported: messages per second for each, and the ratios
// cached/no-auth (near 1: verification does not cap throughput) and
// cached/bcrypt.
func BenchmarkAuthReconnect(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(b, func(c *ServerConfig) {
		c.AllowPlaintextLoopback = true
		c.Users = map[string]User{testUser: {Hash: hash, Cred: &Credential{Username: testUser}}}
		c.MaxSessionsPerIP = 1000
	})
	trustedCred := &Credential{Username: "trusted"}
	send := func(auth bool) {
		c, err := smtp.Dial(e.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if auth {
			if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
			b.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			b.Fatal(err)
		}
	}
	send(true) // warm the cache
	var cached, uncached, noauth time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		send(true)
		t1 := time.Now()
		tbl := e.srv.users.Load()
		tbl.mu.Lock()
		clear(tbl.cache)
		tbl.mu.Unlock()
		t2 := time.Now()
		send(true)
		t3 := time.Now()
		e.srv.SetTrusted([]TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: trustedCred}})
		t4 := time.Now()
		send(false)
		t5 := time.Now()
		e.srv.SetTrusted(nil)
		cached += t1.Sub(t0)
		uncached += t3.Sub(t2)
		noauth += t5.Sub(t4)
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(cached), "cached-msgs/s")
	b.ReportMetric(rate(uncached), "bcrypt-msgs/s")
	b.ReportMetric(rate(noauth), "noauth-msgs/s")
	b.ReportMetric(rate(cached)/rate(noauth), "cached/noauth")
	b.ReportMetric(rate(cached)/rate(uncached), "cached/bcrypt")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkAuthReconnectTLS is the realistic form: many clients in
// parallel, each message on a new connection with STARTTLS and AUTH
// PLAIN. The cache is either kept (normal) or cleared before every login
// (first-time bcrypt at the default cost), in sub-benchmarks; compare their
// msgs/s figures.
func BenchmarkAuthReconnectTLS(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"cached", "bcrypt"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b, func(c *ServerConfig) {
				c.Users = map[string]User{testUser: {Hash: hash, Cred: &Credential{Username: testUser}}}
				c.MaxSessionsPerIP = 1000
			})
			b.SetParallelism(4)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if mode == "bcrypt" {
						tbl := e.srv.users.Load()
						tbl.mu.Lock()
						clear(tbl.cache)
						tbl.mu.Unlock()
					}
					c, err := smtp.DialStartTLS(e.addr, e.clientTLS)
					if err != nil {
						b.Error(err)
						return
					}
					if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
						b.Error(err)
					}
					if err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
						b.Error(err)
					}
					c.Quit()
					c.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
