package smtpd

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// stuff is what a correct SMTP client sends for body in DATA (RFC 5321
// §4.5.2): a dot doubled at the start of every line (after each CRLF),
// CRLF added at the end if missing, then ".\r\n".
func stuff(body []byte) []byte {
	var b bytes.Buffer
	bol := true
	for i, c := range body {
		if bol && c == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(c)
		bol = c == '\n' && i > 0 && body[i-1] == '\r'
	}
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// unstuffed is the message a correct reader takes from stuff(body).
func unstuffed(body []byte) []byte {
	if bytes.HasSuffix(body, []byte("\r\n")) {
		return body
	}
	return append(bytes.Clone(body), "\r\n"...)
}

// goSMTPReader behaves as go-smtp's DATA reader does (v0.25.1 and v0.26.0,
// data.go), bug included: a second CR after a CR leaves it mid-line. Like
// that reader, it fills p before it returns; at the end of its input (a
// client waiting for a reply) it returns what it has, as the connection's
// pause does.
type goSMTPReader struct {
	in    []byte
	state int // 0 line start, 1 dot, 2 dot CR, 3 CR, 4 data, 5 end
	reads int
}

// errClientWaits: all the client sent is read, it waits for a reply.
var errClientWaits = errors.New("the client waits for a reply: the end of data was missed")

func (g *goSMTPReader) Read(p []byte) (int, error) {
	n := 0
	g.reads++
	for n < len(p) && g.state != 5 {
		if len(g.in) == 0 {
			return n, errClientWaits
		}
		if n > 0 && g.reads%3 == 0 {
			return n, errDataPause // a pause in the data, as the connection reports it
		}
		c := g.in[0]
		g.in = g.in[1:]
		switch g.state {
		case 0:
			switch c {
			case '.':
				g.state = 1
				continue
			case '\r':
				g.state = 3
			default:
				g.state = 4
			}
		case 1:
			if c == '\r' {
				g.state = 2
				continue
			}
			g.state = 4
		case 2:
			if c == '\n' {
				g.state = 5
				continue
			}
			g.state = 4
		case 3:
			if c == '\n' {
				g.state = 0
			} else {
				g.state = 4 // the bug: a CR here should stay "after CR"
			}
		case 4:
			if c == '\r' {
				g.state = 3
			}
		}
		p[n] = c
		n++
	}
	if g.state == 5 {
		return n, io.EOF
	}
	return n, nil
}

// readFixed reads body through go-smtp's reader and dotFixer, the way the
// session does, with reads of the given shape. It fails if the fixer asks
// for more after the end (a client would wait until a timeout).
func readFixed(t *testing.T, body []byte, wrap func(io.Reader) io.Reader) []byte {
	t.Helper()
	g := &goSMTPReader{in: stuff(body)}
	f := &dotFixer{r: g}
	var out bytes.Buffer
	r := wrap(f)
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes()
		}
		if err != nil {
			t.Fatalf("%q: %v (got %q)", body, err, out.Bytes())
		}
	}
}

func TestDotFixer(t *testing.T) {
	for _, body := range []string{
		"", "a", "a\r\n", "line\r\r\n", "a\r\r\n.b\r\n", "a\r\r\n.\r\n", "a\r\r\r\r\n.x", "a\r\r\r\n.x\r\n",
		".start\r\n", "x\r\r\n.\rb\r\n", "x\r\r\n\r\r\n\r\r\n", "bare\nlf\n.dot\n", "\r\r\n", "\r\r\n.",
		"end with cr\r", "x\r\r\n..\r\r\n...\r\n",
	} {
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole": func(r io.Reader) io.Reader { return r }, "one byte": iotest.OneByteReader, "half": iotest.HalfReader,
		} {
			if got, want := readFixed(t, []byte(body), wrap), unstuffed([]byte(body)); !bytes.Equal(got, want) {
				t.Errorf("%q (%s): got %q, want %q", body, name, got, want)
			}
		}
	}
}

// FuzzDotFixer: whatever body a correct client sends, go-smtp's reader
// followed by dotFixer yields that body and finds its end.
func FuzzDotFixer(f *testing.F) {
	for _, s := range []string{"a\r\r\n.\r\n", "x\r\r\n..y\r\r\r\n.z", "\r\r\r\r\n", ".\r\n.\r\r\n."} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if got, want := readFixed(t, body, iotest.HalfReader), unstuffed(body); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %q, want %q", body, got, want)
		}
	})
}

// BenchmarkDotFixer: the fixer's cost on a message's data (lines of 76
// bytes), against copying the same bytes without it.
func BenchmarkDotFixer(b *testing.B) {
	line := bytes.Repeat([]byte("x"), 74)
	line = append(line, "\r\n"...)
	body := bytes.Repeat(line, 1<<20/len(line))
	for _, fix := range []bool{false, true} {
		name := "plain"
		if fix {
			name = "fixer"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var r io.Reader = bytes.NewReader(body)
				if fix {
					r = &dotFixer{r: r}
				}
				if _, err := io.Copy(io.Discard, struct{ io.Reader }{r}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
