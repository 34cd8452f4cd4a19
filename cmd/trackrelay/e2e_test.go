package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds trackrelay once per test run.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trackrelay-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "trackrelay")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// relayProc is a running trackrelay serve --dev.
type relayProc struct {
	t        testing.TB
	cmd      *exec.Cmd
	data     string
	smtpAddr string
	apiAddr  string
	mxAddr   string // the MX listener (inbound.go)
	stderr   *lockedBuf
	done     chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRelay runs serve --dev in data with fresh ports and waits until it
// is ready.
func startRelay(t testing.TB, data string, extra ...string) *relayProc {
	t.Helper()
	p := &relayProc{t: t, data: data, smtpAddr: freeAddr(t), apiAddr: freeAddr(t), mxAddr: freeAddr(t), stderr: &lockedBuf{}, done: make(chan struct{})}
	args := append([]string{"serve", "--dev", "--data", data, "--smtp-addr", p.smtpAddr, "--api-addr", p.apiAddr, "--http-addr", freeAddr(t), "--mx-addr", p.mxAddr}, extra...)
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.apiAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("relay exited at start:\n%s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay not ready:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *relayProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *relayProc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("relay did not stop on SIGTERM:\n%s", p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Errorf("exit code %d after SIGTERM:\n%s", code, p.stderr.String())
	}
}

func (p *relayProc) caPool() *x509.CertPool {
	pem, err := os.ReadFile(filepath.Join(p.data, "tls", "cert.pem"))
	if err != nil {
		p.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

func waitOutbox(t testing.TB, dir string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		if len(ents) >= n {
			return ents
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox has %d files, want %d", len(ents), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const e2eMsg = "From: Shop <shop@example.com>\r\nTo: you@example.net\r\nSubject: %s\r\nX-Smtpeter-Tags: e2e\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<html><body><a href=\"https://shop.example.com/p?id=1\">Shop</a><img src=\"https://cdn.example.com/a.png\"></body></html>\r\n"

func TestE2EDevServe(t *testing.T) {
	data := t.TempDir()
	p := startRelay(t, data)
	outbox := filepath.Join(data, "outbox")

	// go-smtp client, STARTTLS against the generated certificate, AUTH PLAIN.
	c, err := smtp.DialStartTLS(p.smtpAddr, &tls.Config{RootCAs: p.caPool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "dev", "dev")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("shop@example.com", []string{"one@example.net", "two@example.net"}, strings.NewReader(fmt.Sprintf(e2eMsg, "go-smtp"))); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	files := waitOutbox(t, outbox, 2)
	for _, f := range files {
		b, _ := os.ReadFile(f)
		s := string(b)
		if !strings.Contains(s, "Subject: go-smtp") || strings.Contains(strings.ToLower(s), "x-smtpeter") {
			t.Errorf("%s: %q", f, s)
		}
		if !strings.Contains(s, "http://localhost:") {
			t.Errorf("%s: links not tracked to the dev click domain:\n%s", f, s)
		}
	}

	// Python smtplib: AUTH LOGIN over STARTTLS.
	if py, err := exec.LookPath("python3"); err != nil {
		t.Log("python3 not installed: smtplib part skipped")
	} else {
		host, port, _ := net.SplitHostPort(p.smtpAddr)
		script := `import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=20)
s.starttls(context=ctx)
s.ehlo()
s.user, s.password = "dev", "dev"
code, resp = s.auth("LOGIN", s.auth_login)
assert code == 235, (code, resp)
s.sendmail("py@example.com", ["py@example.net"], sys.argv[4].encode())
s.quit()
print("ok")
`
		out, err := exec.Command(py, "-c", script, host, port, filepath.Join(data, "tls", "cert.pem"), fmt.Sprintf(e2eMsg, "python")).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("python: %v\n%s", err, out)
		}
		waitOutbox(t, outbox, 3)
	}

	// curl: smtp:// with AUTH PLAIN (plaintext allowed on loopback in dev).
	if curl, err := exec.LookPath("curl"); err != nil {
		t.Log("curl not installed: curl part skipped")
	} else {
		mail := filepath.Join(t.TempDir(), "m.eml")
		os.WriteFile(mail, []byte(fmt.Sprintf(e2eMsg, "curl")), 0o600)
		out, err := exec.Command(curl, "-sS", "--url", "smtp://"+p.smtpAddr, "--login-options", "AUTH=PLAIN", "--user", "dev:dev",
			"--mail-from", "curl@example.com", "--mail-rcpt", "curl@example.net", "-T", mail).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
	}
	expect := 3 // two go-smtp copies and curl's
	if _, err := exec.LookPath("python3"); err == nil {
		expect++
	}
	all := waitOutbox(t, outbox, expect)
	time.Sleep(100 * time.Millisecond) // the last rename may trail the count
	found := map[string]bool{}
	for _, f := range all {
		b, _ := os.ReadFile(f)
		for _, s := range []string{"go-smtp", "python", "curl"} {
			if bytes.Contains(b, []byte("Subject: "+s+"\r\n")) {
				found[s] = true
			}
		}
	}
	want := []string{"go-smtp", "curl"}
	if _, err := exec.LookPath("python3"); err == nil {
		want = append(want, "python")
	}
	for _, s := range want {
		if !found[s] {
			t.Errorf("no delivered copy from %s", s)
		}
	}

	// The internal listener: health, readiness and metrics.
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": `trackrelay_deliveries_total{outcome="delivered"}`,
	} {
		resp, err := http.Get("http://" + p.apiAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %q", path, resp.StatusCode, truncateStr(string(b), 300))
		}
	}
	// Logs never carry passwords or bodies.
	logs := p.stderr.String()
	if strings.Contains(logs, "shop.example.com/p") || strings.Contains(logs, "ZGV2AGRldgBkZXY") {
		t.Error("logs contain a body or credential")
	}
	p.stop()
	if !strings.Contains(p.stderr.String(), "relay stopping") {
		t.Errorf("no clean shutdown in the log:\n%s", p.stderr.String())
	}
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// TestE2ESighupReload: a new credential and a new API key work after
// SIGHUP, a removed API key stops working, an open connection survives it.
func TestE2ESighupReload(t *testing.T) {
	data := t.TempDir()
	p := startRelay(t, data)
	devKey, err := os.ReadFile(filepath.Join(data, "api-key"))
	if err != nil {
		t.Fatal(err)
	}
	apiStatus := func(key string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+p.apiAddr+"/v1/logfiles", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(key))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := apiStatus(string(devKey)); st != http.StatusOK {
		t.Fatalf("dev API key before the reload: %d", st)
	}
	if st := apiStatus("n3w-api-key"); st != http.StatusUnauthorized {
		t.Fatalf("unknown API key: %d", st)
	}
	c, err := smtp.DialStartTLS(p.smtpAddr, &tls.Config{RootCAs: p.caPool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "dev", "dev")); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("n3w-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	out := string(hash)
	keyHash, err := bcrypt.GenerateFromPassword([]byte("n3w-api-key"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(data, devConfigName)
	b, _ := os.ReadFile(cfgPath)
	// The dev key goes, a new one comes.
	devHash := regexp.MustCompile(`(?m)^key_hash = .*$`)
	if !devHash.Match(b) {
		t.Fatalf("no key_hash line in the dev config:\n%s", b)
	}
	b = devHash.ReplaceAllLiteral(b, []byte(fmt.Sprintf("key_hash = %q", keyHash)))
	b = append(b, fmt.Sprintf("\n[[credentials]]\nusername = \"app2\"\npassword_hash = %q\naccount = \"dev\"\nupstream = \"outbox\"\n", strings.TrimSpace(out))...)
	// [[credentials]] after [[api.keys]] is still a top-level table array.
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "reloaded credentials") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The old connection still sends.
	if err := c.SendMail("a@example.com", []string{"b@example.net"}, strings.NewReader(fmt.Sprintf(e2eMsg, "after-hup"))); err != nil {
		t.Fatalf("connection dropped by reload: %v", err)
	}
	c2, err := smtp.DialStartTLS(p.smtpAddr, &tls.Config{RootCAs: p.caPool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Auth(sasl.NewPlainClient("", "app2", "n3w-pass")); err != nil {
		t.Fatalf("new credential refused after reload: %v", err)
	}
	if st := apiStatus("n3w-api-key"); st != http.StatusOK {
		t.Fatalf("new API key after the reload: %d", st)
	}
	if st := apiStatus(string(devKey)); st != http.StatusUnauthorized {
		t.Fatalf("removed API key after the reload: %d", st)
	}
	waitOutbox(t, filepath.Join(data, "outbox"), 1)
}
