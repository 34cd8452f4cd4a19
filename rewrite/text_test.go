package rewrite

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

var textCases = []struct {
	name  string
	in    string
	links int
	has   []string
}{
	{name: "basic", in: "Shop now: https://shop.example.com/products/shoes?color=red#top\nBye.\n", links: 1, has: []string{"Shop now: https://t.example.net/", "/products/shoes?color=red#top\nBye.\n"}},
	{name: "punctuation", in: "See https://x.example/a. Or https://x.example/b, https://x.example/c; (https://x.example/d) https://x.example/e!? \"https://x.example/f\" 'https://x.example/g'\n", links: 7,
		has: []string{"/a. Or", "/b, https", "/c; (https", "/d) https", "/e!? \"", "/f\" '", "/g'\n"}},
	{name: "balanced", in: "https://en.example/wiki/Foo_(bar) and [https://x.example/q?a[0]=1]\n", links: 2, has: []string{"/wiki/Foo_(bar) and", "/q?a[0]=1]\n"}},
	{name: "angle-brackets", in: "Link: <https://x.example/a>\r\n<http://x.example/b>", links: 2, has: []string{"Link: <https://t.example.net/", "/a>\r\n<https://t.example.net/", "/b>"}},
	{name: "skipped", in: "mailto:a@b.example ftp://x.example/ https://user@x.example/ https://t.example.net/x http:// https://{{url}} xhttp://x.example/ https://%zz/\n"},
	{name: "case", in: "HTTP://X.EXAMPLE/A HtTpS://x.example/b\n", links: 2},
	{name: "no-newline-change", in: "a\r\nhttps://x.example/\r\n\r\n  https://x.example/2\n", links: 2, has: []string{"a\r\nhttps://t.example.net/", "\r\n\r\n  https://t.example.net/"}},
	{name: "long", in: "https://x.example/" + strings.Repeat("a", 9000) + " then https://x.example/ok", links: 1, has: []string{"https://x.example/aaaa"}},
	{name: "partial-scheme-at-end", in: "see http", links: 0},
	{name: "hhttp", in: "hhttp://x.example/ h https://x.example/", links: 1},
}

func TestText(t *testing.T) {
	for _, tc := range textCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			var first []byte
			for _, rd := range readers {
				out, edits, st := run(t, cfg, []byte(tc.in), rd.wrap, true)
				checkFidelity(t, cfg.Codec, []byte(tc.in), out, edits, true)
				if first != nil {
					if !bytes.Equal(out, first) {
						t.Errorf("%s reader: output differs:\n got: %q\nwant: %q", rd.name, out, first)
					}
					continue
				}
				first = out
				if st.Links != tc.links || st.Images != 0 || st.Pixel {
					t.Errorf("stats %+v, want %d links", st, tc.links)
				}
				if bytes.Count(out, []byte("\n")) != strings.Count(tc.in, "\n") || bytes.Count(out, []byte("\r")) != strings.Count(tc.in, "\r") {
					t.Errorf("line structure changed:\n%q", out)
				}
				for _, s := range tc.has {
					if !bytes.Contains(out, []byte(s)) {
						t.Errorf("output lacks %q:\n%q", s, out)
					}
				}
				if len(tc.in) < 1000 {
					golden(t, filepath.Join("..", "testdata", "rewrite", "text", tc.name+".golden"), out)
				}
			}
		})
	}
}

func TestTextClicksOff(t *testing.T) {
	cfg := testConfig(t)
	cfg.Clicks = false
	in := "https://x.example/\n"
	out, edits, st := run(t, cfg, []byte(in), nil, true)
	if string(out) != in || len(edits) != 0 || st.Links != 0 {
		t.Errorf("clicks off: got %q, %d edits", out, len(edits))
	}
}

// TestPositions checks that positions run in document order across calls
// on one Tracker, and that the pixel has position 0 with its own kind.
func TestPositions(t *testing.T) {
	cfg := testConfig(t)
	var urls []string
	cfg.OnEdit = func(e Edit) {
		if e.Old != "" && e.New != "" {
			urls = append(urls, e.New)
		}
	}
	tr := New(cfg)
	var out bytes.Buffer
	if err := tr.HTML(&out, strings.NewReader(`<a href="https://x.example/">logo</a><img src="https://i.example/i.png"><a href="https://x.example/">button</a><body></body>`)); err != nil {
		t.Fatal(err)
	}
	if err := tr.Text(&out, strings.NewReader("https://x.example/ text")); err != nil {
		t.Fatal(err)
	}
	if len(urls) != 4 {
		t.Fatalf("got %d tracked URLs, want 4", len(urls))
	}
	for i, u := range urls {
		rest := strings.TrimPrefix(u, "https://"+testDomain+"/")
		tok, err := cfg.Codec.Decode(rest[:strings.IndexByte(rest, '/')])
		if err != nil {
			t.Fatal(err)
		}
		if tok.Position != uint32(i) {
			t.Errorf("URL %d has position %d", i, tok.Position)
		}
	}
	i := strings.Index(out.String(), `<img src="https://`+testDomain+"/") // the pixel is the second img
	j := strings.LastIndex(out.String(), `<img src="https://`+testDomain+"/")
	if i == j {
		t.Fatal("no pixel")
	}
	rest := out.String()[j+len(`<img src="https://`+testDomain+"/"):]
	tok, err := cfg.Codec.Decode(rest[:strings.IndexByte(rest, '"')])
	if err != nil || tok.Kind != KindPixel || tok.Position != 0 || tok.MessageID != 42 {
		t.Errorf("pixel token %+v, %v", tok, err)
	}
	if st := tr.Stats(); st.Links != 3 || st.Images != 1 || !st.Pixel {
		t.Errorf("stats %+v", st)
	}
}
