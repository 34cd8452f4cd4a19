package inbound

import "strings"

// phraseRule is a reason and the phrases (lowercase) that name it in a
// remote host's reply or an MTA's own words. A phrase with " ... " in it
// matches when its pieces appear in that order.
type phraseRule struct {
	reason  Reason
	phrases []string
}

// phraseRules are tried in order; the first rule with a matching phrase
// gives the reason. More specific reasons come first (a reply that says
// "mailbox full" and "user" is about the quota; one that names an RBL and
// "rejected" is about the IP).
//
// The phrases were written for this package from what the MTAs in the
// corpus and the big mailbox providers say; they are not Sisimai's lists.
// decisiveRules are phrases that decide whatever else the reply says,
// the status code included.
var decisiveRules = []phraseRule{
	{ReasonSpamDetected, []string{"spam classification", "classified as spam", "detected as spam", "identified as spam"}},
	{ReasonNetworkError, []string{"host not found, try again"}},
	{ReasonNotCompliantRFC, []string{
		"rfc 5322", "rfc5322", "rfc 2822", "rfc2822", "rfc 822", "rfc822 specification", "multiple ... addresses in from",
		"duplicate header", "multiple from", "more than one from", "multiple message-id", "not rfc compliant",
		"not rfc-compliant", "missing message-id", "missing date header", "header is not compliant",
	}},
	{ReasonBlocked, []string{"client host rejected: may not be mail exchanger", "client host blocked", "blocked using", "spamhaus", "spamcop", "dnsbl", "blacklisted ip", "ip blacklisted", "blocked ip", "ip blocked", "banned sending ip"}},
}

var phraseRules = append(append([]phraseRule(nil), decisiveRules...), ordinaryRules...)

var ordinaryRules = []phraseRule{
	{ReasonMailboxFull, []string{
		"mailbox full", "mailbox is full", "mailbox_full", "mailbox has exceeded", "mailbox size limit exceeded",
		"over quota", "overquota", "over the quota", "quota exceeded", "exceeded storage allocation",
		"exceeded its quota", "exceeds quota", "exceed quota", "quota full", "quota violation", "disk quota",
		"user is over", "mailbox is over", "account is over", "account is full", "account has exceeded",
		"mailfolder is full", "not enough space", "not enough disk space", "insufficient disk space on recipient",
		"mailbox would exceed", "maildir over quota", "mailbox exceeded", "quota exceed", "exceeded the quota",
		"recipient's mailbox is full", "too much mail data", "user has exceeded", "inbox is full",
		"storage quota", "mailbox limit", "full mailbox", "is out of storage space", "mailbox exceeds allowed size",
		"mailbox has reached", "exceeded the storage", "user's mailbox is full", "mailbox is out of storage",
	}},
	{ReasonExceedLimit, []string{
		"exceeds the local size limit", "exceeds local size limit", "exceeds per-mailbox", "message length exceeds administrative limit",
		"limit set by recipient", "too large for this recipient",
	}},
	{ReasonMesgTooBig, []string{
		"message too big", "message too large", "message is too large", "message is too big", "message size exceeds",
		"message exceeds maximum", "message length exceeds", "message size limit", "size limit exceeded",
		"exceeds the maximum size", "exceeds size limit", "mail size exceeds", "message size too large",
		"size of the message exceeds", "too big for system", "larger than the current system limit",
		"message exceeded maximum", "exceeds fixed maximum message size", "message file too big", "email is too large",
		"message is larger than", "maximum message size", "exceeded maximum allowed size", "line limit exceeded", "exceeds max size",
	}},
	{ReasonSuspend, []string{
		"account disabled", "account has been disabled", "account is disabled", "mailbox disabled", "mailbox is disabled",
		"account suspended", "account has been suspended", "account is suspended", "suspended account", "mailbox suspended",
		"mailbox is inactive", "account inactive", "account is inactive", "inactive account", "account is not active",
		"account has been deactivated", "user suspended", "address is disabled", "recipient suspended", "has been disabled",
		"temporarily disabled", "mailbox is frozen", "account frozen", "account expired", "currently suspended",
		"account deactivated", "mailbox not active", "recipient address is inactive", "temporarily suspended",
		"disabled mailbox", "tried to reach is disabled", "tried to reach is inactive", "mailbox is not active",
		"account is locked", "temporary locked", "temporarily locked", "mailbox is locked", "user is inactive",
		"recipient account is blocked", "account is blocked",
	}},
	{ReasonHasMoved, []string{
		"has been moved", "mailbox has moved", "user has moved", "address has moved", "no longer at this address",
		"has moved to", "moved permanently",
	}},
	{ReasonNoRelaying, []string{
		"relay access denied", "relaying denied", "relay not permitted", "relaying not permitted", "not permitted to relay",
		"relay denied", "unable to relay", "not allowed to relay", "relaying is not allowed", "relay prohibited",
		"we do not relay", "relaying mail to", "no relaying", "not a gateway", "relay not allowed", "relaying prohibited",
		"not configured to relay", "cannot relay", "relaying disallowed", "in my list of allowed rcpthosts",
		"relay access", "relaying for", "relaying to", "insecure mail relay",
	}},
	{ReasonNotAccept, []string{
		"null mx", "indicated no smtp service", "does not accept mail", "domain does not accept", "accepts no mail",
		"couldn't find a mail exchanger", "not accepting mail", "does not receive mail", "no mail service",
		"does not accept e-mail", "does not accept email",
		"no mx record", "no mx found", "no mx for",
	}},
	{ReasonRequirePTR, []string{
		"reverse dns", "no ptr", "ptr record", "ptr lookup", "rdns", "reverse lookup", "reverse-lookup",
		"cannot find your hostname", "cannot resolve your address", "cannot resolve your hostname",
		"client host rejected: cannot find your", "ip name lookup failed", "cannot find your reverse",
		"reverse name", "not have a reverse", "have no ptr", "forward and reverse", "fcrdns",
		"dns reverse", "reverse address", "unresolvable relay host name", "mismatches client ip",
	}},
	{ReasonBadReputation, []string{
		"ip reputation", "poor reputation", "bad reputation", "sender reputation", "reputation of the sending",
		"low reputation", "domain reputation", "reputation", "user complaints", "unexpected volume",
	}},
	{ReasonRejected, []string{
		"sender address rejected", "domain of sender address", "sender verify failed", "sender verification failed",
		"unroutable sender", "unrouteable sender", "sender was rejected", "sender rejected", "sender denied",
		"bad sender", "invalid sender", "sender unknown", "unknown sender", "sender domain", "sender address",
		"reject sender", "rejected sender", "sender is not allowed", "sender not allowed", "sender blocked",
		"blocked sender", "sender is blocked", "null sender", "empty envelope sender", "not a valid sender",
		"purported responsible address", "'send mail as'", "an address that has been blacklisted", "envelope sender", "envelope from", "sender's domain", "sender's address",
		"from address", "return path", "return-path",
	}},
	{ReasonAuthFailure, []string{
		"spf check failed", "spf fail", "spf validation", "sender policy framework", "spf record",
		"dkim signature", "dkim check", "dkim fail", "dkim validation", "unauthenticated email", "dmarc policy",
		"dmarc check", "dmarc fail", "failed dmarc", "rejected by dmarc", "does not pass dmarc", "dmarc",
		"email authentication", "sender is unauthenticated", "is not authorized to send mail on behalf",
		"is not designated as permitted sender", "not permitted sender", "spf check", "due to spf", "message failed spf",
		"failed spf", "fails spf", "multiple authentication checks failed", "authentication checks",
		"failed to pass authentication", "sender authentication", "spf=fail", "dkim=fail", "spf:",
	}},
	{ReasonVirusDetected, []string{
		"virus", "malware", "infected", "malicious",
	}},
	{ReasonSpamDetected, []string{
		"spam", "junk mail", "bulk mail", "unsolicited", "content filter", "content rejected", "message content rejected",
		"blacklisted url", "uribl", "surbl", "rejected as bulk", "scored too high", "spam score", "high probability of",
		"suspicious", "looks like spam", "detected as spam", "classified as spam", "considered unsolicited",
		"identified as spam", "mail appears to be unsolicited", "mail content denied", "phish", "bayes",
	}},
	{ReasonHostUnknown, []string{
		"host unknown", "unknown host", "no such domain", "domain not found", "domain does not exist",
		"domain doesn't exist", "unknown domain", "invalid domain", "domain is not valid", "host not found",
		"name or service not known", "nxdomain", "unrouteable mail domain", "unroutable domain", "unrouteable address",
		"domain name not found", "hostname not found", "host or domain name not found", "domain not exist",
		"can't find the domain", "domain unknown", "unknown mail domain",
		"non-existent domain", "nonexistent domain", "domain is not configured", "illegal host/domain",
		"domain must exist", "point to non-existent hosts", "couldn't find any host", "not a valid domain",
		"unresolvable domain", "dns lookup failure: host", "unknown or invalid domain", "no mx for",
		"domain is not reachable",
	}},
	{ReasonUserUnknown, []string{
		"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient", "no such person",
		"no such address", "no such account", "unknown recipient", "recipient unknown", "unknown mailbox", "mailbox unknown",
		"mailbox not found", "mailbox does not exist", "mailbox doesn't exist", "mailbox unavailable", "mailbox not available",
		"user not found", "user does not exist", "user doesn't exist", "user not exist", "user doesn't have a",
		"recipient not found", "recipient does not exist", "recipient doesn't exist", "recipient not exist",
		"address does not exist", "address doesn't exist", "address not found", "address unknown",
		"invalid recipient", "invalid mailbox", "invalid address", "invalid user", "bad recipient", "bad address",
		"not a valid mailbox", "is not a valid user", "not a valid recipient", "not our customer", "no mailbox",
		"no account by that name", "not a known user", "unknown or illegal alias", "unknown or illegal user", "illegal user", "undeliverable address",
		"account does not exist", "account doesn't exist", "tried to reach does not exist",
		"is not a recognized", "unknown address", "recipient invalid", "does not exist", "doesn't exist",
		"no mail box", "couldn't find", "could not be found", "does not have an account", "unknown local part",
		"user invalid", "illegal alias", "unknown alias", "not a valid address", "addressee unknown",
		"unknown email address", "badrcptto", "invalid-recipient", "is not a valid mail address", "mailbox is unavailable",
		"recipient address invalid", "no existe", "utilisateur inconnu", "unbekannt", "non esiste",
		"not a local address", "not our user", "recipient is not local", "user_unknown", "mailbox unavaiable",
		"no valid recipients", "is not an active address", "not a registered user", "invalid final delivery userid",
		"there is no one at this address", "account unavailable", "no longer valid", "no longer in use",
		"no longer exists", "closed account", "account closed", "has been closed", "is no longer active",
		"this address no longer accepts", "recipient not accepted", "rejected: user", "user not known",
		"recipient address rejected: access denied", "recipient address rejected. (in reply to rcpt to command)", "<address>: recipient address rejected.", "not listed in domino directory", "not listed in public name & address book",
	}},
	{ReasonFiltered, []string{
		"filtered", "user reject", "rejected by recipient", "recipient refuses", "refuses to accept", "refused due to recipient",
		"blocked by the recipient", "you have been blocked", "not accepting mail from you", "only accepting mail from",
		"message rejected due to user rules", "refuse to receive", "recipient's preferences", "denied by recipient",
		"blocked by recipient", "refused by recipient", "recipients was rejected by a remote mail server",
	}},
	{ReasonSpeeding, []string{"recipients this hour", "messages this hour", "per hour", "this hour"}},
	{ReasonTooManyConn, []string{
		"too many connections", "too many concurrent", "connection limit", "too many sessions", "too many recipients",
		"too many simultaneous", "maximum number of connections", "too many hosts", "too many smtp sessions",
		"too many open connections", "exceeded the connection", "connection rate",
		"frequency limited",
	}},
	{ReasonSpeeding, []string{
		"rate limit", "ratelimit", "rate-limit", "too many messages", "too many emails", "sending too fast", "too fast",
		"exceeded the rate", "message rate", "throttl", "temporarily rate limited", "receiving mail at a rate",
		"unusual rate", "too many mails", "maximum number of messages", "exceeded sending limit", "slow down",
	}},
	{ReasonPolicyViolation, []string{
		"policy reasons", "denied by policy", "not accepted for policy", "policy violation", "violates", "message not allowed",
		"rejected by rule", "content violation", "terms of service", "acceptable use", "local policy",
	}},
	{ReasonBlocked, []string{
		"blacklist", "blocklist", "block list", "black list", "rbl", "dnsbl", "spamhaus", "spamcop", "sorbs",
		"barracuda", "listed at", "listed in", "listed on", "is listed", "blocked", "your ip", "ip address",
		"client host", "connection refused", "access denied", "not allowed to send", "banned",
		"refused to talk", "rejected your ip", "your host", "dynamic ip", "dial-up", "dialup",
		"residential", "not accepted from", "administrative prohibition", "connection rejected",
		"refused connection", "my name was rejected", "client not authorized", "ip blocked",
		"smtp server of your isp", "relay quota", "open relay", "weren't sent", "invalid helo", "helo command rejected", "bad helo",
		"service refused", "invalid ip for sending", "client host blocked",
	}},
	{ReasonSyntaxError, []string{
		"malformed address", "syntax error", "command unrecognized", "unrecognized command", "bad sequence",
		"command not recognized", "invalid command", "not implemented", "command parameter",
		"improper sequence", "bad sequence of commands",
	}},
	{ReasonContentError, []string{
		"content error", "header error", "invalid header", "malformed header", "malformed message", "malformed mime",
		"illegal header", "media error", "mime error", "content type", "content-type", "line too long",
		"bare lf", "bare <lf>", "character set", "8-bit data", "8bit data",
	}},
	{ReasonFailedSTARTTLS, []string{
		"starttls", "tls required", "requires tls", "must issue a starttls", "encryption required", "tls negotiation",
		"tls handshake", "does not support tls", "not support tls", "secure connection required",
	}},
	{ReasonSystemFull, []string{
		"system full", "mail system full", "disk full", "insufficient system storage", "out of disk space",
		"no space left", "system storage", "insufficient disk",
	}},
	{ReasonNetworkError, []string{
		"network error", "network is unreachable", "no route", "mail loop", "loop detected", "routing loop",
		"too many hops", "hop count exceeded", "looping", "loops back to myself", "host not found, try again",
		"dns lookup", "dns error", "temporary dns", "dns failure", "name server", "lost connection",
		"could not connect", "connection reset", "unable to connect", "connection dropped",
		"establish an smtp connection", "no answer", "network problem",
		"host name lookup failure", "lookup failure", "no route to host",
	}},
	{ReasonMailerError, []string{
		"x-unix", "command died", "command output", "procmail", "mailer error", "pipe to", "exit code",
		"local delivery failed", "unknown mailer", "mail delivery agent", "unable to execute",
		"died on signal", "ended with status",
	}},
	{ReasonSystemError, []string{
		"system error", "internal error", "server error", "local error", "temporarily unavailable",
		"server busy", "service not available", "misconfigur", "configuration error", "database", "ldap",
		"resource temporarily", "out of memory", "i/o error", "could not load", "transaction failed",
		"internal server", "system problem", "error in processing", "processing error", "server failure",
		"queue file write error", "write error",
		"service unavailable", "currently unavailable",
	}},
	{ReasonExpired, []string{
		"delivery time expired", "retry time", "retry timeout", "queue too long", "in the queue too long",
		"has been in the queue", "been delayed for", "could not be delivered for", "gave up", "given up", "giving up",
		"expired", "message timed out", "too old", "could not deliver for", "failing for a long time",
		"undeliverable for", "unable to deliver for", "retry period", "not delivered within",
		"will stop trying", "failed ... attempts:", "no further attempts", "time limit", "unable to deliver in",
		"did not accept our requests to connect", "not reachable", "connection timed out",
	}},
	{ReasonSecurityError, []string{
		"authentication required", "authentication failed", "auth required", "must authenticate", "not authorized",
		"unauthorized", "unauthenticated", "security", "certificate", "encryption",
		"smtp authentication",
	}},
	{ReasonPolicyViolation, []string{
		"policy", "not allowed", "prohibited", "you are not permitted", "is not permitted",
	}},
}

// noise are sentences MTAs add to every failure; they say nothing about
// the reason and are removed before matching.
var noise = []string{
	"i'm not going to try again; this message has been in the queue too long.",
	"this is a permanent error; i've given up. sorry it didn't work out.",
}

// matchText prepares a diagnostic for phrase matching: lowercase, with
// addresses and URLs removed (test and real addresses carry words like
// "filtered" or "unknown"), and the MTAs' stock sentences removed.
func matchText(s string) string {
	lower := lowerASCII(s)
	if strings.Contains(lower, "@") {
		var b strings.Builder
		last := 0
		for _, a := range findAddrs(lower) {
			start, end := a.start, a.end
			if start < last {
				continue
			}
			if start > last && lower[start-1] == '<' && end < len(lower) && lower[end] == '>' {
				start, end = start-1, end+1
			}
			b.WriteString(lower[last:start])
			b.WriteString("<address>")
			last = end
		}
		b.WriteString(lower[last:])
		lower = b.String()
	}
	for _, scheme := range []string{"https://", "http://"} {
		for from := 0; ; {
			i := strings.Index(lower[from:], scheme)
			if i < 0 {
				break
			}
			i += from
			h := i + len(scheme)
			j := h
			for j < len(lower) && lower[j] != ' ' && lower[j] != ')' && lower[j] != '>' && lower[j] != '/' {
				j++
			}
			host := lower[h:j]
			for j < len(lower) && lower[j] != ' ' && lower[j] != ')' && lower[j] != '>' {
				j++
			}
			// Keep the host (a blocklist's name says something), drop the
			// path (it may spell a reason's name).
			lower = lower[:i] + "<url " + host + ">" + lower[j:]
			from = i + len(host) + 6
		}
	}
	for _, n := range noise {
		lower = strings.ReplaceAll(lower, n, " ")
	}
	return lower
}

// definiteUnknown reports whether a reply says the address does not
// exist in words no content filter uses: a groupware directory's (Lotus
// Notes, Exchange 2003, IMail), a local delivery agent's, Gmail's; and
// Yahoo's, when it comes as an SMTP reply.
func definiteUnknown(lower string, reply bool) bool {
	for _, p := range []string{
		"not listed in domino directory", "not listed in public name & address book", "recipient name is not recognized",
		"invalid final delivery userid", "mail.local: unknown user", "unknown user: <address>", "address couldn't be found", "address not found ... your message wasn",
	} {
		if containsPhrase(lower, p) {
			return true
		}
	}
	return reply && containsPhrase(lower, "this user doesn't have a ... account")
}

// rhostRules are what the big receiving providers mean by words that
// are vague elsewhere, keyed by the recipient's domain or the remote
// host's (Sisimai keeps such a table too).
var rhostRules = []struct {
	domains []string
	phrase  string
	reason  Reason
}{
	// KDDI (au): "<address>: User unknown" is a real unknown user, whenever
	// it comes (without the address it is their filter).
	{[]string{"ezweb.ne.jp", "au.com", "kddi.com"}, "<address>: user unknown", ReasonUserUnknown},
	// Orange and La Poste: their LPN007_416 code says the address is invalid.
	{[]string{"laposte.net", "orange.fr", "wanadoo.fr"}, "invalid recipient", ReasonUserUnknown},
	// Microsoft's consumer mail answers an unknown address so.
	{[]string{"outlook.com", "hotmail.com", "live.com", "msn.com"}, "mailbox unavailable", ReasonUserUnknown},
	// Symantec MessageLabs.
	{[]string{"messagelabs.com"}, "no such user", ReasonUserUnknown},
}

// rhostReason applies rhostRules to a recipient.
func rhostReason(addr, remote, lower string) Reason {
	dom := ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		dom = lowerASCII(addr[i+1:])
	}
	remote = lowerASCII(remote)
	for _, rule := range rhostRules {
		for _, d := range rule.domains {
			if dom == d || strings.HasSuffix(dom, "."+d) || remote == d || strings.HasSuffix(remote, "."+d) || strings.Contains(lower, d) {
				if strings.Contains(lower, rule.phrase) {
					return rule.reason
				}
			}
		}
	}
	return ""
}

// phraseHits records which rules of phraseRules match one text, so that
// the text is scanned once however many questions are asked of it.
type phraseHits []bool

func matchRules(lower string) phraseHits {
	h := make(phraseHits, len(phraseRules))
	for i, rule := range phraseRules {
		for _, p := range rule.phrases {
			if containsPhrase(lower, p) {
				h[i] = true
				break
			}
		}
	}
	return h
}

// first is the reason of the first matching rule, or "".
func (h phraseHits) first() Reason {
	for i, ok := range h {
		if ok {
			return phraseRules[i].reason
		}
	}
	return ""
}

// decisive is the reason of the first matching decisive rule, or "".
func (h phraseHits) decisive() Reason {
	for i := range decisiveRules {
		if h[i] {
			return phraseRules[i].reason
		}
	}
	return ""
}

// has reports whether a rule of reason r matches.
func (h phraseHits) has(r Reason) bool {
	for i, ok := range h {
		if ok && phraseRules[i].reason == r {
			return true
		}
	}
	return false
}

// phraseReason returns the first reason whose phrases appear in lower.
func phraseReason(lower string) Reason {
	for _, rule := range phraseRules {
		for _, p := range rule.phrases {
			if containsPhrase(lower, p) {
				return rule.reason
			}
		}
	}
	return ""
}

func containsPhrase(s, p string) bool {
	if !strings.Contains(p, " ... ") {
		return strings.Contains(s, p)
	}
	for _, piece := range strings.Split(p, " ... ") {
		i := strings.Index(s, piece)
		if i < 0 {
			return false
		}
		s = s[i+len(piece):]
	}
	return true
}
