package domaincheck

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// maxName is the longest domain name in presentation form without the
// root dot (RFC 1035 §2.3.4).
const maxName = 253

// Normalize returns domain as a click domain is stored and compared: IDNA
// A-labels (RFC 5891, UTS #46 lookup rules), lower case, no trailing dot.
// It refuses IP literals, ports, single-label names, and anything that is
// not letters, digits and hyphens in labels of 1-63 bytes. Errors wrap
// ErrBadName.
func Normalize(domain string) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(domain), ".")
	if d == "" || len(d) > 4*maxName || !utf8.ValidString(d) {
		return "", fmt.Errorf("%w: %q", ErrBadName, truncate(domain))
	}
	if _, err := netip.ParseAddr(strings.Trim(d, "[]")); err == nil {
		return "", fmt.Errorf("%w: %q is an IP address; a click domain is a host name", ErrBadName, d)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrBadName, truncate(d), err)
	}
	a = strings.ToLower(a)
	if len(a) > maxName {
		return "", fmt.Errorf("%w: %q is longer than %d bytes", ErrBadName, truncate(a), maxName)
	}
	labels := strings.Split(a, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("%w: %q has a single label; use a name like link.example.com", ErrBadName, a)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return "", fmt.Errorf("%w: %q: label %q must be 1-63 letters, digits or inner hyphens", ErrBadName, a, truncate(l))
		}
	}
	return a, nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
