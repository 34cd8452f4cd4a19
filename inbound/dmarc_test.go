package inbound

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dmarcCorpus returns parsedmarc's samples folder, or skips.
func dmarcCorpus(t testing.TB) string {
	dir := filepath.Join("..", "..", "shared", "corpora", "dmarc", "parsedmarc", "samples")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("DMARC corpus absent (%v): it sits in ../shared beside the checkout", err)
	}
	return dir
}

// wrapReport makes the mail a reporter sends: the file as a base64
// attachment of a multipart/mixed message, typed by its name the way
// Google, Microsoft and Yahoo type theirs.
func wrapReport(name string, data []byte) []byte {
	ctype := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".xml.gz"), strings.HasSuffix(name, ".gz"):
		ctype = "application/gzip"
	case strings.HasSuffix(name, ".zip"):
		ctype = "application/zip"
	case strings.HasSuffix(name, ".xml"):
		ctype = "text/xml"
	case strings.HasSuffix(name, ".json"):
		ctype = "application/tlsrpt+json"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: noreply-dmarc-support@reporter.example\r\nTo: dmarc@bounces.localhost\r\nSubject: Report domain: example.com Submitter: reporter.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate report.\r\n--b1\r\nContent-Type: %s; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", ctype, name, name)
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--b1--\r\n")
	return b.Bytes()
}

// countRecords counts <record> elements under <feedback> with a plain
// streaming decoder, an oracle independent of ParseAggregate.
func countRecords(t testing.TB, name string, data []byte) int {
	t.Helper()
	var r io.Reader = bytes.NewReader(data)
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r = zr
	case bytes.HasPrefix(data, []byte("PK")):
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		f, err := zr.File[0].Open()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer f.Close()
		r = f
	}
	d := xml.NewDecoder(r)
	n := 0
	var stack []string
	for {
		tok, err := d.Token()
		if err != nil {
			return n
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if e.Name.Local == "record" && len(stack) > 0 && stack[len(stack)-1] == "feedback" {
				n++
			}
			stack = append(stack, e.Name.Local)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
}

// TestDMARCByHand checks reports field by field against their XML, read
// by a person.
func TestDMARCByHand(t *testing.T) {
	dir := dmarcCorpus(t)
	unix := func(n int64) time.Time { return time.Unix(n, 0).UTC() }
	tests := []struct {
		file    string
		want    AggregateReport
		records []AggregateRecord
	}{
		{
			file: "aggregate/rfc9990-example.net!example.com!1700000000!1700086399.xml",
			want: AggregateReport{OrgName: "example.net", Email: "postmaster@example.net", ReportID: "dmarcbis-test-report-001", Begin: unix(1700000000), End: unix(1700086399),
				Policy: PolicyPublished{Domain: "example.com", ADKIM: "s", ASPF: "s", P: "reject", SP: "quarantine", NP: "reject", FO: "1", Testing: "y"}},
			records: []AggregateRecord{
				{SourceIP: "198.51.100.1", Count: 5, Disposition: "none", DKIM: "pass", SPF: "pass", HeaderFrom: "example.com", EnvelopeFrom: "example.com",
					DKIMResults: []AuthResult{{Domain: "example.com", Selector: "selector1", Result: "pass"}},
					SPFResults:  []AuthResult{{Domain: "example.com", Scope: "mfrom", Result: "pass"}}},
				{SourceIP: "203.0.113.10", Count: 2, Disposition: "reject", DKIM: "fail", SPF: "fail", HeaderFrom: "example.com", EnvelopeFrom: "spoofed.example.com",
					Reasons:    []PolicyReason{{Type: "other", Comment: "sender not authorized"}},
					SPFResults: []AuthResult{{Domain: "spoofed.example.com", Scope: "mfrom", Result: "fail"}}},
			},
		},
		{
			file: "aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz",
			want: AggregateReport{OrgName: "FastMail Pty Ltd", Email: "reports@fastmaildmarc.com", ExtraContactInfo: "https://fastmail.com/", ReportID: "102675056",
				Begin: unix(1516060800), End: unix(1516147199), Policy: PolicyPublished{Domain: "indemed.com", P: "none", SP: "none", Pct: 100, FO: "0"}, Source: "gzip"},
			records: []AggregateRecord{
				{SourceIP: "104.195.80.20", Count: 1, Disposition: "none", DKIM: "fail", SPF: "fail", HeaderFrom: "example.com", EnvelopeFrom: "example.com", EnvelopeTo: "fastmail.fm",
					SPFResults: []AuthResult{{Domain: "example.com", Scope: "mfrom", Result: "softfail"}}},
			},
		},
		{
			file: "aggregate/usssa.com!example.com!1538784000!1538870399.xml",
			want: AggregateReport{OrgName: "usssa.com", Email: "postmaster@usssa.com", ReportID: "8953b4d4a4ee4218b6ac0e2cb2667ee1", Begin: unix(1538784000), End: unix(1538870399),
				Policy: PolicyPublished{Domain: "example.com", ADKIM: "r", ASPF: "r", P: "none", SP: "none", Pct: 100, FO: "0"}},
			records: []AggregateRecord{
				{SourceIP: "12.20.127.40", Count: 1, Disposition: "none", DKIM: "fail", SPF: "fail", HeaderFrom: "example.com"},
				{SourceIP: "199.230.200.36", Count: 1, Disposition: "none", DKIM: "fail", SPF: "fail", HeaderFrom: "example.com"},
			},
		},
		{
			// <feedback> inside an <xs:schema> that is never closed.
			file: "aggregate/ikea.com!example.de!1538690400!1538776800.xml",
			want: AggregateReport{OrgName: "ikea.com", Email: "double-bounce@ikea.com", ReportID: "aggr_report_2018_10_05_5bc7e9b4f3e8a", Begin: unix(1538690400), End: unix(1538776800),
				Policy: PolicyPublished{Domain: "example.de", ADKIM: "r", ASPF: "r", P: "none", SP: "none", Pct: 100, FO: "0"}},
		},
		{
			// Upper-cased results are read lowercased.
			file: "aggregate_invalid/report_with_upper_cased_pass.xml",
			want: AggregateReport{OrgName: "example.com", Email: "postmaster@example.com", ReportID: "aggr_report_example.com_20191202_1638", Begin: unix(1574955300), End: unix(1575304683),
				Policy: PolicyPublished{Domain: "example.com", ADKIM: "r", ASPF: "r", P: "reject", Pct: 100}},
			records: []AggregateRecord{
				{SourceIP: "23.104.41.189", Count: 1, Disposition: "none", DKIM: "pass", SPF: "pass", HeaderFrom: "example.com",
					DKIMResults: []AuthResult{{Domain: "example.com", Result: "pass"}},
					SPFResults:  []AuthResult{{Domain: "example.com", Result: "pass"}}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			for name, wrap := range readers {
				res, err := Classify(wrap(bytes.NewReader(wrapReport(filepath.Base(tc.file), data))), Envelope{Rcpt: []string{"dmarc@bounces.localhost"}})
				if err != nil || res.Kind != KindDMARC {
					t.Fatalf("%s: kind %s, err %v, response %+v", name, res.Kind, err, res.Response)
				}
				got := *res.DMARC
				recs := got.Records
				got.Records = nil
				want := tc.want
				if want.Source == "" {
					want.Source = "xml"
				}
				if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
					t.Errorf("%s: report\n got %+v\nwant %+v", name, got, want)
				}
				if tc.records != nil && fmt.Sprintf("%+v", recs) != fmt.Sprintf("%+v", tc.records) {
					t.Errorf("%s: records\n got %+v\nwant %+v", name, recs, tc.records)
				}
			}
		})
	}
}

// TestDMARCCorpus reads every sample: each valid aggregate report with as
// many rows as an independent count of its <record> elements, each
// invalid one as a response with its reason, failure reports as their
// own kind, TLS reports as TLS reports.
func TestDMARCCorpus(t *testing.T) {
	dir := dmarcCorpus(t)
	invalid := map[string]string{
		"aggregate/invalid_utf_8.xml": UnparsedReportUTF8,
		"aggregate/invalid_xml.xml":   UnparsedReportXML,
		"empty.xml":                   UnparsedReportEmpty,
	}
	counts := map[Kind]int{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		msg := data
		if !strings.HasSuffix(p, ".eml") {
			msg = wrapReport(filepath.Base(p), data)
		}
		res, err := Classify(bytes.NewReader(msg), Envelope{Rcpt: []string{"dmarc@bounces.localhost"}})
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		counts[res.Kind]++
		switch {
		case invalid[rel] != "":
			if res.Kind != KindResponse || res.Response.Kind != ResponseUnparsed || res.Response.Reason != invalid[rel] || res.Response.Detail == "" {
				t.Errorf("%s: got %s %+v, want an unparsed response with reason %s", rel, res.Kind, res.Response, invalid[rel])
			}
		case strings.HasPrefix(rel, "failure/"):
			if res.Kind != KindDMARCFailure || res.Feedback.SourceIP == "" {
				t.Errorf("%s: got %s %+v, want a DMARC failure report with its source IP", rel, res.Kind, res.Feedback)
			}
		case strings.HasPrefix(rel, "smtp_tls/"):
			if res.Kind != KindTLSReport || res.TLS.OrganizationName == "" || len(res.TLS.Policies) == 0 {
				t.Errorf("%s: got %s %+v, want a TLS report", rel, res.Kind, res.TLS)
			}
		case strings.HasSuffix(rel, ".eml"):
			if res.Kind != KindDMARC || len(res.DMARC.Records) == 0 {
				t.Errorf("%s: got %s %+v", rel, res.Kind, res.Response)
			}
		default:
			if res.Kind != KindDMARC {
				t.Errorf("%s: got %s %+v, want a DMARC report", rel, res.Kind, res.Response)
				return nil
			}
			if want := countRecords(t, rel, data); len(res.DMARC.Records) != want || want == 0 {
				t.Errorf("%s: %d rows, want %d", rel, len(res.DMARC.Records), want)
			}
			rep := res.DMARC
			if rep.ReportID == "" || rep.Policy.Domain == "" || rep.Begin.IsZero() || rep.End.Before(rep.Begin) {
				t.Errorf("%s: metadata incomplete: %+v", rel, rep)
			}
			for i, r := range rep.Records {
				if r.SourceIP == "" || r.Count <= 0 || r.Disposition == "" || r.HeaderFrom == "" {
					t.Errorf("%s: row %d incomplete: %+v", rel, i, r)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kinds: %v", counts)
}
