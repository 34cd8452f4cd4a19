package rewrite

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// corpora returns ../shared/corpora beside the module root, or skips.
func corpora(t testing.TB, sub string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "corpora", sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("corpus %s absent (%v): the shared corpora live beside the checkout", sub, err)
	}
	return dir
}

// hasHTTPLink finds an <a href> to an absolute http(s) URL with a plain
// host: a file holding one must have at least one link tracked.
var hasHTTPLink = regexp.MustCompile(`(?i)<a\s[^>]*href\s*=\s*["']?https?://[a-z0-9][a-z0-9.-]*\.[a-z]{2,}[/"'?#\s>]`)

func corpusFiles(t testing.TB, dir string, exts ...string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, e := range exts {
			if strings.HasSuffix(strings.ToLower(p), e) {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestCorpusHTML rewrites every HTML file of the shared corpus with the
// fidelity property, clicks, opens and preventscam all on.
func TestCorpusHTML(t *testing.T) {
	files := corpusFiles(t, corpora(t, "html"), ".html", ".htm", ".xhtml")
	if len(files) < 300 {
		t.Fatalf("found %d HTML files, want about 380", len(files))
	}
	total := 0
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, scamOn := range []bool{false, true} {
			cfg := testConfig(t)
			cfg.PreventScam = scamOn
			out, edits, st := run(t, cfg, in, iotest.HalfReader, false)
			checkFidelity(t, cfg.Codec, in, out, edits, false)
			if !st.Pixel {
				t.Errorf("%s: no pixel", f)
			}
			if !scamOn {
				total += st.Links
				if st.Links == 0 && hasHTTPLink.Match(in) {
					t.Errorf("%s: has http links but none tracked", f)
				}
			}
		}
	}
	t.Logf("%d files, %d links tracked", len(files), total)
}

// TestCorpusText rewrites the plain-text files beside the HTML.
func TestCorpusText(t *testing.T) {
	files := corpusFiles(t, corpora(t, "html"), ".txt")
	n := 0
	for _, f := range files {
		base := strings.ToUpper(filepath.Base(f))
		if strings.HasPrefix(base, "SOURCE") || strings.HasPrefix(base, "LICENSE") {
			continue
		}
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t)
		out, edits, st := run(t, cfg, in, iotest.OneByteReader, true)
		checkFidelity(t, cfg.Codec, in, out, edits, true)
		if bytes.Count(out, []byte("\n")) != bytes.Count(in, []byte("\n")) {
			t.Errorf("%s: line count changed", f)
		}
		n += st.Links
	}
	if n == 0 {
		t.Error("no link tracked in any text file")
	}
}

// html5libInputs returns every tokenizer "input" and tree-construction
// "#data" section.
func html5libInputs(t testing.TB) []string {
	dir := corpora(t, "html5lib")
	var inputs []string
	for _, f := range corpusFiles(t, filepath.Join(dir, "tokenizer"), ".test") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var suite struct {
			Tests []struct {
				Input         string `json:"input"`
				DoubleEscaped bool   `json:"doubleEscaped"`
			} `json:"tests"`
			XMLViolationTests []struct {
				Input string `json:"input"`
			} `json:"xmlViolationTests"`
		}
		if err := json.Unmarshal(b, &suite); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range suite.Tests {
			in := tc.Input
			if tc.DoubleEscaped {
				in = unescapeDouble(in)
			}
			inputs = append(inputs, in)
		}
		for _, tc := range suite.XMLViolationTests {
			inputs = append(inputs, tc.Input)
		}
	}
	for _, f := range corpusFiles(t, filepath.Join(dir, "tree-construction"), ".dat") {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		var cur []string
		in := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "#data":
				in, cur = true, cur[:0]
			case in && strings.HasPrefix(line, "#"):
				inputs = append(inputs, strings.Join(cur, "\n"))
				in = false
			case in:
				cur = append(cur, line)
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return inputs
}

// unescapeDouble decodes the \uXXXX escapes of a "doubleEscaped" html5lib
// input; lone surrogates become their (invalid) three-byte encoding, which
// a rewriter must pass through too.
func unescapeDouble(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+5 < len(s)+0 && s[i+1] == 'u' {
			if v, err := strconv.ParseUint(s[i+2:i+6], 16, 16); err == nil {
				r := rune(v)
				if 0xD800 <= r && r < 0xDC00 && i+11 < len(s)+0 && s[i+6] == '\\' && s[i+7] == 'u' {
					if lo, err := strconv.ParseUint(s[i+8:i+12], 16, 16); err == nil && 0xDC00 <= lo && lo < 0xE000 {
						b = utf8.AppendRune(b, 0x10000+(r-0xD800)<<10+rune(lo)-0xDC00)
						i += 11
						continue
					}
				}
				if 0xD800 <= r && r < 0xE000 {
					b = append(b, byte(0xE0|r>>12), byte(0x80|(r>>6)&0x3F), byte(0x80|r&0x3F))
				} else {
					b = utf8.AppendRune(b, r)
				}
				i += 5
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// TestCorpusHTML5Lib runs every html5lib input through the rewriter, each
// also with links to track around it, byte by byte.
func TestCorpusHTML5Lib(t *testing.T) {
	inputs := html5libInputs(t)
	if len(inputs) < 1000 {
		t.Fatalf("found %d html5lib inputs, want thousands", len(inputs))
	}
	const link = `<a href="https://x.example/p?a=1&amp;b=2">x</a>`
	for _, in := range inputs {
		for _, s := range []string{in, link + in, in + link} {
			cfg := testConfig(t)
			cfg.PreventScam = true
			out, edits, _ := run(t, cfg, []byte(s), iotest.OneByteReader, false)
			checkFidelity(t, cfg.Codec, []byte(s), out, edits, false)
			if t.Failed() {
				t.Fatalf("input %q", s)
			}
		}
	}
	t.Logf("%d inputs", len(inputs))
}
