package rewrite

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/html"
)

// seedHTML adds the table cases and a few corpus files as seeds.
func seedHTML(f *testing.F) {
	for _, tc := range htmlCases {
		f.Add([]byte(tc.in))
	}
	if dir := "../../shared/corpora/html/cerberus"; dirExists(dir) {
		for _, p := range corpusFiles(f, dir, ".html") {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// FuzzHTML checks that the rewriter never panics or hangs, that the
// fidelity property holds, that chunking does not change the output and
// that every tracked URL decodes to the URL it replaced.
func FuzzHTML(f *testing.F) {
	seedHTML(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := testConfig(t)
		cfg.PreventScam = len(in)%2 == 0
		out, edits, _ := run(t, cfg, in, nil, false)
		checkFidelity(t, cfg.Codec, in, out, edits, false)
		out2, _, _ := run(t, cfg, in, iotest.OneByteReader, false)
		if !bytes.Equal(out, out2) {
			t.Fatalf("one-byte reads change the output:\n%q\n%q", out, out2)
		}
	})
}

// FuzzText is FuzzHTML for plain text.
func FuzzText(f *testing.F) {
	for _, tc := range textCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := testConfig(t)
		out, edits, _ := run(t, cfg, in, nil, true)
		checkFidelity(t, cfg.Codec, in, out, edits, true)
		if bytes.Count(out, []byte("\n")) != bytes.Count(in, []byte("\n")) {
			t.Fatal("line count changed")
		}
		out2, _, _ := run(t, cfg, in, iotest.OneByteReader, true)
		if !bytes.Equal(out, out2) {
			t.Fatalf("one-byte reads change the output:\n%q\n%q", out, out2)
		}
	})
}

// FuzzScanTag cross-checks the raw attribute scanner against the
// tokenizer: the same attributes, in the same order, with the same keys
// and values, and the same tag name.
func FuzzScanTag(f *testing.F) {
	for _, s := range []string{`<a href="x">`, `<a href=x/>`, `<A HREF = 'x' b c=d>`, `<a =x href=y>`, `<a/href=x>`, `<a href="x"title=y>`, `<a href=x href=y>`, "<a\x00b=c>", "<a b\r\n=\"c\r\nd\">", `<img src=x data-notrack/>`, `<a title="x>y" href=z>`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		wd := time.AfterFunc(3*time.Second, func() { panic(fmt.Sprintf("slow on %q", in)) })
		defer wd.Stop()
		z := html.NewTokenizer(bytes.NewReader(in))
		for {
			tt := z.Next()
			if tt == html.ErrorToken {
				return
			}
			if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
				continue
			}
			raw := append([]byte(nil), z.Raw()...)
			name, _ := z.TagName()
			nameEnd, attrs := scanTag(raw, nil)
			if got := asciiLower(strings.ReplaceAll(string(raw[1:nameEnd]), "\x00", "\ufffd")); got != string(name) {
				t.Fatalf("%q: name %q, tokenizer %q", raw, got, name)
			}
			if nameEnd != tagNameEnd(raw) {
				t.Fatalf("%q: tagNameEnd %d, scanTag %d", raw, tagNameEnd(raw), nameEnd)
			}
			var mine []rawAttr
			seen := map[string]bool{}
			for _, a := range attrs {
				if k := asciiLower(string(raw[a.keyStart:a.keyEnd])); !seen[k] {
					seen[k] = true
					mine = append(mine, a)
				}
			}
			i := 0
			for more := true; more; i++ {
				var key, val []byte
				key, val, more = z.TagAttr()
				if key == nil && !more {
					break
				}
				if i >= len(mine) {
					t.Fatalf("%q: tokenizer has more attributes than scanTag (%d)", raw, len(mine))
				}
				a := mine[i]
				if k := asciiLower(strings.ReplaceAll(string(raw[a.keyStart:a.keyEnd]), "\x00", "\ufffd")); k != string(key) {
					t.Fatalf("%q: attribute %d key %q, tokenizer %q", raw, i, k, key)
				}
				if v := attrValue(raw, a); strings.ReplaceAll(v, "\x00", "\ufffd") != string(val) {
					t.Fatalf("%q: attribute %d value %q, tokenizer %q", raw, i, v, val)
				}
			}
			if i != len(mine) {
				t.Fatalf("%q: scanTag has %d attributes, tokenizer %d", raw, len(mine), i)
			}
		}
	})
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
