package rewrite

import (
	"fmt"
	"io"
	"strings"
)

// Text copies a plain-text body from src to dst, tracking its http(s) URLs
// when clicks are on. A URL ends at whitespace, a control byte, '<', '>'
// or '"'; trailing punctuation (.,;:!?) and closing brackets or quotes not
// opened inside the URL stay outside it, as do the angle brackets of
// "<https://...>". Lines are never broken or joined. Memory is bounded: a
// URL longer than 8 KiB passes through untracked. Edit offsets count from
// the start of this call's output.
func (t *Tracker) Text(dst io.Writer, src io.Reader) error {
	if !t.cfg.Clicks {
		// Nothing to find: a straight copy, no buffer in between.
		if _, err := io.Copy(dst, src); err != nil {
			return fmt.Errorf("rewrite: copy: %w", err)
		}
		return nil
	}
	return writeThrough(dst, func(out *output) error {
		tp := &textProc{t: t, out: out, prev: ' '}
		buf := make([]byte, 32<<10)
		var rerr error
		for {
			n, err := src.Read(buf)
			tp.feed(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				rerr = fmt.Errorf("rewrite: read: %w", err)
				break
			}
			if out.err != nil {
				break
			}
		}
		tp.finish()
		return rerr
	})
}

// textProc finds URLs in a byte stream that arrives in chunks of any size.
type textProc struct {
	t        *Tracker
	out      *output
	cand     []byte // a possible or certain URL, not yet written
	inURL    bool   // cand starts with a whole "http://" or "https://"
	skipping bool   // inside a URL too long to track, until its end
	prev     byte   // the last byte written
}

func isWordByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z'
}

func isURLEnd(c byte) bool {
	return c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"'
}

// schemePrefix reports whether b is, case-insensitively, a prefix of
// "http://" or "https://", and whether it is all of one.
func schemePrefix(b []byte) (prefix, whole bool) {
	for _, p := range [...]string{"http://", "https://"} {
		if len(b) > len(p) {
			continue
		}
		ok := true
		for i, c := range b {
			if c|0x20 != p[i] && c != p[i] {
				ok = false
				break
			}
		}
		if ok {
			prefix = true
			whole = whole || len(b) == len(p)
		}
	}
	return prefix, whole
}

func (tp *textProc) write(b []byte) {
	if len(b) > 0 {
		tp.out.write(b)
		tp.prev = b[len(b)-1]
	}
}

func (tp *textProc) feed(b []byte) {
	i := 0
	for i < len(b) {
		switch {
		case tp.skipping:
			j := i
			for j < len(b) && !isURLEnd(b[j]) {
				j++
			}
			tp.write(b[i:j])
			if j == len(b) {
				return
			}
			tp.skipping = false
			i = j
		case len(tp.cand) == 0:
			j := i
			for j < len(b) {
				if b[j]|0x20 == 'h' && !isWordByte(tp.prevAt(b, i, j)) {
					break
				}
				j++
			}
			tp.write(b[i:j])
			if j == len(b) {
				return
			}
			tp.cand = append(tp.cand, b[j])
			i = j + 1
		case !tp.inURL:
			prefix, whole := schemePrefix(append(tp.cand, b[i]))
			if !prefix {
				tp.write(tp.cand)
				tp.cand = tp.cand[:0]
				continue // b[i] is looked at again
			}
			tp.cand = append(tp.cand, b[i])
			tp.inURL = whole
			i++
		default:
			j := i
			for j < len(b) && !isURLEnd(b[j]) && len(tp.cand)+j-i <= maxURLLen {
				j++
			}
			tp.cand = append(tp.cand, b[i:j]...)
			i = j
			if len(tp.cand) > maxURLLen {
				tp.write(tp.cand)
				tp.cand, tp.inURL, tp.skipping = tp.cand[:0], false, true
				continue
			}
			if j < len(b) {
				tp.emit()
			}
		}
	}
}

// prevAt returns the byte before b[j], where b[i:j] is not written yet.
func (tp *textProc) prevAt(b []byte, i, j int) byte {
	if j > i {
		return b[j-1]
	}
	return tp.prev
}

func (tp *textProc) finish() {
	if tp.inURL {
		tp.emit()
	} else {
		tp.write(tp.cand)
		tp.cand = tp.cand[:0]
	}
}

// emit writes the URL in cand, tracked when it can be, and what trails it.
func (tp *textProc) emit() {
	u := string(tp.cand)
	tp.cand, tp.inURL = tp.cand[:0], false
	end := trimTrailing(u)
	tail := u[end:]
	u = u[:end]
	if tg, ok := tp.t.parseTarget(u, nil); ok {
		tp.t.edit(tp.out, []byte(u), tp.t.trackedURL(tg, KindClick))
		tp.prev = 'x'
	} else {
		tp.write([]byte(u))
	}
	tp.write([]byte(tail))
}

// trimTrailing returns where the URL in u ends once punctuation and
// unbalanced closing brackets and quotes are left outside.
func trimTrailing(u string) int {
	end := len(u)
	for end > 0 {
		c := u[end-1]
		switch c {
		case '.', ',', ';', ':', '!', '?':
			end--
			continue
		case ')', ']', '}':
			open := map[byte]byte{')': '(', ']': '[', '}': '{'}[c]
			if strings.Count(u[:end], string(open)) < strings.Count(u[:end], string(c)) {
				end--
				continue
			}
		case '\'':
			if strings.Count(u[:end], "'")%2 == 1 {
				end--
				continue
			}
		}
		break
	}
	return end
}
