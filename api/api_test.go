package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/api")

const (
	keyShop  = "shop-key-0123456789abcdef"
	keyOther = "other-key-fedcba9876543210"
)

// env is a real API over a real store and spool, served over HTTP.
type env struct {
	t     testing.TB
	relay *store.Relay
	spool *smtpd.Spool
	srv   *httptest.Server
	now   time.Time
}

func hashKey(t testing.TB, key string) []byte {
	h, err := bcrypt.GenerateFromPassword([]byte(key), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	relay, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	spool, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: relay, MaxMessageBytes: 256 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	kr, err := NewKeyring([]Key{
		{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "shop-api", Account: "shop", Clicks: true, Opens: true, ClickDomain: "t.example", Scheme: "https"}},
		{Hash: hashKey(t, keyOther), Cred: &smtpd.Credential{Username: "other-api", Account: "other", ClickDomain: "t.example", Scheme: "https"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, relay: relay, spool: spool, now: time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC)}
	h := New(Config{
		Submitter: spool, Store: relay, Keys: kr,
		MaxBodyBytes: 1 << 20,
		Now:          func() time.Time { return e.now },
	})
	e.srv = newTestServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// do makes a request with key (as a bearer token unless the path already
// carries access_token) and returns the status and body.
func (e *env) do(method, path, key string, body io.Reader, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(iotest.HalfReader(resp.Body))
	if err != nil {
		e.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

func (e *env) get(path, key string) (int, []byte) {
	e.t.Helper()
	st, _, b := e.do(http.MethodGet, path, key, nil)
	return st, b
}

// wantError checks a JSON error answer with status and a message
// containing sub.
func wantError(t testing.TB, status int, body []byte, wantStatus int, sub string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d; body %s", status, wantStatus, body)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\": ...}: %v", body, err)
	}
	if !strings.Contains(e.Error, sub) {
		t.Fatalf("error %q does not mention %q", e.Error, sub)
	}
}

func TestRoutesMatchOpenAPI(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(Spec, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	var inDoc, inCode []string
	for path, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" || m == "summary" || m == "description" {
				continue
			}
			inDoc = append(inDoc, strings.ToUpper(m)+" "+path)
		}
	}
	for _, rt := range routes {
		inCode = append(inCode, rt.method+" "+rt.pattern)
	}
	sort.Strings(inDoc)
	sort.Strings(inCode)
	if !slices.Equal(inDoc, inCode) {
		t.Fatalf("routes and openapi.json differ:\ncode: %q\ndoc:  %q", inCode, inDoc)
	}
	// Every $ref resolves.
	var all map[string]any
	if err := json.Unmarshal(Spec, &all); err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs(all, nil) {
		var node any = all
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := node.(map[string]any)
			if !ok {
				node = nil
				break
			}
			node = m[part]
		}
		if node == nil {
			t.Errorf("openapi.json: $ref %q does not resolve", ref)
		}
	}
	// And every registered route answers (not the catch-all 404).
	e := newEnv(t)
	for _, rt := range routes {
		path := strings.NewReplacer("{file}", "2026-11-22", "{id}", "0000000000000001", "{address}", "a@b.example", "{tags}", "x").Replace(rt.pattern)
		st, _, body := e.do(rt.method, path, "", nil)
		if rt.mode == public {
			if st != http.StatusOK {
				t.Errorf("%s %s without a key: status %d (%s), want 200", rt.method, path, st, body)
			}
			continue
		}
		if st != http.StatusUnauthorized {
			t.Errorf("%s %s without a key: status %d (%s), want 401", rt.method, path, st, body)
		}
	}
}

func refs(v any, out []string) []string {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "$ref" {
				out = append(out, s)
			} else {
				out = refs(x, out)
			}
		}
	case []any:
		for _, x := range v {
			out = refs(x, out)
		}
	}
	return out
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		path   string
		hdr    []string
		status int
		errSub string
	}{
		{"no key", "/v1/logfiles", nil, 401, "missing API key"},
		{"bad key", "/v1/logfiles", []string{"Authorization", "Bearer nope"}, 401, "invalid API key"},
		{"bad key again (cached)", "/v1/logfiles", []string{"Authorization", "Bearer nope"}, 401, "invalid API key"},
		{"too long", "/v1/logfiles", []string{"Authorization", "Bearer " + strings.Repeat("k", 200)}, 401, "invalid API key"},
		{"basic scheme", "/v1/logfiles", []string{"Authorization", "Basic " + keyShop}, 401, "want Bearer"},
		{"bearer", "/v1/logfiles", []string{"Authorization", "Bearer " + keyShop}, 200, ""},
		{"bearer lower case scheme", "/v1/logfiles", []string{"Authorization", "bearer " + keyShop}, 200, ""},
		{"bearer cached", "/v1/logfiles", []string{"Authorization", "Bearer " + keyShop}, 200, ""},
		{"access_token", "/v1/logfiles?access_token=" + url.QueryEscape(keyShop), nil, 200, ""},
		{"bad access_token", "/v1/logfiles?access_token=x", nil, 401, "invalid API key"},
		{"both", "/v1/logfiles?access_token=" + url.QueryEscape(keyShop), []string{"Authorization", "Bearer " + keyShop}, 400, "once"},
		{"key prefix", "/v1/logfiles", []string{"Authorization", "Bearer " + keyShop[:10]}, 401, "invalid"},
		{"unknown path", "/v2/nothing", []string{"Authorization", "Bearer " + keyShop}, 404, "no such endpoint"},
		{"wrong method", "/v1/send", []string{"Authorization", "Bearer " + keyShop}, 405, "not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, h, body := e.do(http.MethodGet, tc.path, "", nil, tc.hdr...)
			if tc.errSub == "" {
				if st != tc.status {
					t.Fatalf("status %d, want %d: %s", st, tc.status, body)
				}
				return
			}
			wantError(t, st, body, tc.status, tc.errSub)
			if st == 401 && h.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if st == 405 && h.Get("Allow") != "POST" {
				t.Errorf("405 with Allow %q", h.Get("Allow"))
			}
		})
	}
}

func TestKeyringConcurrent(t *testing.T) {
	kr, err := NewKeyring([]Key{{Hash: hashKey(t, "k1"), Cred: &smtpd.Credential{Account: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for i := 0; i < 16; i++ {
		go func() {
			key := "k1"
			if i%2 == 1 {
				key = fmt.Sprintf("bad%d", i%4)
			}
			p, err := kr.CheckKey(context.Background(), key)
			switch {
			case key == "k1" && (err != nil || p.Account != "a"):
				done <- fmt.Errorf("good key: %v, %v", p, err)
			case key != "k1" && err != ErrBadKey:
				done <- fmt.Errorf("bad key %q: %v", key, err)
			default:
				done <- nil
			}
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if _, err := NewKeyring([]Key{{Hash: []byte("plain"), Cred: &smtpd.Credential{Account: "a"}}}); err == nil {
		t.Error("NewKeyring accepted a hash that is not bcrypt")
	}
	// A principal is a copy: changing it does not change the keyring.
	p, _ := kr.CheckKey(context.Background(), "k1")
	p.Cred.Account = "mallory"
	if p2, _ := kr.CheckKey(context.Background(), "k1"); p2.Account != "a" || p2.Cred.Account != "a" {
		t.Fatalf("keyring changed through a principal: %+v", p2.Cred)
	}
}

// parseCSV reads CSV through a one-byte reader, as a streaming client
// would see it.
func parseCSV(t testing.TB, b []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(iotest.OneByteReader(bytes.NewReader(b))).ReadAll()
	if err != nil {
		t.Fatalf("CSV %q: %v", b, err)
	}
	return recs
}

func goldenCompare(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "api", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file (run with -update to make it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func newTestServer(h http.Handler) *httptest.Server { return httptest.NewServer(h) }

// TestKeyringSetKeys: after SetKeys a removed key fails at once, although
// it passed (and was cached) before; a new key passes, also one that failed
// (and was cached as bad) before; a bad key list changes nothing; checks
// running during a swap are safe.
func TestKeyringSetKeys(t *testing.T) {
	ctx := context.Background()
	kr, err := NewKeyring([]Key{{Hash: hashKey(t, "old"), Cred: &smtpd.Credential{Account: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.CheckKey(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.CheckKey(ctx, "new"); err != ErrBadKey {
		t.Fatalf("new key before the swap: %v", err)
	}
	newKeys := []Key{{Hash: hashKey(t, "new"), Cred: &smtpd.Credential{Account: "b"}}}
	if err := kr.SetKeys(newKeys); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.CheckKey(ctx, "old"); err != ErrBadKey {
		t.Fatalf("removed key still works: %v", err)
	}
	if p, err := kr.CheckKey(ctx, "new"); err != nil || p.Account != "b" {
		t.Fatalf("new key: %v %v", p, err)
	}
	if err := kr.SetKeys([]Key{{Hash: []byte("plain"), Cred: &smtpd.Credential{Account: "c"}}}); err == nil {
		t.Fatal("SetKeys accepted a hash that is not bcrypt")
	}
	if _, err := kr.CheckKey(ctx, "new"); err != nil {
		t.Fatalf("a refused SetKeys changed the keys: %v", err)
	}

	// Swaps while checks run (go test -race).
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if p, err := kr.CheckKey(ctx, "new"); err == nil && p.Account != "b" {
					t.Errorf("key new speaks for %q", p.Account)
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if err := kr.SetKeys(newKeys); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
