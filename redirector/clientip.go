package redirector

import (
	"net/http"
	"net/netip"
	"strings"
)

// maxForwarded bounds how many X-Forwarded-For entries are looked at.
const maxForwarded = 32

// clientIP returns the reader's address: the peer, or, when the peer is a
// trusted proxy, the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy. Entries left of that one could be written by anyone.
func (h *Handler) clientIP(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr // not an IP peer (a test or a unix socket)
	}
	ip := peer.Addr().Unmap()
	if !h.isTrusted(ip) {
		return ip.String()
	}
	values := r.Header.Values("X-Forwarded-For")
	seen := 0
	for i := len(values) - 1; i >= 0; i-- {
		parts := strings.Split(values[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			if seen++; seen > maxForwarded {
				return ip.String()
			}
			s := strings.TrimSpace(parts[j])
			if s == "" {
				continue
			}
			a, err := parseForwarded(s)
			if err != nil {
				// Garbage from a trusted hop's view: keep what we know.
				return ip.String()
			}
			ip = a
			if !h.isTrusted(ip) {
				return ip.String()
			}
		}
	}
	return ip.String()
}

// parseForwarded accepts "1.2.3.4", "1.2.3.4:5678", "::1" and "[::1]:5678".
func parseForwarded(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return a.Unmap().WithZone(""), nil
}

func (h *Handler) isTrusted(ip netip.Addr) bool {
	for _, p := range h.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
