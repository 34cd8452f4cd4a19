package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Domains configures custom click domains (issue 15): the host every
// click domain's CNAME points at, and the DNS server their check asks.
type Domains struct {
	// Target is the host name every click domain's CNAME points at, such as
	// track.relay.example: its A/AAAA records are the redirectors'
	// addresses, which an apex domain copies.
	Target string `toml:"target"`
	// Resolver is the DNS server (host:port) the check resolves click
	// domains with; empty: the system's (the first of /etc/resolv.conf).
	// Split-horizon setups and tests name their own.
	Resolver string `toml:"resolver"`
	// CheckPort is the port the check fetches a domain's challenge from:
	// the redirector's plain-HTTP port as the Internet reaches it; 0 is 80.
	CheckPort int `toml:"check_port"`
}

// Validate checks the domains section and joins every problem, each named
// by its dotted key. It is pure.
func (d *Domains) Validate() error {
	var errs []error
	if d.Target != "" && !validHostName(d.Target) {
		errs = append(errs, fmt.Errorf("domains.target: want a host name like track.relay.example (no scheme, port or IP address), got %q", d.Target))
	}
	if d.CheckPort < 0 || d.CheckPort > 65535 {
		errs = append(errs, fmt.Errorf("domains.check_port: want 1-65535 (0: 80), got %d", d.CheckPort))
	}
	if d.Resolver != "" {
		host, port, err := net.SplitHostPort(d.Resolver)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 || strings.ContainsAny(host, "/@ ") {
			errs = append(errs, fmt.Errorf("domains.resolver: want host:port like 127.0.0.1:53 or [::1]:53, got %q", d.Resolver))
		}
	}
	return errors.Join(errs...)
}

// validHostName accepts a DNS host name of two or more labels of letters,
// digits and inner hyphens (RFC 1123 §2.1), with an optional final dot.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i] | 0x20
			if !(c >= 'a' && c <= 'z' || l[i] >= '0' && l[i] <= '9' || l[i] == '-') {
				return false
			}
		}
	}
	return true
}
