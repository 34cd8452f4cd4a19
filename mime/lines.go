package mime

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// lineBufSize bounds one buffered line. A longer line is handled in
// fragments: it is never a boundary or header line, so it can only be body.
const lineBufSize = 64 << 10

// lineReader yields the input line by line with each line's own ending
// ("\n" or "\r\n"), or the last unterminated line at EOF, without copying.
//
// go-message's textproto.ReadHeader and MultipartReader cannot be used for
// the walk itself: ReadHeader rewrites every line ending to CRLF in the raw
// bytes it keeps, and MultipartReader drops the preamble, the epilogue, the
// padding and line ending of each boundary line, and only follows the
// line-ending style of the first boundary. All of those must come out byte
// for byte, so the walk splits lines here and hands complete header blocks
// to textproto.ReadHeader only to parse their values.
type lineReader struct {
	br        *bufio.Reader
	line      []byte // pending line; valid until consume
	start     bool   // line begins at the start of an input line
	frag      bool   // line is a fragment of a longer line (no ending yet)
	ok        bool   // line is pending
	err       error  // sticky error once the input is exhausted
	nextStart bool
	top       bool   // nothing consumed yet
	off       int64  // input offset of the pending line
	prevEOL   string // line ending of the last consumed line ("" for none)
	copyBuf   []byte // copyRest's buffer; nil: io.Copy's own
}

// peek returns the pending line, reading one if needed. At the end of the
// input it returns io.EOF; other errors are read errors.
func (lr *lineReader) peek() ([]byte, error) {
	if lr.ok {
		return lr.line, nil
	}
	if lr.err != nil {
		return nil, lr.err
	}
	l, err := lr.br.ReadSlice('\n')
	lr.start = lr.nextStart
	lr.frag = false
	lr.nextStart = true
	if errors.Is(err, bufio.ErrBufferFull) {
		lr.frag = true
		lr.nextStart = false
		err = nil
	}
	if err != nil {
		if !errors.Is(err, io.EOF) {
			err = &ioError{err}
		}
		lr.err = err
		if len(l) == 0 {
			return nil, err
		}
	}
	lr.line = l
	lr.ok = true
	return l, nil
}

func (lr *lineReader) consume() {
	if lr.ok {
		lr.off += int64(len(lr.line))
		lr.prevEOL = eolOf(lr.line)
	}
	lr.ok, lr.top = false, false
}

// whole reports whether the pending line is a complete line that starts at
// a line start: only such a line can be a header or boundary line.
func (lr *lineReader) whole() bool { return lr.start && !lr.frag }

// delim reports whether the pending line is a boundary delimiter line of
// one of the boundaries in stack ("--" + boundary, already prefixed):
// which one (-1: none) and whether it is the close delimiter. Like
// Python's email.feedparser and RFC 2046 §5.1.1, the line must be exactly
// the dash-boundary, an optional "--", optional space or tab, and the line
// ending; boundaries of every enclosing multipart end a part.
func (lr *lineReader) delim(stack [][]byte) (int, bool) {
	return lr.delimOrder(stack, false)
}

// delimOrder is delim, trying the outermost boundary first when outerFirst
// is set. Python's email package does that for a multipart's preamble (the
// enclosing parts' delimiters end it before its own are looked for), and
// innermost first after its first delimiter; it matters only for
// boundaries that are prefixes of each other.
func (lr *lineReader) delimOrder(stack [][]byte, outerFirst bool) (int, bool) {
	if len(stack) == 0 || !lr.whole() {
		return -1, false
	}
	l := trimEOL(lr.line)
	if len(l) < 2 || l[0] != '-' || l[1] != '-' {
		return -1, false
	}
	for k := range stack {
		i := len(stack) - 1 - k
		if outerFirst {
			i = k
		}
		b := stack[i]
		if !bytes.HasPrefix(l, b) {
			continue
		}
		rest := l[len(b):]
		closing := false
		if bytes.HasPrefix(rest, []byte("--")) {
			closing = true
			rest = rest[2:]
		}
		if isLWSP(rest) {
			return i, closing
		}
	}
	return -1, false
}

// copyUntil copies lines to w until a delimiter line of stack (left
// pending) or the end of the input. It reports whether it stopped at a
// delimiter.
func (lr *lineReader) copyUntil(w io.Writer, stack [][]byte) (bool, error) {
	return lr.copyUntilOrder(w, stack, false)
}

// copyUntilOrder is copyUntil with delimOrder's outerFirst.
func (lr *lineReader) copyUntilOrder(w io.Writer, stack [][]byte, outerFirst bool) (bool, error) {
	if len(stack) == 0 {
		return false, lr.copyRest(w)
	}
	for {
		l, err := lr.peek()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if d, _ := lr.delimOrder(stack, outerFirst); d >= 0 {
			return true, nil
		}
		if _, err := w.Write(l); err != nil {
			return false, err
		}
		lr.consume()
	}
}

// copyRest copies the pending line and the rest of the input to w.
func (lr *lineReader) copyRest(w io.Writer) error {
	if lr.ok {
		if _, err := w.Write(lr.line); err != nil {
			return err
		}
		lr.consume()
	}
	if lr.err != nil {
		if errors.Is(lr.err, io.EOF) {
			return nil
		}
		return lr.err
	}
	var err error
	if len(lr.copyBuf) > 0 {
		_, err = io.CopyBuffer(w, readerOnly{lr.br}, lr.copyBuf)
	} else {
		_, err = io.Copy(w, readerOnly{lr.br})
	}
	if err != nil {
		var ie *ioError
		if !errors.As(err, &ie) {
			err = &ioError{err}
		}
	}
	lr.err = io.EOF
	return err
}

// readerOnly hides WriteTo so io.Copy's errors from the destination can be
// told apart from read errors.
type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

// spoolBody copies the body of a leaf to sp: everything up to a delimiter
// line of stack, except the line ending just before that delimiter, which
// RFC 2046 makes part of the delimiter. That ending is returned in held.
// At the end of the input the body runs to the end and atDelim is false.
func (lr *lineReader) spoolBody(sp *spool, stack [][]byte) (held []byte, atDelim bool, info bodyInfo, err error) {
	var hold [2]byte
	nh := 0
	for {
		l, err := lr.peek()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false, info, err
		}
		if d, _ := lr.delim(stack); d >= 0 {
			return append([]byte(nil), hold[:nh]...), true, info, nil
		}
		body := l
		eol := 0
		if !lr.frag {
			eol = len(l) - len(trimEOL(l))
			body = l[:len(l)-eol]
		}
		if nh > 0 {
			if err := info.write(sp, hold[:nh]); err != nil {
				return nil, false, info, err
			}
		}
		if err := info.write(sp, body); err != nil {
			return nil, false, info, err
		}
		nh = copy(hold[:], l[len(l)-eol:])
		if nh > 0 && info.eol == "" {
			info.eol = string(hold[:nh])
		}
		lr.consume()
	}
	if nh > 0 {
		if err := info.write(sp, hold[:nh]); err != nil {
			return nil, false, info, err
		}
	}
	return nil, false, info, nil
}

// bodyInfo is what spoolBody learns about a raw body on the way.
type bodyInfo struct {
	eol  string // first line ending seen
	nul  bool   // has a NUL byte
	last byte   // last byte
	n    int64
}

func (bi *bodyInfo) write(sp *spool, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if !bi.nul && bytes.IndexByte(p, 0) >= 0 {
		bi.nul = true
	}
	bi.last = p[len(p)-1]
	bi.n += int64(len(p))
	_, err := sp.Write(p)
	return err
}

// eolOf returns the line ending trimEOL takes off l: "\r\n", "\n", or ""
// for a last line without one.
func eolOf(l []byte) string {
	switch len(l) - len(trimEOL(l)) {
	case 2:
		return "\r\n"
	case 1:
		return "\n"
	}
	return ""
}

// trimEOL returns l without its line ending (CRLF or LF), if it has one.
func trimEOL(l []byte) []byte {
	if n := len(l); n > 0 && l[n-1] == '\n' {
		l = l[:n-1]
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
	}
	return l
}

func isLWSP(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

// ioError marks an error of the input, the output or a spool file, as
// opposed to content that cannot be decoded or encoded.
type ioError struct{ err error }

func (e *ioError) Error() string { return "mime: " + e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// errWriter tags the errors of w as I/O errors.
type errWriter struct{ w io.Writer }

func (ew errWriter) Write(p []byte) (int, error) {
	n, err := ew.w.Write(p)
	if err != nil {
		err = &ioError{err}
	}
	return n, err
}
