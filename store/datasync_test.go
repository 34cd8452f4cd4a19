package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// skipWithoutAIO skips a test of the AIO path where the kernel refuses AIO
// (not Linux, a seccomp filter, a sandbox): the journal then flushes with
// fdatasync, which the other cases test. CI's machine allows AIO.
func skipWithoutAIO(t *testing.T) {
	t.Helper()
	if err := aioAvailable(); err != nil {
		t.Skipf("no AIO here (%v): the fdatasync fallback is what runs, and is tested", err)
	}
}

// newSyncer returns a dataSyncer that uses AIO or, with blocking, fdatasync.
func newSyncer(t testing.TB, blocking bool) *dataSyncer {
	t.Helper()
	forceBlockingSync.Store(blocking)
	s := newDataSyncer()
	forceBlockingSync.Store(false)
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestDataSync(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		name := map[bool]string{false: "aio", true: "fdatasync"}[blocking]
		t.Run(name, func(t *testing.T) {
			if !blocking {
				skipWithoutAIO(t)
			}
			s := newSyncer(t, blocking)
			if !blocking && !s.aio() {
				t.Fatal("the kernel allows AIO, but the syncer fell back to fdatasync")
			}
			p := filepath.Join(t.TempDir(), "f")
			f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want := []byte{}
			for i := range 200 {
				rec := bytes.Repeat([]byte{byte(i)}, 100+i)
				if _, err := f.WriteAt(rec, int64(len(want))); err != nil {
					t.Fatal(err)
				}
				want = append(want, rec...)
				if err := s.sync(f); err != nil {
					t.Fatalf("sync %d: %v", i, err)
				}
			}
			if s.aio() == blocking {
				t.Fatalf("after 200 flushes aio() = %v, want %v", s.aio(), !blocking)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("file holds %d bytes (err %v), want the %d written", len(got), err, len(want))
			}
		})
	}
}

// A flush that fails is reported, and a bad descriptor does not turn AIO
// off.
func TestDataSyncErrors(t *testing.T) {
	skipWithoutAIO(t)
	s := newSyncer(t, false)
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	closed, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	fd := closed.Fd()
	closed.Close()
	// A closed *os.File refuses before any system call; a descriptor
	// number that is closed reaches the kernel.
	bad := os.NewFile(fd, "closed")
	err = s.sync(bad)
	_ = bad.Close() // now, before the number can be reused (it clears the finalizer)
	if err == nil {
		t.Fatal("sync of a closed descriptor succeeded")
	}
	if !s.aio() {
		t.Fatal("a bad descriptor turned AIO off")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := s.sync(w); err == nil {
		t.Fatal("sync of a pipe succeeded")
	}
	if err := s.sync(f); err != nil {
		t.Fatalf("sync after the errors: %v", err)
	}
	f.Close()
}

// Syncers of several journals may flush at once.
func TestDataSyncConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for range 4 {
		s := newSyncer(t, false)
		f, err := os.CreateTemp(t.TempDir(), "f")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if _, err := f.WriteAt([]byte("x"), int64(i)); err != nil {
					t.Error(err)
					return
				}
				if err := s.sync(f); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkDataSync measures one write and flush of 4 KiB, through AIO
// and through fdatasync, with nothing else running (the gain AIO brings
// is in scheduling under load, which this does not show).
func BenchmarkDataSync(b *testing.B) {
	for _, blocking := range []bool{true, false} {
		name := map[bool]string{false: "aio", true: "fdatasync"}[blocking]
		b.Run(name, func(b *testing.B) {
			s := newSyncer(b, blocking)
			f, err := os.CreateTemp(b.TempDir(), "f")
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			if _, err := f.WriteAt(make([]byte, 1<<20), 0); err != nil {
				b.Fatal(err)
			}
			for i := 0; b.Loop(); i++ {
				if _, err := f.WriteAt(buf, int64(i%256)*4096); err != nil {
					b.Fatal(err)
				}
				if err := s.sync(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The iocb and io_event layouts are the kernel's (64 and 32 bytes).
func TestAIOLayout(t *testing.T) {
	if n := aioLayout(); n != [2]uintptr{64, 32} && n != [2]uintptr{} {
		t.Fatalf("struct sizes %v, want the kernel's [64 32]", n)
	}
}

// The journal's log works through either flush: every acknowledged hit
// is in the log file (read back as recovery reads it) before Close spills
// anything, and the journal on Linux uses AIO.
func TestJournalFlushPaths(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		name := map[bool]string{false: "aio", true: "fdatasync"}[blocking]
		t.Run(name, func(t *testing.T) {
			forceBlockingSync.Store(blocking)
			path := filepath.Join(t.TempDir(), "j.db")
			j, err := OpenJournal(path)
			forceBlockingSync.Store(false)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if want := aioAvailable() == nil && !blocking; j.syncer.aio() != want {
				t.Fatalf("journal flushes through AIO: %v, want %v", j.syncer.aio(), want)
			}
			var wg sync.WaitGroup
			ids := make([]string, 64)
			for i := range ids {
				h := testHit(j, "click", uint64(i))
				ids[i] = h.ID
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := j.Append(context.Background(), h); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			logged := map[string]bool{}
			for i := range j.segs {
				f, err := os.Open(segPath(path, i))
				if err != nil {
					t.Fatal(err)
				}
				gen, err := segGen(f)
				if err == nil {
					err = readSeg(f, gen, 0, func(k, _ []byte) error { logged[string(k)] = true; return nil })
				}
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			for i, id := range ids {
				if !logged[id] {
					t.Fatalf("hit %d acknowledged but not in the log", i)
				}
			}
		})
	}
}
