// Package dkimtest gives tests outside mime/dkim what its own tests use
// to prove signatures (RFC 6376): a real DNS server (miekg/dns, UDP and
// TCP on 127.0.0.1) holding key records, and Python's dkimpy (Debian
// python3-dkim), the independent verifier, asking that server for keys.
// It is for tests only.
package dkimtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a DNS server answering from a zone the test fills in, as a
// recursive resolver would: CNAME chains are followed in the answer.
type DNS struct {
	Addr string // 127.0.0.1:PORT, UDP and TCP

	mu   sync.Mutex
	zone map[string][]dns.RR // by lower-case FQDN
}

// StartDNS starts a server; it stops when the test ends.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	d := &DNS{zone: map[string][]dns.RR{}}
	d.Addr = Serve(t, d)
	return d
}

// Serve serves h over UDP and TCP on one free port of 127.0.0.1 until the
// test ends, and returns the address. The test DNS servers here and in
// mime/dkim's own tests answer through it.
func Serve(t testing.TB, h dns.Handler) string {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatalf("dkimtest: no port free for both UDP and TCP: %v", err)
		}
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // cleanups run last-in first-out: after both Shutdowns
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// SetTXT replaces the records at name with one TXT record per value, each
// split into 255-byte strings as a zone file holds it.
func (d *DNS) SetTXT(name string, values ...string) {
	var rrs []dns.RR
	for _, v := range values {
		var parts []string
		for len(v) > 255 {
			parts, v = append(parts, v[:255]), v[255:]
		}
		parts = append(parts, v)
		rrs = append(rrs, &dns.TXT{Hdr: dns.RR_Header{Name: fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: parts})
	}
	d.mu.Lock()
	d.zone[fqdn(name)] = rrs
	d.mu.Unlock()
}

// SetCNAME makes name a CNAME to target.
func (d *DNS) SetCNAME(name, target string) {
	d.mu.Lock()
	d.zone[fqdn(name)] = []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: fqdn(name), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: fqdn(target)}}
	d.mu.Unlock()
}

// SetZoneLine publishes one zone-file line such as mime/dkim.ZoneLine
// gives (NAME. IN TXT "..." "..." or NAME. IN CNAME TARGET.), parsed by
// miekg/dns as a name server would read it.
func (d *DNS) SetZoneLine(t testing.TB, line string) {
	t.Helper()
	rr, err := dns.NewRR(line)
	if err != nil || rr == nil {
		t.Fatalf("dkimtest: zone line %q: %v", line, err)
	}
	d.mu.Lock()
	d.zone[fqdn(rr.Header().Name)] = []dns.RR{rr}
	d.mu.Unlock()
}

// Remove removes every record at name.
func (d *DNS) Remove(name string) {
	d.mu.Lock()
	delete(d.zone, fqdn(name))
	d.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
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
		rrs, ok := d.zone[cur]
		if !ok {
			if hops == 0 {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		if c, isCNAME := rrs[0].(*dns.CNAME); isCNAME && q.Qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, c)
			if hops > 16 {
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
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// Result is dkimpy's verdict on one signature.
type Result struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
}

// Verifier is a running mime/dkim/testdata/verify.py: dkimpy asking the
// test's DNS server for keys.
type Verifier struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
}

// Python is Debian's interpreter, where python3-dkim installs dkimpy.
const Python = "/usr/bin/python3"

// StartVerifier starts dkimpy against the DNS server at dnsAddr. It skips
// the test when /usr/bin/python3 lacks dkimpy, dnspython or PyNaCl (make
// deps installs python3-dkim, which brings them).
func StartVerifier(t testing.TB, dnsAddr string) *Verifier {
	t.Helper()
	if out, err := exec.Command(Python, "-c", "import dkim, dns.resolver, nacl").CombinedOutput(); err != nil {
		t.Skipf("dkimpy not usable (%v: %s): make deps installs python3-dkim", err, bytes.TrimSpace(out))
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "testdata", "verify.py")
	_, port, _ := strings.Cut(dnsAddr, ":")
	v := &Verifier{cmd: exec.Command(Python, script, port)}
	v.cmd.Stderr = &v.stderr
	var err error
	if v.in, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.out = bufio.NewReader(out)
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.in.Close()
		if err := v.cmd.Wait(); err != nil {
			t.Errorf("verify.py: %v: %s", err, v.stderr.String())
		}
	})
	return v
}

// Verify asks dkimpy about the top nsig signatures of msg (each result
// in order, the topmost first).
func (v *Verifier) Verify(t testing.TB, msg []byte, nsig int) []Result {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, err := fmt.Fprintf(v.in, "%d %d\n", len(msg), nsig); err != nil {
		t.Fatalf("verify.py: %v: %s", err, v.stderr.String())
	}
	if _, err := v.in.Write(msg); err != nil {
		t.Fatalf("verify.py: %v: %s", err, v.stderr.String())
	}
	line, err := v.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("verify.py: %v: %s", err, v.stderr.String())
	}
	var r struct{ Results []Result }
	if err := json.Unmarshal(line, &r); err != nil || len(r.Results) != nsig {
		t.Fatalf("verify.py answered %q: %v", line, err)
	}
	return r.Results
}

// AllOK reports whether every result verified, and the reasons if not.
func AllOK(rs []Result) (bool, string) {
	var why []string
	for i, r := range rs {
		if !r.OK {
			why = append(why, fmt.Sprintf("signature %d: %s", i, r.Reason))
		}
	}
	return len(why) == 0, strings.Join(why, "; ")
}

// Signatures returns the d= and s= of each DKIM-Signature field at the
// top of msg's header, topmost first, as "d/s".
func Signatures(msg []byte) []string {
	var out []string
	hdr, _, _ := bytes.Cut(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")), []byte("\n\n"))
	// Unfold, then look at each field.
	lines := strings.Split(string(hdr), "\n")
	var fields []string
	for _, l := range lines {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += l
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		name, val, ok := strings.Cut(f, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			continue
		}
		tags := map[string]string{}
		for _, tv := range strings.Split(val, ";") {
			k, v, _ := strings.Cut(tv, "=")
			tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
		}
		out = append(out, tags["d"]+"/"+tags["s"])
	}
	return out
}
