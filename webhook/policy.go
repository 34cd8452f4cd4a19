package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Policy says where webhook requests may go. The zero value is the safe
// default: https:// only, public addresses only.
type Policy struct {
	// AllowHTTP accepts http:// endpoint URLs (development, or receivers
	// on a trusted network).
	AllowHTTP bool
	// AllowLoopback accepts loopback addresses (127.0.0.0/8, ::1) and the
	// name localhost: serve --dev, where the receiver runs on the same
	// machine.
	AllowLoopback bool
	// AllowPrivate accepts private addresses: RFC 1918, RFC 6598 shared
	// space (100.64.0.0/10) and IPv6 unique local addresses. Link-local
	// addresses (cloud metadata services live there) and the relay's own
	// addresses stay refused; list them in AllowNetworks to reach them.
	AllowPrivate bool
	// AllowNetworks are prefixes accepted whatever else is said here.
	AllowNetworks []netip.Prefix
}

// ErrRefused is wrapped by every error for a URL or address the policy
// refuses.
var ErrRefused = errors.New("webhook: refused by the endpoint policy")

// AddrError is the error for a connection refused by the policy.
type AddrError struct {
	Addr   netip.Addr
	Reason string
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("webhook: address %s refused: %s", e.Addr, e.Reason)
}

func (e *AddrError) Unwrap() error { return ErrRefused }

// MaxURLLen bounds an endpoint URL.
const MaxURLLen = 2048

// CheckURL reports whether raw may be an endpoint URL: absolute, https://
// (or http:// when allowed), a host, no user info or fragment, and, when
// the host is an address literal or localhost, an address the policy
// allows. Names are checked again, after DNS, at every connection.
func (p *Policy) CheckURL(raw string) error {
	_, err := p.parseURL(raw)
	return err
}

func (p *Policy) parseURL(raw string) (*url.URL, error) {
	if len(raw) > MaxURLLen {
		return nil, fmt.Errorf("%w: url longer than %d bytes", ErrRefused, MaxURLLen)
	}
	if strings.IndexFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, fmt.Errorf("%w: url has spaces or control characters", ErrRefused)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: url: %v", ErrRefused, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !p.AllowHTTP {
			return nil, fmt.Errorf("%w: url must be https://", ErrRefused)
		}
	default:
		if p.AllowHTTP {
			return nil, fmt.Errorf("%w: url must be https:// or http://", ErrRefused)
		}
		return nil, fmt.Errorf("%w: url must be https://", ErrRefused)
	}
	switch {
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%w: url has no host", ErrRefused)
	case u.User != nil:
		return nil, fmt.Errorf("%w: url must not hold a user name or password", ErrRefused)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("%w: url must not have a #fragment", ErrRefused)
	}
	if port := u.Port(); port != "" {
		if n, err := netip.ParseAddrPort("0.0.0.0:" + port); err != nil || n.Port() == 0 {
			return nil, fmt.Errorf("%w: url has a bad port", ErrRefused)
		}
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := p.CheckAddr(ip, nil); err != nil {
			return nil, err
		}
	} else if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if err := p.CheckAddr(netip.IPv6Loopback(), nil); err != nil {
			return nil, fmt.Errorf("%w: %s is loopback", ErrRefused, host)
		}
	}
	return u, nil
}

// Special-purpose ranges refused as reserved (RFC 6890 and its updates)
// beyond what netip's predicates name.
var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

var (
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598
	nat64       = netip.MustParsePrefix("64:ff9b::/96")  // RFC 6052
	sixToFour   = netip.MustParsePrefix("2002::/16")     // RFC 3056
)

// CheckAddr returns an *AddrError if the policy refuses a connection to
// ip; own lists the relay's own addresses (nil: none known).
func (p *Policy) CheckAddr(ip netip.Addr, own []netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, n := range p.AllowNetworks {
		if n.Contains(ip) {
			return nil
		}
	}
	refuse := func(reason string) error { return &AddrError{Addr: ip, Reason: reason} }
	// Addresses that carry an IPv4 address inside are judged by it.
	if nat64.Contains(ip) || sixToFour.Contains(ip) {
		b := ip.As16()
		var v4 [4]byte
		if nat64.Contains(ip) {
			copy(v4[:], b[12:])
		} else {
			copy(v4[:], b[2:6])
		}
		if err := p.CheckAddr(netip.AddrFrom4(v4), own); err != nil {
			return refuse("it embeds " + netip.AddrFrom4(v4).String())
		}
	}
	switch {
	case !ip.IsValid():
		return refuse("not an address")
	case ip.IsLoopback():
		if !p.AllowLoopback {
			return refuse("loopback")
		}
		return nil // the relay's own, but allowed with loopback
	case ip.IsUnspecified():
		return refuse("unspecified")
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return refuse("link-local")
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return refuse("multicast")
	case ip.IsPrivate() || sharedSpace.Contains(ip):
		if !p.AllowPrivate {
			return refuse("private")
		}
	}
	for _, n := range reserved {
		if n.Contains(ip) {
			return refuse("reserved")
		}
	}
	for _, o := range own {
		if o == ip {
			return refuse("the relay's own address")
		}
	}
	return nil
}

// ownAddrs keeps the addresses of this machine's interfaces, read again
// now and then (addresses come and go).
type ownAddrs struct {
	mu    sync.Mutex
	addrs []netip.Addr
	read  time.Time
}

const ownAddrsTTL = 30 * time.Second

func (o *ownAddrs) get() []netip.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	if time.Since(o.read) < ownAddrsTTL && o.read != (time.Time{}) {
		return o.addrs
	}
	ias, err := net.InterfaceAddrs()
	if err != nil {
		return o.addrs // keep the last known
	}
	o.addrs = o.addrs[:0:0]
	for _, a := range ias {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				o.addrs = append(o.addrs, ip.Unmap())
			}
		}
	}
	o.read = time.Now()
	return o.addrs
}

// control is the dialer's Control function: it runs after DNS, for every
// address a connection is about to be made to, before any packet leaves.
func (p *Policy) control(own *ownAddrs) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: cannot read address %q", ErrRefused, address)
		}
		return p.CheckAddr(ap.Addr(), own.get())
	}
}
