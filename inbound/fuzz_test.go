package inbound

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fuzzOptions are small bounds, so that the fuzzer reaches them.
var fuzzOptions = Options{MaxBytes: 1 << 20, MaxKeptBytes: 512 << 10, MaxDepth: 6, MaxParts: 64, MaxTextBytes: 64 << 10,
	MaxExcerptBytes: 4 << 10, MaxReportBytes: 256 << 10, MaxXMLBytes: 1 << 20, MaxRecords: 100, MaxRecipients: 20}

// hangBound is far above any real input's time; it only catches a loop
// that does not end.
const hangBound = 20 * time.Second

// seedFiles adds corpus files to a fuzz target's seeds (none when the
// corpus is absent: the hand-written seeds remain).
func seedFiles(f *testing.F, dir, glob string, max int) {
	paths, _ := filepath.Glob(filepath.Join(dir, glob))
	for i, p := range paths {
		if i >= max {
			break
		}
		if b, err := os.ReadFile(p); err == nil && len(b) < 256<<10 {
			f.Add(b)
		}
	}
}

func corpusRoot() string { return filepath.Join("..", "..", "shared", "corpora") }

// checkBounded asserts the bounds of fuzzOptions on a result.
func checkBounded(t *testing.T, res *Result) {
	t.Helper()
	checkInvariants(t, "fuzz", res)
	if len(res.Recipients) > fuzzOptions.MaxRecipients {
		t.Errorf("%d recipients", len(res.Recipients))
	}
	if o := res.Original; o != nil && len(o.Excerpt) > fuzzOptions.MaxExcerptBytes {
		t.Errorf("excerpt of %d bytes", len(o.Excerpt))
	}
	if res.DMARC != nil && len(res.DMARC.Records) > fuzzOptions.MaxRecords {
		t.Errorf("%d records", len(res.DMARC.Records))
	}
}

func classifyBounded(t *testing.T, in []byte) *Result {
	t.Helper()
	start := time.Now()
	res, err := fuzzOptions.Classify(bytes.NewReader(in), Envelope{Rcpt: []string{"b+t@b.example"}})
	if err != nil {
		t.Fatalf("error on in-memory input: %v", err)
	}
	if d := time.Since(start); d > hangBound {
		t.Fatalf("took %v", d)
	}
	checkBounded(t, res)
	return res
}

// FuzzClassify feeds whole messages: real bounces and reports, and what
// the fuzzer makes of them.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{dsnUserUnknown, dsnMixed, qmailBounce, eximBounce, arfAbuse, vacation, noRecipient} {
		f.Add([]byte(msg(s)))
	}
	seedFiles(f, filepath.Join(corpusRoot(), "bounces", "sisimai-set-of-emails", "maildir", "bsd"), "*.eml", 1000)
	f.Fuzz(func(t *testing.T, in []byte) {
		res := classifyBounded(t, in)
		// The same bytes with other line ends say the same.
		cr := classifyBounded(t, bytes.ReplaceAll(bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n")))
		if !bytes.Contains(in, []byte("\r")) && cr.Kind != res.Kind {
			t.Errorf("LF gives %s, CRLF gives %s", res.Kind, cr.Kind)
		}
	})
}

// FuzzDSN feeds delivery-status part bodies inside a multipart/report.
func FuzzDSN(f *testing.F) {
	f.Add([]byte("Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"))
	f.Add([]byte("Final-Recipient: rfc822; a@b.example\nAction: delayed\nStatus: 4.4.7\nFinal-Recipient: rfc822; c@d.example\nAction: failed\nStatus: 5.2.2\n"))
	f.Add([]byte("Original-Recipient: rfc822;x@y.example\nFinal-Recipient: rfc822;x@y.example\nAction: failed\nStatus: 5.0.0\nRemote-MTA: dns; [192.0.2.1]\nDiagnostic-Code: X-Unix; 255\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		d := parseDSN(body, fuzzOptions.MaxRecipients)
		if len(d.recipients) > fuzzOptions.MaxRecipients {
			t.Fatalf("%d recipients", len(d.recipients))
		}
		m := "From: MAILER-DAEMON@mx.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: message/delivery-status\r\n\r\n" +
			string(body) + "\r\n--zz--\r\n"
		res := classifyBounded(t, []byte(m))
		if len(d.recipients) > 0 && !bytes.Contains(body, []byte("--zz")) {
			for _, r := range res.Recipients {
				if !statusForm.MatchString(r.Status) {
					t.Errorf("status %q", r.Status)
				}
			}
		}
	})
}

// FuzzARF feeds feedback-report part bodies.
func FuzzARF(f *testing.F) {
	f.Add([]byte("Feedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\nOriginal-Rcpt-To: a@b.example\nSource-IP: 192.0.2.1\n"))
	f.Add([]byte("Feedback-Type: auth-failure\nAuth-Failure: dmarc\nReported-Domain: x.example\n"))
	seedFiles(f, filepath.Join(corpusRoot(), "bounces", "sisimai-set-of-emails", "maildir", "bsd"), "arf-*.eml", 50)
	f.Fuzz(func(t *testing.T, body []byte) {
		if fb := parseFeedback(body); fb != nil && fb.FeedbackType == "" && !strings.Contains(strings.ToLower(string(body)), "feedback-type") {
			t.Fatalf("feedback without a Feedback-Type field: %+v", fb)
		}
		m := "From: fbl@isp.example\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: message/feedback-report\r\n\r\n" +
			string(body) + "\r\n--zz--\r\n"
		res := classifyBounded(t, []byte(m))
		if res.Kind != KindComplaint && res.Kind != KindDMARCFailure && res.Kind != KindResponse {
			t.Errorf("a feedback report read as %s", res.Kind)
		}
		classifyBounded(t, body) // the bytes as a whole message, too
	})
}

// FuzzDMARC feeds report attachments: XML, gzip, zip.
func FuzzDMARC(f *testing.F) {
	f.Add([]byte(dmarcXML))
	f.Add(gz([]byte(dmarcXML)))
	f.Add(zipped("r.xml", []byte(dmarcXML)))
	f.Add([]byte(`<?xml version="1.0" encoding="windows-1252"?><feedback><report_metadata/><policy_published/></feedback>`))
	dir := filepath.Join(corpusRoot(), "dmarc", "parsedmarc", "samples")
	for _, g := range []string{"aggregate/*.xml", "aggregate/*.gz", "aggregate/*.zip", "extract_report/*", "smtp_tls/*.json"} {
		seedFiles(f, dir, g, 50)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		rep, err := ParseAggregate(bytes.NewReader(data), fuzzOptions.MaxRecords)
		var re *reportError
		switch {
		case err != nil && !errors.As(err, &re):
			t.Fatalf("error without a reason code: %v", err)
		case err != nil && re.code == "":
			t.Fatalf("empty reason code: %v", err)
		case err == nil && len(rep.Records) > fuzzOptions.MaxRecords:
			t.Fatalf("%d records", len(rep.Records))
		}
		if _, _, err := openReport(data, fuzzOptions.MaxXMLBytes); err != nil && !errors.As(err, &re) {
			t.Fatalf("archive error without a reason code: %v", err)
		}
		if d := time.Since(start); d > hangBound {
			t.Fatalf("took %v", d)
		}
		for _, name := range []string{"r.xml", "r.xml.gz", "r.zip"} {
			res := classifyBounded(t, []byte(attach("application/octet-stream", name, data)))
			if res.Kind != KindDMARC && res.Kind != KindTLSReport && res.Kind != KindResponse {
				t.Errorf("%s: a report attachment read as %s", name, res.Kind)
			}
		}
	})
}
