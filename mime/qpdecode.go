package mime

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// qpDecoder decodes quoted-printable (RFC 2045 §6.7) with the same
// leniencies, output and errors as the standard library's
// mime/quotedprintable.Reader: "=\n" is a soft break too, bare CR and LF
// and octets >= 0x80 pass through, a final "=" is ignored, "=" not followed
// by two hex digits (and not ending the line) is a literal "=", and
// trailing white space before a hard break is dropped. The fuzz test
// FuzzQPReader holds the two to identical results.
//
// It differs in speed only: it copies each run of literal octets at once,
// where the standard decoder takes one loop per octet, which made it a
// fifth of the cost of tracking a quoted-printable part.
type qpDecoder struct {
	br   *bufio.Reader
	rest []byte // what is left of the current line, ready to decode
	// clean says rest holds only octets that decode as themselves and
	// "=": a run of literal octets then ends only at an "=".
	clean bool
	err   error // reported once rest is used up
}

func newQPDecoder(r io.Reader) *qpDecoder {
	return &qpDecoder{br: bufio.NewReader(r)}
}

// qpLiteralIn marks the octets that decode as themselves.
var qpLiteralIn = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= ' ' && c <= '~' && c != '=' || c == '\t' || c == '\r' || c == '\n' || c >= 0x80
	}
	return t
}()

// nextLine reads the next line and prepares it for decoding: trailing
// white space and the line ending go; a soft break's "=" goes; a hard
// break is put back as it was written (CRLF or LF).
func (q *qpDecoder) nextLine() {
	line, err := q.br.ReadSlice('\n')
	q.err = err
	e := len(line)
	for e > 0 && (line[e-1] == ' ' || line[e-1] == '\t' || line[e-1] == '\r' || line[e-1] == '\n') {
		e--
	}
	body := line[:e]
	q.clean = cleanQP(body) // the line ending put back below is literal
	switch {
	case len(body) > 0 && body[len(body)-1] == '=':
		after := line[e:]
		for len(after) > 0 && (after[0] == ' ' || after[0] == '\t') {
			after = after[1:]
		}
		body = body[:len(body)-1]
		if !bytes.HasPrefix(after, []byte("\n")) && !bytes.HasPrefix(after, []byte("\r\n")) &&
			!(len(after) == 0 && len(body) > 0 && err == io.EOF) {
			q.err = fmt.Errorf("quotedprintable: invalid bytes after =: %q", after)
		}
	case bytes.HasSuffix(line, []byte("\r\n")):
		body = append(body, '\r', '\n') // within line: the trimmed bytes held at least these
	case bytes.HasSuffix(line, []byte("\n")):
		body = append(body, '\n')
	}
	q.rest = body
}

func (q *qpDecoder) Read(p []byte) (n int, err error) {
	// The line lives in a local while decoding: storing a slice into q
	// costs a write barrier while the GC runs.
	rest := q.rest
	defer func() { q.rest = rest }()
	for len(p) > 0 {
		if len(rest) == 0 {
			if q.err != nil {
				return n, q.err
			}
			q.nextLine()
			rest = q.rest
			continue
		}
		// A run of literal octets ends at the next "=", or in a line
		// that is not clean, also at an octet that is not literal.
		m := min(len(rest), len(p))
		k := bytes.IndexByte(rest[:m], '=')
		if k < 0 {
			k = m
		}
		if !q.clean {
			for i := range k {
				if !qpLiteralIn[rest[i]] {
					k = i
					break
				}
			}
		}
		if k > 0 {
			copy(p, rest[:k])
			p, rest, n = p[k:], rest[k:], n+k
			continue
		}
		c := rest[0]
		switch {
		case c != '=':
			return n, fmt.Errorf("quotedprintable: invalid unescaped byte 0x%02x in body", c)
		case len(rest) >= 3 && isHexDigit(rest[1]) && isHexDigit(rest[2]):
			p[0] = unhex(rest[1])<<4 | unhex(rest[2])
			rest = rest[3:]
		case len(rest) >= 2 && rest[1] != '\r' && rest[1] != '\n':
			p[0] = '=' // not an escape: a literal "="
			rest = rest[1:]
		case len(rest) < 3:
			return n, io.ErrUnexpectedEOF // fewer than two octets after "="
		default:
			return n, fmt.Errorf("quotedprintable: invalid hex byte 0x%02x", rest[1])
		}
		p, n = p[1:], n+1
	}
	return n, nil
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// Byte-wise constants for the word-at-a-time tests.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// cleanQP reports whether b holds only octets that decode as themselves
// and "=". It reads eight octets at a time, and octet by octet only when
// one of them is a control octet (a tab, or rarely one that is not
// literal).
func cleanQP(b []byte) bool {
	all := b
	var hit uint64
	for len(b) >= 8 {
		hit |= ctlBits(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	if hit != 0 {
		return qpLiteralOrEq(all)
	}
	return qpLiteralOrEq(b)
}

func qpLiteralOrEq(b []byte) bool {
	for _, c := range b {
		if !qpLiteralIn[c] && c != '=' {
			return false
		}
	}
	return true
}

// ctlBits is not zero exactly when one of the eight bytes of w is below
// 0x20 or is 0x7f (DEL). Both tests are exact as a whole, like ascii8's.
func ctlBits(w uint64) uint64 {
	del := w ^ 0x7f*ones // DEL is zero here
	return ((w-0x20*ones)&^w | (del-ones)&^del) & highs
}

// ascii8 reports whether the eight bytes of w are all printable ASCII or
// space (0x20-0x7e). Each test is exact as a whole: a borrow or carry
// between bytes comes only from a byte that fails anyway.
func ascii8(w uint64) bool {
	return ((w-0x20*ones)&^w|(w+ones)|w)&highs == 0
}
