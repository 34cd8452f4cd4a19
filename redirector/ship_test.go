package redirector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
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

// syncBuffer is a log sink that tests read while goroutines write.
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

// TestIngestHandlerPartialBatch: bad hits in a batch are named in the 200
// answer with a reason, and the good ones are stored.
func TestIngestHandlerPartialBatch(t *testing.T) {
	good := func(id string) string {
		return `{"id":"` + id + `","time":"2026-11-23T01:00:00Z","kind":"click","message_id":1,"url":"https://x/"}`
	}
	tests := []struct {
		name     string
		hits     []string
		accepted int
		rejected map[int]string // index -> substring of the reason
		ids      map[int]string // index -> id the answer names
	}{
		{"all good", []string{good("0000000000000001aaaaaaaa"), good("0000000000000002aaaaaaaa")}, 2, nil, nil},
		{"no id", []string{good("0000000000000003aaaaaaaa"), `{"time":"2026-11-23T01:00:00Z","kind":"click"}`}, 1,
			map[int]string{1: "bad id"}, map[int]string{1: ""}},
		{"bad kind", []string{`{"id":"0000000000000004aaaaaaaa","time":"2026-11-23T01:00:00Z","kind":"open"}`, good("0000000000000005aaaaaaaa")}, 1,
			map[int]string{0: "bad kind"}, map[int]string{0: "0000000000000004aaaaaaaa"}},
		{"undecodable", []string{good("0000000000000006aaaaaaaa"), `{"id":"0000000000000007aaaaaaaa","time":"yesterday","kind":"click"}`, `42`, good("0000000000000008aaaaaaaa")}, 2,
			map[int]string{1: "not a hit", 2: "not a hit"}, map[int]string{1: "0000000000000007aaaaaaaa", 2: ""}},
		{"no time", []string{`{"id":"0000000000000009aaaaaaaa","kind":"pixel"}`}, 0,
			map[int]string{0: "no time"}, map[int]string{0: "0000000000000009aaaaaaaa"}},
		{"field too long", []string{`{"id":"000000000000000aaaaaaaaa","time":"2026-11-23T01:00:00Z","kind":"click","ip":"` + strings.Repeat("1", 65) + `"}`}, 0,
			map[int]string{0: "too long"}, map[int]string{0: "000000000000000aaaaaaaaa"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			re := newRelayEnv(t, 0, 0)
			req, _ := http.NewRequest("POST", re.srv.URL, strings.NewReader(`{"hits":[`+strings.Join(tc.hits, ",")+`]}`))
			req.Header.Set("Authorization", "Bearer "+testSecret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var ans ingestAnswer
			if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
				t.Fatal(err)
			}
			if ans.Accepted != tc.accepted || len(ans.Rejected) != len(tc.rejected) {
				t.Fatalf("answer %+v, want %d accepted, %d rejected", ans, tc.accepted, len(tc.rejected))
			}
			for _, r := range ans.Rejected {
				want, ok := tc.rejected[r.Index]
				if !ok || !strings.Contains(r.Reason, want) || r.ID != tc.ids[r.Index] {
					t.Errorf("rejection %+v, want index in %v with reason %q and id %q", r, tc.rejected, want, tc.ids[r.Index])
				}
			}
			if n := re.hitCount(t); n != tc.accepted {
				t.Fatalf("relay stored %d hits, want %d", n, tc.accepted)
			}
		})
	}
}

// TestShipperDropsRejectedAndUnreadable: a hit the relay refuses and a
// journal record that cannot be read do not block the hits behind them,
// are logged, and leave the journal (and its lag) empty. Shipping goes
// over real HTTP to the real ingest handler and store, and in-process
// through CheckedSink, as serve does.
func TestShipperDropsRejectedAndUnreadable(t *testing.T) {
	for _, via := range []string{"http", "in-process"} {
		t.Run(via, func(t *testing.T) {
			e := newEnv(t)
			re := newRelayEnv(t, 0, 0)
			var want []string
			for i := 0; i < 5; i++ {
				if r := e.get("/" + e.tok(click("shop.example.com"))); r.code != http.StatusFound {
					t.Fatalf("hit %d: %d", i, r.code)
				}
			}
			for _, h := range e.pending() {
				want = append(want, h.ID)
			}
			// Oldest first, so they are at the front of the first batch.
			bad := store.Hit{ID: "0000000000000001deadbeef", Time: time.Now().UTC(), Kind: "open"}
			if err := e.journal.Append(context.Background(), bad); err != nil {
				t.Fatal(err)
			}
			const garbled = "0000000000000002deadbeef"
			if err := e.journal.PutRaw(garbled, []byte("{not json")); err != nil {
				t.Fatal(err)
			}
			if e.journal.Len() != 7 {
				t.Fatalf("journal holds %d records, want 7", e.journal.Len())
			}
			var sink Sink = &HTTPSink{URL: re.srv.URL, Secret: testSecret}
			if via == "in-process" {
				sink = CheckedSink(SinkFunc(re.store.IngestHits))
			}
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			sh, err := NewShipper(ShipperConfig{Journal: e.journal, Sink: sink, Batch: 4, Logger: log, Handler: e.h})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := sh.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v (logs: %s)", err, logs.String())
			}
			if n := e.journal.Len(); n != 0 {
				t.Fatalf("%d records left in the journal", n)
			}
			if _, ok := e.journal.Oldest(); ok {
				t.Fatal("journal lag still counts a dropped record")
			}
			for _, id := range want {
				if _, ok, err := re.store.Hit(id); err != nil || !ok {
					t.Fatalf("good hit %s not stored: %v", id, err)
				}
			}
			if _, ok, _ := re.store.Hit(bad.ID); ok {
				t.Fatal("rejected hit stored")
			}
			out := logs.String()
			for _, s := range []string{
				`level=WARN msg="relay rejected hit; dropped" hit=` + bad.ID, "reason=\"bad kind\"",
				`level=ERROR msg="unreadable journal record dropped" hit=` + garbled,
			} {
				if !strings.Contains(out, s) {
					t.Errorf("log lacks %q:\n%s", s, out)
				}
			}
			if strings.Contains(out, "will retry") {
				t.Errorf("a rejected hit was retried:\n%s", out)
			}
		})
	}
}
