package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/rewrite"
)

// authUpstream is an SMTP server that offers STARTTLS, requires AUTH PLAIN
// after it, and keeps what it accepts.
type authUpstream struct {
	mu     sync.Mutex
	bodies [][]byte
	users  []string
	addr   string
}

type authUpSession struct {
	u    *authUpstream
	user string
}

func (s *authUpSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *authUpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "relay" || pass != "up-s3cret" {
			return errors.New("bad credentials")
		}
		s.user = user
		return nil
	}), nil
}
func (s *authUpSession) Mail(string, *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *authUpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *authUpSession) Reset()                               {}
func (s *authUpSession) Logout() error                        { return nil }
func (s *authUpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.u.mu.Lock()
	s.u.bodies = append(s.u.bodies, b)
	s.u.users = append(s.u.users, s.user)
	s.u.mu.Unlock()
	return nil
}

// writeTestCA writes a self-signed certificate for 127.0.0.1 to
// dir/upstream-ca.pem and returns the server's TLS config.
func writeTestCA(t *testing.T, dir string) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "mx.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "upstream-ca.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestE2ERelayConfigFile runs "trackrelay relay --config" with a written
// config: a plain listener for a trusted network, an upstream over
// STARTTLS checked against ca_file, with AUTH from password_file.
func TestE2ERelayConfigFile(t *testing.T) {
	dir := t.TempDir()
	tlsCfg := writeTestCA(t, dir)
	up := &authUpstream{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &authUpSession{u: up}, nil }))
	srv.Domain = "mx.test"
	srv.TLSConfig = tlsCfg
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up.addr = ln.Addr().String()
	go srv.Serve(ln)
	defer srv.Close()
	host, port, _ := net.SplitHostPort(up.addr)

	k, _ := rewrite.GenerateKey(3)
	os.WriteFile(filepath.Join(dir, "token.keys"), []byte(rewrite.FormatKey(k)+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "up-password"), []byte("up-s3cret\n"), 0o600)
	smtpAddr, apiAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`
[relay]
hostname = "relay.test"
data_dir = "data"
[smtp]
allow_plaintext_loopback = true
[[smtp.listeners]]
addr = %q
mode = "plain"
[[accounts]]
name = "shop"
[[credentials]]
username = "shop"
password_hash = "$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq"
account = "shop"
clicks = true
click_domain = "click.shop.test"
[[trusted_networks]]
cidr = "127.0.0.0/8"
credential = "shop"
[[upstreams]]
name = "mx"
host = %q
port = %s
tls = "starttls"
ca_file = "upstream-ca.pem"
username = "relay"
password_file = "up-password"
[keys]
key_file = "token.keys"
[api]
addr = %q
`, smtpAddr, host, port, apiAddr)
	cfgPath := filepath.Join(dir, "trackrelay.toml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	out, _, err := runCmd(t, "", "check-config", cfgPath)
	if err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	cmd := exec.Command(binary(t), "relay", "--config", cfgPath, "--log-format", "json")
	var stderr lockedBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + apiAddr + "/readyz")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Trusted network: no AUTH on the plain listener.
	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: cfg\r\nContent-Type: text/html\r\n\r\n<a href=\"https://shop.test/x\">x</a>\r\n"
	if err := c.SendMail("shop@shop.test", []string{"r@example.net"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	for {
		up.mu.Lock()
		n := len(up.bodies)
		up.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream got nothing:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	up.mu.Lock()
	got, user := up.bodies[0], up.users[0]
	up.mu.Unlock()
	if user != "relay" || !bytes.Contains(got, []byte("Subject: cfg")) || !bytes.Contains(got, []byte("click.shop.test/")) {
		t.Errorf("upstream got %q as %q", got, user)
	}
	// The upstream has the copy; the relay logs the delivery once the
	// upstream's reply is recorded.
	for !strings.Contains(stderr.String(), `"msg":"delivered"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no JSON delivery log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "relay.db")); err != nil {
		t.Errorf("data_dir not relative to the config: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
