package mime

import (
	"bytes"
	"io"
	"os"
)

// spoolMem is how much of one body a spool keeps in memory before it
// moves to a temporary file.
const spoolMem = 1 << 20

// spool holds one body that must be read more than once: a tracked leaf is
// spooled raw (so it can be passed through unchanged if decoding fails
// half-way) and rewritten (so its header, whose Content-Transfer-Encoding
// may change, can be written first). Memory stays under spoolMem per
// spool; larger bodies go to a temporary file in dir. All errors are
// *ioError.
type spool struct {
	dir string
	mem bytes.Buffer
	f   *os.File
	n   int64

	unlinked bool

	// lines asks Write to keep maxLine: only a rewritten 7bit/8bit body
	// needs it. reset leaves it as it is.
	lines   bool
	maxLine int  // longest line written, without its ending
	cur     int  // length of the current line so far
	last    byte // last byte written
}

func (sp *spool) reset() error {
	sp.mem.Reset()
	sp.n, sp.maxLine, sp.cur, sp.last = 0, 0, 0, 0
	if sp.f != nil {
		if err := sp.f.Truncate(0); err != nil {
			return &ioError{err}
		}
		if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
			return &ioError{err}
		}
	}
	return nil
}

func (sp *spool) Write(p []byte) (int, error) {
	if sp.lines {
		sp.measure(p)
	} else if len(p) > 0 {
		sp.last = p[len(p)-1]
	}
	if sp.f == nil && sp.mem.Len()+len(p) > spoolMem {
		f, err := os.CreateTemp(sp.dir, "trackrelay-mime-*")
		if err != nil {
			return 0, &ioError{err}
		}
		// Unlinked at once where the OS allows it (Unix), so a crash
		// leaves nothing behind; close removes it otherwise.
		sp.f = f
		sp.unlinked = os.Remove(f.Name()) == nil
		if _, err := f.Write(sp.mem.Bytes()); err != nil {
			return 0, &ioError{err}
		}
		sp.mem.Reset()
	}
	if sp.f != nil {
		n, err := sp.f.Write(p)
		sp.n += int64(n)
		if err != nil {
			return n, &ioError{err}
		}
		return n, nil
	}
	sp.mem.Write(p)
	sp.n += int64(len(p))
	return len(p), nil
}

func (sp *spool) measure(p []byte) {
	if len(p) == 0 {
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			sp.cur += len(p)
			break
		}
		l := sp.cur + i
		if i > 0 && p[i-1] == '\r' || i == 0 && sp.last == '\r' {
			l--
		}
		if l > sp.maxLine {
			sp.maxLine = l
		}
		sp.cur = 0
		sp.last = '\n'
		p = p[i+1:]
	}
	if sp.cur > sp.maxLine {
		sp.maxLine = sp.cur
	}
	if len(p) > 0 {
		sp.last = p[len(p)-1]
	}
}

// reader returns the spooled bytes from the start.
func (sp *spool) reader() io.Reader {
	if sp.f == nil {
		return bytes.NewReader(sp.mem.Bytes())
	}
	return ioErrReader{io.NewSectionReader(sp.f, 0, sp.n)}
}

func (sp *spool) close() error {
	if sp.f == nil {
		return nil
	}
	name := sp.f.Name()
	err := sp.f.Close()
	if !sp.unlinked {
		if rerr := os.Remove(name); err == nil && rerr != nil && !os.IsNotExist(rerr) {
			err = rerr
		}
	}
	sp.f, sp.unlinked = nil, false
	if err != nil {
		return &ioError{err}
	}
	return nil
}

type ioErrReader struct{ r io.Reader }

func (r ioErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &ioError{err}
	}
	return n, err
}
