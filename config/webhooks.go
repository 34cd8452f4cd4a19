package config

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Webhooks configures the delivery of webhooks (issue 17): where requests
// may go and how they are paced. The endpoints themselves are records in
// the store, made over the REST API.
type Webhooks struct {
	// AllowHTTP accepts http:// endpoint URLs; by default only https://.
	AllowHTTP bool `toml:"allow_http"`
	// AllowLoopback lets requests reach loopback addresses (127.0.0.0/8,
	// ::1, localhost): a receiver on the relay's own machine.
	AllowLoopback bool `toml:"allow_loopback"`
	// AllowPrivate lets requests reach private addresses (RFC 1918,
	// 100.64.0.0/10, fc00::/7). Link-local addresses and the relay's own
	// stay refused unless listed in AllowNetworks.
	AllowPrivate bool `toml:"allow_private"`
	// AllowNetworks are CIDR prefixes requests may always reach.
	AllowNetworks []string `toml:"allow_networks"`
	// Timeout bounds one attempt (connect, TLS, request and answer).
	Timeout time.Duration `toml:"timeout"`
	// Concurrency is the most requests in flight to one endpoint.
	Concurrency int `toml:"concurrency"`
	// DisableAfter disables an endpoint that failed this long without a
	// single success.
	DisableAfter time.Duration `toml:"disable_after"`
	// Lease is how long a node keeps a claimed message from the others; a
	// node that dies holding messages delays them by this much.
	Lease time.Duration `toml:"lease"`
}

// Webhooks defaults.
const (
	DefaultWebhookTimeout      = 15 * time.Second
	DefaultWebhookConcurrency  = 4
	DefaultWebhookDisableAfter = 5 * 24 * time.Hour
	DefaultWebhookLease        = 2 * time.Minute
)

// SetDefaults fills in the unset values.
func (w *Webhooks) SetDefaults() {
	if w.Timeout == 0 {
		w.Timeout = DefaultWebhookTimeout
	}
	if w.Concurrency == 0 {
		w.Concurrency = DefaultWebhookConcurrency
	}
	if w.DisableAfter == 0 {
		w.DisableAfter = DefaultWebhookDisableAfter
	}
	if w.Lease == 0 {
		w.Lease = DefaultWebhookLease
	}
}

// Networks returns AllowNetworks parsed (Validate has checked them).
func (w *Webhooks) Networks() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range w.AllowNetworks {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Validate checks the section; problems are named webhooks.KEY.
func (w *Webhooks) Validate() error {
	var p problems
	for i, s := range w.AllowNetworks {
		if _, err := netip.ParsePrefix(s); err != nil {
			p.add(fmt.Sprintf("webhooks.allow_networks[%d]", i), "%q is not a CIDR prefix", s)
		}
	}
	if w.Timeout <= 0 || w.Timeout > 5*time.Minute {
		p.add("webhooks.timeout", "must be > 0 and <= 5m")
	}
	if w.Concurrency < 1 || w.Concurrency > 256 {
		p.add("webhooks.concurrency", "must be 1-256")
	}
	if w.DisableAfter < time.Hour {
		p.add("webhooks.disable_after", "must be >= 1h")
	}
	if w.Lease <= w.Timeout {
		p.add("webhooks.lease", "must be longer than webhooks.timeout")
	}
	return errors.Join(p...)
}
