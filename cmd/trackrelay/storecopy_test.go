package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/store/postgres"
	"github.com/trackrelay/trackrelay/store/storetest"
)

// TestStoreCopy makes data through the real relay on bbolt (mail, its
// deliveries and clicks through the redirector), copies the stopped
// install into PostgreSQL with `trackrelay store copy`, and checks the
// copy answer for answer: the two stores side by side, then the REST API
// of a relay on PostgreSQL against what the bbolt relay answered.
func TestStoreCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary; skipped with -short")
	}
	dsn := testPostgres(t)
	bin, dir, cfgPath, cfgText := testDevConfig(t)
	cfgText += "\n[redirector]\nlisten = \"127.0.0.1:0\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, devAPIKeyName))
	if err != nil {
		t.Fatal(err)
	}
	apiKey := strings.TrimSpace(string(key))
	serve := startProc(t, bin, []string{"smtp", "api", "redirector"}, "serve", "--config", cfgPath)
	rcpts := []string{"ann@example.org", "bob@example.org", "cy@example.org"}
	for i, r := range rcpts {
		msg := fmt.Sprintf("From: shop@example.com\r\nTo: %s\r\nSubject: copy %d\r\nx-smtpeter-tags: copy,n%d\r\nContent-Type: text/html\r\n\r\n"+
			"<a href=\"https://shop.example.com/p?id=%d\">deal</a><a href=\"https://shop.example.com/all\">all</a>\r\n", r, i, i, i)
		sendPlain(t, serve.addrs["smtp"], "shop@example.com", r, msg)
	}
	files := waitOutbox(t, filepath.Join(dir, "outbox"), len(rcpts))
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	clicks := 0
	for i, f := range files {
		eml, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for j, m := range clickRE.FindAllSubmatch(eml, -1) {
			if j > i { // a different number of clicks per copy
				break
			}
			req, _ := http.NewRequest("GET", "http://"+serve.addrs["redirector"]+strings.ReplaceAll(string(m[1]), "&amp;", "&"), nil)
			req.Host = "click.test"
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("click: %d", resp.StatusCode)
			}
			clicks++
		}
	}
	get := func(apiAddr, path string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+apiAddr+path, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		return string(body)
	}
	paths := []string{"/v1/stats", "/v1/links", "/v1/events/tags/copy", "/v1/logfiles"}
	for _, r := range rcpts {
		paths = append(paths, "/v1/events/email/"+r)
	}
	// Wait for the clicks to be stored, then keep what the bbolt relay says.
	for deadline := time.Now().Add(20 * time.Second); strings.Count(get(serve.addrs["api"], "/v1/events/tags/copy"), `"event":"click"`) < clicks; {
		if time.Now().After(deadline) {
			t.Fatalf("the %d clicks never all arrived", clicks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := map[string]string{}
	for _, p := range paths {
		want[p] = get(serve.addrs["api"], p)
	}
	if err := serve.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-serve.done

	pgCfg := filepath.Join(dir, "pg.toml")
	pgText := cfgText + fmt.Sprintf("\n[store]\nbackend = \"postgres\"\ndsn = %q\nnode = \"relay-1\"\n", dsn)
	if err := os.WriteFile(pgCfg, []byte(pgText), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "migrate", "--config", pgCfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "applied migration 1") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "store", "copy", "--from-bbolt", filepath.Join(dir, "relay.db"), "--config", pgCfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "3 messages, 3 copies") {
		t.Fatalf("store copy: %v\n%s", err, out)
	}
	t.Logf("store copy: %s", bytes.TrimSpace(out))
	// A second copy into the same database is refused, whole.
	if out, err := exec.Command(bin, "store", "copy", "--from-bbolt", filepath.Join(dir, "relay.db"), "--config", pgCfg).CombinedOutput(); err == nil {
		t.Fatalf("a second copy was accepted:\n%s", out)
	}
	func() {
		bolt, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer bolt.Close()
		pg, err := postgres.Open(context.Background(), postgres.Options{DSN: dsn, Node: "compare"})
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		storetest.Compare(t, bolt, pg)
	}()

	relay := startProc(t, bin, []string{"smtp", "api"}, "relay", "--config", pgCfg)
	for _, p := range paths {
		if got := get(relay.addrs["api"], p); got != want[p] {
			t.Errorf("%s on PostgreSQL:\n%s\non bbolt:\n%s", p, got, want[p])
		}
	}
	if err := relay.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-relay.done
	if relay.err != nil {
		t.Errorf("relay exit: %v", relay.err)
	}
}
