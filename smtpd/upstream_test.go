package smtpd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Upstream behaviours a scriptedUpstream can be told to show.
const (
	upAccept = "accept"
	upDefer  = "defer"  // 451 at RCPT
	upReject = "reject" // 550 at RCPT
	upData4  = "data4"  // 452 after DATA
	upStall  = "stall"  // never answer DATA until released
	upDrop   = "drop"   // read part of DATA, then drop the connection
)

// scriptedUpstream is a real SMTP server (go-smtp) whose replies a test
// scripts per try. It records every message it accepted.
type scriptedUpstream struct {
	t    testing.TB
	srv  *smtp.Server
	addr string

	mu       sync.Mutex
	script   func(try int, rcpt string) string // behaviour for the n-th RCPT (from 0)
	tries    int
	conns    int
	got      map[string][][]byte // recipient -> accepted bodies
	from     map[string]string   // recipient -> MAIL FROM
	opts     []smtp.MailOptions
	user     string // require AUTH PLAIN with user/pass when set
	pass     string
	released chan struct{}
}

func newScriptedUpstream(t testing.TB, mode string, tlsCfg *tls.Config, script func(int, string) string, tune ...func(*smtp.Server)) *scriptedUpstream {
	t.Helper()
	u := &scriptedUpstream{t: t, script: script, got: map[string][][]byte{}, from: map[string]string{}, released: make(chan struct{})}
	if u.script == nil {
		u.script = func(int, string) string { return upAccept }
	}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &upSession{u: u, c: c}, nil
	}))
	s.Domain = "upstream.test"
	s.ErrorLog = log.New(io.Discard, "", 0) // dropped connections are the point
	s.AllowInsecureAuth = tlsCfg == nil
	s.TLSConfig = tlsCfg
	s.EnableSMTPUTF8 = true
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	for _, f := range tune {
		f(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = &countingListener{Listener: ln, u: u}
	if mode == "implicit" {
		ln = tls.NewListener(ln, tlsCfg)
	}
	u.srv, u.addr = s, ln.Addr().String()
	go s.Serve(ln)
	t.Cleanup(func() {
		u.release()
		s.Close()
	})
	return u
}

func (u *scriptedUpstream) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	select {
	case <-u.released:
	default:
		close(u.released)
	}
}

func (u *scriptedUpstream) port() int {
	_, p, _ := net.SplitHostPort(u.addr)
	n := 0
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

func (u *scriptedUpstream) bodies(rcpt string) [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.got[rcpt]...)
}

func (u *scriptedUpstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, b := range u.got {
		n += len(b)
	}
	return n
}

// countingListener counts the connections the upstream accepts.
type countingListener struct {
	net.Listener
	u *scriptedUpstream
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.u.mu.Lock()
		l.u.conns++
		l.u.mu.Unlock()
	}
	return c, err
}

type upSession struct {
	u      *scriptedUpstream
	c      *smtp.Conn
	authed bool
	from   string
	rcpt   string
	behave string
}

var _ smtp.AuthSession = (*upSession)(nil)

func (s *upSession) AuthMechanisms() []string {
	if s.u.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *upSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != s.u.user || password != s.u.pass {
			return smtp.ErrAuthFailed // 535 5.7.8, as real servers answer
		}
		s.authed = true
		return nil
	}), nil
}

func (s *upSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.u.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	s.u.mu.Lock()
	if opts != nil {
		s.u.opts = append(s.u.opts, *opts)
	}
	s.u.mu.Unlock()
	return nil
}

func (s *upSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.u.mu.Lock()
	try := s.u.tries
	s.u.tries++
	s.u.mu.Unlock()
	s.rcpt, s.behave = to, s.u.script(try, to)
	switch s.behave {
	case upDefer:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try again later"}
	case upReject:
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}

func (s *upSession) Data(r io.Reader) error {
	switch s.behave {
	case upStall:
		io.Copy(io.Discard, r)
		<-s.u.released
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "released"}
	case upDrop:
		var b [100]byte
		io.ReadFull(r, b[:])
		s.c.Conn().Close()
		return errors.New("dropped")
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.behave == upData4 {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "disk full"}
	}
	s.u.mu.Lock()
	s.u.got[s.rcpt] = append(s.u.got[s.rcpt], b)
	s.u.from[s.rcpt] = s.from
	s.u.mu.Unlock()
	return nil
}

func (s *upSession) Reset()        { s.from, s.rcpt, s.behave = "", "", "" }
func (s *upSession) Logout() error { return nil }

// dlCert makes a self-signed certificate for 127.0.0.1 and a pool that
// trusts it.
func dlCert(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "upstream.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"upstream.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func TestSMTPUpstreamModes(t *testing.T) {
	srvTLS, pool := dlCert(t)
	for _, tc := range []struct {
		name, mode string
		auth       bool
	}{
		{"none", "none", false},
		{"none-auth-loopback", "none", true},
		{"starttls", "starttls", false},
		{"starttls-auth", "starttls", true},
		{"implicit-auth", "implicit", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *tls.Config
			if tc.mode != "none" {
				cfg = srvTLS
			}
			u := newScriptedUpstream(t, tc.mode, cfg, nil)
			ucfg := SMTPUpstreamConfig{Name: "t", Host: "127.0.0.1", Port: u.port(), TLS: tc.mode,
				TLSConfig: &tls.Config{RootCAs: pool}, PoolSize: 1, LocalName: "relay.test"}
			if tc.auth {
				u.user, u.pass = "relay", "s3cret"
				ucfg.Username, ucfg.Password = "relay", "s3cret"
			}
			up, err := NewSMTPUpstream(ucfg)
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			for i := range 3 {
				body := []byte("Subject: " + string(rune('a'+i)) + "\r\n\r\nhello\r\n")
				res, err := up.Deliver(context.Background(), Envelope{From: "a@x.test", To: "b@y.test", SMTPUTF8: true, Body8Bit: true},
					func(w io.Writer) error { _, err := w.Write(body); return err })
				if err != nil {
					t.Fatalf("try %d: %v", i, err)
				}
				if res.State != "done" || res.To != u.addr || res.From == "" {
					t.Fatalf("result %+v", res)
				}
				got := u.bodies("b@y.test")
				if len(got) != i+1 || !bytes.Equal(got[i], body) {
					t.Fatalf("upstream got %q, want %q last", got, body)
				}
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			if u.conns != 1 {
				t.Errorf("%d connections for 3 messages with pool size 1; want 1 (reuse)", u.conns)
			}
			if o := u.opts[0]; !o.UTF8 || o.Body != smtp.Body8BitMIME {
				t.Errorf("MAIL options %+v: want SMTPUTF8 and BODY=8BITMIME", o)
			}
		})
	}
}

func TestSMTPUpstreamWrongCertRefused(t *testing.T) {
	srvTLS, _ := dlCert(t)
	u := newScriptedUpstream(t, "starttls", srvTLS, nil)
	up, err := NewSMTPUpstream(SMTPUpstreamConfig{Name: "t", Host: "127.0.0.1", Port: u.port(), TLS: "starttls"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	_, err = up.Deliver(context.Background(), Envelope{From: "a@x.test", To: "b@y.test"}, func(w io.Writer) error { return nil })
	if err == nil || u.total() != 0 {
		t.Fatalf("delivered over an untrusted certificate: err=%v", err)
	}
	if code, _, _ := describe(err); code != 451 {
		t.Errorf("a TLS failure should be temporary, got code %d", code)
	}
}

func TestSMTPUpstreamDropMidDataNotCommitted(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, func(try int, _ string) string {
		if try == 0 {
			return upDrop
		}
		return upAccept
	})
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "t", Host: "127.0.0.1", Port: u.port(), TLS: "none", PoolSize: 1})
	defer up.Close()
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 20000)
	write := func(w io.Writer) error { _, err := w.Write(big); return err }
	_, err := up.Deliver(context.Background(), Envelope{From: "a@x.test", To: "b@y.test"}, write)
	if err == nil {
		t.Fatal("a dropped connection was reported delivered")
	}
	if u.total() != 0 {
		t.Fatal("the upstream accepted a truncated message")
	}
	if _, err := up.Deliver(context.Background(), Envelope{From: "a@x.test", To: "b@y.test"}, write); err != nil {
		t.Fatalf("retry on a fresh connection: %v", err)
	}
	if got := u.bodies("b@y.test"); len(got) != 1 || !bytes.Equal(got[0], big) {
		t.Fatal("retry did not deliver the whole message")
	}
}

func TestFolderUpstream(t *testing.T) {
	dir := t.TempDir()
	f := &FolderUpstream{Dir: dir}
	body := []byte("Subject: x\r\n\r\nbody\r\n")
	res, err := f.Deliver(WithFileName(context.Background(), "00000000000000ab"), Envelope{}, func(w io.Writer) error {
		_, err := w.Write(body)
		return err
	})
	if err != nil || res.State != "done" {
		t.Fatalf("%+v %v", res, err)
	}
	got, err := readFile(dir + "/00000000000000ab.eml")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("file %q %v", got, err)
	}
	// A failing writer leaves nothing behind.
	_, err = f.Deliver(WithFileName(context.Background(), "00000000000000ac"), Envelope{}, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return errors.New("spool read failed")
	})
	if err == nil {
		t.Fatal("want error")
	}
	ents, _ := readDir(dir)
	if len(ents) != 1 {
		t.Fatalf("folder holds %v, want only the first message", ents)
	}
}

func TestSMTPUpstreamWithoutSMTPUTF8(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, nil, func(s *smtp.Server) { s.EnableSMTPUTF8 = false })
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "t", Host: "127.0.0.1", Port: u.port(), TLS: "none", PoolSize: 1})
	defer up.Close()
	write := func(w io.Writer) error { _, err := io.WriteString(w, "Subject: x\r\n\r\nx\r\n"); return err }
	if _, err := up.Deliver(context.Background(), Envelope{From: "a@x.test", To: "b@y.test", SMTPUTF8: true}, write); err != nil {
		t.Fatalf("ASCII envelope with SMTPUTF8 requested: %v", err)
	}
	_, err := up.Deliver(context.Background(), Envelope{From: "a@x.test", To: "bü@y.test", SMTPUTF8: true}, write)
	if code, status, _ := describe(err); code != 553 || status != "5.6.7" {
		t.Fatalf("UTF-8 recipient to a non-SMTPUTF8 upstream: %v (%d %s)", err, code, status)
	}
	if u.total() != 1 {
		t.Fatalf("upstream got %d messages, want 1", u.total())
	}
}
