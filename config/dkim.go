package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// DKIM configures the relay's DKIM keys (SPEC §13): where their records
// are looked up, how often, and how long a replaced key stays published.
// The keys themselves are records in the store, made with the REST API or
// `trackrelay dkim keygen`.
type DKIM struct {
	// Resolver is the DNS server (host or host:port) key records are
	// checked against; empty uses /etc/resolv.conf. (When the [domains]
	// section's resolver arrives, this one can fall back to it.)
	Resolver string `toml:"resolver"`
	// CheckInterval is how often keys waiting for their record (pending)
	// are looked up.
	CheckInterval time.Duration `toml:"check_interval"`
	// RecheckInterval is how often published keys (active, retiring) are
	// looked up again; an active key whose record is gone stops signing.
	RecheckInterval time.Duration `toml:"recheck_interval"`
	// RetireAfter is how long a key replaced by a newer one stays
	// published (no longer signing) before it is retired, so mail signed
	// with it shortly before still verifies when checked late.
	RetireAfter time.Duration `toml:"retire_after"`
	// CNAMEZone, when set, offers the operator-hosted alternative: an
	// account may publish a CNAME from SELECTOR._domainkey.DOMAIN to
	// SELECTOR._domainkey.DOMAIN.CNAME_ZONE, a TXT record the operator
	// hosts in this zone (`trackrelay dkim zone` prints them).
	CNAMEZone string `toml:"cname_zone"`
}

// DKIM defaults.
const (
	DefaultDKIMCheckInterval   = 5 * time.Minute
	DefaultDKIMRecheckInterval = time.Hour
	DefaultDKIMRetireAfter     = 7 * 24 * time.Hour
)

// SetDefaults fills unset fields of the dkim section.
func (d *DKIM) SetDefaults() {
	if d.CheckInterval == 0 {
		d.CheckInterval = DefaultDKIMCheckInterval
	}
	if d.RecheckInterval == 0 {
		d.RecheckInterval = DefaultDKIMRecheckInterval
	}
	if d.RetireAfter == 0 {
		d.RetireAfter = DefaultDKIMRetireAfter
	}
	d.CNAMEZone = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d.CNAMEZone)), ".")
}

// Validate checks the dkim section and joins every problem, each named by
// its dotted key. Call SetDefaults first.
func (d *DKIM) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("dkim.%s: "+format, append([]any{key}, a...)...))
	}
	if d.Resolver != "" {
		host := d.Resolver
		if h, p, err := net.SplitHostPort(d.Resolver); err == nil {
			host = h
			if p == "" || strings.Trim(p, "0123456789") != "" {
				bad("resolver", "%q: bad port", d.Resolver)
			}
		}
		if host == "" || strings.ContainsAny(host, "/\\@?# \t") {
			bad("resolver", "%q: want host or host:port", d.Resolver)
		}
	}
	if d.CheckInterval < time.Second {
		bad("check_interval", "must be at least 1s")
	}
	if d.RecheckInterval < time.Second {
		bad("recheck_interval", "must be at least 1s")
	}
	if d.RetireAfter < 0 {
		bad("retire_after", "must be >= 0")
	}
	if z := d.CNAMEZone; z != "" && (len(z) > 200 || !strings.Contains(z, ".") || strings.ContainsAny(z, " \t/\\@?#_") || strings.Contains(z, "..")) {
		bad("cname_zone", "%q: want a DNS zone such as dkim.relay.example", z)
	}
	return errors.Join(errs...)
}
