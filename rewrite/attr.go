package rewrite

import (
	"bytes"
	"strings"

	"golang.org/x/net/html"
)

// rawAttr locates one attribute inside the raw bytes of a tag. Offsets are
// into the tag's raw bytes, '<' at 0.
type rawAttr struct {
	start      int  // first byte of the whitespace before the key (== keyStart when none)
	keyStart   int  // key, as written
	keyEnd     int  //
	valStart   int  // value, without quotes; valStart == valEnd when empty or absent
	valEnd     int  //
	end        int  // first byte after the attribute (after the closing quote)
	quote      byte // '"' or '\'' for a quoted value, 0 otherwise
	hasEq      bool // the key is followed by '='
	afterSpace bool // whitespace follows end (the tokenizer consumed it as a terminator)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f'
}

// scanTag splits the raw bytes of a complete start or self-closing tag
// ("<a href=x>") the way golang.org/x/net/html's Tokenizer does (WHATWG
// 13.2.5, tag open to attribute value states): it returns the span of the
// tag name and every attribute with a non-empty key, appended to attrs.
// Duplicates are kept: callers take the first of a name, as browsers do.
// It runs in time linear in len(raw).
// The fuzz test FuzzScanTag checks it against Tokenizer.TagAttr.
func scanTag(raw []byte, attrs []rawAttr) (nameEnd int, out []rawAttr) {
	n := len(raw)
	i := 2 // '<' and the first letter of the name
	nameEnd = n
	for i < n {
		c := raw[i]
		i++
		if isSpace(c) {
			nameEnd = i - 1
			break
		}
		if c == '/' || c == '>' {
			i--
			nameEnd = i
			break
		}
	}
	skip := func() {
		for i < n && isSpace(raw[i]) {
			i++
		}
	}
	for {
		wsStart := i
		skip()
		if i >= n || raw[i] == '>' {
			break
		}
		a := rawAttr{start: wsStart, keyStart: i}
		// Attribute name state; a leading '=' belongs to the name.
		for {
			if i >= n {
				a.keyEnd = i
				break
			}
			c := raw[i]
			i++
			if c == '=' && a.keyStart+1 == i {
				continue
			}
			if c == '=' || isSpace(c) || c == '/' || c == '>' {
				i--
				a.keyEnd = i
				break
			}
		}
		a.valStart, a.valEnd, a.end = i, i, a.keyEnd
		func() {
			skip()
			if i >= n {
				return
			}
			c := raw[i]
			i++
			if c == '/' {
				return
			}
			if c != '=' {
				i--
				return
			}
			a.hasEq = true
			skip()
			if i >= n {
				a.valStart, a.valEnd, a.end = i, i, i
				return
			}
			q := raw[i]
			i++
			switch q {
			case '>':
				i--
				a.valStart, a.valEnd, a.end = i, i, i
			case '"', '\'':
				a.quote = q
				a.valStart = i
				for {
					if i >= n {
						a.valEnd, a.end = i, i
						return
					}
					c := raw[i]
					i++
					if c == q {
						a.valEnd, a.end = i-1, i
						return
					}
				}
			default:
				a.valStart = i - 1
				for {
					if i >= n {
						a.valEnd, a.end = i, i
						return
					}
					c := raw[i]
					i++
					if isSpace(c) {
						a.valEnd, a.end, a.afterSpace = i-1, i-1, true
						return
					}
					if c == '>' {
						i--
						a.valEnd, a.end = i, i
						return
					}
				}
			}
		}()
		if a.keyStart == a.keyEnd {
			continue
		}
		attrs = append(attrs, a)
	}
	return nameEnd, attrs
}

// isName reports whether b, ASCII case-folded, is the lower-case name.
func isName(b []byte, name string) bool {
	if len(b) != len(name) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// attrValue returns the value of a as the tokenizer would: newlines
// normalised, NUL replaced, character references decoded with the
// attribute-value rules (where "&copy=" stays as written).
func attrValue(raw []byte, a rawAttr) string {
	v := raw[a.valStart:a.valEnd]
	if bytes.IndexByte(v, '&') < 0 && bytes.IndexByte(v, '\r') < 0 && bytes.IndexByte(v, 0) < 0 {
		return string(v)
	}
	if bytes.IndexByte(v, '\r') < 0 && bytes.IndexByte(v, 0) < 0 && onlyAmp(v) {
		// Each "&amp;" becomes "&", into one allocation.
		var b strings.Builder
		b.Grow(len(v))
		for {
			i := bytes.Index(v, []byte("&amp;"))
			if i < 0 {
				b.Write(v)
				return b.String()
			}
			b.Write(v[:i+1])
			v = v[i+5:]
		}
	}
	// Let the tokenizer decode it: the same value in a synthetic tag with
	// the same quoting has the same meaning.
	var b strings.Builder
	b.Grow(len(v) + 8)
	b.WriteString("<a v=")
	if a.quote != 0 {
		b.WriteByte(a.quote)
	}
	b.Write(v)
	if a.quote != 0 {
		b.WriteByte(a.quote)
	}
	b.WriteString(">")
	z := html.NewTokenizer(strings.NewReader(b.String()))
	z.Next()
	_, val, _ := z.TagAttr()
	return string(val)
}

// onlyAmp reports whether every '&' in v starts "&amp;", the common case
// that needs no entity table.
func onlyAmp(v []byte) bool {
	for {
		i := bytes.IndexByte(v, '&')
		if i < 0 {
			return true
		}
		if !bytes.HasPrefix(v[i:], []byte("&amp;")) {
			return false
		}
		v = v[i+5:]
	}
}
