package inbound

import (
	"strings"
)

// textRecipient is a recipient named in a bounce's text, with the text
// that follows it up to the next recipient.
type textRecipient struct {
	addr   string
	diag   string
	ctx    string   // the whole block, with the line that names the address
	lines  []string // the block's lines as written
	line   int      // where in the text the address is first named
	remote string
	strong bool
}

// daemonLocal reports whether an address is a mail system's own (the
// bounce's sender, never a bounced recipient).
func daemonLocal(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	switch lowerASCII(addr[:at]) {
	case "mailer-daemon", "mail-daemon", "mailerdaemon", "mdaemon":
		return true
	}
	return false
}

// excluded is the set of addresses that are never bounced recipients:
// the bounce's own sender and recipient, the envelope, the returned
// message's sender.
func (m *msgView) excluded() map[string]bool {
	ex := map[string]bool{}
	add := func(a string) {
		if a = lowerASCII(normAddr(a)); a != "" {
			ex[a] = true
		}
	}
	for _, a := range headerAddrs(m.t.header.Get("From")) {
		add(a)
	}
	for _, a := range headerAddrs(m.t.header.Get("To")) {
		add(a)
	}
	add(m.res.Envelope.MailFrom)
	for _, a := range m.res.Envelope.Rcpt {
		add(a)
	}
	if o := m.res.Original; o != nil {
		add(headerAddr(o.From))
		for _, f := range o.Headers {
			if strings.EqualFold(f.Name, "Return-Path") || strings.EqualFold(f.Name, "Sender") {
				add(headerAddr(f.Value))
			}
		}
	}
	return ex
}

// strongPrefixes end the text before an address that names a recipient.
var strongPrefixes = []string{
	"rcpt to:", "rcpt to: ", "rcpt to", "to:", "recipient:", "recipients:", "recipient address:", "address:",
	"final-recipient: rfc822;", "original-recipient: rfc822;", "failed recipient:", "addressee:",
	">>>", "delivery to", "delivered to", "deliver to", "delivering to", "delivery to the following recipient failed permanently:",
	"could not be delivered to", "couldn't be delivered to", "not be delivered to", "was not delivered to",
	"your message to", "message to", "mail to", "email to", "e-mail to", "sent to", "failed to", "failed for",
	"undeliverable to", "recipient", "user", "mailbox", "address", "for", "to", "an", "a",
	"error for", "problem with", "unable to deliver to", "couldn't reach", "could not reach", "reach",
	"the following address", "following recipient", "following addresses", "user account", "email address",
	"account", "destinatario", "destinataire", "empfänger", "rcpt", "the user", "for recipient",
}

// recipientLine reports whether the address at a in line names a
// recipient by its place: first on the line, or after words that
// introduce one. weak is set for an address that is only inside a reply.
func recipientLine(line string, a addrAt) (strong, weak bool) {
	pre := lowerASCII(line[:a.start])
	pre = strings.TrimRight(pre, " \t<\"'(")
	pre = strings.TrimLeft(pre, " \t*-•>")
	if pre == "" || isReplyPrefix(pre) {
		return true, false
	}
	if pre == "to:" {
		// "Your message To: x Subject: ..." summaries: only a fallback.
		return false, true
	}
	if strings.HasSuffix(pre, ":") && !strings.HasSuffix(pre, "from:") && !strings.HasSuffix(pre, "sender:") && !strings.HasSuffix(pre, "reply-to:") && !strings.HasSuffix(pre, "cc:") {
		// "Delivery failed 20 attempts: addr", "Recipient address: addr";
		// but a lone header name ("Message-Id:", "References:") is a
		// copy of the returned message's header, never a recipient.
		if name := strings.TrimSuffix(pre, ":"); strings.ContainsAny(name, " \t") || recipientWord(name) {
			return true, false
		}
		return false, false
	}
	for _, p := range strongPrefixes {
		if strings.HasSuffix(pre, p) && (len(pre) == len(p) || !isWordByte(pre[len(pre)-len(p)-1]) || !isWordByte(p[0])) {
			return true, false
		}
	}
	if findReply(line) > 0 || findStatus(line) != "" {
		return false, true
	}
	return false, false
}

// recipientWord reports whether a field name introduces a recipient.
func recipientWord(name string) bool {
	for _, w := range []string{"recipient", "rcpt", "address", "user", "mailbox", "envelope-to", "delivered-to", "destinat", "empf"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// isReplyPrefix reports whether s is a bare SMTP reply code, perhaps with
// a status code ("554", "550 5.1.1"): sendmail writes a recipient's line
// as "550 <addr>... User unknown".
func isReplyPrefix(s string) bool {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 || len(f[0]) != 3 || findReply(f[0]) == 0 {
		return false
	}
	return len(f) == 1 || findStatus(f[1]) == f[1]
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// scanText finds the recipients a bounce's text names and the text that
// belongs to each.
func (m *msgView) scanText() {
	if m.scanned {
		return
	}
	m.scanned = true
	ex := m.excluded()
	lines := m.textLines
	type hit struct {
		line   int
		addr   string
		end    int // offset after the address in its line
		strong bool
		reply  bool // the line starts with a reply code: "554 <addr>... why"
	}
	var strong, weak, own []hit
	from := lowerASCII(headerAddr(m.t.header.Get("From")))
	for i, line := range lines {
		if len(line) > 4096 {
			continue
		}
		for _, a := range findAddrs(line) {
			addr := normAddr(a.addr)
			la := lowerASCII(addr)
			if daemonLocal(addr) || la == from {
				continue
			}
			s, w := recipientLine(line, a)
			if ex[la] {
				// The bounce's own recipient or the original's sender: a
				// recipient only when nothing else is (a bounce of mail
				// sent to oneself).
				if s && strings.TrimSpace(line[:a.start]) == "" || s && strings.HasPrefix(strings.TrimSpace(line[:a.start]), "<") && strings.TrimSpace(line[:a.start]) == "<" {
					own = append(own, hit{i, addr, a.end, true, false})
				}
				continue
			}
			pre := strings.TrimLeft(strings.TrimRight(lowerASCII(line[:a.start]), " \t<\"'("), " \t")
			if s {
				strong = append(strong, hit{i, addr, a.end, true, isReplyPrefix(pre)})
				break
			}
			if w {
				weak = append(weak, hit{i, addr, a.end, false, false})
				break
			}
		}
	}
	hits := strong
	if len(hits) == 0 {
		hits = weak
	}
	if len(hits) == 0 {
		hits = own
	}
	if len(hits) == 0 {
		return
	}
	// Consecutive hits of one address are one block.
	var blocks []hit
	for _, h := range hits {
		if n := len(blocks); n > 0 && strings.EqualFold(blocks[n-1].addr, h.addr) {
			continue
		}
		blocks = append(blocks, h)
	}
	idx := map[string]int{}
	for k, h := range blocks {
		end := len(lines)
		if k+1 < len(blocks) {
			end = blocks[k+1].line
		}
		first := lines[h.line]
		rest := strings.TrimLeft(first[min(h.end, len(first)):], ">:.;, \t")
		var body []string
		if h.reply {
			// A sendmail transcript: "<<< reply" lines, then the
			// recipient's own "554 <addr>... summary" line. The lines that
			// belong to this recipient are the transcript lines above it
			// (since the previous recipient or "While talking to"), and
			// its own line.
			from := 0
			if k > 0 {
				from = blocks[k-1].line + 1
			}
			var above []string
			for i := h.line - 1; i >= from; i-- {
				t := strings.TrimSpace(lines[i])
				if !strings.HasPrefix(t, "<<<") && !strings.HasPrefix(t, ">>>") && !(len(t) > 3 && findReply(t[:4]) > 0) {
					break
				}
				above = append([]string{t}, above...)
			}
			body = append(above, rest)
			end = h.line + 1
			for end < len(lines) && end < h.line+20 && strings.HasPrefix(lines[end], " ") && strings.TrimSpace(lines[end]) != "" {
				end++ // indented continuation lines
			}
			body = append(body, lines[h.line+1:end]...)
		} else {
			body = append([]string{rest}, lines[h.line+1:end]...)
		}
		kept := cutBoilerplate(body)
		if len(kept) > 40 {
			kept = kept[:40] // a recipient's words are a few lines, not pages
		}
		diag := clip(squash(strings.Join(kept, " ")), maxDiag)
		ctx := clip(squash(first+" "+strings.Join(kept, " ")), maxDiag)
		key := lowerASCII(h.addr)
		if j, ok := idx[key]; ok {
			if diag != "" && !strings.Contains(m.textBlocks[j].diag, diag) {
				m.textBlocks[j].diag = squash(m.textBlocks[j].diag + " " + diag)
				m.textBlocks[j].ctx = squash(m.textBlocks[j].ctx + " " + ctx)
			}
			continue
		}
		if len(m.textBlocks) >= m.o.MaxRecipients {
			m.rcptCapped = true
			break
		}
		idx[key] = len(m.textBlocks)
		m.textBlocks = append(m.textBlocks, textRecipient{addr: h.addr, diag: diag, ctx: ctx, lines: kept, line: h.line, remote: remoteHost(diag), strong: h.strong})
	}
}

// boilerplate ends the useful text of a recipient's block: the lines that
// follow are an MTA's closing words.
var boilerplate = []string{
	"for further assistance", "if you do so, please include", "the mail system", "please contact your",
	"for more information", "this is a permanent error", "no action is required", "original message",
	"reporting-mta:", "--- below this line", "------ this is a copy", "learn more", "to learn more",
	"the following address(es) failed", "------ this is a copy of the message",
	"content-type:", "content-transfer-encoding:", "-- the postfix program",
	"this nondelivery report was generated", "message details:", "------- original message",
}

func cutBoilerplate(lines []string) []string {
	for i, l := range lines {
		tl := lowerASCII(strings.TrimSpace(l))
		if i == 0 {
			continue
		}
		for _, b := range boilerplate {
			if strings.HasPrefix(tl, b) {
				return lines[:i]
			}
		}
	}
	return lines
}

// remoteHost picks the remote MTA out of a diagnostic: "host X said",
// "host X[ip]", "remote host X".
func remoteHost(diag string) string {
	lower := lowerASCII(diag)
	for _, key := range []string{"remote host ", "host ", "server "} {
		i := strings.Index(lower, key)
		for i >= 0 {
			rest := diag[i+len(key):]
			f := strings.Fields(rest)
			if len(f) > 0 {
				h := strings.Trim(f[0], "[]():;,<>")
				h = strings.TrimSuffix(h, ".")
				if strings.Contains(h, ".") && !strings.Contains(h, "@") && len(h) < 256 && (isWordByte(h[0])) {
					return lowerASCII(h)
				}
			}
			j := strings.Index(lower[i+len(key):], key)
			if j < 0 {
				break
			}
			i = i + len(key) + j
		}
	}
	return ""
}

// blockFor returns the text block of a recipient (by its final or its
// original address), or the only block when there is one.
func (m *msgView) blockFor(addrs ...string) *textRecipient {
	for _, a := range addrs {
		if a == "" {
			continue
		}
		for i := range m.textBlocks {
			if sameAddr(m.textBlocks[i].addr, a) {
				return &m.textBlocks[i]
			}
		}
	}
	if len(m.textBlocks) == 1 {
		return &m.textBlocks[0]
	}
	return nil
}

// summaryDiag returns the lines of the text that carry an SMTP reply or
// status code, for a report whose status part gives no diagnostic.
func (m *msgView) summaryDiag() string {
	var out []string
	for _, l := range m.textLines {
		if findReply(l) > 0 || findStatus(l) != "" {
			out = append(out, l)
		}
	}
	return clip(squash(strings.Join(out, " ")), 1000)
}

// bounceSubjects are words of bounce subjects (lowercase).
var bounceSubjects = []string{
	"undeliver", "undelivered", "delivery fail", "delivery status notification", "failure notice", "returned mail",
	"mail delivery failed", "delivery failure", "non-delivery", "nondelivery", "could not be delivered",
	"returned to sender", "delivery problem", "mail system error", "delivery notification", "bounce",
	"failed delivery", "message not delivered", "not delivered", "delivery has failed", "rejected:",
	"mail failure", "mail could not be delivered", "delivery report", "unzustellbar", "non remis",
	"delivery error", "warning: could not send", "delayed mail", "delivery delayed", "delivery incomplete",
	"returned message", "permanent error", "error sending message", "mensaje no entregado", "non recapitabile",
	"failure delivery", "mail error", "rejected mail", "message delivery", "invalid recipient", "user unknown",
	"nicht zustellbar", "could not send message", "delivery final failure", "your message was blocked",
	"message you sent", "message blocked", "delivery to the following recipient", "notification (failure)",
	"there was an error", "delivery status", "failed mail", "error",
}

// bounceMarkers are phrases of MTAs' bounce texts (lowercase).
var bounceMarkers = []string{
	"this is the qmail-send program", "this message was created automatically by mail delivery software",
	"this is the mail system at host", "the original message was received at", "could not be delivered to",
	"delivery to the following recipient", "i'm afraid i wasn't able to deliver", "unable to deliver your message",
	"your message could not be delivered", "delivery has failed to these recipients", "the following addresses had permanent fatal errors",
	"this is an automatically generated delivery status notification", "message could not be delivered",
	"the following message to", "was undeliverable", "permanent fatal errors", "delivery failed",
	"your message to", "failed permanently", "technical details of permanent failure", "message delivery has failed",
	"could not deliver", "was not delivered", "sorry, we were unable to deliver", "undeliverable",
	"mail delivery failed", "reporting-mta:", "final-recipient:", "remote host said", "transcript of session follows",
	"delivery to the following recipients failed", "an error occurred while trying to deliver", "is not a valid address",
	"giving up on", "could not be sent", "delivery status notification", "returned to sender", "delivery attempts will continue",
	"has not yet been delivered", "could not send message for past", "will continue to try",
	"did not reach the following recipient", "invalid user address", "delivery failed",
}

// looksLikeBounce weighs the signs that a message without a delivery-
// status part is a bounce: the sender, the subject, X-Failed-Recipients,
// the words of the text; signs of an auto-reply weigh against.
func (m *msgView) looksLikeBounce() bool {
	score := 0
	h := m.t.header
	if h.Has("X-Failed-Recipients") {
		score += 3
	}
	if m.reportType() == "delivery-status" {
		score += 3
	}
	from := lowerASCII(decodeWords(h.Get("From")))
	for _, w := range []string{"mailer-daemon", "mailer_daemon", "postmaster", "mail delivery", "mail administrator", "mail system", "mdaemon", "mail-daemon", "mailerdaemon", "bounce", "returned mail", "nobody@", "mailer daemon", "post_master", "mail.delivery"} {
		if strings.Contains(from, w) {
			score += 2
			break
		}
	}
	subj := lowerASCII(m.res.Subject)
	for _, w := range bounceSubjects {
		if strings.Contains(subj, w) {
			score += 2
			break
		}
	}
	lower := m.lowerText
	for _, w := range bounceMarkers {
		if strings.Contains(lower, w) {
			score += 2
			break
		}
	}
	if m.res.Envelope.MailFrom == "" && strings.Contains(lowerASCII(h.Get("Return-Path")), "<>") {
		score++
	}
	switch autoReplyKind(m) {
	case "vacation", "challenge":
		score -= 3
	case "auto-replied":
		score--
	}
	return score >= 2
}

// delayWords say a text bounce is a delay warning.
var delayWords = []string{
	"this is a warning message only", "delivery is delayed", "has not yet been delivered", "will continue to try",
	"delivery attempts will continue", "still trying", "could not send message for past", "message is delayed",
	"delivery delayed", "(delay)", "will be retried", "not yet been delivered", "will keep trying",
}

// successNotice reports whether a text bounce-like message is a success
// notice ("Your message has been successfully delivered to the following
// recipients") with no word of failure.
func successNotice(lower, subj string) bool {
	ok := false
	for _, w := range []string{"successfully delivered", "delivery has been successful", "was delivered to", "has been delivered to", "delivered successfully", "delivery succeeded", "delivery was successful"} {
		if strings.Contains(lower, w) || strings.Contains(subj, w) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for _, w := range []string{"fail", "could not", "couldn't", "undeliver", "not delivered", "error", "reject", "unable", "permanent", "delay"} {
		if strings.Contains(lower, w) || strings.Contains(subj, w) {
			return false
		}
	}
	return true
}

// textBounce reads a bounce that has no delivery-status part: DSN fields
// written into its text, else the recipients its text names.
func (m *msgView) textBounce() bool {
	lower := m.lowerText
	if strings.Contains(lower, "final-recipient:") || strings.Contains(lower, "original-recipient:") {
		f := parseDSN([]byte(m.text), m.o.MaxRecipients)
		if len(f.recipients) > 0 {
			m.statuses = append(m.statuses, &entity{mediaType: "message/delivery-status", body: []byte(m.text)})
			if m.dsn() {
				return true
			}
		}
	}
	m.scanText()
	blocks := m.textBlocks
	failed := headerAddrs(m.t.header.Get("X-Failed-Recipients"))
	if len(failed) > 0 {
		// The header is the list; the text says why.
		var out []textRecipient
		for _, a := range failed {
			if b := m.blockFor(a); b != nil && (len(failed) > 1 || sameAddr(b.addr, a)) {
				out = append(out, textRecipient{addr: a, diag: b.diag, ctx: b.ctx, lines: b.lines, line: b.line, remote: b.remote})
			} else {
				out = append(out, textRecipient{addr: a, diag: m.bodyDiag(), line: -1})
			}
		}
		blocks = out
	}
	fallback := false
	if len(blocks) == 0 && m.res.Original != nil {
		if to := headerAddr(m.res.Original.To); to != "" && !daemonLocal(to) {
			blocks = []textRecipient{{addr: to, diag: m.bodyDiag(), line: -1}}
			fallback = true
		}
	}
	if len(blocks) == 0 {
		return false
	}
	action := "failed"
	subj := lowerASCII(m.res.Subject)
	for _, w := range delayWords {
		if strings.Contains(lower, w) || strings.Contains(subj, w) {
			action = "delayed"
			break
		}
	}
	if action == "delayed" && (strings.Contains(lower, "permanent") || strings.Contains(lower, "fatal error") || strings.Contains(lower, "given up") || strings.Contains(lower, "gave up")) {
		action = "failed"
	}
	if action == "failed" && successNotice(lower, subj) {
		action = "delivered"
	}
	// Google Groups answers a sender who may not post to a group with a
	// bounce in the sender's language; what it means is always the same.
	groups := strings.Contains(lower, "groups.google.com") && strings.Contains(lowerASCII(m.t.header.Get("From")), "google")
	// What the text says before it names the first recipient (computed
	// once: it is the same preamble for all).
	var head string
	headDone := false
	for _, b := range blocks {
		r := Recipient{Address: b.addr, Action: action, RemoteMTA: b.remote}
		diag := b.diag
		if diag == "" {
			// Nothing after the address: the words are before it (Lotus
			// Notes), or there are none.
			diag = m.paragraphBefore(b)
			if diag == "" && len(b.lines) == 0 {
				diag = m.bodyDiag()
			}
		}
		fill(&r, "", diag, "", b.ctx)
		if (r.Reason == ReasonOnHold || r.Reason == ReasonUndefined) && len(b.lines) > 0 {
			// Some MTAs say why before they say who.
			if !headDone {
				headDone = true
				if h := m.headBefore(blocks[0].addr); phraseReason(matchText(h)) != "" {
					head = h
				}
			}
			if head != "" {
				fill(&r, "", squash(diag+" "+head), "", b.ctx+" "+head)
			}
		}
		if fallback && r.Reason == ReasonOnHold {
			// The text names no recipient and no error: nothing to go on.
			setReason(&r, ReasonUndefined)
		}
		if groups && r.StatusInferred {
			setReason(&r, ReasonRejected)
		}
		m.res.Recipients = append(m.res.Recipients, r)
	}
	switch action {
	case "delayed":
		m.res.Kind = KindDelayed
	case "delivered":
		m.res.Kind = KindDelivered
	default:
		m.res.Kind = KindBounce
	}
	if m.rcptCapped {
		m.res.Limits = append(m.res.Limits, "recipients")
	}
	return true
}

// headBefore returns the text before the first line that names addr,
// without the MTA's greeting lines (at most 2000 bytes).
func (m *msgView) headBefore(addr string) string {
	i := strings.Index(m.lowerText, lowerASCII(addr))
	if i < 0 {
		return ""
	}
	head := m.text[:i]
	if len(head) > 2000 {
		head = head[len(head)-2000:]
	}
	// Up to the MTA's summary of the message ("Message details: ...
	// MAIL FROM: ..."), which names no error.
	lines := strings.Split(head, "\n")
	for j, l := range lines {
		if strings.HasPrefix(lowerASCII(strings.TrimSpace(l)), "message details:") {
			return squash(strings.Join(lines[:j], " "))
		}
	}
	return squash(head)
}

// paragraphBefore returns the line that names a recipient with the
// non-blank lines right above it, or "" when that says nothing but the
// address.
func (m *msgView) paragraphBefore(b textRecipient) string {
	lines := m.textLines
	i := b.line
	if i < 0 || i >= len(lines) {
		return ""
	}
	j := i
	for j > 0 && strings.TrimSpace(lines[j-1]) != "" && i-j < 5 {
		j--
	}
	p := squash(strings.Join(lines[j:i+1], " "))
	if strings.Trim(strings.ReplaceAll(matchText(p), "<address>", ""), " *-•:;,.()<>") == "" {
		return "" // only the address itself
	}
	return p
}

// bodyDiag is the text of a bounce squashed to one line, for a
// recipient whose own block is empty.
func (m *msgView) bodyDiag() string {
	return clip(squash(m.text), 1000)
}
