// Package storetest is the contract of store.DB: one suite of tests that
// every backend (bbolt, PostgreSQL) passes, so that the relay, the REST API
// and the dashboard see the same behaviour whichever keeps their data. The
// bbolt backend (package store) is the reference the suite was written
// from.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// Run runs the whole contract against the backend open makes: a new,
// empty store for each call (closed by the caller's cleanup).
func Run(t *testing.T, open func(t *testing.T) store.DB) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, db store.DB)
	}{
		{"Records", testRecords},
		{"Messages", testMessages},
		{"Events", testEvents},
		{"EventValidation", testEventValidation},
		{"EventPaging", testEventPaging},
		{"Hits", testHits},
		{"HitPrivacy", testHitPrivacy},
		{"Aggregates", testAggregates},
		{"Links", testLinks},
		{"AddressLists", testAddressLists},
		{"Returned", testReturned},
		{"Webhooks", testWebhooks},
		{"Erase", testErase},
		{"Retention", testRetention},
		{"Search", testSearch},
		{"ConcurrentWriters", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var ctx = context.Background()

// base is the suite's clock: an hour's start, a few days back, so that
// events of "today" and of past days are both recent enough for every
// retention the suite sets up.
var base = time.Now().UTC().Truncate(time.Hour).Add(-72 * time.Hour)

func collect(t *testing.T, seq iter.Seq2[store.Event, error]) []store.Event {
	t.Helper()
	var out []store.Event
	for e, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// sent is a message with its copies, made through AddMessage.
type sent struct {
	m      *store.Message
	copies []*store.Copy
}

// send adds a message of account with one queued copy per recipient and
// an attempts event per copy, at time at.
func send(t *testing.T, db store.DB, account, cred string, tags []string, at time.Time, rcpts ...string) sent {
	t.Helper()
	m := &store.Message{ID: db.NextID(), SpoolPath: fmt.Sprintf("spool-%d", time.Now().UnixNano()), Size: 100, From: "shop@example.com",
		Recipients: rcpts, Created: at, Remaining: len(rcpts), Credential: cred, Subject: "Subject " + account, HeaderFrom: "Shop <shop@example.com>", Tags: tags}
	var copies []*store.Copy
	var events []store.Event
	for _, r := range rcpts {
		c := &store.Copy{ID: db.NextID(), MessageID: m.ID, Account: account, Credential: cred, Recipient: r, Tags: tags,
			State: store.CopyQueued, Created: at, Clicks: true, Opens: true}
		copies = append(copies, c)
		events = append(events, store.Event{Log: store.LogAttempts, Account: account, ID: c.ID, Time: at, Recipient: r, Tags: tags,
			Fields: map[string]string{"envelope": "shop@example.com"}})
	}
	if err := db.AddMessage(ctx, m, copies, events); err != nil {
		t.Fatal(err)
	}
	return sent{m, copies}
}

// deliver marks c delivered at at, with its deliveries event.
func deliver(t *testing.T, db store.DB, c *store.Copy, at time.Time) bool {
	t.Helper()
	c.State, c.Attempts, c.Delivered = store.CopyDelivered, c.Attempts+1, at
	last, err := db.UpdateCopy(ctx, c, []store.Event{{Log: store.LogDeliveries, Account: c.Account, ID: c.ID, Time: at, Recipient: c.Recipient, Tags: c.Tags,
		Fields: map[string]string{"attempt": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func expect(t *testing.T, what string, got, want any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func testRecords(t *testing.T, db store.DB) {
	v0, err := db.RecordsVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acct := &store.Account{Name: "shop", Created: base, IP: store.KeepTruncated}
	if err := store.Create(ctx, db, acct); err != nil {
		t.Fatal(err)
	}
	if err := store.Create(ctx, db, acct); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	got, err := store.Get[store.Account](ctx, db, store.KindAccount, "shop")
	if err != nil || got.IP != store.KeepTruncated || !got.Created.Equal(base) {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := store.Get[store.Account](ctx, db, store.KindAccount, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	v1, _ := db.RecordsVersion(ctx)
	if v1 <= v0 {
		t.Fatalf("version %d after create, was %d", v1, v0)
	}
	for _, c := range []*store.Credential{{Username: "b-cred", Account: "shop"}, {Username: "a-cred", Account: "shop"}, {Username: "other", Account: "news"}} {
		if err := store.Create(ctx, db, c); err != nil {
			t.Fatal(err)
		}
	}
	names := func(account string) []string {
		cs, err := store.List[store.Credential](ctx, db, store.KindCredential, account)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.Username)
		}
		return out
	}
	expect(t, "all credentials, in key order", names(""), []string{"a-cred", "b-cred", "other"})
	expect(t, "shop's credentials", names("shop"), []string{"a-cred", "b-cred"})
	expect(t, "an account with none", names("nobody"), []string(nil))

	err = store.Update(ctx, db, store.KindCredential, "a-cred", false, func(c *store.Credential) (*store.Credential, error) {
		c.Clicks = true
		return c, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := store.Get[store.Credential](ctx, db, store.KindCredential, "a-cred")
	if !c.Clicks {
		t.Error("update lost")
	}
	// Moving a record to another account moves it in the listing.
	_ = store.Update(ctx, db, store.KindCredential, "a-cred", false, func(c *store.Credential) (*store.Credential, error) {
		c.Account = "news"
		return c, nil
	})
	expect(t, "after the move", names("news"), []string{"a-cred", "other"})
	err = store.Update(ctx, db, store.KindCredential, "missing", false, func(c *store.Credential) (*store.Credential, error) { return c, nil })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update missing: %v", err)
	}
	boom := errors.New("boom")
	v2, _ := db.RecordsVersion(ctx)
	err = store.Update(ctx, db, store.KindCredential, "b-cred", false, func(c *store.Credential) (*store.Credential, error) {
		c.Opens = true
		return c, boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("fn's error: %v", err)
	}
	if c, _ := store.Get[store.Credential](ctx, db, store.KindCredential, "b-cred"); c.Opens {
		t.Error("a failed update changed the record")
	}
	if v3, _ := db.RecordsVersion(ctx); v3 != v2 {
		t.Errorf("a failed update moved the version %d -> %d", v2, v3)
	}
	if err := store.Delete(ctx, db, store.KindCredential, "b-cred"); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, db, store.KindCredential, "b-cred"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}

	// Declared records: read-only at run time, synced from the config.
	decl := []store.Record{&store.Account{Name: "cfg1", Declared: true}, &store.Account{Name: "cfg2", Declared: true}}
	n, err := store.SyncDeclared(ctx, db, store.KindAccount, decl)
	if err != nil || n != 2 {
		t.Fatalf("sync: %d %v", n, err)
	}
	if n, err = store.SyncDeclared(ctx, db, store.KindAccount, decl); err != nil || n != 0 {
		t.Fatalf("sync again: %d changes, %v", n, err)
	}
	err = store.Update(ctx, db, store.KindAccount, "cfg1", false, func(a *store.Account) (*store.Account, error) { return a, nil })
	if !errors.Is(err, store.ErrDeclared) {
		t.Errorf("update declared: %v", err)
	}
	if err := store.Delete(ctx, db, store.KindAccount, "cfg1"); !errors.Is(err, store.ErrDeclared) {
		t.Errorf("delete declared: %v", err)
	}
	n, err = store.SyncDeclared(ctx, db, store.KindAccount, decl[1:])
	if err != nil || n != 1 {
		t.Fatalf("sync fewer: %d %v", n, err)
	}
	if _, err := db.GetRecord(ctx, store.KindAccount, "cfg1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a declared record gone from the config stayed: %v", err)
	}
	if _, err := db.GetRecord(ctx, store.KindAccount, "shop"); err != nil {
		t.Errorf("a run-time record went with the sync: %v", err)
	}
	raw, err := db.GetRecord(ctx, store.KindAccount, "cfg2")
	if err != nil || raw.Account != "cfg2" || raw.Kind != store.KindAccount || raw.Key != "cfg2" {
		t.Errorf("raw record %+v %v", raw, err)
	}
	if v4, _ := db.RecordsVersion(ctx); v4 <= v2 {
		t.Errorf("version did not grow: %d", v4)
	}
}

func testMessages(t *testing.T, db store.DB) {
	s := send(t, db, "shop", "cred", []string{"nov"}, base, "b@example.org", "c@example.org")
	if s.m.Account != "shop" || !slices.Equal(s.m.CopyIDs, []uint64{s.copies[0].ID, s.copies[1].ID}) {
		t.Fatalf("AddMessage did not fill account and copy ids: %+v", s.m)
	}
	bad := &store.Copy{ID: db.NextID(), MessageID: 12345, State: store.CopyQueued}
	if err := db.AddMessage(ctx, s.m, []*store.Copy{bad}, nil); err == nil {
		t.Error("a copy of another message was accepted")
	}
	notQueued := &store.Copy{ID: db.NextID(), MessageID: s.m.ID, State: store.CopyDelivered}
	if err := db.AddMessage(ctx, s.m, []*store.Copy{notQueued}, nil); err == nil {
		t.Error("a copy that is not queued was accepted")
	}
	m, err := db.Message(ctx, s.m.ID)
	if err != nil || m.Subject != "Subject shop" || m.Remaining != 2 || !slices.Equal(m.Recipients, s.m.Recipients) || !m.Created.Equal(base) {
		t.Fatalf("message %+v %v", m, err)
	}
	c, err := db.Copy(ctx, s.copies[1].ID)
	if err != nil || c.Recipient != "c@example.org" || c.State != store.CopyQueued || !c.Clicks || c.MessageID != s.m.ID {
		t.Fatalf("copy %+v %v", c, err)
	}
	if _, err := db.Copy(ctx, 424242); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown copy: %v", err)
	}
	if _, err := db.Message(ctx, 424242); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown message: %v", err)
	}
	queued := func() []uint64 {
		var ids []uint64
		if err := db.QueuedCopies(ctx, func(c *store.Copy) error { ids = append(ids, c.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	spool := func() []string {
		var names []string
		if err := db.SpoolFiles(ctx, func(n string) { names = append(names, n) }); err != nil {
			t.Fatal(err)
		}
		return names
	}
	expect(t, "queued", queued(), []uint64{s.copies[0].ID, s.copies[1].ID})
	expect(t, "spool files", spool(), []string{s.m.SpoolPath})
	c0 := s.copies[0]
	c0.Attempts, c0.NextAttempt, c0.LastReply = 1, base.Add(time.Minute), "451 later"
	if last, err := db.UpdateCopy(ctx, c0, []store.Event{{Log: store.LogFailures, Account: "shop", ID: c0.ID, Time: base.Add(time.Second), Fields: map[string]string{"type": "soft"}}}); err != nil || last {
		t.Fatalf("deferral: %v %v", last, err)
	}
	if got, _ := db.Copy(ctx, c0.ID); got.LastReply != "451 later" || got.Attempts != 1 || got.State != store.CopyQueued {
		t.Errorf("deferred copy %+v", got)
	}
	c0.State, c0.Delivered = store.CopyDelivered, time.Time{}
	if last, err := db.UpdateCopy(ctx, c0, nil); err != nil || last {
		t.Fatalf("first final: %v %v", last, err)
	}
	if got, _ := db.Copy(ctx, c0.ID); got.Delivered.IsZero() || got.State != store.CopyDelivered {
		t.Errorf("delivered copy has no delivery time: %+v", got)
	}
	// Recording a final copy again (a retried commit) changes nothing.
	c0.State, c0.LastReply = store.CopyFailed, "changed"
	if last, err := db.UpdateCopy(ctx, c0, []store.Event{{Log: store.LogFailures, Account: "shop", ID: c0.ID, Time: base}}); err != nil || last {
		t.Fatalf("repeat: %v %v", last, err)
	}
	if got, _ := db.Copy(ctx, c0.ID); got.State != store.CopyDelivered {
		t.Errorf("a final copy changed: %+v", got)
	}
	if n := len(collect(t, db.EventsByMessage(ctx, "shop", c0.ID))); n != 2 {
		t.Errorf("a final copy's repeat stored its events: %d events", n)
	}
	expect(t, "queued after one", queued(), []uint64{s.copies[1].ID})
	c1 := s.copies[1]
	c1.State = store.CopyFailed
	if last, err := db.UpdateCopy(ctx, c1, nil); err != nil || !last {
		t.Fatalf("last final: %v %v", last, err)
	}
	expect(t, "queued at the end", queued(), []uint64(nil))
	expect(t, "spool files at the end", spool(), []string(nil))
	if m, _ := db.Message(ctx, s.m.ID); m.Remaining != 0 {
		t.Errorf("remaining %d", m.Remaining)
	}
	// An unknown copy is left alone.
	if last, err := db.UpdateCopy(ctx, &store.Copy{ID: 777, MessageID: 1, State: store.CopyDelivered}, nil); err != nil || last {
		t.Errorf("unknown copy: %v %v", last, err)
	}
	if _, err := db.Copy(ctx, 777); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateCopy made an unknown copy: %v", err)
	}
	// Ids are unique and grow.
	prev := db.NextID()
	for range 1000 {
		id := db.NextID()
		if id <= prev {
			t.Fatalf("id %x after %x", id, prev)
		}
		prev = id
	}
}

func ev(log, account string, id uint64, at time.Time, rcpt string, fields map[string]string, tags ...string) store.Event {
	return store.Event{Log: log, Account: account, ID: id, Time: at, Recipient: rcpt, Fields: fields, Tags: tags}
}

func testEvents(t *testing.T, db store.DB) {
	e := func(log string, id uint64, at time.Time, rcpt string, tags ...string) store.Event {
		f := map[string]string{}
		switch log {
		case store.LogAttempts:
			f["envelope"] = "from@x"
		case store.LogDeliveries:
			f["to"] = "mx.example"
		case store.LogClicks:
			f["url"] = "https://example.com/a"
		}
		return ev(log, "shop", id, at, rcpt, f, tags...)
	}
	in := []store.Event{
		e(store.LogAttempts, 1, base.Add(2*time.Hour), "A@Example.org", "t1"),
		e(store.LogAttempts, 2, base.Add(time.Hour), "b@example.org", "t2"),
		e(store.LogDeliveries, 1, base.Add(3*time.Hour), "A@Example.org", "t1", "t2"),
		e(store.LogAttempts, 3, base.Add(time.Hour), "c@example.org"), // same time as #2: append order
		e(store.LogAttempts, 4, base.Add(26*time.Hour+time.Nanosecond), "a@example.org"),
		e(store.LogClicks, 1, base.Add(4*time.Hour), "a@example.org", "t1"),
		ev(store.LogAttempts, "news", 5, base, "a@example.org", nil),
	}
	if err := db.AppendEvents(ctx, in); err != nil {
		t.Fatal(err)
	}
	ids := func(es []store.Event) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	all := collect(t, db.Events(ctx, "shop", store.LogAttempts, time.Time{}, time.Time{}))
	expect(t, "attempts in time order, ties in append order", ids(all), []uint64{2, 3, 1, 4})
	got := all[3]
	if !got.Time.Equal(base.Add(26*time.Hour+time.Nanosecond)) || got.Time.Location() != time.UTC || got.Account != "shop" || got.Log != store.LogAttempts ||
		got.Fields["envelope"] != "from@x" || got.Recipient != "a@example.org" {
		t.Errorf("event read back as %+v", got)
	}
	expect(t, "[from, to)", ids(collect(t, db.Events(ctx, "shop", store.LogAttempts, base.Add(time.Hour), base.Add(2*time.Hour)))), []uint64{2, 3})
	expect(t, "from only", ids(collect(t, db.Events(ctx, "shop", store.LogAttempts, base.Add(2*time.Hour), time.Time{}))), []uint64{1, 4})
	expect(t, "another account's", ids(collect(t, db.Events(ctx, "news", store.LogAttempts, time.Time{}, time.Time{}))), []uint64{5})
	expect(t, "no account", len(collect(t, db.Events(ctx, "", store.LogAttempts, time.Time{}, time.Time{}))), 0)
	n := 0
	for _, err := range db.Events(ctx, "shop", "nope", time.Time{}, time.Time{}) {
		if err == nil {
			t.Error("an unknown log yielded an event")
		}
		n++
	}
	if n != 1 {
		t.Errorf("unknown log: %d yields", n)
	}
	// Stop early.
	n = 0
	for range db.Events(ctx, "shop", store.LogAttempts, time.Time{}, time.Time{}) {
		n++
		break
	}
	expect(t, "break", n, 1)

	byMsg := collect(t, db.EventsByMessage(ctx, "shop", 1))
	var logs []string
	for _, e := range byMsg {
		logs = append(logs, e.Log)
	}
	expect(t, "by message, across logs", logs, []string{store.LogAttempts, store.LogDeliveries, store.LogClicks})
	if d := byMsg[2].Fields["destination"]; d != "https://example.com/a" {
		t.Errorf("a click's destination defaults to its url: %q", d)
	}
	expect(t, "by message of another account", len(collect(t, db.EventsByMessage(ctx, "news", 1))), 0)
	expect(t, "by recipient, any case", ids(collect(t, db.EventsByRecipient(ctx, "shop", "a@EXAMPLE.org", time.Time{}, time.Time{}))), []uint64{1, 1, 1, 4})
	expect(t, "by recipient in a range", ids(collect(t, db.EventsByRecipient(ctx, "shop", "a@example.org", base.Add(3*time.Hour), base.Add(26*time.Hour)))), []uint64{1, 1})
	expect(t, "by tag", ids(collect(t, db.EventsByTag(ctx, "shop", "t2", time.Time{}, time.Time{}))), []uint64{2, 1})
	expect(t, "by tag in a range", ids(collect(t, db.EventsByTag(ctx, "shop", "t1", base.Add(3*time.Hour), time.Time{}))), []uint64{1, 1})
	expect(t, "by tag, no such tag", len(collect(t, db.EventsByTag(ctx, "shop", "t", time.Time{}, time.Time{}))), 0)

	days, err := db.EventDays(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	d0, d1 := base.Format(time.DateOnly), base.Add(26*time.Hour).Format(time.DateOnly)
	want := []store.DayLog{{Day: d0, Log: store.LogAttempts, Count: 3}, {Day: d0, Log: store.LogClicks, Count: 1}, {Day: d0, Log: store.LogDeliveries, Count: 1}, {Day: d1, Log: store.LogAttempts, Count: 1}}
	if base.Add(4*time.Hour).Format(time.DateOnly) != d0 { // near midnight: the suite's hours cross a day
		want = nil
	}
	if want != nil {
		expect(t, "event days", days, want)
	}
	if days, _ := db.EventDays(ctx, ""); len(days) != 0 {
		t.Errorf("event days of no account: %v", days)
	}

	// Idempotent by Key: across calls and within one batch.
	k := func(key string, id uint64) store.Event {
		e := e(store.LogDeliveries, id, base.Add(5*time.Hour), "k@example.org")
		e.Key = key
		return e
	}
	if err := db.AppendEvents(ctx, []store.Event{k("one", 10), k("one", 11), k("two", 12)}); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendEvents(ctx, []store.Event{k("two", 13), k("three", 14)}); err != nil {
		t.Fatal(err)
	}
	keyed := collect(t, db.EventsByRecipient(ctx, "shop", "k@example.org", time.Time{}, time.Time{}))
	expect(t, "keyed events", ids(keyed), []uint64{10, 12, 14})
	if keyed[0].Key != "one" {
		t.Errorf("key read back as %q", keyed[0].Key)
	}
	// The same key in another log or account is another event.
	other := k("one", 15)
	other.Log, other.Fields = store.LogAttempts, nil
	if err := db.AppendEvents(ctx, []store.Event{other}); err != nil {
		t.Fatal(err)
	}
	expect(t, "the same key in another log", len(collect(t, db.EventsByRecipient(ctx, "shop", "k@example.org", time.Time{}, time.Time{}))), 4)

	// Invalid UTF-8 is mended, and the caller's values are not changed.
	bad := ev(store.LogClicks, "shop", 20, base.Add(6*time.Hour), "u\xffu@example.org", map[string]string{"url": "https://x/\xfe", "headers": "{}"}, "t\xff")
	if err := db.AppendEvents(ctx, []store.Event{bad}); err != nil {
		t.Fatal(err)
	}
	if bad.Fields["url"] != "https://x/\xfe" || bad.Tags[0] != "t\xff" {
		t.Error("AppendEvents changed the caller's event")
	}
	mended := collect(t, db.EventsByMessage(ctx, "shop", 20))
	if len(mended) != 1 || mended[0].Recipient != "u\uFFFDu@example.org" || mended[0].Fields["url"] != "https://x/\uFFFD" || mended[0].Tags[0] != "t\uFFFD" {
		t.Errorf("mended event %+v", mended)
	}
	expect(t, "found by its mended tag", len(collect(t, db.EventsByTag(ctx, "shop", "t\uFFFD", time.Time{}, time.Time{}))), 1)
}

func testEventValidation(t *testing.T, db store.DB) {
	ok := ev(store.LogAttempts, "shop", 1, base, "a@x", nil)
	for name, e := range map[string]store.Event{
		"unknown log":          ev("nope", "shop", 1, base, "", nil),
		"no account":           ev(store.LogAttempts, "", 1, base, "", nil),
		"no time":              ev(store.LogAttempts, "shop", 1, time.Time{}, "", nil),
		"before 1970":          ev(store.LogAttempts, "shop", 1, time.Unix(-10, 0), "", nil),
		"unknown field":        ev(store.LogAttempts, "shop", 1, base, "", map[string]string{"url": "x"}),
		"id as a field":        ev(store.LogAttempts, "shop", 1, base, "", map[string]string{"id": "x"}),
		"empty tag":            ev(store.LogAttempts, "shop", 1, base, "", nil, ""),
		"NUL in a tag":         ev(store.LogAttempts, "shop", 1, base, "", nil, "a\x00b"),
		"long tag":             ev(store.LogAttempts, "shop", 1, base, "", nil, strings.Repeat("t", 257)),
		"NUL in the recipient": ev(store.LogAttempts, "shop", 1, base, "a\x00@x", nil),
		"long recipient":       ev(store.LogAttempts, "shop", 1, base, strings.Repeat("r", 1025), nil),
	} {
		if err := db.AppendEvents(ctx, []store.Event{ok, e}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A refused batch stores nothing.
	if n := len(collect(t, db.Events(ctx, "shop", store.LogAttempts, time.Time{}, time.Time{}))); n != 0 {
		t.Errorf("refused batches stored %d events", n)
	}
	if err := db.AppendEvents(ctx, nil); err != nil {
		t.Errorf("an empty batch: %v", err)
	}
}

func testEventPaging(t *testing.T, db store.DB) {
	// More events than one read chunk, several at the same time.
	const n = 1300
	var in []store.Event
	for i := range n {
		in = append(in, ev(store.LogOpens, "shop", uint64(i+1), base.Add(time.Duration(i/3)*time.Millisecond), "p@x", map[string]string{"ip": "192.0.2.1"}, "pg"))
	}
	if err := db.AppendEvents(ctx, in); err != nil {
		t.Fatal(err)
	}
	for name, seq := range map[string]iter.Seq2[store.Event, error]{
		"log":       db.Events(ctx, "shop", store.LogOpens, time.Time{}, time.Time{}),
		"recipient": db.EventsByRecipient(ctx, "shop", "p@x", time.Time{}, time.Time{}),
		"tag":       db.EventsByTag(ctx, "shop", "pg", time.Time{}, time.Time{}),
	} {
		got := collect(t, seq)
		if len(got) != n {
			t.Errorf("%s: %d events, want %d", name, len(got), n)
			continue
		}
		for i, e := range got {
			if e.ID != uint64(i+1) {
				t.Errorf("%s: event %d has id %d", name, i, e.ID)
				break
			}
		}
	}
}

// linked sends one message with links recorded at positions 1 and 2.
func linked(t *testing.T, db store.DB, account string, tags []string, rcpts ...string) sent {
	t.Helper()
	s := send(t, db, account, "cred-"+account, tags, base, rcpts...)
	if err := db.PutMessageLinks(ctx, s.m.ID, []store.MessageLink{{Position: 1, URL: "https://shop.example/a?x=1"}, {Position: 2, URL: "https://shop.example/b"}}); err != nil {
		t.Fatal(err)
	}
	// Recording them again changes nothing.
	if err := db.PutMessageLinks(ctx, s.m.ID, []store.MessageLink{{Position: 1, URL: "https://other.example/"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func hit(id string, kind string, c *store.Copy, pos uint32, url string, at time.Time) store.Hit {
	return store.Hit{ID: id, Time: at, Kind: kind, MessageID: c.ID, Position: pos, URL: url, IP: "192.0.2.77", UserAgent: "Mozilla/5.0 (X11; Linux) Firefox/120", Protocol: "HTTP/1.1"}
}

func testHits(t *testing.T, db store.DB) {
	s := linked(t, db, "shop", []string{"nov"}, "Anna@example.org", "ben@example.org")
	c0, c1 := s.copies[0], s.copies[1]
	if ok, err := db.HasMessageLinks(ctx, s.m.ID); err != nil || !ok {
		t.Fatalf("HasMessageLinks: %v %v", ok, err)
	}
	if ok, _ := db.HasMessageLinks(ctx, 999); ok {
		t.Error("HasMessageLinks of an unknown message")
	}
	at := base.Add(time.Hour)
	machine := hit("h02", "image", c0, 0, "https://cdn.example/i.png", at.Add(time.Second))
	machine.Machine = true
	head := hit("h05", "click", c0, 2, "https://shop.example/b", at.Add(4*time.Second))
	head.Head = true
	hits := []store.Hit{
		hit("h01", "pixel", c0, 0, "", at),
		machine,
		hit("h03", "click", c0, 1, "https://shop.example/a?x=1", at.Add(2*time.Second)),
		hit("h04", "click", c0, 1, "https://shop.example/a?x=2", at.Add(3*time.Second)), // altered by the reader
		head,
		hit("h06", "click", &store.Copy{ID: 12345}, 1, "https://orphan.example/", at),
		hit("h07", "click", c1, 2, "https://shop.example/b#frag", at.Add(5*time.Second)),
		hit("h08", "pixel", c1, 0, "", at.Add(6*time.Second)),
		hit("h08", "pixel", c1, 0, "", at.Add(6*time.Second)), // twice in one batch
	}
	// Sent several times, concurrently: each hit is stored once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.IngestHits(ctx, hits); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := db.IngestHits(ctx, hits[:3]); err != nil {
		t.Fatal(err)
	}
	if err := db.IngestHits(ctx, []store.Hit{{ID: "", Kind: "click"}}); err == nil {
		t.Error("a hit without an id was accepted")
	}
	if err := db.IngestHits(ctx, []store.Hit{{ID: strings.Repeat("x", 256), Kind: "click"}}); err == nil {
		t.Error("a hit with a 256-byte id was accepted")
	}
	hc, err := db.HitCounts(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	want := store.HitCounts{Opens: 2, UniqueOpens: 2, MachineOpens: 1, Clicks: 3, UniqueClicks: 2, MachineClicks: 1}
	if hc != want {
		t.Errorf("hit counts %+v, want %+v", hc, want)
	}
	if o, _ := db.HitCounts(ctx, ""); o.Orphans != 1 {
		t.Errorf("orphans %+v", o)
	}
	clicks := collect(t, db.Events(ctx, "shop", store.LogClicks, time.Time{}, time.Time{}))
	opens := collect(t, db.Events(ctx, "shop", store.LogOpens, time.Time{}, time.Time{}))
	if len(clicks) != 4 || len(opens) != 3 {
		t.Fatalf("%d clicks and %d opens stored, want 4 and 3", len(clicks), len(opens))
	}
	cl := clicks[1] // h04
	if cl.Fields["url"] != "https://shop.example/a?x=1" || cl.Fields["destination"] != "https://shop.example/a?x=2" || cl.Fields["altered"] != "true" ||
		cl.Recipient != "Anna@example.org" || !slices.Equal(cl.Tags, []string{"nov"}) || cl.ID != c0.ID || cl.Key != "h04" || cl.Fields["machine"] != "false" {
		t.Errorf("altered click %+v", cl)
	}
	if c := clicks[0]; c.Fields["altered"] != "false" || c.Fields["destination"] != c.Fields["url"] {
		t.Errorf("plain click %+v", c)
	}
	if c := clicks[3]; c.Fields["altered"] != "false" || c.Fields["url"] != "https://shop.example/b" {
		t.Errorf("a fragment is not an alteration: %+v", c)
	}
	if c := clicks[2]; c.Fields["machine"] != "true" {
		t.Errorf("a HEAD request is a machine hit: %+v", c)
	}
	if o := opens[1]; o.Fields["machine"] != "true" || o.Fields["protocol"] != "HTTP/1.1" || o.Fields["ip"] != "192.0.2.77" ||
		!strings.Contains(o.Fields["headers"], "Firefox") {
		t.Errorf("machine open %+v", o)
	}
	mc := must(db.MessageCounters(ctx, s.m.ID))
	if mc[store.Clicks] != 3 || mc[store.UniqueClicks] != 2 || mc[store.Opens] != 2 || mc[store.UniqueOpens] != 2 || mc[store.Accepted] != 2 {
		t.Errorf("message counters %v", mc.Map())
	}
	// Links are reported by their recorded URL; unique per copy and link.
	ml, err := db.MessageLinks(ctx, s.m.ID)
	if err != nil || len(ml) != 2 {
		t.Fatalf("message links %+v %v", ml, err)
	}
	if ml[0].URL != "https://shop.example/a?x=1" || *ml[0].Position != 1 || ml[0].Clicks != 2 || ml[0].UniqueClicks != 1 || ml[0].ID != store.LinkID(ml[0].URL) ||
		!ml[0].First.Equal(at.Add(2*time.Second)) || !ml[0].Last.Equal(at.Add(3*time.Second)) {
		t.Errorf("link 1 %+v", ml[0])
	}
	if ml[1].Clicks != 1 || ml[1].UniqueClicks != 1 || ml[1].MachineClicks != 1 {
		t.Errorf("link 2 %+v", ml[1])
	}
	// A later batch: not unique any more.
	if err := db.IngestHits(ctx, []store.Hit{hit("h09", "pixel", c0, 0, "", at.Add(time.Hour)), hit("h10", "click", c0, 1, "https://shop.example/a?x=1", at.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	hc, _ = db.HitCounts(ctx, "shop")
	if hc.Opens != 3 || hc.UniqueOpens != 2 || hc.Clicks != 4 || hc.UniqueClicks != 2 {
		t.Errorf("after more hits of the same copies %+v", hc)
	}
	// A click on a copy of a message with no recorded links is reported
	// by the URL it went to, and never "altered".
	plain := send(t, db, "shop", "cred", nil, base, "z@example.org")
	if err := db.IngestHits(ctx, []store.Hit{hit("h11", "click", plain.copies[0], 4, "https://plain.example/x", at)}); err != nil {
		t.Fatal(err)
	}
	pc := collect(t, db.EventsByMessage(ctx, "shop", plain.copies[0].ID))
	if len(pc) != 2 || pc[1].Fields["url"] != "https://plain.example/x" || pc[1].Fields["altered"] != "false" {
		t.Errorf("click without recorded links %+v", pc)
	}
}

func testHitPrivacy(t *testing.T, db store.DB) {
	for _, a := range []*store.Account{
		{Name: "trunc", IP: store.KeepTruncated, UserAgent: store.KeepClass},
		{Name: "none", IP: store.KeepNone},
		{Name: "full"},
	} {
		if err := store.Create(ctx, db, a); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range []struct{ account, ip, wantIP, wantUA string }{
		{"trunc", "192.0.2.77", "192.0.2.0", store.UABrowser},
		{"trunc", "2001:db8:1:2:3::4", "2001:db8:1::", store.UABrowser},
		{"none", "192.0.2.77", "", "Mozilla/5.0 (X11; Linux) Firefox/120"},
		{"full", "192.0.2.77", "192.0.2.77", "Mozilla/5.0 (X11; Linux) Firefox/120"},
	} {
		s := send(t, db, tc.account, "", nil, base, "p@example.org")
		h := hit(fmt.Sprintf("priv%d", i), "pixel", s.copies[0], 0, "", base.Add(time.Minute))
		h.IP = tc.ip
		if err := db.IngestHits(ctx, []store.Hit{h}); err != nil {
			t.Fatal(err)
		}
		es := collect(t, db.Events(ctx, tc.account, store.LogOpens, time.Time{}, time.Time{}))
		got := es[len(es)-1]
		if got.Fields["ip"] != tc.wantIP || !strings.Contains(got.Fields["headers"], tc.wantUA) {
			t.Errorf("%s %s: ip %q, headers %s", tc.account, tc.ip, got.Fields["ip"], got.Fields["headers"])
		}
		if tc.account == "trunc" && strings.Contains(got.Fields["headers"], "Firefox") {
			t.Errorf("the user agent class kept the user agent: %s", got.Fields["headers"])
		}
	}
}

func testAggregates(t *testing.T, db store.DB) {
	h0 := base
	a := send(t, db, "shop", "alpha", []string{"nov", "promo"}, h0, "a1@x", "a2@x", "a3@x")
	b := send(t, db, "shop", "beta", []string{"dec"}, h0.Add(25*time.Hour), "b1@x")
	n := send(t, db, "news", "gamma", nil, h0.Add(time.Hour), "n1@x")
	deliver(t, db, a.copies[0], h0.Add(10*time.Minute))
	deliver(t, db, a.copies[1], h0.Add(70*time.Minute))
	a.copies[2].State, a.copies[2].Attempts = store.CopyFailed, 1
	if _, err := db.UpdateCopy(ctx, a.copies[2], []store.Event{ev(store.LogFailures, "shop", a.copies[2].ID, h0.Add(80*time.Minute), "a3@x", map[string]string{"type": "hard"})}); err != nil {
		t.Fatal(err)
	}
	deliver(t, db, b.copies[0], h0.Add(25*time.Hour+time.Minute))
	deliver(t, db, n.copies[0], h0.Add(time.Hour+time.Minute))
	if err := db.AppendEvents(ctx, []store.Event{ev(store.LogFailures, "shop", b.copies[0].ID, h0.Add(25*time.Hour), "b1@x", map[string]string{"type": "soft"})}); err != nil {
		t.Fatal(err)
	}

	pts, total, err := db.Series(ctx, "shop", "", h0, h0.Add(3*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 3 || !pts[0].Start.Equal(h0) || !pts[2].Start.Equal(h0.Add(2*time.Hour)) {
		t.Fatalf("hourly points %+v", pts)
	}
	expect(t, "hour 0 accepted", pts[0].Counters[store.Accepted], 3)
	expect(t, "hour 0 delivered", pts[0].Counters[store.Delivered], 1)
	expect(t, "hour 1 delivered", pts[1].Counters[store.Delivered], 1)
	expect(t, "hour 1 failed", pts[1].Counters[store.Failed], 1)
	expect(t, "total delivered", total[store.Delivered], 2)
	// Ranges round out to whole steps.
	pts, total, _ = db.Series(ctx, "shop", "", h0.Add(30*time.Minute), h0.Add(90*time.Minute), time.Hour)
	expect(t, "rounded range", len(pts), 2)
	expect(t, "rounded total accepted", total[store.Accepted], 3)
	day0 := h0.Truncate(24 * time.Hour)
	pts, total, _ = db.Series(ctx, "shop", "", day0, day0.Add(72*time.Hour), 24*time.Hour)
	if len(pts) != 3 {
		t.Fatalf("daily points %d", len(pts))
	}
	expect(t, "daily total accepted", total[store.Accepted], 4)
	expect(t, "daily total deferred", total[store.Deferred], 1)
	var sum uint64
	for _, p := range pts {
		sum += p.Counters[store.Accepted]
	}
	expect(t, "days add up", sum, 4)
	_, tag, _ := db.Series(ctx, "shop", store.DimTag("promo"), day0, day0.Add(72*time.Hour), 24*time.Hour)
	expect(t, "tag promo accepted", tag[store.Accepted], 3)
	expect(t, "tag promo delivered", tag[store.Delivered], 2)
	_, tag, _ = db.Series(ctx, "shop", store.DimTag("dec"), day0, day0.Add(72*time.Hour), 24*time.Hour)
	expect(t, "tag dec accepted", tag[store.Accepted], 1)
	_, cred, _ := db.Series(ctx, "shop", store.DimCredential("beta"), day0, day0.Add(72*time.Hour), 24*time.Hour)
	expect(t, "credential beta delivered", cred[store.Delivered], 1)
	_, cred, _ = db.Series(ctx, "shop", store.DimCredential("gamma"), day0, day0.Add(72*time.Hour), 24*time.Hour)
	expect(t, "another account's credential", cred[store.Accepted], 0)
	_, all, _ := db.Series(ctx, store.AllAccounts, "", day0, day0.Add(72*time.Hour), 24*time.Hour)
	expect(t, "all accounts accepted", all[store.Accepted], 5)
	expect(t, "all accounts delivered", all[store.Delivered], 4)
	if _, _, err := db.Series(ctx, "shop", "", h0, h0.Add(time.Hour), time.Minute); err == nil {
		t.Error("a one-minute step was accepted")
	}
	if _, _, err := db.Series(ctx, "shop", "", h0, h0.Add(20*365*24*time.Hour), time.Hour); err == nil {
		t.Error("20 years of hours were accepted")
	}
	if pts, _, err := db.Series(ctx, "shop", "", h0, h0, time.Hour); err != nil || len(pts) != 0 {
		t.Errorf("an empty range: %v %v", pts, err)
	}
	tot := must(db.Totals(ctx, "shop"))
	if tot[store.Accepted] != 4 || tot[store.Delivered] != 3 || tot[store.Failed] != 1 || tot[store.Deferred] != 1 {
		t.Errorf("shop totals %v", tot.Map())
	}
	tot = must(db.Totals(ctx, store.AllAccounts))
	expect(t, "all totals accepted", tot[store.Accepted], 5)
	mc := must(db.MessageCounters(ctx, a.m.ID))
	if mc[store.Accepted] != 3 || mc[store.Delivered] != 2 || mc[store.Failed] != 1 {
		t.Errorf("message counters %v", mc.Map())
	}
	if mc := must(db.MessageCounters(ctx, 4242)); mc != (store.Counters{}) {
		t.Errorf("unknown message counters %v", mc.Map())
	}
	// Bounces, complaints, responses and suppressed copies have their own
	// counters; DMARC rows feed none.
	if err := db.AppendEvents(ctx, []store.Event{
		ev(store.LogBounces, "news", n.copies[0].ID, h0.Add(2*time.Hour), "n1@x", map[string]string{"type": "soft"}),
		ev(store.LogBounces, "news", n.copies[0].ID, h0.Add(2*time.Hour), "n1@x", map[string]string{"type": "delayed"}),
		ev(store.LogComplaints, "news", n.copies[0].ID, h0.Add(2*time.Hour), "n1@x", nil),
		ev(store.LogResponses, "news", n.copies[0].ID, h0.Add(2*time.Hour), "", map[string]string{"kind": "reply"}),
		ev(store.LogFailures, "news", 0, h0.Add(2*time.Hour), "s@x", map[string]string{"type": "suppressed"}),
		ev(store.LogDMARC, "news", 0, h0.Add(2*time.Hour), "", map[string]string{"count": "4"}),
	}); err != nil {
		t.Fatal(err)
	}
	tot = must(db.Totals(ctx, "news"))
	if tot[store.BouncedSoft] != 1 || tot[store.Delayed] != 1 || tot[store.Complained] != 1 || tot[store.Responded] != 1 || tot[store.Suppressed] != 1 || tot[store.Failed] != 0 {
		t.Errorf("news totals %v", tot.Map())
	}
}

func testLinks(t *testing.T, db store.DB) {
	at := base.Add(2 * time.Hour)
	m1 := linked(t, db, "shop", []string{"t1"}, "a@x", "b@x", "c@x")
	m2 := linked(t, db, "shop", []string{"t2"}, "d@x")
	for _, c := range m1.copies {
		deliver(t, db, c, base.Add(time.Minute))
	}
	deliver(t, db, m2.copies[0], base.Add(time.Minute))
	a, b := "https://shop.example/a?x=1", "https://shop.example/b"
	hits := []store.Hit{
		hit("l1", "click", m1.copies[0], 1, a, at),
		hit("l2", "click", m1.copies[1], 1, a, at.Add(time.Second)),
		hit("l3", "click", m1.copies[1], 1, a, at.Add(2*time.Second)),
		hit("l4", "click", m1.copies[2], 2, b, at.Add(24*time.Hour)),
		hit("l5", "click", m2.copies[0], 2, b, at.Add(3*time.Second)),
		hit("l6", "click", m2.copies[0], 1, a, at.Add(4*time.Second)),
	}
	scan := hit("l7", "click", m1.copies[0], 2, b, at)
	scan.Machine = true
	hits = append(hits, scan)
	if err := db.IngestHits(ctx, hits); err != nil {
		t.Fatal(err)
	}
	day0 := base.Truncate(24 * time.Hour)
	top, err := db.TopLinks(ctx, "shop", "", day0, day0.Add(72*time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 2 {
		t.Fatalf("top links %+v", top)
	}
	if top[0].URL != a || top[0].UniqueClicks != 3 || top[0].Clicks != 4 || top[0].Delivered != 4 || top[0].ID != store.LinkID(a) ||
		!top[0].First.Equal(at) || !top[0].Last.Equal(at.Add(4*time.Second)) {
		t.Errorf("top link %+v", top[0])
	}
	if top[1].URL != b || top[1].UniqueClicks != 2 || top[1].Clicks != 2 || top[1].MachineClicks != 1 || top[1].Delivered != 4 {
		t.Errorf("second link %+v", top[1])
	}
	if top, _ := db.TopLinks(ctx, "shop", "", day0, day0.Add(72*time.Hour), 1); len(top) != 1 || top[0].URL != a {
		t.Errorf("limit 1: %+v", top)
	}
	// One day only: b's second day is left out.
	if top, _ := db.TopLinks(ctx, "shop", "", at, at.Add(time.Minute), 10); len(top) != 2 || top[1].Clicks != 1 {
		t.Errorf("one day: %+v", top)
	}
	// Delivered counts the copies that carried the link in the dimension
	// and on the days asked for: t2's one copy, and none on the second day.
	if top, _ := db.TopLinks(ctx, "shop", store.DimTag("t2"), day0, day0.Add(72*time.Hour), 10); len(top) != 2 || top[0].Clicks != 1 || top[1].Clicks != 1 ||
		top[0].Delivered != 1 || top[1].Delivered != 1 {
		t.Errorf("tag t2: %+v", top)
	}
	if top, _ := db.TopLinks(ctx, "shop", "", day0.Add(24*time.Hour), day0.Add(24*time.Hour+time.Minute), 10); len(top) != 1 || top[0].URL != b || top[0].Delivered != 0 {
		t.Errorf("the second day: %+v", top)
	}
	if top, _ := db.TopLinks(ctx, store.AllAccounts, "", day0, day0.Add(72*time.Hour), 10); len(top) != 2 || top[0].Delivered != 4 {
		t.Errorf("all accounts' delivered: %+v", top)
	}
	if top, _ := db.TopLinks(ctx, "shop", store.DimCredential("cred-shop"), day0, day0.Add(72*time.Hour), 10); len(top) != 2 {
		t.Errorf("credential: %+v", top)
	}
	if top, _ := db.TopLinks(ctx, store.AllAccounts, "", day0, day0.Add(72*time.Hour), 10); len(top) != 2 || top[0].Clicks != 4 {
		t.Errorf("all accounts: %+v", top)
	}
	if top, _ := db.TopLinks(ctx, "news", "", day0, day0.Add(72*time.Hour), 10); len(top) != 0 {
		t.Errorf("another account: %+v", top)
	}
	url, days, err := db.LinkSeries(ctx, "shop", "", store.LinkID(b), day0, day0.Add(72*time.Hour))
	if err != nil || url != b || len(days) != 3 {
		t.Fatalf("link series %q %+v %v", url, days, err)
	}
	d := int(at.Sub(day0) / (24 * time.Hour))
	if days[d].Clicks != 1 || days[d].MachineClicks != 1 || days[d+1].Clicks != 1 || !days[0].Day.Equal(day0) {
		t.Errorf("link days %+v", days)
	}
	if _, _, err := db.LinkSeries(ctx, "shop", "", "nothex", day0, day0); err == nil {
		t.Error("a bad link id was accepted")
	}
	msgs, err := db.LinkMessages(ctx, "shop", store.LinkID(a), 0)
	expect(t, "link messages, newest first", msgs, []uint64{m2.m.ID, m1.m.ID})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ = db.LinkMessages(ctx, "shop", store.LinkID(a), 1)
	expect(t, "link messages, limit", msgs, []uint64{m2.m.ID})
	if _, err := db.LinkMessages(ctx, "shop", "zz", 1); err == nil {
		t.Error("LinkMessages took a bad id")
	}
	ml, err := db.MessageLinks(ctx, m1.m.ID)
	if err != nil || len(ml) != 2 || ml[0].Delivered != 3 || ml[0].UniqueClicks != 2 || ml[1].UniqueClicks != 1 || ml[1].MachineClicks != 1 {
		t.Errorf("message links %+v %v", ml, err)
	}
	if ml, _ := db.MessageLinks(ctx, 999); len(ml) != 0 {
		t.Errorf("links of an unknown message: %+v", ml)
	}
	// A click appended by hand, without a position, counts by its URL.
	if err := db.AppendEvents(ctx, []store.Event{{Log: store.LogClicks, Account: "shop", ID: m1.copies[2].ID, Time: at, Fields: map[string]string{"url": a}}}); err != nil {
		t.Fatal(err)
	}
	top, _ = db.TopLinks(ctx, "shop", "", day0, day0.Add(72*time.Hour), 10)
	if top[0].Clicks != 5 || top[0].UniqueClicks != 4 {
		t.Errorf("a click by URL: %+v", top[0])
	}
}

func testAddressLists(t *testing.T, db store.DB) {
	add := func(list, account, addr string) bool {
		t.Helper()
		ok, err := db.AddAddress(ctx, store.AddressEntry{List: list, Account: account, Address: addr, Reason: store.ReasonManual, Detail: "by hand"})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	expect(t, "add", add(store.ListSuppressed, "shop", " Anna@Example.org "), true)
	expect(t, "add again", add(store.ListSuppressed, "shop", "anna@example.org"), false)
	for _, a := range []string{"zed@example.org", "bob@example.net", "carl@example.org"} {
		add(store.ListSuppressed, "shop", a)
	}
	add(store.ListNoTrack, "shop", "dora@example.org")
	add(store.ListSuppressed, "news", "eve@example.org")
	if _, err := db.AddAddress(ctx, store.AddressEntry{List: "nope", Account: "shop", Address: "a@x"}); err == nil {
		t.Error("unknown list accepted")
	}
	if _, err := db.AddAddress(ctx, store.AddressEntry{List: store.ListSuppressed, Account: "", Address: "a@x"}); err == nil {
		t.Error("entry without account accepted")
	}
	if _, err := db.AddAddress(ctx, store.AddressEntry{List: store.ListSuppressed, Account: "shop", Address: " "}); err == nil {
		t.Error("entry without address accepted")
	}
	got, err := db.LookupAddresses(ctx, store.ListSuppressed, "shop", []string{"ANNA@example.org", "dora@example.org", "eve@example.org", "nobody@x"})
	if err != nil || len(got) != 1 || got["anna@example.org"] == nil || got["anna@example.org"].Reason != store.ReasonManual || got["anna@example.org"].Created.IsZero() {
		t.Fatalf("lookup %+v %v", got, err)
	}
	list := func(contains, after string, limit int) []string {
		es, err := db.ListAddresses(ctx, store.ListSuppressed, "shop", contains, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Address)
		}
		return out
	}
	expect(t, "list all", list("", "", 0), []string{"anna@example.org", "bob@example.net", "carl@example.org", "zed@example.org"})
	expect(t, "list contains", list(".ORG", "", 0), []string{"anna@example.org", "carl@example.org", "zed@example.org"})
	expect(t, "list after", list("", "bob@example.net", 0), []string{"carl@example.org", "zed@example.org"})
	expect(t, "list limit", list("", "", 2), []string{"anna@example.org", "bob@example.net"})
	ok, err := db.RemoveAddress(ctx, store.ListSuppressed, "shop", "Bob@Example.net")
	if err != nil || !ok {
		t.Errorf("remove: %v %v", ok, err)
	}
	if ok, _ := db.RemoveAddress(ctx, store.ListSuppressed, "shop", "bob@example.net"); ok {
		t.Error("removed twice")
	}
	if ok, _ := db.RemoveAddress(ctx, store.ListSuppressed, "news", "anna@example.org"); ok {
		t.Error("removed from another account")
	}
	if _, err := db.RemoveAddress(ctx, "nope", "shop", "a@x"); err == nil {
		t.Error("remove from unknown list")
	}
	if _, err := db.LookupAddresses(ctx, "nope", "shop", nil); err == nil {
		t.Error("lookup in unknown list")
	}
	expect(t, "no-track list", len(must(db.ListAddresses(ctx, store.ListNoTrack, "shop", "", "", 0))), 1)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func testReturned(t *testing.T, db store.DB) {
	s := send(t, db, "shop", "alpha", []string{"nov"}, base, "hard@x", "soft@x", "queued@x")
	deliver(t, db, s.copies[0], base.Add(2*time.Hour+time.Minute))
	deliver(t, db, s.copies[1], base.Add(2*time.Hour+2*time.Minute))
	bounce := ev(store.LogBounces, "shop", s.copies[0].ID, base.Add(5*time.Hour), "hard@x", map[string]string{"type": "hard", "status": "5.1.1"}, "nov")
	complaint := ev(store.LogComplaints, "shop", s.copies[1].ID, base.Add(5*time.Hour), "soft@x", map[string]string{"feedbacktype": "abuse"}, "nov")
	entries := []store.AddressEntry{
		{List: store.ListSuppressed, Account: "shop", Address: "Hard@X", Reason: store.ReasonHardBounce, Copy: s.copies[0].ID},
		{List: store.ListSuppressed, Account: "shop", Address: "soft@x", Reason: store.ReasonComplaint},
	}
	// The queued copy and an unknown id are left alone; a copy named twice counts once.
	if err := db.RecordReturned(ctx, []store.Event{bounce, complaint}, []uint64{s.copies[0].ID, s.copies[0].ID, s.copies[2].ID, 4242}, entries); err != nil {
		t.Fatal(err)
	}
	if c, _ := db.Copy(ctx, s.copies[0].ID); c.State != store.CopyBounced {
		t.Errorf("bounced copy is %s", c.State)
	}
	if c, _ := db.Copy(ctx, s.copies[2].ID); c.State != store.CopyQueued {
		t.Errorf("queued copy is %s", c.State)
	}
	// Delivered goes down in the hour of the delivery, everywhere.
	pts, total, _ := db.Series(ctx, "shop", "", base, base.Add(6*time.Hour), time.Hour)
	expect(t, "delivered in the delivery hour", pts[2].Counters[store.Delivered], 1)
	expect(t, "delivered in all", total[store.Delivered], 1)
	expect(t, "hard bounces", total[store.BouncedHard], 1)
	expect(t, "complaints", total[store.Complained], 1)
	_, tag, _ := db.Series(ctx, "shop", store.DimTag("nov"), base, base.Add(6*time.Hour), time.Hour)
	expect(t, "delivered in the tag", tag[store.Delivered], 1)
	_, cred, _ := db.Series(ctx, "shop", store.DimCredential("alpha"), base, base.Add(6*time.Hour), time.Hour)
	expect(t, "delivered for the credential", cred[store.Delivered], 1)
	expect(t, "message delivered", must(db.MessageCounters(ctx, s.m.ID))[store.Delivered], 1)
	expect(t, "totals delivered", must(db.Totals(ctx, "shop"))[store.Delivered], 1)
	expect(t, "all accounts delivered", must(db.Totals(ctx, store.AllAccounts))[store.Delivered], 1)
	sup, _ := db.LookupAddresses(ctx, store.ListSuppressed, "shop", []string{"hard@x", "soft@x"})
	if len(sup) != 2 || sup["hard@x"].Reason != store.ReasonHardBounce {
		t.Errorf("suppressed %+v", sup)
	}
	if n := len(collect(t, db.Events(ctx, "shop", store.LogBounces, time.Time{}, time.Time{}))); n != 1 {
		t.Errorf("%d bounces stored", n)
	}
	// Again: an address already listed keeps its first entry; a copy
	// already bounced does not take Delivered down twice.
	again := entries[:1]
	again[0].Reason = store.ReasonManual
	if err := db.RecordReturned(ctx, nil, []uint64{s.copies[0].ID}, again); err != nil {
		t.Fatal(err)
	}
	sup, _ = db.LookupAddresses(ctx, store.ListSuppressed, "shop", []string{"hard@x"})
	expect(t, "first entry kept", sup["hard@x"].Reason, store.ReasonHardBounce)
	expect(t, "bounced once", must(db.Totals(ctx, "shop"))[store.Delivered], 1)
	if err := db.RecordReturned(ctx, nil, nil, []store.AddressEntry{{List: "nope", Account: "shop", Address: "a@x"}}); err == nil {
		t.Error("an entry of an unknown list was accepted")
	}
	if err := db.RecordReturned(ctx, []store.Event{{Log: "nope"}}, nil, nil); err == nil {
		t.Error("a bad event was accepted")
	}
}

func testWebhooks(t *testing.T, db store.DB) {
	for _, w := range []*store.Webhook{
		{ID: "wh-all", Account: "shop", URL: "https://hooks.example/all", Secret: "s"},
		{ID: "wh-clicks", Account: "shop", URL: "https://hooks.example/clicks", Events: []string{store.EventClicked}, Machine: true, Secret: "s"},
		{ID: "wh-tag", Account: "shop", URL: "https://hooks.example/tag", Tags: []string{"vip"}, Secret: "s"},
		{ID: "wh-paused", Account: "shop", URL: "https://hooks.example/p", Paused: true, Secret: "s"},
		{ID: "wh-news", Account: "news", URL: "https://hooks.example/n", Secret: "s"},
	} {
		if err := store.Create(ctx, db, w); err != nil {
			t.Fatal(err)
		}
	}
	s := linked(t, db, "shop", []string{"vip"}, "a@x") // accepted: wh-all, wh-tag
	deliver(t, db, s.copies[0], base.Add(time.Minute)) // delivered: wh-all, wh-tag
	scan := hit("w1", "click", s.copies[0], 1, "https://shop.example/a?x=1", base.Add(time.Hour))
	scan.Machine = true // only wh-clicks takes machine hits
	if err := db.IngestHits(ctx, []store.Hit{scan, hit("w2", "click", s.copies[0], 1, "https://shop.example/a?x=1", base.Add(2*time.Hour))}); err != nil {
		t.Fatal(err)
	}
	// A bad batch queues nothing.
	_ = db.AppendEvents(ctx, []store.Event{ev(store.LogAttempts, "shop", 1, base, "", nil), {Log: "nope"}})
	msgs := func(ep string) []store.WebhookMessage {
		ms, err := db.WebhookMessages(ctx, ep, "", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	types := func(ms []store.WebhookMessage) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Type)
		}
		return out
	}
	expect(t, "wh-all, newest first", types(msgs("wh-all")), []string{"clicked", "delivered", "accepted"})
	expect(t, "wh-clicks", types(msgs("wh-clicks")), []string{"clicked", "clicked"})
	expect(t, "wh-tag", types(msgs("wh-tag")), []string{"clicked", "delivered", "accepted"})
	expect(t, "wh-paused", len(msgs("wh-paused")), 0)
	expect(t, "wh-news", len(msgs("wh-news")), 0)
	all := msgs("wh-all")
	m0 := all[2]
	if m0.Account != "shop" || m0.State != store.WebhookPending || m0.Recipient != "a@x" || !strings.Contains(string(m0.Payload), `"event":"accepted"`) ||
		m0.Created.IsZero() || !strings.HasPrefix(m0.ID, "msg_") {
		t.Errorf("webhook message %+v", m0)
	}
	if page, _ := db.WebhookMessages(ctx, "wh-all", "", all[0].ID, 1); len(page) != 1 || page[0].ID != all[1].ID {
		t.Errorf("page before %s: %+v", all[0].ID, page)
	}
	// Before an id above every stored one: all of them (wh-tag's keys are
	// the last of the store's).
	if page, _ := db.WebhookMessages(ctx, "wh-tag", "", "msg_~", 0); len(page) != 3 {
		t.Errorf("page before an id above all: %d messages, want 3", len(page))
	}
	q, err := db.WebhookQueue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	depth := map[string]int{}
	for _, s := range q {
		depth[s.Endpoint] = s.Depth
		if s.Account != "shop" || s.Oldest.IsZero() {
			t.Errorf("queue stat %+v", s)
		}
	}
	expect(t, "queue depths", depth, map[string]int{"wh-all": 3, "wh-clicks": 2, "wh-tag": 3})
	due, ok, err := db.NextWebhookDue(ctx)
	if err != nil || !ok || due.After(time.Now()) {
		t.Errorf("next due %v %v %v", due, ok, err)
	}

	// Claims lease what they take; two claimers never share a message.
	now := time.Now().UTC()
	c1, err := db.ClaimWebhooks(ctx, now, time.Minute, 5)
	if err != nil || len(c1) != 5 {
		t.Fatalf("claim: %d %v", len(c1), err)
	}
	c2, _ := db.ClaimWebhooks(ctx, now, time.Minute, 5)
	if len(c2) != 3 {
		t.Errorf("second claim took %d, want the 3 left", len(c2))
	}
	seen := map[string]bool{}
	for _, m := range append(c1, c2...) {
		if seen[m.ID] {
			t.Errorf("claimed twice: %s", m.ID)
		}
		seen[m.ID] = true
		if !m.NextAttempt.Equal(now.Add(time.Minute)) {
			t.Errorf("lease: next attempt %v", m.NextAttempt)
		}
	}
	if c3, _ := db.ClaimWebhooks(ctx, now, time.Minute, 5); len(c3) != 0 {
		t.Errorf("leased messages claimed again: %d", len(c3))
	}
	if c4, _ := db.ClaimWebhooks(ctx, now.Add(2*time.Minute), time.Minute, 100); len(c4) != 8 {
		t.Errorf("after the lease: %d claimed, want 8", len(c4))
	}
	id := c1[0].ID
	a := store.WebhookAttempt{Message: id, Endpoint: c1[0].Endpoint, Time: now, Status: 500, Latency: 20 * time.Millisecond, Response: "oops", Error: "status 500"}
	if err := db.FinishWebhookAttempt(ctx, id, a, store.WebhookPending, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a.Status, a.Error = 200, ""
	if err := db.FinishWebhookAttempt(ctx, id, a, store.WebhookDelivered, time.Time{}); err != nil {
		t.Fatal(err)
	}
	m, err := db.WebhookMessage(ctx, id)
	if err != nil || m.State != store.WebhookDelivered || m.Attempts != 2 || m.LastStatus != 200 {
		t.Errorf("finished message %+v %v", m, err)
	}
	atts, err := db.WebhookAttempts(ctx, id)
	if err != nil || len(atts) != 2 || atts[0].Status != 500 || atts[0].Response != "oops" || atts[1].Status != 200 || atts[0].Latency != 20*time.Millisecond {
		t.Errorf("attempts %+v %v", atts, err)
	}
	if err := db.FinishWebhookAttempt(ctx, "msg_nope", a, store.WebhookDelivered, time.Time{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("finish unknown: %v", err)
	}
	if d, _ := db.WebhookMessages(ctx, m.Endpoint, store.WebhookDelivered, "", 0); len(d) != 1 || d[0].ID != id {
		t.Errorf("by state: %+v", d)
	}
	// Resend: pending and due now, the same id; only by its account.
	if err := db.ResendWebhook(ctx, "news", id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("resend by another account: %v", err)
	}
	if err := db.ResendWebhook(ctx, "shop", id); err != nil {
		t.Fatal(err)
	}
	if m, _ := db.WebhookMessage(ctx, id); m.State != store.WebhookPending || m.NextAttempt.After(time.Now()) {
		t.Errorf("resent %+v", m)
	}
	if _, err := db.WebhookMessage(ctx, "msg_nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown message: %v", err)
	}
	// A test message queued by hand.
	if err := db.QueueWebhook(ctx, store.WebhookMessage{Endpoint: "wh-news", Account: "news", Type: "test", Payload: []byte(`{"test":true}`)}); err != nil {
		t.Fatal(err)
	}
	if ms := msgs("wh-news"); len(ms) != 1 || ms[0].State != store.WebhookPending || ms[0].ID == "" || string(ms[0].Payload) != `{"test":true}` {
		t.Errorf("queued by hand %+v", ms)
	}
}

func testErase(t *testing.T, db store.DB) {
	if err := store.Create(ctx, db, &store.Webhook{ID: "wh", Account: "shop", URL: "https://h.example/", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	s := linked(t, db, "shop", []string{"t"}, "Gone@Example.org", "stay@example.org")
	q := send(t, db, "shop", "cred", nil, base, "gone@example.org") // still queued
	deliver(t, db, s.copies[0], base.Add(time.Minute))
	deliver(t, db, s.copies[1], base.Add(time.Minute))
	if err := db.IngestHits(ctx, []store.Hit{hit("e1", "click", s.copies[0], 1, "https://shop.example/a?x=1", base.Add(time.Hour)), hit("e2", "pixel", s.copies[1], 0, "", base.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	keyed := ev(store.LogBounces, "shop", s.copies[0].ID, base.Add(time.Hour), "gone@example.org", map[string]string{"type": "soft"})
	keyed.Key = "bounce-1"
	if err := db.AppendEvents(ctx, []store.Event{keyed}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []store.AddressEntry{{List: store.ListSuppressed, Account: "shop", Address: "gone@example.org"}, {List: store.ListNoTrack, Account: "shop", Address: "gone@example.org"}} {
		if _, err := db.AddAddress(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	totals := must(db.Totals(ctx, "shop"))
	daysBefore, _ := db.EventDays(ctx, "shop")
	var before uint64
	for _, d := range daysBefore {
		before += d.Count
	}
	er, err := db.EraseAddress(ctx, "shop", " GONE@example.org", true)
	if err != nil {
		t.Fatal(err)
	}
	// attempts x2 (two messages), delivery, click, bounce; webhooks: 2 accepted, delivered, clicked, bounced.
	want := store.Erased{Events: 5, Copies: 1, Messages: 1, Webhooks: 5, Suppression: 1, Pending: 1}
	if er != want {
		t.Errorf("erased %+v, want %+v", er, want)
	}
	if n := len(collect(t, db.EventsByRecipient(ctx, "shop", "gone@example.org", time.Time{}, time.Time{}))); n != 0 {
		t.Errorf("%d events left about the address", n)
	}
	for _, log := range store.Logs {
		for _, e := range collect(t, db.Events(ctx, "shop", log, time.Time{}, time.Time{})) {
			if strings.EqualFold(e.Recipient, "gone@example.org") {
				t.Errorf("left in %s: %+v", log, e)
			}
		}
	}
	if c, _ := db.Copy(ctx, s.copies[0].ID); c.Recipient != "" {
		t.Errorf("copy keeps the recipient %q", c.Recipient)
	}
	if c, _ := db.Copy(ctx, q.copies[0].ID); c.Recipient != "gone@example.org" {
		t.Errorf("a queued copy lost its recipient: %q", c.Recipient)
	}
	if m, _ := db.Message(ctx, s.m.ID); !slices.Equal(m.Recipients, []string{"", "stay@example.org"}) {
		t.Errorf("message recipients %q", m.Recipients)
	}
	if ms, _ := db.WebhookMessages(ctx, "wh", "", "", 0); len(ms) != 3 {
		t.Errorf("%d webhook messages left, want the other recipient's 3", len(ms))
	} else {
		for _, m := range ms {
			if m.Recipient == "gone@example.org" || strings.Contains(strings.ToLower(string(m.Payload)), "gone@") {
				t.Errorf("webhook message about the address left: %+v", m)
			}
		}
	}
	if sup, _ := db.LookupAddresses(ctx, store.ListSuppressed, "shop", []string{"gone@example.org"}); len(sup) != 0 {
		t.Error("suppression entry left")
	}
	if nt, _ := db.LookupAddresses(ctx, store.ListNoTrack, "shop", []string{"gone@example.org"}); len(nt) != 1 {
		t.Error("the no-track entry went")
	}
	if after := must(db.Totals(ctx, "shop")); after != totals {
		t.Errorf("aggregates changed: %v -> %v", totals.Map(), after.Map())
	}
	daysAfter, _ := db.EventDays(ctx, "shop")
	var sum uint64
	for _, d := range daysAfter {
		sum += d.Count
	}
	expect(t, "day counts", sum, before-5)
	// The erased hit and key may come again (the redirector's retry): a
	// re-shipped hit is not refused for a key that is gone, nor doubled.
	if err := db.AppendEvents(ctx, []store.Event{keyed}); err != nil {
		t.Fatal(err)
	}
	if er, _ := db.EraseAddress(ctx, "shop", "nobody@example.org", true); er != (store.Erased{}) {
		t.Errorf("erasing an unknown address: %+v", er)
	}
	if er, _ := db.EraseAddress(ctx, "", "gone@example.org", true); er != (store.Erased{}) {
		t.Errorf("erasing without an account: %+v", er)
	}
}

func testRetention(t *testing.T, db store.DB) {
	now := time.Now().UTC()
	day := 24 * time.Hour
	old := func(d time.Duration) time.Time { return now.Add(-d) }
	var in []store.Event
	add := func(account, log string, age time.Duration, rcpt string) {
		f := map[string]string{}
		if log == store.LogClicks {
			f["url"] = "https://x/"
		}
		in = append(in, ev(log, account, 1, old(age), rcpt, f))
	}
	// Default 30 days; clicks 10 days for everyone; "short" keeps
	// attempts 5 days; "long" keeps clicks 60 days.
	add("shop", store.LogAttempts, 40*day, "a@x")   // gone (default)
	add("shop", store.LogAttempts, 20*day, "b@x")   // kept
	add("shop", store.LogClicks, 12*day, "c@x")     // gone (clicks 10)
	add("shop", store.LogClicks, 8*day, "d@x")      // kept
	add("short", store.LogAttempts, 6*day, "e@x")   // gone (own 5)
	add("short", store.LogAttempts, 4*day, "f@x")   // kept
	add("short", store.LogClicks, 12*day, "g@x")    // gone (clicks 10)
	add("long", store.LogClicks, 40*day, "h@x")     // kept (own 60)
	add("long", store.LogClicks, 70*day, "i@x")     // gone (own 60)
	add("long", store.LogAttempts, 40*day, "j@x")   // gone (default)
	add("shop", store.LogDeliveries, 90*day, "k@x") // gone, older than everything
	keyed := ev(store.LogBounces, "shop", 1, old(40*day), "l@x", map[string]string{"type": "soft"})
	keyed.Key = "k1"
	in = append(in, keyed) // gone, with its key
	if err := db.AppendEvents(ctx, in); err != nil {
		t.Fatal(err)
	}
	// Finished and unfinished messages made long ago; an orphan hit.
	oldMsg := send(t, db, "shop", "c", nil, old(40*day), "m@x")
	oldMsg.copies[0].State = store.CopyDelivered
	deliver(t, db, oldMsg.copies[0], old(40*day))
	waiting := send(t, db, "shop", "c", nil, old(40*day), "n@x")
	if err := db.IngestHits(ctx, []store.Hit{{ID: store.FormatID(uint64(old(40*day).UnixMilli()-1577836800000)<<20) + "aaaaaaaa", Time: old(40 * day), Kind: "click", MessageID: 4242, URL: "https://o/"}}); err != nil {
		t.Fatal(err)
	}
	rt := store.Retention{
		Default:  30 * day,
		Logs:     map[string]time.Duration{store.LogClicks: 10 * day},
		Accounts: map[string]map[string]time.Duration{"short": {store.LogAttempts: 5 * day}, "long": {store.LogClicks: 60 * day}},
	}
	p, err := db.DeleteBefore(ctx, now, rt)
	if err != nil {
		t.Fatal(err)
	}
	// 8 of the events above, and the old delivery's deliveries event
	// (the attempts events of the two old messages go too).
	if p.Events != 11 {
		t.Errorf("pruned %d events, want 11", p.Events)
	}
	if p.Hits != 1 {
		t.Errorf("pruned %d orphan hits, want 1", p.Hits)
	}
	left := map[string]bool{}
	for _, a := range []string{"shop", "short", "long"} {
		for _, log := range store.Logs {
			for _, e := range collect(t, db.Events(ctx, a, log, time.Time{}, time.Time{})) {
				left[e.Recipient] = true
			}
		}
	}
	expect(t, "events left", left, map[string]bool{"b@x": true, "d@x": true, "f@x": true, "h@x": true})
	// Messages and copies go by their ids' age: these were made now.
	if _, err := db.Message(ctx, oldMsg.m.ID); err != nil {
		t.Errorf("a new finished message went: %v", err)
	}
	// The key of a removed event is free again.
	if err := db.AppendEvents(ctx, []store.Event{keyed}); err != nil {
		t.Fatal(err)
	}
	if n := len(collect(t, db.Events(ctx, "shop", store.LogBounces, time.Time{}, time.Time{}))); n != 1 {
		t.Errorf("a removed event's key still blocks it: %d", n)
	}
	for _, d := range must(db.EventDays(ctx, "shop")) {
		if d.Day < old(90*day).Format(time.DateOnly) || (d.Log == store.LogDeliveries && d.Day == old(90*day).Format(time.DateOnly)) {
			t.Errorf("day count of a removed day: %+v", d)
		}
	}
	// Aggregates older than the longest period (60 days) go; totals stay.
	tot := must(db.Totals(ctx, "shop"))
	if tot[store.Accepted] == 0 {
		t.Error("totals went with retention")
	}
	if p, err := db.DeleteBefore(ctx, now.Add(100*day), rt); err != nil || p.Aggregates == 0 {
		t.Errorf("aggregates pruned %+v %v", p, err)
	}
	if _, err := db.Message(ctx, oldMsg.m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old finished message kept: %v", err)
	}
	if _, err := db.Copy(ctx, oldMsg.copies[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old final copy kept: %v", err)
	}
	if _, err := db.Copy(ctx, waiting.copies[0].ID); err != nil {
		t.Errorf("old queued copy removed: %v", err)
	}
	if _, err := db.Message(ctx, waiting.m.ID); err != nil {
		t.Errorf("old unfinished message removed: %v", err)
	}
	if _, total, _ := db.Series(ctx, "shop", "", old(100*day), now, 24*time.Hour); total != (store.Counters{}) {
		t.Errorf("aggregates left after their retention: %v", total.Map())
	}
	if after := must(db.Totals(ctx, "shop")); after != tot {
		t.Errorf("totals changed by retention: %v", after.Map())
	}
}

func testSearch(t *testing.T, db store.DB) {
	// Searches by time go by the messages' ids, made when they are added.
	a := send(t, db, "shop", "c", []string{"nov"}, base, "anna@example.org")
	time.Sleep(2 * time.Millisecond)
	t0 := time.Now()
	b := send(t, db, "shop", "c", []string{"dec"}, base.Add(time.Hour), "ben@example.org", "Anna@example.org")
	t1 := time.Now().Add(time.Millisecond)
	time.Sleep(2 * time.Millisecond)
	c := send(t, db, "news", "c", nil, base.Add(2*time.Hour), "anna@example.org")
	ids := func(q store.MessageQuery) []uint64 {
		ms, err := db.SearchMessages(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	expect(t, "newest first", ids(store.MessageQuery{Account: "shop"}), []uint64{b.m.ID, a.m.ID})
	expect(t, "all accounts", ids(store.MessageQuery{Account: store.AllAccounts}), []uint64{c.m.ID, b.m.ID, a.m.ID})
	expect(t, "by id", ids(store.MessageQuery{Account: "shop", ID: a.m.ID}), []uint64{a.m.ID})
	expect(t, "by a copy's id", ids(store.MessageQuery{Account: "shop", ID: b.copies[1].ID}), []uint64{b.m.ID})
	expect(t, "by id of another account", ids(store.MessageQuery{Account: "shop", ID: c.m.ID}), []uint64(nil))
	expect(t, "by recipient", ids(store.MessageQuery{Account: "shop", Recipient: "ANNA@example.org"}), []uint64{b.m.ID, a.m.ID})
	expect(t, "by recipient, all accounts", ids(store.MessageQuery{Account: store.AllAccounts, Recipient: "ben@example.org"}), []uint64{b.m.ID})
	expect(t, "by tag", ids(store.MessageQuery{Account: "shop", Tag: "dec"}), []uint64{b.m.ID})
	expect(t, "by subject", ids(store.MessageQuery{Account: store.AllAccounts, Subject: "subject NEWS"}), []uint64{c.m.ID})
	expect(t, "by sender", ids(store.MessageQuery{Account: "shop", Sender: "SHOP@example"}), []uint64{b.m.ID, a.m.ID})
	expect(t, "by sender, none", ids(store.MessageQuery{Account: "shop", Sender: "nobody"}), []uint64(nil))
	expect(t, "time range", ids(store.MessageQuery{Account: store.AllAccounts, From: t0, To: t1}), []uint64{b.m.ID})
	expect(t, "limit", ids(store.MessageQuery{Account: store.AllAccounts, Limit: 2}), []uint64{c.m.ID, b.m.ID})
}

// testConcurrent runs writers of every kind at once: every write lands,
// and the aggregates add up to exactly what was written.
func testConcurrent(t *testing.T, db store.DB) {
	const writers, each = 8, 15
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []sent
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s := send(t, db, "shop", "c", []string{"load"}, base.Add(time.Duration(i)*time.Minute), fmt.Sprintf("w%d-%d@x", w, i), fmt.Sprintf("w%d-%d-b@x", w, i))
				if err := db.PutMessageLinks(ctx, s.m.ID, []store.MessageLink{{Position: 1, URL: "https://load.example/"}}); err != nil {
					t.Error(err)
				}
				deliver(t, db, s.copies[0], base.Add(time.Hour))
				hits := []store.Hit{hit(fmt.Sprintf("c-%d-%d-1", w, i), "pixel", s.copies[0], 0, "", base.Add(2*time.Hour)),
					hit(fmt.Sprintf("c-%d-%d-2", w, i), "click", s.copies[0], 1, "https://load.example/", base.Add(2*time.Hour))}
				if err := db.IngestHits(ctx, hits); err != nil {
					t.Error(err)
				}
				if err := db.IngestHits(ctx, hits); err != nil { // shipped twice
					t.Error(err)
				}
				mu.Lock()
				all = append(all, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	n := uint64(writers * each)
	tot := must(db.Totals(ctx, "shop"))
	if tot[store.Accepted] != 2*n || tot[store.Delivered] != n || tot[store.Opens] != n || tot[store.UniqueOpens] != n || tot[store.Clicks] != n || tot[store.UniqueClicks] != n {
		t.Errorf("totals after concurrent writers %v, want %d messages", tot.Map(), n)
	}
	_, series, _ := db.Series(ctx, "shop", store.DimTag("load"), base, base.Add(3*time.Hour), time.Hour)
	if series != tot {
		t.Errorf("the series %v and the totals %v disagree", series.Map(), tot.Map())
	}
	queued := 0
	if err := db.QueuedCopies(ctx, func(*store.Copy) error { queued++; return nil }); err != nil {
		t.Fatal(err)
	}
	expect(t, "queued copies", queued, n)
	seen := map[uint64]bool{}
	for _, s := range all {
		for _, id := range append([]uint64{s.m.ID}, s.m.CopyIDs...) {
			if seen[id] {
				t.Fatalf("id %x used twice", id)
			}
			seen[id] = true
		}
	}
	top, _ := db.TopLinks(ctx, "shop", "", base, base.Add(3*time.Hour), 10)
	if len(top) != 1 || top[0].Clicks != n || top[0].UniqueClicks != n || top[0].Delivered != n {
		t.Errorf("top links after concurrent writers %+v", top)
	}
}
