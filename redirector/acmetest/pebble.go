package acmetest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PebbleOptions configure a pebble.
type PebbleOptions struct {
	// DNS is the server pebble's validation resolves names with
	// (-dnsserver); required, for the test's names exist only there.
	DNS string
	// HTTPPort and TLSPort are where pebble validates HTTP-01 and
	// TLS-ALPN-01 challenges: the redirector's listeners' ports.
	HTTPPort, TLSPort int
	// Validity is the lifetime of issued certificates; 0 is pebble's
	// default (five years).
	Validity time.Duration
}

// Pebble is a running pebble: real ACME (RFC 8555) with real challenge
// validation (its always-valid switch is off), no sleeps before
// validating, no nonce rejections, and no reuse of valid authorizations,
// so that every order is validated afresh.
type Pebble struct {
	// Directory is the ACME directory URL, for [acme] directory.
	Directory string
	// CAFile is the PEM file of the certificate pebble's own HTTPS uses,
	// for [acme] ca_file; CAPool trusts it.
	CAFile string
	CAPool *x509.CertPool
	// RootFile is the PEM file of the root that pebble issues under,
	// what a client of the redirector trusts (curl --cacert); Roots
	// trusts it.
	RootFile string
	Roots    *x509.CertPool

	mu   sync.Mutex
	log  []string
	stop func()
}

// Binary is the pebble program: $PEBBLE, or pebble on PATH (Debian's
// package, which `make deps` installs).
func Binary() (string, error) {
	if p := os.Getenv("PEBBLE"); p != "" {
		return p, nil
	}
	return exec.LookPath("pebble")
}

// StartPebble starts pebble and waits until it serves its directory. It
// skips t when pebble is not installed, and stops pebble when t ends.
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Skip("pebble is not installed (make deps installs Debian's pebble); the ACME tests need a real ACME server")
	}
	dir := t.TempDir()
	p := &Pebble{CAFile: filepath.Join(dir, "pebble-tls.pem")}
	keyFile := filepath.Join(dir, "pebble-tls-key.pem")
	if p.CAPool, err = writeServerCert(p.CAFile, keyFile); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		err := p.start(t, bin, dir, keyFile, o)
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("acmetest: pebble did not start: %v\n%s", err, p.Log())
		}
	}
	return p
}

func (p *Pebble) start(t testing.TB, bin, dir, keyFile string, o PebbleOptions) error {
	acmeAddr, err := freePort()
	if err != nil {
		return err
	}
	mgmtAddr, err := freePort()
	if err != nil {
		return err
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  acmeAddr,
		"managementListenAddress":        mgmtAddr,
		"certificate":                    p.CAFile,
		"privateKey":                     keyFile,
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"certificateValidityPeriod":      uint64(o.Validity / time.Second),
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", o.DNS)
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0",
		"PEBBLE_VA_ALWAYS_VALID=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
	}
	p.Directory = "https://" + acmeAddr + "/dir"
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(p.Directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-done:
			_ = cmd.Wait()
			return fmt.Errorf("pebble exited")
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("pebble's directory %s did not answer: %v", p.Directory, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	once := sync.OnceFunc(stop)
	p.stop = once
	t.Cleanup(once)
	// The root pebble issues under, from its management interface.
	resp, err := client.Get("https://" + mgmtAddr + "/roots/0")
	if err != nil {
		return fmt.Errorf("pebble root: %w", err)
	}
	defer resp.Body.Close()
	root, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM(root) {
		return fmt.Errorf("pebble root: not PEM: %q", root)
	}
	p.RootFile = filepath.Join(dir, "pebble-root.pem")
	return os.WriteFile(p.RootFile, root, 0o600)
}

// Stop stops pebble now (it is stopped when the test ends anyway).
func (p *Pebble) Stop() { p.stop() }

// Log is everything pebble printed so far.
func (p *Pebble) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}

var (
	orderLine = regexp.MustCompile(`Added order "[^"]+" to the db`)
	issueLine = regexp.MustCompile(`Issued certificate serial [0-9a-f]+ for order`)
)

// Orders is how many orders pebble has taken, from any account.
func (p *Pebble) Orders() int { return p.count(orderLine.MatchString) }

// Issued is how many certificates pebble has issued.
func (p *Pebble) Issued() int { return p.count(issueLine.MatchString) }

// Validations is how many challenge validations pebble has started for
// name.
func (p *Pebble) Validations(name string) int {
	q := `Value:"` + name + `"`
	return p.count(func(l string) bool {
		return strings.Contains(l, "Pulled a task from the Tasks queue") && strings.Contains(l, q)
	})
}

func (p *Pebble) count(match func(string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.log {
		if match(l) {
			n++
		}
	}
	return n
}

// WaitFor waits until cond holds or the timeout passes, and reports
// whether it held.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// freePort returns a loopback address with a port free now: pebble takes
// its addresses from a file, so it cannot be given :0.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// writeServerCert writes a self-signed certificate for 127.0.0.1 and
// localhost, for pebble's own HTTPS, and returns a pool trusting it.
func writeServerCert(certFile, keyFile string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pebble test"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, nil
}

// Port is the port of a listener address, for PebbleOptions.
func Port(a net.Addr) int {
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
