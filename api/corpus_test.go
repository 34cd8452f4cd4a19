package api

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// corpusDir returns ../shared/corpora/sub beside the module root, or skips.
func corpusDir(t testing.TB, sub string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "shared", "corpora", sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("real corpora not found at %s (../shared beside the checkout): %v", dir, err)
	}
	return dir
}

// corpusFiles returns up to max files under dir with one of exts, spread
// evenly over the sorted list, no larger than maxSize.
func corpusFiles(t testing.TB, dir string, exts []string, max int, maxSize int64) []string {
	t.Helper()
	var all []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		for _, x := range exts {
			if strings.HasSuffix(strings.ToLower(p), x) {
				if info, err := d.Info(); err == nil && info.Size() <= maxSize && info.Size() > 0 {
					all = append(all, p)
				}
				break
			}
		}
		return nil
	})
	if len(all) <= max {
		return all
	}
	out := make([]string, 0, max)
	for i := 0; i < max; i++ {
		out = append(out, all[i*len(all)/max])
	}
	return out
}

// TestSendCorpusHTML sends real HTML mail templates as the html field:
// each is accepted and comes back from the spool byte for byte.
func TestSendCorpusHTML(t *testing.T) {
	files := corpusFiles(t, corpusDir(t, "html"), []string{".html", ".htm"}, 40, 150<<10)
	if len(files) == 0 {
		t.Fatal("no HTML in the corpus")
	}
	e := newEnv(t)
	for _, f := range files {
		name, _ := filepath.Rel(filepath.Dir(corpusDir(t, "html")), f)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			html := string(b)
			if !utf8.ValidString(html) {
				html = strings.ToValidUTF8(html, "\uFFFD") // JSON carries UTF-8 only
			}
			st, body := e.send(keyShop, map[string]any{"from": "news@shop.example", "to": "ann@example.com", "subject": "corpus", "html": html, "text": "plain"})
			if st != 200 {
				t.Fatalf("status %d: %s", st, body)
			}
			ids := sendIDs(t, body)
			raw, _ := e.spooled(ids["ann@example.com"])
			_, got := leaves(t, raw)
			// Text goes out with CRLF line ends (RFC 2045 canonical form).
			lf := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n") }
			if len(got) != 3 || lf(got[2]) != lf("text/html:"+html) {
				t.Fatalf("the html part did not survive (%d leaves):\n%.300q\nwant\n%.300q", len(got), got[len(got)-1], html)
			}
		})
	}
}

// TestSendCorpusMIME sends real messages as the mime field: each is
// accepted (or refused with a 4xx naming a field, never a 5xx) and spooled
// byte for byte (after the Received field, with a Date and Message-ID
// where it has none).
func TestSendCorpusMIME(t *testing.T) {
	files := corpusFiles(t, corpusDir(t, "mime"), []string{".eml", ".msg", ".txt"}, 60, 200<<10)
	if len(files) == 0 {
		t.Fatal("no messages in the corpus")
	}
	e := newEnv(t)
	accepted := 0
	for _, f := range files {
		name, _ := filepath.Rel(filepath.Dir(corpusDir(t, "mime")), f)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !utf8.Valid(b) {
				return // a JSON string cannot carry it
			}
			st, body := e.send(keyShop, map[string]any{"mime": string(b), "recipient": "ann@example.com", "envelope": "news@shop.example"})
			switch {
			case st == 200:
				ids := sendIDs(t, body)
				raw, _ := e.spooled(ids["ann@example.com"])
				asSent(t, raw, b)
				accepted++
			case st == 400:
				wantError(t, st, body, 400, ":")
			default:
				t.Fatalf("status %d: %s", st, body)
			}
		})
	}
	if accepted == 0 {
		t.Fatal("no corpus message was accepted")
	}
}
