package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// hookSink is a webhook receiver that verifies every request with the
// standard-webhooks library and records each event by its log record's
// identity (log, copy id, time).
type hookSink struct {
	t      testing.TB
	srv    *httptest.Server
	mu     sync.Mutex
	secret string
	byID   map[string]int    // webhook-id -> requests
	events map[string]string // event key -> webhook-id
	bad    int
}

func newHookSink(t testing.TB) *hookSink {
	hs := &hookSink{t: t, byID: map[string]int{}, events: map[string]string{}}
	hs.srv = httptest.NewServer(hs)
	t.Cleanup(hs.srv.Close)
	return hs
}

func eventKey(log, id, tm string) string { return log + " " + id + " " + tm }

func (hs *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	wh, err := standardwebhooks.NewWebhook(hs.secret)
	if err != nil || wh.Verify(b, r.Header) != nil {
		hs.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		hs.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := r.Header.Get("webhook-id")
	hs.byID[id]++
	k := eventKey(fmt.Sprint(p["log"]), fmt.Sprint(p["id"]), fmt.Sprint(p["time"]))
	if prev, ok := hs.events[k]; ok && prev != id {
		hs.t.Errorf("event %s came under two webhook ids, %s and %s", k, prev, id)
	}
	hs.events[k] = id
	w.WriteHeader(http.StatusNoContent)
}

// apiCall makes a REST call to the relay with the dev API key.
func apiCall(t testing.TB, p *relayProc, method, path, body string, out any) int {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(p.data, devAPIKeyName))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, "http://"+p.apiAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

var trackedURL = regexp.MustCompile(`http://localhost:[0-9]+/[^"'\s<>]+`)

// clickLoop follows the tracked links and images of delivered copies
// until stop closes, so clicks and opens flow too.
func clickLoop(outbox string, stop <-chan struct{}) {
	client := &http.Client{Timeout: 2 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	seen := map[string]bool{}
	for {
		select {
		case <-stop:
			return
		default:
		}
		files, _ := filepath.Glob(filepath.Join(outbox, "*.eml"))
		did := false
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, u := range trackedURL.FindAllString(string(b), 3) {
				if resp, err := client.Get(u); err == nil {
					resp.Body.Close()
				}
				did = true
			}
			select {
			case <-stop:
				return
			default:
			}
		}
		if !did {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestWebhookCrashKill9 runs the real binary with a webhook endpoint,
// submits mail and clicks its links while it runs, kills it with SIGKILL
// at random moments and restarts it. After the last restart the store's
// logs (read over REST) and what the receiver got must match: every
// stored event arrived at least once, and nothing arrived that the store
// does not hold.
func TestWebhookCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	data := t.TempDir()
	// A short lease, so what a killed relay held goes again soon.
	cfgPath, _, err := ensureDevConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "allow_loopback = true\n", "allow_loopback = true\ntimeout = \"3s\"\nlease = \"5s\"\n", 1))
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	sink := newHookSink(t)
	p := startRelay(t, data)
	var ep struct {
		ID, Secret string
	}
	if st := apiCall(t, p, "POST", "/v1/webhooks", fmt.Sprintf(`{"url":%q,"machine":true}`, sink.srv.URL+"/hook"), &ep); st != 201 {
		t.Fatalf("making the endpoint: %d", st)
	}
	sink.mu.Lock()
	sink.secret = ep.Secret
	sink.mu.Unlock()

	outbox := filepath.Join(data, "outbox")
	var mu sync.Mutex
	nAccepted := 0
	rec := func(_ string, o outcome) {
		mu.Lock()
		if o == accepted {
			nAccepted++
		}
		mu.Unlock()
	}
	const rounds, workers = 3, 4
	for round := range rounds {
		if round > 0 {
			p = startRelay(t, data)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				submitLoop(p.smtpAddr, fmt.Sprintf("hook-r%d-w%d", round, w), stop, rec)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clickLoop(outbox, stop)
		}()
		time.Sleep(time.Duration(700+rand.IntN(800)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
	}
	p = startRelay(t, data)

	// Wait for the queue to empty: nothing pending, for longer than a lease.
	quiet := time.Time{}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var page struct {
			Messages []json.RawMessage `json:"messages"`
		}
		if st := apiCall(t, p, "GET", "/v1/webhooks/"+ep.ID+"/messages?state=pending&limit=1", "", &page); st != 200 {
			t.Fatalf("messages: %d", st)
		}
		switch {
		case len(page.Messages) > 0:
			quiet = time.Time{}
		case quiet.IsZero():
			quiet = time.Now()
		case time.Since(quiet) > 2*time.Second:
			goto drained
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhooks still pending after 90s\n%s", truncateStr(p.stderr.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
drained:
	// The store's logs, every day, every log with webhook events.
	stored := map[string]bool{}
	var days []string
	if st := apiCall(t, p, "GET", "/v1/logfiles", "", &days); st != 200 {
		t.Fatalf("logfiles: %d", st)
	}
	perLog := map[string]int{}
	for _, day := range days {
		var names []string
		if st := apiCall(t, p, "GET", "/v1/logfiles/"+day, "", &names); st != 200 {
			t.Fatalf("logfiles/%s: %d", day, st)
		}
		for _, name := range names {
			var evs []map[string]any
			if st := apiCall(t, p, "GET", "/v1/logfiles/"+name+"/json", "", &evs); st != 200 {
				t.Fatalf("%s: %d", name, st)
			}
			log, _, _ := strings.Cut(name, ".")
			for _, e := range evs {
				stored[eventKey(log, fmt.Sprint(e["id"]), fmt.Sprint(e["time"]))] = true
				perLog[log]++
			}
		}
	}
	// The relay's metrics show the attempts.
	resp, err := http.Get("http://" + p.apiAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`trackrelay_webhook_attempts_total{outcome="delivered"}`, "trackrelay_webhook_in_flight 0"} {
		if !strings.Contains(string(mb), m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.bad > 0 {
		t.Errorf("%d requests did not verify", sink.bad)
	}
	missing, extra := 0, 0
	for k := range stored {
		if _, ok := sink.events[k]; !ok {
			missing++
			if missing <= 5 {
				t.Errorf("stored event %s never reached the receiver", k)
			}
		}
	}
	for k := range sink.events {
		if !stored[k] {
			extra++
			if extra <= 5 {
				t.Errorf("the receiver got %s, which the store does not hold", k)
			}
		}
	}
	dups, requests := 0, 0
	for _, n := range sink.byID {
		requests += n
		if n > 1 {
			dups++
		}
	}
	if perLog["attempts"] < 20 || perLog["clicks"] == 0 {
		t.Errorf("too little flowed to prove much: %v", perLog)
	}
	t.Logf("accepted %d messages; stored events %d %v; received %d distinct (%d missing, %d not stored), %d requests, %d messages more than once",
		nAccepted, len(stored), perLog, len(sink.events), missing, extra, requests, dups)
	p.stop()
}
