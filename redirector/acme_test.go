package redirector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/redirector/acmetest"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// acmeEnv is a redirector with ACME on, a pebble validating its challenges
// for real, and a DNS server both resolve the test names with.
type acmeEnv struct {
	t                 *testing.T
	dns               *acmetest.DNS
	pebble            *acmetest.Pebble
	policy            *DomainSet
	codec             *rewrite.Codec
	httpAddr, tlsAddr string
	storage           string
	opts              func(*Options)
	svc               *Service
	reg               *prometheus.Registry
}

// newACMEEnv starts DNS and pebble for a redirector on two loopback ports
// chosen now (pebble must be told them before it starts), and the
// redirector, which click domains link.test and stranger.test point at;
// only link.test is admitted by the policy.
func newACMEEnv(t *testing.T, validity time.Duration, opts func(*Options)) *acmeEnv {
	t.Helper()
	if _, err := acmetest.Binary(); err != nil {
		t.Skip("pebble is not installed (make deps installs Debian's pebble); the ACME tests need a real ACME server")
	}
	e := &acmeEnv{t: t, dns: acmetest.StartDNS(t), policy: NewDomainSet("link.test"), opts: opts,
		storage: filepath.Join(t.TempDir(), "acme")}
	e.codec, _ = rewrite.NewCodec(testKeyNew)
	for _, n := range []string{"link.test", "stranger.test"} {
		e.dns.SetA(n, "127.0.0.1")
	}
	// The redirector's ports are held while pebble picks its own, so that
	// they cannot collide; another process on the machine may still take
	// one before the redirector binds it again, and then all is tried anew.
	for attempt := 0; ; attempt++ {
		hl, tl := listen(t), listen(t)
		e.httpAddr, e.tlsAddr = hl.Addr().String(), tl.Addr().String()
		e.pebble = acmetest.StartPebble(t, acmetest.PebbleOptions{
			DNS: e.dns.Addr, HTTPPort: port(t, e.httpAddr), TLSPort: port(t, e.tlsAddr), Validity: validity,
		})
		hl.Close()
		tl.Close()
		err := e.tryStart()
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 2 {
			t.Fatal(err)
		}
		e.pebble.Stop()
	}
	t.Cleanup(e.stop)
	return e
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func port(t *testing.T, addr string) int {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a.Port
}

// start starts the redirector (again, on the same addresses and storage).
func (e *acmeEnv) start() {
	e.t.Helper()
	if err := e.tryStart(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *acmeEnv) tryStart() error {
	e.reg = prometheus.NewRegistry()
	o := Options{
		Handler: Config{Codec: e.codec, Domains: []string{"click.example.com"}, Policy: e.policy, PolicyTTL: time.Second,
			Registerer: e.reg, Logger: slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))},
		JournalPath: filepath.Join(e.t.TempDir(), "journal.db"),
		Listen:      e.httpAddr, TLSListen: e.tlsAddr,
		ACME: &ACME{Directory: e.pebble.Directory, Roots: e.pebble.CAPool, Email: "ops@relay.test", StorageDir: e.storage},
		Sink: SinkFunc(func(context.Context, []store.Hit) error { return nil }),
	}
	if e.opts != nil {
		e.opts(&o)
	}
	svc, err := Start(o)
	if err != nil {
		return err
	}
	e.svc = svc
	return nil
}

func (e *acmeEnv) stop() {
	if e.svc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.svc.Shutdown(ctx); err != nil {
		e.t.Error(err)
	}
	e.svc = nil
}

// handshake connects to the TLS listener with SNI name, trusting pebble's
// root, and returns the leaf the redirector served.
func (e *acmeEnv) handshake(name string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", e.tlsAddr, &tls.Config{ServerName: name, RootCAs: e.pebble.Roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// curl fetches url with the real curl binary, name resolving to the
// redirector, trusting pebble's root; it returns the status and Location.
func (e *acmeEnv) curl(url, name, addr string) (code, location string, err error) {
	e.t.Helper()
	bin, lerr := exec.LookPath("curl")
	if lerr != nil {
		e.t.Skip("curl is not installed")
	}
	out, err := exec.Command(bin, "-sS", "--max-time", "60", "-o", "/dev/null",
		"-w", "%{http_code} %{redirect_url}",
		"--cacert", e.pebble.RootFile,
		"--resolve", name+":"+strconv.Itoa(port(e.t, addr))+":127.0.0.1",
		url).CombinedOutput()
	if err != nil {
		return "", "", errors.New(strings.TrimSpace(string(out)))
	}
	code, location, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	return code, location, nil
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestACMEOnDemand: the first HTTPS request for a click domain obtains a
// certificate from pebble (TLS-ALPN-01 validated on the HTTPS listener),
// and curl trusting pebble's root follows a tracked link to a 302; a name
// the policy does not admit gets no certificate, no order at pebble and no
// redirect, over HTTPS or HTTP.
func TestACMEOnDemand(t *testing.T) {
	e := newACMEEnv(t, 0, func(o *Options) { o.ACME.DisableHTTPChallenge = true })
	tok := e.codec.Encode(click("shop.example.com"))
	url := "https://link.test:" + strconv.Itoa(port(t, e.tlsAddr)) + "/" + tok + "/products/shoes?color=red"
	code, loc, err := e.curl(url, "link.test", e.tlsAddr)
	if err != nil || code != "302" || loc != "https://shop.example.com/products/shoes?color=red" {
		t.Fatalf("curl %s: %q %q %v\npebble:\n%s", url, code, loc, err, e.pebble.Log())
	}
	if n := e.pebble.Issued(); n != 1 {
		t.Errorf("pebble issued %d certificates, want 1", n)
	}
	if n := e.pebble.Validations("link.test"); n < 1 {
		t.Errorf("pebble validated link.test %d times, want at least 1", n)
	}
	leaf, err := e.handshake("link.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("link.test"); err != nil {
		t.Error(err)
	}
	if got := e.metric("trackrelay_redirector_certificates_total", "obtained"); got != 1 {
		t.Errorf("certificates obtained metric = %v, want 1", got)
	}

	orders := e.pebble.Orders()
	for _, name := range []string{"stranger.test", "unknown.test", "127.0.0.1"} {
		if _, err := e.handshake(name); err == nil {
			t.Errorf("%s: the handshake succeeded; want no certificate", name)
		}
	}
	code, loc, err = e.curl("https://stranger.test:"+strconv.Itoa(port(t, e.tlsAddr))+"/"+tok+"/", "stranger.test", e.tlsAddr)
	if err == nil || loc != "" {
		t.Errorf("curl https://stranger.test: %q %q %v; want a failed handshake", code, loc, err)
	}
	code, loc, err = e.curl("http://stranger.test:"+strconv.Itoa(port(t, e.httpAddr))+"/"+tok+"/", "stranger.test", e.httpAddr)
	if err != nil || code != "404" || loc != "" {
		t.Errorf("curl http://stranger.test: %q %q %v; want a 404", code, loc, err)
	}
	if n := e.pebble.Orders(); n != orders {
		t.Errorf("pebble took %d orders for names that are no click domain", n-orders)
	}
	if n := e.metric("trackrelay_redirector_tls_handshake_failures_total", ""); n < 4 {
		t.Errorf("%v failed handshakes counted, want at least 4", n)
	}
	if n := e.pebble.Validations("stranger.test"); n != 0 {
		t.Errorf("pebble validated stranger.test %d times", n)
	}
	if n := e.dns.Queries("stranger.test"); n != 0 {
		t.Errorf("stranger.test was looked up %d times; nothing should have asked", n)
	}

	// Added at run time: served, and certified, without a restart.
	e.policy.Add("stranger.test")
	time.Sleep(1500 * time.Millisecond) // the refusal above is cached for PolicyTTL
	code, loc, err = e.curl("https://stranger.test:"+strconv.Itoa(port(t, e.tlsAddr))+"/"+tok+"/", "stranger.test", e.tlsAddr)
	if err != nil || code != "302" || loc != "https://shop.example.com/" {
		t.Errorf("after adding stranger.test: %q %q %v", code, loc, err)
	}
}

// TestACMEWithFiles: certificate files from the config serve the names
// they cover beside ACME, which gets the others.
func TestACMEWithFiles(t *testing.T) {
	certFile, keyFile, pool := writeCert(t, "click.example.com")
	e := newACMEEnv(t, 0, func(o *Options) { o.TLSCert, o.TLSKey = certFile, keyFile })
	c, err := tls.Dial("tcp", e.tlsAddr, &tls.Config{ServerName: "click.example.com", RootCAs: pool})
	if err != nil {
		t.Fatalf("the file's certificate: %v", err)
	}
	c.Close()
	if n := e.pebble.Orders(); n != 0 {
		t.Errorf("%d orders for a name the files cover", n)
	}
	if _, err := e.handshake("link.test"); err != nil {
		t.Fatalf("ACME beside the files: %v", err)
	}
	if n := e.pebble.Issued(); n != 1 {
		t.Errorf("pebble issued %d certificates, want 1", n)
	}
}

// TestACMEHTTP01: with TLS-ALPN-01 off, pebble validates HTTP-01 against
// the plain HTTP listener (fasthttp, through certmagic's handler).
func TestACMEHTTP01(t *testing.T) {
	e := newACMEEnv(t, 0, func(o *Options) { o.ACME.DisableTLSALPNChallenge = true })
	leaf, err := e.handshake("link.test")
	if err != nil {
		t.Fatalf("handshake: %v\npebble:\n%s", err, e.pebble.Log())
	}
	if err := leaf.VerifyHostname("link.test"); err != nil {
		t.Error(err)
	}
	if got := e.metric("trackrelay_redirector_requests_total", "acme_challenge"); got < 1 {
		t.Errorf("the HTTP listener answered %v ACME challenges, want at least 1", got)
	}
	// Old links stay valid over plain HTTP.
	tok := e.codec.Encode(click("shop.example.com"))
	r := rawReq(t, e.httpAddr, "GET", "/"+tok+"/x", "link.test")
	if r.code != http.StatusFound || r.location != "https://shop.example.com/x" {
		t.Errorf("plain HTTP: %d %q", r.code, r.location)
	}
}

// TestACMERestartReusesStorage: a restarted redirector serves the stored
// certificate and asks pebble for nothing.
func TestACMERestartReusesStorage(t *testing.T) {
	e := newACMEEnv(t, 0, nil)
	first, err := e.handshake("link.test")
	if err != nil {
		t.Fatalf("handshake: %v\npebble:\n%s", err, e.pebble.Log())
	}
	orders := e.pebble.Orders()
	e.stop()
	e.start()
	again, err := e.handshake("link.test")
	if err != nil {
		t.Fatal(err)
	}
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("after a restart the certificate changed: serial %x, was %x", again.SerialNumber, first.SerialNumber)
	}
	if n := e.pebble.Orders(); n != orders {
		t.Errorf("the restart placed %d new orders", n-orders)
	}
	if _, err := os.Stat(e.storage); err != nil {
		t.Error(err)
	}
}

// TestACMESharedStorage: two redirectors behind one name share a
// storage folder. The one that gets the first handshake orders the
// certificate, pebble validates against the other (the one its ports and
// DNS lead to), which answers from the shared storage; then the other
// serves the same certificate without an order of its own.
func TestACMESharedStorage(t *testing.T) {
	e := newACMEEnv(t, 0, nil) // on pebble's ports: the one validated
	first := *e
	first.httpAddr, first.tlsAddr = "127.0.0.1:0", "127.0.0.1:0"
	first.start()
	defer first.stop()
	first.tlsAddr = first.svc.TLSAddr().String()
	leaf, err := first.handshake("link.test")
	if err != nil {
		t.Fatalf("handshake: %v\npebble:\n%s", err, e.pebble.Log())
	}
	orders := e.pebble.Orders()
	if orders != 1 {
		t.Errorf("%d orders, want 1", orders)
	}
	again, err := e.handshake("link.test")
	if err != nil {
		t.Fatal(err)
	}
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("the second redirector serves serial %x, the first %x", again.SerialNumber, leaf.SerialNumber)
	}
	if n := e.pebble.Orders(); n != orders {
		t.Errorf("the second redirector placed %d orders of its own", n-orders)
	}
}

// TestACMERenewal: a short-lived certificate is renewed at a handshake in
// its renewal window, the old one served meanwhile; a name the policy no
// longer admits is not renewed, and its certificate is dropped.
func TestACMERenewal(t *testing.T) {
	const validity = 20 * time.Second
	e := newACMEEnv(t, validity, func(o *Options) {
		o.ACME.RenewalWindowRatio = 0.5
		o.ACME.RenewCheckInterval = time.Second
	})
	first, err := e.handshake("link.test")
	if err != nil {
		t.Fatalf("handshake: %v\npebble:\n%s", err, e.pebble.Log())
	}
	if life := first.NotAfter.Sub(first.NotBefore); life > validity+time.Second {
		t.Fatalf("pebble issued a certificate for %s, want %s", life, validity)
	}
	// Inside the window (the last half), a handshake starts the renewal.
	time.Sleep(time.Until(first.NotAfter.Add(-validity/2)) + time.Second)
	var renewed *x509.Certificate
	ok := acmetest.WaitFor(context.Background(), 15*time.Second, func() bool {
		c, err := e.handshake("link.test")
		if err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = c
			return true
		}
		return false
	})
	if !ok {
		t.Fatalf("no renewed certificate within the window\npebble:\n%s", e.pebble.Log())
	}
	if n := e.pebble.Issued(); n < 2 {
		t.Errorf("pebble issued %d certificates, want the first and its renewal", n)
	}
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %s, not after the first's %s", renewed.NotAfter, first.NotAfter)
	}
	if got := e.metric("trackrelay_redirector_certificates_total", "renewed"); got < 1 {
		t.Errorf("renewed metric = %v", got)
	}

	// Withdrawn: in the renewed certificate's window, certmagic asks the
	// policy again, gets no, and drops the certificate instead of renewing
	// it; the name gets no certificate from then on.
	e.policy.Remove("link.test")
	issued := e.pebble.Issued()
	time.Sleep(time.Until(renewed.NotAfter.Add(-validity/2)) + time.Second)
	if !acmetest.WaitFor(context.Background(), 5*time.Second, func() bool {
		_, err := e.handshake("link.test")
		return err != nil
	}) {
		t.Error("a withdrawn domain is still served in its renewal window")
	}
	if n := e.pebble.Issued(); n != issued {
		t.Errorf("a withdrawn domain was renewed (%d more certificates)", n-issued)
	}
}

// metric is the value of the counter name with a label value label (""
// for a counter without labels), 0 when there is none.
func (e *acmeEnv) metric(name, label string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestPublicStartErrors: a start that cannot serve what it was asked
// fails with a clear error and leaves no listener behind.
func TestPublicStartErrors(t *testing.T) {
	codec, _ := rewrite.NewCodec(testKeyNew)
	taken := listen(t)
	defer taken.Close()
	free := listen(t)
	freeAddr := free.Addr().String()
	free.Close()
	certFile, keyFile, _ := writeCert(t, "click.example.com")
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"acme without a tls listener", func(o *Options) { o.ACME = &ACME{Directory: "https://127.0.0.1:1/dir", StorageDir: t.TempDir()} }, "needs a TLS listener"},
		{"tls listener without certificates", func(o *Options) { o.TLSListen = "127.0.0.1:0" }, "needs certificate files or ACME"},
		{"tls listener taken", func(o *Options) {
			o.TLSListen, o.TLSCert, o.TLSKey = taken.Addr().String(), certFile, keyFile
		}, "tls listen"},
		{"missing certificate file", func(o *Options) { o.TLSListen, o.TLSCert, o.TLSKey = "127.0.0.1:0", "/nonexistent.pem", keyFile }, "redirector: tls"},
		{"acme without storage", func(o *Options) { o.TLSListen, o.ACME = "127.0.0.1:0", &ACME{Directory: "https://127.0.0.1:1/dir"} }, "no storage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{
				Handler:     Config{Codec: codec, Domains: []string{"click.example.com"}},
				JournalPath: filepath.Join(t.TempDir(), "journal.db"),
				Listen:      freeAddr,
				Sink:        SinkFunc(func(context.Context, []store.Hit) error { return nil }),
			}
			tc.edit(&o)
			svc, err := Start(o)
			if err == nil {
				_ = svc.Shutdown(context.Background())
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			// The plain listener was released.
			ln, lerr := net.Listen("tcp", freeAddr)
			if lerr != nil {
				t.Errorf("the HTTP listener was left open: %v", lerr)
			} else {
				ln.Close()
			}
		})
	}
}
