package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// Tracker rewrites the decoded body of one leaf. The rewrite package's
// *Tracker satisfies it. Both methods copy src to dst, changing only URLs.
type Tracker interface {
	HTML(dst io.Writer, src io.Reader) error
	Text(dst io.Writer, src io.Reader) error
}

// Controls are the x-smtpeter-* control headers of a message. A nil switch
// means the header was absent (the caller's default applies).
type Controls struct {
	TrackClicks *bool    // x-smtpeter-trackclicks
	TrackOpens  *bool    // x-smtpeter-trackopens
	PreventScam *bool    // x-smtpeter-preventscam
	Tags        []string // x-smtpeter-tags, trimmed, empty ones dropped
}

// Options tune the walk. The zero value is the safe default.
type Options struct {
	TrackText   bool // also track text/plain leaves
	TrackSigned bool // track DKIM-signed messages anyway (breaks the signature)
	MaxDepth    int  // multipart nesting limit; 0 means DefaultMaxDepth; at most 256
	// TempDir holds the temporary file of a tracked body larger than
	// 1 MiB; "" means os.TempDir().
	TempDir string

	trace func(leafTrace) // tests: told where each tracked leaf is
}

// leafTrace locates one tracked leaf in the input and the output, for the
// fidelity test: body spans, and the spans that differ (the body, or the
// header and body when the Content-Transfer-Encoding was replaced).
type leafTrace struct {
	path            string
	inBody, outBody [2]int64
	inSpan, outSpan [2]int64
	inCTE, outCTE   string
	charset         string
}

// DefaultMaxDepth is the multipart nesting limit when Options.MaxDepth is 0.
const DefaultMaxDepth = 32

// maxMaxDepth caps Options.MaxDepth.
const maxMaxDepth = 256

// Report says what the walk did, for the caller to log.
type Report struct {
	Controls  Controls
	Tracked   int    // leaves rewritten
	Untouched string // non-empty: why the whole message passed through untracked
	Skipped   []Skip // leaves passed through, and why
	// Parts lists the paths of the leaves rewritten, in order.
	Parts []string
	// Requoted lists the paths of 7bit/8bit leaves re-encoded as
	// quoted-printable because a rewritten line exceeded 998 octets.
	Requoted []string
	// ControlErr is the first control header with a bad value (a
	// *ControlError). That header counts as absent in Controls; it is
	// removed like the others. The relay refuses such messages at DATA
	// time with ParseControls; a caller without that check (the rewrite
	// command) can refuse them here.
	ControlErr error
}

// Skip records a leaf passed through unchanged.
type Skip struct {
	Part   string // part path, such as "1.2"; "" is the message body itself
	Reason string
}

// maxLine is the RFC 5322 §2.1.1 line limit, line ending excluded.
const maxLine = 998

// Rewrite copies the message from src to dst. Once the top-level header is
// read, decide is called with its control headers; it returns the Tracker
// for the body, or nil to only strip the control headers (as does a nil
// decide). decide is called exactly once, also when the body will pass through untouched. An error
// from decide stops the walk before anything is written. Otherwise Rewrite
// returns an error only for I/O failures: malformed MIME is passed through
// unchanged and reported, and a control header with a bad value counts as
// absent (Report.ControlErr), so a message the relay accepted is never
// failed at delivery.
//
// Decision order: control headers are parsed and always removed (SPEC §4);
// then a signed or encrypted message (multipart/signed, multipart/encrypted,
// application/pkcs7-mime) and, unless opt.TrackSigned, a DKIM-signed one
// pass through with their bodies untouched (Report.Untouched). Removing
// control headers cannot break those signatures: the body signatures do not
// cover the top-level header, and senders do not list x-smtpeter-* headers
// in a DKIM-Signature's h= tag. If one does, removing the header would
// break that signature, so the whole header block is then left alone too
// and the report says so.
func Rewrite(dst io.Writer, src io.Reader, opt Options, decide func(Controls) (Tracker, error)) (Report, error) {
	var rep Report
	bufs := bufPool.Get().(*walkBufs)
	defer bufs.put()
	bufs.br.Reset(src)
	lr := &lineReader{br: bufs.br, nextStart: true, top: true, copyBuf: bufs.copyBuf}
	rh, status, reason, err := readHeader(lr, nil)
	if err != nil {
		return rep, err
	}
	ctl := rh.h
	if status == hdrMalformed {
		// Values of the fields before the bad line are still known.
		ctl = controlOnly(rh)
	}
	controls, cerr := parseControls(&ctl, false)
	if cerr != nil {
		rep.ControlErr = cerr
	}
	rep.Controls = controls
	for i := range rh.fields {
		rh.fields[i].drop = isControl(rh.fields[i].name)
	}

	switch {
	case status == hdrMalformed:
		rep.Untouched = "malformed header: " + reason
	default:
		mt, _, _ := stdmime.ParseMediaType(rh.h.Get("Content-Type"))
		switch mt {
		case "multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime":
			rep.Untouched = "signed or encrypted (" + mt + ")"
		}
		if rep.Untouched == "" && rh.h.Has("Dkim-Signature") && !opt.TrackSigned {
			rep.Untouched = "DKIM-signed"
		}
	}
	if rh.h.Has("Dkim-Signature") && !opt.TrackSigned && dkimCoversControl(&rh.h) {
		for i := range rh.fields {
			rh.fields[i].drop = false
		}
		if rep.Untouched == "" {
			rep.Untouched = "DKIM-signed"
		}
		rep.Untouched += "; DKIM-Signature covers a control header, header left as is"
	}

	var tr Tracker
	if decide != nil {
		if tr, err = decide(controls); err != nil {
			return rep, err
		}
	}
	if tr == nil && rep.Untouched == "" {
		rep.Untouched = "tracking off"
	}

	bw := bufs.bw
	bw.Reset(errWriter{dst})
	cw := &countWriter{w: bw}
	bufs.in.dir, bufs.out.dir = opt.TempDir, opt.TempDir
	wk := &walker{
		lr:  lr,
		w:   cw,
		opt: opt,
		tr:  tr,
		rep: &rep,
		in:  &bufs.in,
		out: &bufs.out,
		qpr: bufs.qpr,
		qpw: bufs.qpw,
	}
	defer wk.in.close()
	defer wk.out.close()
	if wk.opt.MaxDepth <= 0 {
		wk.opt.MaxDepth = DefaultMaxDepth
	}
	// Every line starting with "--" is checked against each enclosing
	// boundary, so nesting must stay small whatever the caller asks.
	wk.opt.MaxDepth = min(wk.opt.MaxDepth, maxMaxDepth)
	if rep.Untouched != "" || status != hdrOK {
		err = rh.write(bw, false)
		if err == nil {
			err = lr.copyRest(bw)
		}
	} else {
		err = wk.entity(rh, "", 0, nil, "")
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		if err = wk.in.close(); err == nil {
			err = wk.out.close()
		}
	}
	return rep, err
}

// walkBufs are the buffers of one walk, reused across messages: a relay
// rewrites every copy of every message.
type walkBufs struct {
	br      *bufio.Reader
	bw      *bufio.Writer
	in, out spool
	qpr     *bufio.Reader // under the quoted-printable decoder of a leaf
	qpw     []byte        // the quoted-printable encoder's buffer
	copyBuf []byte        // for copying the rest of the input
}

var bufPool = sync.Pool{New: func() any {
	return &walkBufs{
		br:      bufio.NewReaderSize(nil, lineBufSize),
		bw:      bufio.NewWriterSize(nil, 32<<10),
		qpr:     bufio.NewReaderSize(nil, 4096),
		qpw:     make([]byte, 0, 4096),
		copyBuf: make([]byte, 32<<10),
	}
}}

// put returns the buffers to the pool, dropping references to the
// caller's reader and writer and any spool memory grown unusually large.
func (b *walkBufs) put() {
	b.br.Reset(nil)
	b.bw.Reset(nil)
	b.qpr.Reset(nil)
	for _, sp := range []*spool{&b.in, &b.out} {
		sp.close()
		if sp.mem.Cap() > 2*spoolMem {
			sp.mem = bytes.Buffer{}
		}
		sp.reset()
	}
	bufPool.Put(b)
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// walker holds the state of one Rewrite.
type walker struct {
	lr      *lineReader
	w       *countWriter
	opt     Options
	tr      Tracker
	rep     *Report
	in, out *spool
	qpr     *bufio.Reader // reused by every leaf's decoder
	qpw     []byte        // reused by every leaf's encoder
	// delimEOL is the line ending of the first delimiter line of the
	// innermost multipart being walked: the one its delimiters must keep.
	delimEOL string
}

func (wk *walker) skip(path, reason string) {
	wk.rep.Skipped = append(wk.rep.Skipped, Skip{Part: path, Reason: reason})
}

func childPath(parent string, i int) string {
	if parent == "" {
		return strconv.Itoa(i)
	}
	return parent + "." + strconv.Itoa(i)
}

// entity writes one entity whose header rh has been read (up to its empty
// line) and its body, up to a delimiter line of stack or the end of the
// input. parentType is the enclosing multipart's media type.
func (wk *walker) entity(rh *rawHeader, path string, depth int, stack [][]byte, parentType string) error {
	ctv := rh.h.Get("Content-Type")
	mt, params, perr := stdmime.ParseMediaType(ctv)
	if ctv == "" {
		mt, perr = "text/plain", nil
		if parentType == "multipart/digest" {
			mt = "message/rfc822"
		}
	}
	copyThrough := func(reason string) error {
		if reason != "" {
			wk.skip(path, reason)
		}
		if err := rh.write(wk.w, false); err != nil {
			return err
		}
		_, err := wk.lr.copyUntil(wk.w, stack)
		return err
	}
	if mt == "" {
		return copyThrough("malformed Content-Type")
	}
	if strings.HasPrefix(mt, "multipart/") {
		switch {
		case mt == "multipart/signed" || mt == "multipart/encrypted":
			return copyThrough("signed or encrypted (" + mt + ")")
		case depth >= wk.opt.MaxDepth:
			return copyThrough("multipart nested deeper than " + strconv.Itoa(wk.opt.MaxDepth))
		case perr != nil:
			return copyThrough("malformed Content-Type")
		case params["boundary"] == "":
			return copyThrough("multipart without boundary")
		case slices.ContainsFunc(stack, func(b []byte) bool { return string(b[2:]) == params["boundary"] }):
			// Python's email package lets the enclosing multipart claim
			// the delimiter lines; this one then has no parts.
			return copyThrough("boundary reused from an enclosing multipart")
		case strings.TrimRight(params["boundary"], " \t") != params["boundary"]:
			// RFC 2046 §5.1.1 forbids a trailing space; parsers disagree on
			// whether it counts (Python strips it, go-message keeps it).
			return copyThrough("boundary ends with a space")
		case !identityCTE(rh.h.Get("Content-Transfer-Encoding")):
			return copyThrough("multipart with a Content-Transfer-Encoding")
		}
		if err := rh.write(wk.w, false); err != nil {
			return err
		}
		return wk.multipart(mt, params["boundary"], path, depth, stack)
	}
	isHTML := mt == "text/html"
	if !(isHTML || mt == "text/plain" && wk.opt.TrackText) {
		return copyThrough("")
	}
	// A file the sender attached (disposition attachment, or a file name
	// even inline) is the sender's document, not the message: untouched.
	if disp, dp, _ := stdmime.ParseMediaType(rh.h.Get("Content-Disposition")); disp == "attachment" || dp["filename"] != "" || dp["filename*"] != "" || params["name"] != "" {
		return copyThrough("")
	}
	if perr != nil {
		return copyThrough("malformed Content-Type")
	}
	return wk.leaf(rh, path, stack, isHTML, params["charset"])
}

func identityCTE(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "7bit", "8bit", "binary":
		return true
	}
	return false
}

// multipart walks a multipart body (RFC 2046 §5.1): preamble, parts and
// epilogue, each boundary line written as it came.
func (wk *walker) multipart(mt, boundary, path string, depth int, stack [][]byte) error {
	st := append(stack[:len(stack):len(stack)], []byte("--"+boundary))
	me := len(st) - 1
	lr := wk.lr
	firstEOL := "" // line ending of the first delimiter line
	defer func(saved string) { wk.delimEOL = saved }(wk.delimEOL)
	// Preamble: up to the first delimiter line.
	if _, err := lr.copyUntilOrder(wk.w, st, true); err != nil {
		return err
	}
	for n := 1; ; n++ {
		l, err := lr.peek()
		if errors.Is(err, io.EOF) {
			wk.skip(path, "unterminated multipart")
			return nil
		}
		if err != nil {
			return err
		}
		d, closing := lr.delimOrder(st, n == 1)
		if d != me {
			wk.skip(path, "unterminated multipart")
			return nil
		}
		if n == 1 {
			firstEOL = eolOf(l)
			wk.delimEOL = firstEOL
		} else if e := eolOf(l); e != "" && e != firstEOL || lr.prevEOL != firstEOL {
			// Parsers part ways here: Go's and go-message's multipart
			// readers take the line ending of the first delimiter line and
			// miss a later delimiter if it, or the line break before it
			// (which RFC 2046 makes part of the delimiter), ends otherwise;
			// Python's reader (and ours) see it. Leave what follows as it
			// came in, so that no reading of the message sees a changed
			// untracked part.
			wk.skip(path, "boundary lines mix CRLF and LF line endings: the rest of the multipart passes through")
			_, err := lr.copyUntil(wk.w, stack)
			return err
		}
		if _, err := wk.w.Write(l); err != nil {
			return err
		}
		lr.consume()
		if closing {
			// Epilogue: up to an enclosing delimiter or the end.
			_, err := lr.copyUntil(wk.w, stack)
			return err
		}
		cp := childPath(path, n)
		rh, status, reason, err := readHeader(lr, st)
		if err != nil {
			return err
		}
		switch status {
		case hdrOK:
			err = wk.entity(rh, cp, depth+1, st, mt)
		case hdrMalformed:
			wk.skip(cp, "malformed part header: "+reason)
			if err = rh.write(wk.w, false); err == nil {
				_, err = lr.copyUntil(wk.w, st)
			}
		default: // a header with no body
			err = rh.write(wk.w, false)
			if len(rh.fields) == 0 {
				// Two delimiter lines in a row: like Python's email package,
				// no part between them, so part numbers stay the same.
				n--
			}
		}
		if err != nil {
			return err
		}
	}
}

// leaf tracks one text leaf. Its raw body is spooled first, so that if it
// turns out not to decode (bad base64, a charset that does not round-trip)
// it can still be passed through unchanged; the rewritten body is spooled
// too, because a 7bit/8bit body whose rewritten lines exceed 998 octets
// needs a new Content-Transfer-Encoding header before the body. Both
// spools keep at most 1 MiB in memory each and use a temporary file
// beyond, so memory stays bounded for any body size.
func (wk *walker) leaf(rh *rawHeader, path string, stack [][]byte, isHTML bool, charset string) error {
	in, out := wk.in, wk.out
	if err := in.reset(); err != nil {
		return err
	}
	lt := leafTrace{path: path, charset: charset}
	lt.inBody[0] = wk.lr.off
	held, atDelim, info, err := wk.lr.spoolBody(in, stack)
	if err != nil {
		return err
	}
	lt.inBody[1] = wk.lr.off - int64(len(held))
	pass := func(reason string) error {
		wk.skip(path, reason)
		if err := rh.write(wk.w, false); err != nil {
			return err
		}
		if _, err := io.Copy(wk.w, in.reader()); err != nil {
			return err
		}
		_, err := wk.w.Write(held)
		return err
	}
	if !atDelim && len(stack) > 0 {
		return pass("unterminated multipart")
	}
	eol := info.eol
	if eol == "" {
		eol = eolOr(rh.eol)
	}
	cte := strings.ToLower(strings.TrimSpace(rh.h.Get("Content-Transfer-Encoding")))
	switch cte {
	case "", "7bit", "8bit", "binary", "quoted-printable", "base64":
	default:
		return pass("unknown Content-Transfer-Encoding")
	}
	mode, enc := lookupCharset(charset)
	if mode == csUnknown {
		return pass("unknown charset")
	}
	// NUL is not text in an ASCII-compatible charset (RFC 2045 §2.7-2.8);
	// in UTF-16 it is half of most characters.
	if identityCTE(cte) && info.nul && cte != "binary" && mode == csBytes {
		return pass("NUL byte in a " + cteName(cte) + " body")
	}
	t := &transcoder{cte: cte, eol: eol, final: info.n > 0 && info.last == '\n', enc: enc, qpr: wk.qpr, qpw: wk.qpw}
	if mode == csConvert {
		t.fixBOM(in)
		ok, err := t.lossless(in)
		if err != nil {
			return err
		}
		if !ok {
			return pass("charset " + quote(charset) + " does not round-trip")
		}
	}
	if err := out.reset(); err != nil {
		return err
	}
	out.lines = identityCTE(cte) && cte != "binary" // for requote below
	if err := t.rewrite(out, in, wk.tr, isHTML); err != nil {
		var ie *ioError
		if errors.As(err, &ie) {
			return err
		}
		return pass("cannot re-encode body: " + err.Error())
	}
	requote := identityCTE(cte) && cte != "binary" && out.maxLine > maxLine
	lt.inCTE, lt.outCTE = cte, cte
	lt.inSpan, lt.outSpan[0] = lt.inBody, wk.w.n
	if requote {
		lt.inSpan[0], lt.outCTE = rh.off, "quoted-printable"
	}
	if err := rh.write(wk.w, requote); err != nil {
		return err
	}
	lt.outBody[0] = wk.w.n
	if !requote {
		lt.outSpan[0] = wk.w.n
	}
	last := out.last
	if requote {
		q := newQPWriter(wk.w, eol, wk.qpw)
		if _, err := io.Copy(q, out.reader()); err != nil {
			return err
		}
		if err := q.Close(); err != nil {
			return err
		}
		wk.rep.Requoted = append(wk.rep.Requoted, path)
	} else if _, err := io.Copy(wk.w, out.reader()); err != nil {
		return err
	}
	lt.outBody[1] = wk.w.n
	if atDelim && len(held) == 0 && out.n > 0 && last != '\n' {
		// The body was empty, so the empty line that ended the header was
		// also the line ending before the delimiter; the boundary must
		// still start on a line of its own, after the line ending its
		// multipart's delimiters use (readers that follow the first
		// delimiter's ending, like Go's, look for exactly that).
		e := wk.delimEOL
		if e == "" {
			e = eolOr(string(rh.term))
		}
		if _, err := io.WriteString(wk.w, e); err != nil {
			return err
		}
	}
	lt.outSpan[1] = wk.w.n
	if wk.opt.trace != nil {
		wk.opt.trace(lt)
	}
	if _, err := wk.w.Write(held); err != nil {
		return err
	}
	wk.rep.Tracked++
	wk.rep.Parts = append(wk.rep.Parts, path)
	return nil
}

func cteName(cte string) string {
	if cte == "" {
		return "7bit"
	}
	return cte
}

// ControlError reports a control header with a value that is not a
// boolean. The SMTP side turns it into a 5.6.x reply naming the header.
type ControlError struct {
	Header string // canonical lower-case name, such as "x-smtpeter-trackclicks"
	Value  string
	// Reason says what is wrong when it is not a bad switch value (the
	// tag limits); empty for a switch.
	Reason string
}

func (e *ControlError) Error() string {
	if e.Reason != "" {
		return "mime: header " + e.Header + ": " + e.Reason
	}
	return "mime: header " + e.Header + ": value " + quote(e.Value) + " is not true/false, yes/no, on/off or 1/0"
}

// Tag limits. Tags are stored with the message and every one of its
// events, and indexed, so they are bounded like any external input (the
// REST API takes the same).
const (
	MaxTags   = 20  // distinct tags per message
	MaxTagLen = 100 // bytes per tag
)

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}

const controlPrefix = "x-smtpeter-"

func isControl(name string) bool {
	return len(name) >= len(controlPrefix) && strings.EqualFold(name[:len(controlPrefix)], controlPrefix)
}

// ParseControls reads the x-smtpeter-* headers of a top-level header. A
// switch with any value other than true/false, yes/no, on/off or 1/0 (case
// and surrounding space ignored) is a *ControlError. When a switch appears
// more than once, every value must be valid and the first one counts. Tags
// from every x-smtpeter-tags header are collected in order. Other
// x-smtpeter-* headers are ignored here (Rewrite removes them all).
func ParseControls(h *textproto.Header) (Controls, error) {
	return parseControls(h, true)
}

// parseControls is ParseControls; unless strict, a bad value is skipped
// (its header counts as absent) and the first such error is returned with
// the controls that are valid.
func parseControls(h *textproto.Header, strict bool) (Controls, error) {
	var c Controls
	var first error
	fields := h.Fields()
	for fields.Next() {
		name := strings.ToLower(fields.Key())
		if !isControl(name) {
			continue
		}
		var dst **bool
		switch name {
		case "x-smtpeter-trackclicks":
			dst = &c.TrackClicks
		case "x-smtpeter-trackopens":
			dst = &c.TrackOpens
		case "x-smtpeter-preventscam":
			dst = &c.PreventScam
		case "x-smtpeter-tags":
			for t := range strings.SplitSeq(fields.Value(), ",") {
				t = strings.TrimSpace(t)
				if t == "" || slices.Contains(c.Tags, t) {
					continue
				}
				var reason string
				switch {
				case len(t) > MaxTagLen:
					reason = fmt.Sprintf("a tag is longer than %d bytes", MaxTagLen)
				case len(c.Tags) >= MaxTags:
					reason = fmt.Sprintf("more than %d tags", MaxTags)
				default:
					c.Tags = append(c.Tags, t)
					continue
				}
				err := &ControlError{Header: name, Value: t, Reason: reason}
				if strict {
					return Controls{}, err
				}
				if first == nil {
					first = err
				}
			}
			continue
		default:
			continue
		}
		v, ok := parseBool(fields.Value())
		if !ok {
			err := &ControlError{Header: name, Value: fields.Value()}
			if strict {
				return Controls{}, err
			}
			if first == nil {
				first = err
			}
			continue
		}
		if *dst == nil {
			*dst = &v
		}
	}
	return c, first
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, true
	case "false", "no", "off", "0":
		return false, true
	}
	return false, false
}

// controlOnly returns a header holding only the control fields of rh.
func controlOnly(rh *rawHeader) textproto.Header {
	var c rawHeader
	for _, f := range rh.fields {
		if isControl(f.name) {
			c.fields = append(c.fields, f)
		}
	}
	c.parse()
	return c.h
}

// dkimCoversControl reports whether a DKIM-Signature's h= tag (RFC 6376
// §3.5) names an x-smtpeter-* header.
func dkimCoversControl(h *textproto.Header) bool {
	for _, sig := range h.Values("Dkim-Signature") {
		for _, tag := range strings.Split(sig, ";") {
			k, v, ok := strings.Cut(tag, "=")
			if !ok || strings.TrimSpace(k) != "h" {
				continue
			}
			for _, name := range strings.Split(v, ":") {
				if isControl(strings.Join(strings.Fields(name), "")) {
					return true
				}
			}
		}
	}
	return false
}
