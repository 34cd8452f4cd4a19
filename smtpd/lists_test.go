package smtpd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// A recipient on the account's suppression list is refused at RCPT with
// 550 5.7.1 and the reason; the others are taken; the refusal is in the
// failures log. A recipient on the no-tracking list gets an untracked
// copy. The message record keeps the decoded Subject and From.
func TestSuppressionAndNoTrackOverSMTP(t *testing.T) {
	sp, st := newSpoolRig(t, nil)
	ctx := context.Background()
	for _, e := range []store.AddressEntry{
		{List: store.ListSuppressed, Account: "acme", Address: "Gone@Example.org", Reason: store.ReasonHardBounce},
		{List: store.ListNoTrack, Account: "acme", Address: "private@example.org", Reason: store.ReasonManual},
		{List: store.ListSuppressed, Account: "other", Address: "ok@example.org", Reason: store.ReasonComplaint},
	} {
		if _, err := st.AddAddress(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	env := newEnv(t, func(c *ServerConfig) { c.Submitter = sp })
	r := env.rawTLS(t)
	r.cmd("EHLO client.test")
	r.expect(250)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	r.cmd("MAIL FROM:<news@acme.test>")
	r.expect(250)
	r.cmd("RCPT TO:<gone@example.org>")
	if msg := r.expectPrefix(550, "5.7.1"); !strings.Contains(msg, "suppression list") || !strings.Contains(msg, "bounced hard") {
		t.Fatalf("suppressed recipient: %q", msg)
	}
	r.cmd("RCPT TO:<ok@example.org>") // suppressed for another account only
	r.expect(250)
	r.cmd("RCPT TO:<private@example.org>")
	r.expect(250)
	r.cmd("DATA")
	r.expect(354)
	r.write("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from\r\n the shop\r\nFrom: \"Shop\" <news@acme.test>\r\nContent-Type: text/html\r\n\r\n<a href=\"https://acme.test/x\">x</a>\r\n.\r\n")
	r.expect(250)
	r.cmd("QUIT")

	var msgID uint64
	for e, err := range st.EventsByRecipient(ctx, "acme", "gone@example.org", time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Log != store.LogFailures || e.Value("type") != "suppressed" || e.Value("status") != "5.7.1" || e.ID != 0 {
			t.Fatalf("refusal event %+v", e)
		}
		msgID = 1
	}
	if msgID == 0 {
		t.Fatal("the refusal was not logged")
	}
	tracked := map[string]bool{}
	var m *store.Message
	for e, err := range st.Events(ctx, "acme", store.LogAttempts, time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		c, err := st.Copy(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		tracked[c.Recipient] = c.Clicks || c.Opens
		if m, err = st.Message(ctx, c.MessageID); err != nil {
			t.Fatal(err)
		}
	}
	if len(tracked) != 2 || !tracked["ok@example.org"] || tracked["private@example.org"] {
		t.Fatalf("copies tracked: %v", tracked)
	}
	if m.Subject != "Grüße from the shop" || m.HeaderFrom != `"Shop" <news@acme.test>` || m.Account != "acme" || m.Credential != testUser {
		t.Fatalf("message summary %+v", m)
	}
	c, _ := st.Totals(ctx, "acme")
	if c[store.Suppressed] != 1 || c[store.Accepted] != 2 {
		t.Fatalf("totals %v", c.Map())
	}
}

// A submission that is not SMTP (the REST API, a trusted network) is
// screened by the spool itself: the suppressed recipients are refused in
// the receipt, and a message with no recipient left is refused as a whole.
func TestSpoolRefusesSuppressed(t *testing.T) {
	sp, st := newSpoolRig(t, nil)
	ctx := context.Background()
	if _, err := st.AddAddress(ctx, store.AddressEntry{List: store.ListSuppressed, Account: "acme", Address: "gone@example.org", Reason: store.ReasonComplaint}); err != nil {
		t.Fatal(err)
	}
	cred := &Credential{Username: "api", Account: "acme"}
	msg := "Subject: hi\r\n\r\nbody\r\n"
	rc, err := sp.Submit(ctx, &Submission{Cred: cred, From: "a@acme.test", Recipients: []string{"x@example.org", "GONE@example.org"}}, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.CopyIDs) != 1 || len(rc.Refused) != 1 || rc.Refused[0].Recipient != "GONE@example.org" || !strings.Contains(rc.Refused[0].Reason, "reported mail as spam") {
		t.Fatalf("receipt %+v", rc)
	}
	if _, err := sp.Submit(ctx, &Submission{Cred: cred, From: "a@acme.test", Recipients: []string{"gone@example.org"}}, strings.NewReader(msg)); err == nil || !strings.Contains(err.Error(), "suppression list") {
		t.Fatalf("all suppressed: %v", err)
	}
}
