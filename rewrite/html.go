package rewrite

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/net/html"
)

// Bounds of the HTML rewriter. Memory per call is a few times maxBuf,
// whatever the input size.
const (
	// maxBuf bounds one token in the tokenizer's buffer. A longer token
	// (a 1 MB data: URI, a huge comment) passes through unchanged.
	maxBuf = 256 << 10
	// maxCommentDepth bounds how deep conditional comments are tokenized
	// again.
	maxCommentDepth = 3
	// lookAheadBytes and lookAheadTokens bound the preventscam look-ahead
	// from <a> to </a>; past them the link is left untracked.
	lookAheadBytes  = 8 << 10
	lookAheadTokens = 256
	// maxScamText bounds the visible text kept for the preventscam check;
	// a longer text is not a URL anyway.
	maxScamText = 2 << 10
)

// writers recycles the output buffers of HTML and Text calls.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// output counts what has been written, for Edit offsets, and keeps the
// first write error.
type output struct {
	w   *bufio.Writer
	off int64
	err error
}

func (o *output) write(b []byte) {
	if o.err != nil {
		return
	}
	n, err := o.w.Write(b)
	o.off += int64(n)
	o.err = err
}

func (o *output) writeString(s string) {
	if o.err != nil {
		return
	}
	n, err := o.w.WriteString(s)
	o.off += int64(n)
	o.err = err
}

// edit writes newv in place of old and reports it.
func (t *Tracker) edit(o *output, old, newv []byte) {
	if t.cfg.OnEdit != nil && o.err == nil {
		t.cfg.OnEdit(Edit{Off: o.off, Old: string(old), New: string(newv)})
	}
	o.write(newv)
}

// htmlProc rewrites one HTML token stream: a body, or the inside of a
// conditional comment.
type htmlProc struct {
	t        *Tracker
	out      *output
	depth    int      // conditional comment nesting
	base     *url.URL // the first absolute http(s) <base href>
	baseSeen bool
	rawTag   string // the raw-text element whose text comes next, if any
	// last describes the token before the current one, for huge.
	last struct {
		tt     html.TokenType
		prefix []byte // its first bytes
		rawTag string // the raw-text element it was the text of
	}
	attrs []rawAttr

	// preventscam look-ahead from <a> to </a>.
	la struct {
		on   bool
		tag  []byte // the <a> start tag
		tg   target // its href, to be tracked unless its text is a URL
		toks []laToken
		data []byte // raw bytes of toks
		text []byte // visible text, decoded
	}
}

type laToken struct {
	tt         html.TokenType
	start, end int // in la.data
}

// HTML copies an HTML body from src to dst, tracking its links and images
// and adding the open pixel. It never fails on malformed HTML; errors come
// only from reading src or writing dst. Edit offsets count from the start
// of this call's output.
func (t *Tracker) HTML(dst io.Writer, src io.Reader) error {
	return writeThrough(dst, func(out *output) error {
		p := &htmlProc{t: t, out: out}
		err := p.run(src)
		if err == nil && t.cfg.Opens && !t.stats.Pixel {
			t.pixel(out) // no </body>: at the end
		}
		return err
	})
}

// writeThrough runs fn with a pooled buffered output on dst and flushes it.
// fn's error (a read error) wins over the first write error, which is
// wrapped; fn stops early once out.err is set.
func writeThrough(dst io.Writer, fn func(out *output) error) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(dst)
	defer func() {
		bw.Reset(nil)
		writers.Put(bw)
	}()
	out := &output{w: bw}
	err := fn(out)
	if out.err == nil {
		out.err = bw.Flush()
	}
	if err != nil {
		return err
	}
	if out.err != nil {
		return fmt.Errorf("rewrite: write: %w", out.err)
	}
	return nil
}

// run tokenizes r to the end.
func (p *htmlProc) run(r io.Reader) error {
	pr := &prefixReader{r: r}
	z := html.NewTokenizer(pr)
	z.SetMaxBuf(p.t.maxBuf())
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			err := z.Err()
			if errors.Is(err, html.ErrBufferExceeded) {
				p.endLookAhead(true)
				if err := p.huge(z, pr); err != nil {
					return err
				}
				if p.out.err != nil {
					return nil
				}
				z = html.NewTokenizer(pr)
				z.SetMaxBuf(p.t.maxBuf())
				continue
			}
			p.endLookAhead(false)
			p.out.write(z.Raw()) // an unfinished token at the end
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("rewrite: read: %w", err)
		}
		raw := z.Raw()
		p.last.tt, p.last.rawTag = tt, p.rawTag
		if tt == html.CommentToken {
			p.last.prefix = append(p.last.prefix[:0], raw[:min(len(raw), 4)]...)
		}
		if p.la.on {
			p.lookAhead(tt, raw)
		} else {
			p.token(tt, raw, true)
		}
		if p.out.err != nil {
			return nil
		}
		p.rawTag = ""
		if (tt == html.StartTagToken || tt == html.SelfClosingTagToken) && len(raw) > 2 {
			p.rawTag = rawTextTag(raw)
		}
	}
}

// rawTextTag returns the lower-case name of the tag in raw when the
// tokenizer reads the text after it as raw text.
func rawTextTag(raw []byte) string {
	switch raw[1] | 0x20 {
	case 'i', 'n', 'p', 's', 't', 'x':
	default:
		return ""
	}
	name := raw[1:tagNameEnd(raw)]
	for _, n := range [...]string{"iframe", "noembed", "noframes", "noscript", "plaintext", "script", "style", "textarea", "title", "xmp"} {
		if isName(name, n) {
			return n
		}
	}
	return ""
}

// tagNameEnd returns the end of the name in a start tag's raw bytes.
func tagNameEnd(raw []byte) int {
	for i := 2; i < len(raw); i++ {
		switch raw[i] {
		case ' ', '\n', '\r', '\t', '\f', '/', '>':
			return i
		}
	}
	return len(raw)
}

// element says what an element carries.
type element struct {
	attr string // the URL attribute
	kind Kind
}

// elementFor returns what the start tag named name carries, if anything.
func elementFor(name []byte) (element, bool) {
	if len(name) == 0 || len(name) > 11 {
		return element{}, false
	}
	switch name[0] | 0x20 {
	case 'a':
		if isName(name, "a") || isName(name, "area") {
			return element{"href", KindClick}, true
		}
	case 'i':
		if isName(name, "img") {
			return element{"src", KindImage}, true
		}
	case 'b':
		if isName(name, "body") {
			return element{"background", KindImage}, true
		}
		if isName(name, "base") {
			return element{"href", 0}, true
		}
	case 't':
		if isName(name, "table") || isName(name, "td") || isName(name, "th") {
			return element{"background", KindImage}, true
		}
	case 'v':
		if isName(name, "v:roundrect") {
			return element{"href", KindClick}, true
		}
		if isName(name, "v:fill") || isName(name, "v:image") {
			return element{"src", KindImage}, true
		}
	}
	return element{}, false
}

// isNoTrack reports whether the attribute at a is an author's no-track
// marker: data-notrack (any value), data-pm-no-track (Postmark, any value)
// or clicktracking="off" (SendGrid).
func isNoTrack(raw []byte, a rawAttr) bool {
	key := raw[a.keyStart:a.keyEnd]
	switch {
	case isName(key, "data-notrack"), isName(key, "data-pm-no-track"):
		return true
	case isName(key, "clicktracking"):
		return a.valEnd-a.valStart <= 32 && strings.EqualFold(strings.TrimSpace(attrValue(raw, a)), "off")
	}
	return false
}

// maxBuf returns the token bound: maxBuf, or a smaller one set by tests.
func (t *Tracker) maxBuf() int {
	if t.tokenBound > 0 {
		return t.tokenBound
	}
	return maxBuf
}

// on reports whether URLs of kind k are tracked.
func (t *Tracker) on(k Kind) bool {
	return k == KindClick && t.cfg.Clicks || k == KindImage && t.cfg.Opens
}

// token handles one token. top is false for tokens replayed after a
// look-ahead, which never start another one.
func (p *htmlProc) token(tt html.TokenType, raw []byte, top bool) {
	switch tt {
	case html.StartTagToken, html.SelfClosingTagToken:
		if len(raw) < 3 {
			break
		}
		el, ok := elementFor(raw[1:tagNameEnd(raw)])
		if !ok {
			break
		}
		if el.kind != 0 && !p.t.on(el.kind) || el.attr == "background" && !backgroundWord.in(raw) {
			break // most <td>s: nothing to track, no need to scan attributes
		}
		p.tag(raw, el, top)
		return
	case html.EndTagToken:
		if p.depth == 0 && p.t.cfg.Opens && !p.t.stats.Pixel && len(raw) >= 7 && raw[2]|0x20 == 'b' {
			end := 3
			for end < len(raw) && !isSpace(raw[end]) && raw[end] != '/' && raw[end] != '>' {
				end++
			}
			if isName(raw[2:end], "body") {
				p.t.pixel(p.out)
			}
		}
	case html.CommentToken:
		if p.comment(raw) {
			return
		}
	}
	p.out.write(raw)
}

// splice is one change inside a tag's raw bytes.
type splice struct {
	start, end int
	newv       []byte
}

// tag rewrites a start tag of a known element.
func (p *htmlProc) tag(raw []byte, el element, top bool) {
	t := p.t
	nameEnd, attrs := scanTag(raw, p.attrs[:0])
	p.attrs = attrs
	var (
		url     *rawAttr
		noTrack bool
		spl     [4]splice
		splices = spl[:0]
	)
	for i := range p.attrs {
		a := &p.attrs[i]
		if url == nil && isName(raw[a.keyStart:a.keyEnd], el.attr) {
			url = a
		}
		if el.kind != 0 && isNoTrack(raw, *a) {
			noTrack = true
			// Take the whitespace before the key with it, unless that would
			// join what stands on either side ("<a x=1 data-notrack/>"
			// must not become "<a x=1/>", where the slash joins the value).
			start := a.keyStart
			if a.end >= len(raw) || isSpace(raw[a.end]) || raw[a.end] == '/' || raw[a.end] == '>' {
				for start > nameEnd && isSpace(raw[start-1]) {
					start--
				}
				if i > 0 {
					if b := p.attrs[i-1]; b.quote == 0 && b.valStart < b.valEnd && b.valEnd == start && a.end < len(raw) && raw[a.end] == '/' {
						start++
					}
				}
			}
			splices = append(splices, splice{start, a.end, nil})
		}
	}
	if el.kind == 0 { // <base>
		if !p.baseSeen && url != nil {
			p.baseSeen = true
			if b, err := parseBase(attrValue(raw, *url)); err == nil {
				p.base = b
			}
		}
		p.out.write(raw)
		return
	}
	on := t.on(el.kind)
	var tg target
	track := false
	if on && !noTrack && url != nil && url.hasEq {
		tg, track = t.parseTarget(attrValue(raw, *url), p.base)
	}
	if track && top && el.kind == KindClick && t.cfg.PreventScam && isName(raw[1:tagNameEnd(raw)], "a") {
		p.la.on = true
		p.la.tag = append(p.la.tag[:0], raw...)
		p.la.tg = tg
		p.la.toks = p.la.toks[:0]
		p.la.data = p.la.data[:0]
		p.la.text = p.la.text[:0]
		return
	}
	if track {
		t.qbuf = appendQuoted(t.qbuf[:0], t.trackedURL(tg, el.kind), url.quote)
		splices = append(splices, splice{url.valStart, url.valEnd, t.qbuf})
	}
	p.writeSpliced(raw, splices)
}

// writeSpliced writes raw with the splices applied (in order of start)
// and reports each as an Edit.
func (p *htmlProc) writeSpliced(raw []byte, splices []splice) {
	if len(splices) == 0 {
		p.out.write(raw)
		return
	}
	// Few splices: insertion sort by start.
	for i := 1; i < len(splices); i++ {
		for j := i; j > 0 && splices[j].start < splices[j-1].start; j-- {
			splices[j], splices[j-1] = splices[j-1], splices[j]
		}
	}
	prev := 0
	for _, s := range splices {
		p.out.write(raw[prev:s.start])
		p.t.edit(p.out, raw[s.start:s.end], s.newv)
		prev = s.end
	}
	p.out.write(raw[prev:])
}

// The bytes that make appendQuoted escape a value, or quote an unquoted
// one, and the bytes it escapes.
var (
	needsEscape = makeSet("&<>\"' \t\n\r\f`")
	needsQuotes = makeSet(" \t\n\r\f\"'`")
	escapes     = makeSet("&<>\"'")
)

// appendQuoted appends v escaped for an attribute value quoted with q (0:
// unquoted): what goes between the value's bounds. An unquoted value that
// needs quotes gets double quotes.
func appendQuoted(dst, v []byte, q byte) []byte {
	if indexSet(v, &needsEscape) < 0 {
		return append(dst, v...)
	}
	needQuotes := false
	if q == 0 {
		needQuotes = len(v) == 0 || indexSet(v, &needsQuotes) >= 0
		if needQuotes {
			q = '"'
			dst = append(dst, q)
		}
	}
	for {
		i := indexSet(v, &escapes)
		if i < 0 {
			dst = append(dst, v...)
			break
		}
		dst = append(dst, v[:i]...)
		switch c := v[i]; {
		case c == '&':
			dst = append(dst, "&amp;"...)
		case c == '<':
			dst = append(dst, "&lt;"...)
		case c == '>':
			dst = append(dst, "&gt;"...)
		case c == '"' && q == '"':
			dst = append(dst, "&quot;"...)
		case c == '\'' && q == '\'':
			dst = append(dst, "&#39;"...)
		default:
			dst = append(dst, c)
		}
		v = v[i+1:]
	}
	if needQuotes {
		dst = append(dst, q)
	}
	return dst
}

// parseBase accepts an absolute http(s) base URL.
func parseBase(s string) (*url.URL, error) {
	u, err := url.Parse(trimURL(s))
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, errors.New("rewrite: base is not an absolute http(s) URL")
	}
	return u, nil
}

// pixel writes the open pixel: a 1x1 image that takes no space, styled the
// way the big ESPs do it.
func (t *Tracker) pixel(o *output) {
	tok := Token{Kind: KindPixel, MessageID: t.cfg.MessageID}
	img := `<img src="` + string(appendQuoted(nil, t.urlFor(tok, ""), '"')) + `" alt="" width="1" height="1" border="0" style="height:1px!important;width:1px!important;border-width:0!important;margin:0!important;padding:0!important;display:block" />`
	t.stats.Pixel = true
	if t.cfg.OnEdit != nil && o.err == nil {
		t.cfg.OnEdit(Edit{Off: o.off, New: img})
	}
	o.writeString(img)
}

// comment rewrites the inside of a conditional comment
// ("<!--[if mso]> ... <![endif]-->"), which Outlook renders as HTML. It
// reports false when raw is some other comment.
func (p *htmlProc) comment(raw []byte) bool {
	if !p.t.cfg.Clicks && !p.t.cfg.Opens || p.depth >= maxCommentDepth || len(raw) < 7 || !bytes.HasPrefix(raw, []byte("<!--")) || !bytes.HasSuffix(raw, []byte("-->")) {
		return false
	}
	inner := raw[4 : len(raw)-3]
	s := inner
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	if len(s) < 3 || s[0] != '[' || s[1]|0x20 != 'i' || s[2]|0x20 != 'f' {
		return false
	}
	if !urlAttrWords.in(inner) {
		return false // nothing to track: copying is cheaper than tokenizing again
	}
	sub := &htmlProc{t: p.t, out: p.out, depth: p.depth + 1, base: p.base, baseSeen: true}
	p.out.write(raw[:4])
	if err := sub.run(bytes.NewReader(inner)); err != nil {
		// A bytes.Reader does not fail; keep the output whole anyway.
		p.out.err = err
	}
	p.out.write(raw[len(raw)-3:])
	return true
}

// lookAhead buffers one token after a tracked <a> with preventscam on.
func (p *htmlProc) lookAhead(tt html.TokenType, raw []byte) {
	if (tt == html.StartTagToken || tt == html.SelfClosingTagToken) && len(raw) > 2 && isName(raw[1:tagNameEnd(raw)], "a") {
		// A new <a> closes the open one.
		p.endLookAhead(false)
		p.token(tt, raw, true)
		return
	}
	if len(p.la.data)+len(raw) > lookAheadBytes || len(p.la.toks) >= lookAheadTokens {
		p.endLookAhead(true)
		p.token(tt, raw, true)
		return
	}
	start := len(p.la.data)
	p.la.data = append(p.la.data, raw...)
	p.la.toks = append(p.la.toks, laToken{tt, start, len(p.la.data)})
	switch tt {
	case html.TextToken:
		if p.rawTag == "" && len(p.la.text) < maxScamText {
			if bytes.IndexByte(raw, '&') >= 0 {
				p.la.text = append(p.la.text, html.UnescapeString(string(raw))...)
			} else {
				p.la.text = append(p.la.text, raw...)
			}
		}
	case html.EndTagToken:
		if len(raw) > 3 && isName(bytes.TrimRight(raw[2:len(raw)-1], " \t\r\n\f"), "a") {
			p.endLookAhead(false)
		}
	}
}

// endLookAhead decides the buffered link and writes it and what followed.
// With bounded set, the bound was hit: the link stays untracked.
func (p *htmlProc) endLookAhead(bounded bool) {
	if !p.la.on {
		return
	}
	p.la.on = false
	raw := p.la.tag
	_, p.attrs = scanTag(raw, p.attrs[:0])
	var url *rawAttr
	for i := range p.attrs {
		if a := &p.attrs[i]; isName(raw[a.keyStart:a.keyEnd], "href") {
			url = a
			break
		}
	}
	if bounded || url == nil || len(p.la.text) < maxScamText && looksLikeURL(string(p.la.text)) {
		p.out.write(raw)
	} else {
		p.t.qbuf = appendQuoted(p.t.qbuf[:0], p.t.trackedURL(p.la.tg, KindClick), url.quote)
		p.writeSpliced(raw, []splice{{url.valStart, url.valEnd, p.t.qbuf}})
	}
	for _, tk := range p.la.toks {
		p.token(tk.tt, p.la.data[tk.start:tk.end], false)
	}
}

// foldWords is a set of lower-case ASCII words to look for in any case,
// built once so a search reads b once and stops only at bytes that can
// start a word.
type foldWords struct {
	first byteSet
	words []string
}

func newFoldWords(words ...string) *foldWords {
	f := &foldWords{words: words}
	for _, w := range words {
		f.first[w[0]], f.first[w[0]-('a'-'A')] = true, true
	}
	return f
}

func (f *foldWords) in(b []byte) bool {
	for i, c := range b {
		if !f.first[c] {
			continue
		}
		for _, w := range f.words {
			if c|0x20 == w[0] && i+len(w) <= len(b) && isName(b[i:i+len(w)], w) {
				return true
			}
		}
	}
	return false
}

var (
	backgroundWord = newFoldWords("background")
	urlAttrWords   = newFoldWords("href", "src", "background")
)
