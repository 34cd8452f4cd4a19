package inbound

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"
)

// msg turns a readable test message (LF line ends, leading tabs of a Go
// raw string removed) into CRLF mail.
func msg(s string) string {
	s = strings.TrimLeft(s, "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

const dsnUserUnknown = `
From: Mail Delivery System <MAILER-DAEMON@mx.sender.example>
To: bounce+AbC123@b.relay.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system at host mx.sender.example.

<gone@rcpt.example>: host mx.rcpt.example[192.0.2.1] said: 550 5.1.1
    <gone@rcpt.example>: Recipient address rejected: User unknown in local
    recipient table (in reply to RCPT TO command)

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.example
Arrival-Date: Thu, 29 Apr 2021 23:34:45 +0900

Final-Recipient: rfc822; gone@rcpt.example
Original-Recipient: rfc822;Gone@Rcpt.Example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.rcpt.example
Diagnostic-Code: smtp; 550 5.1.1 <gone@rcpt.example>: Recipient address
    rejected: User unknown in local recipient table

--B
Content-Type: message/rfc822

Message-ID: <copy-42@relay.example>
From: Shop <news@shop.example>
To: gone@rcpt.example
Subject: =?utf-8?q?Caf=C3=A9_news?=
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<a href=3D"https://click.relay.example/t0ken/pa=
th">Caf=C3=A9</a>
--B--
`

const dsnMixed = `
From: MAILER-DAEMON@mx.sender.example
To: bounce+tok@b.relay.example
Subject: Delivery Status Notification
Content-Type: multipart/report; report-type=delivery-status; boundary=XX

--XX
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.example

Final-Recipient: rfc822; full@rcpt.example
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full
Final-Recipient: rfc822; slow@rcpt.example
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; connect to mx.rcpt.example: Connection timed out

--XX--
`

const dsnDelayed = `
From: MAILER-DAEMON@mx.sender.example
Subject: Delayed Mail (still being retried)
Content-Type: multipart/report; report-type=delivery-status; boundary=XX

--XX
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.example

Final-Recipient: rfc822; slow@rcpt.example
Action: delayed
Status: 4.4.1
Will-Retry-Until: Fri, 30 Apr 2021 23:34:45 +0900

--XX--
`

const dsnDelivered = `
From: MAILER-DAEMON@mx.sender.example
Subject: Successful Mail Delivery Report
Content-Type: multipart/report; report-type=delivery-status; boundary=XX

--XX
Content-Type: message/delivery-status

Final-Recipient: rfc822; ok@rcpt.example
Action: delivered
Status: 2.0.0
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued

--XX--
`

const qmailBounce = `
From: MAILER-DAEMON@mx.sender.example
To: bounce+tok@b.relay.example
Subject: failure notice

Hi. This is the qmail-send program at mx.sender.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<full@rcpt.example>:
192.0.2.1 does not like recipient.
Remote host said: 552 5.2.2 Mailbox quota exceeded
Giving up on 192.0.2.1.

--- Below this line is a copy of the message.

Message-ID: <copy-7@relay.example>
From: news@shop.example
To: full@rcpt.example
Subject: hi

body
`

const eximBounce = `
From: Mail Delivery System <Mailer-Daemon@mx.sender.example>
To: bounce+tok@b.relay.example
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: nobody-here@rcpt.example
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody-here@rcpt.example
    host mx.rcpt.example [192.0.2.9]
    SMTP error from remote mail server after RCPT TO:<nobody-here@rcpt.example>:
    550 No such user here

------ This is a copy of the message, including all the headers. ------

Message-ID: <copy-9@relay.example>
To: nobody-here@rcpt.example
Subject: hello
`

const arfAbuse = `
From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: fbl@relay.example
Subject: FW: hello
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.
--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/1.0
Version: 1
Original-Mail-From: <bounce+tok@b.relay.example>
Original-Rcpt-To: <reader@yahoo.example>
Received-Date: Thu, 29 Apr 2021 23:34:45 +0900
Reported-Domain: shop.example
Source-IP: 192.0.2.55

--F
Content-Type: message/rfc822

Message-ID: <copy-11@relay.example>
From: news@shop.example
To: reader@yahoo.example
Subject: hello

spam?
--F--
`

const arfAuth = `
From: dmarc-reports@receiver.example
To: ruf@relay.example
Subject: DMARC failure report
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: message/feedback-report

Feedback-Type: auth-failure
User-Agent: OpenDMARC/1.4
Version: 1
Auth-Failure: dmarc
Reporting-MTA: dns; mx.receiver.example
Source-IP: 203.0.113.7
Reported-Domain: shop.example
Delivery-Result: reject

--F
Content-Type: text/rfc822-headers

From: ceo@shop.example
To: victim@receiver.example
Subject: wire money
Message-ID: <forged@elsewhere.example>

--F--
`

const vacation = `
From: Reader <reader@rcpt.example>
To: bounce+tok@b.relay.example
Subject: Out of Office: hello
Auto-Submitted: auto-replied

I am away until Monday.
`

const challenge = `
From: reader@rcpt.example
To: bounce+tok@b.relay.example
Subject: Please verify your message

I use a spam filter. Please click the link below to confirm that you are a human.
`

const humanReply = `
From: Reader <reader@rcpt.example>
To: bounce+tok@b.relay.example
Subject: Re: hello

Thanks, but please call me instead.
`

const noRecipient = `
From: MAILER-DAEMON@mx.sender.example
Subject: Undelivered Mail Returned to Sender

Your message could not be delivered.
`

const dmarcXML = `<?xml version="1.0"?>
<feedback>
  <report_metadata>
    <org_name>receiver.example</org_name>
    <email>dmarc@receiver.example</email>
    <report_id>r-1</report_id>
    <date_range><begin>1700000000</begin><end>1700086399</end></date_range>
  </report_metadata>
  <policy_published><domain>Shop.Example</domain><p>quarantine</p><pct>50</pct></policy_published>
  <record>
    <row><source_ip>192.0.2.10</source_ip><count>3</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim><spf>pass</spf>
        <reason><type>local_policy</type><comment>x</comment></reason></policy_evaluated></row>
    <identifiers><header_from>shop.example</header_from></identifiers>
    <auth_results><spf><domain>b.relay.example</domain><scope>mfrom</scope><result>pass</result></spf></auth_results>
  </record>
  <record>
    <row><source_ip>2001:db8::1</source_ip><count>1</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>shop.example</header_from></identifiers>
    <auth_results><dkim><domain>shop.example</domain><selector>s1</selector><result>pass</result></dkim></auth_results>
  </record>
</feedback>
`

func attach(ctype, name string, data []byte) string {
	return msg(fmt.Sprintf(`
From: noreply-dmarc-support@google.example
To: dmarc@b.relay.example
Subject: Report domain: shop.example Submitter: google.example Report-ID: r-1
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="M"

--M
Content-Type: text/plain

Report attached.
--M
Content-Type: %s; name="%s"
Content-Disposition: attachment; filename="%s"
Content-Transfer-Encoding: base64

%s
--M--
`, ctype, name, name, base64.StdEncoding.EncodeToString(data)))
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zipped(name string, b []byte) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, _ := w.Create(name)
	f.Write(b)
	w.Close()
	return buf.Bytes()
}

// TestClassify reads hand-written messages of every kind, whole and in
// small reads.
func TestClassify(t *testing.T) {
	env := Envelope{MailFrom: "", Rcpt: []string{"bounce+AbC123@B.Relay.Example"}}
	tests := []struct {
		name  string
		in    string
		check func(t *testing.T, r *Result)
	}{
		{"rfc3464 user unknown", msg(dsnUserUnknown), func(t *testing.T, r *Result) {
			want := Recipient{Address: "gone@rcpt.example", OriginalAddress: "Gone@rcpt.example", Action: "failed", Status: "5.1.1", ReplyCode: 550,
				RemoteMTA: "mx.rcpt.example", Command: "RCPT", Reason: ReasonUserUnknown, Verdict: Hard,
				Diagnostic: "550 5.1.1 <gone@rcpt.example>: Recipient address rejected: User unknown in local recipient table"}
			if r.Kind != KindBounce || len(r.Recipients) != 1 || r.Recipients[0] != want {
				t.Fatalf("got %s %+v\nwant %+v", r.Kind, r.Recipients, want)
			}
			o := r.Original
			if o == nil || o.MessageID != "<copy-42@relay.example>" || o.Subject != "Café news" || o.To != "gone@rcpt.example" ||
				!bytes.Contains(o.Excerpt, []byte("t0ken/pa=")) || !strings.Contains(o.Text, `href="https://click.relay.example/t0ken/path">Café`) {
				t.Fatalf("original %+v", o)
			}
			if r.VERP != "bounce+AbC123@b.relay.example" {
				t.Errorf("VERP %q", r.VERP)
			}
		}},
		{"failed and delayed", msg(dsnMixed), func(t *testing.T, r *Result) {
			if r.Kind != KindBounce || len(r.Recipients) != 2 {
				t.Fatalf("got %s %+v", r.Kind, r.Recipients)
			}
			a, b := r.Recipients[0], r.Recipients[1]
			if a.Status != "5.2.2" || a.Reason != ReasonMailboxFull || a.Verdict != Soft || a.ReplyCode != 552 {
				t.Errorf("first %+v", a)
			}
			if b.Action != "delayed" || b.Status != "4.4.1" || b.Verdict != Soft {
				t.Errorf("second %+v", b)
			}
		}},
		{"delayed only", msg(dsnDelayed), func(t *testing.T, r *Result) {
			if r.Kind != KindDelayed || len(r.Recipients) != 1 || r.Recipients[0].Status != "4.4.1" || r.Recipients[0].Reason != ReasonExpired {
				t.Fatalf("got %s %+v", r.Kind, r.Recipients)
			}
		}},
		{"delivered", msg(dsnDelivered), func(t *testing.T, r *Result) {
			if r.Kind != KindDelivered || r.Recipients[0].Reason != ReasonDelivered || r.Recipients[0].Status != "2.0.0" {
				t.Fatalf("got %s %+v", r.Kind, r.Recipients)
			}
		}},
		{"qmail", msg(qmailBounce), func(t *testing.T, r *Result) {
			if r.Kind != KindBounce || len(r.Recipients) != 1 {
				t.Fatalf("got %s %+v", r.Kind, r.Recipients)
			}
			got := r.Recipients[0]
			if got.Address != "full@rcpt.example" || got.Status != "5.2.2" || got.ReplyCode != 552 || got.Reason != ReasonMailboxFull || got.Verdict != Soft || got.Command != "RCPT" {
				t.Errorf("got %+v", got)
			}
			if r.Original == nil || r.Original.MessageID != "<copy-7@relay.example>" {
				t.Errorf("original %+v", r.Original)
			}
		}},
		{"exim", msg(eximBounce), func(t *testing.T, r *Result) {
			if r.Kind != KindBounce || len(r.Recipients) != 1 {
				t.Fatalf("got %s %+v", r.Kind, r.Recipients)
			}
			got := r.Recipients[0]
			if got.Address != "nobody-here@rcpt.example" || got.Status != "5.0.911" || !got.StatusInferred || got.ReplyCode != 550 ||
				got.Reason != ReasonUserUnknown || got.Verdict != Hard || got.RemoteMTA != "mx.rcpt.example" {
				t.Errorf("got %+v", got)
			}
		}},
		{"arf abuse", msg(arfAbuse), func(t *testing.T, r *Result) {
			f := r.Feedback
			if r.Kind != KindComplaint || f == nil || f.FeedbackType != "abuse" || f.Recipient != "reader@yahoo.example" ||
				f.Reporter != "Yahoo!-Mail-Feedback/1.0" || f.SourceIP != "192.0.2.55" || f.OriginalMailFrom != "bounce+tok@b.relay.example" {
				t.Fatalf("got %s %+v", r.Kind, f)
			}
			if r.Original == nil || r.Original.MessageID != "<copy-11@relay.example>" {
				t.Errorf("original %+v", r.Original)
			}
		}},
		{"arf auth-failure", msg(arfAuth), func(t *testing.T, r *Result) {
			f := r.Feedback
			if r.Kind != KindDMARCFailure || f.AuthFailure != "dmarc" || f.Reporter != "mx.receiver.example" || f.DeliveryResult != "reject" || f.Recipient != "victim@receiver.example" {
				t.Fatalf("got %s %+v", r.Kind, f)
			}
			if r.Original == nil || !r.Original.HeadersOnly || r.Original.MessageID != "<forged@elsewhere.example>" {
				t.Errorf("original %+v", r.Original)
			}
		}},
		{"vacation", msg(vacation), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Kind != ResponseAutoReply || r.Response.Auto != "vacation" {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"challenge", msg(challenge), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Kind != ResponseAutoReply || r.Response.Auto != "challenge" {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"reply", msg(humanReply), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Kind != ResponseReply || r.Subject != "Re: hello" {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"bounce without recipient", msg(noRecipient), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Kind != ResponseUnparsed || r.Response.Reason != UnparsedBounceNoRecipient {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"dmarc inline", msg("From: dmarc@receiver.example\nSubject: Report\nContent-Type: text/xml\n\n" + dmarcXML), func(t *testing.T, r *Result) {
			d := r.DMARC
			if r.Kind != KindDMARC || d.OrgName != "receiver.example" || d.ReportID != "r-1" || d.Policy.Domain != "shop.example" || d.Policy.Pct != 50 || len(d.Records) != 2 {
				t.Fatalf("got %s %+v %+v", r.Kind, d, r.Response)
			}
			r0, r1 := d.Records[0], d.Records[1]
			if r0.SourceIP != "192.0.2.10" || r0.Count != 3 || r0.Disposition != "quarantine" || r0.DKIM != "fail" || r0.SPF != "pass" ||
				len(r0.Reasons) != 1 || r0.Reasons[0].Type != "local_policy" || len(r0.SPFResults) != 1 || r0.SPFResults[0].Domain != "b.relay.example" {
				t.Errorf("row 0 %+v", r0)
			}
			if r1.SourceIP != "2001:db8::1" || len(r1.DKIMResults) != 1 || r1.DKIMResults[0].Selector != "s1" {
				t.Errorf("row 1 %+v", r1)
			}
		}},
		{"dmarc gzip", attach("application/gzip", "r.xml.gz", gz([]byte(dmarcXML))), func(t *testing.T, r *Result) {
			if r.Kind != KindDMARC || r.DMARC.Source != "gzip" || len(r.DMARC.Records) != 2 {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"dmarc zip, wrong type", attach("application/octet-stream", "r.zip", zipped("r.xml", []byte(dmarcXML))), func(t *testing.T, r *Result) {
			if r.Kind != KindDMARC || r.DMARC.Source != "zip" || len(r.DMARC.Records) != 2 {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"dmarc bad xml", attach("text/xml", "r.xml", []byte(strings.Replace(dmarcXML, "</feedback>", "", 1))), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Reason != UnparsedReportXML {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"dmarc bad gzip", attach("application/gzip", "r.xml.gz", []byte{0x1f, 0x8b, 8, 0, 0, 0}), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Reason != UnparsedReportArchive {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"tls report", attach("application/tlsrpt+gzip", "t.json.gz", gz([]byte(`{"organization-name":"Org","date-range":{"start-datetime":"2024-01-01T00:00:00Z","end-datetime":"2024-01-01T23:59:59Z"},"report-id":"t1","policies":[{"policy":{"policy-type":"sts","policy-domain":"Shop.Example"},"summary":{"total-successful-session-count":9,"total-failure-session-count":1},"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"mx.shop.example","failed-session-count":1}]}]}`))), func(t *testing.T, r *Result) {
			if r.Kind != KindTLSReport || r.TLS.ReportID != "t1" || len(r.TLS.Policies) != 1 || r.TLS.Policies[0].Domain != "shop.example" || r.TLS.Policies[0].FailCount != 1 || r.TLS.Policies[0].Failures[0].ResultType != "certificate-expired" {
				t.Fatalf("got %s %+v %+v", r.Kind, r.TLS, r.Response)
			}
		}},
		{"ses notification", msg(`
From: no-reply@sns.amazonaws.com
Subject: AWS Notification Message
Content-Type: text/plain

{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"gone@rcpt.example","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}],"reportingMTA":"dns; a1.smtp-out.amazonses.com"},"mail":{"messageId":"m-1","destination":["gone@rcpt.example"],"headers":[{"name":"Fr`), func(t *testing.T, r *Result) {
			if r.Kind != KindBounce || len(r.Recipients) != 1 || r.Recipients[0].Status != "5.1.1" || r.Recipients[0].Verdict != Hard || r.Original == nil || r.Original.MessageID != "m-1" {
				t.Fatalf("got %s %+v %+v", r.Kind, r.Recipients, r.Original)
			}
		}},
		{"a person's zip", strings.NewReplacer("Report domain: shop.example Submitter: google.example Report-ID: r-1", "Re: the photos", "noreply-dmarc-support@", "reader@").Replace(attach("application/zip", "photos.zip", zipped("cat.jpg", []byte("\xff\xd8\xff\xe0 JFIF")))), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Kind != ResponseReply {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"dsn without recipients", msg("From: MAILER-DAEMON@mx.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\nSorry.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n--b--\n"), func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Reason != UnparsedDSNEmpty {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
		{"empty", "", func(t *testing.T, r *Result) {
			if r.Kind != KindResponse || r.Response.Kind != ResponseReply {
				t.Fatalf("got %s %+v", r.Kind, r.Response)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for name, wrap := range readers {
				for _, ends := range []string{"crlf", "lf", "cr"} {
					in := tc.in
					switch ends {
					case "lf":
						in = strings.ReplaceAll(in, "\r\n", "\n")
					case "cr":
						in = strings.ReplaceAll(in, "\r\n", "\r")
					}
					r, err := Classify(wrap(strings.NewReader(in)), env)
					if err != nil {
						t.Fatalf("%s/%s: %v", name, ends, err)
					}
					t.Run(name+"/"+ends, func(t *testing.T) { tc.check(t, r) })
					checkInvariants(t, tc.name, r)
				}
			}
		})
	}
}

// TestLimits feeds oversized, deep and compressed-bomb input: each is
// cut where its bound says, and says so.
func TestLimits(t *testing.T) {
	t.Run("max bytes", func(t *testing.T) {
		big := msg(dsnUserUnknown) + strings.Repeat("x", 1<<20)
		r, err := Options{MaxBytes: 64 << 10}.Classify(strings.NewReader(big), Envelope{})
		if err != nil || !r.Truncated || r.Kind != KindBounce {
			t.Fatalf("got %v %s truncated=%v", err, r.Kind, r.Truncated)
		}
		r, _ = Options{MaxBytes: 64 << 10}.Classify(strings.NewReader(msg(dsnUserUnknown)), Envelope{})
		if r.Truncated {
			t.Error("a message under the bound is marked truncated")
		}
	})
	t.Run("depth", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("From: x@y.example\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n")
		for i := 0; i < 50; i++ {
			fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i, i+1)
		}
		b.WriteString("--b50\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
		for i := 50; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		r, err := Classify(strings.NewReader(b.String()), Envelope{})
		if err != nil || !strings.Contains(strings.Join(r.Limits, ","), "depth") || r.Kind != KindResponse {
			t.Fatalf("got %v %s %v", err, r.Kind, r.Limits)
		}
	})
	t.Run("parts", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("From: x@y.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n")
		for i := 0; i < 1000; i++ {
			b.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
		}
		b.WriteString("--b--\r\n")
		r, _ := Classify(strings.NewReader(b.String()), Envelope{})
		if !strings.Contains(strings.Join(r.Limits, ","), "parts") {
			t.Fatalf("limits %v", r.Limits)
		}
	})
	bomb := bytes.Repeat([]byte("<record></record>"), 1<<20) // 17 MiB, compresses ~1000:1
	t.Run("gzip bomb", func(t *testing.T) {
		r, err := Options{MaxXMLBytes: 4 << 20}.Classify(strings.NewReader(attach("application/gzip", "r.xml.gz", gz(bomb))), Envelope{})
		if err != nil || r.Kind != KindResponse || r.Response.Reason != UnparsedReportTooLarge {
			t.Fatalf("got %v %s %+v", err, r.Kind, r.Response)
		}
	})
	t.Run("zip bomb", func(t *testing.T) {
		r, err := Options{MaxXMLBytes: 4 << 20}.Classify(strings.NewReader(attach("application/zip", "r.zip", zipped("r.xml", bomb))), Envelope{})
		if err != nil || r.Kind != KindResponse || r.Response.Reason != UnparsedReportTooLarge {
			t.Fatalf("got %v %s %+v", err, r.Kind, r.Response)
		}
	})
	t.Run("records", func(t *testing.T) {
		x := strings.Replace(dmarcXML, "<record>", strings.Repeat("<record><row><source_ip>192.0.2.1</source_ip><count>1</count></row></record>", 10)+"<record>", 1)
		r, _ := Options{MaxRecords: 5}.Classify(strings.NewReader(attach("text/xml", "r.xml", []byte(x))), Envelope{})
		if r.Kind != KindDMARC || len(r.DMARC.Records) != 5 || !strings.Contains(strings.Join(r.Limits, ","), "records") {
			t.Fatalf("got %s %d %v", r.Kind, len(r.DMARC.Records), r.Limits)
		}
	})
	t.Run("long line", func(t *testing.T) {
		in := msg(qmailBounce) + strings.Repeat("y", 5<<20) + "\r\n"
		r, err := Classify(strings.NewReader(in), Envelope{})
		if err != nil || r.Kind != KindBounce || len(r.Original.Excerpt) > 32<<10 {
			t.Fatalf("got %v %s", err, r.Kind)
		}
	})
}

// errReader fails after its bytes.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestReadError(t *testing.T) {
	r, err := Classify(errReader{strings.NewReader(msg(qmailBounce))}, Envelope{})
	if err == nil || !strings.HasPrefix(err.Error(), "inbound: ") || r == nil || r.Kind != KindBounce {
		t.Fatalf("got %v %v", err, r)
	}
}

func TestSplitVERP(t *testing.T) {
	tests := []struct {
		in                   string
		local, token, domain string
		ok                   bool
	}{
		{"bounce+AbC_1-2@B.Relay.Example", "bounce", "AbC_1-2", "b.relay.example", true},
		{"<b+t+u@x.example>", "b", "t+u", "x.example", true},
		{"plain@x.example", "", "", "", false},
		{"+t@x.example", "", "", "", false},
		{"b+@x.example", "", "", "", false},
		{"b+t@", "", "", "", false},
		{"", "", "", "", false},
	}
	for _, tc := range tests {
		l, tok, d, ok := SplitVERP(tc.in)
		if l != tc.local || tok != tc.token || d != tc.domain || ok != tc.ok {
			t.Errorf("SplitVERP(%q) = %q %q %q %v", tc.in, l, tok, d, ok)
		}
	}
}

// TestStatusParsing checks the code finders on the shapes MTAs write.
func TestStatusParsing(t *testing.T) {
	status := map[string]string{
		"550 5.1.1 <a@b.example>... User unknown":          "5.1.1",
		"Sorry, no mailbox here by that name. (#5.1.1)":    "5.1.1",
		"host 192.0.2.153 said: 550 user unknown":          "",
		"Out: 250 2.1.5 Ok Out: 451 4.3.0 Error: queue":    "4.3.0",
		"250 2.6.0 Message received":                       "2.6.0",
		"550-5.7.26 unauthenticated":                       "5.7.26",
		"5.1.10 RESOLVER.ADR.RecipientNotFound":            "5.1.10",
		"version 5.5.0-3 of mxl_mta":                       "5.5.0",
		"ip 10.5.1.1 refused":                              "",
		"status 5.9.1 is no code":                          "",
		"550 5.7.1 [2401:2500:102:3032:192.0.2.222 13] no": "5.7.1",
	}
	for in, want := range status {
		if got := findStatus(in); got != want {
			t.Errorf("findStatus(%q) = %q, want %q", in, got, want)
		}
	}
	reply := map[string]int{
		"said: 550 5.1.1 user unknown":   550,
		"550-5.7.1 blocked":              550,
		"ERROR_CODE :421, Host":          421,
		"port 5525 is closed":            0,
		"192.0.2.550 x":                  0,
		"(#5.5.0)":                       0,
		"<<< 452 4.3.2 too many":         452,
		"delivery attempts: 5 after 599": 0,
	}
	for in, want := range reply {
		if got := findReply(in); got != want {
			t.Errorf("findReply(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestVerdictRules pins the hard/soft rule on the codes an operator
// asks about.
func TestVerdictRules(t *testing.T) {
	tests := []struct {
		status, diag string
		reason       Reason
		verdict      Verdict
	}{
		{"5.1.1", "550 5.1.1 user unknown (in reply to RCPT TO command)", ReasonUserUnknown, Hard},
		{"5.1.2", "550 5.1.2 bad destination system address", ReasonHostUnknown, Hard},
		{"5.1.10", "550 5.1.10 recipient address has null MX", ReasonNotAccept, Hard},
		{"5.1.6", "550 5.1.6 mailbox has moved", ReasonHasMoved, Hard},
		{"5.2.2", "552 5.2.2 mailbox full", ReasonMailboxFull, Soft},
		{"5.2.1", "550 5.2.1 mailbox disabled, not accepting messages", ReasonSuspend, Soft},
		{"5.7.1", "550 5.7.1 message rejected by policy", ReasonPolicyViolation, Soft},
		{"5.7.1", "554 5.7.1 client host blocked using zen.spamhaus.org", ReasonBlocked, Soft},
		{"5.7.26", "550 5.7.26 unauthenticated email is not accepted (DMARC)", ReasonAuthFailure, Soft},
		{"4.2.2", "452 4.2.2 over quota", ReasonMailboxFull, Soft},
		{"4.1.1", "450 4.1.1 user unknown (in reply to RCPT TO command)", ReasonUserUnknown, Soft},
		{"4.7.0", "421 4.7.0 rate limit exceeded, try again later", ReasonSpeeding, Soft},
		{"5.3.4", "552 5.3.4 message too big for system", ReasonMesgTooBig, Soft},
		{"5.0.0", "550 user unknown (in reply to end of DATA command)", ReasonFiltered, Soft},
	}
	for _, tc := range tests {
		r := Recipient{Address: "a@rcpt.example", Action: "failed"}
		fill(&r, tc.status, tc.diag, "smtp", "")
		if r.Reason != tc.reason || r.Verdict != tc.verdict || r.Status != tc.status {
			t.Errorf("%s %q: got %s %s %s, want %s %s", tc.status, tc.diag, r.Status, r.Reason, r.Verdict, tc.reason, tc.verdict)
		}
	}
}
