// Package mime walks an RFC 5322 message (RFC 2045-2049 MIME) as a stream,
// hands the bodies of the leaves that tracking should touch to a Tracker,
// and writes everything else back out byte for byte.
//
// It reads and removes trackrelay's x-smtpeter-* control headers. It leaves
// signed and encrypted structures (RFC 1847, RFC 8551) and, by default,
// DKIM-signed messages (RFC 6376) untouched, and does not descend into
// message/rfc822 attachments.
//
// The package shadows the standard library's mime: import that one as
// stdmime "mime".
package mime
