package rewrite

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/html"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/rewrite")

const testDomain = "t.example.net"

// testConfig is the Config the table tests start from.
func testConfig(t testing.TB) Config {
	return Config{Clicks: true, Opens: true, Codec: testCodec(t), Scheme: "https", Domain: testDomain, MessageID: 42}
}

// run rewrites in through fn (HTML or Text) on a fresh Tracker and
// returns the output, the edits and the stats.
func run(t testing.TB, cfg Config, in []byte, wrap func(io.Reader) io.Reader, text bool, opts ...func(*Tracker)) ([]byte, []Edit, Stats) {
	t.Helper()
	var edits []Edit
	cfg.OnEdit = func(e Edit) { edits = append(edits, e) }
	tr := New(cfg)
	for _, o := range opts {
		o(tr)
	}
	var out bytes.Buffer
	var r io.Reader = bytes.NewReader(in)
	if wrap != nil {
		r = wrap(r)
	}
	var err error
	if text {
		err = tr.Text(&out, r)
	} else {
		err = tr.HTML(&out, r)
	}
	if err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	return out.Bytes(), edits, tr.Stats()
}

// undo puts the input back: it replaces every edit's New with its Old.
func undo(out []byte, edits []Edit) []byte {
	var b []byte
	prev := int64(0)
	for _, e := range edits {
		if e.Off < prev || e.Off+int64(len(e.New)) > int64(len(out)) {
			return append(b, "<<bad edit offsets>>"...)
		}
		b = append(b, out[prev:e.Off]...)
		if !bytes.Equal(out[e.Off:e.Off+int64(len(e.New))], []byte(e.New)) {
			return append(b, "<<edit does not match output>>"...)
		}
		b = append(b, e.Old...)
		prev = e.Off + int64(len(e.New))
	}
	return append(b, out[prev:]...)
}

// checkFidelity asserts the fidelity property and that every tracked URL
// decodes to the URL it replaced.
func checkFidelity(t testing.TB, codec *Codec, in, out []byte, edits []Edit, text bool) {
	t.Helper()
	if got := undo(out, edits); !bytes.Equal(got, in) {
		t.Fatalf("fidelity: undoing %d edits does not give the input:\n in: %.300q\ngot: %.300q", len(edits), in, got)
	}
	for _, e := range edits {
		if e.Old == "" || e.New == "" {
			continue
		}
		q := byte(0)
		if !text && e.Off > 0 {
			if c := out[e.Off-1]; c == '"' || c == '\'' {
				q = c
			}
		}
		checkTracked(t, codec, e, text, q)
	}
}

// checkTracked decodes the tracked URL in e.New and checks that the
// original scheme, host, port, path, query and fragment come back.
func checkTracked(t testing.TB, codec *Codec, e Edit, text bool, q byte) {
	t.Helper()
	old, nw := e.Old, e.New
	if !text {
		old = trimURL(attrOf(old, q))
		if q == 0 && len(nw) > 1 && nw[0] == '"' {
			// An unquoted value that needed quotes.
			q, nw = '"', nw[1:len(nw)-1]
		}
		nw = attrOf(nw, q)
	}
	prefix := "https://" + testDomain + "/"
	if !strings.HasPrefix(nw, prefix) {
		t.Errorf("tracked URL %q does not start with %q", nw, prefix)
		return
	}
	rest := nw[len(prefix):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	tok, err := codec.Decode(rest[:end])
	if err != nil {
		t.Errorf("tracked URL %q: token: %v", nw, err)
		return
	}
	if tok.MessageID != 42 || (tok.Kind != KindClick && tok.Kind != KindImage) {
		t.Errorf("tracked URL %q: token %+v", nw, tok)
	}
	i := strings.Index(old, "://")
	if i < 0 {
		return // a relative URL resolved against <base>
	}
	want := strings.ToLower(old[:i]) + old[i:]
	if got := tok.Scheme() + "://" + tok.Authority() + rest[end:]; got != want {
		t.Errorf("tracked URL %q leads to %q, want %q", nw, got, want)
	}
}

// attrOf decodes v as the tokenizer decodes an attribute value quoted with q.
func attrOf(v string, q byte) string {
	s := "<a v=" + v + ">"
	if q != 0 {
		s = "<a v=" + string(q) + v + string(q) + ">"
	}
	z := html.NewTokenizer(strings.NewReader(s))
	z.Next()
	_, val, _ := z.TagAttr()
	return string(val)
}

var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"plain", nil},
	{"onebyte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"dataerr", iotest.DataErrReader},
}

// golden compares got with the golden file, or writes it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n got: %s\nwant: %s", path, got, want)
	}
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func nanotime() int64 { return time.Now().UnixNano() }
