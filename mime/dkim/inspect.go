package dkim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
)

// Signature is what one DKIM-Signature field says about itself (RFC 6376
// §3.5). It is read, not verified.
type Signature struct {
	Domain    string   // d=, lower case
	Selector  string   // s=
	Algorithm string   // a=, such as rsa-sha256
	Headers   []string // h=, as listed
	// Err is non-nil when the field is not a well-formed signature (its
	// tag list does not parse, or d=, s=, a=, h=, bh= or b= is missing).
	Err error
}

// Info is what the top-level header of a message says about who signed
// it and whose it is.
type Info struct {
	// FromDomains are the domains of the From field's addresses, lower
	// case, in A-labels; empty with FromErr set when From is missing or
	// does not parse.
	FromDomains []string
	FromErr     error
	// Signatures are the DKIM-Signature fields, top first.
	Signatures []Signature
}

// Signed reports whether the message carries a DKIM-Signature field.
func (in Info) Signed() bool { return len(in.Signatures) > 0 }

// SignedBy reports whether a well-formed signature names domain as d=.
func (in Info) SignedBy(domain string) bool {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return false
	}
	for _, s := range in.Signatures {
		if s.Err == nil && s.Domain == d {
			return true
		}
	}
	return false
}

// Inspect reads the top-level header of the message in r (at most
// MaxHeaderBytes; r is read through a buffer, so somewhat past the
// header: seek back or reopen before reading the message again) and says
// who signed it and for which From domains. It fails for a header
// that is not an RFC 5322 header (ErrUnsignable, wrapped) and for I/O
// errors.
func Inspect(r io.Reader) (Info, error) {
	var in Info
	br := bufio.NewReaderSize(r, 4096)
	var h []byte
	partial := false // the last read ended inside a long line
	for {
		line, err := br.ReadSlice('\n')
		if len(h)+len(line) > MaxHeaderBytes {
			return in, fmt.Errorf("%w: header longer than %d bytes", ErrUnsignable, MaxHeaderBytes)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			h = append(h, line...)
			partial = true
			continue
		}
		if !partial && (string(line) == "\n" || string(line) == "\r\n") {
			break
		}
		partial = false
		h = append(h, line...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return in, fmt.Errorf("dkim: read header: %w", err)
		}
	}
	fields, err := splitHeader(h)
	if err != nil {
		return in, fmt.Errorf("%w: %v", ErrUnsignable, err)
	}
	froms := 0
	for _, f := range fields {
		switch f.name {
		case "from":
			froms++
			if froms == 1 {
				in.FromDomains, in.FromErr = fromDomains(fieldValue(f.raw))
			} else {
				in.FromDomains, in.FromErr = nil, errors.New("dkim: more than one From field")
			}
		case "dkim-signature":
			in.Signatures = append(in.Signatures, ParseSignature(fieldValue(f.raw)))
		}
	}
	if froms == 0 {
		in.FromErr = errNoFrom
	}
	return in, nil
}

var errNoFrom = errors.New("dkim: no From field")

// fromDomains returns the domains of the addresses in a From value.
func fromDomains(v string) ([]string, error) {
	list, err := mail.ParseAddressList(v)
	if err != nil {
		return nil, fmt.Errorf("dkim: From: %w", err)
	}
	var out []string
	for _, a := range list {
		at := strings.LastIndexByte(a.Address, '@')
		d, err := NormalizeDomain(a.Address[at+1:])
		if at < 0 || err != nil {
			return nil, fmt.Errorf("dkim: From address %q has no usable domain", a.Address)
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseSignature reads the value of a DKIM-Signature field (after the
// colon, unfolded or not). A malformed one comes back with Err set and
// whatever could be read.
func ParseSignature(v string) Signature {
	var s Signature
	tags, err := parseTags(v)
	if err != nil {
		s.Err = fmt.Errorf("dkim: DKIM-Signature: %w", err)
		return s
	}
	d, _ := lookup(tags, "d")
	s.Domain = strings.ToLower(stripFWS(d))
	s.Selector, _ = lookup(tags, "s")
	s.Selector = stripFWS(s.Selector)
	s.Algorithm, _ = lookup(tags, "a")
	s.Algorithm = strings.ToLower(stripFWS(s.Algorithm))
	if hv, ok := lookup(tags, "h"); ok {
		s.Headers = splitList(hv)
	}
	for _, name := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if v, ok := lookup(tags, name); !ok || v == "" {
			s.Err = fmt.Errorf("dkim: DKIM-Signature: no %s= tag", name)
			return s
		}
	}
	return s
}
