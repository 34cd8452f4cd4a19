package rewrite

import (
	"bytes"
	"fmt"
	"io"

	"golang.org/x/net/html"
)

// prefixReader reads pre, then r. After a token too long for the
// tokenizer's buffer, the bytes the tokenizer had read ahead go back into
// pre for the next tokenizer.
type prefixReader struct {
	pre     []byte
	r       io.Reader
	scratch []byte
}

func (pr *prefixReader) Read(b []byte) (int, error) {
	if len(pr.pre) > 0 {
		n := copy(b, pr.pre)
		pr.pre = pr.pre[n:]
		return n, nil
	}
	return pr.r.Read(b)
}

// huge handles a token longer than maxBuf: it writes what the tokenizer
// holds, passes the rest of that token through unchanged and leaves pr
// positioned just after it, so a new tokenizer carries on in the data
// state. Nothing inside such a token is tracked.
func (p *htmlProc) huge(z *html.Tokenizer, pr *prefixReader) error {
	raw := z.Raw()
	p.out.write(raw)
	pre := make([]byte, 0, len(z.Buffered())+len(pr.pre))
	pr.pre = append(append(pre, z.Buffered()...), pr.pre...)
	if len(raw) == 0 {
		// The tokenizer returned the cut-off token as a text or comment
		// token (already written) and reports the bound only now.
		raw = p.last.prefix
		if p.last.tt == html.TextToken {
			raw = nil
		}
	}
	var end func([]byte) int // index just past the token's end in b, or -1
	switch {
	case p.last.tt == html.TextToken && p.last.rawTag == "plaintext" && len(z.Raw()) == 0:
		end = func([]byte) int { return -1 }
	case p.last.tt == html.TextToken && p.last.rawTag != "" && len(z.Raw()) == 0:
		end = rawTextEnd(p.last.rawTag)
	case len(raw) >= 4 && string(raw[:4]) == "<!--":
		end = commentEnd()
	case len(raw) >= 2 && raw[0] == '<' && isLetter(raw[1]),
		len(raw) >= 3 && raw[0] == '<' && raw[1] == '/' && isLetter(raw[2]):
		end = (&tagSkipper{}).feed
	case len(raw) >= 2 && raw[0] == '<' && (raw[1] == '!' || raw[1] == '?' || raw[1] == '/'):
		end = func(b []byte) int {
			if i := bytes.IndexByte(b, '>'); i >= 0 {
				return i + 1
			}
			return -1
		}
	default: // text: a new tokenizer carries on in the data state
		return nil
	}
	if pr.scratch == nil {
		pr.scratch = make([]byte, 32<<10)
	}
	for {
		if len(pr.pre) == 0 {
			n, err := pr.r.Read(pr.scratch)
			pr.pre = pr.scratch[:n]
			if n == 0 {
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return fmt.Errorf("rewrite: read: %w", err)
				}
				continue
			}
		}
		if i := end(pr.pre); i >= 0 {
			p.out.write(pr.pre[:i])
			pr.pre = pr.pre[i:]
			return nil
		}
		p.out.write(pr.pre)
		pr.pre = pr.pre[:0]
		if p.out.err != nil {
			return nil
		}
	}
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// commentEnd finds "-->" or "--!>" across chunks.
func commentEnd() func([]byte) int {
	var last [3]byte // the three bytes before the chunk
	return func(b []byte) int {
		for i, c := range b {
			if c == '>' && (last[1] == '-' && last[2] == '-' || last[0] == '-' && last[1] == '-' && last[2] == '!') {
				return i + 1
			}
			last[0], last[1], last[2] = last[1], last[2], c
		}
		return -1
	}
}

// rawTextEnd finds the start of "</name" followed by a space, '/' or '>'
// across chunks; the end tag itself is left for the next tokenizer.
func rawTextEnd(name string) func([]byte) int {
	pat := "</" + name
	matched := 0 // bytes of pat matched at the end of the previous chunks
	return func(b []byte) int {
		for i := 0; i < len(b); i++ {
			c := b[i]
			if matched == len(pat) {
				if isSpace(c) || c == '/' || c == '>' {
					if i >= len(pat) {
						return i - len(pat)
					}
					// The match started in an earlier chunk, already
					// written: an end tag split this way is passed through
					// as text, and the tokenizer resyncs after it.
					return i
				}
				matched = 0
			}
			if c|0x20 == pat[matched]|0x20 || c == pat[matched] {
				matched++
			} else if c == '<' {
				matched = 1
			} else {
				matched = 0
			}
		}
		return -1
	}
}

// tagSkipper follows the tokenizer's tag states just enough to find the
// '>' that ends a tag: not inside a quoted attribute value.
type tagSkipper struct {
	state int
	quote byte
}

const (
	tsName = iota
	tsBeforeAttr
	tsAttrName
	tsAfterName
	tsBeforeValue
	tsQuoted
	tsUnquoted
)

func (s *tagSkipper) feed(b []byte) int {
	for i, c := range b {
		switch s.state {
		case tsName:
			if isSpace(c) {
				s.state = tsBeforeAttr
			} else if c == '>' {
				return i + 1
			} else if c == '/' {
				s.state = tsBeforeAttr
			}
		case tsBeforeAttr:
			if c == '>' {
				return i + 1
			} else if !isSpace(c) && c != '/' {
				s.state = tsAttrName
			}
		case tsAttrName:
			switch {
			case c == '>':
				return i + 1
			case c == '=':
				s.state = tsBeforeValue
			case isSpace(c):
				s.state = tsAfterName
			case c == '/':
				s.state = tsBeforeAttr
			}
		case tsAfterName:
			switch {
			case c == '>':
				return i + 1
			case c == '=':
				s.state = tsBeforeValue
			case c == '/':
				s.state = tsBeforeAttr
			case !isSpace(c):
				s.state = tsAttrName
			}
		case tsBeforeValue:
			switch {
			case c == '>':
				return i + 1
			case c == '"' || c == '\'':
				s.state, s.quote = tsQuoted, c
			case !isSpace(c):
				s.state = tsUnquoted
			}
		case tsQuoted:
			if c == s.quote {
				s.state = tsBeforeAttr
			}
		case tsUnquoted:
			if c == '>' {
				return i + 1
			} else if isSpace(c) {
				s.state = tsBeforeAttr
			}
		}
	}
	return -1
}
