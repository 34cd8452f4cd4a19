package mime

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// MaxHeaderBytes bounds one header block (the message's or a part's).
// A longer block is malformed: its part passes through unchanged.
const MaxHeaderBytes = 1 << 20

// field is one raw header field with its folded continuation lines and
// their original line endings.
type field struct {
	raw  []byte
	name string // lower case
	drop bool   // removed on output (a control header)
}

// rawHeader is a header block as it came in.
type rawHeader struct {
	prefix []byte // an mbox "From " line before the message header
	fields []field
	term   []byte // the empty line that ends the block; nil if none
	eol    string // line ending of the first line
	h      textproto.Header
	off    int64 // input offset of the block
}

// headerStatus says how a header block ended.
type headerStatus int

const (
	hdrOK        headerStatus = iota // at its empty line
	hdrEOF                           // at the end of the input
	hdrDelim                         // at a boundary line, left pending
	hdrMalformed                     // at a line that is not a header line, left pending
)

// readHeader reads a header block, stopping at its empty line, at a
// boundary line of stack, at the end of the input, or at the first line
// that cannot be part of a header (reported in reason).
func readHeader(lr *lineReader, stack [][]byte) (*rawHeader, headerStatus, string, error) {
	rh := &rawHeader{off: lr.off}
	total := 0
	for {
		l, err := lr.peek()
		if errors.Is(err, io.EOF) {
			rh.parse()
			return rh, hdrEOF, "", nil
		}
		if err != nil {
			return rh, 0, "", err
		}
		if d, _ := lr.delim(stack); d >= 0 {
			rh.parse()
			return rh, hdrDelim, "", nil
		}
		reason := ""
		body := trimEOL(l)
		switch {
		case !lr.whole():
			reason = "header line too long"
		case total+len(l) > MaxHeaderBytes:
			reason = "header block too long"
		case bytes.IndexByte(l, 0) >= 0:
			reason = "NUL byte in header"
		}
		if reason == "" && len(body) == 0 {
			rh.term = append([]byte(nil), l...)
			if rh.eol == "" {
				rh.eol = string(l)
			}
			lr.consume()
			rh.parse()
			return rh, hdrOK, "", nil
		}
		if reason == "" {
			if body[0] == ' ' || body[0] == '\t' {
				if len(rh.fields) == 0 {
					reason = "header starts with a continuation line"
				} else {
					f := &rh.fields[len(rh.fields)-1]
					f.raw = append(f.raw, l...)
				}
			} else if i := bytes.IndexByte(body, ':'); i <= 0 || !validKey(body[:i]) {
				reason = "malformed header line"
			} else {
				rh.fields = append(rh.fields, field{
					raw:  append([]byte(nil), l...),
					name: strings.ToLower(string(bytes.TrimRight(body[:i], " \t"))),
				})
			}
		}
		if reason == "malformed header line" && lr.top && len(rh.fields) == 0 && rh.prefix == nil && bytes.HasPrefix(l, []byte("From ")) {
			// An mbox envelope line, as files saved by mail clients start
			// with (Python's email package keeps it as the unixfrom): kept.
			rh.prefix = append([]byte(nil), l...)
			total += len(l)
			lr.consume()
			continue
		}
		if reason != "" {
			rh.parse()
			return rh, hdrMalformed, reason, nil
		}
		if rh.eol == "" {
			rh.eol = string(l[len(body):])
		}
		total += len(l)
		lr.consume()
	}
}

func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// parse hands the raw fields to go-message's parser for their values.
func (rh *rawHeader) parse() {
	var b bytes.Buffer
	for _, f := range rh.fields {
		b.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	// The fields were checked above, so this does not fail; a field it
	// still rejects would only be missing from h.
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(&b)
	rh.h, _ = textproto.ReadHeader(br) // copies what it keeps
	br.Reset(nil)
	headerReaders.Put(br)
}

// headerReaders recycles the readers parse hands to textproto.ReadHeader.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// write writes the header block, leaving out dropped fields. With qp set,
// the Content-Transfer-Encoding becomes quoted-printable (replacing the
// first such field, dropping others, or adding one at the end).
func (rh *rawHeader) write(w io.Writer, qp bool) error {
	if _, err := w.Write(rh.prefix); err != nil {
		return err
	}
	done := false
	for _, f := range rh.fields {
		if f.drop {
			continue
		}
		raw := f.raw
		if qp && f.name == "content-transfer-encoding" {
			if done {
				continue
			}
			done = true
			raw = []byte("Content-Transfer-Encoding: quoted-printable" + lastEOL(f.raw, rh.eol))
		}
		if _, err := w.Write(raw); err != nil {
			return err
		}
	}
	if qp && !done {
		if _, err := io.WriteString(w, "Content-Transfer-Encoding: quoted-printable"+eolOr(rh.eol)); err != nil {
			return err
		}
	}
	_, err := w.Write(rh.term)
	return err
}

func lastEOL(raw []byte, def string) string {
	if bytes.HasSuffix(raw, []byte("\r\n")) {
		return "\r\n"
	}
	if bytes.HasSuffix(raw, []byte("\n")) {
		return "\n"
	}
	return eolOr(def)
}

func eolOr(eol string) string {
	if eol == "" {
		return "\r\n"
	}
	return eol
}
