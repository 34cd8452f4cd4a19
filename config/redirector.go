package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Redirector configures the public HTTP edge (issue 5): the listeners, the
// click domains it answers for, its journal and where it ships hits.
type Redirector struct {
	// Listen is the public listener, host:port. Plain HTTP unless TLSCert
	// and TLSKey are both set and there is no TLSListen, then HTTPS.
	Listen  string `toml:"listen"`
	TLSCert string `toml:"tls_cert"` // PEM certificate chain file
	TLSKey  string `toml:"tls_key"`  // PEM private key file
	// TLSListen is the HTTPS listener, host:port; empty: none. It serves
	// the certificate files and, unless acme.directory is "off",
	// certificates obtained over ACME for the click domains; Listen then
	// stays plain HTTP (old links keep working, ACME's HTTP-01 is answered
	// there).
	TLSListen string `toml:"tls_listen"`
	// AdminListen serves /healthz, /readyz and /metrics for the
	// standalone redirector, kept off the public listener (which answers
	// /healthz and /readyz only). "off" turns it off. In `serve` the
	// relay's API listener shows the metrics instead.
	AdminListen string `toml:"admin_listen"`
	// ClickDomains are the Host values served, host or host:port,
	// case-insensitive. A bare host matches any port; host:port matches
	// only that port. Empty: every credential's click_domain and
	// relay.click_domains. The token keys are [keys].key_file.
	ClickDomains []string `toml:"click_domains"`
	// MaxLinkAge refuses tokens whose message copy is older; 0 = never.
	MaxLinkAge time.Duration `toml:"max_link_age"` // "8760h"
	// TrustedProxies are addresses or CIDR prefixes whose X-Forwarded-For
	// is believed.
	TrustedProxies []string `toml:"trusted_proxies"`
	// Journal is the path of the redirector's own bbolt hit journal;
	// empty is redirector.db in relay.data_dir. Missing folders are
	// created (0700).
	Journal string `toml:"journal"`
	// Durability is when a hit counts as kept, and so when its 302 may go
	// out. "process" (the default): the hit is written into the kernel
	// (write(2) into the hit log) before the answer, and the log is
	// fdatasynced in the background at least every FlushInterval; a killed
	// redirector loses no answered hit, a power cut or kernel crash loses
	// at most the last interval (PostgreSQL's synchronous_commit = off,
	// Kafka's default). "disk": fdatasync before every answer (shared by
	// the hits waiting at that moment); nothing answered is lost even to a
	// power cut, at a cost in hits per second.
	Durability string `toml:"durability"`
	// FlushInterval bounds how long a hit waits for its fdatasync in
	// process durability.
	FlushInterval time.Duration `toml:"flush_interval"`
	// MinFreeBytes is the hits' floor: hits never make files grow (the
	// journal's spill into bbolt, the relay's store of shipped hits) while
	// the file system holding them has less free space than this, so they
	// never take the last free space, which mail needs; keep it above the
	// mail side's reserve. Below it, hits wait in the hit log (preallocated
	// at start: the hits' own reserve); when that is full too, clicks are
	// answered 503 and /readyz fails. 0 turns the floor off.
	MinFreeBytes int64 `toml:"min_free_bytes"`
	// IngestURL is the relay's internal hit endpoint (http or https). Empty
	// in `serve`, where hits go to the relay in-process.
	IngestURL string `toml:"ingest_url"`
	// IngestSecret is the shared bearer secret for IngestURL, at least 16
	// bytes. IngestSecretFile, when set, is read instead.
	IngestSecret     string `toml:"ingest_secret"`
	IngestSecretFile string `toml:"ingest_secret_file"`
	// ShipBatch is the most hits sent in one request.
	ShipBatch int `toml:"ship_batch"`
	// ShipInterval is how often the shipper looks for hits when idle.
	ShipInterval time.Duration `toml:"ship_interval"`
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
}

// Redirector defaults.
const (
	DefaultRedirectorListen = "127.0.0.1:8080"
	DefaultRedirectorAdmin  = "127.0.0.1:8081"
	DefaultShipBatch        = 1000
	DefaultShipInterval     = time.Second
	DefaultShutdownTimeout  = 10 * time.Second
	DefaultDurability       = "process"
	DefaultFlushInterval    = 10 * time.Millisecond
	DefaultHitsMinFreeBytes = 128 << 20
	maxFlushInterval        = 10 * time.Second
	maxShipBatch            = 10000
	minIngestSecret         = 16
)

// SetDefaults fills unset fields of the redirector section.
func (r *Redirector) SetDefaults() {
	if r.Listen == "" {
		r.Listen = DefaultRedirectorListen
	}
	if r.AdminListen == "" {
		r.AdminListen = DefaultRedirectorAdmin
	}
	if r.ShipBatch == 0 {
		r.ShipBatch = DefaultShipBatch
	}
	if r.ShipInterval == 0 {
		r.ShipInterval = DefaultShipInterval
	}
	if r.ShutdownTimeout == 0 {
		r.ShutdownTimeout = DefaultShutdownTimeout
	}
	if r.Durability == "" {
		r.Durability = DefaultDurability
	}
	if r.FlushInterval == 0 {
		r.FlushInterval = DefaultFlushInterval
	}
	if r.MinFreeBytes == 0 {
		r.MinFreeBytes = DefaultHitsMinFreeBytes
	}
}

// Validate checks the redirector section and joins every problem, each
// named by its dotted key. It is pure; call SetDefaults first. It asks for
// nothing a relay-only configuration lacks; ValidateStandalone adds what
// the `trackrelay redirector` process needs.
func (r *Redirector) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("redirector.%s: "+format, append([]any{key}, a...)...))
	}
	if _, _, err := net.SplitHostPort(r.Listen); err != nil {
		bad("listen", "want host:port, got %q", r.Listen)
	}
	if r.TLSListen != "" {
		if _, _, err := net.SplitHostPort(r.TLSListen); err != nil {
			bad("tls_listen", "want host:port, got %q", r.TLSListen)
		} else if r.TLSListen == r.Listen {
			bad("tls_listen", "must differ from redirector.listen")
		}
	}
	if r.AdminListen != "off" {
		if _, _, err := net.SplitHostPort(r.AdminListen); err != nil {
			bad("admin_listen", "want host:port, got %q", r.AdminListen)
		}
	}
	if (r.TLSCert == "") != (r.TLSKey == "") {
		bad("tls_cert", "tls_cert and tls_key go together")
	}
	for _, d := range r.ClickDomains {
		if err := checkClickDomain(d); err != nil {
			bad("click_domains", "%q: %v", d, err)
		}
	}
	if r.MaxLinkAge < 0 {
		bad("max_link_age", "must be >= 0")
	}
	for _, p := range r.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			bad("trusted_proxies", "%q: not an address or CIDR prefix", p)
		}
	}
	if r.IngestURL != "" {
		u, err := url.Parse(r.IngestURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("ingest_url", "want an http(s) URL, got %q", r.IngestURL)
		}
	}
	if r.IngestSecret != "" && len(r.IngestSecret) < minIngestSecret {
		bad("ingest_secret", "must be at least %d bytes", minIngestSecret)
	}
	if r.ShipBatch <= 0 || r.ShipBatch > maxShipBatch {
		bad("ship_batch", "must be 1-%d", maxShipBatch)
	}
	if r.ShipInterval <= 0 {
		bad("ship_interval", "must be > 0")
	}
	if r.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be > 0")
	}
	if r.Durability != "process" && r.Durability != "disk" {
		bad("durability", `want "process" or "disk", got %q`, r.Durability)
	}
	if r.FlushInterval <= 0 || r.FlushInterval > maxFlushInterval {
		bad("flush_interval", "must be > 0 and at most %v", maxFlushInterval)
	}
	if r.MinFreeBytes < 0 {
		bad("min_free_bytes", "must be >= 0 (0 turns the floor off)")
	}
	return errors.Join(errs...)
}

func checkClickDomain(d string) error {
	host := d
	if h, p, err := net.SplitHostPort(d); err == nil {
		host = h
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return errors.New("bad port")
		}
	}
	if host == "" || strings.ContainsAny(host, "/\\@?# \t") {
		return errors.New("want host or host:port")
	}
	return nil
}

// ValidateStandalone adds what a redirector running as its own process
// needs: somewhere to ship hits to, and the secret to do it with.
func (r *Redirector) ValidateStandalone() error {
	var errs []error
	if r.IngestURL == "" {
		errs = append(errs, errors.New("redirector.ingest_url: required when the redirector runs alone"))
	}
	if r.IngestSecret == "" && r.IngestSecretFile == "" {
		errs = append(errs, errors.New("redirector.ingest_secret: required when the redirector runs alone"))
	}
	return errors.Join(r.Validate(), errors.Join(errs...))
}

// parsePrefix parses an address ("10.0.0.1") or a CIDR prefix
// ("10.0.0.0/8") as a prefix; the redirector parses the same way.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("config: %w", err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("config: %w", err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
