package inbound

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	stdmime "mime"
	"mime/quotedprintable"
	"strings"
)

// lineEnds turns CRLF and lone CR line endings into LF as the bytes
// stream through, so every parser below sees one kind of line end (the
// corpus holds the same messages with LF, CRLF and CR endings).
type lineEnds struct {
	r      io.Reader
	buf    []byte
	pendCR bool // the previous chunk ended in a CR
}

func (l *lineEnds) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if cap(l.buf) < len(p) {
		l.buf = make([]byte, len(p))
	}
	for {
		n, err := l.r.Read(l.buf[:len(p)])
		out := 0
		for _, c := range l.buf[:n] {
			if l.pendCR {
				l.pendCR = false
				if c == '\n' {
					continue // CRLF: the LF was already written for the CR
				}
			}
			if c == '\r' {
				l.pendCR = true
				c = '\n'
			}
			p[out] = c
			out++
		}
		if out > 0 || err != nil {
			return out, err
		}
	}
}

// capReader reads at most max bytes of r and records whether r had more.
type capReader struct {
	r         io.Reader
	left      int64
	truncated bool
	n         int64
	err       error // a read error other than EOF
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		if !c.truncated {
			var one [1]byte
			if n, _ := io.ReadFull(c.r, one[:]); n > 0 {
				c.truncated = true
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}

// maxLine bounds one line held in memory; longer lines are cut into
// pieces of this size (a boundary or header line is never that long).
const maxLine = 64 << 10

// lineReader reads LF-terminated lines with one line of push-back.
type lineReader struct {
	br      *bufio.Reader
	back    []byte
	hasBack bool
	eof     bool
	long    []byte // reused buffer for lines longer than bufio's
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 16<<10)}
}

// next returns the next line without its LF; ok is false at the end.
// The slice is valid until the following call.
func (lr *lineReader) next() (line []byte, ok bool) {
	if lr.hasBack {
		lr.hasBack = false
		return lr.back, true
	}
	if lr.eof {
		return nil, false
	}
	lr.long = lr.long[:0]
	for {
		frag, err := lr.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(lr.long)+len(frag) >= maxLine {
				// Cut the line here: the rest comes as the next line.
				lr.long = append(lr.long, frag...)
				return lr.long, true
			}
			lr.long = append(lr.long, frag...)
			continue
		}
		if err != nil {
			lr.eof = true
			if len(frag) == 0 && len(lr.long) == 0 {
				return nil, false
			}
		}
		frag = bytes.TrimSuffix(frag, []byte{'\n'})
		if len(lr.long) > 0 {
			lr.long = append(lr.long, frag...)
			return lr.long, true
		}
		return frag, true
	}
}

// unread pushes line back; the next call to next returns it again.
func (lr *lineReader) unread(line []byte) {
	lr.back = append(lr.back[:0], line...)
	lr.hasBack = true
}

// field is one header field, unfolded, with its name as written.
type field struct {
	Name, Value string
}

// header is a list of fields in their order.
type header []field

// Get returns the first value of the named field (case-insensitive), or "".
func (h header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Values returns every value of the named field.
func (h header) Values(name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Has reports whether the named field is present.
func (h header) Has(name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

const (
	maxHeaderBytes  = 256 << 10
	maxHeaderFields = 1000
)

// isFieldName reports whether b is a plausible header field name.
func isFieldName(b []byte) bool {
	if len(b) == 0 || len(b) > 76 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// readHeader reads a header block leniently: an mbox "From " line at the
// top is skipped, folded lines are joined, a line that is neither a field
// nor a continuation ends the header and is left for the body, and the
// block is bounded in bytes and fields (the rest of an oversized header is
// skipped up to its blank line).
func readHeader(lr *lineReader) header {
	var h header
	size := 0
	first := true
	for {
		line, ok := lr.next()
		if !ok {
			return h
		}
		if first {
			first = false
			if bytes.HasPrefix(line, []byte("From ")) {
				continue
			}
		}
		if len(bytes.TrimRight(line, " \t")) == 0 {
			return h
		}
		size += len(line)
		if line[0] == ' ' || line[0] == '\t' {
			if len(h) > 0 && size <= maxHeaderBytes {
				last := &h[len(h)-1]
				last.Value += " " + strings.TrimSpace(string(line))
			}
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 || !isFieldName(bytes.TrimRight(line[:i], " \t")) {
			if len(h) == 0 {
				// No header at all: the message starts with its body.
				lr.unread(line)
				return h
			}
			// A field ending in ';' continued on an unindented line
			// (Verizon's and James's "Content-Type: ...;\nboundary=..."):
			// the line is its continuation.
			if last := &h[len(h)-1]; strings.HasSuffix(last.Value, ";") && bytes.IndexByte(line, '=') > 0 {
				if size <= maxHeaderBytes {
					last.Value += " " + strings.TrimSpace(string(line))
				}
				continue
			}
			// A stray line inside a header (seen in broken bounces) is
			// skipped unless it looks like the start of a body.
			if looksLikeBody(line) {
				lr.unread(line)
				return h
			}
			continue
		}
		if size > maxHeaderBytes || len(h) >= maxHeaderFields {
			continue
		}
		h = append(h, field{
			Name:  string(bytes.TrimRight(line[:i], " \t")),
			Value: strings.TrimSpace(string(line[i+1:])),
		})
	}
}

// looksLikeBody reports whether a line that is not a header field reads as
// the start of a body (prose or a MIME delimiter) rather than junk.
func looksLikeBody(line []byte) bool {
	return bytes.HasPrefix(line, []byte("--")) || bytes.Count(line, []byte(" ")) >= 2
}

// mediaType parses a Content-Type value leniently. A missing or broken
// value gives def.
func mediaType(v, def string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return def, map[string]string{}
	}
	mt, params, err := stdmime.ParseMediaType(v)
	if err == nil {
		return lowerASCII(mt), params
	}
	// Broken parameters: take the type and pick out the parameters that
	// matter by hand.
	semi := strings.IndexByte(v, ';')
	mt = v
	if semi >= 0 {
		mt = v[:semi]
	}
	mt = lowerASCII(strings.TrimSpace(mt))
	if !strings.Contains(mt, "/") {
		mt = def
	}
	params = map[string]string{}
	if semi >= 0 {
		for _, kv := range strings.Split(v[semi+1:], ";") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			k = lowerASCII(strings.TrimSpace(k))
			val = strings.TrimSpace(val)
			val = strings.Trim(val, `"'`)
			if k != "" {
				params[k] = val
			}
		}
	}
	return mt, params
}

// entity is a MIME part the classifier keeps, with its body decoded from
// its transfer encoding (message/* parts keep their raw bytes).
type entity struct {
	header    header
	mediaType string
	params    map[string]string
	filename  string
	body      []byte
	truncated bool // the body was longer than what was kept
	depth     int
}

// tree is what the walk keeps of a message: its top header and the parts
// that can say what it is.
type tree struct {
	header    header
	mediaType string
	params    map[string]string
	parts     []*entity // leaves in the order they appear
	truncated bool      // the input was longer than Options.MaxBytes
	deep      bool      // nesting deeper than Options.MaxDepth was skipped
	manyParts bool      // more parts than Options.MaxParts were skipped
}

// walker reads a message once, line by line, keeping a bounded amount.
type walker struct {
	o      *Options
	lr     *lineReader
	t      *tree
	kept   int64 // bytes kept over all parts
	nparts int
}

// boundaryHit is what ended a body: the index of the delimiter in the
// stack of enclosing multiparts (-1: end of input) and whether it was the
// closing one.
type boundaryHit struct {
	idx     int
	closing bool
}

func matchBoundary(line []byte, stack []string) boundaryHit {
	if len(line) < 3 || line[0] != '-' || line[1] != '-' {
		return boundaryHit{idx: -2}
	}
	rest := line[2:]
	for i := len(stack) - 1; i >= 0; i-- {
		b := stack[i]
		if !bytes.HasPrefix(rest, []byte(b)) {
			continue
		}
		tail := bytes.TrimRight(rest[len(b):], " \t")
		if len(tail) == 0 {
			return boundaryHit{idx: i}
		}
		if bytes.Equal(tail, []byte("--")) {
			return boundaryHit{idx: i, closing: true}
		}
	}
	return boundaryHit{idx: -2}
}

func (w *walker) readTree() {
	h := readHeader(w.lr)
	mt, params := mediaType(h.Get("Content-Type"), "text/plain")
	w.t.header, w.t.mediaType, w.t.params = h, mt, params
	w.entity(h, mt, params, 0, nil)
}

// entity reads the body of an entity whose header was just read, up to
// the next delimiter of an enclosing multipart, and returns that delimiter.
func (w *walker) entity(h header, mt string, params map[string]string, depth int, stack []string) boundaryHit {
	w.nparts++
	if strings.HasPrefix(mt, "multipart/") && params["boundary"] != "" && !hasBoundary(stack, params["boundary"]) {
		if depth >= w.o.MaxDepth || w.nparts > w.o.MaxParts {
			if depth >= w.o.MaxDepth {
				w.t.deep = true
			} else {
				w.t.manyParts = true
			}
			return w.skip(stack)
		}
		return w.multipart(params["boundary"], depth, stack)
	}
	if w.nparts > w.o.MaxParts {
		w.t.manyParts = true
		return w.skip(stack)
	}
	e := &entity{header: h, mediaType: mt, params: params, depth: depth}
	e.filename = partFilename(h, params)
	limit := w.keepLimit(e)
	if limit <= 0 {
		return w.skip(stack)
	}
	var buf bytes.Buffer
	hit := boundaryHit{idx: -1}
	for {
		line, ok := w.lr.next()
		if !ok {
			break
		}
		if hit2 := matchBoundary(line, stack); hit2.idx >= 0 {
			hit = hit2
			break
		}
		if int64(buf.Len()+len(line)+1) <= limit {
			buf.Write(line)
			buf.WriteByte('\n')
		} else {
			e.truncated = true
		}
	}
	w.kept += int64(buf.Len())
	e.body = decodeTransfer(buf.Bytes(), h.Get("Content-Transfer-Encoding"), mt)
	w.t.parts = append(w.t.parts, e)
	return hit
}

func hasBoundary(stack []string, b string) bool {
	for _, s := range stack {
		if s == b {
			return true
		}
	}
	return false
}

// skip consumes a body that is not kept.
func (w *walker) skip(stack []string) boundaryHit {
	for {
		line, ok := w.lr.next()
		if !ok {
			return boundaryHit{idx: -1}
		}
		if hit := matchBoundary(line, stack); hit.idx >= 0 {
			return hit
		}
	}
}

// multipart reads a multipart body: the preamble, each part, the epilogue.
func (w *walker) multipart(boundary string, depth int, stack []string) boundaryHit {
	inner := append(stack[:len(stack):len(stack)], boundary)
	me := len(inner) - 1
	// Preamble: up to the first delimiter. Some bounces put their text
	// here, so it is kept as a text part of its own.
	pre := &entity{mediaType: "text/plain", params: map[string]string{}, depth: depth + 1}
	var buf bytes.Buffer
	hit := boundaryHit{idx: -1}
	for {
		line, ok := w.lr.next()
		if !ok {
			break
		}
		if h := matchBoundary(line, inner); h.idx >= 0 {
			hit = h
			break
		}
		if int64(buf.Len()+len(line)+1) <= min(int64(w.o.MaxTextBytes), w.budget()) {
			buf.Write(line)
			buf.WriteByte('\n')
		}
	}
	if len(bytes.TrimSpace(buf.Bytes())) > 0 {
		pre.body = buf.Bytes()
		pre.header = header{{Name: "X-Inbound-Preamble", Value: "1"}}
		w.kept += int64(buf.Len())
		w.t.parts = append(w.t.parts, pre)
	}
	for hit.idx == me && !hit.closing {
		ph := readHeader(w.lr)
		mt, params := mediaType(ph.Get("Content-Type"), "text/plain")
		if strings.HasPrefix(lowerASCII(ph.Get("Content-Type")), "multipart/digest") {
			mt = "multipart/digest"
		}
		hit = w.entity(ph, mt, params, depth+1, inner)
	}
	if hit.idx >= 0 && hit.idx < me {
		return hit // an enclosing delimiter ended this multipart early
	}
	if hit.idx == -1 {
		return hit
	}
	// Epilogue after the closing delimiter, up to an enclosing one.
	return w.skip(stack)
}

// budget is how many more bytes the walk may keep.
func (w *walker) budget() int64 {
	return w.o.MaxKeptBytes - w.kept
}

// keepLimit says how many bytes of a leaf's (encoded) body to keep.
func (w *walker) keepLimit(e *entity) int64 {
	var lim int64
	switch {
	case isStatusType(e.mediaType) || e.mediaType == "message/feedback-report":
		lim = 256 << 10
	case isOriginalType(e.mediaType):
		lim = int64(max(w.o.MaxExcerptBytes, 64<<10))
	case reportCandidate(e):
		lim = w.o.MaxReportBytes
	case strings.HasPrefix(e.mediaType, "text/") || e.mediaType == "message/partial":
		lim = int64(w.o.MaxTextBytes)
	default:
		return 0
	}
	if b := w.budget(); b < lim {
		lim = b
	}
	return lim
}

func isStatusType(mt string) bool {
	return mt == "message/delivery-status" || mt == "message/global-delivery-status"
}

func isOriginalType(mt string) bool {
	switch mt {
	case "message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers",
		"message/global-headers", "text/rfc822", "message/partial":
		return true
	}
	return false
}

// partFilename returns the part's file name from Content-Disposition or
// Content-Type's name parameter, lowercased.
func partFilename(h header, params map[string]string) string {
	if cd := h.Get("Content-Disposition"); cd != "" {
		_, dp := mediaType("x/x; "+afterSemi(cd), "x/x")
		if n := dp["filename"]; n != "" {
			return lowerASCII(decodeWords(n))
		}
	}
	return lowerASCII(decodeWords(params["name"]))
}

func afterSemi(s string) string {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		return s[i+1:]
	}
	return ""
}

// decodeTransfer decodes a body from its Content-Transfer-Encoding,
// leniently: what decodes before an error is kept. message/rfc822 parts
// are decoded too when (against RFC 2046) they are base64 or QP.
func decodeTransfer(b []byte, cte, mt string) []byte {
	switch lowerASCII(strings.TrimSpace(cte)) {
	case "base64":
		return decodeBase64(b)
	case "quoted-printable":
		out, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
		return out
	}
	return b
}

// decodeBase64 decodes base64 text, skipping whitespace and junk and
// stopping at the first padding or undecodable run.
func decodeBase64(b []byte) []byte {
	clean := make([]byte, 0, len(b))
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		case c == '=':
			// Padding: stop at the end of this quantum.
			for len(clean)%4 != 0 {
				clean = append(clean, '=')
			}
			goto done
		}
	}
done:
	if r := len(clean) % 4; r == 1 {
		clean = clean[:len(clean)-1]
	} else if r > 1 {
		clean = append(clean, bytes.Repeat([]byte{'='}, 4-r)...)
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	// Decode writes what it could decode before a corrupt quantum.
	n, _ := base64.StdEncoding.Decode(out, clean)
	return out[:n]
}
