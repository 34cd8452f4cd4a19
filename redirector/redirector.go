// Package redirector is trackrelay's public HTTP edge (SPEC §6, §7). It
// verifies the token in a tracked URL, makes the hit durable in its own
// journal, and answers a 302 to the original URL (clicks and images) or a
// 1×1 GIF (the open pixel); a bad token gets a 404 and never a redirect. A
// shipper sends journaled hits to the relay, at least once, over an
// authenticated internal endpoint (IngestHandler) or in-process (Sink).
// The relay stores the valid hits of a batch and names the others, each
// with a reason, in its 200 answer; the shipper drops those (logging them
// at warn) so that one bad hit never blocks the ones behind it.
//
// HTTP per RFC 9110 (semantics) and RFC 9111 (Cache-Control); hosts in
// Unicode leave as IDNA A-labels (RFC 5891, UTS #46); X-Forwarded-For as
// deployed by load balancers (the rightmost untrusted address).
package redirector

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/redirector/domaincheck"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// Config is what a Handler needs. Codec, Domains and Journal are required.
type Config struct {
	Codec *rewrite.Codec
	// Domains are the click domains served: host or host:port,
	// case-insensitive. A bare host matches any port; host:port matches
	// only that port (80 or 443 when the request names none).
	Domains []string
	// MaxLinkAge refuses tokens whose message copy is older; 0 = never.
	MaxLinkAge time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Journal makes every hit durable before the response.
	Journal *store.Journal
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Policy admits click domains added at run time (the relay's verified
	// domains) when Domains does not match; answers are cached for
	// PolicyTTL (0: a minute). nil: Domains only. See domains.go.
	Policy    DomainPolicy
	PolicyTTL time.Duration
	// Challenger answers the domain check (domaincheck.Path); nil: 404.
	Challenger *domaincheck.Challenger
}

// Handler serves the click domains. It is an http.Handler, safe for
// concurrent use.
type Handler struct {
	codec    *rewrite.Codec
	domains  []domain
	maxAge   time.Duration
	trusted  []netip.Prefix
	journal  *store.Journal
	log      *slog.Logger
	now      func() time.Time
	m        *metrics
	kick     chan struct{} // tells the shipper there is work
	draining atomic.Bool   // set by SetDraining: /readyz fails

	dyn        *domainCache // Config.Policy, cached; nil without one
	challenger *domaincheck.Challenger
	// lastErrLog is when a failed append was last logged (UnixNano).
	lastErrLog atomic.Int64
}

type domain struct {
	host string // lowercase, no trailing dot
	port string // "" matches any port
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Codec == nil {
		return nil, errors.New("redirector: no token codec")
	}
	if cfg.Journal == nil {
		return nil, errors.New("redirector: no journal")
	}
	if len(cfg.Domains) == 0 && cfg.Policy == nil {
		return nil, errors.New("redirector: no click domains")
	}
	h := &Handler{
		codec:   cfg.Codec,
		maxAge:  cfg.MaxLinkAge,
		trusted: cfg.TrustedProxies,
		journal: cfg.Journal,
		log:     cfg.Logger,
		now:     cfg.Now,
		kick:    make(chan struct{}, 1),
	}
	for _, d := range cfg.Domains {
		dom, err := parseDomain(d)
		if err != nil {
			return nil, err
		}
		h.domains = append(h.domains, dom)
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	m, err := newMetrics(cfg.Registerer, cfg.Journal, h.now)
	if err != nil {
		return nil, err
	}
	h.m = m
	h.dyn = newDomainCache(cfg.Policy, cfg.PolicyTTL, h.now, h.log)
	h.challenger = cfg.Challenger
	return h, nil
}

func parseDomain(d string) (domain, error) {
	host, port := d, ""
	if h, p, err := net.SplitHostPort(d); err == nil {
		host, port = h, p
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || strings.ContainsAny(host, "/\\@?# ") {
		return domain{}, fmt.Errorf("redirector: click domain %q: want host or host:port", d)
	}
	return domain{host: host, port: port}, nil
}

// SetDraining makes /readyz fail, so a load balancer stops sending
// traffic before a shutdown.
func (h *Handler) SetDraining(v bool) { h.draining.Store(v) }

// ParsePrefixes parses addresses ("10.0.0.1") and CIDR prefixes
// ("10.0.0.0/8") for Config.TrustedProxies.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("redirector: trusted proxy %q: %w", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("redirector: trusted proxy %q: %w", s, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
