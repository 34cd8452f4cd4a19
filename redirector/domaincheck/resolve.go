package domaincheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolver asks one DNS server, recursion desired, over UDP with EDNS0
// and over TCP when an answer is truncated (RFC 1035, RFC 6891, RFC 7766).
type resolver struct {
	server  string // host:port
	timeout time.Duration
}

// maxChain bounds the CNAME chain followed (resolvers give up near 8-16).
const maxChain = 8

// dnsError is a failed lookup: the resolver's answer code, or a transport
// error (a timeout among them).
type dnsError struct {
	name    string
	rcode   int // dns.RcodeSuccess when err is set
	err     error
	timeout bool
}

func (e *dnsError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("domaincheck: lookup %s: %v", e.name, e.err)
	}
	return fmt.Sprintf("domaincheck: lookup %s: %s", e.name, dns.RcodeToString[e.rcode])
}

func (e *dnsError) Unwrap() error { return e.err }

// exchange sends one query and returns the answer, or a *dnsError for a
// transport failure or an answer code other than NOERROR and NXDOMAIN.
func (r *resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: 1232}
	in, _, err := c.ExchangeContext(ctx, m, r.server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		var ne net.Error
		to := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
		return nil, &dnsError{name: name, err: err, timeout: to}
	}
	if in.Id != m.Id {
		return nil, &dnsError{name: name, err: errors.New("answer id does not match the query")}
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return nil, &dnsError{name: name, rcode: in.Rcode}
	}
	return in, nil
}

// lookup is what a name resolves to for one address type: the CNAME chain
// from it (each alias's target, in order) and the final addresses.
type lookup struct {
	chain  []string
	addrs  []netip.Addr
	nxname string // the name that does not exist (NXDOMAIN), "" if none
}

// resolve follows name's CNAME chain for qtype (A or AAAA), asking again
// for the chain's end when the resolver did not chase it.
func (r *resolver) resolve(ctx context.Context, name string, qtype uint16) (lookup, error) {
	var out lookup
	cur := name
	seen := map[string]bool{cur: true}
	for asked := 0; asked < maxChain; asked++ {
		in, err := r.exchange(ctx, cur, qtype)
		if err != nil {
			return out, err
		}
		askedFor := cur
		// Walk the answer from cur: a resolver adds the records of the
		// chain's names, in whatever order.
		for {
			next, addrs := answerFor(in, cur, qtype)
			if len(addrs) > 0 {
				out.addrs = addrs
				return out, nil
			}
			if next == "" {
				break
			}
			if seen[next] || len(out.chain) >= maxChain {
				return out, &dnsError{name: name, err: errors.New("CNAME loop or chain too long")}
			}
			seen[next] = true
			out.chain = append(out.chain, next)
			cur = next
		}
		if in.Rcode == dns.RcodeNameError {
			out.nxname = cur // the rcode is about the chain's end (RFC 6604)
			return out, nil
		}
		if cur == askedFor {
			return out, nil // no data
		}
		// The chain moved on and the resolver did not follow it: ask.
	}
	return out, &dnsError{name: name, err: errors.New("CNAME chain too long")}
}

// answerFor returns the CNAME target of owner in in's answer section, and
// its addresses of type qtype.
func answerFor(in *dns.Msg, owner string, qtype uint16) (next string, addrs []netip.Addr) {
	fq := dns.Fqdn(owner)
	for _, rr := range in.Answer {
		if !strings.EqualFold(rr.Header().Name, fq) {
			continue
		}
		switch v := rr.(type) {
		case *dns.CNAME:
			next = canonical(v.Target)
		case *dns.A:
			if a, ok := netip.AddrFromSlice(v.A.To4()); ok && qtype == dns.TypeA {
				addrs = appendAddr(addrs, a)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok && qtype == dns.TypeAAAA {
				addrs = appendAddr(addrs, a)
			}
		}
	}
	return next, addrs
}

// addresses resolves name's A and AAAA records.
func (r *resolver) addresses(ctx context.Context, name string) (lookup, error) {
	v4, err := r.resolve(ctx, name, dns.TypeA)
	if err != nil {
		return v4, err
	}
	v6, err := r.resolve(ctx, name, dns.TypeAAAA)
	if err != nil {
		return v4, err
	}
	out := v4
	if len(out.chain) < len(v6.chain) {
		out.chain = v6.chain
	}
	for _, a := range v6.addrs {
		out.addrs = appendAddr(out.addrs, a)
	}
	if out.nxname == "" {
		out.nxname = v6.nxname
	}
	if len(out.addrs) > 0 {
		out.nxname = ""
	}
	return out, nil
}

// isApex reports whether name is a zone's apex: it owns an SOA record
// (RFC 1035 §5.2), so it cannot hold a CNAME (RFC 1034 §3.6.2).
func (r *resolver) isApex(ctx context.Context, name string) (bool, error) {
	in, err := r.exchange(ctx, name, dns.TypeSOA)
	if err != nil {
		return false, err
	}
	for _, rr := range in.Answer {
		if _, ok := rr.(*dns.SOA); ok && strings.EqualFold(rr.Header().Name, dns.Fqdn(name)) {
			return true, nil
		}
	}
	return false, nil
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func appendAddr(list []netip.Addr, a netip.Addr) []netip.Addr {
	a = a.Unmap()
	for _, b := range list {
		if a == b {
			return list
		}
	}
	return append(list, a)
}

// systemResolver is the first name server of /etc/resolv.conf, or the
// local one when there is none.
func systemResolver() string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "127.0.0.1:53"
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port)
}
