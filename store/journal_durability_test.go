package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestJournalProcessDurability: in process durability Append returns once
// the hit is written, before any fdatasync (with a long interval the log
// stays unsynced while hits are acknowledged), and the background flusher
// then catches the synced position up with the written one on its own,
// within the interval, as often as hits keep coming. Close flushes what is
// left.
func TestJournalProcessDurability(t *testing.T) {
	t.Run("append does not wait for the flush", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "j.db")
		j, err := OpenJournalWith(path, JournalOptions{Durability: DurabilityProcess, FlushInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		h := testHit(j, "click", 1)
		if err := j.Append(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		w, s := j.LogPosition()
		if w == 0 || s != 0 || j.Flushes() != 0 {
			t.Fatalf("after an acknowledged append with a one-hour interval: written %d, synced %d, %d flushes; want written > 0 and nothing flushed", w, s, j.Flushes())
		}
		// Without any flush, what was written is readable by the next
		// open (the kernel holds it): what kill -9 relies on.
		j2, err := openUnflushed(t, path)
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := j2.Contains(h.ID); !ok {
			t.Fatal("the written, unflushed hit is not in a copy of the journal")
		}
		_ = j2.Close()
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		if w2, s2 := j.LogPosition(); s2 != w2 || j.Flushes() != 1 {
			t.Fatalf("after Close: written %d, synced %d, %d flushes: Close did not flush", w2, s2, j.Flushes())
		}
	})
	t.Run("the flusher catches up within the interval", func(t *testing.T) {
		const interval = 20 * time.Millisecond
		j, err := OpenJournalWith(filepath.Join(t.TempDir(), "j.db"), JournalOptions{Durability: DurabilityProcess, FlushInterval: interval})
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		var lags []time.Duration
		for i := range 20 {
			if err := j.Append(context.Background(), testHit(j, "click", uint64(i))); err != nil {
				t.Fatal(err)
			}
			written, _ := j.LogPosition()
			start := time.Now()
			for {
				if _, s := j.LogPosition(); s >= written {
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("append %d: synced position never reached %d without help", i, written)
				}
				time.Sleep(time.Millisecond)
			}
			lags = append(lags, time.Since(start))
		}
		if j.Flushes() < 20 {
			t.Fatalf("%d flushes for 20 spaced appends", j.Flushes())
		}
		// Each hit waits for the interval, give or take the scheduler
		// and the flush itself; far more would mean that something other
		// than the interval drives the flush.
		var worst time.Duration
		for _, l := range lags {
			worst = max(worst, l)
		}
		t.Logf("time from an acknowledged append to its fdatasync: %v (interval %v)", lags, interval)
		if worst > 25*interval {
			t.Fatalf("a written hit waited %v for its flush; the interval is %v", worst, interval)
		}
	})
}

// openUnflushed opens a copy of the journal at path, taken as the files
// are now (what a process started after a kill -9 finds).
func openUnflushed(t *testing.T, path string) (*Journal, error) {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{path, segPath(path, 0), segPath(path, 1)} {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			return nil, err
		}
	}
	return OpenJournal(filepath.Join(dir, filepath.Base(path)))
}

// TestJournalCreatesFolders: a journal path whose folders do not exist yet
// gets them, private (0700), instead of failing.
func TestJournalCreatesFolders(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "j.db")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, d := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: mode %v, want a 0700 folder", d, fi.Mode())
		}
	}
	if err := j.Append(context.Background(), testHit(j, "click", 1)); err != nil {
		t.Fatal(err)
	}
}
