package dkim

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sync"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// Key is one signing key of a domain.
type Key struct {
	Domain   string        // the signing domain, the d= tag (RFC 6376 §3.5)
	Selector string        // the s= tag; the record is at SELECTOR._domainkey.DOMAIN
	Signer   crypto.Signer // *rsa.PrivateKey (at least 1024 bits) or ed25519.PrivateKey
}

// Options tune Sign. The zero value is the recommended setting.
type Options struct {
	// KeepExisting keeps the DKIM-Signature fields the copy already has
	// (the sender's, which the rewrite has broken). By default they are
	// dropped; the package documentation says why.
	KeepExisting bool
	// BufferBytes is the largest copy held in memory so that it is
	// rendered once; a larger one is rendered a second time. 0 means
	// DefaultBufferBytes; a negative value renders every copy twice.
	BufferBytes int
}

// DefaultBufferBytes is Options.BufferBytes when it is 0: most HTML mail
// fits, a message with attachments does not.
const DefaultBufferBytes = 256 << 10

// ErrNotDeterministic says the render function gave different bytes on
// its second call, so the signature Sign wrote does not match the copy.
// dst then holds a damaged copy: the caller must abort it, not commit it.
var ErrNotDeterministic = errors.New("dkim: render gave different bytes the second time: copy not sent")

// Sign writes the copy that render produces to dst, with one
// DKIM-Signature field per key at its top, keys[0]'s first (RFC 6376 §5;
// relaxed/relaxed, rsa-sha256 or ed25519-sha256, SignedHeaders with From
// oversigned). Two keys sign at once during a rotation, or to sign with
// both RSA and Ed25519 (RFC 8463 §4).
//
// render must write the same bytes every time it is called. Sign calls
// it once to compute the signatures, and a second time to write the copy
// after them unless the copy fits in Options.BufferBytes; it checks that
// both calls gave the same bytes (ErrNotDeterministic). The copy is
// written with CRLF line endings (what SMTP sends anyway), ending in a
// line ending, and without the sender's DKIM-Signature fields unless
// Options.KeepExisting.
//
// Errors: a bad key or an unsignable copy (ErrUnsignable, wrapped with
// the reason) before anything is written to dst, so the caller can send
// the copy unsigned; render's own errors (and so dst's) as render
// returned them; ErrNotDeterministic. After an error, whatever dst holds
// must not be delivered. Sign may be called from several goroutines at
// once.
func Sign(dst io.Writer, render func(io.Writer) error, keys []Key, opt Options) error {
	opts, err := signOptions(keys)
	if err != nil {
		return err
	}
	limit := opt.BufferBytes
	if limit == 0 {
		limit = DefaultBufferBytes
	}
	p1 := &firstPass{opts: opts, limit: limit}
	defer p1.release()
	sh := newShaper(opt.KeepExisting, p1)
	defer sh.release()
	sh.onHeader = p1.start
	err = render(sh)
	if err == nil {
		err = sh.close()
	}
	sigs, cerr := p1.finish(err)
	if err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if _, err := io.WriteString(dst, sigs); err != nil {
		return err
	}
	if p1.buf != nil {
		_, err := dst.Write(*p1.buf)
		return err
	}
	sh2 := newShaper(opt.KeepExisting, dst)
	defer sh2.release()
	if err := render(sh2); err != nil {
		return err
	}
	if err := sh2.close(); err != nil {
		return err
	}
	if sh2.n != sh.n || sh2.sum.Sum64() != sh.sum.Sum64() {
		return ErrNotDeterministic
	}
	return nil
}

// signOptions checks the keys and returns go-msgauth's options for each,
// all but the header list, which depends on the copy.
func signOptions(keys []Key) ([]msgauth.SignOptions, error) {
	if len(keys) == 0 {
		return nil, errors.New("dkim: no signing key")
	}
	opts := make([]msgauth.SignOptions, len(keys))
	for i, k := range keys {
		d, err := NormalizeDomain(k.Domain)
		if err != nil {
			return nil, err
		}
		if err := ValidSelector(k.Selector); err != nil {
			return nil, err
		}
		if k.Signer == nil {
			return nil, fmt.Errorf("dkim: key %s for %s has no private key", k.Selector, d)
		}
		if _, err := KindOf(k.Signer); err != nil {
			return nil, err
		}
		opts[i] = msgauth.SignOptions{
			Domain:                 d,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
			BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		}
	}
	return opts, nil
}

// firstPass is where the first rendering goes: into one go-msgauth
// Signer per key (each hashes the body as it streams through and keeps
// only the header), and into a buffer while the copy fits in limit.
type firstPass struct {
	opts    []msgauth.SignOptions
	limit   int
	signers []*msgauth.Signer
	bw      *bufio.Writer // batches writes: each Signer.Write is a hand-off through a pipe
	buf     *[]byte       // the copy so far; nil once it outgrew limit (or limit < 0)
	started bool
}

// start creates the signers once the copy's header is known.
func (p *firstPass) start(fields []hfield) error {
	hk, err := headerKeys(fields)
	if err != nil {
		return err
	}
	ws := make([]io.Writer, 0, len(p.opts))
	for i := range p.opts {
		o := p.opts[i]
		o.HeaderKeys = hk
		s, err := msgauth.NewSigner(&o)
		if err != nil {
			return fmt.Errorf("dkim: %w", err)
		}
		p.signers = append(p.signers, s)
		ws = append(ws, s)
	}
	p.bw = signBufs.Get().(*bufio.Writer)
	p.bw.Reset(io.MultiWriter(ws...))
	if p.limit > 0 {
		p.buf = copyBufs.Get().(*[]byte)
		*p.buf = (*p.buf)[:0]
	}
	p.started = true
	return nil
}

func (p *firstPass) Write(b []byte) (int, error) {
	if !p.started {
		return 0, errors.New("dkim: body before header") // cannot happen: the shaper starts p first
	}
	if p.buf != nil {
		if len(*p.buf)+len(b) <= p.limit {
			*p.buf = append(*p.buf, b...)
		} else {
			p.putBuf()
		}
	}
	return p.bw.Write(b)
}

// finish flushes and closes every signer (also after an error, so their
// goroutines end) and returns the signature fields, keys[0]'s first.
func (p *firstPass) finish(err error) (string, error) {
	if p.bw != nil && err == nil {
		err = p.bw.Flush()
	}
	var sigs bytes.Buffer
	for _, s := range p.signers {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("dkim: sign: %w", cerr)
		}
	}
	if err != nil {
		return "", err
	}
	for _, s := range p.signers {
		sigs.WriteString(s.Signature())
	}
	return sigs.String(), nil
}

func (p *firstPass) putBuf() {
	if p.buf != nil {
		if cap(*p.buf) <= p.limit && cap(*p.buf) <= 2*DefaultBufferBytes {
			copyBufs.Put(p.buf)
		}
		p.buf = nil
	}
}

func (p *firstPass) release() {
	p.putBuf()
	if p.bw != nil {
		p.bw.Reset(nil)
		signBufs.Put(p.bw)
		p.bw = nil
	}
}

var (
	signBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
	copyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
	shapers  = sync.Pool{New: func() any { return new(shaper) }}
	// hashSeed seeds the hash that compares the two renderings.
	hashSeed = maphash.MakeSeed()
)

// shaper turns render's bytes into the copy as it is signed and sent:
// every LF that lacks its CR gets one (RFC 5322 §2.3; a lone CR is data,
// as the MIME walker treats it), the header is checked and split into
// fields, the sender's DKIM-Signature fields are dropped unless kept, and
// the copy ends in a line ending, with an empty line after a header that
// had none. It hashes what it writes, so two renderings can be compared.
type shaper struct {
	keep     bool
	onHeader func([]hfield) error
	out      io.Writer

	inHeader bool
	hdr      []byte
	cr       bool // the last input byte was CR
	last     byte // the last byte written out
	scratch  []byte
	sum      maphash.Hash
	n        int64
	err      error
}

func newShaper(keep bool, out io.Writer) *shaper {
	s := shapers.Get().(*shaper)
	*s = shaper{keep: keep, out: out, inHeader: true, hdr: s.hdr[:0], scratch: s.scratch[:0]}
	s.sum.SetSeed(hashSeed)
	return s
}

func (s *shaper) release() {
	if cap(s.hdr) > 64<<10 {
		s.hdr = nil
	}
	if cap(s.scratch) > 256<<10 {
		s.scratch = nil
	}
	s.out, s.onHeader = nil, nil
	shapers.Put(s)
}

func (s *shaper) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	b := s.crlf(p)
	if s.inHeader {
		s.err = s.header(b)
	} else {
		s.err = s.emit(b)
	}
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

// crlf returns p with a CR before every LF that lacks one.
func (s *shaper) crlf(p []byte) []byte {
	if len(p) == 0 {
		return p
	}
	// Fast path: every LF already has its CR.
	ok := true
	prevCR := s.cr
	for rest := p; ; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		if (i == 0 && !prevCR) || (i > 0 && rest[i-1] != '\r') {
			ok = false
			break
		}
		prevCR = false
		rest = rest[i+1:]
	}
	if ok {
		s.cr = p[len(p)-1] == '\r'
		return p
	}
	out := s.scratch[:0]
	prevCR = s.cr
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			out = append(out, p...)
			prevCR = p[len(p)-1] == '\r'
			break
		}
		out = append(out, p[:i]...)
		if (i == 0 && !prevCR) || (i > 0 && p[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, '\n')
		prevCR = false
		p = p[i+1:]
	}
	s.cr = prevCR
	s.scratch = out
	return out
}

// header collects the header block until its empty line.
func (s *shaper) header(b []byte) error {
	from := max(0, len(s.hdr)-3)
	s.hdr = append(s.hdr, b...)
	end, body := -1, 0
	if bytes.HasPrefix(s.hdr, []byte("\r\n")) {
		end, body = 0, 2
	} else if i := bytes.Index(s.hdr[from:], []byte("\r\n\r\n")); i >= 0 {
		end, body = from+i+2, from+i+4
	}
	if end < 0 {
		if len(s.hdr) > MaxHeaderBytes {
			return fmt.Errorf("%w: header longer than %d bytes", ErrUnsignable, MaxHeaderBytes)
		}
		return nil
	}
	if end > MaxHeaderBytes {
		return fmt.Errorf("%w: header longer than %d bytes", ErrUnsignable, MaxHeaderBytes)
	}
	if err := s.endHeader(s.hdr[:end]); err != nil {
		return err
	}
	return s.emit(s.hdr[body:])
}

// endHeader checks and writes out the header block h (without its empty
// line), then the empty line.
func (s *shaper) endHeader(h []byte) error {
	s.inHeader = false
	if len(h) == 0 {
		return fmt.Errorf("%w: empty header", ErrUnsignable)
	}
	fields, err := splitHeader(h)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsignable, err)
	}
	if !s.keep {
		fields = dropSignatures(fields)
	}
	if s.onHeader != nil {
		if err := s.onHeader(fields); err != nil {
			return err
		}
	}
	for _, f := range fields {
		if err := s.emit(f.raw); err != nil {
			return err
		}
	}
	return s.emit([]byte("\r\n"))
}

// close ends the copy: a header without its empty line gets one, and a
// last line without its line ending gets one.
func (s *shaper) close() error {
	if s.err != nil {
		return s.err
	}
	if s.inHeader {
		h := s.hdr
		switch {
		case len(h) == 0:
			s.err = fmt.Errorf("%w: empty copy", ErrUnsignable)
			return s.err
		case h[len(h)-1] == '\r':
			h = append(h, '\n')
		case h[len(h)-1] != '\n':
			h = append(h, "\r\n"...)
		}
		s.hdr = h
		s.err = s.endHeader(h)
		return s.err
	}
	switch s.last {
	case '\n':
	case '\r':
		s.err = s.emit([]byte("\n"))
	default:
		s.err = s.emit([]byte("\r\n"))
	}
	return s.err
}

func (s *shaper) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	s.sum.Write(b)
	s.n += int64(len(b))
	s.last = b[len(b)-1]
	_, err := s.out.Write(b)
	return err
}

// dropSignatures removes the DKIM-Signature fields.
func dropSignatures(fields []hfield) []hfield {
	out := fields[:0]
	for _, f := range fields {
		if f.name != "dkim-signature" {
			out = append(out, f)
		}
	}
	return out
}
