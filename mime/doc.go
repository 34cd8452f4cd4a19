// Package mime walks an RFC 5322 message (RFC 2045-2049 MIME) as a stream,
// hands the bodies of the leaves that tracking should touch to a Tracker,
// and writes everything else back out byte for byte.
//
// It reads and removes trackrelay's x-smtpeter-* control headers. It leaves
// signed and encrypted structures (RFC 1847, RFC 8551) and, by default,
// DKIM-signed messages (RFC 6376) untouched, and does not descend into
// message/rfc822 attachments.
//
// What is kept: every header field (folding, order, case, line endings)
// except the control headers; preambles, epilogues and boundary lines
// with their padding and line endings (RFC 2046 §5.1.1); every leaf that
// is not tracked. Tracked leaves are text/html (and text/plain with
// Options.TrackText) that are not files the sender attached. Their
// transfer encoding (RFC 2045 §6) is undone and redone the same way, lines
// of at most 76 characters in the part's own line ending; a 7bit/8bit leaf
// whose rewritten lines exceed 998 octets (RFC 5322 §2.1.1) becomes
// quoted-printable. Charsets whose bytes below 0x80 are always ASCII are
// rewritten as bytes; others (UTF-16, ISO-2022-JP, Shift_JIS, Big5, GBK,
// ...) are decoded to UTF-8 and encoded back when that round trip is
// lossless.
//
// Where a message is malformed the part concerned passes through unchanged
// and Report says why. Where real parsers disagree, the walk follows
// Python's email package, which the tests use as the independent parser:
// a delimiter line must be the boundary, an optional "--", optional
// space or tab, and the line ending; the boundaries of every enclosing
// multipart end a part; two delimiter lines in a row enclose no part; a
// nested multipart that reuses an enclosing boundary, or a boundary that
// ends in a space, is passed through. Only LF and CRLF end lines (a bare
// CR is data).
//
// Memory stays bounded: lines are read through a 64 KiB buffer, header
// blocks are limited to MaxHeaderBytes, and a tracked body is spooled in
// memory up to 1 MiB and in an unlinked temporary file beyond.
//
// The package shadows the standard library's mime: import that one as
// stdmime "mime".
package mime
