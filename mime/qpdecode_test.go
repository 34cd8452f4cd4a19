package mime

import (
	"bytes"
	"errors"
	"io"
	"mime/quotedprintable"
	"testing"
)

// readAllSized reads r to the end with reads of at most size bytes and
// returns the bytes and the first error other than io.EOF.
func readAllSized(r io.Reader, size int) ([]byte, error) {
	var out []byte
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n == 0 && len(out) > 1<<24 {
			return out, errors.New("no progress")
		}
	}
}

// sameAsStdlib fails unless qpDecoder and mime/quotedprintable.Reader give
// the same bytes and the same error for in, read size bytes at a time.
func sameAsStdlib(t *testing.T, in []byte, size int) {
	t.Helper()
	want, werr := readAllSized(quotedprintable.NewReader(bytes.NewReader(in)), size)
	got, gerr := readAllSized(newQPDecoder(bytes.NewReader(in)), size)
	if !bytes.Equal(got, want) {
		t.Fatalf("decoding %q (reads of %d): got %q, want %q", in, size, got, want)
	}
	if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
		t.Fatalf("decoding %q (reads of %d): error %v, want %v", in, size, gerr, werr)
	}
}

func TestQPReader(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 5000) // longer than the line buffer
	for _, in := range []string{
		"", "plain", "a=3Db=3d\r\n", "soft=\r\nbreak", "soft=\nbreak", "end=",
		"trailing   \r\nspace\t\n", "a=\r\n", "=", "=4", "=4G", "=G4", "a=\rb\n", "a=\n",
		"bad\x01byte", "del\x7f", "hi\x80\xffbytes", "= \r\nx", "=  x\n", "a= b\r\n",
		"<a href=3D\"https://shop.example.com/?a=3D1&amp;b=3D2\">x</a>=\r\n\r\n",
		"\r\n\r\n", "x\r", "only\rcr", string(long), string(long) + "=\r\n",
	} {
		for _, size := range []int{1, 2, 3, 7, 4096} {
			sameAsStdlib(t, []byte(in), size)
		}
	}
}

func FuzzQPReader(f *testing.F) {
	for _, s := range []string{"a=3Db\r\n", "soft=\r\nx=\n", "=4G=\r\n= x", "tab\t \r\n\x80"} {
		f.Add([]byte(s), uint8(4))
	}
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		sameAsStdlib(t, in, int(size)%64+1)
	})
}

func BenchmarkQPReader(b *testing.B) {
	var enc bytes.Buffer
	w := quotedprintable.NewWriter(&enc)
	for i := 0; i < 400; i++ {
		w.Write([]byte(`<td class="item" style="padding:8px"><a href="https://shop.example.com/products/item?utm_source=newsletter&amp;utm_medium=email">Product: a very nice thing</a></td>` + "\n"))
	}
	w.Close()
	in := enc.Bytes()
	for _, bc := range []struct {
		name string
		r    func(io.Reader) io.Reader
	}{
		{"stdlib", func(r io.Reader) io.Reader { return quotedprintable.NewReader(r) }},
		{"ours", func(r io.Reader) io.Reader { return newQPDecoder(r) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := io.Copy(io.Discard, bc.r(bytes.NewReader(in))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
