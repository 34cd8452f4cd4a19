package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/trackrelay/trackrelay/store"
)

// fakeClock is the engine's scheduling clock in tests; it moves only when
// told to. It starts an hour ahead of the real clock, so the messages the
// store queues (due at their real creation time) are due by it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Now().UTC().Add(time.Hour).Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// delivery is one request a receiver got.
type delivery struct {
	id, ts, sig string
	body        []byte
	verified    error // the standard-webhooks library's verdict (current secret)
	verifiedOld error // ... with the old secret, when the receiver has one
}

// receiver is a real HTTP server that verifies every request with the
// Standard Webhooks library and answers as its script says.
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	secret string
	old    string

	mu     sync.Mutex
	got    []delivery
	answer func(n int, w http.ResponseWriter, r *http.Request) // n counts from 0; nil: 204
	active int                                                 // requests being answered now
	peak   int
}

func newReceiver(t testing.TB, secret string) *receiver {
	return newReceiverOn(t, "127.0.0.1:0", secret)
}

func newReceiverOn(t testing.TB, addr, secret string) *receiver {
	t.Helper()
	rc := &receiver{t: t, secret: secret}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	rc.srv.Listener.Close()
	rc.srv.Listener = ln
	rc.srv.Config.ErrorLog = nil
	rc.srv.Start()
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	d := delivery{id: r.Header.Get("webhook-id"), ts: r.Header.Get("webhook-timestamp"), sig: r.Header.Get("webhook-signature"), body: body}
	wh, err := standardwebhooks.NewWebhook(rc.secret)
	if err != nil {
		rc.t.Errorf("receiver secret: %v", err)
		return
	}
	d.verified = wh.Verify(body, r.Header)
	rc.mu.Lock()
	if rc.old != "" {
		if old, err := standardwebhooks.NewWebhook(rc.old); err == nil {
			d.verifiedOld = old.Verify(body, r.Header)
		}
	}
	n := len(rc.got)
	rc.got = append(rc.got, d)
	rc.active++
	rc.peak = max(rc.peak, rc.active)
	answer := rc.answer
	rc.mu.Unlock()
	defer func() {
		rc.mu.Lock()
		rc.active--
		rc.mu.Unlock()
	}()
	if answer == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	answer(n, w, r)
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

// testEnv is a real bbolt store and an engine over it.
type testEnv struct {
	t     testing.TB
	db    *store.Relay
	clock *fakeClock
	eng   *Engine
}

// testPolicy reaches the test's loopback receivers over http://.
var testPolicy = Policy{AllowHTTP: true, AllowLoopback: true}

func newTestEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	db, err := store.OpenRelay(filepath.Join(t.TempDir(), "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	te := &testEnv{t: t, db: db, clock: newClock()}
	cfg.Store = db
	if cfg.Now == nil {
		cfg.Now = te.clock.Now
	}
	if cfg.Log == nil && os.Getenv("WEBHOOK_TEST_LOG") != "" {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Poll == 0 {
		cfg.Poll = 10 * time.Millisecond
	}
	if cfg.control == nil {
		cfg.control = loopbackOnly
	}
	te.eng, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	te.eng.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := te.eng.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		db.Close()
	})
	return te
}

// loopbackOnly is the tests' guard behind the policy: whatever the policy
// says, no test connects anywhere but this machine's loopback.
func loopbackOnly(network, address string) error {
	host, _, _ := net.SplitHostPort(address)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("test guard: the policy let a connection to %s through", address)
	}
	return nil
}

// endpoint stores an endpoint for account "shop" to url and returns it.
func (te *testEnv) endpoint(url string, mod func(*store.Webhook)) *store.Webhook {
	te.t.Helper()
	w := &store.Webhook{ID: "wh_" + fmt.Sprint(time.Now().UnixNano()), Account: "shop", URL: url, Secret: NewSecret(), Created: time.Now().UTC()}
	if mod != nil {
		mod(w)
	}
	if err := store.Create(context.Background(), te.db, w); err != nil {
		te.t.Fatal(err)
	}
	return w
}

// events stores n delivery events of account shop (each queues a webhook
// message for every matching endpoint) and returns them.
func (te *testEnv) events(n int, tag string) []store.Event {
	te.t.Helper()
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{
			Log: store.LogDeliveries, Account: "shop", ID: te.db.NextID(), Time: time.Now().UTC(),
			Recipient: fmt.Sprintf("r%d@example.net", i), Tags: []string{tag},
			Fields: map[string]string{"envelope": "news@example.com", "from": "relay", "to": "mx.example.net", "attempt": "1"},
		}
	}
	if err := te.db.AppendEvents(context.Background(), evs); err != nil {
		te.t.Fatal(err)
	}
	return evs
}

// messages returns endpoint's queued messages, oldest first.
func (te *testEnv) messages(endpoint string) []store.WebhookMessage {
	te.t.Helper()
	ms, err := te.db.WebhookMessages(context.Background(), endpoint, "", "", 0)
	if err != nil {
		te.t.Fatal(err)
	}
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms
}

func (te *testEnv) message(id string) *store.WebhookMessage {
	te.t.Helper()
	m, err := te.db.WebhookMessage(context.Background(), id)
	if err != nil {
		te.t.Fatal(err)
	}
	return m
}

func (te *testEnv) attempts(id string) []store.WebhookAttempt {
	te.t.Helper()
	as, err := te.db.WebhookAttempts(context.Background(), id)
	if err != nil {
		te.t.Fatal(err)
	}
	return as
}

// waitFor polls cond until it holds or the time runs out.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// payloadOf decodes a webhook body.
func payloadOf(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("payload %q: %v", b, err)
	}
	return m
}
