// Package inbound reads the mail that comes back to a relay and says what
// it is: a bounce (a delivery failure, with one verdict per recipient), a
// delay or success notice, a complaint, a DMARC aggregate or failure
// report, an SMTP TLS report, or a response (an automatic reply, or a
// person's). It is a pure library: no store, no SMTP server, no network.
//
// It implements the reading side of RFC 3464 (delivery status
// notifications) with RFC 3463 enhanced status codes and RFC 5321 reply
// codes, RFC 6533's message/global-delivery-status, RFC 5965 (ARF feedback
// reports) with RFC 6591 (authentication failure reports), RFC 7489
// appendix C (DMARC aggregate reports, also in the revised format with
// the same element names that parsedmarc's samples call RFC 9990), RFC
// 8460 (SMTP TLS reports) and RFC 3834 (automatic responses), over RFC
// 5322 and MIME (RFC 2045, 2046, 2047) messages.
//
// # Reading
//
// Classify reads a message once, line by line, with every input bounded
// (Options): the bytes read (MaxBytes; a longer message is classified on
// its start and Result.Truncated is set), the bytes kept over all parts,
// MIME nesting and the number of parts (deeper or further parts are
// skipped and named in Result.Limits), each text part, the excerpt of the
// returned message, a report attachment, what it decompresses to (gzip
// and zip bombs stop at MaxXMLBytes), the rows of a report and the
// recipients of a bounce. LF, CRLF and CR line ends are read alike.
// Headers are read leniently (stray lines, an mbox "From " line); MIME
// boundaries are found as in a lenient MIME parser (a missing closing
// delimiter, an enclosing delimiter ending an inner part early). Content
// never makes Classify fail: what cannot be read comes out as a response
// with Response.Kind "unparsed" and a machine-readable Reason
// (Unparsed* constants), never dropped. The only error is the reader's.
//
// What is tried, in order: an ARF report part (or ARF fields written in
// the text); RFC 3464 delivery-status parts; report attachments (gzip,
// zip or plain XML, told by their magic numbers rather than their names,
// or an XML or JSON body), when the subject, the sender, the RFC 7489 file
// name or the content says it is a report (a person's zip of photos is
// not); Amazon SES notifications (JSON, also wrapped in SNS, also cut
// short); plain-text DMARC failure reports (Exim's); Microsoft's JMRP
// complaints; unsubscribe requests (Apple Mail's, or a subject of just
// "unsubscribe": an opt-out complaint); then, when enough signs say
// bounce (a daemon sender, a bounce subject, X-Failed-Recipients, an
// MTA's wording, and no vacation or challenge wording), the bounce's
// text; the rest is a response: an auto-reply (RFC 3834 Auto-Submitted,
// X-Autoreply and its kin, Precedence, List-Id, vacation and
// out-of-office subjects in several languages, challenge-response
// wording) or a reply.
//
// A bounce without a delivery-status part, and a delivery-status part
// whose diagnostic is short or cut at its first line, is read from the
// human-readable text: the recipients are the addresses that stand where
// MTAs put them (alone on a line, after "RCPT TO:", ">>>", a reply code,
// or words like "delivery to"), and not the bounce's own sender or
// recipient or the returned message's sender unless nothing else is
// named; each recipient's text runs to the next one, without the MTA's
// stock sentences (in a sendmail transcript, a "554 <addr>... why" line
// owns the "<<<" reply lines above it); when it is empty, the words just
// above the address are taken (Lotus Notes says why before who); the
// returned message starts at a marker line ("--- Below this line is a
// copy of the message.", "----- Original message -----", ...). A bounce
// forwarded by a person ("> " quoted) is unquoted first. X-Failed-Recipients
// (Exim) lists the recipients when present; with no recipient named, the
// returned message's To is taken.
//
// # Status, reply code and reason
//
// Status is the RFC 3463 code the report or the remote host gave: the
// Status field, or a code in the diagnostic when that is more specific
// (a vague x.0.0 or x.y.0 field, 5.1.1 used as a catch-all, 4.4.7 that
// hides the error that made delivery expire) or agrees with the reply
// code's class. When the bounce names no code, Status is inferred from
// the reason as class.0.9xx and StatusInferred is set: subject 0 is
// "other or undefined" in RFC 3463 and 9xx details are unassigned, so an
// inferred code is never taken for one the remote host sent (the codes
// are Sisimai's: 5.0.911 user unknown, 5.0.912 host unknown, 5.0.922
// mailbox full, 5.0.947 expired, 5.0.910 filtered, ...). ReplyCode is the
// first 4xx/5xx reply in the diagnostic.
//
// The reason comes from, in order: a few decisive phrases (classified as
// spam, not RFC 5322 compliant, a blocklist's name); a status code that
// says it all (x.2.2 mailbox full, x.2.3, x.1.6, x.1.10 and 5.7.27,
// x.7.13, x.7.20 to x.7.26 and x.7.29 authentication, x.7.25 reverse
// DNS, x.7.30 TLS) unless the words say something more specific; the
// words confirming what the code says; x-unix diagnostics (a local
// delivery program failed); the words of the reply (720 phrases in 35
// groups, matched on the lowercased text with addresses and URL paths
// removed, most specific group first); the code alone; the context
// (delayed: expired; refused at HELO: blocked). A few receiving providers mean specific things by vague words
// (KDDI, Orange, Microsoft, MessageLabs): rhostRules. The SMTP command
// the failure answered (RCPT, DATA, MAIL, HELO, CONN) shapes the reason:
// "user unknown" after DATA is a filter's refusal, "no such domain" at
// MAIL FROM is about the sender (rejected), a temporary "domain not found"
// is a DNS failure.
//
// # Hard and soft
//
// A recipient is Hard when its reason says the address itself will not
// work and the failure is permanent (class 5, or no class given):
//
//	userunknown  the mailbox does not exist (5.1.1, 5.1.0, 5.1.3; "user unknown" at RCPT)
//	hostunknown  the domain does not exist or has no mail host (5.1.2, 5.4.4, NXDOMAIN)
//	hasmoved     the mailbox has moved, no forwarding (5.1.6)
//	notaccept    the domain accepts no mail (null MX, RFC 7505: 5.1.10, 5.7.27)
//
// Everything else is Soft: the address may work later, or with other
// content or another sending IP. That includes mailboxfull (x.2.2, even
// when a 5xx says it), exceedlimit and mesgtoobig (5.2.3, 5.3.4), suspend
// (disabled, suspended or locked accounts, 5.7.13: they are often
// re-enabled), filtered (5.2.0, 5.2.1; refused after DATA, or by the
// recipient's rules), every
// policy, reputation, authentication, content and security refusal
// (5.7.x: rejected, blocked, requireptr, badreputation, authfailure,
// spamdetected, virusdetected, policyviolation, contenterror,
// notcompliantrfc, securityerror, norelaying, failedstarttls), rate and
// connection limits (speeding, toomanyconn), remote trouble (systemerror,
// systemfull, networkerror, mailererror, syntaxerror), expired, and the
// undecided (onhold: an error nobody can read; undefined: no error at
// all). A 4xx "user unknown" (4.1.1) is Soft too: a temporary answer
// cannot say the mailbox does not exist. Delayed recipients are always
// Soft. Repeated soft bounces are for the caller to count.
//
// "User unknown" counts as Hard only with evidence: a code that says so
// (x.1.1, x.1.0, x.1.3), a refusal at RCPT TO, or words no content filter
// uses (a groupware directory's, a local delivery agent's, Gmail's or
// Yahoo's own). A remote reply of "user unknown" with no such evidence (no
// code or x.0.0, 5.2.x, 5.7.x; no command named; or after DATA) is read as
// filtered: content filters often answer "user unknown", and a wrong
// suppression costs an address for good while a missed one costs another
// try. Sisimai draws the line in the same place. Where this package
// parts from Sisimai on purpose: a 4xx "user unknown" is Soft (Sisimai:
// hard), an "Action: delayed" DSN keeps the DSN's own 4.x.x status and is
// KindDelayed (Sisimai reads some as failed with 5.0.947), and an
// auth-failure ARF report is a DMARC failure report (Sisimai: feedback).
//
// # Where the rules come from
//
// The reason names, the class.0.9xx convention for inferred codes and the
// hard-bounce rule follow Sisimai (libsisimai.org; go-sisimai, BSD-2-Clause),
// whose set of real bounces (github.com/sisimai/set-of-emails, BSD-2-Clause)
// this package is measured against; its phrases and code are not copied:
// the phrase lists and the parsing here were written for this package.
// Postal (MIT) links a bounce to its message by the returned message's
// headers and marks it bounced without a hard/soft verdict; parsedmarc
// (Apache-2.0) supplied the report samples and the quirks worth handling
// (IKEA's unclosed wrapper, Mimecast's gzip, reports in .eml).
//
// # Joining
//
// Result.VERP is the first RCPT TO address of the form local+token@domain
// (SplitVERP splits one; authenticating the token is the caller's job).
// Result.Original holds the returned message's Message-ID, From, To,
// Subject and header fields, the start of it as it came back (Excerpt),
// and its text parts decoded (Text: quoted-printable soft line breaks and
// base64 undone, so a tracked link's token reads whole). For a complaint,
// Feedback.Recipient and Original-Mail-From name the copy too; for an
// Amazon SES notice, Original carries SES's message id and destination.
package inbound
