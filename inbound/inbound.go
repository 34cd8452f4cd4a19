package inbound

import (
	"fmt"
	"io"
	"strings"
)

// Envelope is the SMTP envelope a message arrived with.
type Envelope struct {
	// MailFrom is the reverse path; "" for the null sender (<>), which is
	// what bounces and most auto-replies use.
	MailFrom string
	// Rcpt holds the RCPT TO addresses: VERP addresses
	// (local+token@bounce-domain) or a DMARC report address.
	Rcpt []string
}

// Kind says what a message is.
type Kind string

const (
	KindBounce  Kind = "bounce"  // a delivery failure (Result.Recipients)
	KindDelayed Kind = "delayed" // a delay warning (Action: delayed): logged, not a bounce
	// KindDelivered is a success notice (DSN Action: delivered, relayed or
	// expanded for every recipient, or an SES delivery notification).
	KindDelivered Kind = "delivered"
	KindComplaint Kind = "complaint" // an ARF feedback report (Result.Feedback)
	KindDMARC     Kind = "dmarc"     // a DMARC aggregate report (Result.DMARC)
	// KindDMARCFailure is a DMARC failure (forensic) report: ARF with
	// Feedback-Type: auth-failure (RFC 6591), in Result.Feedback.
	KindDMARCFailure Kind = "dmarc-failure"
	KindTLSReport    Kind = "tls-report" // an SMTP TLS report (RFC 8460), in Result.TLS
	KindResponse     Kind = "response"   // anything else (Result.Response)
)

// Result is what Classify reads from one message. Kind says which of the
// report fields is set.
type Result struct {
	Kind Kind

	// Envelope is the envelope as given; VERP is the first RCPT TO address
	// of the form local+token@domain (see SplitVERP), "" if none.
	Envelope Envelope
	VERP     string

	// The message's own header fields, decoded (RFC 2047).
	From, To, Subject, MessageID, Date string

	// Original identifies the message that came back (from the returned
	// message or its headers), nil when the message carries none.
	Original *Original

	Recipients []Recipient      // KindBounce, KindDelayed: one per recipient, in order
	Feedback   *Feedback        // KindComplaint, KindDMARCFailure
	DMARC      *AggregateReport // KindDMARC
	TLS        *TLSReport       // KindTLSReport
	Response   *Response        // KindResponse

	// Truncated is set when the message was longer than Options.MaxBytes:
	// only its first MaxBytes were read (and the rest left unread).
	Truncated bool
	// Limits lists the other bounds that cut what was read ("depth",
	// "parts", "recipients", "records"), if any.
	Limits []string
}

// Recipient is one bounced (or delayed) recipient.
type Recipient struct {
	// Address is the recipient that failed (Final-Recipient, or what the
	// MTA's text names); OriginalAddress is Original-Recipient when given.
	Address         string
	OriginalAddress string `json:",omitempty"`
	// Action is the DSN action (failed, delayed, delivered, relayed,
	// expanded); "failed" for non-standard bounces.
	Action string
	// Status is an RFC 3463 code, always of the form class.subject.detail.
	// StatusInferred is set when the bounce named no code and Status was
	// derived from the reason (class.0.9xx, see the package doc).
	Status         string
	StatusInferred bool
	// ReplyCode is the remote host's SMTP reply code (550), 0 if none.
	ReplyCode int
	// RemoteMTA is the host that refused, when named.
	RemoteMTA string
	// Command is the SMTP command the failure answered (RCPT, DATA, MAIL,
	// HELO, CONN) when the text says.
	Command string `json:",omitempty"`
	// Diagnostic is the remote host's reply or the MTA's explanation, one
	// line, at most 1000 bytes.
	Diagnostic string
	Reason     Reason
	Verdict    Verdict
}

// Original is what identifies the message that came back.
type Original struct {
	MessageID, From, To, Subject, Date string
	// Headers are the returned header fields in order (decoded values).
	Headers []HeaderField
	// Excerpt is the start of the returned message as it came back (at
	// most Options.MaxExcerptBytes, line ends as LF), for finding
	// tracked-link tokens; ExcerptTruncated says the message was longer.
	Excerpt          []byte
	ExcerptTruncated bool
	// Text is the returned message's text parts decoded (quoted-printable
	// and base64 undone, charsets made UTF-8, HTML kept as source), at
	// most MaxExcerptBytes: where a tracked link's token reads whole.
	Text string
	// HeadersOnly is set when only the header came back
	// (text/rfc822-headers or a header-only copy).
	HeadersOnly bool
}

// HeaderField is one header field.
type HeaderField struct {
	Name, Value string
}

// Response is mail that is neither a bounce nor a report.
type Response struct {
	// Kind is "auto-reply", "reply" or "unparsed".
	Kind string
	// Auto says what kind of automatic reply it is ("vacation",
	// "challenge", "auto-replied", "auto-generated", "list") when Kind is
	// auto-reply.
	Auto string `json:",omitempty"`
	// Reason is set when Kind is "unparsed": a machine-readable code saying
	// what looked like a bounce or report and why it could not be read
	// (see the Unparsed* constants); Detail says more, for people.
	Reason string `json:",omitempty"`
	Detail string `json:",omitempty"`
}

// Response kinds.
const (
	ResponseAutoReply = "auto-reply"
	ResponseReply     = "reply"
	ResponseUnparsed  = "unparsed"
)

// Reasons an apparent bounce or report came out as an unparsed response.
const (
	UnparsedBounceNoRecipient = "bounce-no-recipient" // a bounce that names no recipient we could find
	UnparsedDSNEmpty          = "dsn-no-recipient"    // a delivery-status part without recipient fields
	UnparsedARF               = "arf-unreadable"      // a feedback report without a readable report part
	UnparsedReportEmpty       = "report-empty"        // an aggregate report attachment with no content
	UnparsedReportXML         = "report-bad-xml"      // an aggregate report that is not well-formed XML
	UnparsedReportUTF8        = "report-bad-utf8"     // an aggregate report that is not valid UTF-8
	UnparsedReportNotDMARC    = "report-not-dmarc"    // XML that is not an aggregate report
	UnparsedReportArchive     = "report-bad-archive"  // a .gz or .zip attachment that does not decompress
	UnparsedReportTooLarge    = "report-too-large"    // a report over the decompression bounds
	UnparsedTLSReport         = "tls-report-bad-json" // an SMTP TLS report that does not parse
)

// Options bounds what Classify reads and keeps. The zero value of a field
// means its default.
type Options struct {
	// MaxBytes is the most of a message that is read (default 32 MiB):
	// a longer message is classified on its first MaxBytes, with
	// Result.Truncated set.
	MaxBytes int64
	// MaxKeptBytes bounds everything kept in memory over all parts
	// (default 24 MiB).
	MaxKeptBytes int64
	// MaxDepth bounds MIME nesting (default 8); deeper parts are skipped.
	MaxDepth int
	// MaxParts bounds the number of MIME parts looked at (default 256).
	MaxParts int
	// MaxTextBytes bounds each text part kept for reading (default 256 KiB).
	MaxTextBytes int
	// MaxExcerptBytes bounds Original.Excerpt (default 32 KiB).
	MaxExcerptBytes int
	// MaxReportBytes bounds a report attachment as it came (default 16 MiB).
	MaxReportBytes int64
	// MaxXMLBytes bounds a report once decompressed (default 64 MiB): a
	// gzip or zip bomb stops there.
	MaxXMLBytes int64
	// MaxRecords bounds the rows read from one aggregate report
	// (default 200,000).
	MaxRecords int
	// MaxRecipients bounds the recipients read from one bounce (default 1,000).
	MaxRecipients int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def64 := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def64(&o.MaxBytes, 32<<20)
	def64(&o.MaxKeptBytes, 24<<20)
	def(&o.MaxDepth, 8)
	def(&o.MaxParts, 256)
	def(&o.MaxTextBytes, 256<<10)
	def(&o.MaxExcerptBytes, 32<<10)
	def64(&o.MaxReportBytes, 16<<20)
	def64(&o.MaxXMLBytes, 64<<20)
	def(&o.MaxRecords, 200000)
	def(&o.MaxRecipients, 1000)
	return o
}

// Classify reads one message with the default Options.
func Classify(r io.Reader, env Envelope) (*Result, error) {
	return Options{}.Classify(r, env)
}

// Classify reads one message from r (at most MaxBytes of it) and says
// what it is. Content never makes it fail: whatever cannot be read comes
// out as a response with a Reason. The error is only r's own read error,
// and comes with the result read up to it.
func (o Options) Classify(r io.Reader, env Envelope) (*Result, error) {
	o = o.withDefaults()
	cr := &capReader{r: r, left: o.MaxBytes}
	w := &walker{o: &o, lr: newLineReader(&lineEnds{r: cr}), t: &tree{}}
	w.readTree()
	t := w.t
	t.truncated = cr.truncated
	res := classifyTree(t, env, &o)
	if cr.err != nil {
		return res, fmt.Errorf("inbound: reading message: %w", cr.err)
	}
	return res, nil
}

func classifyTree(t *tree, env Envelope, o *Options) *Result {
	res := &Result{
		Envelope:  env,
		VERP:      verpOf(env),
		From:      decodeWords(t.header.Get("From")),
		To:        decodeWords(t.header.Get("To")),
		Subject:   squash(decodeWords(t.header.Get("Subject"))),
		MessageID: strings.TrimSpace(t.header.Get("Message-ID")),
		Date:      strings.TrimSpace(t.header.Get("Date")),
		Truncated: t.truncated,
	}
	if t.deep {
		res.Limits = append(res.Limits, "depth")
	}
	if t.manyParts {
		res.Limits = append(res.Limits, "parts")
	}
	m := &msgView{t: t, o: o, res: res}
	m.classify()
	return res
}

// SplitVERP splits a VERP address local+token@domain. The token is
// everything after the first '+' in the local part; ok is false when
// there is none.
func SplitVERP(addr string) (local, token, domain string, ok bool) {
	addr = normAddr(addr)
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", "", false
	}
	lp := addr[:at]
	plus := strings.IndexByte(lp, '+')
	if plus <= 0 || plus == len(lp)-1 {
		return "", "", "", false
	}
	return lp[:plus], lp[plus+1:], addr[at+1:], true
}

func verpOf(env Envelope) string {
	for _, a := range env.Rcpt {
		if _, _, _, ok := SplitVERP(a); ok {
			return normAddr(a)
		}
	}
	return ""
}
