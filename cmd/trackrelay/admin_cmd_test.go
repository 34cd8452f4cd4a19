package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/rewrite"
)

func runCmd(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, stdio{strings.NewReader(stdin), &out, &errb})
	return out.String(), errb.String(), err
}

func TestPasswd(t *testing.T) {
	out, _, err := runCmd(t, "s3cret pass\n", "passwd")
	if err != nil {
		t.Fatal(err)
	}
	h := strings.TrimSpace(out)
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret pass")) != nil {
		t.Fatalf("hash %q does not verify", h)
	}
	if cost, _ := bcrypt.Cost([]byte(h)); cost < 10 {
		t.Errorf("cost %d too low", cost)
	}
	for _, in := range []string{"", "\n", strings.Repeat("x", 73) + "\n"} {
		if _, _, err := runCmd(t, in, "passwd"); err == nil {
			t.Errorf("passwd accepted %q", in)
		}
	}
}

func TestKeygen(t *testing.T) {
	out, _, err := runCmd(t, "", "keygen", "-id", "7")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := rewrite.ReadKeys(strings.NewReader(out))
	if err != nil || len(keys) != 1 || keys[0].ID != 7 {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	out2, _, _ := runCmd(t, "", "keygen")
	if out2 == out {
		t.Error("two keys are equal")
	}
	if _, _, err := runCmd(t, "", "keygen", "-id", "300"); err == nil {
		t.Error("id 300 accepted")
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, config.Example(), 0o600)
	// The example names files that do not exist here: every one is reported.
	out, _, err := runCmd(t, "", "check-config", good)
	if err == nil || !strings.Contains(out, "keys.key_file") || !strings.Contains(out, "smtp.tls_cert") {
		t.Fatalf("check-config on the example without its files: %v\n%s", err, out)
	}
	// Dev mode's generated config is complete.
	p, created, err := ensureDevConfig(filepath.Join(dir, "dev"))
	if err != nil || !created {
		t.Fatal(err)
	}
	out, _, err = runCmd(t, "", "check-config", p)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), ": ok") {
		t.Fatalf("dev config: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[smtp]\nmax_message_bytes = 0\nmax_recipients = -1\n"), 0o600)
	out, _, err = runCmd(t, "", "check-config", bad)
	if err == nil || exitCode(err) != 1 || !strings.Contains(out, "smtp.max_recipients: must be > 0") {
		t.Fatalf("bad config: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, "", "check-config"); exitCode(err) != 2 {
		t.Errorf("no file: %v", err)
	}
}

func TestDevConfigKeptAndFlags(t *testing.T) {
	dir := t.TempDir()
	p1, created, err := ensureDevConfig(dir)
	if err != nil || !created {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p1)
	if _, created, _ := ensureDevConfig(dir); created {
		t.Fatal("config made twice")
	}
	after, _ := os.ReadFile(p1)
	if !bytes.Equal(before, after) {
		t.Fatal("dev config rewritten on second start")
	}
	cfg, err := config.Load(p1)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Credential("dev")
	if c == nil || !c.Clicks || !c.Opens || c.ClickDomain != "localhost:8080" || c.Scheme != "http" ||
		bcrypt.CompareHashAndPassword([]byte(c.PasswordHash), []byte("dev")) != nil {
		t.Fatalf("dev credential %+v", c)
	}
	key, _ := os.ReadFile(filepath.Join(dir, "api-key"))
	if bcrypt.CompareHashAndPassword([]byte(cfg.API.Keys[0].KeyHash), bytes.TrimSpace(key)) != nil {
		t.Error("api-key does not match its hash")
	}
	f := &serveFlags{dev: true, smtpAddr: "127.0.0.1:3525", httpAddr: "127.0.0.1:9090", apiAddr: "127.0.0.1:9025", upstream: "smtps://mx.test:465"}
	if err := applyFlags(cfg, f); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.SMTP.Listeners[0].Addr != "127.0.0.1:3525" || cfg.API.Addr != "127.0.0.1:9025" || cfg.Credential("dev").ClickDomain != "localhost:9090" {
		t.Errorf("flags not applied: %+v", cfg)
	}
	if u := cfg.Upstreams[0]; u.Host != "mx.test" || u.Port != 465 || u.TLS != config.UpstreamImplicit || u.Name != "outbox" {
		t.Errorf("upstream %+v", u)
	}
	for _, tc := range []struct{ in, host, tls, folder string }{
		{"smtp://127.0.0.1:2526", "127.0.0.1", "none", ""},
		{"smtps://[::1]:465", "::1", "implicit", ""},
		{"/tmp/out", "", "", "/tmp/out"},
	} {
		u, err := parseUpstreamFlag(tc.in)
		if err != nil || u.Host != tc.host || u.TLS != tc.tls || u.Folder != tc.folder {
			t.Errorf("%s: %+v %v", tc.in, u, err)
		}
	}
	for _, bad := range []string{"smtp://nohost", "smtp://h:0", "smtps://h:99999"} {
		if _, err := parseUpstreamFlag(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestServeUsage(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"serve", "--dev"}, {"relay", "--dev"}, {"serve", "--config", "x", "--dev", "--data", "d"}, {"serve", "extra"}} {
		if _, _, err := runCmd(t, "", args...); exitCode(err) != 2 {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// check-config lists every problem in one run: type errors do not stop
// it, missing files are reported with the rest, the file's name appears
// once, and an http credential is refused when the redirector serves only
// HTTPS.
func TestCheckConfigEveryProblem(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "many.toml")
	os.WriteFile(p, []byte(`
[relay]
data_dir = "d"
[smtp]
tls_cert = "missing-cert.pem"
tls_key = "missing-key.pem"
max_recipients = "lots"
read_timeout = "soon"
max_sessions = -1
[[smtp.listeners]]
addr = "127.0.0.1:2525"
[[accounts]]
name = "a"
[[credentials]]
username = "u"
password_hash = "$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq"
account = "a"
clicks = "yes"
click_domain = "click.example.com"
scheme = "http"
colour = "blue"
[[upstreams]]
name = "out"
folder = "outbox"
[keys]
key_file = "missing.keys"
[redirector]
tls_cert = "c.pem"
tls_key = "k.pem"
`), 0o600)
	out, _, err := runCmd(t, "", "check-config", p)
	if exitCode(err) != 1 {
		t.Fatalf("exit %v\n%s", err, out)
	}
	for _, want := range []string{
		"smtp.max_recipients: want integer, not string",
		"smtp.read_timeout: invalid duration",
		"smtp.max_sessions: must be > 0",
		"credentials[0].clicks: want boolean, not string (line 18)",
		"credentials[0].colour: unknown key",
		`credentials[0].scheme: "http": the redirector has no plain-HTTP listener`,
		"smtp.tls_cert: open ", "smtp.tls_key: open ", "keys.key_file: open ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, p); n != 1 {
		t.Errorf("file name appears %d times:\n%s", n, out)
	}
	// The key that did not decode is not reported again by Validate.
	if strings.Count(out, "smtp.max_recipients") != 1 {
		t.Errorf("smtp.max_recipients reported twice:\n%s", out)
	}
}

// make run passes ARGS to serve (the README's Quick start shows it).
func TestMakeRunArgs(t *testing.T) {
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed: the Makefile cannot be read here")
	}
	out, err := exec.Command(mk, "-n", "-C", "../..", "run", "DATA=/tmp/d", "ARGS=--smtp-addr 127.0.0.1:3525 --log-level debug").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "serve --dev --data /tmp/d --smtp-addr 127.0.0.1:3525 --log-level debug") {
		t.Fatalf("ARGS not passed to serve:\n%s", out)
	}
}
