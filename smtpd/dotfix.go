package smtpd

import (
	"bytes"
	"errors"
	"io"
)

// dotFixer works around a bug in go-smtp's DATA reader (v0.25.1 and
// v0.26.0, data.go): after a CR, a second CR puts its state machine in the
// middle of a line, so when a line ends in an even number of CRs before its
// LF ("text\r\r\n", a bare CR then CRLF) it misses the start of the next
// line. It then neither removes the dot-stuffing of that line (RFC 5321
// §4.5.2) nor sees "\r\n.\r\n" there as the end of the data: the client
// waits for a reply that never comes, until a timeout. The bytes of that
// line reach us as they came, so dotFixer, reading go-smtp's output, tracks
// where go-smtp lost a line start, removes the leading dot there and, on a
// lone ".\r\n", ends the data (endedEarly; the session then makes go-smtp's
// reader give up, see trackedConn.endDataEarly). Everywhere else it passes
// bytes through. go-smtp's reader returns only with a full buffer or at
// the end it sees, so the connection makes it return at each pause in the
// data (errDataPause), and dotFixer reads on after one.
type dotFixer struct {
	r          io.Reader
	in         []byte // read from r, not yet handed out
	i          int
	crs        int // CRs in a row just before in[i], as go-smtp counts them
	state      int
	err        error // from r, handed out once in has drained
	endedEarly bool  // the end of the data was found here, not by go-smtp
}

const (
	fixData      = iota // go-smtp's reader is in step
	fixLineStart        // a line starts here and go-smtp's reader missed it
	fixDot              // at such a line start, a dot was removed
	fixDotCR            // and a CR after it is held
)

func (f *dotFixer) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if f.i == len(f.in) {
			if f.err != nil || f.endedEarly || n > 0 {
				break
			}
			if f.in == nil {
				f.in = make([]byte, 32<<10)
			}
			k, err := f.r.Read(f.in[:cap(f.in)])
			if errors.Is(err, errDataPause) {
				err = nil // a pause: look at what came, then read on
			}
			f.in, f.i, f.err = f.in[:k], 0, err
			continue
		}
		c := f.in[f.i]
		switch f.state {
		case fixData:
			n += f.copyLine(p[n:])
			continue
		case fixLineStart:
			if c == '.' {
				f.state = fixDot
				f.i++
				continue
			}
		case fixDot:
			if c == '\r' {
				f.state = fixDotCR
				f.i++
				continue
			}
		case fixDotCR:
			if c == '\n' {
				f.i++
				f.endedEarly = true
				f.in, f.i = f.in[:0], 0
				return n, io.EOF
			}
			// Not the end: the held CR is data.
			if len(p)-n < 2 {
				return n, nil
			}
			p[n] = '\r'
			n++
			f.crs = 1
		}
		f.state = fixData
	}
	if n > 0 {
		return n, nil
	}
	if f.endedEarly {
		return 0, io.EOF
	}
	return 0, f.err
}

// copyLine copies from in up to and including the next LF, as much as
// fits in p, and notes where go-smtp's reader loses the next line start.
func (f *dotFixer) copyLine(p []byte) int {
	chunk := f.in[f.i:]
	if len(chunk) > len(p) {
		chunk = chunk[:len(p)]
	}
	lf := bytes.IndexByte(chunk, '\n')
	if lf >= 0 {
		chunk = chunk[:lf+1]
	}
	copy(p, chunk)
	f.i += len(chunk)
	body := chunk
	if lf >= 0 {
		body = chunk[:lf]
	}
	k := 0
	for k < len(body) && body[len(body)-1-k] == '\r' {
		k++
	}
	if k == len(body) {
		f.crs += k
	} else {
		f.crs = k
	}
	if lf >= 0 {
		if f.crs >= 2 && f.crs%2 == 0 {
			f.state = fixLineStart
		}
		f.crs = 0
	}
	return len(chunk)
}
