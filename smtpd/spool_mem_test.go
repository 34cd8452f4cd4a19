package smtpd

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// bigMessage streams a multipart message of about size bytes: a small
// tracked HTML part and a large base64 attachment, never held in memory.
func bigMessage(size int) io.Reader {
	head := "From: a@x.test\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n" +
		"--BB\r\nContent-Type: text/html\r\n\r\n<a href=\"https://x.test/\">x</a>\r\n" +
		"--BB\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	line := strings.Repeat("QUJDRA", 12) + "\r\n" // 74 bytes
	n := size / len(line)
	body := io.MultiReader(strings.NewReader(head), &repeatReader{s: line, n: n}, strings.NewReader("--BB--\r\n"))
	return body
}

type repeatReader struct {
	s   string
	n   int
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	w := 0
	for w < len(p) && r.n > 0 {
		c := copy(p[w:], r.s[r.off:])
		w += c
		r.off += c
		if r.off == len(r.s) {
			r.off = 0
			r.n--
		}
	}
	if w == 0 {
		return 0, io.EOF
	}
	return w, nil
}

// TestBigMessageMemory: a 50 MB message is spooled and delivered with the
// heap growing by far less than its size (SPEC §10: under 32 MB).
func TestBigMessageMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB message skipped in -short mode")
	}
	out := t.TempDir()
	r := newDLRig(t, "", map[string]Upstream{"up": &FolderUpstream{Dir: out, NoSync: true}}, nil)
	r.spool.cfg.MaxMessageBytes = 64 << 20
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	rc, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, bigMessage(50<<20))
	if err != nil {
		t.Fatal(err)
	}
	r.run()
	dlWait(t, "delivery", func() bool { return r.copyState(rc.CopyIDs[0]).State == store.CopyDelivered })
	close(stop)
	<-sampled
	fi, err := os.Stat(filepath.Join(out, store.FormatID(rc.CopyIDs[0])+".eml"))
	if err != nil || fi.Size() < 50<<20 {
		t.Fatalf("delivered file: %v %v", fi, err)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use grew by %.1f MB for a %.0f MB message", float64(growth)/(1<<20), float64(fi.Size())/(1<<20))
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MB: the message is buffered somewhere", growth>>20)
	}
}
