package inbound

import (
	"bytes"
	"strconv"
	"strings"
)

// msgView is the classifier's view of a walked message.
type msgView struct {
	t   *tree
	o   *Options
	res *Result

	texts     []*entity // human-readable parts, in order
	statuses  []*entity // delivery-status parts
	feedbacks []*entity // feedback-report parts
	originals []*entity // returned messages or their headers
	reports   []*entity // candidate report attachments

	text       string // the readable text before the returned message
	lowerText  string // text, lowercased (ASCII): offsets hold in text
	textLines  []string
	afterText  string // the readable text from the returned message on
	textBlocks []textRecipient
	scanned    bool
	rcptCapped bool // more recipients were named than MaxRecipients
}

func (m *msgView) classify() {
	for _, e := range m.t.parts {
		switch {
		case isStatusType(e.mediaType):
			m.statuses = append(m.statuses, e)
		case e.mediaType == "message/feedback-report":
			m.feedbacks = append(m.feedbacks, e)
		case isOriginalType(e.mediaType):
			m.originals = append(m.originals, e)
		case reportCandidate(e):
			m.reports = append(m.reports, e)
		case strings.HasPrefix(e.mediaType, "text/"):
			if strings.HasPrefix(lowerASCII(strings.TrimSpace(e.header.Get("Content-Disposition"))), "attachment") && e.filename != "" {
				continue // a file someone attached, not what the message says
			}
			m.texts = append(m.texts, e)
		}
	}
	m.splitText()
	m.res.Original = m.original()

	if len(m.feedbacks) > 0 || m.reportType() == "feedback-report" {
		if m.arf() {
			return
		}
	}
	if len(m.statuses) > 0 {
		if m.dsn() {
			return
		}
	}
	if (len(m.reports) > 0 || m.inlineReport()) && m.reportish() {
		if m.report() {
			return
		}
	}
	if m.inlineFeedback() {
		return
	}
	if m.ses() {
		return
	}
	if m.textForensic() || m.jmrp() || m.unsubscribe() {
		return
	}
	if m.looksLikeBounce() {
		if m.textBounce() {
			return
		}
		if m.res.Kind == "" {
			if len(m.statuses) > 0 {
				m.unparsed(UnparsedDSNEmpty, "the delivery-status part names no recipient, and neither does the text")
			} else {
				m.unparsed(UnparsedBounceNoRecipient, "the message reads as a bounce, but names no recipient that could be found")
			}
		}
		return
	}
	m.response()
}

func (m *msgView) reportType() string {
	if m.t.mediaType != "multipart/report" {
		return ""
	}
	return lowerASCII(m.t.params["report-type"])
}

func (m *msgView) unparsed(reason, detail string) {
	m.res.Kind = KindResponse
	m.res.Recipients = nil
	m.res.Response = &Response{Kind: ResponseUnparsed, Reason: reason, Detail: detail}
}

// originalMarkers are the lines non-MIME bounces put before the returned
// message (lowercase, compared with the trimmed line's start).
var originalMarkers = []string{
	"--- below this line is a copy of the message",
	"------ this is a copy of the message",
	"------ this is a copy of your message",
	"----- original message -----",
	"----- original message follows",
	"----- message header follows",
	"--- the header of the original message is following",
	"-----original message-----",
	"original message follows",
	"------- returned message --------",
	"--- original message follows",
	"----- unsent message below -----",
	"---- unsent message follows ----",
	"----- the original message follows",
	"message headers follow",
	"included is a copy of the message header",
	"below is a copy of the original message",
	"------ original message ------",
	"original message headers",
	"en-têtes de message d'origine",
	"en-tetes de message d'origine",
	"ursprüngliche nachrichtenkopfzeilen",
	"--------- original message ---------",
	"--- message header follows",
	"----- this is a copy of the original message",
	"------ this is a copy of the headers",
	"----- unsent message follows -----",
	"--- original message header ---",
	"----- original message header -----",
	"------- original message --------",
	"content-type: message/rfc822",
	"--- message follows ---",
	"bounced e-mail:",
	"-------original message",
	"-------original mail info",
	"bounced email:",
	"received message follows",
	"***** original message *****",
	"----original message----",
	"---------- forwarded message ----------",
	"-------- original message --------",
}

// splitText joins the readable parts and splits off the returned message.
func (m *msgView) splitText() {
	var b strings.Builder
	for _, e := range m.texts {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(partText(e))
	}
	all := unquote(b.String())
	lower := lowerASCII(all)
	cut := -1
	pos := 0
	for _, line := range strings.SplitAfter(lower, "\n") {
		tl := strings.TrimSpace(line)
		tl = strings.TrimLeft(tl, "| >")
		for _, mk := range originalMarkers {
			if strings.HasPrefix(tl, mk) {
				cut = pos
				break
			}
		}
		if cut >= 0 {
			break
		}
		pos += len(line)
	}
	if cut >= 0 {
		m.text, m.afterText = all[:cut], all[cut:]
	} else {
		m.text = all
	}
	m.lowerText = lowerASCII(m.text)
	m.textLines = strings.Split(m.text, "\n")
}

// unquote removes one level of "> " quoting from a text whose lines are
// mostly quoted: a bounce forwarded by a person.
func unquote(s string) string {
	lines := strings.Split(s, "\n")
	quoted, nonEmpty := 0, 0
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		nonEmpty++
		if strings.HasPrefix(l, ">") {
			quoted++
		}
	}
	if nonEmpty < 4 || quoted*2 < nonEmpty {
		return s
	}
	for i, l := range lines {
		if strings.HasPrefix(l, ">") {
			l = l[1:]
			l = strings.TrimPrefix(l, " ")
			lines[i] = l
		}
	}
	return strings.Join(lines, "\n")
}

// original finds the returned message: a message/rfc822 (or headers)
// part, else the text after a non-MIME bounce's marker line.
func (m *msgView) original() *Original {
	var raw []byte
	headersOnly := false
	truncated := false
	for _, e := range m.originals {
		raw, truncated = e.body, e.truncated
		headersOnly = strings.Contains(e.mediaType, "headers")
		if len(bytes.TrimSpace(raw)) > 0 {
			break
		}
	}
	if len(bytes.TrimSpace(raw)) == 0 && m.afterText != "" {
		// Skip the marker line itself.
		s := m.afterText
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		raw = []byte(strings.TrimLeft(s, "\n"))
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	lr := newLineReader(bytes.NewReader(raw))
	h := readHeader(lr)
	if len(h) == 0 {
		return nil
	}
	o := &Original{
		MessageID:   strings.TrimSpace(h.Get("Message-ID")),
		From:        decodeWords(h.Get("From")),
		To:          decodeWords(h.Get("To")),
		Subject:     squash(decodeWords(h.Get("Subject"))),
		Date:        strings.TrimSpace(h.Get("Date")),
		HeadersOnly: headersOnly,
	}
	if o.MessageID == "" && o.From == "" && o.To == "" && o.Subject == "" {
		return nil
	}
	for _, f := range h {
		o.Headers = append(o.Headers, HeaderField{Name: f.Name, Value: decodeWords(f.Value)})
	}
	ex := raw
	if len(ex) > m.o.MaxExcerptBytes {
		ex = ex[:m.o.MaxExcerptBytes]
		truncated = true
	}
	o.Excerpt = append([]byte(nil), ex...)
	o.ExcerptTruncated = truncated
	if !headersOnly {
		o.Text = originalText(raw, m.o)
	}
	return o
}

// originalText decodes the text parts of a returned message (transfer
// encoding and charset undone, HTML kept as source so its links can be
// read), at most MaxExcerptBytes of them.
func originalText(raw []byte, o *Options) string {
	sub := *o
	sub.MaxKeptBytes = int64(2 * o.MaxExcerptBytes)
	sub.MaxTextBytes = o.MaxExcerptBytes
	sub.MaxParts = min(o.MaxParts, 32)
	w := &walker{o: &sub, lr: newLineReader(bytes.NewReader(raw)), t: &tree{}}
	w.readTree()
	var b strings.Builder
	for _, e := range w.t.parts {
		if !strings.HasPrefix(e.mediaType, "text/") || e.header.Has("X-Inbound-Preamble") {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(toUTF8(e.body, e.params["charset"]))
		if b.Len() >= o.MaxExcerptBytes {
			break
		}
	}
	return clip(b.String(), o.MaxExcerptBytes)
}

// dsn reads the delivery-status parts.
func (m *msgView) dsn() bool {
	var rcpts []dsnRecipient
	reporting := ""
	for _, e := range m.statuses {
		f := parseDSN(e.body, m.o.MaxRecipients)
		rcpts = append(rcpts, f.recipients...)
		if reporting == "" {
			reporting = f.reportingMTA
		}
	}
	if len(rcpts) == 0 {
		// A report part with no recipient: the text may still say.
		return false
	}
	m.scanText()
	delayed, failed, delivered := 0, 0, 0
	for _, d := range rcpts {
		if normAddr(firstNonEmpty(d.final, d.original)) == "" {
			continue // a recipient field with no address in it
		}
		r := Recipient{
			Address:         normAddr(firstNonEmpty(d.final, d.original)),
			OriginalAddress: normAddr(d.original),
			Action:          d.action,
			RemoteMTA:       hostOnly(d.remoteMTA),
		}
		if r.OriginalAddress == r.Address {
			r.OriginalAddress = ""
		}
		diag := squash(d.diag)
		block := m.blockFor(r.Address, r.OriginalAddress)
		if block != nil {
			if diag == "" || genericDiag(diag) {
				if block.diag != "" {
					diag = firstNonEmpty(block.diag, diag)
				}
			} else if more := squash(continuation(block.lines, diag)); len(more) > len(diag) && strings.HasPrefix(lowerASCII(more), lowerASCII(clip(diag, 40))) {
				// The status part's copy may be cut at its first line; the
				// text has the whole reply.
				diag = more
			}
			if r.RemoteMTA == "" {
				r.RemoteMTA = block.remote
			}
		}
		if (diag == "" || genericDiag(diag)) && block == nil && len(rcpts) == 1 {
			// The report says little and the text names no recipient:
			// the text's lines with SMTP codes say more.
			diag = squash(diag + " " + m.summaryDiag())
		}
		if r.Action == "" {
			r.Action = "failed"
		}
		ctx := ""
		if block != nil {
			ctx = block.ctx
		}
		fill(&r, normStatus(d.status), diag, d.diagType, ctx)
		switch r.Action {
		case "delayed":
			delayed++
		case "delivered", "relayed", "expanded", "deliverable":
			delivered++
		default:
			failed++
		}
		m.res.Recipients = append(m.res.Recipients, r)
	}
	switch {
	case failed == 0 && delayed > 0:
		m.res.Kind = KindDelayed
	case failed == 0 && delivered > 0:
		m.res.Kind = KindDelivered
	default:
		m.res.Kind = KindBounce
	}
	if len(m.res.Recipients) == 0 {
		m.res.Kind = ""
		return false
	}
	if len(rcpts) >= m.o.MaxRecipients {
		m.res.Limits = append(m.res.Limits, "recipients")
	}
	return true
}

// bestInText picks the code a diagnostic gives: of the failure codes in
// it that differ from the status field, the most specific ("5.1.0 -
// Unknown address error 550-'5.7.1 ... Access denied'" gives 5.7.1).
func bestInText(diag, field string) string {
	best := ""
	for i := 0; i+5 <= len(diag); {
		c, n := scanStatus(diag, i)
		if c == "" {
			i++
			continue
		}
		i = n
		if c[0] == '2' || c == field {
			continue
		}
		if best == "" {
			best = c
		} else if best[0] == c[0] {
			best = preferStatus(best, c, 0)
		}
	}
	if best == "" {
		return findStatusNot(diag, field)
	}
	return best
}

// continuation finds the line of lines where diag starts and returns
// the text from there to the end of its paragraph (up to a blank line or
// a separator), when that says more than diag: the status part's copy
// of a reply may be cut at its first line.
func continuation(lines []string, diag string) string {
	key := lowerASCII(clip(diag, 40))
	for i, l := range lines {
		sl := squash(l)
		j := strings.Index(lowerASCII(sl), key)
		if j < 0 {
			continue
		}
		out := []string{sl[j:]}
		for _, n := range lines[i+1:] {
			t := strings.TrimSpace(n)
			if t == "" || strings.HasPrefix(t, "---") || strings.HasPrefix(t, "<<<") || strings.HasPrefix(t, ">>>") || strings.HasPrefix(t, "...") || strings.HasPrefix(t, "==") {
				break
			}
			out = append(out, t)
		}
		return strings.Join(out, " ")
	}
	return ""
}

// genericDiag reports whether a Diagnostic-Code says nothing beyond the
// status (some MTAs write "smtp; 550" or a copy of the status).
func genericDiag(d string) bool {
	return len(strings.TrimSpace(d)) <= 12
}

// fill completes a recipient from its status field, its diagnostic and
// the diagnostic's type: status, reply code, command, reason, verdict.
// maxDiag bounds the text a recipient's reason is read from.
const maxDiag = 4 << 10

func fill(r *Recipient, statusField, diag, diagType, context string) {
	diag, context = clip(diag, maxDiag), clip(context, maxDiag)
	r.Diagnostic = clip(diag, 1000)
	lower := lowerASCII(diag)
	r.ReplyCode = findReply(diag)
	inText := bestInText(diag, statusField)
	st := preferStatus(statusField, inText, r.ReplyCode)
	r.Command = smtpCommand(lower)
	if r.Command == "" && context != "" {
		r.Command = smtpCommand(lowerASCII(context))
	}
	if r.ReplyCode == 0 && context != "" {
		r.ReplyCode = findReply(context)
	}
	class := byte(0)
	switch {
	case st != "":
		class = st[0]
	case r.ReplyCode > 0:
		class = strconv.Itoa(r.ReplyCode)[0]
	case r.Action == "delayed":
		class = '4'
	}
	reason := decideReason(matchText(diag), st, r.Command, diagType, r.Action, r.ReplyCode > 0 || inText != "")
	if rr := rhostReason(r.Address, r.RemoteMTA, matchText(diag)); rr != "" {
		reason = rr
	}
	if class == 0 {
		class = '5'
		if reason == ReasonExpired && (r.Action == "delayed" || strings.Contains(lower, "retry timeout exceeded") && !strings.Contains(lower, "delivery retry timeout") || strings.Contains(lower, "have been failing for a long time")) {
			// Exim's words for giving up after temporary errors.
			class = '4'
		}
	}
	if st == "" {
		st = pseudoStatus(reason, class)
		if reason == ReasonDelivered || r.Action == "delivered" {
			st, reason = "2.0.0", ReasonDelivered
		}
		r.StatusInferred = true
	}
	r.Status = st
	r.Reason = reason
	r.Verdict = verdictFor(reason, class)
	if r.Action == "delayed" {
		r.Verdict = Soft
	}
}

// setReason replaces a recipient's reason, with the inferred status and
// the verdict that go with it.
func setReason(r *Recipient, reason Reason) {
	class := byte('5')
	if len(r.Status) > 0 {
		class = r.Status[0]
	}
	r.Reason = reason
	if r.StatusInferred {
		r.Status = pseudoStatus(reason, class)
	}
	r.Verdict = verdictFor(reason, class)
	if r.Action == "delayed" {
		r.Verdict = Soft
	}
}

// decideReason: the words of the reply first, then what the status code
// says on its own, then the context (delayed, the command, the
// diagnostic's type).
func decideReason(lower, st, cmd, diagType, action string, remoteReply bool) Reason {
	if strings.HasPrefix(st, "2.") {
		return ReasonDelivered
	}
	stReason := statusReason(st)
	hits := matchRules(lower)
	if dr := hits.decisive(); dr != "" {
		return dr
	}
	// Codes that say it all, whatever the words.
	switch stReason {
	case ReasonMailboxFull, ReasonExceedLimit, ReasonHasMoved, ReasonNotAccept, ReasonRequirePTR, ReasonAuthFailure, ReasonSuspend, ReasonFailedSTARTTLS:
		if pr := hits.first(); pr == "" || pr == ReasonUserUnknown || pr == ReasonBlocked || pr == ReasonPolicyViolation || pr == ReasonSecurityError || pr == ReasonMesgTooBig || pr == ReasonFiltered {
			return stReason
		}
	}
	if diagType == "x-unix" && !strings.Contains(lower, "quota") {
		return ReasonMailerError
	}
	if stReason != "" && stReason != ReasonDelivered && hits.has(stReason) {
		// The words confirm what the code says.
		if !(stReason == ReasonUserUnknown && cmd == "MAIL") {
			return stReason
		}
	}
	if diagType == "x-unix" && !strings.Contains(lower, "quota") {
		return ReasonMailerError
	}
	pr := hits.first()
	if pr == ReasonUserUnknown && domainDoesNotExist(lower) {
		pr = ReasonHostUnknown // "neko.example.com does not exist"
	}
	if pr == ReasonUserUnknown && stReason != ReasonUserUnknown && cmd != "RCPT" && !definiteUnknown(lower, remoteReply) {
		// "User unknown" is hard only with evidence: a code that says so
		// (x.1.1), a refusal at RCPT TO, or words no filter uses (a
		// groupware directory's). Without it (no code, x.0.0, 5.2.x,
		// 5.7.x, and no command named, or a refusal after DATA) it is
		// taken as a filter's refusal, as Sisimai does: content filters
		// often answer "user unknown", and a wrong suppression costs more
		// than a late one.
		pr = ReasonFiltered
	}
	if cmd == "HELO" && (pr == "" || pr == ReasonHostUnknown || pr == ReasonUserUnknown || pr == ReasonFiltered) {
		// Refused at HELO: it is the sending host that was refused.
		pr = ReasonBlocked
	}
	if pr == ReasonHostUnknown && len(st) > 0 && st[0] == '4' {
		// A temporary "domain not found" is a DNS failure.
		pr = ReasonNetworkError
	}
	if cmd == "MAIL" && (pr == ReasonUserUnknown || pr == ReasonHostUnknown || pr == ReasonFiltered) {
		// Refused at MAIL FROM: it is the sender that is unknown.
		pr = ReasonRejected
	}
	if pr == ReasonUserUnknown && (cmd == "MAIL" || cmd == "HELO" || cmd == "CONN") && stReason != ReasonUserUnknown {
		pr = ""
	}
	if pr != "" {
		return pr
	}
	if stReason != "" {
		if stReason == ReasonUserUnknown && cmd == "DATA" {
			return ReasonFiltered
		}
		return stReason
	}
	if len(st) >= 3 {
		switch st[:3] {
		case "5.6", "4.6":
			return ReasonContentError
		case "5.7", "4.7":
			return ReasonSecurityError
		}
	}
	switch {
	case action == "delayed" || action == "expired":
		return ReasonExpired
	case cmd == "HELO":
		return ReasonBlocked
	case strings.TrimSpace(lower) != "":
		return ReasonOnHold
	}
	return ReasonUndefined
}

// domainDoesNotExist reports whether the thing said not to exist is a
// domain name ("553 neko.example.com does not exist"), not a mailbox.
func domainDoesNotExist(lower string) bool {
	for from := 0; ; {
		i := strings.Index(lower[from:], " does not exist")
		if i < 0 {
			return false
		}
		i += from
		f := strings.Fields(lower[:i])
		if len(f) > 0 {
			w := strings.Trim(f[len(f)-1], "'\"()[],;:")
			if strings.Count(w, ".") >= 1 && !strings.ContainsAny(w, "@<>") && len(w) > 3 && isWordByte(w[len(w)-1]) {
				return true
			}
		}
		from = i + 1
	}
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}
