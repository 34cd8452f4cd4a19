package dkim

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
)

// testDNS is a real DNS server (miekg/dns) on 127.0.0.1, UDP and TCP on
// one port, answering from a zone the test fills in. It answers like a
// recursive resolver: CNAME chains are followed within the answer unless
// noChase is set, when it answers the CNAME alone as an authoritative
// server of the first name would.
type testDNS struct {
	addr    string
	mu      sync.Mutex
	zone    map[string][]dns.RR // by lower-case FQDN
	rcode   map[string]int      // a forced reply code for a name
	noChase bool
	udpMax  int // when > 0, UDP answers are truncated to this size whatever EDNS0 asks
	queries atomic.Int64
	tcp     atomic.Int64 // queries over TCP
}

func startDNS(t testing.TB) *testDNS {
	t.Helper()
	d := &testDNS{zone: map[string][]dns.RR{}, rcode: map[string]int{}}
	d.addr = dkimtest.Serve(t, d)
	return d
}

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// setTXT replaces the records at name with one TXT record per value, each
// split into 255-byte strings as a zone file would hold it.
func (d *testDNS) setTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var rrs []dns.RR
	for _, v := range values {
		var parts []string
		for len(v) > 255 {
			parts = append(parts, v[:255])
			v = v[255:]
		}
		parts = append(parts, v)
		rrs = append(rrs, &dns.TXT{Hdr: dns.RR_Header{Name: fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: parts})
	}
	d.zone[fqdn(name)] = rrs
}

// setRR sets records of another type at name (so the name exists).
func (d *testDNS) setRR(name string, rr ...dns.RR) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.zone[fqdn(name)] = rr
}

func (d *testDNS) setCNAME(name, target string) {
	d.setRR(name, &dns.CNAME{Hdr: dns.RR_Header{Name: fqdn(name), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: fqdn(target)})
}

// set changes the server's behaviour under its lock.
func (d *testDNS) set(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f()
}

func (d *testDNS) setRcode(name string, rcode int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rcode[fqdn(name)] = rcode
}

func (d *testDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	d.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	d.mu.Lock()
	cur := strings.ToLower(q.Name)
	for hops := 0; ; hops++ {
		if rc, ok := d.rcode[cur]; ok {
			m.Rcode = rc
			break
		}
		rrs, ok := d.zone[cur]
		if !ok {
			m.Rcode = dns.RcodeNameError
			break
		}
		if c, isCNAME := rrs[0].(*dns.CNAME); isCNAME && q.Qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, c)
			if d.noChase || hops > 16 {
				break
			}
			cur = strings.ToLower(c.Target)
			continue
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		break
	}
	d.mu.Unlock()
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := 512
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		d.mu.Lock()
		if d.udpMax > 0 {
			size = min(size, d.udpMax)
		}
		d.mu.Unlock()
		m.Truncate(size)
	} else {
		d.tcp.Add(1)
	}
	w.WriteMsg(m)
}
