package mime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/rewrite"
)

// moduleRoot finds the directory holding go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// sharedDir returns ../shared/<sub> beside the module, skipping when absent.
func sharedDir(t testing.TB, sub string) string {
	t.Helper()
	dir := filepath.Join(moduleRoot(t), "..", "shared", sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s absent (%v): the shared corpora sit beside the checkout in CI", dir, err)
	}
	return dir
}

// call is one Tracker call as a recording tracker saw it.
type call struct {
	html    bool
	in, out []byte
	edits   []rewrite.Edit
}

// fakeTracker is a small deterministic Tracker for the decode/re-encode
// plumbing: it prefixes every http(s) URL with a click host, so edited
// lines grow, and reports its edits like rewrite.Config.OnEdit does.
type fakeTracker struct {
	calls []call
}

func (f *fakeTracker) HTML(dst io.Writer, src io.Reader) error { return f.run(dst, src, true) }
func (f *fakeTracker) Text(dst io.Writer, src io.Reader) error { return f.run(dst, src, false) }

func (f *fakeTracker) run(dst io.Writer, src io.Reader, html bool) error {
	in, err := io.ReadAll(src) // test only: bodies here are small
	if err != nil {
		return err
	}
	c := call{html: html, in: in}
	var out []byte
	rest := in
	for {
		i := indexURL(rest)
		if i < 0 {
			out = append(out, rest...)
			break
		}
		out = append(out, rest[:i]...)
		rest = rest[i:]
		j := 0
		for j < len(rest) && !strings.ContainsRune(" \t\r\n\"'<>", rune(rest[j])) {
			j++
		}
		old := string(rest[:j])
		nw := fmt.Sprintf("https://click.test/T%d/%s", len(c.edits), old[strings.Index(old, "//")+2:])
		c.edits = append(c.edits, rewrite.Edit{Off: int64(len(out)), Old: old, New: nw})
		out = append(out, nw...)
		rest = rest[j:]
	}
	c.out = out
	f.calls = append(f.calls, c)
	_, err = dst.Write(out)
	return err
}

func indexURL(b []byte) int {
	off := 0
	for {
		i := bytes.Index(b[off:], []byte("http"))
		if i < 0 {
			return -1
		}
		rest := b[off+i+4:]
		if bytes.HasPrefix(rest, []byte("://")) || bytes.HasPrefix(rest, []byte("s://")) {
			return off + i
		}
		off += i + 4
	}
}

// recorder wraps a real *rewrite.Tracker and records each call, with the
// edits its OnEdit hook reports.
type recorder struct {
	tr    *rewrite.Tracker
	calls []call
	cur   *call
}

func newRecorder(msgID uint64) (*recorder, error) {
	codec, err := rewrite.NewCodec(rewrite.Key{ID: 1, Secret: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		return nil, err
	}
	rc := &recorder{}
	rc.tr = rewrite.New(rewrite.Config{
		Clicks: true, Opens: true, Codec: codec, Scheme: "https",
		Domain: "click.example.com", MessageID: msgID,
		OnEdit: func(e rewrite.Edit) {
			if rc.cur != nil {
				rc.cur.edits = append(rc.cur.edits, e)
			}
		},
	})
	return rc, nil
}

func (rc *recorder) HTML(dst io.Writer, src io.Reader) error { return rc.run(dst, src, true) }
func (rc *recorder) Text(dst io.Writer, src io.Reader) error { return rc.run(dst, src, false) }

func (rc *recorder) run(dst io.Writer, src io.Reader, html bool) error {
	c := &call{html: html}
	rc.cur = c
	var in, out bytes.Buffer
	tsrc := io.TeeReader(src, &in)
	var err error
	if html {
		err = rc.tr.HTML(io.MultiWriter(dst, &out), tsrc)
	} else {
		err = rc.tr.Text(io.MultiWriter(dst, &out), tsrc)
	}
	c.in, c.out = in.Bytes(), out.Bytes()
	rc.calls = append(rc.calls, *c)
	rc.cur = nil
	return err
}

// undo reverses a call's edits on its output; the result must be its input.
func undo(out []byte, edits []rewrite.Edit) ([]byte, error) {
	var b []byte
	pos := int64(0)
	for _, e := range edits {
		if e.Off < pos || e.Off+int64(len(e.New)) > int64(len(out)) {
			return nil, fmt.Errorf("edit at %d out of order or range", e.Off)
		}
		if string(out[e.Off:e.Off+int64(len(e.New))]) != e.New {
			return nil, fmt.Errorf("edit at %d: output does not hold %q", e.Off, e.New)
		}
		b = append(b, out[pos:e.Off]...)
		b = append(b, e.Old...)
		pos = e.Off + int64(len(e.New))
	}
	return append(b, out[pos:]...), nil
}

// failWriter fails after n bytes.
type failWriter struct{ n int }

var errBoom = errors.New("boom")

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errBoom
	}
	f.n -= len(p)
	return len(p), nil
}

func nowNs() int64 { return time.Now().UnixNano() }
