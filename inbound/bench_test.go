package inbound

import (
	"bytes"
	"fmt"
	"io"
	stdmime "mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkClassifyCorpus classifies every message of the bounce corpus
// (lhost, rhost, rfc3464, arf, rfc3834: 629 real messages) per op, and
// reports messages per second, the bytes read per second, and the time
// against a bare standard-library MIME walk of the same messages measured
// in the same run (x-stdlib-walk).
func BenchmarkClassifyCorpus(b *testing.B) {
	dir := filepath.Join(bounceCorpus(b), "maildir", "bsd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var msgs [][]byte
	size := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".eml") {
			continue
		}
		m, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
		size += len(m)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	// Each round classifies the corpus once and walks it once with the
	// standard library (the baseline: net/mail and mime/multipart reading
	// every header and part, the least a classifier does), so both see
	// the same load on a shared machine.
	var classify, walk time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		for _, m := range msgs {
			if _, err := Classify(bytes.NewReader(m), Envelope{}); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for _, m := range msgs {
			stdlibWalk(m)
		}
		classify += t1.Sub(t0)
		walk += time.Since(t1)
	}
	b.ReportMetric(float64(len(msgs)*b.N)/classify.Seconds(), "msgs/s")
	b.ReportMetric(classify.Seconds()/walk.Seconds(), "x-stdlib-walk")
}

// stdlibWalk reads a message's header and all of its MIME parts with the
// standard library, discarding them.
func stdlibWalk(m []byte) {
	msg, err := mail.ReadMessage(bytes.NewReader(m))
	if err != nil {
		return
	}
	walkParts(msg.Header.Get("Content-Type"), msg.Body, 0)
}

func walkParts(ctype string, body io.Reader, depth int) {
	mt, params, err := stdmime.ParseMediaType(ctype)
	if err != nil || !strings.HasPrefix(mt, "multipart/") || depth > 8 {
		io.Copy(io.Discard, body)
		return
	}
	mr := multipart.NewReader(body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return
		}
		walkParts(p.Header.Get("Content-Type"), p, depth+1)
	}
}

// BenchmarkAggregateLarge parses the corpus's largest aggregate report
// (2,286 rows, 0.9 MB of XML).
func BenchmarkAggregateLarge(b *testing.B) {
	p := filepath.Join(dmarcCorpus(b), "aggregate", "!large-example.com!1711897200!1711983600.xml")
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rep, err := ParseAggregate(bytes.NewReader(data), 0)
		if err != nil || len(rep.Records) != 2286 {
			b.Fatalf("%v %d", err, len(rep.Records))
		}
	}
	b.ReportMetric(float64(2286*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkManyRecipients classifies a 290 KB text bounce naming 3,000
// recipients (1,000 are read, MaxRecipients) followed by 5,000 lines
// that look like replies: the work per message stays linear in its size.
func BenchmarkManyRecipients(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("From: MAILER-DAEMON@x.example\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at x.\r\n")
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&sb, "<user%d@rcpt.example>:\r\n\r\n", i)
	}
	sb.WriteString(strings.Repeat("blah blah user@x.example 550 5.1.1 stuff\r\n", 5000))
	in := sb.String()
	b.SetBytes(int64(len(in)))
	for i := 0; i < b.N; i++ {
		r, err := Classify(strings.NewReader(in), Envelope{})
		if err != nil || len(r.Recipients) != 1000 || !strings.Contains(strings.Join(r.Limits, ","), "recipients") {
			b.Fatalf("%v %d %v", err, len(r.Recipients), r.Limits)
		}
	}
}
