package inbound

import "strings"

// autoSubjects are subject words of vacation and out-of-office replies.
var autoSubjects = []string{
	"out of office", "out of the office", "out-of-office", "automatic reply", "auto reply", "autoreply", "auto-reply",
	"autoresponse", "auto response", "autorespons", "auto-response", "vacation", "away from", "away until", "on leave",
	"abwesenheit", "absence", "réponse automatique", "respuesta automática", "risposta automatica",
	"automatisch antwoord", "fuera de la oficina", "ausser haus", "außer haus", "abwesend", "i am away", "i'm away",
	"i am out", "currently out", "on holiday", "auto:", "autosvar", "automaattinen vastaus", "自動応答", "不在",
}

// challengeWords are words of challenge-response systems.
var challengeWords = []string{
	"please confirm your message", "verify your email", "confirm that you are a human", "challenge-response",
	"to have your message delivered", "please click the link below to confirm",
	"awaiting your confirmation", "i use a spam filter", "boxbe", "mailinblack",
}

// autoReplyKind returns what kind of automatic reply a message is ("" if
// none): RFC 3834's Auto-Submitted, the de-facto headers (X-Autoreply,
// X-Autorespond, Precedence), and vacation or challenge wording.
func autoReplyKind(m *msgView) string {
	h := m.t.header
	subj := lowerASCII(m.res.Subject)
	body := clip(m.lowerText, 8192)
	for _, w := range challengeWords {
		if strings.Contains(body, w) || strings.Contains(subj, w) {
			return "challenge"
		}
	}
	for _, w := range autoSubjects {
		if strings.Contains(subj, w) {
			return "vacation"
		}
	}
	if h.Has("X-Autoreply") || h.Has("X-Autorespond") || h.Has("X-Autoresponder") || h.Has("X-Vacation") || h.Has("X-Mail-Autoreply") {
		return "vacation"
	}
	as := lowerASCII(strings.TrimSpace(h.Get("Auto-Submitted")))
	if as != "" && as != "no" {
		if strings.HasPrefix(as, "auto-replied") {
			return "auto-replied"
		}
		return "auto-generated"
	}
	switch lowerASCII(strings.TrimSpace(h.Get("Precedence"))) {
	case "auto_reply":
		return "auto-replied"
	case "bulk", "junk", "list":
		return "list"
	}
	if h.Has("List-Id") || h.Has("List-Unsubscribe") {
		return "list"
	}
	return ""
}

// response classifies what is left: an automatic reply or a reply.
func (m *msgView) response() {
	m.res.Kind = KindResponse
	if k := autoReplyKind(m); k != "" {
		m.res.Response = &Response{Kind: ResponseAutoReply, Auto: k}
		return
	}
	m.res.Response = &Response{Kind: ResponseReply}
}
