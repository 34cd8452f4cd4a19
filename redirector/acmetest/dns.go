// Package acmetest runs the real servers that click-domain tests need: a
// DNS server (miekg/dns) that answers for the test's names as a recursive
// resolver would, and pebble, Let's Encrypt's ACME test server, validating
// challenges for real against that DNS. Like net/http/httptest, it is for
// tests only.
package acmetest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a DNS server on 127.0.0.1 (UDP and TCP, one port) serving a
// mutable set of records. For a name with a CNAME it answers the whole
// chain within its data, as a recursive resolver does; a name it has no
// records for is NXDOMAIN. It is safe for concurrent use.
type DNS struct {
	// Addr is host:port, for [domains] resolver and pebble's -dnsserver.
	Addr string

	mu      sync.Mutex
	names   map[string]*node
	queries map[string]int // by lower-case name, without the dot
	noChase bool
	udp     *dns.Server
	tcp     *dns.Server
}

// node holds one name's records.
type node struct {
	a, aaaa  []netip.Addr
	cname    string
	soa      bool
	servfail bool // answer SERVFAIL
	drop     bool // never answer
}

// StartDNS starts a DNS server that stops when t ends.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	// One port for UDP and TCP: the UDP port is picked, and the TCP one of
	// the same number may be taken already; then another is picked.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	d := &DNS{Addr: pc.LocalAddr().String(), names: map[string]*node{}, queries: map[string]int{}}
	d.udp = &dns.Server{PacketConn: pc, Handler: d}
	d.tcp = &dns.Server{Listener: ln, Handler: d}
	var wg sync.WaitGroup
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		_ = d.udp.Shutdown()
		_ = d.tcp.Shutdown()
		wg.Wait()
	})
	return d
}

func key(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func (d *DNS) node(name string) *node {
	k := key(name)
	n := d.names[k]
	if n == nil {
		n = &node{}
		d.names[k] = n
	}
	return n
}

// SetA replaces name's A records (IPv4 addresses).
func (d *DNS) SetA(name string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.node(name)
	n.a = nil
	for _, a := range addrs {
		n.a = append(n.a, netip.MustParseAddr(a))
	}
}

// SetAAAA replaces name's AAAA records.
func (d *DNS) SetAAAA(name string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.node(name)
	n.aaaa = nil
	for _, a := range addrs {
		n.aaaa = append(n.aaaa, netip.MustParseAddr(a))
	}
}

// SetCNAME makes name an alias of target.
func (d *DNS) SetCNAME(name, target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.node(name).cname = key(target)
}

// SetApex gives name an SOA record: it is a zone's apex.
func (d *DNS) SetApex(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.node(name).soa = true
}

// SetServFail makes every query for name answer SERVFAIL.
func (d *DNS) SetServFail(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.node(name).servfail = true
}

// SetDrop makes the server ignore every query for name, so clients time
// out.
func (d *DNS) SetDrop(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.node(name).drop = true
}

// SetChase sets whether answers follow CNAME chains (the default, as a
// recursive resolver's do) or stop at the first CNAME, as an authoritative
// server's do for a target outside its zone.
func (d *DNS) SetChase(chase bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noChase = !chase
}

// Remove deletes every record of name: it is NXDOMAIN again.
func (d *DNS) Remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.names, key(name))
}

// Queries is how many queries named name so far.
func (d *DNS) Queries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[key(name)]
}

const ttl = 60

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative, m.RecursionAvailable = true, true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	d.mu.Lock()
	d.queries[key(q.Name)]++
	if n := d.names[key(q.Name)]; n != nil && n.drop {
		d.mu.Unlock()
		return
	}
	d.answer(m, q)
	d.mu.Unlock()
	_ = w.WriteMsg(m)
}

// answer fills m for q, following CNAMEs in d's data. d.mu is held.
func (d *DNS) answer(m *dns.Msg, q dns.Question) {
	cur := key(q.Name)
	for hops := 0; hops < 16; hops++ {
		n := d.names[cur]
		if n == nil {
			m.Rcode = dns.RcodeNameError
			return
		}
		if n.servfail {
			m.Rcode = dns.RcodeServerFailure
			m.Answer = nil
			return
		}
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: dns.Fqdn(cur), Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
		}
		if n.cname != "" && q.Qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(n.cname)})
			if d.noChase {
				return
			}
			cur = n.cname
			continue
		}
		switch q.Qtype {
		case dns.TypeA:
			for _, a := range n.a {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
			}
		case dns.TypeAAAA:
			for _, a := range n.aaaa {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		case dns.TypeCNAME:
			if n.cname != "" {
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(n.cname)})
			}
		case dns.TypeSOA:
			if n.soa {
				m.Answer = append(m.Answer, &dns.SOA{Hdr: hdr(dns.TypeSOA), Ns: "ns." + dns.Fqdn(cur), Mbox: "hostmaster." + dns.Fqdn(cur),
					Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl})
			}
		}
		return
	}
	m.Rcode = dns.RcodeServerFailure
	m.Answer = nil
}
