package mime

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// qpWriterRef is qpWriter as it was before it scanned eight octets at a
// time: the reference its output is held to, byte for byte.
type qpWriterRef qpWriter

func (q *qpWriterRef) Write(p []byte) (int, error) {
	// The state lives in locals while encoding: the encoder is the hot
	// loop of a tracked quoted-printable part.
	buf, lineLen, ws, cr := q.buf, q.lineLen, q.ws, q.cr
	eol := q.eol
	// room inserts a soft line break unless n more octets fit on the line
	// with a trailing "=".
	room := func(n int) {
		if lineLen+n > maxEncodedLine-1 {
			buf = append(buf, '=')
			buf = append(buf, eol...)
			lineLen = 0
		}
	}
	escaped := func(b byte) {
		room(3)
		buf = append(buf, '=', upperhex[b>>4], upperhex[b&15])
		lineLen += 3
	}
	// flushWS writes a pending space or tab, encoded when it would end a
	// line.
	flushWS := func(encode bool) {
		if ws == 0 {
			return
		}
		b := ws
		ws = 0
		if encode {
			escaped(b)
			return
		}
		room(1)
		buf = append(buf, b)
		lineLen++
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		if cr {
			cr = false
			if b == '\n' {
				flushWS(true)
				buf = append(buf, '\r', '\n')
				lineLen = 0
				continue
			}
			flushWS(false)
			escaped('\r')
		}
		switch {
		case qpLiteral[b]:
			flushWS(false)
			// Copy the whole run of literal octets a line at a time: this
			// is the hot path of a tracked quoted-printable part.
			// A space or tab inside the run is literal too when a byte
			// that is not a line ending follows it in p (only white space
			// that ends a line must be encoded).
			j := i + 1
			for j < len(p) && (qpLiteral[p[j]] ||
				(p[j] == ' ' || p[j] == '\t') && j+1 < len(p) && p[j+1] != '\r' && p[j+1] != '\n') {
				j++
			}
			for i < j {
				if lineLen+1 > maxEncodedLine-1 {
					buf = append(buf, '=')
					buf = append(buf, eol...)
					lineLen = 0
				}
				if lineLen == 0 && p[i] == '-' {
					// An encoded line never starts with "-", so no line of
					// a re-encoded body can pass for a boundary delimiter,
					// even where a soft break lands just before
					// "--boundary".
					escaped('-')
					i++
					continue
				}
				n := min(j-i, maxEncodedLine-1-lineLen)
				buf = append(buf, p[i:i+n]...)
				lineLen += n
				i += n
			}
			i--
		case b == '\r':
			cr = true
		case b == '\n':
			flushWS(true)
			buf = append(buf, '\n')
			lineLen = 0
		case b == ' ' || b == '\t':
			flushWS(false)
			ws = b
		default:
			flushWS(false)
			escaped(b)
		}
		if len(buf) >= 4000 {
			if _, err := q.w.Write(buf); err != nil {
				q.buf, q.lineLen, q.ws, q.cr = buf[:0], lineLen, ws, cr
				return i, err
			}
			buf = buf[:0]
		}
	}
	q.buf, q.lineLen, q.ws, q.cr = buf, lineLen, ws, cr
	return len(p), nil
}

func (q *qpWriterRef) Close() error { return (*qpWriter)(q).Close() }

// encodeQP encodes in with writes of the given sizes (cycled).
func encodeQP(t testing.TB, ref bool, in []byte, eol string, sizes []int) []byte {
	var out bytes.Buffer
	q := newQPWriter(&out, eol, nil)
	w := interface {
		Write([]byte) (int, error)
		Close() error
	}(q)
	if ref {
		w = (*qpWriterRef)(q)
	}
	for i := 0; len(in) > 0; i++ {
		n := min(len(in), max(1, sizes[i%len(sizes)]))
		if _, err := w.Write(in[:n]); err != nil {
			t.Fatal(err)
		}
		in = in[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func checkQPWriter(t testing.TB, in []byte, sizes []int) {
	for _, eol := range []string{"\r\n", "\n"} {
		got, want := encodeQP(t, false, in, eol, sizes), encodeQP(t, true, in, eol, sizes)
		if !bytes.Equal(got, want) {
			t.Fatalf("encoding %q (writes %v, %q): got\n%q\nwant\n%q", in, sizes, eol, got, want)
		}
	}
}

func TestQPWriterMatchesReference(t *testing.T) {
	words := []string{"lorem ", "ipsum", " ", "  ", "\t", "\r\n", "\n", "\r", "=", "-", "--b", "\x00", "\x7f", "\xc3\xa9", "<a href=\"x\">", "aaaaaaa ", "bbbbbbbb", "        "}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		var in []byte
		for range rng.IntN(60) {
			in = append(in, words[rng.IntN(len(words))]...)
		}
		checkQPWriter(t, in, []int{len(in)})
		checkQPWriter(t, in, []int{1 + rng.IntN(9), 1 + rng.IntN(30)})
	}
}

func FuzzQPWriter(f *testing.F) {
	f.Add([]byte("lorem ipsum dolor sit amet, consectetur adipiscing elit \r\n-- x"), uint8(0), uint8(7))
	f.Add([]byte("a       \nb        \r\nc=d\te"), uint8(3), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, a, b uint8) {
		checkQPWriter(t, in, []int{len(in)})
		checkQPWriter(t, in, []int{int(a), int(b)})
	})
}

// TestWordTests holds the word-at-a-time tests to the octet-wise one, for
// every octet in every position among the octets around the limits.
func TestWordTests(t *testing.T) {
	tests := []struct {
		name  string
		octet func(byte) bool   // the octet-wise test
		word  func(uint64) bool // the word-at-a-time one: all eight pass
	}{
		{"ascii8", func(b byte) bool { return b >= 0x20 && b < 0x7f }, ascii8},
		{"ctlBits == 0", func(b byte) bool { return b >= 0x20 && b != 0x7f }, func(x uint64) bool { return ctlBits(x) == 0 }},
	}
	edge := []byte{0, 1, 0x1f, 0x20, 0x21, 0x3c, 0x3d, 0x3e, 0x7e, 0x7f, 0x80, 0xff, 'a'}
	for _, tc := range tests {
		check := func(w [8]byte) {
			t.Helper()
			want := true
			for _, b := range w {
				want = want && tc.octet(b)
			}
			if got := tc.word(binary.LittleEndian.Uint64(w[:])); got != want {
				t.Fatalf("%s(%q) is %v", tc.name, w, got)
			}
		}
		var w [8]byte
		for c := range 256 {
			for _, e := range edge {
				for pos := range 8 {
					for i := range w {
						w[i] = e
					}
					w[pos] = byte(c)
					check(w)
				}
			}
		}
		rng := rand.New(rand.NewPCG(3, 4))
		for range 1 << 20 {
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			check(w)
		}
	}
}

// TestCleanQP holds the word-at-a-time line check to the octet-wise one.
func TestCleanQP(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []byte("ab =\t\x00\x1f\x7f\x80\xff~")
	for range 20000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = 'x'
			if rng.IntN(8) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		if got, want := cleanQP(b), qpLiteralOrEq(b); got != want {
			t.Fatalf("cleanQP(%q) = %v", b, got)
		}
	}
}
