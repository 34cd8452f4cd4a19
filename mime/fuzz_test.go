package mime

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRewrite checks that the walker never fails on content (only I/O
// errors are errors), never panics, keeps its output within a bound of its
// input, and keeps the fidelity property, with the fake tracker and with
// the real rewrite.Tracker. Seeds: the messages under testdata/mime and,
// when present, a sample of the shared MIME corpus.
func FuzzRewrite(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(moduleRoot(f), "testdata", "mime", "*", "input.eml"))
	corpus := filepath.Join(moduleRoot(f), "..", "shared", "corpora", "mime")
	for _, g := range []string{"cpython-test_email/msg_1*.txt", "mime4j/core/src/test/resources/testmsgs/*.msg", "mnako-letters/*/*.eml"} {
		more, _ := filepath.Glob(filepath.Join(corpus, g))
		if len(more) > 40 {
			more = more[:40]
		}
		seeds = append(seeds, more...)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err == nil && len(b) < 64<<10 {
			f.Add(b, false)
			f.Add(b, true)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, text bool) {
		opt := Options{TrackText: text, TrackSigned: text, MaxDepth: 8}
		fake := &fakeTracker{}
		out, rep, traces, err := runTraced(in, func(r io.Reader) io.Reader { return r }, opt, fake)
		if err != nil {
			t.Fatalf("error on content: %v", err)
		}
		if limit := 8*len(in) + 4096; len(out) > limit {
			t.Fatalf("output %d bytes for %d of input", len(out), len(in))
		}
		checkFidelity(t, in, out, rep, fake.calls, traces)
		rec, err := newRecorder(1)
		if err != nil {
			t.Fatal(err)
		}
		out2, rep2, traces2, err := runTraced(in, func(r io.Reader) io.Reader { return r }, opt, rec)
		if err != nil {
			t.Fatalf("real tracker: %v", err)
		}
		checkFidelity(t, in, out2, rep2, rec.calls, traces2)
		if rep.Tracked == 0 && !bytes.Equal(out, out2) {
			t.Fatal("nothing tracked, yet the trackers' outputs differ")
		}
	})
}
