package mime

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// BenchmarkNewsletter measures the walker on a typical newsletter
// (multipart/alternative, quoted-printable HTML with 40 links and images)
// with the real rewrite.Tracker, and reports its speed as a ratio to a
// plain io.Copy of the same bytes measured in the same run, and to the
// real tracker alone on the already decoded HTML (what the walk adds:
// splitting, QP decode and re-encode, spooling).
func BenchmarkNewsletter(b *testing.B) {
	path := filepath.Join(moduleRoot(b), "..", "shared", "bench", "newsletter.eml")
	msg, err := os.ReadFile(path)
	if err != nil {
		b.Skipf("newsletter absent (%v): it sits beside the checkout in CI", err)
	}
	// measure runs f for about 300 ms and returns its time per call.
	measure := func(f func()) float64 {
		n := 0
		start := nowNs()
		for nowNs()-start < 300e6 {
			f()
			n++
		}
		return float64(nowNs()-start) / float64(n)
	}
	var cdst bytes.Buffer
	cdst.Grow(len(msg))
	copyNs := func() float64 {
		return measure(func() {
			cdst.Reset()
			io.Copy(&cdst, readerOnly{bytes.NewReader(msg)})
		})
	}
	base := copyNs()
	// The tracker alone on the decoded HTML, for the walker's own cost.
	capture := &fakeTracker{}
	if _, err := Rewrite(io.Discard, bytes.NewReader(msg), Options{}, func(Controls) (Tracker, error) { return capture, nil }); err != nil || len(capture.calls) == 0 {
		b.Fatalf("no HTML part found: %v", err)
	}
	trackerNs := func() float64 {
		return measure(func() {
			rec, _ := newRecorder(1)
			for _, c := range capture.calls {
				if c.html {
					rec.tr.HTML(io.Discard, bytes.NewReader(c.in))
				}
			}
		})
	}
	trackerOnly := trackerNs()
	var dst bytes.Buffer
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec, err := newRecorder(1)
		if err != nil {
			b.Fatal(err)
		}
		dst.Reset()
		rep, err := Rewrite(&dst, bytes.NewReader(msg), Options{}, func(Controls) (Tracker, error) { return rec.tr, nil })
		if err != nil || rep.Tracked == 0 {
			b.Fatalf("%v %+v", err, rep)
		}
	}
	b.StopTimer()
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(base/perOp, "x-of-io.Copy")
	b.ReportMetric(trackerOnly/perOp, "x-of-tracker-alone")
}

// TestMemory50MB streams a message with a 50 MB attachment and an HTML
// part through the walker and asserts the heap grows by less than 32 MB
// (SPEC §10), sampling the live heap as output is written.
func TestMemory50MB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 50 MB stream")
	}
	head := "From: a@example.com\r\nTo: b@example.net\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		strings.Repeat("<p><a href=3D\"http://shop.example.com/x\">x</a></p>\r\n", 20000) +
		"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	line := strings.Repeat("QUJD", 19) + "\r\n"
	const size = 50 << 20
	src := io.MultiReader(strings.NewReader(head), &repeatReader{line: line, n: size}, strings.NewReader("--B--\r\n"))

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	sw := &sampleWriter{baseline: baseline}
	rep, err := Rewrite(sw, src, Options{}, func(Controls) (Tracker, error) { return &fakeTracker{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tracked != 1 || sw.n < size {
		t.Fatalf("tracked %d, wrote %d bytes", rep.Tracked, sw.n)
	}
	t.Logf("heap growth peak %.1f MB over a %d MB message", float64(sw.peak)/(1<<20), sw.n>>20)
	if sw.peak >= 32<<20 {
		t.Errorf("heap grew by %d bytes, limit 32 MB", sw.peak)
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
		c := copy(p[k:], r.line[r.off:])
		r.off = (r.off + c) % len(r.line)
		k += c
		r.n -= c
	}
	return k, nil
}

// sampleWriter discards output and samples the heap every 4 MB.
type sampleWriter struct {
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
	return len(p), nil
}
