package inbound

import (
	"bytes"
	"strconv"
	"strings"
)

// Feedback is an ARF feedback report (RFC 5965): a complaint, or with
// FeedbackType "auth-failure" a DMARC failure report (RFC 6591, RFC 7489
// section 7.3).
type Feedback struct {
	// FeedbackType is abuse, fraud, virus, other, not-spam, opt-out or
	// auth-failure, lowercase.
	FeedbackType string
	UserAgent    string
	Version      string
	// Reporter names who sent it: Reporting-MTA's host, else the
	// User-Agent, else the domain of the report's From.
	Reporter         string
	ReportingMTA     string
	SourceIP         string
	OriginalMailFrom string
	OriginalRcptTo   []string
	// Recipient is the complaining address: Original-Rcpt-To, else the
	// To of the returned message (providers often redact it).
	Recipient      string
	ArrivalDate    string
	Incidents      int
	ReportedDomain []string
	ReportedURI    []string
	// Authentication failure fields (RFC 6591).
	AuthFailure       string `json:",omitempty"`
	DeliveryResult    string `json:",omitempty"`
	DKIMDomain        string `json:",omitempty"`
	DKIMSelector      string `json:",omitempty"`
	DKIMIdentity      string `json:",omitempty"`
	SPFDNS            string `json:",omitempty"`
	IdentityAlignment string `json:",omitempty"`
	AuthResults       []string
	// Fields are every field of the report part as written.
	Fields []HeaderField
}

// parseFeedback reads the fields of a feedback-report part.
func parseFeedback(body []byte) *Feedback {
	// The part is one block of fields; some reporters put blank lines or
	// stray text between fields, so blocks are read until the end.
	lr := newLineReader(bytes.NewReader(body))
	var fields header
	for len(fields) <= maxHeaderFields {
		h := readHeader(lr)
		fields = append(fields, h...)
		if len(h) == 0 {
			// readHeader left a line that is not a field: skip it.
			if _, ok := lr.next(); !ok {
				break
			}
		}
		if lr.eof && !lr.hasBack {
			break
		}
	}
	if firstField(fields.Get("Feedback-Type")) == "" {
		return nil
	}
	f := &Feedback{
		FeedbackType:      lowerASCII(firstField(fields.Get("Feedback-Type"))),
		UserAgent:         fields.Get("User-Agent"),
		Version:           fields.Get("Version"),
		ReportingMTA:      hostOnly(stripType(fields.Get("Reporting-MTA"))),
		SourceIP:          strings.Trim(fields.Get("Source-IP"), "[] "),
		OriginalMailFrom:  normAddr(fields.Get("Original-Mail-From")),
		ArrivalDate:       firstNonEmpty(fields.Get("Arrival-Date"), fields.Get("Received-Date")),
		AuthFailure:       lowerASCII(fields.Get("Auth-Failure")),
		DeliveryResult:    lowerASCII(fields.Get("Delivery-Result")),
		DKIMDomain:        fields.Get("DKIM-Domain"),
		DKIMSelector:      fields.Get("DKIM-Selector"),
		DKIMIdentity:      fields.Get("DKIM-Identity"),
		SPFDNS:            fields.Get("SPF-DNS"),
		IdentityAlignment: fields.Get("Identity-Alignment"),
		AuthResults:       fields.Values("Authentication-Results"),
		ReportedDomain:    fields.Values("Reported-Domain"),
		ReportedURI:       fields.Values("Reported-URI"),
	}
	f.SourceIP = firstField(f.SourceIP)
	if n, err := strconv.Atoi(strings.TrimSpace(fields.Get("Incidents"))); err == nil {
		f.Incidents = n
	}
	for _, v := range fields.Values("Original-Rcpt-To") {
		if a := normAddr(v); a != "" {
			f.OriginalRcptTo = append(f.OriginalRcptTo, a)
		}
	}
	for _, x := range fields {
		f.Fields = append(f.Fields, HeaderField(x))
	}
	return f
}

// arf reads a feedback report: its report part, or (for the providers
// that write one in the text) the fields in the text.
func (m *msgView) arf() bool {
	var f *Feedback
	for _, e := range m.feedbacks {
		if f = parseFeedback(e.body); f != nil {
			break
		}
	}
	if f == nil {
		f = m.feedbackInText()
	}
	if f == nil {
		if len(m.feedbacks) > 0 {
			m.unparsed(UnparsedARF, "a feedback-report part without a Feedback-Type field")
			return true
		}
		return false
	}
	m.finishFeedback(f)
	return true
}

func (m *msgView) finishFeedback(f *Feedback) {
	if len(f.OriginalRcptTo) > 0 {
		f.Recipient = f.OriginalRcptTo[0]
	} else if m.res.Original != nil {
		f.Recipient = headerAddr(m.res.Original.To)
	}
	switch {
	case f.ReportingMTA != "":
		f.Reporter = f.ReportingMTA
	case f.UserAgent != "":
		f.Reporter = f.UserAgent
	default:
		if a := headerAddr(m.t.header.Get("From")); a != "" {
			f.Reporter = a[strings.LastIndexByte(a, '@')+1:]
		}
	}
	m.res.Feedback = f
	m.res.Kind = KindComplaint
	if f.FeedbackType == "auth-failure" {
		m.res.Kind = KindDMARCFailure
	}
}

// feedbackInText parses ARF fields written in a text part (some
// providers send the report as text/plain).
func (m *msgView) feedbackInText() *Feedback {
	lower := m.lowerText
	i := strings.Index(lower, "feedback-type:")
	if i < 0 || (i > 0 && lower[i-1] != '\n') {
		return nil
	}
	return parseFeedback([]byte(m.text[i:]))
}

// inlineFeedback classifies a message whose text holds ARF fields
// without a report part.
func (m *msgView) inlineFeedback() bool {
	f := m.feedbackInText()
	if f == nil {
		return false
	}
	m.finishFeedback(f)
	return true
}

// textForensic reads a DMARC failure report written as plain text with no
// ARF part (Exim's "DMARC Forensic Report"): the sender domain and IP and
// the alignment results, with the headers of the failed message after.
func (m *msgView) textForensic() bool {
	lower := m.lowerText
	if !strings.Contains(lower, "failed the published dmarc policy") {
		return false
	}
	f := &Feedback{FeedbackType: "auth-failure", AuthFailure: "dmarc"}
	for _, line := range m.textLines {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch lowerASCII(k) {
		case "sender domain":
			f.ReportedDomain = append(f.ReportedDomain, lowerASCII(v))
		case "sender ip address":
			f.SourceIP = v
		case "received date":
			f.ArrivalDate = v
		case "spf alignment", "dkim alignment", "dmarc results":
			f.Fields = append(f.Fields, HeaderField{Name: k, Value: v})
		}
	}
	m.finishFeedback(f)
	return true
}

// jmrp reads Microsoft's feedback loop (JMRP, Outlook.com's "complaint
// about message from ..."): not ARF, but the reported message attached
// with the complaining address in X-HmXmrOriginalRecipient.
func (m *msgView) jmrp() bool {
	o := m.res.Original
	if o == nil {
		return false
	}
	rcpt := ""
	for _, f := range o.Headers {
		if strings.EqualFold(f.Name, "X-HmXmrOriginalRecipient") {
			rcpt = normAddr(f.Value)
		}
	}
	if rcpt == "" {
		return false
	}
	f := &Feedback{FeedbackType: "abuse", OriginalRcptTo: []string{rcpt}, UserAgent: "JMRP"}
	for _, h := range o.Headers {
		if strings.EqualFold(h.Name, "X-Reporter-IP") {
			f.Fields = append(f.Fields, HeaderField{Name: h.Name, Value: h.Value})
		}
	}
	m.finishFeedback(f)
	if a := headerAddr(m.t.header.Get("From")); a != "" {
		f.Reporter = a[strings.LastIndexByte(a, '@')+1:]
	}
	return true
}

// unsubscribe reads an unsubscribe request sent to a List-Unsubscribe
// mailto: address (Apple Mail's, or any mail whose subject is just
// "unsubscribe") as an opt-out complaint: the address wants no more mail.
func (m *msgView) unsubscribe() bool {
	subj := lowerASCII(strings.TrimSpace(m.res.Subject))
	if subj != "unsubscribe" && !strings.Contains(m.lowerText, "sent this email to unsubscribe") {
		return false
	}
	from := headerAddr(m.t.header.Get("From"))
	if from == "" {
		return false
	}
	f := &Feedback{FeedbackType: "opt-out", OriginalRcptTo: []string{from}}
	m.finishFeedback(f)
	f.Reporter = from[strings.LastIndexByte(from, '@')+1:]
	return true
}
