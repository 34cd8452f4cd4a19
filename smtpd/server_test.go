package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/store"
	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/mime"
)

// testPassword is distinctive so a test can prove it never reaches a log.
const (
	testUser     = "app"
	testPassword = "pw-Zq8!kX2-never-logged"
)

// fileSubmitter is a test double of the Submitter seam for the SMTP
// front's own tests: it streams each body into a temporary file (never
// buffering it in memory), refuses a bad x-smtpeter-* switch with a
// *mime.ControlError as the real spool does, and hands out ids. H3a's
// end-to-end tests run the real spool behind the server.
type fileSubmitter struct {
	dir    string
	nextID atomic.Uint64
	hook   func(sub *Submission) error // optional: fail or panic on demand

	mu       sync.Mutex
	accepted []accepted
}

type accepted struct {
	sub  Submission
	body []byte // read back from the file, for assertions
	ids  *Receipt
}

func (f *fileSubmitter) Submit(ctx context.Context, sub *Submission, body io.Reader) (*Receipt, error) {
	if f.hook != nil {
		if err := f.hook(sub); err != nil {
			_, _ = io.Copy(io.Discard, body)
			return nil, err
		}
	}
	file, err := os.CreateTemp(f.dir, "msg-*.eml")
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if _, err := io.Copy(file, body); err != nil {
		os.Remove(file.Name())
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file.Name())
	if err != nil {
		return nil, err
	}
	if err := badControl(data); err != nil {
		os.Remove(file.Name())
		return nil, err
	}
	r := &Receipt{MessageID: 0x1000 + f.nextID.Add(1)}
	for range sub.Recipients {
		r.CopyIDs = append(r.CopyIDs, 0x2000+f.nextID.Add(1))
	}
	f.mu.Lock()
	f.accepted = append(f.accepted, accepted{sub: *sub, body: data, ids: r})
	f.mu.Unlock()
	return r, nil
}

// badControl mimics the spool's check of the boolean control headers.
func badControl(msg []byte) error {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(hdr), "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		switch name {
		case "x-smtpeter-trackclicks", "x-smtpeter-trackopens", "x-smtpeter-preventscam":
			switch strings.ToLower(strings.TrimSpace(value)) {
			case "true", "false", "yes", "no", "on", "off", "1", "0":
			default:
				return fmt.Errorf("spool: %w", &mime.ControlError{Header: name, Value: value})
			}
		}
	}
	return nil
}

func (f *fileSubmitter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.accepted)
}

func (f *fileSubmitter) last(t *testing.T) accepted {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.accepted) == 0 {
		t.Fatal("nothing was submitted")
	}
	return f.accepted[len(f.accepted)-1]
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one running server with a STARTTLS and an implicit TLS listener.
type env struct {
	srv       *Server
	sub       *fileSubmitter
	cred      *Credential
	addr      string // STARTTLS
	tlsAddr   string // implicit TLS
	clientTLS *tls.Config
	logs      *syncBuffer
	serveErr  chan error
}

var (
	certOnce sync.Once
	certPair tls.Certificate
	certPool *x509.CertPool
	certErr  error
	hashOnce sync.Once
	hash     []byte
)

// testCert makes a self-signed certificate for localhost and 127.0.0.1.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			certErr = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			certErr = err
			return
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			certErr = err
			return
		}
		certPair = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	if certErr != nil {
		t.Fatal(certErr)
	}
	return certPair, certPool
}

func testHash(t testing.TB) []byte {
	t.Helper()
	hashOnce.Do(func() {
		hash, _ = bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	})
	if hash == nil {
		t.Fatal("bcrypt failed")
	}
	return hash
}

func newEnv(t testing.TB, mutate func(*ServerConfig)) *env {
	t.Helper()
	cert, pool := testCert(t)
	logs := &syncBuffer{}
	e := &env{
		sub:       &fileSubmitter{dir: t.TempDir()},
		cred:      &Credential{Username: testUser, Account: "acme", Clicks: true},
		clientTLS: &tls.Config{RootCAs: pool, ServerName: "localhost"},
		logs:      logs,
		serveErr:  make(chan error, 2),
	}
	cfg := ServerConfig{
		Hostname:  "relay.test",
		TLS:       &tls.Config{Certificates: []tls.Certificate{cert}},
		Submitter: e.sub,
		Users:     map[string]User{testUser: {Hash: testHash(t), Cred: e.cred}},
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AuthDelay: 10 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr, e.tlsAddr = ln.Addr().String(), tln.Addr().String()
	go func() { e.serveErr <- srv.Serve(ln, ModeSTARTTLS) }()
	go func() { e.serveErr <- srv.Serve(tln, ModeImplicitTLS) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		for range 2 {
			if err := <-e.serveErr; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		if strings.Contains(logs.String(), testPassword) {
			t.Errorf("the password reached the log")
		}
	})
	return e
}

// client dials the STARTTLS listener, upgrades and says EHLO.
func (e *env) client(t testing.TB) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(e.addr, e.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw is a line-level SMTP client for what go-smtp's client will not send.
type raw struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

func (e *env) rawPlain(t testing.TB) *raw {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &raw{t: t, conn: c, tp: textproto.NewConn(c)}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return r
}

// rawTLS dials, reads the greeting, EHLOs, STARTTLS and EHLOs again.
func (e *env) rawTLS(t testing.TB) *raw {
	t.Helper()
	r := e.rawPlain(t)
	r.expect(220)
	r.cmd("EHLO client.test")
	r.expect(250)
	r.cmd("STARTTLS")
	r.expect(220)
	tc := tls.Client(r.conn, e.clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.conn = tc
	r.tp = textproto.NewConn(tc)
	r.cmd("EHLO client.test")
	r.expect(250)
	return r
}

func (r *raw) cmd(format string, args ...any) {
	r.t.Helper()
	if err := r.tp.PrintfLine(format, args...); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) write(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.tp.W, s); err != nil {
		r.t.Fatal(err)
	}
	if err := r.tp.W.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

// reply reads one (possibly multi-line) reply.
func (r *raw) reply() (int, string) {
	r.t.Helper()
	code, msg, err := r.tp.ReadResponse(0)
	if err != nil && code == 0 {
		r.t.Fatalf("read reply: %v", err)
	}
	return code, msg
}

// expect reads a reply and fails unless its code is want; it returns the text.
func (r *raw) expect(want int) string {
	r.t.Helper()
	code, msg := r.reply()
	if code != want {
		r.t.Fatalf("got %d %q, want %d", code, msg, want)
	}
	return msg
}

// expectPrefix reads a reply and checks code and enhanced code.
func (r *raw) expectPrefix(want int, enhanced string) string {
	r.t.Helper()
	code, msg := r.reply()
	if code != want || !strings.HasPrefix(msg, enhanced+" ") {
		r.t.Fatalf("got %d %q, want %d %s", code, msg, want, enhanced)
	}
	return msg
}

func (r *raw) authPlain(user, pass string) {
	r.t.Helper()
	r.cmd("AUTH PLAIN %s", b64("\x00"+user+"\x00"+pass))
}

func b64(s string) string {
	return base64Std.EncodeToString([]byte(s))
}

const testMessage = "From: shop@example.com\r\nTo: a@example.org\r\nSubject: hi\r\n" +
	"x-smtpeter-trackclicks: yes\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<p><a href=\"https://example.com/\">x</a> caf\xc3\xa9</p>\r\n..leading dot\r\n"

func TestSubmitGoSMTPClientSTARTTLS(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t)
	if ok, _ := c.Extension("AUTH"); !ok {
		t.Fatal("AUTH not offered after STARTTLS")
	}
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}
	if n, ok := c.MaxMessageSize(); !ok || n != 25<<20 {
		t.Errorf("SIZE = %d, %v; want %d", n, ok, 25<<20)
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("shop@example.com", &smtp.MailOptions{Body: smtp.Body8BitMIME, Size: int64(len(testMessage)), UTF8: true}); err != nil {
		t.Fatal(err)
	}
	rcpts := []string{"a@example.org", "b@example.net", "jos\u00e9@example.es"}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, testMessage); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	got := e.sub.last(t)
	want := "2.0.0 Ok: queued as " + store.FormatID(got.ids.MessageID) + " (3 copies: " + store.FormatID(got.ids.CopyIDs[0]) + " " +
		store.FormatID(got.ids.CopyIDs[1]) + " " + store.FormatID(got.ids.CopyIDs[2]) + ")"
	if resp.StatusText != want {
		t.Errorf("reply %q, want %q", resp.StatusText, want)
	}
	if string(got.body) != testMessage {
		t.Errorf("body differs:\n%q\nwant\n%q", got.body, testMessage)
	}
	s := got.sub
	if s.Cred != e.cred || s.From != "shop@example.com" || strings.Join(s.Recipients, ",") != strings.Join(rcpts, ",") ||
		!s.SMTPUTF8 || !s.Body8Bit || s.Size != int64(len(testMessage)) || s.RemoteAddr == "" {
		t.Errorf("submission %+v", s)
	}
	// A second message on the same connection, with the null sender.
	if err := c.Mail("", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err = c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: 2\r\n\r\nbody\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if n := e.sub.count(); n != 2 {
		t.Errorf("%d messages submitted, want 2", n)
	}
	logs := e.logs.String()
	for _, want := range []string{"msg=\"smtp auth\" remote=127.0.0.1:", "msg=\"smtp message accepted\" remote=127.0.0.1:", " session="} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "caf\xc3\xa9") {
		t.Error("the body reached the log")
	}
	if s := e.sub.last(t).sub; s.From != "" || s.SMTPUTF8 || s.Size != 0 {
		t.Errorf("second submission %+v", s)
	}
}

func TestSubmitImplicitTLSLogin(t *testing.T) {
	e := newEnv(t, nil)
	c, err := smtp.DialTLS(e.tlsAddr, e.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on an implicit TLS connection")
	}
	if err := c.Auth(sasl.NewLoginClient(testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("shop@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	if got := e.sub.last(t); string(got.body) != testMessage || got.sub.Cred != e.cred {
		t.Errorf("got %+v", got.sub)
	}
}

// TestSubmitChunking sends the body with BDAT (CHUNKING): go-smtp runs Data
// on its own goroutine; an RSET in the middle of a chunked message must
// abort it cleanly (run with -race).
func TestSubmitChunking(t *testing.T) {
	e := newEnv(t, nil)
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	body := "Subject: chunked\r\n\r\nline one\r\n.line two\r\n"
	r.cmd("MAIL FROM:<shop@example.com>")
	r.expect(250)
	r.cmd("RCPT TO:<a@example.org>")
	r.expect(250)
	r.write(fmt.Sprintf("BDAT %d\r\n%s", 10, body[:10]))
	r.expect(250)
	r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body)-10, body[10:]))
	msg := r.expectPrefix(250, "2.0.0")
	if !strings.Contains(msg, "queued as") {
		t.Errorf("reply %q", msg)
	}
	if got := e.sub.last(t); string(got.body) != body {
		t.Errorf("body %q, want %q", got.body, body)
	}
	// Abort a chunked message with RSET, then with QUIT.
	for _, end := range []string{"RSET", "QUIT"} {
		r.cmd("MAIL FROM:<shop@example.com>")
		r.expect(250)
		r.cmd("RCPT TO:<a@example.org>")
		r.expect(250)
		r.write("BDAT 5\r\nhello")
		r.expect(250)
		r.cmd("%s", end)
		if end == "RSET" {
			r.expect(250)
		} else {
			r.expect(221)
		}
	}
	if n := e.sub.count(); n != 1 {
		t.Errorf("%d messages submitted, want 1", n)
	}
}

func TestSubmitPython(t *testing.T) {
	py, err := execLookPath("python3")
	if err != nil {
		t.Skip("python3 not installed: cannot test smtplib")
	}
	e := newEnv(t, nil)
	host, port, _ := net.SplitHostPort(e.addr)
	dir := t.TempDir()
	script := filepath.Join(dir, "send.py")
	// smtplib's AUTH LOGIN with and without the initial response (the
	// username on the AUTH line), over STARTTLS, against our certificate.
	src := `import smtplib, ssl, sys
host, port, cafile, user, pw, initial = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1"
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP(host, port, local_hostname="py.test", timeout=20)
s.ehlo()
s.starttls(context=ctx)
s.ehlo()
s.user, s.password = user, pw
code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=initial)
assert code == 235, (code, resp)
msg = "From: py@example.com\r\nTo: a@example.org\r\nSubject: py\r\n\r\nhello from python\r\n"
refused = s.sendmail("py@example.com", ["a@example.org", "b@example.org"], msg)
assert not refused, refused
s.quit()
print("ok")
`
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	writeCertPEM(t, caFile)
	for _, initial := range []string{"1", "0"} {
		t.Run("initial="+initial, func(t *testing.T) {
			before := e.sub.count()
			out, err := execCommand(py, script, host, port, caFile, testUser, testPassword, initial)
			if err != nil || strings.TrimSpace(out) != "ok" {
				t.Fatalf("python: %v\n%s", err, out)
			}
			if e.sub.count() != before+1 {
				t.Fatal("python's message was not submitted")
			}
			got := e.sub.last(t)
			if !strings.Contains(string(got.body), "hello from python") || len(got.sub.Recipients) != 2 {
				t.Errorf("got %+v %q", got.sub, got.body)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		before := e.sub.count()
		out, err := execCommand(py, script, host, port, caFile, testUser, "wrong", "0")
		if err == nil || !strings.Contains(out, "535") {
			t.Fatalf("python with a wrong password: %v\n%s", err, out)
		}
		if e.sub.count() != before {
			t.Fatal("a message was submitted")
		}
	})
}

func TestSubmitCurl(t *testing.T) {
	curl, err := execLookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	e := newEnv(t, nil)
	dir := t.TempDir()
	mail := filepath.Join(dir, "mail.eml")
	if err := os.WriteFile(mail, []byte("From: curl@example.com\r\nSubject: curl\r\n\r\nhello from curl\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(pass string) (string, error) {
		return execCommand(curl, "-sS", "--url", "smtp://"+e.addr, "--ssl-reqd", "-k",
			"--login-options", "AUTH=PLAIN", "--user", testUser+":"+pass,
			"--mail-from", "curl@example.com", "--mail-rcpt", "a@example.org", "-T", mail)
	}
	if out, err := run(testPassword); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	got := e.sub.last(t)
	if !strings.Contains(string(got.body), "hello from curl") || got.sub.Cred != e.cred {
		t.Errorf("got %+v %q", got.sub, got.body)
	}
	if out, err := run("wrong"); err == nil || !strings.Contains(out, "Login denied") {
		t.Errorf("curl with a wrong password: %v %s", err, out)
	}
	if e.sub.count() != 1 {
		t.Errorf("%d submitted, want 1", e.sub.count())
	}
}

func TestServeErrors(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); err == nil || !strings.Contains(err.Error(), "submitter") {
		t.Errorf("no submitter: %v", err)
	}
	if _, err := NewServer(ServerConfig{Submitter: &fileSubmitter{}, MaxRecipients: -1}); err == nil ||
		!strings.Contains(err.Error(), "max_recipients") {
		t.Errorf("negative limit: %v", err)
	}
	_, err := NewServer(ServerConfig{Submitter: &fileSubmitter{}, Users: map[string]User{"x": {Hash: []byte("plain"), Cred: &Credential{}}}})
	if err == nil || !strings.Contains(err.Error(), `user "x"`) {
		t.Errorf("bad hash: %v", err)
	}
	srv, err := NewServer(ServerConfig{Submitter: &fileSubmitter{}})
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ln := listen()
	if err := srv.Serve(ln, ModeImplicitTLS); err == nil {
		t.Error("implicit TLS without a TLS config")
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("listener left open")
	}
	if err := srv.Serve(listen(), Mode(9)); err == nil {
		t.Error("unknown mode")
	}
	if err := srv.Close(); err != nil {
		t.Error(err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	ln = listen()
	if err := srv.Serve(ln, ModeSTARTTLS); err != nil {
		t.Errorf("serve after close: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("listener left open after a late Serve")
	}
}

// TestShutdown: idle connections end at once, a transaction in progress
// finishes, and Serve returns nil.
func TestShutdown(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) { c.ReadTimeout = time.Hour })
	idle := e.rawTLS(t)
	busy := e.rawTLS(t)
	busy.authPlain(testUser, testPassword)
	busy.expect(235)
	busy.cmd("MAIL FROM:<shop@example.com>")
	busy.expect(250)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	// The idle client is told and disconnected.
	code, msg := idle.reply()
	if code != 421 {
		t.Errorf("idle client got %d %q, want 421", code, msg)
	}
	// The busy one finishes its message.
	busy.cmd("RCPT TO:<a@example.org>")
	busy.expect(250)
	busy.cmd("DATA")
	busy.expect(354)
	busy.write("Subject: x\r\n\r\nbody\r\n.\r\n")
	busy.expectPrefix(250, "2.0.0")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown hangs")
	}
	if e.sub.count() != 1 {
		t.Error("the message in progress was lost")
	}
	// New connections are refused.
	if c, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting after shutdown")
	}
}

// TestPanicRecovered: a panic behind DATA costs the client a 421 and the
// connection, never the process.
func TestPanicRecovered(t *testing.T) {
	e := newEnv(t, nil)
	e.sub.hook = func(sub *Submission) error {
		if sub.From == "boom@example.com" {
			panic("test panic")
		}
		return nil
	}
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	r.cmd("MAIL FROM:<boom@example.com>")
	r.expect(250)
	r.cmd("RCPT TO:<a@example.org>")
	r.expect(250)
	r.cmd("DATA")
	r.expect(354)
	r.write("Subject: x\r\n\r\nbody\r\n.\r\n")
	r.expect(421)
	c := e.client(t)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("shop@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	// go-smtp logs the recovered panic after the 421 has gone out.
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "test panic") })
}

var base64Std = base64.StdEncoding

func execLookPath(name string) (string, error) { return exec.LookPath(name) }

// execCommand runs a client program with a deadline and returns its
// combined output.
func execCommand(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func writeCertPEM(t testing.TB, path string) {
	t.Helper()
	cert, _ := testCert(t)
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tlsDial(addr string, e *env) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, e.clientTLS)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

func readLine(t testing.TB, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// waitFor polls cond until it holds, for state that changes on another
// goroutine after a client already got its reply.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloseEndsConnections: Close ends busy connections at once and frees
// their slots; a Shutdown after it is harmless.
func TestCloseEndsConnections(t *testing.T) {
	e := newEnv(t, nil)
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	r.cmd("MAIL FROM:<shop@example.com>")
	r.expect(250)
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.conn.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Fatalf("read after Close: %v, want the connection closed", err)
	}
	waitFor(t, func() bool { return e.srv.sessionCount() == 0 })
	if e.sub.count() != 0 {
		t.Error("submitted")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
