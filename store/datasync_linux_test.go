//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le)

package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// submitStray submits a flush of f on s's context that sync did not make
// and that nobody collects, as a completion left behind by a bug would be.
// It returns false once the context is full.
func submitStray(t *testing.T, s *dataSyncer, f *os.File, resfd bool) bool {
	t.Helper()
	cb := iocb{data: 1 << 63, opcode: iocbCmdFdsync, fildes: uint32(f.Fd())}
	if resfd {
		cb.flags, cb.resfd = iocbFlagResfd, uint32(s.efd)
	}
	cbs := [1]*iocb{&cb}
	_, _, e := unix.Syscall(unix.SYS_IO_SUBMIT, uintptr(s.ctx), 1, uintptr(unsafe.Pointer(&cbs[0])))
	if e == unix.EAGAIN {
		return false
	}
	if e != 0 {
		t.Fatal(e)
	}
	return true
}

// syncWithin runs s.sync(f) and fails the test if it takes longer than d.
func syncWithin(t *testing.T, s *dataSyncer, f *os.File, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.sync(f) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("sync still running after %v", d)
		return nil
	}
}

// aioFile returns an AIO syncer and a new file to flush (skipping where
// the kernel refuses AIO).
func aioFile(t *testing.T) (*dataSyncer, *os.File) {
	t.Helper()
	skipWithoutAIO(t)
	s := newSyncer(t, false)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return s, f
}

// A context whose slots are all taken makes sync flush the plain way,
// promptly, instead of retrying io_submit forever.
func TestDataSyncContextFull(t *testing.T) {
	s, f := aioFile(t)
	n := 0
	for submitStray(t, s, f, false) {
		n++
	}
	if n == 0 {
		t.Fatal("the context took no flush")
	}
	if err := syncWithin(t, s, f, 5*time.Second); err != nil {
		t.Fatalf("sync with a full context: %v", err)
	}
}

// Completions of other flushes, and the eventfd counts they leave, are not
// taken for this flush's: each sync returns on its own completion.
func TestDataSyncStrayCompletions(t *testing.T) {
	s, f := aioFile(t)
	for i := range 20 {
		if !submitStray(t, s, f, i%2 == 0) {
			t.Fatal("context full")
		}
		if err := syncWithin(t, s, f, 5*time.Second); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		if !s.aio() {
			t.Fatalf("sync %d gave up AIO", i)
		}
	}
}
