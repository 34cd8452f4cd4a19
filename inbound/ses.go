package inbound

import (
	"bytes"
	"encoding/json"
	"strings"
)

// sesNote is what an Amazon SES notification (JSON, sent by mail through
// SNS) says. SNS mail may cut the JSON short, so it is read token by
// token and whatever came before the cut is kept.
type sesNote struct {
	kind                 string // Bounce, Complaint, Delivery
	bounceType           string
	reportingMTA         string
	recipients           []sesRecipient
	feedbackType         string
	userAgent            string
	arrival              string
	smtpResponse         string
	messageID, subject   string
	from, to, source     string
	current              *sesRecipient
	deliveryRecipients   []string
	complainedRecipients []string
}

type sesRecipient struct {
	addr, action, status, diag string
}

// parseSES reads an SES notification; nil when b is not one.
func parseSES(b []byte) *sesNote {
	b = bytes.TrimSpace(b)
	if !bytes.HasPrefix(b, []byte("{")) {
		return nil
	}
	if !bytes.Contains(b, []byte(`"notificationType"`)) && !bytes.Contains(b, []byte(`"eventType"`)) {
		if bytes.Contains(b, []byte(`"Type"`)) && bytes.Contains(b, []byte(`"Message"`)) {
			return parseSNS(b)
		}
		return nil
	}
	n := &sesNote{}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	type frame struct{ obj, wantKey bool }
	var st []frame
	var path []string // object keys, and "[]" inside arrays
	valueEnded := func() {
		if len(st) > 0 && st[len(st)-1].obj && len(path) > 0 {
			path = path[:len(path)-1]
			st[len(st)-1].wantKey = true
		}
	}
	for len(st) < 64 {
		tok, err := d.Token()
		if err != nil {
			break // the end, or the cut: keep what was read
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				if strings.Join(path, ".") == "bounce.bouncedRecipients.[]" {
					n.recipients = append(n.recipients, sesRecipient{})
					n.current = &n.recipients[len(n.recipients)-1]
				}
				st = append(st, frame{obj: true, wantKey: true})
			case '[':
				st = append(st, frame{})
				path = append(path, "[]")
			case '}':
				st = st[:len(st)-1]
				valueEnded()
			case ']':
				st = st[:len(st)-1]
				path = path[:len(path)-1]
				valueEnded()
			}
		case string:
			if len(st) > 0 && st[len(st)-1].obj && st[len(st)-1].wantKey {
				path = append(path, t)
				st[len(st)-1].wantKey = false
				continue
			}
			n.set(strings.Join(path, "."), t)
			valueEnded()
		case json.Number:
			n.set(strings.Join(path, "."), t.String())
			valueEnded()
		default:
			valueEnded()
		}
	}
	if n.kind == "" {
		return nil
	}
	return n
}

// parseSNS unwraps an SNS envelope whose Message is the SES notification.
func parseSNS(b []byte) *sesNote {
	var env struct {
		Type, Message string
	}
	if json.NewDecoder(bytes.NewReader(b)).Decode(&env) != nil {
		// Mail may fold the long Message line: join the folds.
		b = bytes.ReplaceAll(b, []byte("\n "), nil)
		if json.NewDecoder(bytes.NewReader(b)).Decode(&env) != nil {
			return nil
		}
	}
	if env.Message == "" {
		return nil
	}
	return parseSES([]byte(env.Message))
}

func (n *sesNote) set(path, v string) {
	switch path {
	case "notificationType", "eventType":
		n.kind = v
	case "bounce.bounceType":
		n.bounceType = v
	case "bounce.reportingMTA", "delivery.reportingMTA":
		n.reportingMTA = stripType(v)
	case "bounce.bouncedRecipients.[].emailAddress":
		if n.current != nil {
			n.current.addr = normAddr(v)
		}
	case "bounce.bouncedRecipients.[].action":
		if n.current != nil {
			n.current.action = lowerASCII(v)
		}
	case "bounce.bouncedRecipients.[].status":
		if n.current != nil {
			n.current.status = v
		}
	case "bounce.bouncedRecipients.[].diagnosticCode":
		if n.current != nil {
			n.current.diag = v
		}
	case "complaint.complainedRecipients.[].emailAddress":
		n.complainedRecipients = append(n.complainedRecipients, normAddr(v))
	case "complaint.complaintFeedbackType":
		n.feedbackType = lowerASCII(v)
	case "complaint.userAgent":
		n.userAgent = v
	case "complaint.arrivalDate":
		n.arrival = v
	case "delivery.recipients.[]":
		n.deliveryRecipients = append(n.deliveryRecipients, normAddr(v))
	case "delivery.smtpResponse":
		n.smtpResponse = v
	case "mail.messageId":
		n.messageID = v
	case "mail.source":
		n.source = v
	case "mail.commonHeaders.subject":
		n.subject = v
	case "mail.commonHeaders.messageId":
		if n.messageID == "" {
			n.messageID = v
		}
	case "mail.commonHeaders.from.[]":
		if n.from == "" {
			n.from = v
		}
	case "mail.commonHeaders.to.[]", "mail.destination.[]":
		if n.to == "" {
			n.to = v
		}
	}
}

// ses classifies an Amazon SES notification, if the text is one.
func (m *msgView) ses() bool {
	var n *sesNote
	for _, e := range m.texts {
		if n = parseSES(e.body); n != nil {
			break
		}
	}
	if n == nil {
		return false
	}
	if m.res.Original == nil && (n.messageID != "" || n.to != "") {
		m.res.Original = &Original{MessageID: n.messageID, From: n.from, To: n.to, Subject: n.subject, HeadersOnly: true}
	}
	switch lowerASCII(n.kind) {
	case "bounce":
		for _, sr := range n.recipients {
			if sr.addr == "" || len(m.res.Recipients) >= m.o.MaxRecipients {
				continue
			}
			r := Recipient{Address: sr.addr, Action: firstNonEmpty(sr.action, "failed"), RemoteMTA: n.reportingMTA}
			t, diag, ok := strings.Cut(sr.diag, ";")
			if !ok || strings.ContainsAny(t, " <@") {
				diag = sr.diag
			}
			fill(&r, normStatus(sr.status), squash(diag), "", "")
			if strings.EqualFold(n.bounceType, "Transient") && r.Verdict == Hard {
				r.Verdict = Soft
			}
			m.res.Recipients = append(m.res.Recipients, r)
		}
		if len(m.res.Recipients) == 0 {
			m.unparsed(UnparsedBounceNoRecipient, "an Amazon SES bounce notification without bounced recipients")
			return true
		}
		m.res.Kind = KindBounce
	case "complaint":
		f := &Feedback{FeedbackType: firstNonEmpty(n.feedbackType, "abuse"), UserAgent: n.userAgent, ArrivalDate: n.arrival,
			OriginalRcptTo: n.complainedRecipients, OriginalMailFrom: normAddr(n.source)}
		m.finishFeedback(f)
		if f.Reporter == "" || f.Reporter == n.userAgent {
			f.Reporter = firstNonEmpty(n.userAgent, "amazonses.com")
		}
	case "delivery":
		if len(n.deliveryRecipients) == 0 {
			m.unparsed(UnparsedBounceNoRecipient, "an Amazon SES delivery notification without recipients")
			return true
		}
		for _, a := range n.deliveryRecipients {
			r := Recipient{Address: a, Action: "delivered", RemoteMTA: n.reportingMTA}
			fill(&r, findStatus(n.smtpResponse), n.smtpResponse, "", "")
			m.res.Recipients = append(m.res.Recipients, r)
		}
		m.res.Kind = KindDelivered
	default:
		return false
	}
	return true
}
