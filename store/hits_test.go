package store

import (
	"context"
	bolt "go.etcd.io/bbolt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testRelayWithCopy opens a relay database holding one message with one
// copy for rcpt in account "shop", tagged.
func testRelayWithCopy(t *testing.T, rcpt string) (*Relay, *Copy) {
	t.Helper()
	r, err := OpenRelay(filepath.Join(t.TempDir(), "relay.db"), RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	m := &Message{ID: r.NextID(), SpoolPath: "m1", Recipients: []string{rcpt}, Created: time.Now().UTC(), Remaining: 1}
	c := &Copy{ID: r.NextID(), MessageID: m.ID, Account: "shop", Recipient: rcpt, Tags: []string{"newsletter", "nov"}, State: CopyQueued, Created: m.Created}
	if err := r.AddMessage(context.Background(), m, []*Copy{c}, nil); err != nil {
		t.Fatal(err)
	}
	return r, c
}

func TestIngestHits(t *testing.T) {
	r, c := testRelayWithCopy(t, "Anna@example.org")
	now := time.Now().UTC().Truncate(time.Millisecond)
	hits := []Hit{
		{ID: "0000000000000001aaaaaaaa", Time: now, Kind: "pixel", MessageID: c.ID, IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (X11)", Protocol: "HTTP/1.1"},
		{ID: "0000000000000002aaaaaaaa", Time: now.Add(time.Second), Kind: "image", MessageID: c.ID, Position: 1, URL: "https://cdn.example/i.png", Protocol: "HTTP/2.0+tls", Machine: true},
		{ID: "0000000000000003aaaaaaaa", Time: now.Add(2 * time.Second), Kind: "click", MessageID: c.ID, Position: 2, URL: "https://shop.example/p?a=1", IP: "192.0.2.1", Referer: "https://mail.example/"},
		{ID: "0000000000000004aaaaaaaa", Time: now.Add(3 * time.Second), Kind: "click", MessageID: c.ID, Position: 2, URL: "https://shop.example/p?a=1"},
		{ID: "0000000000000005aaaaaaaa", Time: now.Add(4 * time.Second), Kind: "click", MessageID: c.ID, Position: 3, URL: "https://shop.example/q", Head: true},
		{ID: "0000000000000006aaaaaaaa", Time: now, Kind: "click", MessageID: 12345, URL: "https://shop.example/orphan"},
	}
	ctx := context.Background()
	// Sent twice, and concurrently: every hit is stored once.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.IngestHits(ctx, hits); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := r.IngestHits(ctx, hits[:2]); err != nil {
		t.Fatal(err)
	}
	got, err := r.HitCounts(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	// Machine hits (the image proxy, the HEAD request) are counted apart
	// and in no human figure; unique clicks count copies.
	want := HitCounts{Opens: 1, UniqueOpens: 1, MachineOpens: 1, Clicks: 2, UniqueClicks: 1, MachineClicks: 1}
	if got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	if o, _ := r.HitCounts(context.Background(), ""); o.Orphans != 1 {
		t.Fatalf("orphans %+v", o)
	}
	var clicks, opens []Event
	for e, err := range r.Events(ctx, "shop", LogClicks, time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		clicks = append(clicks, e)
	}
	for e, err := range r.Events(ctx, "shop", LogOpens, time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		opens = append(opens, e)
	}
	if len(clicks) != 3 || len(opens) != 2 {
		t.Fatalf("%d clicks, %d opens", len(clicks), len(opens))
	}
	e := clicks[0]
	if e.ID != c.ID || e.Recipient != "Anna@example.org" || len(e.Tags) != 2 || e.Tags[0] != "newsletter" ||
		e.Value("url") != "https://shop.example/p?a=1" || e.Value("destination") != "https://shop.example/p?a=1" ||
		e.Value("ip") != "192.0.2.1" || e.Value("headers") != `{"Referer":"https://mail.example/"}` || !e.Time.Equal(now.Add(2*time.Second)) {
		t.Fatalf("click event %+v", e)
	}
	if o := opens[0]; o.Value("protocol") != "HTTP/1.1" || o.Value("headers") != `{"User-Agent":"Mozilla/5.0 (X11)"}` || o.Recipient != "Anna@example.org" {
		t.Fatalf("open event %+v", o)
	}
	h, ok, err := r.Hit("0000000000000006aaaaaaaa")
	if err != nil || !ok || h.URL != "https://shop.example/orphan" {
		t.Fatalf("orphan hit %+v %v %v", h, ok, err)
	}
	n := 0
	if err := r.HitIDs(func(string) { n++ }); err != nil || n != len(hits) {
		t.Fatalf("%d hits stored, want %d (%v)", n, len(hits), err)
	}
}

// Retention removes raw hits older than the cutoff, whether their time
// comes from a redirector's id or, for other ids, from the record, and
// keeps the newer ones and the unique counts. Batches resume correctly.
func TestDeleteHitsBefore(t *testing.T) {
	r, c := testRelayWithCopy(t, "ben@example.org")
	now := time.Now().UTC()
	old, recent := now.Add(-48*time.Hour), now.Add(-time.Hour)
	seq := uint64(0)
	idAt := func(at time.Time) string { // a redirector's id for a hit at that time
		seq++
		return FormatID(uint64(at.UnixMilli()-idEpochMs)<<idCounterBit|seq) + "abcdef01"
	}
	var hits []Hit
	for i := 0; i < 3*hitsPruneBatch/2; i++ { // more than one batch
		at := old
		if i%3 == 0 {
			at = recent
		}
		hits = append(hits, Hit{ID: idAt(at), Time: at, Kind: "click", MessageID: c.ID, URL: "https://shop.example/p"})
	}
	hits = append(hits,
		Hit{ID: "legacy-old", Time: old, Kind: "pixel", MessageID: c.ID},
		Hit{ID: "legacy-new", Time: recent, Kind: "pixel", MessageID: c.ID})
	ctx := context.Background()
	for i := 0; i < len(hits); i += 1000 {
		if err := r.IngestHits(ctx, hits[i:min(i+1000, len(hits))]); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := r.HitCounts(context.Background(), "shop")
	// Through DeleteBefore, as the relay's retention calls it.
	p, err := r.DeleteBefore(ctx, now, Retention{Default: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n := p.Hits + p.Events // joined hits go with their events
	kept := map[string]bool{}
	if err := r.HitIDs(func(id string) { kept[id] = true }); err != nil {
		t.Fatal(err)
	}
	wantKept := 0
	for _, h := range hits {
		if h.Time.Equal(recent) {
			wantKept++
			if !kept[h.ID] {
				t.Fatalf("recent hit %s deleted", h.ID)
			}
		} else if kept[h.ID] {
			t.Fatalf("old hit %s kept", h.ID)
		}
	}
	if len(kept) != wantKept || n != len(hits)-wantKept {
		t.Fatalf("kept %d (want %d), deleted %d", len(kept), wantKept, n)
	}
	if after, _ := r.HitCounts(context.Background(), "shop"); after != before {
		t.Errorf("counts changed: %+v -> %+v", before, after)
	}
}

// Hits arrive with ascending ids and their click events with ascending
// times: the pages holding them are packed, not left half empty as bbolt
// leaves pages split by ascending inserts by default.
func TestHitPagesPacked(t *testing.T) {
	r, c := testRelayWithCopy(t, "anna@example.org")
	ctx := context.Background()
	start := time.Now().UTC()
	var ids IDGen
	for b := 0; b < 20; b++ {
		hits := make([]Hit, 1000)
		for i := range hits {
			hits[i] = Hit{ID: FormatID(ids.Next()) + "aaaaaaaa", Time: start.Add(time.Duration(b*1000+i) * time.Millisecond), Kind: "click",
				MessageID: c.ID, Position: uint32(i % 7), URL: "https://shop.example/products/shoes?color=red", IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (X11; Linux x86_64)"}
		}
		if err := r.IngestHits(ctx, hits); err != nil {
			t.Fatal(err)
		}
	}
	err := r.db.View(func(tx *bolt.Tx) error {
		for _, b := range []*bolt.Bucket{
			tx.Bucket([]byte(bucketHitIDs)),
			tx.Bucket([]byte(bucketEvents)).Bucket([]byte("shop")).Bucket([]byte("log:clicks")),
		} {
			if b == nil {
				t.Fatal("bucket missing")
			}
			s := b.Stats()
			if fill := float64(s.LeafInuse) / float64(s.LeafAlloc); s.KeyN != 20000 || fill < 0.8 {
				t.Errorf("%d keys, leaf pages %.2f full, want 20000 keys and at least 0.8", s.KeyN, fill)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkIngestHits stores batches of 1000 click hits on one real copy,
// as the shipper hands them over: the relay's cost per hit.
func BenchmarkIngestHits(b *testing.B) {
	r, err := OpenRelay(filepath.Join(b.TempDir(), "relay.db"), RelayOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	m := &Message{ID: r.NextID(), SpoolPath: "m1", Recipients: []string{"anna@example.org"}, Created: time.Now().UTC(), Remaining: 1}
	c := &Copy{ID: r.NextID(), MessageID: m.ID, Account: "shop", Recipient: "anna@example.org", Tags: []string{"newsletter"}, State: CopyQueued, Created: m.Created}
	if err := r.AddMessage(context.Background(), m, []*Copy{c}, nil); err != nil {
		b.Fatal(err)
	}
	var ids IDGen
	hits := make([]Hit, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i += len(hits) {
		for k := range hits {
			hits[k] = Hit{ID: FormatID(ids.Next()) + "aaaaaaaa", Time: time.Now().UTC(), Kind: "click", MessageID: c.ID, Position: uint32(k % 7),
				URL: "https://shop.example.com/products/shoes?color=red", IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/120", Protocol: "HTTP/1.1"}
		}
		if err := r.IngestHits(context.Background(), hits); err != nil {
			b.Fatal(err)
		}
	}
}
