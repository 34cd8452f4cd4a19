package smtpd

import (
	"context"
	"fmt"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/store"
)

// The account's address lists at submission (SPEC §11, §13): mail to an
// address on the suppression list is not sent, the recipient refused with
// a reason and the refusal logged as a failure ("suppressed"); mail to an
// address on the no-tracking list is sent untracked.

var _ RecipientChecker = (*Spool)(nil)

// suppressedText is the words of a refusal.
func suppressedText(rcpt string, e *store.AddressEntry) string {
	why := map[string]string{
		store.ReasonHardBounce:  "it bounced hard",
		store.ReasonSoftBounces: "it bounced softly too often",
		store.ReasonComplaint:   "its reader reported mail as spam",
		store.ReasonUnsubscribe: "its reader unsubscribed",
		store.ReasonManual:      "it was added by hand",
	}[e.Reason]
	if why == "" {
		why = "it is listed (" + e.Reason + ")"
	}
	return fmt.Sprintf("<%s> is on this account's suppression list since %s: %s; remove it from the list to send to it again",
		rcpt, e.Created.UTC().Format(time.DateOnly), why)
}

// CheckRecipient implements RecipientChecker: a suppressed recipient gets
// 550 5.7.1 with the reason, and a failures event records it. A failed
// lookup lets the recipient through (refusing mail is worse than sending
// one copy to a suppressed address).
func (s *Spool) CheckRecipient(ctx context.Context, cred *Credential, rcpt string) error {
	if cred == nil {
		return nil
	}
	found, err := s.cfg.Store.LookupAddresses(ctx, store.ListSuppressed, cred.Account, []string{rcpt})
	if err != nil {
		s.log.Warn("suppression lookup failed; recipient let through", "err", err)
		return nil
	}
	e := found[store.NormalAddress(rcpt)]
	if e == nil {
		return nil
	}
	s.logRefusals(ctx, cred, "", []Refusal{{Recipient: rcpt, Reason: suppressedText(rcpt, e)}})
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: suppressedText(rcpt, e)}
}

// screen splits a submission's recipients: the suppressed are refused
// (and logged), the rest kept; notrack says which kept ones are sent
// untracked.
func (s *Spool) screen(ctx context.Context, sub *Submission) (keep []string, refused []Refusal, notrack map[string]bool) {
	acct := sub.Cred.Account
	sup, err := s.cfg.Store.LookupAddresses(ctx, store.ListSuppressed, acct, sub.Recipients)
	if err != nil {
		s.log.Warn("suppression lookup failed; recipients let through", "err", err)
		sup = nil
	}
	nt, err := s.cfg.Store.LookupAddresses(ctx, store.ListNoTrack, acct, sub.Recipients)
	if err != nil {
		// Sending untracked is the safe side of not knowing.
		s.log.Warn("no-tracking lookup failed; the message goes untracked", "err", err)
		nt = map[string]*store.AddressEntry{}
		for _, r := range sub.Recipients {
			nt[store.NormalAddress(r)] = &store.AddressEntry{}
		}
	}
	for _, r := range sub.Recipients {
		n := store.NormalAddress(r)
		if e := sup[n]; e != nil {
			refused = append(refused, Refusal{Recipient: r, Reason: suppressedText(r, e)})
			continue
		}
		keep = append(keep, r)
		if nt[n] != nil {
			if notrack == nil {
				notrack = map[string]bool{}
			}
			notrack[r] = true
		}
	}
	if len(refused) > 0 {
		s.logRefusals(ctx, sub.Cred, sub.From, refused)
	}
	return keep, refused, notrack
}

// logRefusals records refused recipients in the failures log (no copy was
// made: the id is 0).
func (s *Spool) logRefusals(ctx context.Context, cred *Credential, from string, refused []Refusal) {
	now := s.cfg.Now().UTC()
	evs := make([]store.Event, len(refused))
	for i, r := range refused {
		evs[i] = store.Event{
			Log: store.LogFailures, Account: cred.Account, Time: now, Recipient: r.Recipient, Credential: cred.Username,
			Fields: map[string]string{
				"envelope": from, "attempt": "0", "type": "suppressed", "code": "550", "status": "5.7.1",
				"description": r.Reason, "state": "rcpt",
			},
		}
	}
	if err := s.cfg.Store.AppendEvents(ctx, evs); err != nil {
		s.log.Error("logging suppressed recipients failed", "err", err)
	}
}
