package redirector

import (
	"net"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"
)

// maxForwarded bounds how many X-Forwarded-For entries are looked at.
const maxForwarded = 32

// clientIP returns the reader's address: the peer, or, when the peer is a
// trusted proxy, the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy. Entries left of that one could be written by anyone.
func (h *Handler) clientIP(ctx *fasthttp.RequestCtx) string {
	var ip netip.Addr
	switch a := ctx.RemoteAddr().(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr().Unmap()
	default:
		return a.String() // not an IP peer (a unix socket)
	}
	if !h.isTrusted(ip) {
		return ip.String()
	}
	return h.forwardedFor(ip, ctx.Request.Header.PeekAll("X-Forwarded-For"))
}

// forwardedFor walks X-Forwarded-For values (each a comma-separated
// list) from the right, starting from the trusted peer ip.
func (h *Handler) forwardedFor(ip netip.Addr, values [][]byte) string {
	seen := 0
	for i := len(values) - 1; i >= 0; i-- {
		parts := strings.Split(string(values[i]), ",")
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
