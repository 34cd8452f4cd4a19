package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testDevConfig builds the binary and writes a dev config into a new
// folder with every listener on a free port and click domain click.test.
// It returns the config's text for the caller to extend and write again.
func testDevConfig(t *testing.T) (bin, dir, cfgPath, cfgText string) {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	cfgPath, _, err = ensureDevConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfgText = string(raw)
	for _, r := range [][2]string{
		{`addr = "127.0.0.1:2525"`, `addr = "127.0.0.1:0"`},
		{`addr = "127.0.0.1:8025"`, `addr = "127.0.0.1:0"`},
		{`listen           = "127.0.0.1:2530"`, `listen           = "127.0.0.1:0"`},
		{`click_domain  = "localhost:8080"`, `click_domain  = "click.test"`},
	} {
		if !strings.Contains(cfgText, r[0]) {
			t.Fatalf("the dev config changed: no %q in it", r[0])
		}
		cfgText = strings.Replace(cfgText, r[0], r[1], 1)
	}
	return bin, dir, cfgPath, cfgText
}

// waitEML waits for the first copy delivered into dir/outbox and returns it.
func waitEML(t *testing.T, dir string) []byte {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		files, _ := filepath.Glob(filepath.Join(dir, "outbox", "*.eml"))
		if len(files) > 0 {
			eml, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			return eml
		}
		if time.Now().After(deadline) {
			t.Fatal("no .eml delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayAndStandaloneRedirector runs the two-machine layout with two
// real processes: `trackrelay relay` delivers a tracked copy, a separate
// `trackrelay redirector` answers the click and ships the hit over HTTP to
// the relay's internal API, and the click shows up in the relay's REST
// API for the recipient.
func TestRelayAndStandaloneRedirector(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary; skipped with -short")
	}
	const secret = "two-process-ingest-secret"
	bin, dir, cfgPath, relayCfg := testDevConfig(t)
	relayCfg += fmt.Sprintf("\n[redirector]\ningest_secret = %q\n", secret)
	if err := os.WriteFile(cfgPath, []byte(relayCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := startProc(t, bin, []string{"smtp", "api"}, "relay", "--config", cfgPath)

	// The redirector's own file: the same keys, its own data folder, and
	// the relay's internal API to ship to.
	redirCfgPath := filepath.Join(dir, "redirector.toml")
	redirCfg := fmt.Sprintf(`[relay]
data_dir = "redirector-data"

[keys]
key_file = "token.keys"

[redirector]
listen = "127.0.0.1:0"
admin_listen = "off"
click_domains = ["click.test"]
ingest_url = "http://%s/internal/hits"
ingest_secret = %q
ship_interval = "50ms"
`, relay.addrs["api"], secret)
	if err := os.WriteFile(redirCfgPath, []byte(redirCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	redir := startProc(t, bin, []string{"redirector"}, "redirector", "--config", redirCfgPath)

	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer origin.Close()
	msg := "From: shop@example.com\r\nTo: reader@example.org\r\nSubject: two processes\r\n" +
		"x-smtpeter-tags: split\r\nContent-Type: text/html\r\n\r\n" +
		`<a href="` + origin.URL + `/deal?id=7">deal</a>` + "\r\n"
	sendPlain(t, relay.addrs["smtp"], "shop@example.com", "reader@example.org", msg)

	eml := waitEML(t, dir)
	m := regexp.MustCompile(`href="http://click\.test(/[^"]+)"`).FindSubmatch(eml)
	if m == nil {
		t.Fatalf("no tracked link in the delivered copy:\n%s", eml)
	}
	req, _ := http.NewRequest("GET", "http://"+redir.addrs["redirector"]+strings.ReplaceAll(string(m[1]), "&amp;", "&"), nil)
	req.Host = "click.test"
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != origin.URL+"/deal?id=7" {
		t.Fatalf("click: %d to %q", resp.StatusCode, loc)
	}

	// The hit crosses to the relay over HTTP; the REST API shows it.
	key, err := os.ReadFile(filepath.Join(dir, devAPIKeyName))
	if err != nil {
		t.Fatal(err)
	}
	var events []struct {
		Event string         `json:"event"`
		Data  map[string]any `json:"data"`
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		req, _ := http.NewRequest("GET", "http://"+relay.addrs["api"]+"/v1/events/email/reader@example.org", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("events: %d %s", resp.StatusCode, body)
		}
		events = events[:0]
		if err := json.Unmarshal(body, &events); err != nil {
			t.Fatalf("events: %v in %s", err, body)
		}
		clicked := false
		for _, e := range events {
			if e.Event == "click" && e.Data["url"] == origin.URL+"/deal?id=7" {
				clicked = true
			}
		}
		if clicked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the click never reached the relay; events: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range []*redirectorProc{redir, relay} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-p.done
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v", p.err)
		}
	}
}
