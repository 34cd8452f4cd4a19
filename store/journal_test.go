package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func testHit(j *Journal, kind string, msg uint64) Hit {
	return Hit{ID: j.NewHitID(), Time: time.Now().UTC(), Kind: kind, MessageID: msg, URL: "https://shop.example.com/x", IP: "192.0.2.1"}
}

func testJournalDurableAcrossReopen(t *testing.T, o JournalOptions) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	var want []Hit
	for i := 0; i < 10; i++ {
		h := testHit(j, "click", uint64(i))
		if err := j.Append(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		want = append(want, h)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(context.Background(), testHit(j, "click", 1)); !errors.Is(err, ErrJournalClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	j, err = OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Len() != len(want) {
		t.Fatalf("Len %d after reopen, want %d", j.Len(), len(want))
	}
	got, err := j.Pending(100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].MessageID != want[i].MessageID || !got[i].Time.Equal(want[i].Time) {
			t.Fatalf("hit %d: got %+v want %+v", i, got[i], want[i])
		}
	}
	if ts, ok := j.Oldest(); !ok || time.Since(ts) > time.Minute {
		t.Fatalf("Oldest %v %v", ts, ok)
	}
	if err := j.Delete([]string{want[0].ID, want[1].ID, "no-such-id"}); err != nil {
		t.Fatal(err)
	}
	if j.Len() != len(want)-2 {
		t.Fatalf("Len %d after delete", j.Len())
	}
	if ok, _ := j.Contains(want[0].ID); ok {
		t.Fatal("deleted hit still there")
	}
}

func TestJournalDurableAcrossReopen(t *testing.T) {
	bothDurabilities(t, testJournalDurableAcrossReopen)
}

func testJournalGroupCommit(t *testing.T, o JournalOptions) {
	j, err := OpenJournalWith(filepath.Join(t.TempDir(), "j.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const workers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	var mu sync.Mutex
	want := map[string]bool{}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				h := testHit(j, "pixel", uint64(i))
				mu.Lock()
				want[h.ID] = true
				mu.Unlock()
				errs <- j.Append(context.Background(), h)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if j.Len() != workers*each {
		t.Fatalf("Len %d", j.Len())
	}
	if c := j.Commits(); c >= workers*each {
		t.Fatalf("%d commits for %d hits: commits are not shared", c, workers*each)
	}
	// Each hit once (in the order the log took them).
	hits, _ := j.Pending(workers * each)
	for _, h := range hits {
		if !want[h.ID] {
			t.Fatalf("Pending: %s twice or never appended", h.ID)
		}
		delete(want, h.ID)
	}
	if len(want) != 0 {
		t.Fatalf("Pending: %d hits missing", len(want))
	}
}

func TestJournalGroupCommit(t *testing.T) { bothDurabilities(t, testJournalGroupCommit) }

func testJournalCloseCommitsInFlight(t *testing.T, o JournalOptions) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok []string
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := testHit(j, "click", 1)
			if j.Append(context.Background(), h) == nil {
				mu.Lock()
				ok = append(ok, h.ID)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	j, err = OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, id := range ok {
		if found, err := j.Contains(id); err != nil || !found {
			t.Fatalf("acknowledged hit %s lost across Close", id)
		}
	}
}

func TestJournalCloseCommitsInFlight(t *testing.T) {
	bothDurabilities(t, testJournalCloseCommitsInFlight)
}

func TestJournalLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := OpenJournal(path); err == nil {
		t.Fatal("second open of a locked journal succeeded")
	}
}

func TestHitIDsUnique(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenJournal(filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenJournal(filepath.Join(dir, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		for _, id := range []string{a.NewHitID(), b.NewHitID()} {
			if seen[id] || len(id) != 24 {
				t.Fatalf("id %q repeated or malformed", id)
			}
			seen[id] = true
		}
	}
}

// BenchmarkJournal compares the journal's group commit (Append: one write
// and, in disk durability, one fdatasync into the hit log, bbolt filled
// behind by the mover; in process durability the flusher fdatasyncs every
// 10 ms) with bbolt's DB.Batch (a bbolt commit per batch: two fdatasyncs and a
// write per dirty page), under parallel appenders.
func BenchmarkJournal(b *testing.B) {
	for _, mode := range []string{"groupcommit-disk", "groupcommit-process", "bbolt-batch"} {
		for _, par := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/par=%d", mode, par), func(b *testing.B) {
				o := JournalOptions{}
				if mode == "groupcommit-process" {
					o.Durability = DurabilityProcess
				}
				j, err := OpenJournalWith(filepath.Join(b.TempDir(), "j.db"), o)
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				b.SetParallelism(par)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						h := testHit(j, "click", 42)
						var err error
						if mode != "bbolt-batch" {
							err = j.Append(context.Background(), h)
						} else {
							err = j.AppendBatch(h)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hits/s")
				if mode != "bbolt-batch" {
					b.ReportMetric(float64(b.N)/float64(max(j.Commits(), 1)), "hits/commit")
					b.ReportMetric(float64(b.N)/float64(max(j.Flushes(), 1)), "hits/flush")
				}
			})
		}
	}
}

func TestJournalNextUnreadable(t *testing.T) {
	j, err := OpenJournal(filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	h := testHit(j, "click", 1)
	if err := j.PutRaw("0000000000000001deadbeef", []byte("{garbled")); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	hits, bad, err := j.Next(10)
	if err != nil || len(hits) != 1 || hits[0].ID != h.ID || len(bad) != 1 || bad[0] != "0000000000000001deadbeef" {
		t.Fatalf("Next: %v %v %v", hits, bad, err)
	}
	if hits, bad, _ := j.Next(1); len(hits)+len(bad) != 1 {
		t.Fatalf("Next(1) returned %d records", len(hits)+len(bad))
	}
	if p, _ := j.Pending(10); len(p) != 1 {
		t.Fatalf("Pending returned %d hits", len(p))
	}
	if err := j.Delete(bad); err != nil || j.Len() != 1 {
		t.Fatalf("Delete unreadable: %v, Len %d", err, j.Len())
	}
}

// TestJournalPreallocated: the file is kept written (no holes) ahead of
// bbolt's high-water mark, also as the journal grows past the first chunk,
// so fsyncs never have to commit block allocations.
func TestJournalPreallocated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		var hw int64
		_ = j.db.View(func(tx *bolt.Tx) error { hw = tx.Size(); return nil })
		if st.Size < hw+preallocChunk/2 || st.Blocks*512 < st.Size {
			t.Fatalf("%s: file %d bytes, %d allocated, high-water %d: not preallocated", when, st.Size, st.Blocks*512, hw)
		}
	}
	check("open")
	big := strings.Repeat("x", 4000)
	for i := 0; i < 1500; i++ { // ~6 MB: past the first chunk
		h := testHit(j, "click", uint64(i))
		h.UserAgent = big
		if err := j.Append(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	check("grown")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if j, err = OpenJournal(path); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Len() != 1500 {
		t.Fatalf("Len %d after reopen", j.Len())
	}
	check("reopen")
}

// TestJournalLogReplay: hits acknowledged by Append are in the log, and the
// log alone brings them back (the bbolt file lost, as after a crash
// between the log's fsync and the mover's commit). A torn last record is
// dropped, the ones before it kept; deleted hits do not come back.
func testJournalLogReplay(t *testing.T, o JournalOptions) {
	tests := []struct {
		name      string
		loseBolt  bool
		tear      bool
		deleteN   int
		wantCount int
	}{
		{"reopen", false, false, 0, 20},
		{"reopen after deletes", false, false, 5, 15},
		{"bbolt lost", true, false, 0, 20},
		{"bbolt lost, torn tail", true, true, 0, 19},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j.db")
			j, err := OpenJournalWith(path, o)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for i := 0; i < 20; i++ {
				h := testHit(j, "click", uint64(i))
				if err := j.Append(context.Background(), h); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, h.ID)
			}
			if err := j.Delete(ids[:tc.deleteN]); err != nil {
				t.Fatal(err)
			}
			seg, end := j.cur, j.segs[j.cur].off
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.loseBolt {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
			if tc.tear {
				f, err := os.OpenFile(segPath(path, seg), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt([]byte{0xff, 0xee}, end-3); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			j, err = OpenJournalWith(path, o)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if j.Len() != tc.wantCount {
				t.Fatalf("Len %d after reopen, want %d", j.Len(), tc.wantCount)
			}
			for i, id := range ids {
				found, err := j.Contains(id)
				want := i >= tc.deleteN && i < tc.deleteN+tc.wantCount
				if err != nil || found != want {
					t.Fatalf("hit %d: found %v, want %v (%v)", i, found, want, err)
				}
			}
			// A second reopen finds the same: the replay is not repeated
			// into deleted hits, and new appends still work.
			h := testHit(j, "pixel", 1)
			if err := j.Append(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			if ok, _ := j.Contains(h.ID); !ok || j.Len() != tc.wantCount+1 {
				t.Fatalf("after reopen: append not visible, Len %d", j.Len())
			}
		})
	}
}

func TestJournalLogReplay(t *testing.T) { bothDurabilities(t, testJournalLogReplay) }

// TestJournalSegmentSwitch: more hits than one log segment holds, shipped
// (deleted) as they come, all kept and readable, across a reopen.
func testJournalSegmentSwitch(t *testing.T, o JournalOptions) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("y", 4000)
	const n = 3 * logSegSize / 4000 // three segments' worth
	var kept, del []string
	for i := 0; i < n; i++ {
		h := testHit(j, "click", uint64(i))
		h.UserAgent = big
		if err := j.Append(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			del = append(del, h.ID)
		} else {
			kept = append(kept, h.ID)
		}
		if len(del) == 50 { // shipped in batches, as the shipper does
			if err := j.Delete(del); err != nil {
				t.Fatal(err)
			}
			del = del[:0]
		}
	}
	if err := j.Delete(del); err != nil {
		t.Fatal(err)
	}
	if j.nextGen < 4 {
		t.Fatalf("generation %d: the log never switched segments", j.nextGen)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err = OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Len() != len(kept) {
		t.Fatalf("Len %d, want %d", j.Len(), len(kept))
	}
	hits, bad, err := j.Next(len(kept) + 10)
	if err != nil || len(bad) != 0 || len(hits) != len(kept) {
		t.Fatalf("Next: %d hits, %d unreadable, %v", len(hits), len(bad), err)
	}
	for i := range kept {
		if hits[i].ID != kept[i] || hits[i].UserAgent != big {
			t.Fatalf("hit %d: %s", i, hits[i].ID)
		}
	}
}

func TestJournalSegmentSwitch(t *testing.T) { bothDurabilities(t, testJournalSegmentSwitch) }

// boltCount is how many hits the bbolt file itself holds.
func boltCount(t *testing.T, j *Journal) int {
	t.Helper()
	var n int
	if err := j.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(journalBucket).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestJournalSpill: hits that the shipper takes and deletes
// promptly leave the journal without being written into bbolt; hits it
// does not settle within spillAfter are spilled there, still returned by
// Next, and deleted from there.
func testJournalSpill(t *testing.T, o JournalOptions) {
	j, err := OpenJournalWith(filepath.Join(t.TempDir(), "j.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendN := func(n int) []string {
		var ids []string
		for i := 0; i < n; i++ {
			h := testHit(j, "click", uint64(i))
			if err := j.Append(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, h.ID)
		}
		return ids
	}
	ship := func(want []string) {
		t.Helper()
		hits, bad, err := j.Next(1000)
		if err != nil || len(bad) != 0 || len(hits) != len(want) {
			t.Fatalf("Next: %d hits, %v, %v; want %d", len(hits), bad, err, len(want))
		}
		ids := make([]string, len(hits))
		for i, h := range hits {
			if h.ID != want[i] {
				t.Fatalf("hit %d is %s, want %s", i, h.ID, want[i])
			}
			ids[i] = h.ID
		}
		if err := j.Delete(ids); err != nil {
			t.Fatal(err)
		}
	}

	ship(appendN(50))
	time.Sleep(spillAfter + 3*moverTick)
	if n := boltCount(t, j); n != 0 || j.Len() != 0 {
		t.Fatalf("promptly shipped hits: %d in bbolt, Len %d; want none", n, j.Len())
	}

	late := appendN(30)
	deadline := time.Now().Add(spillAfter + 2*time.Second)
	for boltCount(t, j) != 30 {
		if time.Now().After(deadline) {
			t.Fatalf("unshipped hits not spilled: %d in bbolt", boltCount(t, j))
		}
		time.Sleep(moverTick)
	}
	if j.Len() != 30 {
		t.Fatalf("Len %d after the spill, want 30", j.Len())
	}
	fresh := appendN(5) // held in memory, behind bbolt's backlog
	ship(append(late, fresh...))
	if n := boltCount(t, j); n != 0 || j.Len() != 0 {
		t.Fatalf("after shipping: %d in bbolt, Len %d", n, j.Len())
	}
}

func TestJournalSpill(t *testing.T) { bothDurabilities(t, testJournalSpill) }

// TestJournalShipUnderLoad: appenders, and a shipper that stalls for
// longer than spillAfter now and then (the relay is down), so hits move
// between memory and bbolt while they are being read and deleted. Every
// hit is shipped at least once, none is lost, and the journal ends empty;
// after a clean reopen it is still empty.
func testJournalShipUnderLoad(t *testing.T, o JournalOptions) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 150
	var mu sync.Mutex
	appended := map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				h := testHit(j, "click", uint64(i))
				h.UserAgent = strings.Repeat("u", 1500) // fill log segments too
				if err := j.Append(context.Background(), h); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				appended[h.ID] = true
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	appendersDone := make(chan struct{})
	go func() { wg.Wait(); close(appendersDone) }()

	shipped := map[string]bool{}
	stalled := false
	start := time.Now()
	for {
		select {
		case <-appendersDone:
			appendersDone = nil
		default:
		}
		// Stall once, for longer than spillAfter, a little way in.
		if !stalled && time.Since(start) > 200*time.Millisecond {
			stalled = true
			time.Sleep(spillAfter + 3*moverTick)
			if j.n.Load() == 0 {
				t.Fatal("nothing was spilled into bbolt during the stall")
			}
		}
		hits, bad, err := j.Next(100)
		if err != nil || len(bad) != 0 {
			t.Fatalf("Next: %v %v", bad, err)
		}
		if len(hits) == 0 && appendersDone == nil {
			break
		}
		ids := make([]string, len(hits))
		for i, h := range hits {
			ids[i] = h.ID
			shipped[h.ID] = true
		}
		if err := j.Delete(ids); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	for id := range appended {
		if !shipped[id] {
			t.Errorf("hit %s never shipped", id)
		}
	}
	mu.Unlock()
	if len(appended) != workers*each {
		t.Fatalf("%d appended", len(appended))
	}
	if j.Len() != 0 || boltCount(t, j) != 0 {
		t.Fatalf("after shipping everything: Len %d, %d in bbolt", j.Len(), boltCount(t, j))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if j, err = OpenJournalWith(path, o); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Len() != 0 {
		t.Fatalf("reopened: %d hits came back", j.Len())
	}
}

func TestJournalShipUnderLoad(t *testing.T) { bothDurabilities(t, testJournalShipUnderLoad) }

// TestJournalLogFullFails: while bbolt fails (a full disk) and the shipper
// is away, the log fills; then Append fails with a clear error instead of
// hanging, Close returns, and every hit Append acknowledged is there once
// bbolt works again.
func testJournalLogFullFails(t *testing.T, o JournalOptions) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	j.spillWait = 300 * time.Millisecond
	j.failSpill.Store(true)
	big := strings.Repeat("z", 4000)
	var acked []string
	var failed error
	for i := 0; i < 3*logSegSize/4000 && failed == nil; i++ {
		h := testHit(j, "click", uint64(i))
		h.UserAgent = big
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := j.Append(ctx, h)
		cancel()
		switch {
		case err == nil:
			acked = append(acked, h.ID)
		case errors.Is(err, ErrHitsFull):
			failed = err
		default:
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if failed == nil {
		t.Fatalf("%d appends into a full log all succeeded", len(acked))
	}
	closed := make(chan error, 1)
	go func() { closed <- j.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs while bbolt fails")
	}
	// bbolt works again: the acknowledged hits come back from the log.
	j, err = OpenJournalWith(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, id := range acked {
		if ok, err := j.Contains(id); err != nil || !ok {
			t.Fatalf("acknowledged hit %s lost (%v); %d acked", id, err, len(acked))
		}
	}
	if j.Len() != len(acked) {
		t.Fatalf("Len %d, want %d", j.Len(), len(acked))
	}
}

func TestJournalLogFullFails(t *testing.T) { bothDurabilities(t, testJournalLogFullFails) }

// bothDurabilities runs test once per durability.
func bothDurabilities(t *testing.T, test func(*testing.T, JournalOptions)) {
	for _, d := range []Durability{DurabilityDisk, DurabilityProcess} {
		t.Run(d.String(), func(t *testing.T) { test(t, JournalOptions{Durability: d}) })
	}
}
