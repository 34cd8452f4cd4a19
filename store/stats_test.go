package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestDayRollups(t *testing.T) {
	r, err := OpenRelay(filepath.Join(t.TempDir(), "relay.db"), RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	day := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	click := func(id uint64, at time.Duration, url string, tags ...string) Event {
		return Event{Log: LogClicks, Account: "a", ID: id, Time: day.Add(at), Tags: tags, Fields: map[string]string{"url": url}}
	}
	evs := []Event{
		{Log: LogAttempts, Account: "a", ID: 1, Time: day.Add(time.Hour), Tags: []string{"t"}},
		{Log: LogAttempts, Account: "a", ID: 2, Time: day.Add(time.Hour)},
		{Log: LogDeliveries, Account: "a", ID: 1, Time: day.Add(2 * time.Hour), Tags: []string{"t"}},
		{Log: LogFailures, Account: "a", ID: 2, Time: day.Add(2 * time.Hour), Fields: map[string]string{"type": "soft"}},
		{Log: LogFailures, Account: "a", ID: 2, Time: day.Add(3 * time.Hour), Fields: map[string]string{"type": "hard"}},
		{Log: LogOpens, Account: "a", ID: 1, Time: day.Add(4 * time.Hour), Tags: []string{"t"}},
		{Log: LogOpens, Account: "a", ID: 1, Time: day.Add(5 * time.Hour), Tags: []string{"t"}},
		click(1, 6*time.Hour, "https://x/1", "t"),
		click(1, 7*time.Hour, "https://x/1", "t"),
		click(2, 8*time.Hour, "https://x/1"),
		click(2, 25*time.Hour, "https://x/2"), // the next day
		{Log: LogClicks, Account: "b", ID: 9, Time: day.Add(time.Hour), Fields: map[string]string{"url": "https://b/"}},
	}
	if err := r.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	rus, err := r.DayRollups(ctx, "a", "", day.Add(-24*time.Hour), day.AddDate(0, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(rus) != 3 || rus[0].Day != "2026-11-01" || rus[0].Sent != 0 || rus[2].Clicks != 1 {
		t.Fatalf("rollups %+v", rus)
	}
	d := rus[1]
	if d.Sent != 2 || d.Delivered != 1 || d.Failed != 1 || d.Deferred != 1 || d.Opens != 2 || len(d.Opened) != 1 ||
		d.Clicks != 3 || len(d.Clicked) != 2 || len(d.Links) != 1 || d.Links[0].Clicks != 3 || len(d.Links[0].Copies) != 2 || d.Links[0].Position != -1 {
		t.Fatalf("rollup of %s: %+v", d.Day, d)
	}
	// Past days are kept.
	kept := func(tag, day string) bool {
		var ok bool
		r.db.View(func(tx *bolt.Tx) error {
			ok = tx.Bucket([]byte(bucketRollups)).Get(rollupKey("a", tag, day)) != nil
			return nil
		})
		return ok
	}
	if !kept("", "2026-11-02") || kept("", "2026-11-01") {
		t.Fatal("the rollup of a past day with events was not kept, or an empty one was")
	}
	// A late event changes the day's counts: the rollup is made again.
	if err := r.AppendEvents(ctx, []Event{click(3, 9*time.Hour, "https://x/1")}); err != nil {
		t.Fatal(err)
	}
	rus, err = r.DayRollups(ctx, "a", "", day, day.AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(rus) != 1 || rus[0].Clicks != 4 || len(rus[0].Links[0].Copies) != 3 {
		t.Fatalf("after a late click: %+v", rus)
	}
	// A tag keeps only its messages' events; another account sees its own.
	rus, err = r.DayRollups(ctx, "a", "t", day, day.AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if d := rus[0]; d.Sent != 1 || d.Clicks != 2 || d.Opens != 2 || d.Failed != 0 || len(d.Clicked) != 1 {
		t.Fatalf("tag t: %+v", d)
	}
	rus, err = r.DayRollups(ctx, "b", "", day, day.AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if d := rus[0]; d.Clicks != 1 || d.Links[0].URL != "https://b/" || d.Sent != 0 {
		t.Fatalf("account b: %+v", d)
	}
	// A tag without events is answered, never kept.
	rus, err = r.DayRollups(ctx, "a", "nobody-uses-this", day, day.AddDate(0, 0, 1))
	if err != nil || len(rus) != 1 || !rus[0].empty() {
		t.Fatalf("unused tag: %+v, %v", rus, err)
	}
	if kept("nobody-uses-this", "2026-11-02") {
		t.Fatal("an empty rollup was kept")
	}
	// Retention removes old rollups.
	n, err := r.DeleteRollupsBefore(ctx, day.AddDate(0, 0, 1))
	if err != nil || n != 3 || kept("", "2026-11-02") || kept("t", "2026-11-02") {
		t.Fatalf("DeleteRollupsBefore: %d, %v", n, err)
	}
}

// TestDayRollupPositions: clicks ingested from hits are grouped by link
// position too, which only the hit records.
func TestDayRollupPositions(t *testing.T) {
	r, err := OpenRelay(filepath.Join(t.TempDir(), "relay.db"), RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	day := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	m := &Message{ID: r.NextID(), Created: day}
	c := &Copy{ID: r.NextID(), MessageID: m.ID, Account: "a", Recipient: "r@example.com", Created: day, State: CopyQueued}
	if err := r.AddMessage(ctx, m, []*Copy{c}, nil); err != nil {
		t.Fatal(err)
	}
	hit := func(id string, pos uint32, at time.Duration) Hit {
		return Hit{ID: id, Time: day.Add(at), Kind: "click", MessageID: c.ID, Position: pos, URL: "https://x/same"}
	}
	// The same URL at two positions, the first clicked twice.
	if err := r.IngestHits(ctx, []Hit{hit("h1", 0, time.Hour), hit("h2", 0, 2*time.Hour), hit("h3", 3, 3*time.Hour)}); err != nil {
		t.Fatal(err)
	}
	rus, err := r.DayRollups(ctx, "a", "", day, day.AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	ls := rus[0].Links
	if len(ls) != 2 || ls[0].Position != 0 || ls[0].Clicks != 2 || len(ls[0].Copies) != 1 || ls[1].Position != 3 || ls[1].Clicks != 1 {
		t.Fatalf("links %+v", ls)
	}
	pos, err := r.LinkPositions([]string{"h3", "", "nope"})
	if err != nil || pos[0] != 3 || pos[1] != -1 || pos[2] != -1 {
		t.Fatalf("LinkPositions: %v, %v", pos, err)
	}
}
