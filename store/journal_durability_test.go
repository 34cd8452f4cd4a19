package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// TestJournalBelowFloor: below the hits' floor (a floor higher than any
// disk's free space) the journal keeps hits in its log and never spills
// them: not after spillAfter, not at Close. Deletes still work and Len
// stays right; the next open (with room) finds every hit not deleted, and
// once the log is full, Append fails at once with ErrHitsFull and Ready
// says so.
func TestJournalBelowFloor(t *testing.T) {
	bothDurabilities(t, func(t *testing.T, o JournalOptions) {
		path := filepath.Join(t.TempDir(), "j.db")
		o.MinFree = 1 << 62
		j, err := OpenJournalWith(path, o)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := range 50 {
			h := testHit(j, "click", uint64(i))
			if err := j.Append(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, h.ID)
		}
		time.Sleep(spillAfter + 3*moverTick) // past the age at which hits spill
		if n := boltCount(t, j); n != 0 {
			t.Fatalf("%d hits spilled into bbolt below the floor", n)
		}
		if err := j.Delete(ids[:10]); err != nil || j.Len() != 40 {
			t.Fatalf("Delete below the floor: %v, Len %d", err, j.Len())
		}
		if err := j.Ready(); err != nil {
			t.Fatalf("Ready with an almost empty log: %v", err)
		}
		// Fill the log: both segments, nothing settled, nothing spilled.
		big := strings.Repeat("u", 4000)
		var full error
		for i := 0; i < 3*logSegSize/4000 && full == nil; i++ {
			h := testHit(j, "click", uint64(i))
			h.UserAgent = big
			if full = j.Append(context.Background(), h); full == nil {
				ids = append(ids, h.ID)
			}
		}
		if !errors.Is(full, ErrHitsFull) {
			t.Fatalf("appending past a full log below the floor: %v", full)
		}
		if err := j.Ready(); !errors.Is(err, ErrHitsFull) {
			t.Fatalf("Ready with the log full below the floor: %v", err)
		}
		start := time.Now()
		h := testHit(j, "click", 1)
		h.UserAgent = big
		if err := j.Append(context.Background(), h); !errors.Is(err, ErrHitsFull) || time.Since(start) > time.Second {
			t.Fatalf("a further append: %v after %v, want ErrHitsFull at once", err, time.Since(start))
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		j, err = OpenJournalWith(path, JournalOptions{Durability: o.Durability})
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		if j.Len() != len(ids)-10 {
			t.Fatalf("reopened with room: Len %d, want %d", j.Len(), len(ids)-10)
		}
		for i, id := range ids {
			if ok, _ := j.Contains(id); ok != (i >= 10) {
				t.Fatalf("hit %d: in the journal %v, want %v", i, ok, i >= 10)
			}
		}
	})
}
