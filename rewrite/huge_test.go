package rewrite

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/net/html"
	"golang.org/x/sys/unix"
)

// TestHugeTokens feeds tokens longer than the tokenizer's buffer bound:
// each passes through unchanged and tracking carries on after it.
func TestHugeTokens(t *testing.T) {
	// A small bound keeps the byte-by-byte runs fast; TestMemoryConstant
	// uses the real one.
	const bound = 4 << 10
	big := strings.Repeat("x", bound+1000)
	const after = `<a href="https://x.example/after">after</a>`
	const inside = `<a href="https://x.example/inside">inside</a>` // never tracked
	cases := []struct {
		name  string
		in    string
		links int // links tracked in total
	}{
		{"text", big + after, 1},
		{"text-lt", strings.Repeat("< ", bound) + after, 1},
		{"comment", "<!--" + big + inside + "-->" + after, 1},
		{"comment-bang", "<!--" + big + "--!>" + after, 1},
		{"conditional-comment", `<!--[if mso]><a href="https://x.example/in">` + big + `</a><![endif]-->` + after, 1},
		{"attr", `<img src="data:image/png;base64,` + big + `" alt='>'>` + after, 1},
		{"attr-unquoted", `<img src=` + big + ` title="a>b">` + after, 1},
		{"link-attr", `<a title="` + big + `" href="https://x.example/big">x</a>` + after, 1},
		{"end-tag", `</div title="` + big + `>">` + after, 1},
		{"script", `<script>` + big + inside + `</script >` + after, 1},
		{"style-upper", `<STYLE>` + big + inside + `</StYlE>` + after, 1},
		{"textarea", `<textarea>` + big + inside + `</textarea>` + after, 1},
		{"title-split-end", `<title>` + big + `</titl` + inside + `</title>` + after, 1},
		{"plaintext", `<plaintext>` + big + after, 0},
		{"doctype", `<!DOCTYPE ` + big + `>` + after, 1},
		{"bogus-comment-in-raw", `<!DOCTYPE ` + big + `>` + after, 1},
		{"bogus", `<?xml ` + big + `?>` + after, 1},
		{"eof-in-tag", `<a href="https://x.example/" title="` + big, 0},
		{"eof-in-comment", `<!--` + big, 0},
		{"scam-lookahead", `<a href="https://x.example/s">` + big + `</a>` + after, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Opens = false
			cfg.PreventScam = true
			small := func(tr *Tracker) { tr.tokenBound = bound }
			var first []byte
			for _, rd := range readers {
				out, edits, st := run(t, cfg, []byte(tc.in), rd.wrap, false, small)
				checkFidelity(t, cfg.Codec, []byte(tc.in), out, edits, false)
				if st.Links != tc.links {
					t.Errorf("%s: %d links tracked, want %d", rd.name, st.Links, tc.links)
				}
				if first == nil {
					first = out
				} else if !bytes.Equal(first, out) {
					t.Errorf("%s reader: output differs", rd.name)
				}
			}
		})
	}
}

// patternReader yields n bytes of an HTML pattern, generated on the fly.
type patternReader struct {
	pat  []byte
	n, i int64
	peak uint64 // highest HeapInuse seen, sampled every sampleEvery bytes
	next int64
}

const sampleEvery = 1 << 20

func (r *patternReader) Read(b []byte) (int, error) {
	if r.i >= r.n {
		return 0, io.EOF
	}
	if r.i >= r.next {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > r.peak {
			r.peak = ms.HeapInuse
		}
		r.next += sampleEvery
	}
	k := 0
	for k < len(b) && r.i < r.n {
		c := copy(b[k:], r.pat[r.i%int64(len(r.pat)):])
		if int64(c) > r.n-r.i {
			c = int(r.n - r.i)
		}
		k += c
		r.i += int64(c)
	}
	return k, nil
}

// TestMemoryConstant rewrites 5 MB and 50 MB bodies (links, images,
// conditional comments, a token over the buffer bound in every pattern)
// and checks the heap does not grow with input size.
func TestMemoryConstant(t *testing.T) {
	pat := []byte(`<table><tr><td background="https://i.example/bg.png"><a href="https://x.example/p?a=1&amp;b=2">shop</a>` +
		`<img src="https://i.example/a.png"><!--[if mso]><v:roundrect href="https://x.example/btn"></v:roundrect><![endif]-->` +
		`<a href="https://x.example/x">example.com</a></td></tr></table>` + "\n")
	pat = append(pat, "<!--"+strings.Repeat("y", maxBuf+10)+"-->"...)
	peak := func(n int64) (uint64, int) {
		runtime.GC()
		r := &patternReader{pat: pat, n: n}
		cfg := testConfig(t)
		cfg.PreventScam = true
		tr := New(cfg)
		var cw countWriter
		if err := tr.HTML(&cw, r); err != nil {
			t.Fatal(err)
		}
		if cw.n <= n {
			t.Fatalf("wrote %d bytes for %d in", cw.n, n)
		}
		return r.peak, tr.Stats().Links
	}
	small, l1 := peak(5 << 20)
	large, l2 := peak(50 << 20)
	t.Logf("peak heap in use: %d KiB for 5 MB, %d KiB for 50 MB; links %d, %d", small>>10, large>>10, l1, l2)
	if l2 < 5*l1 {
		t.Errorf("tracked %d links in 50 MB, %d in 5 MB", l2, l1)
	}
	if large > small+8<<20 || large > 32<<20 {
		t.Errorf("heap grows with input: %d KiB for 5 MB, %d KiB for 50 MB", small>>10, large>>10)
	}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(b []byte) (int, error) {
	w.n += int64(len(b))
	return len(b), nil
}

// corpusBytes loads the HTML corpus for the benchmarks.
func corpusBytes(b *testing.B) [][]byte {
	var docs [][]byte
	for _, f := range corpusFiles(b, corpora(b, "html"), ".html", ".htm", ".xhtml") {
		d, err := readFile(f)
		if err != nil {
			b.Fatal(err)
		}
		docs = append(docs, d)
	}
	return docs
}

func tokenizePass(docs [][]byte) {
	for _, d := range docs {
		z := html.NewTokenizer(bytes.NewReader(d))
		for z.Next() != html.ErrorToken {
			io.Discard.Write(z.Raw())
		}
	}
}

func rewritePass(b testing.TB, cfg Config, docs [][]byte) {
	for _, d := range docs {
		if err := New(cfg).HTML(io.Discard, bytes.NewReader(d)); err != nil {
			b.Fatal(err)
		}
	}
}

func docsSize(docs [][]byte) int64 {
	var n int64
	for _, d := range docs {
		n += int64(len(d))
	}
	return n
}

// BenchmarkTokenizer is the baseline: a bare Tokenizer pass copying Raw().
func BenchmarkTokenizer(b *testing.B) {
	docs := corpusBytes(b)
	b.SetBytes(docsSize(docs))
	for b.Loop() {
		tokenizePass(docs)
	}
}

// BenchmarkHTML rewrites the corpus with clicks, opens and preventscam on.
func BenchmarkHTML(b *testing.B) {
	docs := corpusBytes(b)
	cfg := testConfig(b)
	cfg.PreventScam = true
	b.SetBytes(docsSize(docs))
	for b.Loop() {
		rewritePass(b, cfg, docs)
	}
}

// BenchmarkHTMLRatio runs both passes in the same run, document by
// document in turn so that both see the same machine, and reports the
// rewriter's throughput as a fraction of the bare tokenizer's ("ratio";
// the target is 0.8 or more).
func BenchmarkHTMLRatio(b *testing.B) {
	docs := corpusBytes(b)
	for _, bc := range []struct {
		name string
		scam bool
	}{{"off", false}, {"clicks-opens", false}, {"preventscam", true}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig(b)
			cfg.PreventScam = bc.scam
			if bc.name == "off" {
				cfg.Clicks, cfg.Opens = false, false
			}
			// Thread CPU time, not wall time: the ratio stays meaningful on
			// a loaded machine. Wall time is reported beside it.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var tok, rw, wtok, wrw int64
			b.SetBytes(2 * docsSize(docs))
			for b.Loop() {
				for _, d := range docs {
					w0, c0 := nanotime(), threadCPU()
					tokenizePass([][]byte{d})
					w1, c1 := nanotime(), threadCPU()
					if err := New(cfg).HTML(io.Discard, bytes.NewReader(d)); err != nil {
						b.Fatal(err)
					}
					w2, c2 := nanotime(), threadCPU()
					tok += c1 - c0
					rw += c2 - c1
					wtok += w1 - w0
					wrw += w2 - w1
				}
			}
			b.ReportMetric(float64(tok)/float64(rw), "ratio")
			b.ReportMetric(float64(wtok)/float64(wrw), "wall-ratio")
		})
	}
}

// threadCPU returns the CPU time the calling OS thread has used.
func threadCPU() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return nanotime()
	}
	return ts.Nano()
}
