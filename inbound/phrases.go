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
var phraseRules = []phraseRule{
	{ReasonMailboxFull, []string{
		"mailbox full", "mailbox is full", "mailbox_full", "mailbox has exceeded", "mailbox size limit exceeded",
		"over quota", "overquota", "over the quota", "quota exceeded", "exceeded storage allocation",
		"exceeded its quota", "exceeds quota", "exceed quota", "quota full", "quota violation", "disk quota",
		"user is over", "mailbox is over", "account is over", "account is full", "account has exceeded",
		"mailfolder is full", "not enough space", "not enough disk space", "insufficient disk space on recipient",
		"mailbox would exceed", "maildir over quota", "mailbox exceeded", "quota exceed", "exceeded the quota",
		"recipient's mailbox is full", "too much mail data", "user has exceeded", "inbox is full",
		"storage quota", "mailbox limit", "no space left on device ... mailbox", "full mailbox", "is out of storage space",
		"mailbox has reached", "reached its limit", "exceeded the storage", "mailbox storage", "user's mailbox is full",
	}},
	{ReasonMesgTooBig, []string{
		"message too big", "message too large", "message is too large", "message is too big", "message size exceeds",
		"message exceeds maximum", "message length exceeds", "message size limit", "size limit exceeded",
		"exceeds the maximum size", "exceeds size limit", "mail size exceeds", "message size too large",
		"size of the message exceeds", "too big for system", "larger than the current system limit",
		"message exceeded maximum", "exceeds fixed maximum message size", "message file too big", "email is too large",
		"message is larger than", "maximum message size", "exceeded maximum allowed size", "exceeds max size",
	}},
	{ReasonExceedLimit, []string{
		"message exceeds the local size limit", "exceeds local size limit", "exceeds per-mailbox", "message length exceeds administrative limit",
	}},
	{ReasonSuspend, []string{
		"account disabled", "account has been disabled", "account is disabled", "mailbox disabled", "mailbox is disabled",
		"account suspended", "account has been suspended", "account is suspended", "suspended account", "mailbox suspended",
		"is inactive", "account inactive", "inactive account", "account is not active", "account has been deactivated",
		"user suspended", "address is disabled", "recipient suspended", "has been disabled", "is disabled",
		"temporarily disabled", "mailbox is frozen", "account frozen", "account expired", "mailbox currently suspended",
		"user account disabled", "account deactivated", "mailbox unavailable: account disabled", "mailbox not active",
		"recipient address is inactive", "this account has been temporarily suspended", "is not accepting mail at this time",
		"mailbox has been blocked", "disabled mailbox", "the email account that you tried to reach is disabled",
		"the email account that you tried to reach is inactive", "mailbox is not active", "is currently suspended",
	}},
	{ReasonHasMoved, []string{
		"has been moved", "mailbox has moved", "user has moved", "address has moved", "no longer at this address",
		"has moved to", "moved permanently", "address changed", "changed its address", "moved to another domain",
	}},
	{ReasonNoRelaying, []string{
		"relay access denied", "relaying denied", "relay not permitted", "relaying not permitted", "not permitted to relay",
		"relay denied", "unable to relay", "not allowed to relay", "relaying is not allowed", "relay prohibited",
		"we do not relay", "relaying mail to", "no relaying", "not a gateway", "relay not allowed", "relaying prohibited",
		"not configured to relay", "cannot relay", "unable to relay for", "relaying disallowed", "that domain isn't in my list of allowed rcpthost",
		"that domain or user isn't in my list of allowed rcpthosts", "relay access", "relaying for",
	}},
	{ReasonAuthFailure, []string{
		"spf check failed", "spf fail", "spf validation", "spf record", "sender policy framework", "spf:",
		"dkim signature", "dkim check", "dkim fail", "dkim validation", "unauthenticated email", "dmarc policy",
		"dmarc check", "dmarc fail", "failed dmarc", "rejected by dmarc", "authentication failed ... spf", "does not pass dmarc",
		"not authenticated", "email authentication", "sender is unauthenticated", "is not authorized to send mail on behalf",
		"is not designated as permitted sender", "not permitted to send", "spf check", "due to spf", "message failed spf",
		"failed spf", "fails spf", "dmarc", "multiple authentication checks failed", "authentication checks",
		"5.7.26", "5.7.23", "5.7.20", "5.7.21", "5.7.22", "failed to pass authentication", "sender authentication",
	}},
	{ReasonRequirePTR, []string{
		"reverse dns", "no ptr", "ptr record", "ptr lookup", "rdns", "reverse lookup", "reverse-lookup",
		"cannot find your hostname", "cannot resolve your address", "cannot resolve your hostname", "unresolvable address",
		"no reverse", "client host rejected: cannot find your", "ip name lookup failed", "host name lookup",
		"cannot find your reverse", "reverse name", "name service error for", "does not resolve", "not have a reverse",
		"ptr", "ip address has no", "have no ptr", "hostname does not match", "forward and reverse", "fcrdns",
		"dns reverse", "unknown host name", "reverse address", "unresolvable relay host name", "your hostname",
		"no hostname", "does not have a valid", "invalid helo", "not resolvable",
	}},
	{ReasonBadReputation, []string{
		"ip reputation", "poor reputation", "bad reputation", "sender reputation", "reputation of the sending",
		"low reputation", "sending ip", "domain reputation", "reputation", "temporarily deferred due to user complaints",
	}},
	{ReasonVirusDetected, []string{
		"virus", "malware", "infected", "malicious",
	}},
	{ReasonSpamDetected, []string{
		"spam", "junk mail", "bulk mail", "unsolicited", "content filter", "content rejected", "message content rejected",
		"blacklisted url", "uribl", "surbl", "rejected as bulk", "scored too high", "spam score", "high probability of",
		"suspicious", "message refused by spamassassin", "looks like spam", "detected as spam", "classified as spam",
		"considered unsolicited", "identified as spam", "mail appears to be unsolicited", "mail content denied",
		"phish", "bayes", "message filtered. please see", "filtered as spam",
	}},
	{ReasonUserUnknown, []string{
		"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient", "no such person",
		"no such address", "no such account", "unknown recipient", "recipient unknown", "unknown mailbox", "mailbox unknown",
		"mailbox not found", "mailbox does not exist", "mailbox doesn't exist", "mailbox unavailable", "mailbox not available",
		"user not found", "user does not exist", "user doesn't exist", "user not exist", "user doesn't have a",
		"recipient not found", "recipient does not exist", "recipient doesn't exist", "recipient not exist",
		"address does not exist", "address doesn't exist", "address not found", "address unknown", "address rejected",
		"invalid recipient", "invalid mailbox", "invalid address", "invalid user", "bad recipient", "bad address",
		"not a valid mailbox", "is not a valid user", "not a valid recipient", "not our customer", "no mailbox",
		"no account by that name", "not a known user", "unknown or illegal alias", "undeliverable address",
		"account does not exist", "account doesn't exist", "email account that you tried to reach does not exist",
		"is not a recognized", "unknown address", "unrouteable address", "recipient rejected", "recipient invalid",
		"does not exist", "doesn't exist", "not exist", "no mail box", "not listed in", "not found in",
		"couldn't find", "could not be found", "does not have an account", "unknown local part",
		"user invalid", "no user", "illegal alias", "unknown alias", "not a valid address", "not known",
		"addressee unknown", "unknown email address", "no mailbox here", "sorry, no mailbox", "badrcptto",
		"invalid-recipient", "rejected: user", "is not a valid mail address", "mailbox is unavailable",
		"recipient address invalid", "no existe", "utilisateur inconnu", "unbekannt", "non esiste",
		"not a local address", "not our user", "recipient is not local", "isn't a valid",
		"destination address rejected", "recipient address rejected", "user_unknown", "mailbox unavaiable",
		"no valid recipients", "is not an active address", "invalid destination", "not a registered user",
		"there is no one at this address", "the email account does not exist", "account unavailable",
		"no longer valid", "no longer in use", "no longer available", "no longer exists", "has been terminated",
		"closed account", "account closed", "has been closed", "is no longer active", "this address no longer accepts",
		"rcpt to rejected", "5.1.1",
	}},
	{ReasonHostUnknown, []string{
		"host unknown", "unknown host", "no such domain", "domain not found", "domain does not exist",
		"domain doesn't exist", "unknown domain", "invalid domain", "domain is not valid", "host not found",
		"name or service not known", "nxdomain", "no mx", "mx record", "unrouteable mail domain", "unroutable domain",
		"domain name not found", "hostname not found", "host or domain name not found", "domain not exist",
		"recipient domain", "no route to host", "can't find the domain", "domain unknown", "unknown mail domain",
		"non-existent domain", "nonexistent domain", "domain is not configured", "illegal host/domain",
		"domain must exist", "all relevant mx records point to non-existent hosts", "dns error: domain name not found",
		"dns lookup failed", "the domain", "domain part", "does not accept mail", "not a valid domain",
		"recipient address rejected: domain", "unresolvable domain", "unknown or invalid domain",
	}},
	{ReasonFiltered, []string{
		"filtered", "user reject", "rejected by recipient", "recipient refuses", "refuses to accept", "refused due to recipient",
		"blocked by the recipient", "you have been blocked", "not accepting mail from you", "only accepting mail from",
		"message rejected due to user rules", "refuse to receive", "recipient's preferences", "denied by recipient",
		"blocked by recipient", "not accept any", "refused by recipient", "is not accepting any mail",
	}},
	{ReasonRejected, []string{
		"sender address rejected", "sender rejected", "sender denied", "sender verify failed", "sender verification",
		"sender domain", "domain of sender", "sender address", "sender is not", "bad sender", "invalid sender",
		"from address", "mail from", "envelope sender", "sender unknown", "unknown sender", "sender not",
		"reject sender", "rejected sender", "address does not pass", "senders not allowed", "sender email",
		"sender's address", "your address", "return path", "return-path", "sender blocked", "mailer-daemon",
		"envelope-from", "domain of your", "blocked sender", "sender is blocked", "null sender", "empty envelope sender",
		"not a valid sender", "originator", "sender must", "sender id", "address rejected: access denied",
	}},
	{ReasonSpeeding, []string{
		"rate limit", "ratelimit", "rate-limit", "too many messages", "too many emails", "sending too fast", "too fast",
		"exceeded the rate", "message rate", "throttl", "temporarily rate limited", "receiving mail at a rate",
		"unusual rate", "too many mails", "maximum number of messages", "exceeded sending limit", "slow down",
	}},
	{ReasonTooManyConn, []string{
		"too many connections", "too many concurrent", "connection limit", "too many sessions", "too many recipients",
		"too many simultaneous", "maximum number of connections", "too many hosts", "too many smtp sessions",
		"connection refused - too many", "too many open connections", "exceeded the connection",
	}},
	{ReasonBlocked, []string{
		"blacklist", "blocklist", "block list", "black list", "rbl", "dnsbl", "spamhaus", "spamcop", "sorbs",
		"barracuda", "listed at", "listed in", "listed on", "is listed", "blocked", "your ip", "ip address",
		"client host", "connection refused", "access denied", "not allowed to send", "banned", "denied by policy",
		"service unavailable", "refused to talk", "rejected your ip", "your host", "dynamic ip", "dial-up", "dialup",
		"residential", "poor reputation", "not accepted from", "administrative prohibition", "connection rejected",
		"refused connection", "helo", "ehlo", "rejected because", "host is not", "client not authorized",
		"mail not accepted", "ip blocked", "deny", "prohibited",
	}},
	{ReasonPolicyViolation, []string{
		"policy", "not allowed", "prohibited", "you are not permitted", "is not permitted", "rejected by rule",
		"message rejected", "content violation", "terms of service", "acceptable use",
	}},
	{ReasonNotCompliantRFC, []string{
		"rfc 5322", "rfc5322", "rfc 2822", "rfc2822", "rfc 822", "rfc822 specification", "multiple addresses in from",
		"duplicate header", "multiple from", "more than one from", "multiple message-id", "not rfc compliant",
		"not rfc-compliant", "missing message-id", "missing date header", "header is not compliant",
		"does not meet ipv6 sending guidelines",
	}},
	{ReasonContentError, []string{
		"content error", "header error", "invalid header", "malformed", "message header", "illegal header",
		"headers", "mime", "attachment", "content type", "content-type", "encoding", "line too long",
		"8-bit", "8bit", "bare lf", "bare <lf>", "character set", "charset",
	}},
	{ReasonFailedSTARTTLS, []string{
		"starttls", "tls required", "requires tls", "must issue a starttls", "encryption required", "tls negotiation",
		"tls handshake", "secure connection required",
	}},
	{ReasonSystemFull, []string{
		"system full", "mail system full", "disk full", "insufficient system storage", "out of disk space",
		"no space left", "system storage", "insufficient disk", "disk space",
	}},
	{ReasonNetworkError, []string{
		"network error", "network is unreachable", "no route", "mail loop", "loop detected", "routing loop",
		"too many hops", "hop count exceeded", "looping", "mail for ... loops back", "loops back to myself",
		"dns lookup", "dns error", "temporary dns", "dns failure", "name server", "lost connection",
		"connection timed out", "timed out", "could not connect", "connection reset", "unable to connect",
		"connection dropped", "closed connection", "conversation with", "no answer",
	}},
	{ReasonExpired, []string{
		"delivery time expired", "retry time", "retry timeout", "queue too long", "in the queue too long",
		"has been in the queue", "been delayed for", "could not be delivered for", "gave up", "given up",
		"expired", "message timed out", "too old", "delivery attempts", "delivery has failed for",
		"undeliverable for", "unable to deliver for", "retry period", "maximum time", "not delivered within",
		"will stop trying", "no further attempts", "time limit",
	}},
	{ReasonMailerError, []string{
		"x-unix", "command died", "command output", "procmail", "mailer error", "pipe to", "exit code",
		"local delivery failed", "unknown mailer", "mail delivery agent", "permission denied", "unable to execute",
		"died on signal", "ended with status",
	}},
	{ReasonSystemError, []string{
		"system error", "internal error", "server error", "local error", "temporary failure", "temporarily unavailable",
		"server busy", "service not available", "misconfigur", "configuration error", "database", "ldap",
		"resource temporarily", "not available", "try again later", "out of memory", "i/o error", "unable to",
		"internal server", "system problem", "error in processing", "processing error", "server failure",
	}},
	{ReasonSyntaxError, []string{
		"syntax error", "command unrecognized", "unrecognized command", "bad sequence", "command not recognized",
		"invalid command", "line too long", "syntax",
	}},
	{ReasonSecurityError, []string{
		"authentication required", "authentication failed", "auth required", "must authenticate", "not authorized",
		"unauthorized", "security", "certificate", "encryption",
	}},
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
