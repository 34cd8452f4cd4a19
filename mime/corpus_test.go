package mime

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// corpusFiles lists every file under ../shared/corpora/<sub>.
func corpusFiles(t testing.TB, sub string) []string {
	t.Helper()
	root := sharedDir(t, filepath.Join("corpora", sub))
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestCorpus runs every file of the MIME corpus through the walker, with
// the fake tracker (which edits every http(s) URL, HTML and text) and the
// real rewrite.Tracker, asserting no error and the fidelity property. Files
// that are not messages pass through as malformed, which the same property
// covers. The half reader checks chunk edges.
func TestCorpus(t *testing.T) {
	files := corpusFiles(t, "mime")
	tracked, untouched := 0, 0
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(filepath.Join(moduleRoot(t), "..", "shared", "corpora", "mime"), f)
		t.Run(name, func(t *testing.T) {
			fake := &fakeTracker{}
			opt := Options{TrackText: true, TrackSigned: true}
			out, rep, traces, err := runTraced(in, func(r io.Reader) io.Reader { return r }, opt, fake)
			if err != nil {
				t.Fatalf("fake tracker: %v", err)
			}
			checkFidelity(t, in, out, rep, fake.calls, traces)
			if rep.Tracked > 0 {
				tracked++
			} else {
				untouched++
			}
			half, _, err := runRewrite(in, iotest.HalfReader, opt, &fakeTracker{})
			if err != nil || !bytes.Equal(half, out) {
				t.Errorf("half reader: error %v or different output", err)
			}
			rec, err := newRecorder(7)
			if err != nil {
				t.Fatal(err)
			}
			out, rep, traces, err = runTraced(in, func(r io.Reader) io.Reader { return r }, Options{}, rec)
			if err != nil {
				t.Fatalf("real tracker: %v", err)
			}
			checkFidelity(t, in, out, rep, rec.calls, traces)
		})
	}
	t.Logf("%d files: %d with tracked leaves, %d passed through whole", len(files), tracked, untouched)
}
