package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func testHit(j *Journal, kind string, msg uint64) Hit {
	return Hit{ID: j.NewHitID(), Time: time.Now().UTC(), Kind: kind, MessageID: msg, URL: "https://shop.example.com/x", IP: "192.0.2.1"}
}

func TestJournalDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournal(path)
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
	j, err = OpenJournal(path)
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

func TestJournalGroupCommit(t *testing.T) {
	j, err := OpenJournal(filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const workers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				errs <- j.Append(context.Background(), testHit(j, "pixel", uint64(i)))
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
	hits, _ := j.Pending(workers * each)
	for i := 1; i < len(hits); i++ {
		if hits[i-1].ID >= hits[i].ID {
			t.Fatal("Pending not in id order")
		}
	}
}

func TestJournalCloseCommitsInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := OpenJournal(path)
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
	j, err = OpenJournal(path)
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

// BenchmarkJournal compares the journal's own group commit with bbolt's
// DB.Batch, each with fsync, under parallel appenders.
func BenchmarkJournal(b *testing.B) {
	for _, mode := range []string{"groupcommit", "bbolt-batch"} {
		for _, par := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/par=%d", mode, par), func(b *testing.B) {
				j, err := OpenJournal(filepath.Join(b.TempDir(), "j.db"))
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
						if mode == "groupcommit" {
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
				if mode == "groupcommit" {
					b.ReportMetric(float64(b.N)/float64(max(j.Commits(), 1)), "hits/commit")
				}
			})
		}
	}
}
