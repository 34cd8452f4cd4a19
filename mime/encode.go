package mime

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
)

// maxEncodedLine is the longest line the encoders write, soft break
// included (RFC 2045 §6.7 and §6.8).
const maxEncodedLine = 76

// qpWriter is a quoted-printable encoder (RFC 2045 §6.7). Unlike
// mime/quotedprintable.Writer, which writes every hard line break as CRLF,
// it keeps each hard line break of the content as it is ("\r\n" or "\n")
// and ends soft line breaks with the part's own line ending, so a part
// keeps its line-ending style and its decoded content exactly. It encodes
// a "-" that would start a line, so its output never holds a line that
// could be a multipart delimiter.
type qpWriter struct {
	w       io.Writer
	eol     string
	buf     []byte
	lineLen int
	ws      byte // pending space or tab: encoded if a line break follows
	cr      bool // pending CR: a hard break if LF follows
}

// newQPWriter returns an encoder writing to w that buffers in buf (nil:
// a buffer of its own).
func newQPWriter(w io.Writer, eol string, buf []byte) *qpWriter {
	if buf == nil {
		buf = make([]byte, 0, 4096)
	}
	return &qpWriter{w: w, eol: eol, buf: buf[:0]}
}

const upperhex = "0123456789ABCDEF"

// qpLiteral marks the octets quoted-printable writes as themselves: the
// printable ASCII characters other than "=" (RFC 2045 §6.7 rule 2).
var qpLiteral = func() (t [256]bool) {
	for b := 33; b <= 126; b++ {
		t[b] = b != '='
	}
	return t
}()

func (q *qpWriter) Write(p []byte) (int, error) {
	// The state lives in locals while encoding: the encoder is the hot
	// loop of a tracked quoted-printable part.
	buf, lineLen, ws, cr := q.buf, q.lineLen, q.ws, q.cr
	eol := q.eol
	// room inserts a soft line break unless n more octets fit on the line
	// with a trailing "=".
	room := func(n int) {
		if lineLen+n > maxEncodedLine-1 {
			buf = append(buf, '=')
			buf = append(buf, eol...)
			lineLen = 0
		}
	}
	escaped := func(b byte) {
		room(3)
		buf = append(buf, '=', upperhex[b>>4], upperhex[b&15])
		lineLen += 3
	}
	// flushWS writes a pending space or tab, encoded when it would end a
	// line.
	flushWS := func(encode bool) {
		if ws == 0 {
			return
		}
		b := ws
		ws = 0
		if encode {
			escaped(b)
			return
		}
		room(1)
		buf = append(buf, b)
		lineLen++
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		if cr {
			cr = false
			if b == '\n' {
				flushWS(true)
				buf = append(buf, '\r', '\n')
				lineLen = 0
				continue
			}
			flushWS(false)
			escaped('\r')
		}
		switch {
		case qpLiteral[b]:
			flushWS(false)
			// Copy the whole run of literal octets a line at a time: this
			// is the hot path of a tracked quoted-printable part.
			// A space or tab inside the run is literal too when a byte
			// that is not a line ending follows it in p (only white space
			// that ends a line must be encoded).
			j := i + 1
			// Eight octets at a time up to the next "=" while they are
			// printable ASCII or space: a space in the middle of a word is
			// followed by a byte that is not a line ending; the last one
			// is checked.
			eq := len(p)
			if e := bytes.IndexByte(p[j:], '='); e >= 0 {
				eq = j + e
			}
			for lim := min(eq, len(p)-1); j+8 <= lim; j += 8 {
				w := binary.LittleEndian.Uint64(p[j:])
				if !ascii8(w) || w>>56 == ' ' && (p[j+8] == '\r' || p[j+8] == '\n') {
					break
				}
			}
			for j < len(p) && (qpLiteral[p[j]] ||
				(p[j] == ' ' || p[j] == '\t') && j+1 < len(p) && p[j+1] != '\r' && p[j+1] != '\n') {
				j++
			}
			for i < j {
				if lineLen+1 > maxEncodedLine-1 {
					buf = append(buf, '=')
					buf = append(buf, eol...)
					lineLen = 0
				}
				if lineLen == 0 && p[i] == '-' {
					// An encoded line never starts with "-", so no line of
					// a re-encoded body can pass for a boundary delimiter,
					// even where a soft break lands just before
					// "--boundary".
					escaped('-')
					i++
					continue
				}
				n := min(j-i, maxEncodedLine-1-lineLen)
				buf = append(buf, p[i:i+n]...)
				lineLen += n
				i += n
			}
			i--
		case b == '\r':
			cr = true
		case b == '\n':
			flushWS(true)
			buf = append(buf, '\n')
			lineLen = 0
		case b == ' ' || b == '\t':
			flushWS(false)
			ws = b
		default:
			flushWS(false)
			escaped(b)
		}
		if len(buf) >= 4000 {
			if _, err := q.w.Write(buf); err != nil {
				q.buf, q.lineLen, q.ws, q.cr = buf[:0], lineLen, ws, cr
				return i, err
			}
			buf = buf[:0]
		}
	}
	q.buf, q.lineLen, q.ws, q.cr = buf, lineLen, ws, cr
	return len(p), nil
}

func (q *qpWriter) flush() error {
	if len(q.buf) == 0 {
		return nil
	}
	_, err := q.w.Write(q.buf)
	q.buf = q.buf[:0]
	return err
}

// Close writes what is pending. It does not close the underlying writer.
func (q *qpWriter) Close() error {
	if q.cr {
		q.cr = false
		q.flushWS(false)
		q.escaped('\r')
	}
	q.flushWS(true)
	return q.flush()
}

// flushWS, escaped and room are Write's helpers for Close.
func (q *qpWriter) flushWS(encode bool) {
	if q.ws == 0 {
		return
	}
	b := q.ws
	q.ws = 0
	if encode {
		q.escaped(b)
		return
	}
	q.room(1)
	q.buf = append(q.buf, b)
	q.lineLen++
}

func (q *qpWriter) escaped(b byte) {
	q.room(3)
	q.buf = append(q.buf, '=', upperhex[b>>4], upperhex[b&15])
	q.lineLen += 3
}

func (q *qpWriter) room(n int) {
	if q.lineLen+n > maxEncodedLine-1 {
		q.buf = append(q.buf, '=')
		q.buf = append(q.buf, q.eol...)
		q.lineLen = 0
	}
}

// lineWrapper breaks base64 text into lines of maxEncodedLine characters
// with the part's line ending. Close ends the last line only when final is
// set (when the original body ended with a line ending).
type lineWrapper struct {
	w     io.Writer
	eol   string
	final bool
	col   int
	any   bool
}

func (lw *lineWrapper) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if lw.col == maxEncodedLine {
			if _, err := io.WriteString(lw.w, lw.eol); err != nil {
				return n, err
			}
			lw.col = 0
		}
		k := min(maxEncodedLine-lw.col, len(p))
		if _, err := lw.w.Write(p[:k]); err != nil {
			return n, err
		}
		lw.any = true
		lw.col += k
		n += k
		p = p[k:]
	}
	return n, nil
}

func (lw *lineWrapper) Close() error {
	if lw.final && lw.any {
		_, err := io.WriteString(lw.w, lw.eol)
		return err
	}
	return nil
}

// b64Writer encodes to base64 in lines of 76 characters.
type b64Writer struct {
	enc io.WriteCloser
	lw  *lineWrapper
}

func newB64Writer(w io.Writer, eol string, final bool) *b64Writer {
	lw := &lineWrapper{w: w, eol: eol, final: final}
	return &b64Writer{enc: base64.NewEncoder(base64.StdEncoding, lw), lw: lw}
}

func (b *b64Writer) Write(p []byte) (int, error) { return b.enc.Write(p) }

func (b *b64Writer) Close() error {
	if err := b.enc.Close(); err != nil {
		return err
	}
	return b.lw.Close()
}

// nopCloser adds a Close that does nothing.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
