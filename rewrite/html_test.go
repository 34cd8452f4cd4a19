package rewrite

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

type htmlCase struct {
	name   string
	in     string
	cfg    func(*Config)
	links  int
	images int
	pixel  bool
	has    []string // substrings the output must hold
	hasNot []string // substrings it must not hold
}

func noOpens(c *Config)   { c.Opens = false }
func noClicks(c *Config)  { c.Clicks = false }
func scam(c *Config)      { c.PreventScam = true; c.Opens = false }
func linksOnly(c *Config) { c.Opens = false }

var htmlCases = []htmlCase{
	{name: "basic", in: `<p><a href="https://shop.example.com/products/shoes?color=red#top">Shoes</a></p>`, cfg: linksOnly, links: 1,
		has: []string{`/products/shoes?color=red#top">Shoes</a>`}, hasNot: []string{"shop.example.com"}},
	{name: "amp", in: `<a href="https://x.example/?a=1&amp;b=2&copy=3">x</a>`, cfg: linksOnly, links: 1,
		has: []string{`?a=1&amp;b=2&amp;copy=3"`}},
	{name: "single-quoted", in: `<a class=btn href='https://x.example/it&#39;s?q="a"'>x</a>`, cfg: linksOnly, links: 1,
		has: []string{`<a class=btn href='https://t.example.net/`, `/it&#39;s?q="a"'>`}},
	{name: "unquoted", in: `<a href=https://x.example/a?b=c>x</a>`, cfg: linksOnly, links: 1, has: []string{`<a href=https://t.example.net/`, `/a?b=c>x`}},
	{name: "unquoted-needs-quotes", in: `<a href=https://x.example/it's>x</a>`, cfg: linksOnly, links: 1, has: []string{`<a href="https://t.example.net/`, `/it's">x`}},
	{name: "uppercase", in: `<A HREF="HTTPS://X.Example/Path" TARGET=_blank>x</A><IMG SRC="http://img.example/a.png">`, links: 1, images: 1, pixel: true,
		has: []string{`<A HREF="https://t.example.net/`, `/Path" TARGET=_blank>x</A><IMG SRC="https://t.example.net/`}},
	{name: "spaces-around-equals", in: "<a  href = \"https://x.example/\"\n title=t>x</a>", cfg: linksOnly, links: 1, has: []string{"<a  href = \"https://t.example.net/", "\"\n title=t>"}},
	{name: "duplicate-attr", in: `<a href="https://first.example/" href="https://second.example/">x</a>`, cfg: linksOnly, links: 1,
		has: []string{`href="https://second.example/"`}, hasNot: []string{"first.example"}},
	{name: "skipped", cfg: linksOnly, in: `<a href="mailto:a@example.com">m</a><a href="tel:+123">t</a><a href="sms:+1">s</a>` +
		`<a href="#top">f</a><a href="javascript:alert(1)">j</a><a href="data:text/html,x">d</a><a href="cid:part1">c</a>` +
		`<a href="/relative">r</a><a href="page.html">r</a><a href="//host.example/x">sr</a><a href="https://user:pw@host.example/">u</a>` +
		`<a href="https://t.example.net/x">cd</a><a href="https://click.example.org:8443/x">cd2</a><a href="ftp://files.example/">f</a>` +
		`<a href="http://exa mple.com/">h</a><a href="http://[::1/">v6</a><a href="http://example.com:99999/">p</a><a href="http:///nohost">n</a>` +
		`<a href="https://ex.example/\evil">b</a><a href="https://ex.example/a` + "\n" + `b">nl</a><a>noattr</a><a href>empty</a><a href="">empty</a>`},
	{name: "placeholders", cfg: linksOnly, in: `<a href="{{unsubscribe_url}}">a</a><a href="https://x.example/?u={{ user.id }}">b</a>` +
		`<a href="*|ARCHIVE|*">c</a><a href="https://x.example/?e=*|EMAIL|*">d</a><a href="%%view_email_url%%">e</a>` +
		`<a href="https://x.example/[[id]]">f</a><a href="https://x.example/{%url%}">g</a><a href="https://x.example/%7B%7Bid%7D%7D">h</a>` +
		`<a href="https://x.example/<%= id %>">i</a><a href="https://x.example/${id}">j</a>`},
	{name: "base", cfg: linksOnly, in: `<base href="https://base.example/dir/"><a href="page.html?x=1">p</a><a href="#frag">f</a><a href="//h.example/">s</a><a href="mailto:x@y">m</a>`, links: 1,
		has: []string{`<base href="https://base.example/dir/">`, `/dir/page.html?x=1">p`}},
	{name: "base-not-http", cfg: linksOnly, in: `<base href="ftp://base.example/"><a href="page.html">p</a>`},
	{name: "elements", in: `<body background="https://i.example/bg.png"><table background=http://i.example/t.png><tr><td background='https://i.example/td.png'>` +
		`<th background="https://i.example/th.png"><img src="https://i.example/a.png" alt="a"><map><area shape=rect href="https://x.example/area"></map>` +
		`<div background="https://i.example/div.png"></div><input src="https://i.example/input.png"></td></tr></table></body>`,
		links: 1, images: 5, pixel: true, has: []string{`<div background="https://i.example/div.png">`, `<input src="https://i.example/input.png">`}},
	{name: "conditional-comment", in: `<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://x.example/btn" style="height:40px"><v:fill type="tile" src="https://i.example/fill.png" /><w:anchorlock/><center>Go</center></v:roundrect><v:image src="https://i.example/vml.png" /><![endif]-->` +
		`<!-- <a href="https://x.example/in-plain-comment">x</a> --><!--[if !mso]><!--><a href="https://x.example/btn">Go</a><!--<![endif]-->`,
		links: 2, images: 2, pixel: true, has: []string{`<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://t.example.net/`, `in-plain-comment`, `<![endif]-->`}},
	{name: "notrack", in: `<a href="https://x.example/a" data-notrack>a</a><a data-notrack="1" href="https://x.example/b">b</a>` +
		`<a clicktracking="off" href="https://x.example/c">c</a><a clicktracking=on href="https://x.example/d">d</a><a href="https://x.example/e" DATA-PM-NO-TRACK>e</a>` +
		`<img src=https://i.example/x.png data-notrack/><a data-notrack>no href</a>`, links: 1, pixel: true,
		has: []string{`<a href="https://x.example/a">a</a><a href="https://x.example/b">b</a><a href="https://x.example/c">c</a><a clicktracking=on href="https://t.example.net/`, `<a href="https://x.example/e">e</a>`, `<img src=https://i.example/x.png /><a>no href</a>`}},
	{name: "notrack-off", cfg: noOpens, in: `<img src="https://i.example/x.png" data-notrack><td data-notrack>`, has: []string{`data-notrack><td data-notrack>`}},
	{name: "preventscam", cfg: scam, in: `<a href="https://x.example/1">https://x.example/1</a> <a href="https://x.example/2">  example.com </a> ` +
		`<a href="https://x.example/3"><b>www.shop.example/x</b></a> <a href="https://x.example/4">Buy now</a> <a href="https://x.example/5">Visit example.com today</a>` +
		` <a href="https://x.example/6">b&uuml;cher.example</a> <a href="https://x.example/7">Node</a>`, links: 3,
		has: []string{`<a href="https://x.example/1">`, `<a href="https://x.example/2">`, `<a href="https://x.example/3">`, `<a href="https://x.example/6">`}},
	{name: "preventscam-nested", cfg: scam, in: `<a href="https://x.example/1">one <a href="https://x.example/2">example.org</a>`, links: 1,
		has: []string{`<a href="https://x.example/2">example.org</a>`}},
	{name: "preventscam-bound", cfg: scam, in: `<a href="https://x.example/1">` + strings.Repeat("<span>word</span>", 700) + `example.com</a><a href="https://x.example/2">ok</a>`, links: 1,
		has: []string{`<a href="https://x.example/1">`}},
	{name: "preventscam-images", cfg: func(c *Config) { c.PreventScam = true }, in: `<a href="https://x.example/1"><img src="https://i.example/logo.png"></a><body></body>`,
		links: 1, images: 1, pixel: true},
	{name: "pixel-before-body-end", in: `<html><body><p>Hi</p><!-- </body> --></body></html>`, pixel: true, has: []string{`<!-- </body> --><img src="https://t.example.net/`, `display:block" /></body></html>`}},
	{name: "pixel-at-end", in: `<p>Hi</p>`, pixel: true, has: []string{`<p>Hi</p><img src="https://t.example.net/`}},
	{name: "no-opens", cfg: noOpens, in: `<body><img src="https://i.example/a.png"><a href="https://x.example/">x</a></body>`, links: 1, has: []string{`<img src="https://i.example/a.png">`}},
	{name: "no-clicks", cfg: noClicks, in: `<body><img src="https://i.example/a.png"><a href="https://x.example/">x</a></body>`, images: 1, pixel: true, has: []string{`<a href="https://x.example/">`}},
	{name: "hosts", cfg: linksOnly, in: `<a href="https://bücher.example/ä?q=ö">idn</a><a href="http://x.example:8080/p">port</a><a href="http://[2001:db8::1]:8443/">v6</a>` +
		`<a href="https://xn--bcher-kva.example">puny</a><a href=" https://x.example/trim ">trim</a><a href="https://x.example/a b">space</a>`, links: 6},
	{name: "raw-text", cfg: linksOnly, in: `<script>var s = '<a href="https://x.example/">';</script><style>a{background:url(https://x.example/)}</style><textarea><a href="https://x.example/"></textarea>`},
	{name: "attr-like-text", cfg: linksOnly, in: `<p title='<a href="https://x.example/">'>href="https://x.example/"</p><a title="x>y" href="https://x.example/ok">ok</a>`, links: 1},
	{name: "malformed", cfg: linksOnly, in: `<a href="https://x.example/1"<a href="https://x.example/2">x</a><a href="https://x.example/3`, links: 1},
}

func TestHTML(t *testing.T) {
	for _, tc := range htmlCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ClickDomains = []string{"click.example.org"}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			var first []byte
			for _, rd := range readers {
				out, edits, st := run(t, cfg, []byte(tc.in), rd.wrap, false)
				checkFidelity(t, cfg.Codec, []byte(tc.in), out, edits, false)
				if first == nil {
					first = out
					if st.Links != tc.links || st.Images != tc.images || st.Pixel != tc.pixel {
						t.Errorf("stats %+v, want links %d images %d pixel %v", st, tc.links, tc.images, tc.pixel)
					}
					for _, s := range tc.has {
						if !bytes.Contains(out, []byte(s)) {
							t.Errorf("output lacks %q:\n%s", s, out)
						}
					}
					for _, s := range tc.hasNot {
						if bytes.Contains(out, []byte(s)) {
							t.Errorf("output holds %q:\n%s", s, out)
						}
					}
					if st.Links+st.Images == 0 && !st.Pixel && !bytes.Equal(out, []byte(tc.in)) && len(edits) == 0 {
						t.Errorf("nothing tracked but output changed")
					}
					golden(t, filepath.Join("..", "testdata", "rewrite", "html", tc.name+".golden"), out)
				} else if !bytes.Equal(out, first) {
					t.Errorf("%s reader: output differs:\n got: %s\nwant: %s", rd.name, out, first)
				}
			}
		})
	}
}

func TestFoldWords(t *testing.T) {
	words := []string{"href", "src", "background"}
	fw := newFoldWords(words...)
	for _, in := range []string{"", "h", "hre", "HREF", "xHrEfx", "<v:fill SRC=x>", "BackGround", "backgroun", "s r c", "hhhref", "sSrC", "Backgroundx"} {
		want := false
		for _, w := range words {
			if bytes.Contains(bytes.ToLower([]byte(in)), []byte(w)) {
				want = true
			}
		}
		if got := fw.in([]byte(in)); got != want {
			t.Errorf("in(%q) = %v, want %v", in, got, want)
		}
	}
}
