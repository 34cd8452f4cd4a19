package mime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"mime/quotedprintable"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/transform"
)

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func qpReader(b []byte) io.Reader { return quotedprintable.NewReader(bytes.NewReader(b)) }

// node is one entity of a message as go-message's textproto parser sees
// it: an independent parser for the fidelity property.
type node struct {
	path   string
	fields [][]byte // raw header fields (textproto ends each with CRLF)
	names  []string
	h      textproto.Header
	body   []byte // raw body of a leaf
	leaf   bool
}

// parseTree parses a whole message with go-message's textproto.
func parseTree(msg []byte) ([]node, error) {
	br := bufio.NewReader(bytes.NewReader(msg))
	if l, err := br.Peek(5); err == nil && string(l) == "From " {
		if _, err := br.ReadSlice('\n'); err != nil {
			return nil, err
		}
	}
	var nodes []node
	err := parseEntity(br, "", 0, &nodes)
	return nodes, err
}

func parseEntity(br *bufio.Reader, path string, depth int, nodes *[]node) error {
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return fmt.Errorf("%s: header: %w", path, err)
	}
	n := node{path: path, h: h}
	fs := h.Fields()
	for fs.Next() {
		raw, _ := fs.Raw()
		n.fields = append(n.fields, raw)
		n.names = append(n.names, strings.ToLower(fs.Key()))
	}
	mt, params, _ := stdmime.ParseMediaType(h.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") && params["boundary"] != "" && depth < 64 {
		*nodes = append(*nodes, n)
		mr := textproto.NewMultipartReader(br, params["boundary"])
		for i := 1; ; i++ {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			// Re-read the part's header and body as a whole entity.
			var raw bytes.Buffer
			if err := textproto.WriteHeader(&raw, p.Header); err != nil {
				return err
			}
			if _, err := io.Copy(&raw, p); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if err := parseEntity(bufio.NewReader(&raw), childPath(path, i), depth+1, nodes); err != nil {
				return err
			}
		}
	}
	n.leaf = true
	n.body, err = io.ReadAll(br)
	*nodes = append(*nodes, n)
	return err
}

// stripControls removes the x-smtpeter-* fields from the top header, the
// only change the walker may make to an untracked message.
func stripControls(msg []byte) []byte {
	var out []byte
	inHeader, dropping := true, false
	for len(msg) > 0 {
		i := bytes.IndexByte(msg, '\n')
		l := msg
		if i >= 0 {
			l = msg[:i+1]
		}
		msg = msg[len(l):]
		if inHeader {
			t := trimEOL(l)
			switch {
			case len(t) == 0:
				inHeader = false
			case t[0] == ' ' || t[0] == '\t':
				if dropping {
					continue
				}
			default:
				dropping = len(t) >= len(controlPrefix) && strings.EqualFold(string(t[:len(controlPrefix)]), controlPrefix)
				if dropping {
					continue
				}
			}
		}
		out = append(out, l...)
	}
	return out
}

// checkFidelity asserts the fidelity property for one walk. Byte level:
// putting each tracked leaf's input bytes back in place of its output
// bytes gives the input minus the control headers, byte for byte, so every
// other header, boundary, preamble, epilogue and untracked leaf is
// unchanged. Content level: each tracked leaf, decoded, is exactly what the
// Tracker wrote for the decoded input leaf, and undoing the Tracker's
// reported edits gives its input back. Structure: when go-message's own
// parser reads the input, it reads the output into the same tree with the
// same headers.
func checkFidelity(t testing.TB, in, out []byte, rep Report, calls []call, traces []leafTrace) {
	t.Helper()
	if len(traces) != rep.Tracked {
		t.Errorf("%d traces for %d tracked leaves", len(traces), rep.Tracked)
		return
	}
	var sub []byte
	pos := int64(0)
	for _, lt := range traces {
		sub = append(sub, out[pos:lt.outSpan[0]]...)
		sub = append(sub, in[lt.inSpan[0]:lt.inSpan[1]]...)
		pos = lt.outSpan[1]
	}
	sub = append(sub, out[pos:]...)
	want := stripControls(in)
	if strings.Contains(rep.Untouched, "covers a control header") {
		want = in
	} else {
		sub = stripControls(sub)
	}
	if !bytes.Equal(sub, want) {
		t.Errorf("outside tracked leaves, output differs from the input minus control headers (%d vs %d bytes, untouched %q)", len(sub), len(want), rep.Untouched)
		return
	}
	for _, lt := range traces {
		din, err := decodeBody(in[lt.inBody[0]:lt.inBody[1]], lt.inCTE, lt.charset)
		if err != nil {
			t.Errorf("%s: decode input: %v", lt.path, err)
			continue
		}
		dout, err := decodeBody(out[lt.outBody[0]:lt.outBody[1]], lt.outCTE, lt.charset)
		if err != nil {
			t.Errorf("%s: decode output: %v", lt.path, err)
			continue
		}
		found := false
		for len(calls) > 0 {
			c := calls[0]
			calls = calls[1:]
			if !bytes.Equal(c.in, din) {
				continue
			}
			found = true
			if !bytes.Equal(c.out, dout) {
				t.Errorf("%s: decoded output leaf is not what the Tracker wrote:\n%q\n%q", lt.path, dout, c.out)
			}
			back, err := undo(c.out, c.edits)
			if err != nil {
				t.Errorf("%s: %v", lt.path, err)
			} else if !bytes.Equal(back, c.in) {
				t.Errorf("%s: undoing the edits does not give the input back", lt.path)
			}
			break
		}
		if !found {
			t.Errorf("%s: no Tracker call had this leaf's decoded body as input", lt.path)
		}
	}
	if rep.Tracked > 0 {
		checkTrees(t, in, out, rep)
		// Walking the output finds the same tracked leaves: no re-encoded
		// body made a line that passes for a delimiter.
		var again bytes.Buffer
		rep2, err := Rewrite(&again, bytes.NewReader(out), Options{TrackText: true, TrackSigned: true, MaxDepth: 256}, func(Controls) (Tracker, error) { return copyTracker{}, nil })
		if err != nil {
			t.Errorf("walking the output: %v", err)
		} else if !isSubset(rep.Parts, rep2.Parts) {
			t.Errorf("the output's leaves %q do not include the tracked %q", rep2.Parts, rep.Parts)
		}
	}
}

// copyTracker copies bodies unchanged.
type copyTracker struct{}

func (copyTracker) HTML(dst io.Writer, src io.Reader) error { _, err := io.Copy(dst, src); return err }
func (copyTracker) Text(dst io.Writer, src io.Reader) error { _, err := io.Copy(dst, src); return err }

func isSubset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// checkTrees compares go-message's parse of input and output, when it can
// parse the input at all (it cannot read mixed line endings, for one).
func checkTrees(t testing.TB, in, out []byte, rep Report) {
	t.Helper()
	ti, err := parseTree(in)
	if err != nil {
		return
	}
	to, err := parseTree(out)
	if err != nil {
		t.Errorf("go-message parses the input but not the output: %v", err)
		return
	}
	if len(ti) != len(to) {
		t.Errorf("tree has %d entities, output %d", len(ti), len(to))
		return
	}
	for i := range ti {
		a, b := ti[i], to[i]
		if a.path != b.path || a.leaf != b.leaf {
			t.Errorf("entity %d: %q/%v became %q/%v", i, a.path, a.leaf, b.path, b.leaf)
			return
		}
		fa, fb := a.fields, b.fields
		if a.path == "" {
			fa = filterFields(a, func(n string) bool { return !isControl(n) })
		}
		if slices.Contains(rep.Requoted, a.path) {
			notCTE := func(n string) bool { return n != "content-transfer-encoding" }
			fa = filterFields(node{fields: fa, names: filterNames(a.names, a.path == "")}, notCTE)
			fb = filterFields(b, notCTE)
			if got := strings.ToLower(b.h.Get("Content-Transfer-Encoding")); got != "quoted-printable" {
				t.Errorf("%s: requoted leaf says Content-Transfer-Encoding %q", a.path, got)
			}
		}
		if !slices.EqualFunc(fa, fb, bytes.Equal) {
			t.Errorf("%s: header changed:\n%q\n%q", a.path, fa, fb)
		}
		if a.leaf && !slices.Contains(rep.Parts, a.path) && !bytes.Equal(a.body, b.body) {
			t.Errorf("%s: untracked leaf changed", a.path)
		}
	}
}

func filterNames(names []string, top bool) []string {
	if !top {
		return names
	}
	var out []string
	for _, n := range names {
		if !isControl(n) {
			out = append(out, n)
		}
	}
	return out
}

func filterFields(n node, keep func(string) bool) [][]byte {
	var out [][]byte
	for i, f := range n.fields {
		if keep(n.names[i]) {
			out = append(out, f)
		}
	}
	return out
}

// decodeBody undoes a body's transfer encoding, and converts its charset
// to UTF-8 when the walker converts it: what the Tracker sees.
func decodeBody(body []byte, cte, charset string) ([]byte, error) {
	var r io.Reader = bytes.NewReader(body)
	switch cte {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	if mode, enc := lookupCharset(charset); mode == csConvert {
		r = transform.NewReader(r, enc.NewDecoder())
	}
	return io.ReadAll(r)
}
