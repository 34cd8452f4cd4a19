package mime

import (
	"bufio"
	"bytes"
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
	err  error  // reported once rest is used up
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
	body := bytes.TrimRight(line, " \t\r\n")
	switch {
	case len(body) > 0 && body[len(body)-1] == '=':
		after := bytes.TrimLeft(line[len(body):], " \t")
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
	for len(p) > 0 {
		if len(q.rest) == 0 {
			if q.err != nil {
				return n, q.err
			}
			q.nextLine()
			continue
		}
		k := 0
		for k < len(q.rest) && k < len(p) && qpLiteralIn[q.rest[k]] {
			k++
		}
		if k > 0 {
			copy(p, q.rest[:k])
			p, q.rest, n = p[k:], q.rest[k:], n+k
			continue
		}
		c := q.rest[0]
		switch {
		case c != '=':
			return n, fmt.Errorf("quotedprintable: invalid unescaped byte 0x%02x in body", c)
		case len(q.rest) >= 3 && isHexDigit(q.rest[1]) && isHexDigit(q.rest[2]):
			p[0] = unhex(q.rest[1])<<4 | unhex(q.rest[2])
			q.rest = q.rest[3:]
		case len(q.rest) >= 2 && q.rest[1] != '\r' && q.rest[1] != '\n':
			p[0] = '=' // not an escape: a literal "="
			q.rest = q.rest[1:]
		case len(q.rest) < 3:
			return n, io.ErrUnexpectedEOF // fewer than two octets after "="
		default:
			return n, fmt.Errorf("quotedprintable: invalid hex byte 0x%02x", q.rest[1])
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
