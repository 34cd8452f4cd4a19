package webhook

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trackrelay/trackrelay/store"
)

// TestDeliverSigned: every stored event reaches a real receiver once,
// signed so the standard-webhooks library verifies it, with the store's
// message id as webhook-id and the log record's fields as the body; each
// attempt is recorded.
func TestDeliverSigned(t *testing.T) {
	te := newTestEnv(t, Config{Policy: testPolicy})
	rc := newReceiver(t, "")
	ep := te.endpoint(rc.url(), nil)
	rc.secret = ep.Secret
	evs := te.events(40, "news")
	waitFor(t, "40 deliveries", 10*time.Second, func() bool { return rc.count() >= 40 })
	waitFor(t, "all recorded", 5*time.Second, func() bool {
		for _, m := range te.messages(ep.ID) {
			if m.State != store.WebhookDelivered {
				return false
			}
		}
		return true
	})
	time.Sleep(50 * time.Millisecond)
	ds := rc.deliveries()
	if len(ds) != 40 {
		t.Fatalf("%d deliveries, want 40", len(ds))
	}
	ms := te.messages(ep.ID)
	byID := map[string]store.WebhookMessage{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	seenRcpt := map[string]bool{}
	for _, d := range ds {
		if d.verified != nil {
			t.Errorf("%s: signature does not verify: %v (%q)", d.id, d.verified, d.sig)
		}
		if strings.Count(d.sig, "v1,") != 1 {
			t.Errorf("%s: want one signature, got %q", d.id, d.sig)
		}
		m, ok := byID[d.id]
		if !ok {
			t.Fatalf("webhook-id %q is no stored message", d.id)
		}
		if string(m.Payload) != string(d.body) {
			t.Errorf("%s: body %q, stored %q", d.id, d.body, m.Payload)
		}
		p := payloadOf(t, d.body)
		if p["event"] != store.EventDelivered || p["log"] != store.LogDeliveries || p["envelope"] != "news@example.com" {
			t.Errorf("payload %v", p)
		}
		seenRcpt[p["recipient"].(string)] = true
		as := te.attempts(d.id)
		if len(as) != 1 || as[0].Status != 204 || as[0].Error != "" || as[0].Latency <= 0 {
			t.Errorf("%s: attempts %+v", d.id, as)
		}
	}
	for _, e := range evs {
		if !seenRcpt[e.Recipient] {
			t.Errorf("event for %s never arrived", e.Recipient)
		}
	}
	if n := testutil.ToFloat64(te.eng.metrics.attempts.WithLabelValues(outcomeDelivered)); n != 40 {
		t.Errorf("delivered attempts metric %v", n)
	}
}

// TestSecretRotation: during the grace period both secrets sign (a
// receiver holding either verifies); after it, only the new one.
func TestSecretRotation(t *testing.T) {
	te := newTestEnv(t, Config{Policy: testPolicy})
	rc := newReceiver(t, "")
	oldSecret, newSecret := NewSecret(), NewSecret()
	until := te.clock.Now().Add(24 * time.Hour)
	ep := te.endpoint(rc.url(), func(w *store.Webhook) {
		w.Secret, w.OldSecret, w.OldSecretUntil = newSecret, oldSecret, until
	})
	rc.secret, rc.old = newSecret, oldSecret
	te.events(1, "x")
	waitFor(t, "delivery", 5*time.Second, func() bool { return rc.count() == 1 })
	d := rc.deliveries()[0]
	if d.verified != nil || d.verifiedOld != nil {
		t.Fatalf("in the grace period: new %v, old %v (%q)", d.verified, d.verifiedOld, d.sig)
	}
	if sigs := strings.Fields(d.sig); len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
		t.Fatalf("want two space-separated signatures, got %q", d.sig)
	}
	te.clock.Set(until.Add(time.Second))
	te.events(1, "x")
	waitFor(t, "second delivery", 5*time.Second, func() bool { return rc.count() == 2 })
	d = rc.deliveries()[1]
	if d.verified != nil {
		t.Errorf("after the grace period the new secret must verify: %v", d.verified)
	}
	if d.verifiedOld == nil {
		t.Errorf("after the grace period the old secret still verifies (%q)", d.sig)
	}
	_ = ep
}

// attemptCase scripts a receiver and says what the engine must make of it.
type attemptCase struct {
	name   string
	answer func(n int, w http.ResponseWriter, r *http.Request)
	// want: for each attempt made, the state after it and the delay to
	// the next attempt (for pending).
	want []step
}

type step struct {
	state string
	delay time.Duration
	sub   string // in the attempt's error
}

func status(code int, hdr ...string) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(code)
		w.Write([]byte("answer " + strconv.Itoa(code)))
	}
}

// TestScheduleAndFinality drives one message through each receiver with
// a fake clock and checks every attempt's outcome and the exact schedule.
func TestScheduleAndFinality(t *testing.T) {
	sched := DefaultSchedule
	all500 := []step{}
	for i := 1; i < len(sched); i++ {
		all500 = append(all500, step{store.WebhookPending, sched[i], "answered 500"})
	}
	all500 = append(all500, step{store.WebhookFailed, 0, "gave up after 8 attempts"})
	retryDate := time.Now().Add(2 * time.Hour).UTC()

	cases := []attemptCase{
		{"500 until given up", status(500), all500},
		{"404 is final", status(404), []step{{store.WebhookFailed, 0, "answered 404"}}},
		{"400 is final", status(400), []step{{store.WebhookFailed, 0, "answered 400"}}},
		{"408 retried", func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 0 {
				status(408)(n, w, r)
				return
			}
			w.WriteHeader(200)
		}, []step{{store.WebhookPending, 5 * time.Second, "answered 408"}, {store.WebhookDelivered, 0, ""}}},
		{"409 retried", status(409), []step{{store.WebhookPending, 5 * time.Second, "answered 409"}}},
		{"429 with Retry-After seconds", func(n int, w http.ResponseWriter, r *http.Request) {
			if n < 2 {
				status(429, "Retry-After", "120")(n, w, r)
				return
			}
			w.WriteHeader(200)
		}, []step{
			{store.WebhookPending, 120 * time.Second, "answered 429"}, // longer than the schedule's 5s
			{store.WebhookPending, 5 * time.Minute, "answered 429"},   // shorter than the schedule's 5m
			{store.WebhookDelivered, 0, ""},
		}},
		{"503 with Retry-After date", status(503, "Retry-After", retryDate.Format(http.TimeFormat)), []step{{store.WebhookPending, -1, "answered 503"}}},
		{"301 redirect is final", status(301, "Location", "https://elsewhere.example/hook"), []step{{store.WebhookFailed, 0, "redirects are not followed"}}},
		{"hang is a timeout, retried", func(_ int, w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, []step{{store.WebhookPending, 5 * time.Second, "timeout"}}},
		{"headers then a hanging body is delivered", func(_ int, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.Write([]byte("ok, and then nothing"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, []step{{store.WebhookDelivered, 0, ""}}},
		{"reset is retried", func(_ int, w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}, []step{{store.WebhookPending, 5 * time.Second, ""}}},
		{"huge answer is cut", func(_ int, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			w.Write([]byte(strings.Repeat("x", 1<<20)))
		}, []step{{store.WebhookPending, 5 * time.Second, "answered 500"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Config{Policy: testPolicy, Timeout: 2 * time.Second, Lease: 10 * time.Second})
			rc := newReceiver(t, "")
			rc.answer = tc.answer
			ep := te.endpoint(rc.url(), nil)
			rc.secret = ep.Secret
			te.events(1, "x")
			ms := te.messages(ep.ID)
			if len(ms) != 1 {
				t.Fatalf("%d messages queued", len(ms))
			}
			id := ms[0].ID
			for i, st := range tc.want {
				waitFor(t, "attempt "+strconv.Itoa(i+1), 10*time.Second, func() bool { return len(te.attempts(id)) == i+1 })
				m := te.message(id)
				as := te.attempts(id)
				a := as[i]
				if m.State != st.state {
					t.Fatalf("attempt %d: state %s, want %s (%+v)", i+1, m.State, st.state, a)
				}
				if !strings.Contains(a.Error, st.sub) {
					t.Errorf("attempt %d: error %q, want %q in it", i+1, a.Error, st.sub)
				}
				if !a.Time.Equal(te.clock.Now()) {
					t.Errorf("attempt %d at %v, clock at %v", i+1, a.Time, te.clock.Now())
				}
				if len(a.Response) > ResponseBytes {
					t.Errorf("attempt %d: %d bytes of answer recorded", i+1, len(a.Response))
				}
				if m.Attempts != i+1 {
					t.Errorf("message counts %d attempts, want %d", m.Attempts, i+1)
				}
				if st.state != store.WebhookPending {
					continue
				}
				want := st.delay
				if want < 0 { // the Retry-After date
					want = retryDate.Sub(te.clock.Now())
					if d := m.NextAttempt.Sub(te.clock.Now().Add(want)); d < -time.Second || d > time.Second {
						t.Fatalf("attempt %d: next at %v, want about %v", i+1, m.NextAttempt, te.clock.Now().Add(want))
					}
					continue
				}
				if got := m.NextAttempt.Sub(te.clock.Now()); got != want {
					t.Fatalf("attempt %d: next attempt in %v, want %v", i+1, got, want)
				}
				if i == len(tc.want)-1 {
					break
				}
				// Nothing happens before it is due...
				te.clock.Set(m.NextAttempt.Add(-time.Millisecond))
				te.eng.Kick()
				time.Sleep(30 * time.Millisecond)
				if n := len(te.attempts(id)); n != i+1 {
					t.Fatalf("attempt %d came %v early", n, time.Millisecond)
				}
				// ... and it goes when it is.
				te.clock.Set(m.NextAttempt)
				te.eng.Kick()
			}
			// No attempt beyond those expected.
			time.Sleep(50 * time.Millisecond)
			if n := len(te.attempts(id)); n != len(tc.want) {
				t.Errorf("%d attempts, want %d", n, len(tc.want))
			}
			if n := rc.count(); n != len(tc.want) {
				t.Errorf("receiver got %d requests, want %d", n, len(tc.want))
			}
			for _, d := range rc.deliveries() {
				if d.verified != nil {
					t.Errorf("signature: %v", d.verified)
				}
				if d.id != id {
					t.Errorf("webhook-id %q on a retry, want %q", d.id, id)
				}
			}
		})
	}
}

// TestDisableAfterDays: an endpoint failing without a success for
// DisableAfter is disabled with the reason; a success before clears the
// failing state; once disabled nothing more is sent to it.
func TestDisableAfterDays(t *testing.T) {
	reg := prometheus.NewRegistry()
	te := newTestEnv(t, Config{Policy: testPolicy, DisableAfter: 72 * time.Hour, Registerer: reg, Schedule: []time.Duration{0}})
	rc := newReceiver(t, "")
	var fail sync.Map
	fail.Store("on", true)
	rc.answer = func(_ int, w http.ResponseWriter, _ *http.Request) {
		if v, _ := fail.Load("on"); v.(bool) {
			w.WriteHeader(500)
			return
		}
		w.WriteHeader(200)
	}
	ep := te.endpoint(rc.url(), nil)
	rc.secret = ep.Secret
	get := func() *store.Webhook {
		w, err := store.Get[store.Webhook](context.Background(), te.db, store.KindWebhook, ep.ID)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	send := func(want int) {
		t.Helper()
		te.events(1, "x")
		waitFor(t, "request "+strconv.Itoa(want), 5*time.Second, func() bool { return rc.count() == want })
		time.Sleep(30 * time.Millisecond) // the endpoint's record is updated after the attempt
	}
	start := te.clock.Now()
	send(1)
	if w := get(); !w.FailingSince.Equal(start) || w.Disabled != "" {
		t.Fatalf("after a failure: failing since %v, disabled %q", w.FailingSince, w.Disabled)
	}
	te.clock.Advance(48 * time.Hour)
	send(2)
	if w := get(); !w.FailingSince.Equal(start) || w.Disabled != "" {
		t.Fatalf("two days failing: since %v, disabled %q", w.FailingSince, w.Disabled)
	}
	// A success clears it; failing starts again from the next failure.
	fail.Store("on", false)
	send(3)
	if w := get(); !w.FailingSince.IsZero() {
		t.Fatalf("after a success: failing since %v", w.FailingSince)
	}
	fail.Store("on", true)
	restart := te.clock.Now()
	send(4)
	te.clock.Advance(71 * time.Hour)
	send(5)
	if w := get(); w.Disabled != "" {
		t.Fatalf("disabled after 71h: %q", w.Disabled)
	}
	te.clock.Advance(time.Hour)
	send(6)
	w := get()
	if w.Disabled == "" || !strings.Contains(w.Disabled, restart.Format(time.RFC3339)) || !strings.Contains(w.Disabled, "answered 500") {
		t.Fatalf("after 72h failing: disabled %q", w.Disabled)
	}
	if n := testutil.ToFloat64(te.eng.metrics.disabled.WithLabelValues("shop")); n != 1 {
		t.Errorf("disabled metric %v", n)
	}
	if n, err := testutil.GatherAndCount(reg, "trackrelay_webhook_endpoint_disabled"); err != nil || n != 1 {
		t.Errorf("endpoint_disabled gauge: %d, %v", n, err)
	}
	// Disabled: new events are not queued for it, and a message queued by
	// hand (a test event) fails without a request.
	te.events(1, "x")
	if err := te.db.QueueWebhook(context.Background(), store.WebhookMessage{Endpoint: ep.ID, Account: "shop", Type: "test", Payload: []byte(`{"event":"test"}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the test event to fail", 5*time.Second, func() bool {
		for _, m := range te.messages(ep.ID) {
			if m.Type == "test" {
				return m.State == store.WebhookFailed
			}
		}
		return false
	})
	if n := rc.count(); n != 6 {
		t.Errorf("a disabled endpoint got %d requests, want 6", n)
	}
	if n := len(te.messages(ep.ID)); n != 7 {
		t.Errorf("%d messages, want 7 (6 events and the test event)", n)
	}
}

// TestSlowEndpointHoldsUpNobody: an endpoint whose receiver hangs gets at
// most Concurrency requests at once, and another endpoint's messages flow
// meanwhile.
func TestSlowEndpointHoldsUpNobody(t *testing.T) {
	te := newTestEnv(t, Config{Policy: testPolicy, Concurrency: 3, Timeout: 5 * time.Second, Lease: 30 * time.Second})
	release := make(chan struct{})
	slow := newReceiver(t, "")
	slow.answer = func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	fast := newReceiver(t, "")
	se := te.endpoint(slow.url(), func(w *store.Webhook) { w.Events = []string{store.EventDelivered}; w.Tags = []string{"slow"} })
	fe := te.endpoint(fast.url(), func(w *store.Webhook) { w.Tags = []string{"fast"} })
	slow.secret, fast.secret = se.Secret, fe.Secret
	te.events(50, "slow")
	waitFor(t, "the slow endpoint to fill", 5*time.Second, func() bool { return slow.count() >= 3 })
	te.events(100, "fast")
	waitFor(t, "100 fast deliveries", 5*time.Second, func() bool { return fast.count() == 100 })
	slow.mu.Lock()
	peak := slow.peak
	slow.mu.Unlock()
	if peak != 3 {
		t.Errorf("slow endpoint had %d requests at once, want 3", peak)
	}
	close(release)
	waitFor(t, "the slow endpoint to drain", 10*time.Second, func() bool { return slow.count() == 50 })
	slow.mu.Lock()
	peak = slow.peak
	slow.mu.Unlock()
	if peak > 3 {
		t.Errorf("slow endpoint peaked at %d requests", peak)
	}
}

// TestShutdownCutsHungRequests: Shutdown returns when its context ends
// even with requests hanging; their messages stay pending, unrecorded.
func TestShutdownCutsHungRequests(t *testing.T) {
	te := newTestEnv(t, Config{Policy: testPolicy, Timeout: time.Minute, Lease: 2 * time.Minute})
	rc := newReceiver(t, "")
	rc.answer = func(_ int, w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	ep := te.endpoint(rc.url(), nil)
	rc.secret = ep.Secret
	te.events(2, "x")
	waitFor(t, "requests", 5*time.Second, func() bool { return rc.count() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := te.eng.Shutdown(ctx); err == nil {
		t.Error("Shutdown with hung requests returned no error")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	for _, m := range te.messages(ep.ID) {
		if m.State != store.WebhookPending || m.Attempts != 0 || len(te.attempts(m.ID)) != 0 {
			t.Errorf("cut-off message %s: %+v", m.ID, m)
		}
	}
}

// TestPausedAndDeleted: a paused endpoint's pending messages wait (and
// go once it is resumed); a deleted endpoint's fail without a request.
func TestPausedAndDeleted(t *testing.T) {
	te := newTestEnv(t, Config{Policy: testPolicy, Timeout: 200 * time.Millisecond, Lease: time.Second})
	rc := newReceiver(t, "")
	ep := te.endpoint(rc.url(), nil)
	rc.secret = ep.Secret
	ctx := context.Background()
	// Queue, then pause before the engine can see the messages: stop the
	// clock's progress by queueing them due in the future.
	if err := store.Update(ctx, te.db, store.KindWebhook, ep.ID, false, func(w *store.Webhook) (*store.Webhook, error) {
		w.Paused = true
		return w, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := te.db.QueueWebhook(ctx, store.WebhookMessage{Endpoint: ep.ID, Account: "shop", Type: "test", Payload: []byte(`{"event":"test"}`)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	te.clock.Advance(2 * time.Second) // past a lease: claimed again, still not sent
	time.Sleep(100 * time.Millisecond)
	if n := rc.count(); n != 0 {
		t.Fatalf("a paused endpoint got %d requests", n)
	}
	if ms := te.messages(ep.ID); len(ms) != 1 || ms[0].State != store.WebhookPending || ms[0].Attempts != 0 {
		t.Fatalf("paused: %+v", ms)
	}
	if err := store.Update(ctx, te.db, store.KindWebhook, ep.ID, false, func(w *store.Webhook) (*store.Webhook, error) {
		w.Paused = false
		return w, nil
	}); err != nil {
		t.Fatal(err)
	}
	te.clock.Advance(2 * time.Second)
	waitFor(t, "delivery after resuming", 5*time.Second, func() bool { return rc.count() == 1 })

	if err := store.Delete(ctx, te.db, store.KindWebhook, ep.ID); err != nil {
		t.Fatal(err)
	}
	if err := te.db.QueueWebhook(ctx, store.WebhookMessage{Endpoint: ep.ID, Account: "shop", Type: "test", Payload: []byte(`{"event":"test"}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the orphan to fail", 5*time.Second, func() bool {
		for _, m := range te.messages(ep.ID) {
			if m.State == store.WebhookFailed {
				as := te.attempts(m.ID)
				return len(as) == 1 && as[0].Error == "endpoint deleted"
			}
		}
		return false
	})
	if n := rc.count(); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"30", 30 * time.Second}, {" 7 ", 7 * time.Second},
		{"999999999999", MaxRetryAfter}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(72 * time.Hour).Format(http.TimeFormat), MaxRetryAfter},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("Retry-After %q: %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{200, outcomeDelivered}, {201, outcomeDelivered}, {204, outcomeDelivered}, {299, outcomeDelivered},
		{301, outcomeFailed}, {302, outcomeFailed}, {307, outcomeFailed}, {308, outcomeFailed},
		{400, outcomeFailed}, {401, outcomeFailed}, {403, outcomeFailed}, {404, outcomeFailed}, {410, outcomeFailed}, {413, outcomeFailed},
		{408, outcomeRetry}, {409, outcomeRetry}, {425, outcomeRetry}, {429, outcomeRetry},
		{500, outcomeRetry}, {502, outcomeRetry}, {503, outcomeRetry}, {504, outcomeRetry}, {599, outcomeRetry},
		{600, outcomeRetry}, {199, outcomeRetry},
	} {
		if got, _ := classify(&result{status: tc.status}); got != tc.want {
			t.Errorf("%d: %s, want %s", tc.status, got, tc.want)
		}
	}
	if got, _ := classify(&result{err: &AddrError{Reason: "loopback"}}); got != outcomeFailed {
		t.Errorf("a refused address: %s, want failed", got)
	}
	if got, _ := classify(&result{err: context.DeadlineExceeded}); got != outcomeRetry {
		t.Errorf("a timeout: %s, want retry", got)
	}
}

// TestFits: an endpoint holds in memory what it can send within the
// lease at its pace, and no more.
func TestFits(t *testing.T) {
	e := &Engine{cfg: Config{Concurrency: 4, Timeout: 15 * time.Second, Lease: 2 * time.Minute, MaxInFlight: 2048}}
	now := time.Now()
	deadline := now.Add(2 * time.Minute)
	for _, tc := range []struct {
		latency time.Duration
		pos     int
		want    bool
	}{
		{0, 0, true}, {0, 2047, true}, {0, 2048, false}, // pace unknown: up to MaxInFlight
		{time.Millisecond, 100000, true}, // fast: what fits in the lease (the global bound is elsewhere)
		{15 * time.Second, 0, true},      // timeouts: the first round
		{15 * time.Second, 4 * 5, true},  // 6 rounds of 15s + a timeout = 105s < 120s
		{15 * time.Second, 4 * 6, false}, // 7 rounds + a timeout = 120s: too late
		{time.Second, 4 * 100, true},
		{time.Second, 4 * 105, false},
	} {
		q := &epQueue{latency: tc.latency}
		if got := e.fits(q, tc.pos, deadline, now); got != tc.want {
			t.Errorf("latency %v, position %d: %v, want %v", tc.latency, tc.pos, got, tc.want)
		}
	}
}

// TestQueueMetrics: queue depth and the oldest message's age per endpoint
// come from the store; attempts are counted by outcome.
func TestQueueMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	te := newTestEnv(t, Config{Policy: testPolicy, Registerer: reg})
	rc := newReceiver(t, "")
	rc.answer = status(404)
	ep := te.endpoint(rc.url(), func(w *store.Webhook) { w.Tags = []string{"go"} })
	rc.secret = ep.Secret
	parked := te.endpoint(rc.url(), func(w *store.Webhook) { w.Tags = []string{"wait"} })
	te.events(3, "wait")
	if err := store.Update(context.Background(), te.db, store.KindWebhook, parked.ID, false, func(w *store.Webhook) (*store.Webhook, error) {
		w.Paused = true
		return w, nil
	}); err != nil {
		t.Fatal(err)
	}
	te.events(2, "go")
	waitFor(t, "two final failures", 5*time.Second, func() bool {
		return testutil.ToFloat64(te.eng.metrics.attempts.WithLabelValues(outcomeFailed)) == 2
	})
	time.Sleep(20 * time.Millisecond)
	te.eng.metrics.mu.Lock()
	te.eng.metrics.readAt = time.Time{} // read the queue again now
	te.eng.metrics.mu.Unlock()
	want := `
# HELP trackrelay_webhook_queue_depth Webhook messages waiting (pending) per endpoint.
# TYPE trackrelay_webhook_queue_depth gauge
trackrelay_webhook_queue_depth{account="shop",endpoint="` + parked.ID + `"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "trackrelay_webhook_queue_depth"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "trackrelay_webhook_queue_oldest_seconds" {
			found = len(mf.Metric) == 1 && mf.Metric[0].GetGauge().GetValue() > 0
		}
	}
	if !found {
		t.Error("no oldest-age gauge for the parked endpoint")
	}
	if n := testutil.ToFloat64(te.eng.metrics.attempts.WithLabelValues(outcomeDelivered)); n != 0 {
		t.Errorf("delivered %v", n)
	}
}
