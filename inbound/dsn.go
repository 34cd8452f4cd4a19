package inbound

import (
	"bytes"
	"strconv"
	"strings"
)

// dsnRecipient is one per-recipient block of a delivery-status part
// (RFC 3464 section 2.3), as written.
type dsnRecipient struct {
	final, original, action, status, remoteMTA, diagType, diag string
}

// dsnFields is a parsed delivery-status part.
type dsnFields struct {
	reportingMTA string
	recipients   []dsnRecipient
}

// parseDSN reads the fields of a delivery-status part leniently: blocks
// need not be separated by blank lines (a repeated recipient field starts
// a new one), field names are case-insensitive, and folded values are
// joined.
func parseDSN(body []byte, maxRcpt int) dsnFields {
	var out dsnFields
	var cur *dsnRecipient
	seen := map[string]bool{}
	flush := func() {
		if cur != nil && (cur.final != "" || cur.original != "") && len(out.recipients) < maxRcpt {
			out.recipients = append(out.recipients, *cur)
		}
		cur = nil
		seen = map[string]bool{}
	}
	var lastVal *string
	for _, raw := range bytes.Split(body, []byte("\n")) {
		line := string(raw)
		if strings.TrimSpace(line) == "" {
			flush()
			lastVal = nil
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && lastVal != nil {
			*lastVal += " " + strings.TrimSpace(line)
			continue
		}
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			lastVal = nil
			continue
		}
		name = lowerASCII(strings.TrimSpace(name))
		val = strings.TrimSpace(val)
		switch name {
		case "reporting-mta":
			out.reportingMTA = stripType(val)
			lastVal = &out.reportingMTA
			continue
		case "final-recipient", "original-recipient", "x-actual-recipient", "action", "status", "remote-mta", "diagnostic-code":
		default:
			lastVal = nil
			continue
		}
		if cur != nil && seen[name] && (name == "final-recipient" || name == "original-recipient" || name == "action" || name == "status") {
			flush()
		}
		if cur == nil {
			cur = &dsnRecipient{}
		}
		seen[name] = true
		switch name {
		case "final-recipient":
			cur.final = stripType(val)
			lastVal = &cur.final
		case "original-recipient":
			cur.original = stripType(val)
			lastVal = &cur.original
		case "x-actual-recipient":
			if cur.final == "" {
				cur.final = stripType(val)
			}
			lastVal = nil
		case "action":
			cur.action = lowerASCII(firstField(val))
			lastVal = nil
		case "status":
			cur.status = val
			lastVal = &cur.status
		case "remote-mta":
			cur.remoteMTA = stripType(val)
			lastVal = &cur.remoteMTA
		case "diagnostic-code":
			t, rest, ok := strings.Cut(val, ";")
			if ok && !strings.ContainsAny(strings.TrimSpace(t), " <@") {
				cur.diagType = lowerASCII(strings.TrimSpace(t))
				cur.diag = strings.TrimSpace(rest)
			} else {
				cur.diag = val
			}
			lastVal = &cur.diag
		}
	}
	flush()
	return out
}

// firstField returns the first white-space separated word of s, or "".
func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// stripType removes an address or name type ("rfc822;", "dns;") and angle
// brackets.
func stripType(v string) string {
	if t, rest, ok := strings.Cut(v, ";"); ok && !strings.ContainsAny(strings.TrimSpace(t), " @<") {
		v = rest
	}
	v = strings.TrimSpace(v)
	return strings.TrimSpace(strings.Trim(v, "<>"))
}

// hostOnly takes the host name out of a Remote-MTA value such as
// "mx.example.jp [192.0.2.1]" or "dns; mx.example.jp".
func hostOnly(v string) string {
	v = strings.TrimSpace(v)
	if f := strings.Fields(v); len(f) > 0 {
		v = f[0]
	}
	return strings.TrimSuffix(strings.Trim(v, "[]()<>"), ".")
}

// preferStatus picks between the Status field and a code found in the
// diagnostic: the one whose class agrees with the reply code, else the
// more specific one (x.0.0 and x.y.0 say less than x.y.z).
func preferStatus(field, inText string, reply int) string {
	switch {
	case field == "":
		return inText
	case inText == "" || field == inText:
		return field
	}
	if reply > 0 && field[0] != inText[0] {
		rc := strconv.Itoa(reply)[0]
		if rc == inText[0] {
			return inText
		}
		return field
	}
	if field[0] != inText[0] {
		return field
	}
	vague := func(s string) int {
		switch {
		case strings.HasSuffix(s, ".0.0"):
			return 2
		case strings.HasSuffix(s, ".0"):
			return 1
		}
		return 0
	}
	if vague(field) > vague(inText) {
		return inText
	}
	if (field == "5.1.1" || field == "4.4.7") && vague(inText) == 0 && !strings.HasPrefix(inText, "5.5.") {
		// 5.1.1 is many MTAs' default for any refusal, and 4.4.7 ("delivery
		// time expired") hides the error that made it expire.
		return inText
	}
	return field
}

// normStatus extracts the code from a Status value ("5.1.1 (user unknown)").
func normStatus(v string) string {
	return findStatus(v)
}
