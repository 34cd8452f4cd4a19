package inbound

import (
	"bytes"
	"io"
	stdmime "mime"
	"net/mail"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/transform"
)

// lookupEncoding resolves a charset label: IANA MIME names first, then the
// WHATWG labels. nil means UTF-8/ASCII or unknown.
func lookupEncoding(label string) encoding.Encoding {
	name := lowerASCII(strings.Trim(strings.TrimSpace(label), `"'`))
	switch name {
	case "", "us-ascii", "ascii", "utf-8", "utf8", "unknown-8bit", "x-unknown", "default":
		return nil
	}
	if e, err := ianaindex.MIME.Encoding(name); err == nil && e != nil {
		return e
	}
	if e, err := htmlindex.Get(name); err == nil {
		return e
	}
	return nil
}

// toUTF8 decodes b from charset into valid UTF-8 (undecodable bytes become
// U+FFFD).
func toUTF8(b []byte, charset string) string {
	if e := lookupEncoding(charset); e != nil {
		if out, _, err := transform.Bytes(e.NewDecoder(), b); err == nil {
			b = out
		}
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

var wordDecoder = &stdmime.WordDecoder{
	CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		if e := lookupEncoding(charset); e != nil {
			return transform.NewReader(r, e.NewDecoder()), nil
		}
		return r, nil
	},
}

// decodeWords decodes RFC 2047 encoded words in a header value; a value
// that does not decode is returned as it is (made valid UTF-8).
func decodeWords(s string) string {
	if strings.Contains(s, "=?") {
		if d, err := wordDecoder.DecodeHeader(s); err == nil {
			s = d
		}
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

// partText returns a text part's content as UTF-8 text; HTML is reduced
// to its visible text with line breaks at block elements.
func partText(e *entity) string {
	s := toUTF8(e.body, e.params["charset"])
	if e.mediaType == "text/html" {
		return htmlText(s)
	}
	return s
}

// htmlText extracts the visible text of an HTML document.
func htmlText(s string) string {
	z := html.NewTokenizer(strings.NewReader(s))
	var b strings.Builder
	skip := 0
	for {
		switch z.Next() {
		case html.ErrorToken:
			return b.String()
		case html.TextToken:
			if skip == 0 {
				b.Write(bytes.ReplaceAll(z.Text(), []byte("\u00a0"), []byte(" ")))
			}
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style", "head", "title":
				if t := z.Token(); t.Type == html.StartTagToken {
					skip++
				} else if t.Type == html.EndTagToken && skip > 0 {
					skip--
				}
			case "br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "pre", "hr":
				b.WriteByte('\n')
			case "td", "th":
				b.WriteByte(' ')
			}
		}
	}
}

// addrChar reports whether c can appear in the local part or domain of an
// address as bounces write them.
func addrChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c >= 0x80:
		return true // internationalised addresses (RFC 6531)
	}
	return strings.IndexByte(".!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// addrAt is an address found in text and where it was.
type addrAt struct {
	addr       string
	start, end int // byte offsets of the address itself
}

// findAddrs returns the e-mail addresses in s in order, as written (the
// caller lowercases the domain). Quoted local parts are not recognised.
func findAddrs(s string) []addrAt {
	var out []addrAt
	for i := 0; i < len(s); {
		j := strings.IndexByte(s[i:], '@')
		if j < 0 {
			break
		}
		at := i + j
		a := at
		for a > i && addrChar(s[a-1]) {
			a--
		}
		b := at + 1
		for b < len(s) && (addrChar(s[b]) && s[b] != '/' && s[b] != '=' && s[b] != '\'') {
			b++
		}
		// Trim punctuation that ends sentences or quotes.
		for b > at+1 && strings.IndexByte(".-_", s[b-1]) >= 0 {
			b--
		}
		for a < at && strings.IndexByte(".'`=/|", s[a]) >= 0 {
			a++
		}
		local, domain := s[a:at], s[at+1:b]
		if local != "" && strings.Contains(domain, ".") && !strings.Contains(domain, "..") && domain[0] != '.' && domain[0] != '-' && len(local) <= 128 && len(domain) <= 255 {
			out = append(out, addrAt{addr: local + "@" + domain, start: a, end: b})
		}
		i = b
		if i <= at {
			i = at + 1
		}
	}
	return out
}

// normAddr normalises an address for comparison: angle brackets and
// mailto: removed, the domain lowercased (the local part is kept: only
// the receiving domain may say whether it is case-sensitive, but it is
// compared case-insensitively by sameAddr).
func normAddr(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Trim(s, "<>\"' ;,")
	if strings.HasPrefix(lowerASCII(s), "mailto:") {
		s = s[7:]
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[:i] + "@" + lowerASCII(s[i+1:])
	}
	return s
}

func sameAddr(a, b string) bool { return strings.EqualFold(normAddr(a), normAddr(b)) }

// headerAddr returns the address part of an address header value, or the
// first address-looking string in it.
func headerAddr(v string) string {
	v = decodeWords(v)
	if a, err := mail.ParseAddress(v); err == nil {
		return normAddr(a.Address)
	}
	if as := findAddrs(v); len(as) > 0 {
		return normAddr(as[0].addr)
	}
	return ""
}

// headerAddrs returns every address in an address-list header value.
func headerAddrs(v string) []string {
	v = decodeWords(v)
	if l, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(l))
		for _, a := range l {
			out = append(out, normAddr(a.Address))
		}
		return out
	}
	var out []string
	for _, a := range findAddrs(v) {
		out = append(out, normAddr(a.addr))
	}
	return out
}

// lowerASCII lowercases the ASCII letters of s and nothing else, so that
// byte offsets found in the result hold in s (strings.ToLower may change
// the length of non-ASCII and invalid text).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// squash collapses runs of white space into one space and trims.
func squash(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
