package dkim

import (
	"bufio"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/mime"
)

// bigMessage returns a source of a message with a tracked HTML part and
// a 50 MB base64 attachment, new at each call.
func bigMessage() (io.Reader, int) {
	head := "From: a@sender.example\r\nTo: b@example.net\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		strings.Repeat("<p><a href=3D\"http://shop.example.com/x\">x</a></p>\r\n", 20000) +
		"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	line := strings.Repeat("QUJD", 19) + "\r\n"
	const size = 50 << 20
	return io.MultiReader(strings.NewReader(head), &repeatReader{line: line, n: size}, strings.NewReader("--B--\r\n")), size
}

// TestMemory50MB signs the tracked copy of a message with a 50 MB
// attachment with an RSA and an Ed25519 key at once (SPEC §10: heap
// growth under 32 MB), sampling the heap as both renderings stream.
func TestMemory50MB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 50 MB stream")
	}
	rk, ek := testKeys(t)
	keys := []Key{{Domain: "sender.example", Selector: "rsa1", Signer: rk}, {Domain: "sender.example", Selector: "ed1", Signer: ek}}
	calls := 0
	var sampler *sampleWriter
	render := func(w io.Writer) error {
		calls++
		src, _ := bigMessage()
		sw := &sampleWriter{w: w, baseline: sampler.baseline, peak: sampler.peak}
		bw := bufio.NewWriterSize(sw, 32<<10)
		rep, err := mime.Rewrite(bw, src, mime.Options{}, func(mime.Controls) (mime.Tracker, error) { return tracker(t, 1), nil })
		if err == nil {
			err = bw.Flush()
		}
		sampler.peak = max(sampler.peak, sw.peak)
		if err == nil && rep.Tracked != 1 {
			t.Errorf("tracked %d leaves, want 1", rep.Tracked)
		}
		return err
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sampler = &sampleWriter{baseline: ms.HeapAlloc}
	dst := &sampleWriter{w: io.Discard, baseline: ms.HeapAlloc}
	start := time.Now()
	if err := Sign(dst, render, keys, Options{}); err != nil {
		t.Fatal(err)
	}
	signedTime := time.Since(start)
	peak := max(sampler.peak, dst.peak)
	if _, size := bigMessage(); calls != 2 || dst.n < size {
		t.Fatalf("%d renderings, %d bytes written", calls, dst.n)
	}
	start = time.Now()
	calls = 0
	if err := render(io.Discard); err != nil {
		t.Fatal(err)
	}
	plainTime := time.Since(start)
	t.Logf("heap growth peak %.1f MB over a %d MB copy; signed in %v, %.2fx the time of one unsigned rendering (%v)",
		float64(peak)/(1<<20), dst.n>>20, signedTime.Round(time.Millisecond), float64(signedTime)/float64(plainTime), plainTime.Round(time.Millisecond))
	if peak >= 32<<20 {
		t.Errorf("heap grew by %d bytes, limit 32 MB", peak)
	}
}

type repeatReader struct {
	line string
	n    int
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := 0
	for k < len(p) && r.n > 0 {
		c := copy(p[k:], r.line[r.off:min(len(r.line), r.off+r.n)])
		r.off = (r.off + c) % len(r.line)
		k += c
		r.n -= c
	}
	return k, nil
}

// sampleWriter passes writes on to w and samples the heap every 4 MB.
type sampleWriter struct {
	w        io.Writer
	baseline uint64
	n, next  int
	peak     uint64
}

func (s *sampleWriter) Write(p []byte) (int, error) {
	s.n += len(p)
	if s.n >= s.next {
		s.next = s.n + 4<<20
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > s.baseline && ms.HeapAlloc-s.baseline > s.peak {
			s.peak = ms.HeapAlloc - s.baseline
		}
	}
	return s.w.Write(p)
}
