package inbound

import (
	"strconv"
	"strings"
)

// Reason names why a recipient bounced. The names are Sisimai's (the
// best-known bounce parser), so reports can be compared with its output.
type Reason string

// The reasons, with the verdict each gets (see Verdict).
const (
	ReasonUserUnknown     Reason = "userunknown"     // hard: the mailbox does not exist
	ReasonHostUnknown     Reason = "hostunknown"     // hard: the domain does not exist or has no mail host
	ReasonHasMoved        Reason = "hasmoved"        // hard: the mailbox moved, no forwarding
	ReasonNotAccept       Reason = "notaccept"       // hard when permanent: the domain accepts no mail (null MX)
	ReasonMailboxFull     Reason = "mailboxfull"     // soft: over quota
	ReasonExceedLimit     Reason = "exceedlimit"     // soft: message over the mailbox's size limit
	ReasonMesgTooBig      Reason = "mesgtoobig"      // soft: message over the system's size limit
	ReasonSuspend         Reason = "suspend"         // soft: mailbox disabled or suspended (may come back)
	ReasonFiltered        Reason = "filtered"        // soft: refused after DATA or by the recipient's rules
	ReasonRejected        Reason = "rejected"        // soft: the envelope sender was refused
	ReasonBlocked         Reason = "blocked"         // soft: the sending IP or host name was refused
	ReasonRequirePTR      Reason = "requireptr"      // soft: the sending IP has no (matching) PTR record
	ReasonBadReputation   Reason = "badreputation"   // soft: the sending IP's reputation
	ReasonAuthFailure     Reason = "authfailure"     // soft: SPF, DKIM or DMARC failed
	ReasonSpamDetected    Reason = "spamdetected"    // soft: taken for spam
	ReasonVirusDetected   Reason = "virusdetected"   // soft: a virus was found
	ReasonPolicyViolation Reason = "policyviolation" // soft: a local policy refused it
	ReasonContentError    Reason = "contenterror"    // soft: the content or its format was refused
	ReasonNotCompliantRFC Reason = "notcompliantrfc" // soft: the message breaks an RFC (duplicate headers, ...)
	ReasonSecurityError   Reason = "securityerror"   // soft: another security refusal (5.7.x)
	ReasonNoRelaying      Reason = "norelaying"      // soft: relaying denied
	ReasonSystemError     Reason = "systemerror"     // soft: an error on the remote system
	ReasonSystemFull      Reason = "systemfull"      // soft: the remote system's disk is full
	ReasonNetworkError    Reason = "networkerror"    // soft: DNS or network trouble, routing loops
	ReasonTooManyConn     Reason = "toomanyconn"     // soft: too many connections or recipients
	ReasonSpeeding        Reason = "speeding"        // soft: rate limited
	ReasonExpired         Reason = "expired"         // soft: gave up retrying
	ReasonFailedSTARTTLS  Reason = "failedstarttls"  // soft: TLS was required and failed
	ReasonSyntaxError     Reason = "syntaxerror"     // soft: an SMTP syntax error
	ReasonMailerError     Reason = "mailererror"     // soft: a local delivery program failed
	ReasonSuppressed      Reason = "suppressed"      // soft: the sending service's own suppression list
	ReasonOnHold          Reason = "onhold"          // soft: there is an error, but no telling what
	ReasonUndefined       Reason = "undefined"       // soft: nothing to go on
	ReasonDelivered       Reason = "delivered"       // a DSN that reports a success
)

// Verdict is the answer to "will this address ever work?".
type Verdict string

const (
	// Hard: the address does not work (unknown user, no such domain, moved,
	// domain accepts no mail) and the failure is permanent: suppress it.
	Hard Verdict = "hard"
	// Soft: everything else (full, temporary, rate limited, policy or
	// content blocks, reputation, ...): the address may work later, or
	// with other content or another sending IP.
	Soft Verdict = "soft"
)

// pseudoDetail is the detail number of the status code given to a
// recipient whose bounce names no RFC 3463 code: class.0.9xx, Sisimai's
// convention (subject 0 is "other or undefined" in RFC 3463, and 9xx
// details are not assigned, so an inferred code is never taken for one
// the remote host sent).
var pseudoDetail = map[Reason]int{
	ReasonUndefined: 900, ReasonOnHold: 901, ReasonSyntaxError: 902, ReasonSuppressed: 903,
	ReasonNoRelaying: 909, ReasonFiltered: 910, ReasonUserUnknown: 911, ReasonHostUnknown: 912,
	ReasonHasMoved: 916, ReasonRejected: 918, ReasonSuspend: 921, ReasonMailboxFull: 922,
	ReasonExceedLimit: 923, ReasonAuthFailure: 926, ReasonSystemError: 930, ReasonSystemFull: 931,
	ReasonNotAccept: 932, ReasonMesgTooBig: 934, ReasonMailerError: 939, ReasonNetworkError: 944,
	ReasonTooManyConn: 945, ReasonSpeeding: 946, ReasonExpired: 947, ReasonContentError: 960,
	ReasonSecurityError: 970, ReasonBlocked: 971, ReasonPolicyViolation: 972, ReasonRequirePTR: 973,
	ReasonNotCompliantRFC: 974, ReasonBadReputation: 975, ReasonFailedSTARTTLS: 976,
	ReasonSpamDetected: 980, ReasonVirusDetected: 981,
}

// pseudoStatus returns the inferred status code for a reason in a class
// ('4' or '5').
func pseudoStatus(r Reason, class byte) string {
	d, ok := pseudoDetail[r]
	if !ok {
		d = 900
	}
	if class == '4' && d == 910 {
		d = 924 // a temporary filter refusal
	}
	return string(class) + ".0." + strconv.Itoa(d)
}

// verdictFor applies the rule: hard only for a reason that says the
// address itself does not work, and only when the failure is permanent.
func verdictFor(r Reason, class byte) Verdict {
	switch r {
	case ReasonUserUnknown, ReasonHostUnknown, ReasonHasMoved, ReasonNotAccept:
		if class == '4' {
			return Soft
		}
		return Hard
	}
	return Soft
}

// statusReason maps an RFC 3463 code to the reason it names on its own,
// or "" when the code says too little (x.0.0, x.3.0, x.5.x, x.7.0, ...).
func statusReason(st string) Reason {
	switch st {
	case "":
		return ""
	case "2.1.5", "2.0.0", "2.6.0", "2.1.0":
		return ReasonDelivered
	}
	if len(st) < 5 {
		return ""
	}
	class, rest := st[0], st[2:]
	switch rest {
	case "1.1", "1.0", "1.3":
		if class == '4' && rest != "1.1" {
			return ""
		}
		return ReasonUserUnknown
	case "1.2":
		return ReasonHostUnknown
	case "1.4", "2.4":
		return ReasonFiltered
	case "1.6", "7.17", "7.18":
		return ReasonHasMoved
	case "1.7", "1.8":
		return ReasonRejected
	case "1.9", "3.3", "3.5", "4.3", "5.4", "5.5":
		return ReasonSystemError
	case "1.10", "7.27":
		return ReasonNotAccept
	case "2.0":
		if class == '4' {
			return ""
		}
		return ReasonFiltered
	case "2.1":
		if class == '4' {
			return ReasonBlocked
		}
		return ReasonFiltered
	case "2.2":
		return ReasonMailboxFull
	case "2.3":
		return ReasonExceedLimit
	case "3.0":
		if class == '5' {
			return ReasonSystemError
		}
		return ""
	case "3.1", "4.5":
		return ReasonSystemFull
	case "3.2":
		return ReasonNotAccept
	case "3.4", "7.16":
		return ReasonMesgTooBig
	case "4.0":
		if class == '5' {
			return ReasonNetworkError
		}
		return ""
	case "4.1", "4.7":
		if class == '4' {
			return ReasonExpired
		}
		if rest == "4.7" {
			return ReasonExpired
		}
		return ""
	case "4.2", "4.6", "4.8":
		return ReasonNetworkError
	case "4.4":
		if class == '5' {
			return ReasonHostUnknown
		}
		return ReasonNetworkError
	case "5.2", "5.6":
		return ReasonSyntaxError
	case "5.3":
		return ReasonTooManyConn
	case "6.0", "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7", "6.8", "6.9", "6.10":
		return ReasonContentError
	case "7.1", "7.2":
		if class == '4' {
			return ReasonBlocked
		}
		return ReasonSecurityError
	case "7.3", "7.4", "7.5", "7.6", "7.7", "7.8", "7.9", "7.10", "7.11", "7.12", "7.14", "7.15", "7.19":
		return ReasonSecurityError
	case "7.13":
		return ReasonSuspend
	case "7.20", "7.21", "7.22", "7.23", "7.24", "7.26", "7.29":
		return ReasonAuthFailure
	case "7.25":
		return ReasonRequirePTR
	case "7.28":
		return ReasonSpamDetected
	case "7.30":
		return ReasonFailedSTARTTLS
	}
	return ""
}

// smtpCommand names the SMTP command a failure answered, as far as the
// text says: "CONN", "HELO", "MAIL", "RCPT", "DATA" or "".
func smtpCommand(lower string) string {
	idx := func(subs ...string) int {
		best := -1
		for _, s := range subs {
			if i := strings.Index(lower, s); i >= 0 && (best < 0 || i < best) {
				best = i
			}
		}
		return best
	}
	type cand struct {
		cmd string
		at  int
	}
	// MTAs' own words first: they name the command whatever else the
	// text holds.
	for _, c := range []struct {
		cmd  string
		subs []string
	}{
		{"MAIL", []string{"but sender was rejected", "did not like our mail from"}},
		{"HELO", []string{"but my name was rejected"}},
		{"DATA", []string{"smtp command data", "did not like our final data", "did not like our data"}},
		{"RCPT", []string{"did not like our rcpt", "rcpt to response", "does not like recipient", "smtp:rcpt", "[rcpt_to]"}},
	} {
		if idx(c.subs...) >= 0 {
			return c.cmd
		}
	}
	cands := []cand{
		{"DATA", idx("command data", ">>> data")},
		{"RCPT", idx("after rcpt")},
		{"RCPT", idx("rcpt to", "in reply to rcpt", "after rcpt", "rcpt command", "recipient address rejected")},
		{"DATA", idx("end of data", "after data", "in reply to end of data", "in reply to data", "after end of", "data command", "message body", "after the message")},
		{"MAIL", idx("mail from", "in reply to mail", "after mail", "sender address rejected")},
		{"HELO", idx("ehlo", "helo")},
		{"CONN", idx("initial connection", "in reply to initial", "after initial", "connected to", "greeting")},
	}
	best := cand{at: -1}
	for _, c := range cands {
		if c.at >= 0 && (best.at < 0 || c.at < best.at) {
			best = c
		}
	}
	return best.cmd
}

// findStatus returns the first RFC 3463 failure code in s ("5.1.1"), or
// a success code (2.x.x) when there is no failure code, or "".
func findStatus(s string) string {
	return findStatusNot(s, "")
}

// findStatusNot is findStatus skipping the codes equal to not, unless
// there is no other one.
func findStatusNot(s, not string) string {
	first, success := "", ""
	for i := 0; i+5 <= len(s); {
		c, n := scanStatus(s, i)
		if c == "" {
			i++
			continue
		}
		i = n
		if c[0] == '2' {
			if success == "" {
				success = c
			}
			continue
		}
		if first == "" {
			first = c
		}
		if c != not {
			return c
		}
	}
	if first != "" {
		return first
	}
	return success
}

// scanStatus reads a status code at s[i:], returning it and the offset
// after it, or "" when there is none there.
func scanStatus(s string, i int) (string, int) {
	if i+5 > len(s) {
		return "", 0
	}
	c := s[i]
	if c != '2' && c != '4' && c != '5' {
		return "", 0
	}
	if i > 0 && (isDigit(s[i-1]) || s[i-1] == '.') {
		return "", 0
	}
	if s[i+1] != '.' {
		return "", 0
	}
	j := i + 2
	k := j
	for k < len(s) && isDigit(s[k]) && k-j < 3 {
		k++
	}
	if k == j || k >= len(s) || s[k] != '.' {
		return "", 0
	}
	m := k + 1
	n := m
	for n < len(s) && isDigit(s[n]) && n-m < 3 {
		n++
	}
	if n == m {
		return "", 0
	}
	if n < len(s) && (isDigit(s[n]) || (s[n] == '.' && n+1 < len(s) && isDigit(s[n+1]))) {
		return "", 0 // part of an IP address or a version number
	}
	sub, _ := strconv.Atoi(s[j:k])
	if sub > 7 {
		return "", 0
	}
	return s[i:n], n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// findReply returns the first SMTP reply code (4xx or 5xx) in s that
// stands as a reply: at the start, or after a space, colon, quote or
// bracket, followed by a space, a hyphen or the end.
func findReply(s string) int {
	for i := 0; i+3 <= len(s); i++ {
		c := s[i]
		if c != '4' && c != '5' {
			continue
		}
		if i > 0 && strings.IndexByte(" \t:(['\"<>=;\n,", s[i-1]) < 0 {
			continue
		}
		if i > 0 && s[i-1] == '#' {
			continue
		}
		if !isDigit(s[i+1]) || !isDigit(s[i+2]) || s[i+1] > '5' {
			continue
		}
		if i+3 < len(s) && strings.IndexByte(" -\n\t)],:", s[i+3]) < 0 {
			continue
		}
		if i+4 < len(s) && s[i+3] == '-' && !(isDigit(s[i+4]) || s[i+4] == ' ' || s[i+4] >= 'A' || s[i+4] == '\'' || s[i+4] == '"') {
			continue
		}
		// "5.1.1" is a status, not a reply; "550 " is what we want.
		n, _ := strconv.Atoi(s[i : i+3])
		if n%100 > 59 && n != 421 {
			continue
		}
		return n
	}
	return 0
}
