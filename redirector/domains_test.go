package redirector

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/redirector/domaincheck"
)

// countingPolicy is a DomainSet that counts its lookups and can fail or
// stall.
type countingPolicy struct {
	*DomainSet
	asked atomic.Int64
	fail  atomic.Bool
	stall chan struct{} // when non-nil, lookups wait on it
}

func (p *countingPolicy) ClickDomain(ctx context.Context, host string) (bool, error) {
	p.asked.Add(1)
	if p.stall != nil {
		select {
		case <-p.stall:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if p.fail.Load() {
		return false, errors.New("relay unreachable")
	}
	return p.DomainSet.ClickDomain(ctx, host)
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestRunTimeDomains: a domain the policy admits is served without a
// restart, one it withdraws stops within the TTL, the static list is
// always served, and answers are cached.
func TestRunTimeDomains(t *testing.T) {
	p := &countingPolicy{DomainSet: NewDomainSet()}
	clk := &clock{t: time.Now()}
	e := newEnv(t, func(c *Config) { c.Policy = p; c.PolicyTTL = time.Minute; c.Now = clk.now })
	tok := e.tok(click("shop.example.com"))

	if r := e.raw("GET", "/"+tok+"/", "link.shop.test"); r.code != http.StatusNotFound {
		t.Fatalf("unknown host: %d", r.code)
	}
	p.Add("link.shop.test")
	// The refusal is remembered for a while: still 404, not asked again.
	asked := p.asked.Load()
	if r := e.raw("GET", "/"+tok+"/", "link.shop.test"); r.code != http.StatusNotFound || p.asked.Load() != asked {
		t.Errorf("within the negative TTL: %d, asked %d more", r.code, p.asked.Load()-asked)
	}
	clk.add(negativePolicyTTL + time.Second)
	for i := range 3 {
		r := e.raw("GET", "/"+tok+"/p?q=1", "LINK.shop.test.:80")
		if r.code != http.StatusFound || r.location != "https://shop.example.com/p?q=1" {
			t.Fatalf("admitted host, request %d: %d %q", i, r.code, r.location)
		}
	}
	if n := p.asked.Load() - asked; n != 1 {
		t.Errorf("asked the policy %d times for three requests, want 1", n)
	}
	// The static list needs no policy.
	asked = p.asked.Load()
	if r := e.get("/" + tok + "/"); r.code != http.StatusFound || p.asked.Load() != asked {
		t.Errorf("static domain: %d, asked %d", r.code, p.asked.Load()-asked)
	}
	// Withdrawn: served until the TTL ends, then refused.
	p.Remove("link.shop.test")
	if r := e.raw("GET", "/"+tok+"/", "link.shop.test"); r.code != http.StatusFound {
		t.Errorf("withdrawn, within the TTL: %d", r.code)
	}
	clk.add(2 * time.Minute)
	if r := e.raw("GET", "/"+tok+"/", "link.shop.test"); r.code != http.StatusNotFound {
		t.Errorf("withdrawn, after the TTL: %d", r.code)
	}
}

func TestDomainCache(t *testing.T) {
	ctx := context.Background()
	t.Run("stale answer kept while the policy fails", func(t *testing.T) {
		p := &countingPolicy{DomainSet: NewDomainSet("a.shop.test")}
		clk := &clock{t: time.Unix(1e9, 0)}
		c := newDomainCache(p, time.Minute, clk.now, slog.New(slog.DiscardHandler))
		if !c.allowed(ctx, "a.shop.test") {
			t.Fatal("not allowed")
		}
		p.fail.Store(true)
		clk.add(2 * time.Minute)
		if !c.allowed(ctx, "a.shop.test") {
			t.Error("a known domain was refused because the relay is down")
		}
		if c.allowed(ctx, "b.shop.test") {
			t.Error("an unknown domain was admitted while the relay is down")
		}
		asked := p.asked.Load()
		c.allowed(ctx, "b.shop.test")
		if p.asked.Load() != asked {
			t.Error("a failed lookup was retried at once")
		}
	})
	t.Run("names that cannot be domains are never asked", func(t *testing.T) {
		p := &countingPolicy{DomainSet: NewDomainSet()}
		c := newDomainCache(p, time.Minute, time.Now, slog.New(slog.DiscardHandler))
		for _, h := range []string{"localhost", "127.0.0.1", "::1", "a b.test", "x..y", string(make([]byte, 300))} {
			if c.allowed(ctx, h) {
				t.Errorf("%q allowed", h)
			}
		}
		if p.asked.Load() != 0 || len(c.entries) != 0 {
			t.Errorf("asked %d times, %d entries", p.asked.Load(), len(c.entries))
		}
	})
	t.Run("one lookup per name in flight, a bounded number in all", func(t *testing.T) {
		p := &countingPolicy{DomainSet: NewDomainSet("a.shop.test"), stall: make(chan struct{})}
		c := newDomainCache(p, time.Minute, time.Now, slog.New(slog.DiscardHandler))
		var wg sync.WaitGroup
		results := make(chan bool, 10)
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- c.allowed(ctx, "a.shop.test")
			}()
		}
		// Fill the other slots with distinct names.
		for i := range maxPolicyInFlight - 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.allowed(ctx, "n"+strconv.Itoa(i)+".shop.test")
			}()
		}
		waitUntil(t, func() bool { return p.asked.Load() == maxPolicyInFlight })
		if c.allowed(ctx, "late.shop.test") {
			t.Error("a name met while saturated was admitted")
		}
		close(p.stall)
		wg.Wait()
		close(results)
		for ok := range results {
			if !ok {
				t.Error("a waiter for a.shop.test got no")
			}
		}
		if n := p.asked.Load(); n != maxPolicyInFlight {
			t.Errorf("asked %d times, want %d", n, maxPolicyInFlight)
		}
	})
	t.Run("bounded size", func(t *testing.T) {
		p := &countingPolicy{DomainSet: NewDomainSet()}
		c := newDomainCache(p, time.Minute, time.Now, slog.New(slog.DiscardHandler))
		for i := range maxPolicyEntries + 10 {
			c.allowed(ctx, "n"+strconv.Itoa(i)+".shop.test")
		}
		if n := len(c.entries); n > maxPolicyEntries {
			t.Errorf("%d entries, bound %d", n, maxPolicyEntries)
		}
	})
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestChallengeEndpoint: the domain check's value is served for any Host,
// and verifies for that host only.
func TestChallengeEndpoint(t *testing.T) {
	ch, err := domaincheck.NewChallenger(testKeyNew, testKeyOld)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Challenger = ch })
	for _, host := range []string{"link.shop.test", "Other.Test:8080", "click.example.com"} {
		r := e.raw("GET", domaincheck.Path, host)
		if r.code != http.StatusOK || !ch.Verify(host, r.body) {
			t.Errorf("%s: %d %q", host, r.code, r.body)
		}
		if ch.Verify("else.shop.test", r.body) {
			t.Errorf("%s: the value verifies for another host", host)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", host, r.header.Get("Cache-Control"))
		}
	}
	if r := e.raw("HEAD", domaincheck.Path, "link.shop.test"); r.code != http.StatusOK {
		t.Errorf("HEAD: %d", r.code)
	}
	for _, tc := range []struct{ method, target, host string }{
		{"POST", domaincheck.Path, "link.shop.test"},
		{"GET", domaincheck.Path + "/x", "link.shop.test"},
		{"GET", domaincheck.Path, "[::1]:x"},
	} {
		if r := e.raw(tc.method, tc.target, tc.host); r.code == http.StatusOK {
			t.Errorf("%s %s Host %s: 200", tc.method, tc.target, tc.host)
		}
	}
	plain := newEnv(t)
	expectNotFound(t, "without a challenger", plain.raw("GET", domaincheck.Path, "link.shop.test"))
}
