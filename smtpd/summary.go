package smtpd

import (
	stdmime "mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
)

// maxSummaryText bounds the Subject and From kept with a message for the
// dashboard's search.
const maxSummaryText = 256

// headerSummary is what the dashboard shows of a message's header.
type headerSummary struct {
	subject, from string
}

var wordDecoder = stdmime.WordDecoder{CharsetReader: charset.Reader}

// summarize reads the Subject and From of a header, RFC 2047 encoded
// words decoded, as valid UTF-8 on one line, at most maxSummaryText bytes.
func summarize(h *textproto.Header) headerSummary {
	return headerSummary{subject: headerText(h, "Subject"), from: headerText(h, "From")}
}

func headerText(h *textproto.Header, name string) string {
	v := h.Get(name)
	if v == "" {
		return ""
	}
	if d, err := wordDecoder.DecodeHeader(v); err == nil {
		v = d
	}
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.Join(strings.Fields(v), " ") // unfolded, one line
	if len(v) > maxSummaryText {
		cut := maxSummaryText
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	return v
}
