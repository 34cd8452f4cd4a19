package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/inbound"
	"github.com/trackrelay/trackrelay/store"
)

// What came back, recorded (SPEC §11). Each message is classified
// (package inbound) and joined to the copies it is about:
//
//  1. the VERP addresses it was sent to (a token names each copy);
//  2. else a VERP address in the message it returns (its Return-Path,
//     or a feedback report's Original-Mail-From);
//  3. else a tracked link's token in the returned message's text, at a
//     click domain (rewrite.Codec.Decode on the URL's first path segment);
//
// and then recorded in one commit (store.RecordReturned):
//
//   - a bounce: one bounces event per copy (hard, soft or delayed, with
//     status, reply code, diagnostic, remote MTA and reason); the copy
//     leaves the Delivered figure (not for delayed); a hard bounce
//     suppresses the address, soft bounces once SoftBounceLimit of them
//     came within SoftBounceWindow;
//   - a complaint (ARF): a complaints event per copy; the address is
//     suppressed (opt-out: as unsubscribed; not-spam: not at all);
//   - a response (auto-reply, reply, or mail that looked like a bounce or
//     a report but could not be read: kind unparsed, with the reason), and
//     a bounce that names none of its copies' recipients, or that joins no
//     copy but came to an account's report address: a responses event;
//   - a DMARC aggregate report: one dmarc event per row (report
//     "aggregate"); a failure report: one dmarc event (report "failure");
//     for every account that owns the report's policy domain (see
//     reportAccounts);
//   - an SMTP TLS report: a responses event (kind tls-report) for the
//     accounts of its policy domains.
//
// Mail that belongs to no account (to postmaster, a report for a domain
// nobody here owns, a copy that no longer exists) is kept in unclaimed/
// for the operator, never dropped.

// recordOutcome says what became of one message.
type recordOutcome struct {
	kind      string // what it was, for metrics and logs
	events    int
	account   string // the first account it was recorded for
	unclaimed string // why it belongs to no account, when it does not
}

// unreadableError is a spool file that cannot be read to its end: it is
// kept in failed/ rather than retried.
type unreadableError struct{ err error }

func (e *unreadableError) Error() string {
	return "smtpd: inbound: reading the spool file: " + e.err.Error()
}
func (e *unreadableError) Unwrap() error { return e.err }

// targets is what a message's recipients name.
type targets struct {
	copies     []*store.Copy
	gone       int      // VERP addresses of copies no longer stored
	named      string   // the account a LOCAL+ACCOUNT report address names ("" none)
	report     bool     // sent to a report address
	postmaster bool     // sent to postmaster@
	rcpts      []string // the envelope recipients, as given
}

// batch gathers the records of one message.
type batch struct {
	key     string    // the spool file's id: every event's key starts with it
	at      time.Time // when the message came
	events  []store.Event
	bounced []uint64
	lists   []store.AddressEntry
}

func (b *batch) add(e store.Event) {
	e.Time = b.at
	e.Key = b.key + ":" + strconv.Itoa(len(b.events))
	b.events = append(b.events, e)
}

func copyEvent(log string, c *store.Copy, fields map[string]string) store.Event {
	return store.Event{Log: log, Account: c.Account, ID: c.ID, Recipient: c.Recipient, Tags: c.Tags,
		Fields: fields, Message: c.MessageID, Credential: c.Credential}
}

// record classifies the message in r (the spool file after its envelope
// line) and records it. key names the file.
func (in *Inbound) record(ctx context.Context, key string, env *inboundEnvelope, r io.Reader) (recordOutcome, error) {
	res, err := inbound.Options{MaxBytes: in.cfg.MaxMessageBytes}.Classify(r, inbound.Envelope{MailFrom: env.From, Rcpt: env.Rcpt})
	if err != nil {
		return recordOutcome{}, &unreadableError{err}
	}
	tg, err := in.targets(ctx, env.Rcpt)
	if err != nil {
		return recordOutcome{}, err
	}
	if len(tg.copies) == 0 && tg.gone == 0 {
		if tg.copies, err = in.joinOriginal(ctx, res); err != nil {
			return recordOutcome{}, err
		}
	}
	b := &batch{key: key, at: env.Received}
	out := recordOutcome{kind: string(res.Kind)}
	switch res.Kind {
	case inbound.KindBounce, inbound.KindDelayed:
		err = in.bounces(ctx, b, res, tg)
	case inbound.KindComplaint:
		in.complaints(b, res, tg)
	case inbound.KindDMARC:
		err = in.dmarcRows(ctx, b, res, tg)
	case inbound.KindDMARCFailure:
		err = in.dmarcFailure(ctx, b, res, tg)
	case inbound.KindTLSReport:
		err = in.tlsReport(ctx, b, res, tg)
	default: // responses, and success notices
		if res.Response != nil && res.Response.Kind == inbound.ResponseUnparsed {
			out.kind = "unparsed"
		}
		in.responses(b, res, tg, responseKind(res), responseReason(res))
	}
	if err != nil {
		return recordOutcome{}, err
	}
	if len(b.events) == 0 {
		out.kind = "unclaimed"
		out.unclaimed = unclaimedWhy(res, tg)
		return out, nil
	}
	if err := in.commit(ctx, b); err != nil {
		return recordOutcome{}, err
	}
	out.events, out.account = len(b.events), b.events[0].Account
	return out, nil
}

// commit writes a batch: the bounce and complaint records with the
// address lists in one commit, and long DMARC reports in further commits
// of at most commitChunk events (each idempotent by its keys).
func (in *Inbound) commit(ctx context.Context, b *batch) error {
	const commitChunk = 5000
	evs := b.events
	first := true
	for first || len(evs) > 0 {
		n := min(len(evs), commitChunk)
		var bounced []uint64
		var lists []store.AddressEntry
		if first {
			bounced, lists = b.bounced, b.lists
		}
		if err := in.cfg.Store.RecordReturned(ctx, evs[:n], bounced, lists); err != nil {
			return fmt.Errorf("smtpd: inbound: record: %w", err)
		}
		evs, first = evs[n:], false
	}
	return nil
}

func unclaimedWhy(res *inbound.Result, tg *targets) string {
	switch {
	case tg.gone > 0:
		return "the copy it is about is no longer stored"
	case tg.postmaster && !tg.report && len(tg.copies) == 0:
		return "mail to postmaster"
	case res.Kind == inbound.KindDMARC || res.Kind == inbound.KindDMARCFailure || res.Kind == inbound.KindTLSReport:
		return "no account owns the report's domain"
	}
	return "it names no copy and came to no account's address"
}

// targets reads what the envelope recipients name. A store error is
// returned (the message is tried again later).
func (in *Inbound) targets(ctx context.Context, rcpts []string) (*targets, error) {
	tg := &targets{rcpts: rcpts}
	seen := map[uint64]bool{}
	for _, rc := range rcpts {
		t := in.classifyRcpt(ctx, rc)
		switch t.kind {
		case rcptReport:
			tg.report = true
			if tg.named == "" && t.account != "" {
				tg.named = t.account
			}
		case rcptPostmaster:
			tg.postmaster = true
		case rcptVERP:
			if seen[t.copy] {
				continue
			}
			seen[t.copy] = true
			c, err := in.cfg.Store.Copy(ctx, t.copy)
			if errors.Is(err, store.ErrNotFound) {
				tg.gone++
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("smtpd: inbound: copy %s: %w", store.FormatID(t.copy), err)
			}
			tg.copies = append(tg.copies, c)
		}
	}
	if tg.named != "" {
		name, err := in.accountNamed(ctx, tg.named)
		if err != nil {
			return nil, err
		}
		tg.named = name
	}
	return tg, nil
}

// Kinds of envelope recipient the MX listener takes.
const (
	rcptNone = iota
	rcptVERP
	rcptReport
	rcptPostmaster
)

type rcptTarget struct {
	kind    int
	copy    uint64 // rcptVERP
	account string // rcptReport: the account LOCAL+ACCOUNT names, as written
	err     error  // rcptNone: why (for the reply)
}

// classifyRcpt says what an envelope recipient is: a VERP address with a
// good token at a bounce domain, a report address (perhaps naming an
// account), postmaster@ of a bounce domain, or nothing we take.
func (in *Inbound) classifyRcpt(ctx context.Context, addr string) rcptTarget {
	local, domain, ok := splitAddr(addr)
	if !ok {
		return rcptTarget{err: ErrNotVERP}
	}
	lower := strings.ToLower(local)
	for _, ra := range in.cfg.ReportAddresses {
		rl, rd, _ := strings.Cut(ra, "@")
		if rd != domain {
			continue
		}
		if lower == rl {
			return rcptTarget{kind: rcptReport}
		}
		if len(local) > len(rl)+1 && strings.EqualFold(local[:len(rl)+1], rl+"+") {
			return rcptTarget{kind: rcptReport, account: local[len(rl)+1:]}
		}
	}
	if lower == "postmaster" && (in.cfg.VERP.IsBounceDomain(ctx, domain) || slices.Contains(in.cfg.Postmaster, domain)) {
		return rcptTarget{kind: rcptPostmaster}
	}
	id, _, err := in.cfg.VERP.ParseAddress(ctx, addr)
	if err != nil {
		return rcptTarget{err: err}
	}
	return rcptTarget{kind: rcptVERP, copy: id}
}

// accountNamed returns the stored name of the account called name (case
// aside: MTAs may lower-case a local part), or "" when there is none.
func (in *Inbound) accountNamed(ctx context.Context, name string) (string, error) {
	a, err := store.Get[store.Account](ctx, in.cfg.Store, store.KindAccount, name)
	if err == nil {
		return a.Name, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	all, err := store.List[store.Account](ctx, in.cfg.Store, store.KindAccount, "")
	if err != nil {
		return "", err
	}
	for _, a := range all {
		if strings.EqualFold(a.Name, name) {
			return a.Name, nil
		}
	}
	return "", nil
}

// verpInText finds VERP addresses (LOCAL+TOKEN@DOMAIN) in header values.
var verpInText = regexp.MustCompile(`[A-Za-z0-9._\-]*\+([A-Za-z2-7]{32})@([A-Za-z0-9.\-]+)`)

// joinOriginal finds the copies a message is about from the message it
// returns: a VERP address in its header (or a feedback report's
// Original-Mail-From), else a tracked link's token in its text.
func (in *Inbound) joinOriginal(ctx context.Context, res *inbound.Result) ([]*store.Copy, error) {
	var ids []uint64
	var texts []string
	if fb := res.Feedback; fb != nil {
		texts = append(texts, fb.OriginalMailFrom)
	}
	if o := res.Original; o != nil {
		for _, h := range o.Headers {
			texts = append(texts, h.Value)
		}
	}
	for _, t := range texts {
		for _, m := range verpInText.FindAllStringSubmatch(t, 8) {
			if id, _, err := in.cfg.VERP.ParseAddress(ctx, "x+"+m[1]+"@"+m[2]); err == nil && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 && res.Original != nil && in.cfg.IsClickDomain != nil {
		if id, ok := in.linkToken(ctx, res.Original.Text); ok {
			ids = append(ids, id)
		} else if id, ok := in.linkToken(ctx, string(res.Original.Excerpt)); ok {
			ids = append(ids, id)
		}
	}
	var out []*store.Copy
	for _, id := range ids {
		c, err := in.cfg.Store.Copy(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("smtpd: inbound: copy %s: %w", store.FormatID(id), err)
		}
		out = append(out, c)
	}
	return out, nil
}

// maxLinksTried bounds the URLs looked at in one returned message.
const maxLinksTried = 200

// linkToken returns the copy named by the first tracked link in text: an
// http(s) URL at a click domain whose first path segment is a good token.
func (in *Inbound) linkToken(ctx context.Context, text string) (uint64, bool) {
	lower := asciiLower(text) // same length as text: indexes agree
	tried := 0
	for i := 0; i < len(lower) && tried < maxLinksTried; {
		j := strings.Index(lower[i:], "http")
		if j < 0 {
			break
		}
		i += j
		rest := lower[i:]
		var n int
		switch {
		case strings.HasPrefix(rest, "https://"):
			n = 8
		case strings.HasPrefix(rest, "http://"):
			n = 7
		default:
			i += 4
			continue
		}
		i += n
		tried++
		end := strings.IndexAny(text[i:], "/ \t\r\n\"'<>")
		if end <= 0 || text[i+end] != '/' {
			continue
		}
		host := lower[i : i+end]
		seg := text[i+end+1:]
		if k := strings.IndexAny(seg, "/?#\"'<> \t\r\n"); k >= 0 {
			seg = seg[:k]
		}
		if seg == "" || !in.cfg.IsClickDomain(ctx, host) {
			continue
		}
		if tok, err := in.codec().Decode(seg); err == nil {
			return tok.MessageID, true
		}
	}
	return 0, false
}

// asciiLower lower-cases A-Z only, so the result has text's length.
func asciiLower(text string) string {
	b := []byte(text)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// pickRecipient returns the report's recipient about copy c: the one
// that names its recipient, else (for the only copy of the message) the
// first, as the VERP address says which copy it is even when an alias or
// a forward changed the address.
func pickRecipient(recs []inbound.Recipient, c *store.Copy, only bool) *inbound.Recipient {
	for i := range recs {
		r := &recs[i]
		if strings.EqualFold(r.Address, c.Recipient) || strings.EqualFold(r.OriginalAddress, c.Recipient) {
			return r
		}
	}
	if only && len(recs) > 0 {
		return &recs[0]
	}
	return nil
}

// bounces records a bounce or a delay notice.
func (in *Inbound) bounces(ctx context.Context, b *batch, res *inbound.Result, tg *targets) error {
	if len(tg.copies) == 0 {
		why := "bounce-not-joined: it names no copy sent from here"
		if len(res.Recipients) > 0 {
			why += " (it names " + clip(res.Recipients[0].Address, 200) + ")"
		}
		in.unjoined(b, res, tg, inbound.ResponseUnparsed, why)
		return nil
	}
	type soft struct {
		limit  int
		window time.Duration
	}
	settings := map[string]soft{} // by account
	for _, c := range tg.copies {
		rec := pickRecipient(res.Recipients, c, len(tg.copies) == 1)
		if rec == nil {
			names := make([]string, 0, len(res.Recipients))
			for _, r := range res.Recipients {
				names = append(names, r.Address)
			}
			b.add(copyEvent(store.LogResponses, c, responseFields(res, c.Recipient, inbound.ResponseUnparsed,
				clip("bounce-recipient-mismatch: it names "+strings.Join(names, ", ")+", not the copy's recipient", 500))))
			continue
		}
		typ := string(rec.Verdict)
		if res.Kind == inbound.KindDelayed || rec.Action == "delayed" {
			typ = "delayed"
		}
		code := ""
		if rec.ReplyCode > 0 {
			code = strconv.Itoa(rec.ReplyCode)
		}
		b.add(copyEvent(store.LogBounces, c, map[string]string{
			"type": typ, "status": rec.Status, "code": code, "diagnostic": clip(rec.Diagnostic, 1000),
			"mta": clip(rec.RemoteMTA, 255), "reason": string(rec.Reason),
		}))
		if typ == "delayed" {
			continue
		}
		b.bounced = append(b.bounced, c.ID)
		detail := clip(strings.TrimSpace(rec.Status+" "+rec.Diagnostic), 500)
		if typ == string(inbound.Hard) {
			b.suppress(c, store.ReasonHardBounce, detail)
			continue
		}
		st, ok := settings[c.Account]
		if !ok {
			limit, window, err := in.softSettings(ctx, c.Account)
			if err != nil {
				return err
			}
			st = soft{limit, window}
			settings[c.Account] = st
		}
		limit, window := st.limit, st.window
		if limit <= 0 {
			continue
		}
		n, err := in.softBounces(ctx, c.Account, c.Recipient, b.at.Add(-window), b.key)
		if err != nil {
			return err
		}
		if n+1 >= limit {
			b.suppress(c, store.ReasonSoftBounces, clip(fmt.Sprintf("%d soft bounces within %s; the last: %s", n+1, window, detail), 500))
		}
	}
	return nil
}

func (b *batch) suppress(c *store.Copy, reason, detail string) {
	b.lists = append(b.lists, store.AddressEntry{List: store.ListSuppressed, Account: c.Account, Address: c.Recipient,
		Reason: reason, Detail: detail, Copy: c.ID, Created: b.at})
}

// softSettings returns account's soft bounce limit and window: its own,
// else the relay's.
func (in *Inbound) softSettings(ctx context.Context, account string) (int, time.Duration, error) {
	limit, window := in.cfg.SoftBounceLimit, in.cfg.SoftBounceWindow
	a, err := store.Get[store.Account](ctx, in.cfg.Store, store.KindAccount, account)
	if errors.Is(err, store.ErrNotFound) {
		return limit, window, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if a.SoftBounceLimit != 0 {
		limit = a.SoftBounceLimit
	}
	if a.SoftBounceWindow > 0 {
		window = a.SoftBounceWindow
	}
	return limit, window, nil
}

// softBounces counts the soft bounces of address in account's bounces log
// since from, leaving out this message's own (a retry after a crash finds
// them stored).
func (in *Inbound) softBounces(ctx context.Context, account, address string, from time.Time, key string) (int, error) {
	n := 0
	for e, err := range in.cfg.Store.EventsByRecipient(ctx, account, address, from, time.Time{}) {
		if err != nil {
			return 0, fmt.Errorf("smtpd: inbound: soft bounces: %w", err)
		}
		if e.Log == store.LogBounces && e.Fields["type"] == "soft" && !strings.HasPrefix(e.Key, key+":") {
			n++
		}
	}
	return n, nil
}

// complaints records a feedback report.
func (in *Inbound) complaints(b *batch, res *inbound.Result, tg *targets) {
	fb := res.Feedback
	ft := fb.FeedbackType
	if ft == "" {
		ft = "abuse"
	}
	fields := map[string]string{"feedbacktype": ft, "reporter": clip(fb.Reporter, 255)}
	if len(tg.copies) == 0 {
		if tg.named != "" {
			// Not joined: logged for the account, without suppressing the
			// address it names (nothing proves it is the account's).
			rcpt := clip(strings.ReplaceAll(fb.Recipient, "\x00", ""), 320)
			b.add(store.Event{Log: store.LogComplaints, Account: tg.named, Recipient: rcpt, Fields: fields})
		}
		return
	}
	for _, c := range tg.copies {
		b.add(copyEvent(store.LogComplaints, c, fields))
		switch ft {
		case "not-spam":
		case "opt-out":
			b.suppress(c, store.ReasonUnsubscribe, "opt-out feedback report from "+clip(fb.Reporter, 200))
		default:
			b.suppress(c, store.ReasonComplaint, clip(ft+" report from "+fb.Reporter, 500))
		}
	}
}

// responses records a response (or a success notice) for each copy, or
// for the account a report address names.
func (in *Inbound) responses(b *batch, res *inbound.Result, tg *targets, kind, reason string) {
	if len(tg.copies) == 0 {
		in.unjoined(b, res, tg, kind, reason)
		return
	}
	for _, c := range tg.copies {
		b.add(copyEvent(store.LogResponses, c, responseFields(res, c.Recipient, kind, reason)))
	}
}

// unjoined records, for the account a report address names, mail that
// joins no copy.
func (in *Inbound) unjoined(b *batch, res *inbound.Result, tg *targets, kind, reason string) {
	if tg.named == "" {
		return
	}
	to := res.To
	if to == "" && len(tg.rcpts) > 0 {
		to = tg.rcpts[0]
	}
	b.add(store.Event{Log: store.LogResponses, Account: tg.named, Fields: responseFields(res, to, kind, reason)})
}

func responseFields(res *inbound.Result, to, kind, reason string) map[string]string {
	from := res.From
	if from == "" {
		from = res.Envelope.MailFrom
	}
	if res.To != "" {
		to = res.To
	}
	return map[string]string{"from": clip(from, 500), "to": clip(to, 500), "subject": clip(res.Subject, 500), "kind": kind, "reason": clip(reason, 1000)}
}

// responseKind is the responses log's kind of a result.
func responseKind(res *inbound.Result) string {
	if res.Kind == inbound.KindDelivered {
		return "delivered"
	}
	if res.Response == nil {
		return inbound.ResponseReply
	}
	return res.Response.Kind
}

// responseReason is the responses log's reason: what kind of auto-reply,
// or why the message could not be read.
func responseReason(res *inbound.Result) string {
	if res.Kind == inbound.KindDelivered {
		return "delivery notice"
	}
	r := res.Response
	if r == nil {
		return ""
	}
	switch r.Kind {
	case inbound.ResponseAutoReply:
		return r.Auto
	case inbound.ResponseUnparsed:
		if r.Detail != "" {
			return r.Reason + ": " + r.Detail
		}
		return r.Reason
	}
	return ""
}

// dmarcRows records an aggregate report, a row per record.
func (in *Inbound) dmarcRows(ctx context.Context, b *batch, res *inbound.Result, tg *targets) error {
	rep := res.DMARC
	accts, err := in.reportAccounts(ctx, tg, []string{rep.Policy.Domain})
	if err != nil {
		return err
	}
	span := ""
	if !rep.Begin.IsZero() || !rep.End.IsZero() {
		span = rep.Begin.UTC().Format(time.RFC3339) + "/" + rep.End.UTC().Format(time.RFC3339)
	}
	base := map[string]string{"reporter": clip(rep.OrgName, 255), "reportid": clip(rep.ReportID, 255), "range": span,
		"domain": clip(rep.Policy.Domain, 255), "report": "aggregate"}
	for _, a := range accts {
		if len(rep.Records) == 0 {
			f := clone(base)
			f["count"] = "0"
			b.add(store.Event{Log: store.LogDMARC, Account: a, Fields: f})
			continue
		}
		for _, r := range rep.Records {
			f := clone(base)
			f["ip"], f["count"], f["disposition"] = r.SourceIP, strconv.FormatInt(r.Count, 10), r.Disposition
			f["dkim"], f["spf"], f["headerfrom"] = r.DKIM, r.SPF, clip(r.HeaderFrom, 255)
			b.add(store.Event{Log: store.LogDMARC, Account: a, Fields: f})
		}
	}
	return nil
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+6)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// dmarcFailure records a failure (forensic) report as one dmarc row.
func (in *Inbound) dmarcFailure(ctx context.Context, b *batch, res *inbound.Result, tg *targets) error {
	fb := res.Feedback
	headerFrom := ""
	if res.Original != nil {
		if _, d, ok := splitAddr(strings.Trim(lastField(res.Original.From), "<>")); ok {
			headerFrom = d
		}
	}
	domains := append(slices.Clone(fb.ReportedDomain), fb.DKIMDomain, headerFrom)
	accts, err := in.reportAccounts(ctx, tg, domains)
	if err != nil {
		return err
	}
	domain := headerFrom
	if len(fb.ReportedDomain) > 0 {
		domain = fb.ReportedDomain[0]
	}
	count := max(fb.Incidents, 1)
	span := fb.ArrivalDate
	if span == "" {
		span = b.at.UTC().Format(time.RFC3339)
	}
	for _, a := range accts {
		e := store.Event{Log: store.LogDMARC, Account: a}
		for _, c := range tg.copies {
			if c.Account == a {
				// Sent back to the copy's VERP address: one of its events.
				e.ID, e.Recipient, e.Tags, e.Message, e.Credential = c.ID, c.Recipient, c.Tags, c.MessageID, c.Credential
				break
			}
		}
		e.Fields = map[string]string{
			"reporter": clip(fb.Reporter, 255), "reportid": clip(res.MessageID, 255), "range": clip(span, 100),
			"domain": clip(domain, 255), "ip": clip(fb.SourceIP, 64), "count": strconv.Itoa(count),
			"disposition": clip(fb.DeliveryResult, 64), "dkim": authResult(fb, "dkim"), "spf": authResult(fb, "spf"),
			"headerfrom": clip(headerFrom, 255), "report": "failure",
		}
		b.add(e)
	}
	return nil
}

// lastField returns the address part of a From value ("Name <a@b>").
func lastField(v string) string {
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		return v[i:]
	}
	return strings.TrimSpace(v)
}

// authResult reads a method's result (dkim=fail) from a failure report's
// Authentication-Results, or says "fail" for the method that failed.
func authResult(fb *inbound.Feedback, method string) string {
	for _, ar := range fb.AuthResults {
		lower := strings.ToLower(ar)
		if i := strings.Index(lower, method+"="); i >= 0 {
			v := lower[i+len(method)+1:]
			if k := strings.IndexAny(v, " ;()\t"); k >= 0 {
				v = v[:k]
			}
			return clip(v, 32)
		}
	}
	if strings.EqualFold(fb.AuthFailure, method) {
		return "fail"
	}
	return ""
}

// tlsReport records an SMTP TLS report as a responses row per account of
// its policy domains.
func (in *Inbound) tlsReport(ctx context.Context, b *batch, res *inbound.Result, tg *targets) error {
	rep := res.TLS
	var domains []string
	var ok, failed int64
	for _, p := range rep.Policies {
		domains = append(domains, p.Domain)
		ok += p.SuccessCount
		failed += p.FailCount
	}
	accts, err := in.reportAccounts(ctx, tg, domains)
	if err != nil {
		return err
	}
	reason := clip(fmt.Sprintf("%s report %s for %s: %d sessions succeeded, %d failed", rep.OrganizationName, rep.ReportID, strings.Join(domains, ", "), ok, failed), 1000)
	for _, a := range accts {
		b.add(store.Event{Log: store.LogResponses, Account: a, Fields: responseFields(res, strings.Join(tg.rcpts, ", "), "tls-report", reason)})
	}
	return nil
}

// reportAccounts says whose a report is: the account its address names
// (LOCAL+ACCOUNT@...), else the accounts of the copies it came back to
// (a reporter that answers the envelope sender), else every account that
// owns one of domains (the
// report's policy domain): one with a DKIM key for it, or a click or
// bounce domain at or under it, or a DKIM key for a domain it is under.
// Reports are not authenticated, whoever names the account or domain:
// they say what their reporters say.
func (in *Inbound) reportAccounts(ctx context.Context, tg *targets, domains []string) ([]string, error) {
	if tg.named != "" {
		return []string{tg.named}, nil
	}
	if len(tg.copies) > 0 {
		var out []string
		for _, c := range tg.copies {
			if !slices.Contains(out, c.Account) {
				out = append(out, c.Account)
			}
		}
		return out, nil
	}
	var want []string
	for _, d := range domains {
		if d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), "."); d != "" && !slices.Contains(want, d) {
			want = append(want, d)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	keys, err := store.List[store.DKIMKey](ctx, in.cfg.Store, store.KindDKIMKey, "")
	if err != nil {
		return nil, err
	}
	doms, err := store.List[store.Domain](ctx, in.cfg.Store, store.KindDomain, "")
	if err != nil {
		return nil, err
	}
	under := func(name, d string) bool { return name == d || strings.HasSuffix(name, "."+d) }
	var out []string
	addAcct := func(a string) {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, d := range want {
		for _, k := range keys {
			kd := strings.ToLower(k.Domain)
			if under(kd, d) || under(d, kd) {
				addAcct(k.Account)
			}
		}
		for _, dm := range doms {
			if under(dm.Name, d) {
				addAcct(dm.Account)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 { // not inside a UTF-8 sequence
		cut--
	}
	return s[:cut]
}
