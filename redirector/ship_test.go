package redirector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

const testSecret = "0123456789abcdef-shared-secret"

// relayEnv is the relay's side: a real store behind the real ingest
// handler on a real HTTP server. Its first failFirst requests are refused,
// and the next lostAcks are stored but answered 502 (a lost
// acknowledgement), to drive the shipper's retries.
type relayEnv struct {
	store    *store.Relay
	srv      *httptest.Server
	requests atomic.Int64
}

func newRelayEnv(t *testing.T, failFirst, lostAcks int64) *relayEnv {
	t.Helper()
	st, err := store.OpenRelay(filepath.Join(t.TempDir(), "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	re := &relayEnv{store: st}
	ingest := IngestHandler(SinkFunc(st.IngestHits), testSecret, nil)
	re.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := re.requests.Add(1)
		switch {
		case n <= failFirst:
			http.Error(w, "relay starting", http.StatusServiceUnavailable)
		case n <= failFirst+lostAcks:
			ingest.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, "proxy lost the answer", http.StatusBadGateway)
		default:
			ingest.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() {
		re.srv.Close()
		st.Close()
	})
	return re
}

func (re *relayEnv) hitCount(t *testing.T) int {
	t.Helper()
	n := 0
	if err := re.store.HitIDs(func(string) { n++ }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestShipperRetriesUntilAccepted(t *testing.T) {
	e := newEnv(t)
	re := newRelayEnv(t, 3, 2)
	const n = 25
	for i := 0; i < n; i++ {
		kind := rewrite.KindClick
		if i%3 == 0 {
			kind = rewrite.KindImage
		}
		tok := rewrite.Token{Kind: kind, MessageID: freshID(), Position: uint32(i), HTTPS: true, Host: "shop.example.com"}
		if r := e.get(fmt.Sprintf("/%s/p/%d", e.tok(tok), i)); r.code != http.StatusFound {
			t.Fatalf("hit %d: %d", i, r.code)
		}
	}
	journaled := e.pending()
	sh, err := NewShipper(ShipperConfig{
		Journal: e.journal, Sink: &HTTPSink{URL: re.srv.URL, Secret: testSecret},
		Batch: 10, Interval: 10 * time.Millisecond, Handler: e.h,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sh.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for e.journal.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if e.journal.Len() != 0 {
		t.Fatalf("%d hits still journaled after %d requests", e.journal.Len(), re.requests.Load())
	}
	if got := re.hitCount(t); got != n {
		t.Fatalf("relay stored %d hits, want %d (each once)", got, n)
	}
	for _, h := range journaled {
		got, ok, err := re.store.Hit(h.ID)
		if err != nil || !ok || got.URL != h.URL || got.Kind != h.Kind || got.MessageID != h.MessageID {
			t.Fatalf("hit %s: %+v %v %v", h.ID, got, ok, err)
		}
	}
	if re.requests.Load() < 3+2+3 {
		t.Fatalf("only %d requests: the failures were not retried", re.requests.Load())
	}
}

func TestShipperFlush(t *testing.T) {
	e := newEnv(t)
	re := newRelayEnv(t, 1, 0)
	for i := 0; i < 7; i++ {
		e.get("/" + e.tok(click("shop.example.com")))
	}
	sh, err := NewShipper(ShipperConfig{Journal: e.journal, Sink: &HTTPSink{URL: re.srv.URL, Secret: testSecret}, Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if e.journal.Len() != 0 || re.hitCount(t) != 7 {
		t.Fatalf("journal %d, relay %d", e.journal.Len(), re.hitCount(t))
	}
	// A relay that never answers: Flush gives up with ctx and keeps hits.
	e.get("/" + e.tok(click("shop.example.com")))
	dead := &HTTPSink{URL: "http://127.0.0.1:1/", Secret: testSecret}
	sh, _ = NewShipper(ShipperConfig{Journal: e.journal, Sink: dead})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := sh.Flush(ctx2); err == nil || e.journal.Len() != 1 {
		t.Fatalf("Flush to a dead relay: %v, journal %d", err, e.journal.Len())
	}
}

func TestIngestHandlerRefusals(t *testing.T) {
	re := newRelayEnv(t, 0, 0)
	hit := `{"id":"0000000000000001aaaaaaaa","time":"2026-11-23T01:00:00Z","kind":"click","message_id":1,"url":"https://x/"}`
	tests := []struct {
		name   string
		method string
		auth   string
		body   io.Reader
		code   int
	}{
		{"ok", "POST", "Bearer " + testSecret, strings.NewReader(`{"hits":[` + hit + `]}`), 200},
		{"no auth", "POST", "", strings.NewReader(`{"hits":[]}`), 401},
		{"wrong secret", "POST", "Bearer " + testSecret + "x", strings.NewReader(`{"hits":[]}`), 401},
		{"basic auth", "POST", "Basic " + testSecret, strings.NewReader(`{"hits":[]}`), 401},
		{"get", "GET", "Bearer " + testSecret, nil, 405},
		{"not json", "POST", "Bearer " + testSecret, strings.NewReader(`hits`), 400},
		{"no id", "POST", "Bearer " + testSecret, strings.NewReader(`{"hits":[{"time":"2026-11-23T01:00:00Z","kind":"click"}]}`), 400},
		{"bad kind", "POST", "Bearer " + testSecret, strings.NewReader(`{"hits":[{"id":"x","time":"2026-11-23T01:00:00Z","kind":"open"}]}`), 400},
		{"too many", "POST", "Bearer " + testSecret, strings.NewReader(`{"hits":[` + strings.Repeat(hit+",", MaxIngestHits) + hit + `]}`), 413},
		{"too big", "POST", "Bearer " + testSecret, io.MultiReader(strings.NewReader(`{"hits":`), strings.NewReader(strings.Repeat(" ", MaxIngestBody))), 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, re.srv.URL, tc.body)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.code {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s, want %d", resp.StatusCode, b, tc.code)
			}
			if tc.code == 200 {
				var ack struct{ Accepted int }
				if err := json.NewDecoder(resp.Body).Decode(&ack); err != nil || ack.Accepted != 1 {
					t.Fatalf("ack %+v %v", ack, err)
				}
			}
		})
	}
	if n := re.hitCount(t); n != 1 {
		t.Fatalf("%d hits stored, want 1", n)
	}
}
