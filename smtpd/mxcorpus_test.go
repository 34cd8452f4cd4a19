package smtpd

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/inbound"
	"github.com/trackrelay/trackrelay/store"
)

// The corpora sent through the real MX listener: real bounces, complaints
// and auto-replies to the VERP addresses of real copies, and real DMARC
// and TLS reports to a report address, each landing in the right log.

func sharedCorpus(t *testing.T, parts ...string) string {
	dir := filepath.Join(append([]string{"..", "..", "shared", "corpora"}, parts...)...)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("corpus absent (%v): it sits in ../shared beside the checkout", err)
	}
	return dir
}

// sisimaiStatus reads expected.tsv: the status Sisimai reads for the
// first recipient of each file.
func sisimaiStatus(t *testing.T, dir string) map[string]string {
	f, err := os.Open(filepath.Join(dir, "expected.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) == 6 && c[1] == "1" {
			out[c[0]] = c[2]
		}
	}
	return out
}

func TestMXBounceCorpus(t *testing.T) {
	dir := sharedCorpus(t, "bounces", "sisimai-set-of-emails")
	want := sisimaiStatus(t, dir)
	r := newMXRig(t, "", true, func(_ *InboundConfig, m *MXConfig) { m.BadRecipientsSlow, m.BadRecipientsBlock = 1000, 1000 })
	var files []string
	for name := range want {
		if strings.HasPrefix(name, "lhost-") || strings.HasPrefix(name, "rhost-") || strings.HasPrefix(name, "rfc3464-") {
			files = append(files, name)
		}
	}
	sort.Strings(files)
	var sample []string
	for i, f := range files {
		if i%4 == 0 {
			sample = append(sample, f)
		}
	}
	others, _ := filepath.Glob(filepath.Join(dir, "maildir", "bsd", "arf-*.eml"))
	auto, _ := filepath.Glob(filepath.Join(dir, "maildir", "bsd", "rfc3834-*.eml"))
	for _, p := range append(others, auto...) {
		sample = append(sample, filepath.Base(p))
	}
	agree, bounces := 0, 0
	for _, name := range sample {
		msg, err := os.ReadFile(filepath.Join(dir, "maildir", "bsd", name))
		if err != nil {
			t.Fatal(err)
		}
		direct, _ := inbound.Classify(bytes.NewReader(msg), inbound.Envelope{Rcpt: []string{"x+tok@" + mxBounceDomain}})
		rcpt := "someone@example.org"
		if len(direct.Recipients) > 0 && strings.Contains(direct.Recipients[0].Address, "@") {
			rcpt = direct.Recipients[0].Address
		}
		// The same address bounces in several files: the suppression an
		// earlier one made would refuse the copy.
		if _, err := r.st.RemoveAddress(context.Background(), store.ListSuppressed, "acct", rcpt); err != nil {
			t.Fatal(err)
		}
		c := r.delivered("acct", rcpt)[0]
		if err := sendMX(t, r.addr, "", []string{r.verp.Sender(c)}, msg); err != nil {
			t.Errorf("%s: refused: %v", name, err)
			continue
		}
		r.wait()
		var got []store.Event
		for e, err := range r.st.EventsByMessage(context.Background(), "acct", c.ID) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Log != store.LogAttempts && e.Log != store.LogDeliveries {
				got = append(got, e)
			}
		}
		if len(got) != 1 {
			t.Errorf("%s (%s): %d events recorded for its copy, want 1: %+v", name, direct.Kind, len(got), got)
			continue
		}
		e := got[0]
		switch direct.Kind {
		case inbound.KindBounce, inbound.KindDelayed:
			rec := direct.Recipients[0]
			typ := string(rec.Verdict)
			if direct.Kind == inbound.KindDelayed || rec.Action == "delayed" {
				typ = "delayed"
			}
			if e.Log != store.LogBounces || e.Fields["status"] != rec.Status || e.Fields["type"] != typ || e.Fields["reason"] != string(rec.Reason) {
				t.Errorf("%s: recorded %s %v; read directly: %s %s %s", name, e.Log, e.Fields, rec.Status, typ, rec.Reason)
			}
			if w, ok := want[name]; ok {
				bounces++
				if w == e.Fields["status"] {
					agree++
				}
			}
			if typ == "hard" && r.suppressed("acct", c.Recipient) == nil {
				t.Errorf("%s: hard bounce did not suppress %s", name, c.Recipient)
			}
		case inbound.KindComplaint:
			if e.Log != store.LogComplaints || r.suppressed("acct", c.Recipient) == nil && direct.Feedback.FeedbackType != "not-spam" {
				t.Errorf("%s: complaint recorded as %s %v", name, e.Log, e.Fields)
			}
		case inbound.KindDMARCFailure:
			if e.Log != store.LogDMARC || e.Fields["report"] != "failure" {
				t.Errorf("%s: failure report recorded as %s %v", name, e.Log, e.Fields)
			}
		default:
			if e.Log != store.LogResponses || e.Fields["kind"] == "" {
				t.Errorf("%s: %s recorded as %s %v", name, direct.Kind, e.Log, e.Fields)
			}
		}
		if strings.HasPrefix(name, "arf-") && direct.Kind != inbound.KindComplaint && direct.Kind != inbound.KindDMARCFailure {
			t.Errorf("%s: read as %s, want a complaint", name, direct.Kind)
		}
		if strings.HasPrefix(name, "rfc3834-") && (e.Log != store.LogResponses || e.Fields["kind"] != inbound.ResponseAutoReply) {
			t.Errorf("%s: recorded as %s %v, want an auto-reply", name, e.Log, e.Fields)
		}
	}
	if bounces < 100 {
		t.Fatalf("only %d bounces in the sample", bounces)
	}
	share := float64(agree) / float64(bounces)
	t.Logf("%d messages over SMTP; %d bounces, status as Sisimai reads it for %d (%.1f%%)", len(sample), bounces, agree, 100*share)
	if share < 0.9 {
		t.Errorf("status agrees with Sisimai's for %.1f%% of the sample, want >= 90%%", 100*share)
	}
	if u := r.unclaimed(); len(u) > 0 {
		t.Errorf("unclaimed: %v", u)
	}
}

// wrapReport is the mail a reporter sends: the file as a base64
// attachment.
func wrapReport(to, name string, data []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: noreply-dmarc@reporter.example\r\nTo: %s\r\nSubject: Report Domain: example.com Submitter: reporter.example\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"W\"\r\n\r\n--W\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"+
		"--W\r\nContent-Type: application/octet-stream; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", to, name, name)
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--W--\r\n")
	return b.Bytes()
}

// xmlRecords counts the <record> elements of an aggregate report with
// encoding/xml, after gzip or zip: an oracle apart from package inbound.
// ok is false when the file is not well-formed.
func xmlRecords(data []byte) (n int, ok bool) {
	var r io.Reader = bytes.NewReader(data)
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return 0, false
		}
		r = zr
	case bytes.HasPrefix(data, []byte("PK")):
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil || len(zr.File) == 0 {
			return 0, false
		}
		f, err := zr.File[0].Open()
		if err != nil {
			return 0, false
		}
		defer f.Close()
		r = f
	}
	d := xml.NewDecoder(r)
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n, depth == 0
		}
		if err != nil {
			return n, false
		}
		switch e := tok.(type) {
		case xml.StartElement:
			depth++
			if e.Name.Local == "record" && depth == 2 {
				n++
			}
		case xml.EndElement:
			depth--
		}
	}
}

func TestMXDMARCCorpus(t *testing.T) {
	dir := sharedCorpus(t, "dmarc", "parsedmarc", "samples")
	r := newMXRig(t, "", true, nil)
	to := "dmarc+acct@" + mxBounceDomain
	var paths []string
	for _, sub := range []string{"aggregate", "aggregate_invalid", "failure", "smtp_tls"} {
		ps, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
		paths = append(paths, ps...)
	}
	paths = append(paths, filepath.Join(dir, "empty.xml"))
	sort.Strings(paths)
	rows, reports := 0, 0
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(p)
		msg := data
		if !strings.HasSuffix(name, ".eml") {
			msg = wrapReport(to, name, data)
		}
		direct, _ := inbound.Classify(bytes.NewReader(msg), inbound.Envelope{Rcpt: []string{to}})
		before := map[string]int{}
		for _, log := range []string{store.LogDMARC, store.LogResponses, store.LogComplaints} {
			before[log] = len(r.events("acct", log))
		}
		if err := sendMX(t, r.addr, "", []string{to}, msg); err != nil {
			t.Errorf("%s: refused: %v", name, err)
			continue
		}
		r.wait()
		added := func(log string) []store.Event { return r.events("acct", log)[before[log]:] }
		switch direct.Kind {
		case inbound.KindDMARC:
			reports++
			got := added(store.LogDMARC)
			want := len(direct.DMARC.Records)
			if n, ok := xmlRecords(data); ok && !strings.HasSuffix(name, ".eml") {
				want = n // the independent count, for the bare files
			}
			if len(got) != max(want, 1) {
				t.Errorf("%s: %d dmarc rows, want %d", name, len(got), max(want, 1))
				continue
			}
			rows += len(got)
			if f := got[0].Fields; f["report"] != "aggregate" || f["reportid"] == "" || f["domain"] != direct.DMARC.Policy.Domain {
				t.Errorf("%s: first row %v", name, f)
			}
		case inbound.KindDMARCFailure:
			got := added(store.LogDMARC)
			if len(got) != 1 || got[0].Fields["report"] != "failure" {
				t.Errorf("%s: failure report rows %+v", name, got)
			}
		case inbound.KindTLSReport:
			got := added(store.LogResponses)
			if len(got) != 1 || got[0].Fields["kind"] != "tls-report" || !strings.Contains(got[0].Fields["reason"], "sessions succeeded") {
				t.Errorf("%s: TLS report %+v", name, got)
			}
		default:
			got := added(store.LogResponses)
			if len(got) != 1 || got[0].Fields["reason"] == "" {
				t.Errorf("%s (%s): responses %+v, want one with the reason", name, direct.Kind, got)
			}
			if direct.Response != nil && direct.Response.Kind == inbound.ResponseUnparsed && !strings.HasPrefix(got[0].Fields["reason"], direct.Response.Reason) {
				t.Errorf("%s: reason %q, want %q first", name, got[0].Fields["reason"], direct.Response.Reason)
			}
		}
	}
	t.Logf("%d files over SMTP: %d aggregate reports, %d rows", len(paths), reports, rows)
	if reports < 12 || rows < 2286 {
		t.Errorf("%d aggregate reports and %d rows recorded: fewer than the corpus holds", reports, rows)
	}
}
