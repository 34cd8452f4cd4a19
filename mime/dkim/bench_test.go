package dkim

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkSignedCopy measures the delivery-side CPU cost of one tracked
// copy (mime.Rewrite with the rewrite tracker, as smtpd.Queue.WriteCopy
// makes it) unsigned and signed, each way measured in turn within every
// iteration, and reports each way's time per copy and its throughput
// against unsigned (off/x: 0.5 means half as many copies a second).
// Copies: the shared newsletter (36 KB, rendered once and buffered) and
// the same with a 2 MB attachment (rendered twice).
func BenchmarkSignedCopy(b *testing.B) {
	msg, err := os.ReadFile(filepath.Join(moduleRoot(b), "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skipf("newsletter absent (%v): it sits beside the checkout in CI", err)
	}
	rk, ek := testKeys(b)
	rsaK := Key{Domain: "example.com", Selector: "rsa1", Signer: rk}
	edK := Key{Domain: "example.com", Selector: "ed1", Signer: ek}
	big := attach(msg, 2<<20)
	for _, m := range []struct {
		name string
		msg  []byte
	}{{"newsletter", msg}, {"attachment-2MB", big}} {
		b.Run(m.name, func(b *testing.B) {
			render := trackedRender(b, m.msg, 42)
			ways := []struct {
				name string
				keys []Key
				opt  Options
			}{
				{"off", nil, Options{}},
				{"rsa", []Key{rsaK}, Options{}},
				{"ed25519", []Key{edK}, Options{}},
				{"rsa+ed25519", []Key{rsaK, edK}, Options{}},
				{"ed25519-render-twice", []Key{edK}, Options{BufferBytes: -1}},
			}
			one := func(i int) time.Duration {
				start := time.Now()
				var err error
				if ways[i].keys == nil {
					err = render(io.Discard)
				} else {
					err = Sign(io.Discard, render, ways[i].keys, ways[i].opt)
				}
				if err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			total := make([]time.Duration, len(ways))
			b.SetBytes(int64(len(m.msg)))
			for range b.N {
				for i := range ways {
					total[i] += one(i)
				}
			}
			for i, w := range ways {
				b.ReportMetric(float64(total[i].Nanoseconds())/float64(b.N), w.name+"-ns/copy")
				if i > 0 {
					b.ReportMetric(float64(total[0])/float64(total[i]), "off/"+w.name)
				}
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// attach returns msg (multipart/alternative) wrapped in a multipart/mixed
// with a base64 attachment of n bytes.
func attach(msg []byte, n int) []byte {
	i := bytes.Index(msg, []byte("\nContent-Type:"))
	head, rest := msg[:i+1], msg[i+1:]
	var b bytes.Buffer
	b.Write(head)
	b.WriteString("Content-Type: multipart/mixed; boundary=\"mixed-1\"\n\n--mixed-1\n")
	b.Write(rest)
	b.WriteString("\n--mixed-1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")
	line := strings.Repeat("QUJD", 19) + "\n"
	for b.Len() < len(msg)+n {
		b.WriteString(line)
	}
	b.WriteString("--mixed-1--\n")
	return b.Bytes()
}
