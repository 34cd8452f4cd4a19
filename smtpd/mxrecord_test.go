package smtpd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// arf is an abuse report (RFC 5965) about a copy, its returned message
// carrying the copy's VERP Return-Path.
func arf(feedbackType, verp, rcpt string) []byte {
	return []byte("From: fbl@mailbox.test\r\nTo: dmarc@bounces.test\r\nSubject: FW: spring\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\r\n" +
		"--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n" +
		"--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: " + feedbackType + "\r\nUser-Agent: MailboxFBL/1.0\r\nVersion: 1\r\n" +
		"Original-Mail-From: <" + verp + ">\r\nOriginal-Rcpt-To: <" + rcpt + ">\r\nReporting-MTA: dns; fbl.mailbox.test\r\nSource-IP: 192.0.2.7\r\n" +
		"--F\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <" + verp + ">\r\nFrom: news@shop.test\r\nTo: " + rcpt + "\r\nSubject: spring\r\n\r\nhello\r\n" +
		"--F--\r\n")
}

func (r *mxRig) send(from string, to []string, msg []byte) {
	r.t.Helper()
	if err := sendMX(r.t, r.addr, from, to, msg); err != nil {
		r.t.Fatalf("send to %v: %v", to, err)
	}
	r.wait()
}

func (r *mxRig) setAccount(name string, fn func(*store.Account)) {
	r.t.Helper()
	err := store.Update[store.Account](context.Background(), r.st, store.KindAccount, name, false, func(a *store.Account) (*store.Account, error) {
		fn(a)
		return a, nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// Soft bounces suppress only after the limit within the window: the
// account's own limit, else the relay's.
func TestInboundSoftBounceLimit(t *testing.T) {
	r := newMXRig(t, "", true, nil) // relay default: 3
	r.setAccount("acct", func(a *store.Account) { a.SoftBounceLimit = 2 })
	for i := range 2 {
		c := r.delivered("acct", "full@example.org")[0]
		r.send("", []string{r.verp.Sender(c)}, dsn("failed", "4.2.2", "452 4.2.2 Mailbox full", "full@example.org"))
		s := r.suppressed("acct", "full@example.org")
		if i == 0 && s != nil {
			t.Fatalf("suppressed after one soft bounce: %+v", s)
		}
		if i == 1 && (s == nil || s.Reason != store.ReasonSoftBounces || !strings.Contains(s.Detail, "2 soft bounces")) {
			t.Fatalf("after two soft bounces (limit 2): %+v", s)
		}
	}
	for range 2 {
		c := r.delivered("other", "full@example.org")[0]
		r.send("", []string{r.verp.Sender(c)}, dsn("failed", "4.2.2", "452 4.2.2 Mailbox full", "full@example.org"))
	}
	if s := r.suppressed("other", "full@example.org"); s != nil {
		t.Fatalf("other account (relay limit 3) suppressed after two: %+v", s)
	}
	c := r.delivered("other", "full@example.org")[0]
	r.send("", []string{r.verp.Sender(c)}, dsn("failed", "4.2.2", "452 4.2.2 Mailbox full", "full@example.org"))
	if s := r.suppressed("other", "full@example.org"); s == nil || s.Reason != store.ReasonSoftBounces {
		t.Fatalf("other account after three: %+v", s)
	}
	// Outside the window they do not count: limit 2 over one hour, and
	// the earlier bounces are stored as older.
	r.setAccount("acct", func(a *store.Account) { a.SoftBounceLimit, a.SoftBounceWindow = 2, time.Nanosecond })
	c = r.delivered("acct", "later@example.org")[0]
	r.send("", []string{r.verp.Sender(c)}, dsn("failed", "4.2.2", "full", "later@example.org"))
	time.Sleep(time.Millisecond)
	c = r.delivered("acct", "later@example.org")[0]
	r.send("", []string{r.verp.Sender(c)}, dsn("failed", "4.2.2", "full", "later@example.org"))
	if s := r.suppressed("acct", "later@example.org"); s != nil {
		t.Fatalf("bounces outside the window counted: %+v", s)
	}
}

// A delay notice is logged as delayed: not a bounce, nothing suppressed,
// the copy still delivered.
func TestInboundDelayed(t *testing.T) {
	r := newMXRig(t, "", true, nil)
	c := r.delivered("acct", "slow@example.org")[0]
	r.send("", []string{r.verp.Sender(c)}, dsn("delayed", "4.4.1", "connection timed out", "slow@example.org"))
	evs := r.events("acct", store.LogBounces)
	if len(evs) != 1 || evs[0].Fields["type"] != "delayed" || evs[0].Fields["status"] != "4.4.1" {
		t.Fatalf("delay notice: %+v", evs)
	}
	if cp, _ := r.st.Copy(context.Background(), c.ID); cp.State != store.CopyDelivered {
		t.Errorf("copy state %s after a delay notice", cp.State)
	}
	tot, _ := r.st.Totals(context.Background(), "acct")
	if tot[store.Delivered] != 1 || tot[store.Delayed] != 1 || tot[store.BouncedSoft]+tot[store.BouncedHard] != 0 {
		t.Errorf("totals %v", tot.Map())
	}
	if r.suppressed("acct", "slow@example.org") != nil {
		t.Error("a delay suppressed the address")
	}
}

// Complaints: joined by the VERP address in the report (sent to the
// feedback-loop address, not to a VERP address), suppressing the
// address; not-spam suppresses nothing, opt-out as unsubscribed.
func TestInboundComplaints(t *testing.T) {
	r := newMXRig(t, "", true, nil)
	for _, tc := range []struct {
		ft, rcpt, reason string
		to               func(verp string) string
	}{
		{"abuse", "dave@example.org", store.ReasonComplaint, func(string) string { return mxReport }},
		{"opt-out", "erin@example.org", store.ReasonUnsubscribe, func(v string) string { return v }},
		{"not-spam", "frank@example.org", "", func(string) string { return mxReport }},
	} {
		c := r.delivered("acct", tc.rcpt)[0]
		v := r.verp.Sender(c)
		r.send("", []string{tc.to(v)}, arf(tc.ft, v, tc.rcpt))
		s := r.suppressed("acct", tc.rcpt)
		if tc.reason == "" && s != nil || tc.reason != "" && (s == nil || s.Reason != tc.reason || s.Copy != c.ID) {
			t.Errorf("%s: suppression %+v, want reason %q", tc.ft, s, tc.reason)
		}
	}
	evs := r.events("acct", store.LogComplaints)
	if len(evs) != 3 || evs[0].Recipient != "dave@example.org" || evs[0].Fields["feedbacktype"] != "abuse" || evs[0].Fields["reporter"] == "" || evs[0].ID == 0 {
		t.Fatalf("complaints: %+v", evs)
	}
	tot, _ := r.st.Totals(context.Background(), "acct")
	if tot[store.Complained] != 3 || tot[store.Delivered] != 3 {
		t.Errorf("totals %v: a complaint is not a bounce", tot.Map())
	}
}

// Responses: an auto-reply and a person's reply to the envelope sender,
// and a report that cannot be read, are kept with their kind and reason.
func TestInboundResponses(t *testing.T) {
	r := newMXRig(t, "", true, nil)
	cs := r.delivered("acct", "gina@example.org", "hal@example.org", "ivy@example.org")
	r.send("gina@example.org", []string{r.verp.Sender(cs[0])},
		[]byte("From: Gina <gina@example.org>\r\nTo: news@shop.test\r\nSubject: Out of office: spring\r\nAuto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n"))
	r.send("hal@example.org", []string{r.verp.Sender(cs[1])},
		[]byte("From: Hal <hal@example.org>\r\nTo: news@shop.test\r\nSubject: Re: spring\r\nIn-Reply-To: <x@shop.test>\r\n\r\nThanks, how much is it?\r\n"))
	r.send("", []string{r.verp.Sender(cs[2])},
		[]byte("From: MAILER-DAEMON@mta.remote.test\r\nSubject: Delivery Status Notification\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed.\r\n"+
			"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mta.remote.test\r\n\r\n--B--\r\n"))
	evs := r.events("acct", store.LogResponses)
	if len(evs) != 3 {
		t.Fatalf("%d responses: %+v", len(evs), evs)
	}
	want := []struct{ rcpt, kind string }{{"gina@example.org", "auto-reply"}, {"hal@example.org", "reply"}, {"ivy@example.org", "unparsed"}}
	for i, w := range want {
		e := evs[i]
		if e.Recipient != w.rcpt || e.Fields["kind"] != w.kind || e.ID != cs[i].ID {
			t.Errorf("response %d: %+v, want %s %s", i, e, w.rcpt, w.kind)
		}
	}
	if !strings.Contains(evs[0].Fields["subject"], "Out of office") || evs[0].Fields["reason"] == "" {
		t.Errorf("auto-reply fields %v", evs[0].Fields)
	}
	if evs[2].Fields["reason"] == "" || !strings.HasPrefix(evs[2].Fields["reason"], "dsn-") {
		t.Errorf("unparsed bounce: reason %q, want the classifier's code", evs[2].Fields["reason"])
	}
	if r.suppressed("acct", "ivy@example.org") != nil {
		t.Error("an unreadable bounce suppressed the address")
	}
}

// A bounce that reaches no VERP address (here: postmaster) is joined by
// the tracked link in the message it returns, quoted-printable and
// broken across lines as it came back.
func TestInboundJoinsByLinkToken(t *testing.T) {
	r := newMXRig(t, "", true, nil)
	c := r.delivered("acct", "jack@example.org")[0]
	tok := r.verp.Codec().Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: c.ID, Position: 2, HTTPS: true, Host: "shop.test"})
	link := "https://click.test/" + tok + "/sale?x=1"
	qp := link[:40] + "=\r\n" + link[40:]
	msg := "From: MAILER-DAEMON@mta.remote.test\r\nTo: postmaster@bounces.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed.\r\n" +
		"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mta.remote.test\r\n\r\nFinal-Recipient: rfc822; jack@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 no such user\r\n\r\n" +
		"--B\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@shop.test\r\nSubject: spring\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D\"" + qp + "\">sale</a>\r\n--B--\r\n"
	r.send("", []string{"postmaster@bounces.test"}, []byte(msg))
	evs := r.events("acct", store.LogBounces)
	if len(evs) != 1 || evs[0].ID != c.ID || evs[0].Fields["type"] != "hard" {
		t.Fatalf("bounce joined by link: %+v (unclaimed %v)", evs, r.unclaimed())
	}
	// The same link at a host that is no click domain joins nothing: the
	// bounce is kept for the operator.
	c2 := r.delivered("acct", "kim@example.org")[0]
	tok2 := r.verp.Codec().Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: c2.ID, HTTPS: true, Host: "shop.test"})
	msg2 := strings.ReplaceAll(strings.ReplaceAll(msg, qp, "https://elsewhere.test/"+tok2+"/"), "jack@", "kim@")
	r.send("", []string{"postmaster@bounces.test"}, []byte(msg2))
	if n := len(r.events("acct", store.LogBounces)); n != 1 {
		t.Errorf("a link at a foreign host joined a copy (%d bounces)", n)
	}
	if len(r.unclaimed()) != 1 {
		t.Errorf("unclaimed: %v, want the unjoined bounce", r.unclaimed())
	}
}

// dmarcXML is an aggregate report for domain with rows for two sources.
func dmarcXML(domain, id string) string {
	return `<?xml version="1.0"?><feedback><report_metadata><org_name>reporter.example</org_name><email>dmarc@reporter.example</email>` +
		`<report_id>` + id + `</report_id><date_range><begin>1767225600</begin><end>1767311999</end></date_range></report_metadata>` +
		`<policy_published><domain>` + domain + `</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp><pct>100</pct></policy_published>` +
		`<record><row><source_ip>192.0.2.1</source_ip><count>12</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>` +
		`<identifiers><header_from>` + domain + `</header_from></identifiers><auth_results><dkim><domain>` + domain + `</domain><result>pass</result></dkim><spf><domain>` + domain + `</domain><result>pass</result></spf></auth_results></record>` +
		`<record><row><source_ip>198.51.100.9</source_ip><count>3</count><policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>` +
		`<identifiers><header_from>` + domain + `</header_from></identifiers><auth_results><spf><domain>evil.test</domain><result>fail</result></spf></auth_results></record></feedback>`
}

func dmarcMail(to, domain, id string) []byte {
	return []byte("From: noreply-dmarc@reporter.example\r\nTo: " + to + "\r\nSubject: Report domain: " + domain + " Submitter: reporter.example Report-ID: " + id + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/xml\r\nContent-Disposition: attachment; filename=\"reporter.example!" + domain + "!1767225600!1767311999.xml\"\r\n\r\n" + dmarcXML(domain, id) + "\r\n")
}

// DMARC reports belong to the account that owns the policy domain (a
// click, bounce or DKIM domain at or under it), or to the account the
// address names; a report for a domain nobody owns is kept unclaimed.
func TestInboundDMARC(t *testing.T) {
	r := newMXRig(t, "", true, nil)
	ctx := context.Background()
	if err := store.Create(ctx, r.st, &store.Domain{Name: "click.shop.test", Account: "acct", Kind: store.DomainClick, State: store.DomainVerified}); err != nil {
		t.Fatal(err)
	}
	r.send("", []string{mxReport}, dmarcMail(mxReport, "shop.test", "r-1"))
	rows := r.events("acct", store.LogDMARC)
	if len(rows) != 2 {
		t.Fatalf("%d dmarc rows, want 2: %+v", len(rows), rows)
	}
	f := rows[1].Fields
	if f["reporter"] != "reporter.example" || f["reportid"] != "r-1" || f["domain"] != "shop.test" || f["ip"] != "198.51.100.9" ||
		f["count"] != "3" || f["disposition"] != "quarantine" || f["dkim"] != "fail" || f["spf"] != "fail" || f["headerfrom"] != "shop.test" ||
		f["range"] != "2026-01-01T00:00:00Z/2026-01-01T23:59:59Z" || f["report"] != "aggregate" {
		t.Errorf("row %v", f)
	}
	if n := len(r.events("other", store.LogDMARC)); n != 0 {
		t.Errorf("another account got %d rows", n)
	}
	r.send("", []string{"dmarc+other@bounces.test"}, dmarcMail("dmarc+other@bounces.test", "shop.test", "r-2"))
	if n := len(r.events("other", store.LogDMARC)); n != 2 {
		t.Errorf("report to dmarc+other: %d rows for other, want 2", n)
	}
	r.send("", []string{mxReport}, dmarcMail(mxReport, "nobody.test", "r-3"))
	if len(r.unclaimed()) != 1 {
		t.Errorf("report for an unowned domain: unclaimed %v", r.unclaimed())
	}
	// A failure report (RFC 6591) is one row, report "failure".
	fr := "From: dmarc-ruf@reporter.example\r\nTo: dmarc@bounces.test\r\nSubject: DMARC failure report for shop.test\r\nMessage-ID: <ruf-1@reporter.example>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"R\"\r\n\r\n--R\r\nContent-Type: text/plain\r\n\r\nA message failed DMARC.\r\n" +
		"--R\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: auth-failure\r\nUser-Agent: Reporter/1.0\r\nVersion: 1\r\nAuth-Failure: dmarc\r\n" +
		"Authentication-Results: mx.reporter.example; dkim=fail header.d=shop.test; spf=pass smtp.mailfrom=shop.test\r\nSource-IP: 203.0.113.5\r\nReported-Domain: shop.test\r\nDelivery-Result: reject\r\n" +
		"--R\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: fake@shop.test\r\nSubject: pay now\r\n\r\n--R--\r\n"
	r.send("", []string{mxReport}, []byte(fr))
	rows = r.events("acct", store.LogDMARC)
	if len(rows) != 3 {
		t.Fatalf("%d rows after the failure report, want 3", len(rows))
	}
	f = rows[2].Fields
	if f["report"] != "failure" || f["ip"] != "203.0.113.5" || f["domain"] != "shop.test" || f["dkim"] != "fail" || f["spf"] != "pass" ||
		f["disposition"] != "reject" || f["reportid"] != "<ruf-1@reporter.example>" {
		t.Errorf("failure row %v", f)
	}
}

// Mail to postmaster, and a bounce for a copy that is gone, are kept
// for the operator (never dropped); the folder is bounded.
func TestInboundUnclaimed(t *testing.T) {
	r := newMXRig(t, "", true, func(ic *InboundConfig, _ *MXConfig) { ic.MaxUnclaimed = 2 })
	for i := range 3 {
		r.send("someone@example.org", []string{"postmaster@bounces.test"}, []byte(fmt.Sprintf("From: someone@example.org\r\nSubject: hello %d\r\n\r\nhi\r\n", i)))
	}
	if u := r.unclaimed(); len(u) != 2 {
		t.Fatalf("unclaimed %v, want the 2 newest", u)
	}
	if !strings.Contains(r.logs.String(), "unclaimed inbound message removed") {
		t.Error("the removal of the oldest unclaimed message was not logged")
	}
}
