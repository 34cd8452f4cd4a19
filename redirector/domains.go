package redirector

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/redirector/domaincheck"
)

// DomainPolicy says whether host is a click domain the redirector serves
// and may get a certificate for, beyond the static Config.Domains: the
// relay implements it over its store (verified domains only). host is in
// lower case, without port or trailing dot, in IDNA A-labels. An error
// means the answer is unknown (the relay is unreachable): the redirector
// then keeps the last answer it had, or refuses.
type DomainPolicy interface {
	ClickDomain(ctx context.Context, host string) (bool, error)
}

// DomainSet is a DomainPolicy over an in-memory set: for tests, and for
// embedding the relay's list when it is at hand in-process.
type DomainSet struct {
	mu sync.RWMutex
	m  map[string]bool
}

// NewDomainSet returns a set holding hosts.
func NewDomainSet(hosts ...string) *DomainSet {
	s := &DomainSet{m: map[string]bool{}}
	for _, h := range hosts {
		s.Add(h)
	}
	return s
}

// Add admits host.
func (s *DomainSet) Add(host string) {
	s.mu.Lock()
	s.m[domaincheck.CanonicalHost(host)] = true
	s.mu.Unlock()
}

// Remove withdraws host.
func (s *DomainSet) Remove(host string) {
	s.mu.Lock()
	delete(s.m, domaincheck.CanonicalHost(host))
	s.mu.Unlock()
}

// ClickDomain implements DomainPolicy.
func (s *DomainSet) ClickDomain(_ context.Context, host string) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[host], nil
}

// Policy cache bounds. A stranger can send any Host or SNI name, so both
// the number of remembered names and the lookups in flight are bounded;
// a name met while the policy is saturated is refused, not queued.
const (
	defaultPolicyTTL   = time.Minute
	negativePolicyTTL  = 10 * time.Second // an unknown name is asked again this soon
	policyErrorTTL     = 5 * time.Second  // after a failed lookup
	policyTimeout      = 3 * time.Second
	maxPolicyEntries   = 50000
	maxPolicyInFlight  = 32
	policyCleanupBatch = maxPolicyEntries / 10
)

// domainCache asks a DomainPolicy and remembers the answers: the request
// path and every TLS handshake ask it, the relay is asked at most once per
// name per TTL.
type domainCache struct {
	policy DomainPolicy
	ttl    time.Duration
	now    func() time.Time
	log    *slog.Logger

	mu       sync.RWMutex
	entries  map[string]policyEntry
	inflight map[string]*policyCall
	slots    chan struct{} // bounds lookups in flight
}

type policyEntry struct {
	ok      bool
	expires time.Time
}

type policyCall struct {
	done chan struct{}
	ok   bool
}

func newDomainCache(p DomainPolicy, ttl time.Duration, now func() time.Time, log *slog.Logger) *domainCache {
	if p == nil {
		return nil
	}
	if ttl <= 0 {
		ttl = defaultPolicyTTL
	}
	return &domainCache{
		policy: p, ttl: ttl, now: now, log: log,
		entries:  map[string]policyEntry{},
		inflight: map[string]*policyCall{},
		slots:    make(chan struct{}, maxPolicyInFlight),
	}
}

// allowed reports whether host (lower case, no port, no trailing dot) is a
// click domain now. It blocks for at most policyTimeout on a name it has no
// fresh answer for.
func (c *domainCache) allowed(ctx context.Context, host string) bool {
	now := c.now()
	c.mu.RLock()
	e, have := c.entries[host]
	c.mu.RUnlock()
	if have && now.Before(e.expires) {
		return e.ok
	}
	if _, err := domaincheck.Normalize(host); err != nil {
		return false // never ask, never remember a name that cannot be one
	}
	c.mu.Lock()
	if call, ok := c.inflight[host]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.ok
		case <-ctx.Done():
			return have && e.ok
		}
	}
	select {
	case c.slots <- struct{}{}:
	default:
		c.mu.Unlock()
		return have && e.ok // saturated: keep the stale answer, else refuse
	}
	call := &policyCall{done: make(chan struct{})}
	c.inflight[host] = call
	c.mu.Unlock()

	ok, ttl := c.ask(ctx, host, have && e.ok)
	c.mu.Lock()
	delete(c.inflight, host)
	if len(c.entries) >= maxPolicyEntries {
		c.evict(now)
	}
	c.entries[host] = policyEntry{ok: ok, expires: c.now().Add(ttl)}
	c.mu.Unlock()
	<-c.slots
	call.ok = ok
	close(call.done)
	return ok
}

// ask asks the policy; on failure it keeps the stale answer for a short
// while.
func (c *domainCache) ask(ctx context.Context, host string, stale bool) (bool, time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), policyTimeout)
	defer cancel()
	ok, err := c.policy.ClickDomain(ctx, host)
	if err != nil {
		c.log.Warn("click domain lookup failed", "host", host, "err", err, "kept", stale)
		return stale, policyErrorTTL
	}
	if !ok {
		return false, min(negativePolicyTTL, c.ttl)
	}
	return true, c.ttl
}

// evict drops expired entries, then arbitrary ones, until there is room.
// c.mu is held.
func (c *domainCache) evict(now time.Time) {
	for h, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, h)
		}
	}
	for h := range c.entries {
		if len(c.entries) < maxPolicyEntries-policyCleanupBatch {
			break
		}
		delete(c.entries, h)
	}
}

// canonicalRequestHost is the Host of a request in the form the policy
// takes; "" when it cannot be a domain.
func canonicalRequestHost(host string) string {
	h := domaincheck.CanonicalHost(host)
	if h == "" || len(h) > 253 || strings.ContainsAny(h, "/\\@?#% \t") {
		return ""
	}
	return h
}
