package dkim

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// SignedHeaders are the header fields a signature covers, each as many
// times as the copy has it; fields the copy lacks are not listed, except
// From, which is listed once more than it occurs (oversigned) so that no
// From can be added without breaking the signature (RFC 6376 §5.4.2,
// §8.15). The set is RFC 6376 §5.4.1's recommendation with the fields
// that say what the message is (Message-ID, the MIME fields, RFC 8058's
// one-click unsubscribe, the feedback loop's Feedback-ID). Trace fields
// (Received, Return-Path) and fields that relays add or change are left
// out.
var SignedHeaders = []string{
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Content-ID", "Content-Description",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"Feedback-ID",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
}

// signedIndex maps a lower-case field name to its place in SignedHeaders.
var signedIndex = func() map[string]int {
	m := make(map[string]int, len(SignedHeaders))
	for i, h := range SignedHeaders {
		m[strings.ToLower(h)] = i
	}
	return m
}()

// ErrUnsignable says a copy cannot carry a DKIM signature: its header is
// not an RFC 5322 header with a From field. Sign returns it (wrapped, with
// the reason) before writing anything to dst, so the caller can send the
// copy unsigned.
var ErrUnsignable = errors.New("dkim: copy cannot be signed")

// MaxHeaderBytes bounds the top-level header block of a copy, as the MIME
// walker bounds it: a longer one is refused with ErrUnsignable.
const MaxHeaderBytes = 1 << 20

// hfield is one header field in a header block: its raw bytes with
// continuation lines and line endings, and its lower-case name.
type hfield struct {
	raw  []byte
	name string
}

// splitHeader splits a header block (without the empty line that ends
// it) into its fields. Each line must be a field line (name, then ':'
// with no space before it, as RFC 5322 §3.6.8 and the MIME walker want)
// or a continuation line (starting with a space or tab), with no CR but
// in its line ending. Lines end in LF or CRLF; the last may lack its
// ending.
func splitHeader(h []byte) ([]hfield, error) {
	var fields []hfield
	for len(h) > 0 {
		n := bytes.IndexByte(h, '\n') + 1
		if n == 0 {
			n = len(h)
		}
		line := h[:n]
		h = h[n:]
		text := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if bytes.IndexByte(text, '\r') >= 0 {
			// Verifiers disagree on it: go-msgauth's relaxed header
			// canonicalization takes it for a space, dkimpy keeps it.
			return nil, errors.New("header has a CR without LF (RFC 5322 §2.2)")
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(fields) == 0 {
				return nil, errors.New("header starts with a continuation line")
			}
			f := &fields[len(fields)-1]
			f.raw = f.raw[:len(f.raw)+len(line)] // contiguous: extend in place
			continue
		}
		if bytes.HasPrefix(line, []byte("From ")) && !bytes.HasPrefix(bytes.TrimLeft(line[4:], " \t"), []byte(":")) {
			return nil, errors.New(`header has an mbox "From " line, which is not a field`)
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return nil, fmt.Errorf("header line %q is not a field", clip(string(bytes.TrimRight(line, "\r\n"))))
		}
		for _, c := range line[:i] {
			if c < 33 || c > 126 {
				return nil, fmt.Errorf("header field name %q has a character that is not allowed", clip(string(line[:i])))
			}
		}
		fields = append(fields, hfield{raw: line, name: strings.ToLower(string(line[:i]))})
	}
	return fields, nil
}

// headerKeys returns the h= list for fields: each field of SignedHeaders
// as often as it occurs, From once more.
func headerKeys(fields []hfield) ([]string, error) {
	counts := make([]int, len(SignedHeaders))
	for _, f := range fields {
		if i, ok := signedIndex[f.name]; ok {
			counts[i]++
		}
	}
	if counts[0] == 0 {
		return nil, fmt.Errorf("%w: no From field", ErrUnsignable)
	}
	counts[0]++
	var keys []string
	for i, n := range counts {
		for range n {
			keys = append(keys, SignedHeaders[i])
		}
	}
	return keys, nil
}

// fieldValue returns what follows a field's colon, its continuation lines
// joined (RFC 5322 §2.2.3 unfolding), trimmed.
func fieldValue(raw []byte) string {
	_, v, _ := bytes.Cut(raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}
