package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// TestOpenTwoAtOnce starts nodes on a fresh database at the same moment:
// the migrations are applied once, every node gets its own number.
func TestOpenTwoAtOnce(t *testing.T) {
	dsn := newDSN(t)
	const n = 4
	dbs := make([]*DB, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dbs[i], errs[i] = Open(context.Background(), Options{DSN: dsn, Node: fmt.Sprintf("n%d", i)})
		}()
	}
	wg.Wait()
	nums := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		defer dbs[i].Close()
		_, num := dbs[i].Node()
		if nums[num] || num < 1 || num > store.MaxIDNode {
			t.Errorf("node number %d given twice or out of range", num)
		}
		nums[num] = true
	}
	var applied int
	if err := dbs[0].pool.QueryRow(context.Background(), `SELECT count(*) FROM schema_migrations`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != len(mustMigrations()) {
		t.Errorf("%d migrations recorded, want %d", applied, len(mustMigrations()))
	}
	// Migrate finds nothing left to do.
	if got, err := Migrate(context.Background(), dsn, nil); err != nil || len(got) != 0 {
		t.Errorf("Migrate on a current schema applied %v, %v", got, err)
	}
	// A node keeps its number across restarts.
	_, num := dbs[1].Node()
	dbs[1].Close()
	again := openNode(t, dsn, "n1")
	if _, n2 := again.Node(); n2 != num {
		t.Errorf("node n1 came back as %d, was %d", n2, num)
	}
}

func TestMigrateFresh(t *testing.T) {
	dsn := newDSN(t)
	got, err := Migrate(context.Background(), dsn, nil)
	if err != nil || len(got) != len(mustMigrations()) || got[0] != 1 {
		t.Fatalf("Migrate applied %v, %v", got, err)
	}
	if _, err := Migrate(context.Background(), "postgres://u:secretpw@[bad", nil); err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("a bad DSN: %v (must fail without showing the password)", err)
	}
}

// TestSameNodeTwice refuses a second process with a node's name while
// the first runs, and lets it in once the first is gone.
func TestSameNodeTwice(t *testing.T) {
	dsn := newDSN(t)
	first := openNode(t, dsn, "relay-a")
	if _, err := Open(context.Background(), Options{DSN: dsn, Node: "relay-a"}); err == nil || !strings.Contains(err.Error(), "running already") {
		t.Fatalf("a second relay-a: %v", err)
	}
	first.Close()
	openNode(t, dsn, "relay-a")
	if _, err := Open(context.Background(), Options{DSN: dsn}); err == nil {
		t.Error("a node without a name was opened")
	}
}

// TestTwoNodes runs two handles on one database, as two relay nodes:
// ids never collide, each sees only its own spool, hits shipped to both
// are stored once, and the aggregates add up under writers on both.
func TestTwoNodes(t *testing.T) {
	ctx := context.Background()
	dsn := newDSN(t)
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	ids := map[uint64]bool{}
	for range 5000 {
		for _, d := range []*DB{a, b} {
			id := d.NextID()
			if ids[id] {
				t.Fatalf("id %x made twice", id)
			}
			ids[id] = true
		}
	}
	at := time.Now().UTC().Truncate(time.Hour)
	add := func(d *DB, rcpt string) *store.Copy {
		m := &store.Message{ID: d.NextID(), SpoolPath: "f-" + rcpt, Recipients: []string{rcpt}, Created: at, Remaining: 1}
		c := &store.Copy{ID: d.NextID(), MessageID: m.ID, Account: "shop", Recipient: rcpt, State: store.CopyQueued, Created: at}
		if err := d.AddMessage(ctx, m, []*store.Copy{c}, []store.Event{{Log: store.LogAttempts, Account: "shop", ID: c.ID, Time: at, Recipient: rcpt}}); err != nil {
			t.Fatal(err)
		}
		if m.Node != d.node {
			t.Errorf("message of node %s is marked %q", d.node, m.Node)
		}
		return c
	}
	const n = 40
	var copies []*store.Copy
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		for _, d := range []*DB{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := add(d, fmt.Sprintf("%s-%d@x", d.node, i))
				mu.Lock()
				copies = append(copies, c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for _, d := range []*DB{a, b} {
		var mine, files int
		if err := d.QueuedCopies(ctx, func(c *store.Copy) error {
			if !strings.HasPrefix(c.Recipient, d.node+"-") {
				t.Errorf("node %s sees %s's copy %s", d.node, c.Recipient, store.FormatID(c.ID))
			}
			mine++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		_ = d.SpoolFiles(ctx, func(name string) {
			if !strings.HasPrefix(name, "f-"+d.node+"-") {
				t.Errorf("node %s lists spool file %s", d.node, name)
			}
			files++
		})
		if mine != n || files != n {
			t.Errorf("node %s: %d queued copies and %d spool files, want %d", d.node, mine, files, n)
		}
	}
	// Every copy's hits, shipped to both nodes at once, several times.
	var hits []store.Hit
	for i, c := range copies {
		hits = append(hits, store.Hit{ID: fmt.Sprintf("hit-%04d-o", i), Time: at.Add(time.Minute), Kind: "pixel", MessageID: c.ID},
			store.Hit{ID: fmt.Sprintf("hit-%04d-c", i), Time: at.Add(time.Minute), Kind: "click", MessageID: c.ID, Position: 1, URL: "https://x.example/"})
	}
	for round := range 3 {
		for _, d := range []*DB{a, b} {
			for lo := 0; lo < len(hits); lo += 25 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := hits[lo:min(lo+25+round*5, len(hits))]
					if err := d.IngestHits(ctx, batch); err != nil {
						t.Error(err)
					}
				}()
			}
		}
	}
	// Deliveries from both nodes meanwhile.
	for _, c := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := a
			if strings.HasPrefix(c.Recipient, "b-") {
				d = b
			}
			cc := *c
			cc.State = store.CopyDelivered
			if _, err := d.UpdateCopy(ctx, &cc, []store.Event{{Log: store.LogDeliveries, Account: "shop", ID: c.ID, Time: at, Recipient: c.Recipient}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, d := range []*DB{a, b} {
		tot, err := d.Totals(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(2 * n)
		if tot[store.Accepted] != want || tot[store.Delivered] != want || tot[store.Opens] != want || tot[store.UniqueOpens] != want ||
			tot[store.Clicks] != want || tot[store.UniqueClicks] != want {
			t.Errorf("node %s reads totals %v, want %d of each", d.node, tot.Map(), want)
		}
		var clicks int
		for _, err := range d.Events(ctx, "shop", store.LogClicks, time.Time{}, time.Time{}) {
			if err != nil {
				t.Fatal(err)
			}
			clicks++
		}
		if clicks != 2*n {
			t.Errorf("node %s reads %d click events, want %d", d.node, clicks, 2*n)
		}
	}
	// Webhook claims from both nodes never overlap.
	if err := store.Create(ctx, a, &store.Webhook{ID: "wh", Account: "shop", URL: "https://h.example/", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		if err := a.AppendEvents(ctx, []store.Event{{Log: store.LogResponses, Account: "shop", Time: at, Fields: map[string]string{"kind": "reply"}, Key: fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	claimed := map[string]int{}
	now := time.Now()
	for range 10 {
		for _, d := range []*DB{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ms, err := d.ClaimWebhooks(ctx, now, time.Hour, 4)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				for _, m := range ms {
					claimed[m.ID]++
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for id, k := range claimed {
		if k > 1 {
			t.Errorf("webhook message %s claimed %d times", id, k)
		}
	}
	if len(claimed) != 60 {
		t.Errorf("%d webhook messages claimed by 20 claims of 4, want all 60", len(claimed))
	}
}

// TestPartitions checks the day partitions: made ahead at open and on
// demand for an event's day, dropped whole by retention.
func TestPartitions(t *testing.T) {
	ctx := context.Background()
	d := openNode(t, newDSN(t), "p")
	now := time.Now().UTC()
	old := now.Add(-400 * 24 * time.Hour)
	if err := d.AppendEvents(ctx, []store.Event{
		{Log: store.LogAttempts, Account: "shop", Time: old, Recipient: "old@x"},
		{Log: store.LogAttempts, Account: "shop", Time: now, Recipient: "new@x"},
	}); err != nil {
		t.Fatal(err)
	}
	names := func() map[string]bool {
		ps, err := d.partitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, p := range ps {
			out[p.name] = true
		}
		return out
	}
	ps := names()
	oldName := partName(old.Unix() / 86400)
	if !ps[oldName] || !ps[partName(now.Unix()/86400+7)] || !ps[partName(now.Unix()/86400)] {
		t.Fatalf("partitions %v: want the old event's day and the coming week", ps)
	}
	p, err := d.DeleteBefore(ctx, now, store.Retention{Default: 30 * 24 * time.Hour})
	if err != nil || p.Events != 1 {
		t.Fatalf("retention %+v %v", p, err)
	}
	if names()[oldName] {
		t.Error("the old day's partition was not dropped")
	}
	n := 0
	for _, err := range d.Events(ctx, "shop", store.LogAttempts, time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d events left, want 1", n)
	}
}
