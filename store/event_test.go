package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/config"
)

func testEvent(account, log string, id uint64, t time.Time) Event {
	e := Event{Log: log, Account: account, ID: id, Time: t, Recipient: "Rcpt@Example.net", Tags: []string{"t1"}}
	switch log {
	case LogAttempts:
		e.Fields = map[string]string{"envelope": "a@x", "properties": "{}"}
	case LogDeliveries:
		e.Fields = map[string]string{"envelope": "a@x", "from": "1.2.3.4", "to": "5.6.7.8", "attempt": "1"}
	case LogClicks:
		e.Fields = map[string]string{"url": "https://x/", "ip": "9.9.9.9"}
	}
	return e
}

func collect(t testing.TB, seq func(func(Event, error) bool)) []Event {
	t.Helper()
	var out []Event
	for e, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestEventsValidation(t *testing.T) {
	r := openTestRelay(t, "")
	now := time.Now()
	for name, e := range map[string]Event{
		"unknown log":   {Log: "bouncez", Account: "a", Time: now},
		"no account":    {Log: LogAttempts, Time: now},
		"no time":       {Log: LogAttempts, Account: "a"},
		"foreign field": {Log: LogAttempts, Account: "a", Time: now, Fields: map[string]string{"url": "x"}},
		"own field":     {Log: LogAttempts, Account: "a", Time: now, Fields: map[string]string{"id": "x"}},
		"empty tag":     {Log: LogAttempts, Account: "a", Time: now, Tags: []string{""}},
	} {
		if err := r.AppendEvents(context.Background(), []Event{e}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEventsQueries(t *testing.T) {
	r := openTestRelay(t, "")
	ctx := context.Background()
	day := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	var evs []Event
	// Appended out of time order, over three days, two accounts.
	for i := 9; i >= 0; i-- {
		e := testEvent("a", LogDeliveries, uint64(100+i%3), day.Add(time.Duration(i)*7*time.Hour))
		e.Tags = []string{fmt.Sprintf("tag%d", i%2), "all"}
		evs = append(evs, e)
	}
	evs = append(evs, testEvent("b", LogDeliveries, 100, day.Add(time.Hour)))
	if err := r.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	all := collect(t, r.Events(ctx, "a", LogDeliveries, time.Time{}, time.Time{}))
	if len(all) != 10 {
		t.Fatalf("%d events, want 10", len(all))
	}
	if !slices.IsSortedFunc(all, func(x, y Event) int { return x.Time.Compare(y.Time) }) {
		t.Error("not in time order")
	}
	d1 := collect(t, r.EventsDay(ctx, "a", LogDeliveries, "2026-11-22"))
	if len(d1) != 4 { // hours 0, 7, 14, 21
		t.Errorf("day 1: %d events, want 4", len(d1))
	}
	days, err := r.EventDays(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(days) != 3 || days[0] != (DayLog{"2026-11-22", LogDeliveries, 4}) {
		t.Errorf("days %+v", days)
	}
	if got := collect(t, r.EventsByMessage(ctx, "a", 100)); len(got) != 4 {
		t.Errorf("by message: %d, want 4", len(got))
	}
	if got := collect(t, r.EventsByRecipient(ctx, "a", "rcpt@EXAMPLE.net", time.Time{}, time.Time{})); len(got) != 10 {
		t.Errorf("by recipient (case-insensitive): %d, want 10", len(got))
	}
	tag0 := collect(t, r.EventsByTag(ctx, "a", "tag0", day, day.AddDate(0, 0, 2)))
	for _, e := range tag0 {
		if !slices.Contains(e.Tags, "tag0") || e.Time.Before(day) || !e.Time.Before(day.AddDate(0, 0, 2)) {
			t.Errorf("tag query returned %+v", e)
		}
	}
	if len(tag0) != 4 { // i = 0, 2, 4, 6 are within 48h (0, 14, 28, 42 h)
		t.Errorf("by tag in range: %d, want 4", len(tag0))
	}
	// Accounts never see each other's events.
	if got := collect(t, r.EventsByMessage(ctx, "b", 101)); len(got) != 0 {
		t.Error("account b sees account a's message")
	}
	if got := collect(t, r.Events(ctx, "", LogDeliveries, time.Time{}, time.Time{})); len(got) != 0 {
		t.Error("empty account sees events")
	}
	// Record and Data use the SPEC field names.
	rec := all[0].Record()
	if len(rec) != len(LogFields[LogDeliveries]) || rec[0] != FormatID(all[0].ID) || rec[4] != "1.2.3.4" || rec[7] != "tag0,all" && rec[7] != "tag1,all" {
		t.Errorf("record %q", rec)
	}
	if d := all[0].Data(); d["attempt"] != "1" || len(d["tags"].([]string)) != 2 {
		t.Errorf("data %v", d)
	}
	if _, err := r.EventDays(context.Background(), "nobody"); err != nil {
		t.Error(err)
	}
	for _, err := range r.EventsDay(ctx, "a", LogDeliveries, "22-11-2026") {
		if err == nil {
			t.Error("bad day accepted")
		}
	}
}

func TestEventsIdempotentKey(t *testing.T) {
	r := openTestRelay(t, "")
	ctx := context.Background()
	e := testEvent("a", LogClicks, 1, time.Now())
	e.Key = "hit-1"
	for range 3 {
		if err := r.AppendEvents(ctx, []Event{e, e}); err != nil {
			t.Fatal(err)
		}
	}
	if got := collect(t, r.Events(ctx, "a", LogClicks, time.Time{}, time.Time{})); len(got) != 1 || got[0].Key != "hit-1" {
		t.Fatalf("%d events stored for one key", len(got))
	}
}

func TestEventsStreamInChunksAndStopEarly(t *testing.T) {
	r := openTestRelay(t, "")
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []Event
	for i := range 3*scanChunk + 17 {
		evs = append(evs, testEvent("a", LogClicks, uint64(i), base.Add(time.Duration(i)*time.Second)))
	}
	if err := r.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	got := collect(t, r.Events(ctx, "a", LogClicks, time.Time{}, time.Time{}))
	if len(got) != len(evs) {
		t.Fatalf("%d events, want %d", len(got), len(evs))
	}
	for i, e := range got {
		if e.ID != uint64(i) {
			t.Fatalf("event %d has id %d: lost or repeated across chunks", i, e.ID)
		}
	}
	n := 0
	for range r.Events(ctx, "a", LogClicks, time.Time{}, time.Time{}) {
		n++
		if n == scanChunk+3 {
			break
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for _, err := range r.Events(cctx, "a", LogClicks, time.Time{}, time.Time{}) {
		if err == nil {
			t.Fatal("cancelled context not reported")
		}
	}
}

func TestDeleteEventsBefore(t *testing.T) {
	r := openTestRelay(t, "")
	ctx := context.Background()
	old := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	recent := time.Now().UTC()
	e1 := testEvent("a", LogClicks, 7, old)
	e1.Key = "old-hit"
	e2 := testEvent("a", LogClicks, 7, recent)
	if err := r.AppendEvents(ctx, []Event{e1, e2, testEvent("b", LogAttempts, 8, old)}); err != nil {
		t.Fatal(err)
	}
	// An old final copy goes, an old queued one stays.
	oldID := uint64(old.UnixMilli()-idEpochMs) << idCounterBit
	m := &Message{ID: oldID, Remaining: 1}
	cq := &Copy{ID: oldID + 1, MessageID: oldID, State: CopyQueued}
	cf := &Copy{ID: oldID + 2, MessageID: oldID, State: CopyQueued}
	m.Remaining = 2
	if err := r.AddMessage(ctx, m, []*Copy{cq, cf}, nil); err != nil {
		t.Fatal(err)
	}
	cf.State = CopyDelivered
	if _, err := r.UpdateCopy(ctx, cf, nil); err != nil {
		t.Fatal(err)
	}
	p, err := r.DeleteBefore(ctx, recent, Retention{Default: 30 * 24 * time.Hour})
	if err != nil || p.Events != 2 {
		t.Fatalf("deleted %+v (%v), want 2 events", p, err)
	}
	if got := collect(t, r.EventsByMessage(ctx, "a", 7)); len(got) != 1 || !got[0].Time.Equal(recent) {
		t.Errorf("by message after retention: %+v", got)
	}
	days, _ := r.EventDays(context.Background(), "a")
	if len(days) != 1 || days[0].Day != recent.Format(time.DateOnly) {
		t.Errorf("days after retention %+v", days)
	}
	if got := collect(t, r.EventsByTag(ctx, "b", "t1", time.Time{}, time.Time{})); len(got) != 0 {
		t.Error("index entry survived retention")
	}
	// The key is free again once its event is gone.
	if err := r.AppendEvents(ctx, []Event{e1}); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, r.EventsDay(ctx, "a", LogClicks, "2025-01-01")); len(got) != 1 {
		t.Errorf("re-append after retention: %d", len(got))
	}
	if _, err := r.Copy(context.Background(), cf.ID); err == nil {
		t.Error("old final copy kept")
	}
	if _, err := r.Copy(context.Background(), cq.ID); err != nil {
		t.Error("old queued copy removed")
	}
	if _, err := r.Message(context.Background(), m.ID); err != nil {
		t.Error("message with copies left removed")
	}
}

// BenchmarkEventsDay streams one day out of a million events.
func BenchmarkEventsDay(b *testing.B) {
	r := openTestRelay(b, "")
	ctx := context.Background()
	base := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	const total = 1_000_000
	step := 30 * 24 * time.Hour / total // a month of clicks
	batch := make([]Event, 0, 10000)
	for i := range total {
		batch = append(batch, testEvent("a", LogClicks, uint64(i), base.Add(time.Duration(i)*step)))
		if len(batch) == cap(batch) {
			if err := r.AppendEvents(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ResetTimer()
	for range b.N {
		n := 0
		for e, err := range r.EventsDay(ctx, "a", LogClicks, "2026-10-15") {
			if err != nil {
				b.Fatal(err)
			}
			_ = strings.Join(e.Record(), ",")
			n++
		}
		if n < total/31 {
			b.Fatalf("%d events in a day", n)
		}
		b.ReportMetric(float64(n), "events/op")
	}
}

// One AppendEvents call holding events of several accounts, logs and days
// stores the same as appending them one at a time: putEvents looks each
// bucket up once per batch and counts each day once.
func TestAppendEventsBatchEqualsSingles(t *testing.T) {
	ctx := context.Background()
	batch, single := openTestRelay(t, ""), openTestRelay(t, "")
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 20, 23, 0, 0, 0, time.UTC)
	var evs []Event
	for i := range 300 {
		acct := []string{"shop", "news", "ops"}[rng.IntN(3)]
		e := Event{Log: []string{LogClicks, LogOpens}[rng.IntN(2)], Account: acct, ID: uint64(rng.IntN(5) + 1),
			Time: base.Add(time.Duration(rng.IntN(3*24*60)) * time.Minute), Recipient: fmt.Sprintf("r%d@example.org", rng.IntN(4)),
			Tags: []string{"t" + strconv.Itoa(rng.IntN(3))}, Key: fmt.Sprintf("k%d", i%280), Fields: map[string]string{"ip": "192.0.2.1"}}
		evs = append(evs, e)
	}
	if err := batch.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := single.AppendEvents(ctx, []Event{e}); err != nil {
			t.Fatal(err)
		}
	}
	for _, acct := range []string{"shop", "news", "ops"} {
		d1, err1 := batch.EventDays(context.Background(), acct)
		d2, err2 := single.EventDays(context.Background(), acct)
		if err1 != nil || err2 != nil || !slices.Equal(d1, d2) || len(d1) == 0 {
			t.Fatalf("%s: days %v (%v) batched, %v (%v) one by one", acct, d1, err1, d2, err2)
		}
		for id := uint64(1); id <= 5; id++ {
			n1, n2 := 0, 0
			for _, err := range batch.EventsByMessage(ctx, acct, id) {
				if err != nil {
					t.Fatal(err)
				}
				n1++
			}
			for range single.EventsByMessage(ctx, acct, id) {
				n2++
			}
			if n1 != n2 {
				t.Fatalf("%s message %d: %d events batched, %d one by one", acct, id, n1, n2)
			}
		}
		for _, tag := range []string{"t0", "t1", "t2"} {
			n1, n2 := 0, 0
			for range batch.EventsByTag(ctx, acct, tag, time.Time{}, time.Time{}) {
				n1++
			}
			for range single.EventsByTag(ctx, acct, tag, time.Time{}, time.Time{}) {
				n2++
			}
			if n1 != n2 || n1 == 0 {
				t.Fatalf("%s tag %s: %d events batched, %d one by one", acct, tag, n1, n2)
			}
		}
	}
}

// The config file's list of log names (logs.retention_days_by_log) is
// the store's.
func TestConfigLogNames(t *testing.T) {
	if !slices.Equal(config.LogNames, Logs) {
		t.Fatalf("config.LogNames %v, store.Logs %v", config.LogNames, Logs)
	}
}
