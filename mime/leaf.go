package mime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// transcoder decodes a leaf body, hands it to the Tracker and encodes the
// result the same way: same Content-Transfer-Encoding (base64 and
// quoted-printable in lines of at most 76 characters, ending as the part's
// lines end) and same charset.
type transcoder struct {
	cte   string
	eol   string
	final bool              // the raw body ended with a line ending
	enc   encoding.Encoding // non-nil: convert through UTF-8
	qpr   *bufio.Reader     // if set, under the decoder of rewrite
	qpw   []byte            // if set, the encoder's buffer in rewrite
}

// decodeError marks content that does not decode.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// decodeReader tags every error that is not an I/O error or EOF as a
// decodeError.
type decodeReader struct{ r io.Reader }

func (d decodeReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		var ie *ioError
		if !errors.As(err, &ie) {
			err = &decodeError{err}
		}
	}
	return n, err
}

// decoded returns the body of sp with its transfer encoding undone.
func (t *transcoder) decoded(sp *spool) io.Reader {
	return t.decodedWith(sp, nil)
}

// decodedWith is decoded, with br (if not nil) as the quoted-printable
// decoder's buffer.
func (t *transcoder) decodedWith(sp *spool, br *bufio.Reader) io.Reader {
	r := sp.reader()
	switch t.cte {
	case "quoted-printable":
		if br == nil {
			br = bufio.NewReader(nil)
		}
		br.Reset(r)
		r = &qpDecoder{br: br} // mime/quotedprintable's decoding, faster
	case "base64":
		// base64.NewDecoder skips CR and LF only; anything else that is not
		// base64 is an error, and the leaf passes through.
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	return decodeReader{r}
}

// fixBOM makes "UTF-16" (byte order from its BOM, RFC 2781 §3.3) encode
// back with the byte order and BOM it came with, where x/text would write
// big-endian with a BOM.
func (t *transcoder) fixBOM(sp *spool) {
	if !strings.Contains(fmt.Sprint(t.enc), "UTF-16") || !strings.Contains(fmt.Sprint(t.enc), "Use BOM") {
		return
	}
	var bom [2]byte
	n, _ := io.ReadFull(t.decoded(sp), bom[:])
	switch {
	case n == 2 && bom == [2]byte{0xff, 0xfe}:
		t.enc = unicode.UTF16(unicode.LittleEndian, unicode.UseBOM)
	case n == 2 && bom == [2]byte{0xfe, 0xff}:
		t.enc = unicode.UTF16(unicode.BigEndian, unicode.UseBOM)
	default:
		t.enc = unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	}
}

// lossless reports whether the charset round trip keeps the decoded body
// byte for byte, so that encoding the rewritten text back cannot change
// anything but the URLs.
func (t *transcoder) lossless(sp *spool) (bool, error) {
	a := transform.NewReader(t.decoded(sp), transform.Chain(t.enc.NewDecoder(), t.enc.NewEncoder()))
	b := t.decoded(sp)
	return readersEqual(a, b)
}

func readersEqual(a, b io.Reader) (bool, error) {
	ba := make([]byte, 32<<10)
	bb := make([]byte, 32<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		for _, e := range []error{ea, eb} {
			var ie *ioError
			if errors.As(e, &ie) {
				return false, e
			}
		}
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		aEnd := ea == io.EOF || ea == io.ErrUnexpectedEOF
		bEnd := eb == io.EOF || eb == io.ErrUnexpectedEOF
		if ea != nil && !aEnd || eb != nil && !bEnd {
			return false, nil // a decode error
		}
		if aEnd || bEnd {
			return aEnd == bEnd, nil
		}
	}
}

// rewrite writes the tracked body of in to out.
func (t *transcoder) rewrite(out *spool, in *spool, tr Tracker, isHTML bool) error {
	var cw io.WriteCloser
	switch t.cte {
	case "quoted-printable":
		cw = newQPWriter(out, t.eol, t.qpw)
	case "base64":
		cw = newB64Writer(out, t.eol, t.final)
	default:
		cw = nopCloser{out}
	}
	var w io.WriteCloser = cw
	src := t.decodedWith(in, t.qpr)
	if t.enc != nil {
		src = decodeReader{transform.NewReader(src, t.enc.NewDecoder())}
		w = transform.NewWriter(cw, t.enc.NewEncoder())
	}
	var err error
	if isHTML {
		err = tr.HTML(w, src)
	} else {
		err = tr.Text(w, src)
	}
	if err != nil {
		return err
	}
	if t.enc != nil {
		if err := w.Close(); err != nil {
			return fmt.Errorf("mime: encoding: %w", err)
		}
	}
	return cw.Close()
}
