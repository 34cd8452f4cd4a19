package mime

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime/quotedprintable"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// pyPair is one entry of the manifest testdata/mime/agree.py reads.
type pyPair struct {
	Name         string   `json:"name"`
	In           [2]int64 `json:"in"`  // offset and length in the data file
	Out          [2]int64 `json:"out"` // offset and length in the data file
	Leaves       []pyLeaf `json:"leaves"`
	Requoted     []string `json:"requoted"`
	KeepControls bool     `json:"keep_controls"`
}

type pyLeaf struct {
	Path  string   `json:"path"`
	Mode  string   `json:"mode"` // "bytes" or "utf8": the space edits are in
	Edits []pyEdit `json:"edits"`
}

type pyEdit struct {
	Off int64  `json:"off"`
	Old string `json:"old"`
	New string `json:"new"`
}

// TestPythonAgreement has Python's email package parse the input and the
// output of every corpus message, and of every corpus HTML file wrapped in
// the common message shapes, and agree on tree, headers, attachments, text,
// and HTML up to the tracker's edits (testdata/mime/agree.py). It uses the
// real rewrite.Tracker, with text tracking on.
func TestPythonAgreement(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed: the independent-parser check needs it")
	}
	mimeFiles := corpusFiles(t, "mime")
	htmlFiles := corpusFiles(t, "html")
	dir := t.TempDir()
	if d := os.Getenv("MIME_AGREE_DIR"); d != "" {
		dir = d // keep the pairs to look at them
	}
	type job struct {
		name  string
		in    []byte
		check bool // assert fidelity here (TestCorpus does it for corpus files)
	}
	var jobs []job
	for _, f := range mimeFiles {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, job{f, in, false})
	}
	// The small messages of the golden tests, too.
	own, _ := filepath.Glob(filepath.Join(moduleRoot(t), "testdata", "mime", "*", "input.eml"))
	for _, f := range own {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, job{f, in, true})
	}
	nShapes := 0
	for _, f := range htmlFiles {
		if ext := strings.ToLower(filepath.Ext(f)); ext != ".html" && ext != ".htm" {
			continue
		}
		html, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range messageShapes {
			jobs = append(jobs, job{f + " as " + s.name, s.build(html), true})
			nShapes++
		}
	}
	pairs := make([]pyPair, len(jobs))
	outs := make([][]byte, len(jobs))
	// Walk the messages on every CPU; each job has its own Tracker.
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				j := jobs[i]
				rec, err := newRecorder(99)
				if err != nil {
					t.Error(err)
					continue
				}
				out, rep, traces, err := runTraced(j.in, func(r io.Reader) io.Reader { return r }, Options{TrackText: true}, rec)
				if err != nil {
					t.Errorf("%s: %v", j.name, err)
					continue
				}
				if j.check {
					checkFidelity(t, j.in, out, rep, rec.calls, traces)
				}
				pairs[i] = pyPair{
					Name:         j.name,
					Requoted:     rep.Requoted,
					KeepControls: strings.Contains(rep.Untouched, "covers a control header"),
					Leaves:       leafEdits(j.in, traces, rec.calls),
				}
				outs[i] = out
			}
		}()
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		return
	}
	// One data file holds every input and output: thousands of small
	// files cost more than the check itself.
	var data bytes.Buffer
	for i, j := range jobs {
		pairs[i].In = [2]int64{int64(data.Len()), int64(len(j.in))}
		data.Write(j.in)
		pairs[i].Out = [2]int64{int64(data.Len()), int64(len(outs[i]))}
		data.Write(outs[i])
	}
	dataFile := filepath.Join(dir, "pairs.bin")
	if err := os.WriteFile(dataFile, data.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "manifest.json")
	b, err := json.Marshal(pairs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(moduleRoot(t), "testdata", "mime", "agree.py")
	start := time.Now()
	out, err := exec.Command(py, script, manifest, dataFile).CombinedOutput()
	t.Logf("python took %v", time.Since(start))
	if err != nil {
		t.Fatalf("python disagrees (%v):\n%s", err, out)
	}
	t.Logf("%d corpus messages, %d wrapped HTML messages, %d own: %s", len(mimeFiles), nShapes, len(own), bytes.TrimSpace(out))
}

// leafEdits pairs each traced leaf with its Tracker call and edits.
func leafEdits(in []byte, traces []leafTrace, calls []call) []pyLeaf {
	leaves := []pyLeaf{}
	for _, lt := range traces {
		din, err := decodeBody(in[lt.inBody[0]:lt.inBody[1]], lt.inCTE, lt.charset)
		if err != nil {
			continue
		}
		l := pyLeaf{Path: lt.path, Mode: "bytes", Edits: []pyEdit{}}
		if mode, _ := lookupCharset(lt.charset); mode == csConvert {
			l.Mode = "utf8"
		}
		for len(calls) > 0 {
			c := calls[0]
			calls = calls[1:]
			if bytes.Equal(c.in, din) {
				for _, e := range c.edits {
					l.Edits = append(l.Edits, pyEdit{e.Off, e.Old, e.New})
				}
				break
			}
		}
		leaves = append(leaves, l)
	}
	return leaves
}

// messageShapes wrap an HTML document in the message shapes senders use.
var messageShapes = []struct {
	name  string
	build func(html []byte) []byte
}{
	{"single part, quoted-printable", func(h []byte) []byte {
		return []byte(top("text/html; charset=utf-8", "quoted-printable") + qp(h))
	}},
	{"single part, base64", func(h []byte) []byte {
		return []byte(top("text/html; charset=utf-8", "base64") + b64(h))
	}},
	{"single part, 8bit, LF", func(h []byte) []byte {
		m := top("text/html; charset=utf-8", "8bit") + string(h)
		return []byte(strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\n"))
	}},
	{"alternative, quoted-printable", func(h []byte) []byte {
		return []byte(top(`multipart/alternative; boundary="=_alt_1"`, "") +
			"--=_alt_1\r\n" + part("text/plain; charset=utf-8", "quoted-printable", "") + qp([]byte("Read it online: https://www.example.com/newsletter?id=1\r\n")) +
			"\r\n--=_alt_1\r\n" + part("text/html; charset=utf-8", "quoted-printable", "") + qp(h) +
			"\r\n--=_alt_1--\r\n")
	}},
	{"related with inline images, base64", func(h []byte) []byte {
		return []byte(top(`multipart/related; type="text/html"; boundary="rel"`, "") +
			"preamble\r\n--rel\r\n" + part("text/html; charset=utf-8", "base64", "") + b64(h) +
			"--rel\r\n" + part("image/png", "base64", "Content-ID: <logo@example.com>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\n") + b64(fakeBinary(3000, 1)) +
			"--rel\r\n" + part("image/gif", "base64", "Content-ID: <spacer@example.com>\r\n") + b64(fakeBinary(200, 2)) +
			"--rel--\r\nepilogue\r\n")
	}},
	{"mixed with attachments", func(h []byte) []byte {
		return []byte(top(`multipart/mixed; boundary="mix"`, "") +
			"--mix\r\n" + "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
			"--alt\r\n" + part("text/plain; charset=us-ascii", "7bit", "") + "See https://www.example.com/a?b=c\r\n" +
			"--alt\r\n" + part("text/html; charset=utf-8", "quoted-printable", "") + qp(h) +
			"\r\n--alt--\r\n" +
			"--mix\r\n" + part("application/pdf; name=\"a.pdf\"", "base64", "Content-Disposition: attachment; filename=\"a.pdf\"\r\n") + b64(fakeBinary(20000, 3)) +
			"--mix\r\n" + part("text/html; name=\"page.html\"", "quoted-printable", "Content-Disposition: attachment; filename=\"page.html\"\r\n") + qp(h) +
			"\r\n--mix\r\n" + part("message/rfc822", "", "") + "Subject: fwd\r\nContent-Type: text/html\r\n\r\n<a href=\"http://fwd.example.com/\">x</a>\r\n" +
			"--mix--\r\n")
	}},
}

func top(ct, cte string) string {
	s := "From: News <news@example.com>\r\nTo: reader@example.net\r\nSubject: Newsletter\r\nX-Smtpeter-Tags: corpus\r\nMIME-Version: 1.0\r\nContent-Type: " + ct + "\r\n"
	if cte != "" {
		s += "Content-Transfer-Encoding: " + cte + "\r\n"
	}
	return s + "\r\n"
}

func part(ct, cte, extra string) string {
	s := "Content-Type: " + ct + "\r\n"
	if cte != "" {
		s += "Content-Transfer-Encoding: " + cte + "\r\n"
	}
	return s + extra + "\r\n"
}

// qp encodes with the standard library's writer (independent of ours).
func qp(b []byte) string {
	var buf bytes.Buffer
	w := quotedprintable.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.String()
}

func b64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var buf strings.Builder
	for len(s) > 76 {
		buf.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	if s != "" {
		buf.WriteString(s + "\r\n")
	}
	return buf.String()
}

func fakeBinary(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) * 2654435761
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}
