package inbound

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/transform"
)

// AggregateReport is a DMARC aggregate report (RFC 7489 appendix C; the
// RFC 9990 format too: the element names are the same).
type AggregateReport struct {
	OrgName          string
	Email            string
	ExtraContactInfo string `json:",omitempty"`
	ReportID         string
	Begin, End       time.Time
	Errors           []string `json:",omitempty"`
	Policy           PolicyPublished
	Records          []AggregateRecord
	// Source is how the report came: "xml", "gzip" or "zip".
	Source string
}

// PolicyPublished is the policy the report's reporter found in DNS.
type PolicyPublished struct {
	Domain, ADKIM, ASPF, P, SP, NP, FO, Testing string
	Pct                                         int
}

// AggregateRecord is one row: a source IP and what happened to its mail.
type AggregateRecord struct {
	SourceIP    string
	Count       int64
	Disposition string
	// DKIM and SPF are the policy-evaluated (aligned) results.
	DKIM, SPF    string
	Reasons      []PolicyReason `json:",omitempty"`
	HeaderFrom   string
	EnvelopeFrom string `json:",omitempty"`
	EnvelopeTo   string `json:",omitempty"`
	DKIMResults  []AuthResult
	SPFResults   []AuthResult
}

// PolicyReason is a reason the reporter overrode the policy.
type PolicyReason struct {
	Type, Comment string
}

// AuthResult is one raw DKIM or SPF result of a record.
type AuthResult struct {
	Domain   string
	Selector string `json:",omitempty"` // DKIM
	Scope    string `json:",omitempty"` // SPF: mfrom or helo
	Result   string
}

// reportCandidate reports whether a part may hold a DMARC or TLS report.
func reportCandidate(e *entity) bool {
	switch e.mediaType {
	case "application/zip", "application/x-zip-compressed", "application/x-zip", "application/gzip",
		"application/x-gzip", "application/xml", "text/xml", "application/tlsrpt+json", "application/tlsrpt+gzip",
		"application/x-gzip-compressed", "application/gzip-compressed":
		return true
	}
	n := e.filename
	for _, suf := range []string{".xml", ".xml.gz", ".xml.zip", ".zip", ".gz", ".json", ".json.gz"} {
		if strings.HasSuffix(n, suf) {
			return true
		}
	}
	return false
}

// inlineReport moves a report written straight into a text body (XML or
// TLS JSON) into the candidates.
func (m *msgView) inlineReport() bool {
	for _, e := range m.texts {
		b := bytes.TrimSpace(e.body)
		b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
		if bytes.HasPrefix(b, []byte("<?xml")) || bytes.HasPrefix(b, []byte("<feedback")) {
			m.reports = append(m.reports, e)
			return true
		}
		if bytes.HasPrefix(b, []byte("{")) && bytes.Contains(b, []byte(`"organization-name"`)) {
			m.reports = append(m.reports, e)
			return true
		}
	}
	return false
}

// reportish reports whether a message with a report candidate is meant
// as a report, and not a person's mail with an archive attached: the
// subject or sender say so (RFC 7489 and RFC 8460 subjects, "dmarc" or
// "tls" reporters), the file is named the RFC 7489 way
// (receiver!domain!begin!end), or the candidate holds XML or JSON.
func (m *msgView) reportish() bool {
	subj := lowerASCII(m.res.Subject)
	from := lowerASCII(m.t.header.Get("From"))
	for _, w := range []string{"report domain", "report-id", "dmarc", "tls report", "tls-report", "tlsrpt", "aggregate report"} {
		if strings.Contains(subj, w) || strings.Contains(from, w) {
			return true
		}
	}
	for _, e := range m.reports {
		if strings.Count(e.filename, "!") >= 2 || strings.HasPrefix(e.mediaType, "application/tlsrpt") {
			return true
		}
		data, _, _ := openReportPrefix(e.body, 4<<10)
		b := bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(data), []byte("\xef\xbb\xbf")))
		if bytes.HasPrefix(b, []byte("<")) || bytes.HasPrefix(b, []byte("{")) || len(b) == 0 {
			return true
		}
	}
	return false
}

// reportError is why a report could not be read: a code for
// Response.Reason and the detail.
type reportError struct {
	code string
	err  error
}

func (e *reportError) Error() string { return e.code + ": " + e.err.Error() }

// report reads the first report candidate that parses; when none does,
// the message is an unparsed response with the first candidate's error.
func (m *msgView) report() bool {
	var first *reportError
	for _, e := range m.reports {
		data, source, err := openReport(e.body, m.o.MaxXMLBytes)
		if err == nil {
			if isTLSReport(e, data) {
				tr, err2 := parseTLSReport(data, m.o.MaxRecords)
				if err2 == nil {
					m.res.Kind = KindTLSReport
					m.res.TLS = tr
					return true
				}
				err = &reportError{UnparsedTLSReport, err2}
			} else {
				rep, err2 := ParseAggregate(bytes.NewReader(data), m.o.MaxRecords)
				if err2 == nil {
					rep.Source = source
					m.res.Kind = KindDMARC
					m.res.DMARC = rep
					if len(rep.Records) >= m.o.MaxRecords {
						m.res.Limits = append(m.res.Limits, "records")
					}
					return true
				}
				err = err2
			}
		}
		var re *reportError
		if !errors.As(err, &re) {
			re = &reportError{UnparsedReportXML, err}
		}
		if first == nil {
			first = re
		}
	}
	if first == nil {
		return false
	}
	m.unparsed(first.code, first.err.Error())
	return true
}

// openReport undoes a report's compression (gzip or zip, told by their
// magic numbers, not by names or types, which senders get wrong), bounded
// at max bytes decompressed.
func openReport(b []byte, max int64) (data []byte, source string, err error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, "", &reportError{UnparsedReportEmpty, errors.New("the report is empty")}
	}
	var r io.Reader
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, "", &reportError{UnparsedReportArchive, fmt.Errorf("gzip: %w", err)}
		}
		r, source = zr, "gzip"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, "", &reportError{UnparsedReportArchive, fmt.Errorf("zip: %w", err)}
		}
		var pick *zip.File
		for _, f := range zr.File {
			if f.FileInfo().IsDir() {
				continue
			}
			n := lowerASCII(f.Name)
			if pick == nil || strings.HasSuffix(n, ".xml") || strings.HasSuffix(n, ".json") {
				pick = f
				if strings.HasSuffix(n, ".xml") || strings.HasSuffix(n, ".json") {
					break
				}
			}
		}
		if pick == nil {
			return nil, "", &reportError{UnparsedReportArchive, errors.New("zip: no file in the archive")}
		}
		if pick.UncompressedSize64 > uint64(max) {
			return nil, "", &reportError{UnparsedReportTooLarge, fmt.Errorf("zip: %s is %d bytes, over the %d-byte bound", pick.Name, pick.UncompressedSize64, max)}
		}
		fr, err := pick.Open()
		if err != nil {
			return nil, "", &reportError{UnparsedReportArchive, fmt.Errorf("zip: %w", err)}
		}
		defer fr.Close()
		r, source = fr, "zip"
	default:
		return b, "xml", nil
	}
	out, err := io.ReadAll(io.LimitReader(r, max+1))
	if int64(len(out)) > max {
		return nil, "", &reportError{UnparsedReportTooLarge, fmt.Errorf("%s: decompresses to more than %d bytes", source, max)}
	}
	if err != nil && len(out) == 0 {
		return nil, "", &reportError{UnparsedReportArchive, fmt.Errorf("%s: %w", source, err)}
	}
	// A truncated archive keeps what decompressed: the XML parser says
	// whether that is a whole report.
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, "", &reportError{UnparsedReportEmpty, fmt.Errorf("%s: the archive holds an empty file", source)}
	}
	return out, source, nil
}

// openReportPrefix is openReport that keeps the first max bytes of a
// larger report instead of refusing it.
func openReportPrefix(b []byte, max int64) ([]byte, string, error) {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, "", err
		}
		out, _ := io.ReadAll(io.LimitReader(zr, max))
		return out, "gzip", nil
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil || len(zr.File) == 0 {
			return nil, "", err
		}
		f, err := zr.File[0].Open()
		if err != nil {
			return nil, "", err
		}
		defer f.Close()
		out, _ := io.ReadAll(io.LimitReader(f, max))
		return out, "zip", nil
	}
	if int64(len(b)) > max {
		b = b[:max]
	}
	return b, "xml", nil
}

// xml shapes of the report's parts; names match any namespace.
type xmlMetadata struct {
	OrgName   string `xml:"org_name"`
	Email     string `xml:"email"`
	Extra     string `xml:"extra_contact_info"`
	ReportID  string `xml:"report_id"`
	DateRange struct {
		Begin string `xml:"begin"`
		End   string `xml:"end"`
	} `xml:"date_range"`
	Errors []string `xml:"error"`
}

type xmlPolicy struct {
	Domain  string `xml:"domain"`
	ADKIM   string `xml:"adkim"`
	ASPF    string `xml:"aspf"`
	P       string `xml:"p"`
	SP      string `xml:"sp"`
	NP      string `xml:"np"`
	Pct     string `xml:"pct"`
	FO      string `xml:"fo"`
	Testing string `xml:"testing"`
}

type xmlRecord struct {
	Row struct {
		SourceIP string `xml:"source_ip"`
		Count    string `xml:"count"`
		Policy   struct {
			Disposition string `xml:"disposition"`
			DKIM        string `xml:"dkim"`
			SPF         string `xml:"spf"`
			Reasons     []struct {
				Type    string `xml:"type"`
				Comment string `xml:"comment"`
			} `xml:"reason"`
		} `xml:"policy_evaluated"`
	} `xml:"row"`
	Identifiers struct {
		HeaderFrom   string `xml:"header_from"`
		EnvelopeFrom string `xml:"envelope_from"`
		EnvelopeTo   string `xml:"envelope_to"`
	} `xml:"identifiers"`
	Auth struct {
		DKIM []struct {
			Domain   string `xml:"domain"`
			Selector string `xml:"selector"`
			Result   string `xml:"result"`
		} `xml:"dkim"`
		SPF []struct {
			Domain string `xml:"domain"`
			Scope  string `xml:"scope"`
			Result string `xml:"result"`
		} `xml:"spf"`
	} `xml:"auth_results"`
}

// ParseAggregate reads a DMARC aggregate report's XML as it streams,
// keeping at most maxRecords rows (0: no bound). The error says what is
// wrong: not XML, not UTF-8 (or the declared charset), not a report, or
// a report without its report_metadata or policy_published.
func ParseAggregate(r io.Reader, maxRecords int) (*AggregateReport, error) {
	br := &utf8Check{r: r}
	d := xml.NewDecoder(br)
	d.Strict = true
	d.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		e := lookupEncoding(label)
		if e == nil {
			if l := lowerASCII(label); l == "utf-8" || l == "utf8" || l == "us-ascii" || l == "ascii" {
				return in, nil
			}
			return nil, fmt.Errorf("unknown charset %q", label)
		}
		br.off = true
		return transform.NewReader(in, e.NewDecoder()), nil
	}
	rep := &AggregateReport{}
	depth := 0
	fbDepth := 0 // the depth of <feedback>: 1, or 2 inside a wrapper (IKEA's <xs:schema>)
	var sawRoot, sawMeta, sawPolicy bool
tokens:
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			if br.bad {
				return nil, &reportError{UnparsedReportUTF8, errors.New("the report is not valid UTF-8")}
			}
			if !sawRoot && err == io.ErrUnexpectedEOF {
				return nil, &reportError{UnparsedReportEmpty, errors.New("the report is empty")}
			}
			return nil, &reportError{UnparsedReportXML, fmt.Errorf("xml: %w", err)}
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if fbDepth == 0 {
				if t.Name.Local == "feedback" && depth <= 2 {
					fbDepth = depth
					sawRoot = true
					continue
				}
				if depth >= 2 {
					return nil, &reportError{UnparsedReportNotDMARC, fmt.Errorf("no <feedback> element at the top (found <%s>)", t.Name.Local)}
				}
				continue
			}
			if depth != fbDepth+1 {
				continue
			}
			var derr error
			switch t.Name.Local {
			case "report_metadata":
				var x xmlMetadata
				derr = d.DecodeElement(&x, &t)
				rep.OrgName, rep.Email, rep.ExtraContactInfo = trim(x.OrgName), trim(x.Email), trim(x.Extra)
				rep.ReportID = trim(x.ReportID)
				rep.Begin, rep.End = unixTime(x.DateRange.Begin), unixTime(x.DateRange.End)
				for _, e := range x.Errors {
					if e = trim(e); e != "" {
						rep.Errors = append(rep.Errors, e)
					}
				}
				sawMeta = true
			case "policy_published":
				var x xmlPolicy
				derr = d.DecodeElement(&x, &t)
				rep.Policy = PolicyPublished{
					Domain: lowerASCII(trim(x.Domain)), ADKIM: lower(x.ADKIM), ASPF: lower(x.ASPF),
					P: lower(x.P), SP: lower(x.SP), NP: lower(x.NP), FO: trim(x.FO), Testing: lower(x.Testing),
				}
				rep.Policy.Pct, _ = strconv.Atoi(trim(x.Pct))
				sawPolicy = true
			case "record":
				if maxRecords > 0 && len(rep.Records) >= maxRecords {
					derr = d.Skip()
					break
				}
				var x xmlRecord
				derr = d.DecodeElement(&x, &t)
				rep.Records = append(rep.Records, recordOf(&x))
			default:
				derr = d.Skip()
			}
			depth--
			if derr != nil {
				if br.bad {
					return nil, &reportError{UnparsedReportUTF8, errors.New("the report is not valid UTF-8")}
				}
				return nil, &reportError{UnparsedReportXML, fmt.Errorf("xml: <%s>: %w", t.Name.Local, derr)}
			}
		case xml.EndElement:
			depth--
			if fbDepth > 0 && depth < fbDepth {
				// The report ended: what a wrapper holds after it (IKEA
				// never closes its <xs:schema>) is not read.
				break tokens
			}
		}
	}
	if br.bad {
		return nil, &reportError{UnparsedReportUTF8, errors.New("the report is not valid UTF-8")}
	}
	if !sawRoot {
		if br.n == 0 || br.onlySpace {
			return nil, &reportError{UnparsedReportEmpty, errors.New("the report is empty")}
		}
		return nil, &reportError{UnparsedReportXML, errors.New("xml: no root element")}
	}
	if !sawMeta || !sawPolicy {
		return nil, &reportError{UnparsedReportNotDMARC, errors.New("<feedback> without report_metadata or policy_published")}
	}
	return rep, nil
}

func recordOf(x *xmlRecord) AggregateRecord {
	rec := AggregateRecord{
		SourceIP:     trim(x.Row.SourceIP),
		Disposition:  lower(x.Row.Policy.Disposition),
		DKIM:         lower(x.Row.Policy.DKIM),
		SPF:          lower(x.Row.Policy.SPF),
		HeaderFrom:   lowerASCII(trim(x.Identifiers.HeaderFrom)),
		EnvelopeFrom: lowerASCII(trim(x.Identifiers.EnvelopeFrom)),
		EnvelopeTo:   lowerASCII(trim(x.Identifiers.EnvelopeTo)),
	}
	rec.Count, _ = strconv.ParseInt(trim(x.Row.Count), 10, 64)
	for _, r := range x.Row.Policy.Reasons {
		if t := lower(r.Type); t != "" || trim(r.Comment) != "" {
			rec.Reasons = append(rec.Reasons, PolicyReason{Type: t, Comment: trim(r.Comment)})
		}
	}
	for _, a := range x.Auth.DKIM {
		rec.DKIMResults = append(rec.DKIMResults, AuthResult{Domain: lowerASCII(trim(a.Domain)), Selector: trim(a.Selector), Result: lower(a.Result)})
	}
	for _, a := range x.Auth.SPF {
		rec.SPFResults = append(rec.SPFResults, AuthResult{Domain: lowerASCII(trim(a.Domain)), Scope: lower(a.Scope), Result: lower(a.Result)})
	}
	return rec
}

func trim(s string) string  { return strings.TrimSpace(s) }
func lower(s string) string { return lowerASCII(strings.TrimSpace(s)) }

func unixTime(s string) time.Time {
	n, err := strconv.ParseInt(trim(s), 10, 64)
	if err != nil || n < 0 {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

// utf8Check passes bytes through and notes whether they are valid UTF-8
// (encoding/xml's own message for bad UTF-8 is a generic syntax error).
// off is set once a declared charset takes over the decoding.
type utf8Check struct {
	r         io.Reader
	tail      []byte
	bad, off  bool
	n         int64
	onlySpace bool
	seen      bool
}

func (u *utf8Check) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if n > 0 {
		if !u.seen {
			u.seen, u.onlySpace = true, true
		}
		if u.onlySpace && len(bytes.TrimSpace(p[:n])) > 0 {
			u.onlySpace = false
		}
		u.n += int64(n)
		if !u.off && !u.bad {
			b := append(u.tail, p[:n]...)
			// Keep an incomplete rune at the end for the next read.
			cut := len(b)
			for i := 1; i <= 3 && i <= len(b); i++ {
				if utf8.RuneStart(b[len(b)-i]) {
					if !utf8.FullRune(b[len(b)-i:]) {
						cut = len(b) - i
					}
					break
				}
			}
			if !utf8.Valid(b[:cut]) {
				u.bad = true
			}
			u.tail = append(u.tail[:0], b[cut:]...)
		}
	}
	if err == io.EOF && len(u.tail) > 0 && !u.off {
		u.bad = true
	}
	return n, err
}

// TLSReport is an SMTP TLS report (RFC 8460).
type TLSReport struct {
	OrganizationName string
	ContactInfo      string
	ReportID         string
	Begin, End       time.Time
	Policies         []TLSPolicy
}

// TLSPolicy is one policy's summary in a TLS report.
type TLSPolicy struct {
	Type, Domain            string
	SuccessCount, FailCount int64
	Failures                []TLSFailure `json:",omitempty"`
}

// TLSFailure is one failure detail of a TLS report.
type TLSFailure struct {
	ResultType, SendingMTAIP, ReceivingMXHostname string
	Count                                         int64
}

func isTLSReport(e *entity, data []byte) bool {
	if strings.HasPrefix(e.mediaType, "application/tlsrpt") {
		return true
	}
	b := bytes.TrimSpace(data)
	return bytes.HasPrefix(b, []byte("{")) && bytes.Contains(b, []byte(`"organization-name"`))
}

// parseTLSReport reads an RFC 8460 JSON report.
func parseTLSReport(data []byte, maxPolicies int) (*TLSReport, error) {
	var x struct {
		Org       string `json:"organization-name"`
		Contact   string `json:"contact-info"`
		ReportID  string `json:"report-id"`
		DateRange struct {
			Start string `json:"start-datetime"`
			End   string `json:"end-datetime"`
		} `json:"date-range"`
		Policies []struct {
			Policy struct {
				Type   string `json:"policy-type"`
				Domain string `json:"policy-domain"`
			} `json:"policy"`
			Summary struct {
				Success int64 `json:"total-successful-session-count"`
				Failure int64 `json:"total-failure-session-count"`
			} `json:"summary"`
			Failures []struct {
				ResultType string `json:"result-type"`
				SendingIP  string `json:"sending-mta-ip"`
				MX         string `json:"receiving-mx-hostname"`
				Count      int64  `json:"failed-session-count"`
			} `json:"failure-details"`
		} `json:"policies"`
	}
	if err := json.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	if x.Org == "" && x.ReportID == "" {
		return nil, errors.New("json: no organization-name or report-id")
	}
	tr := &TLSReport{OrganizationName: x.Org, ContactInfo: x.Contact, ReportID: x.ReportID}
	tr.Begin, _ = time.Parse(time.RFC3339, x.DateRange.Start)
	tr.End, _ = time.Parse(time.RFC3339, x.DateRange.End)
	for i, p := range x.Policies {
		if maxPolicies > 0 && i >= maxPolicies {
			break
		}
		tp := TLSPolicy{Type: p.Policy.Type, Domain: lowerASCII(p.Policy.Domain), SuccessCount: p.Summary.Success, FailCount: p.Summary.Failure}
		for _, f := range p.Failures {
			tp.Failures = append(tp.Failures, TLSFailure{ResultType: f.ResultType, SendingMTAIP: f.SendingIP, ReceivingMXHostname: f.MX, Count: f.Count})
		}
		tr.Policies = append(tr.Policies, tp)
	}
	return tr, nil
}
