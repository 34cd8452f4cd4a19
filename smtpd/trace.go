package smtpd

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net/netip"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// The header fields the spool adds to a submission before its own header
// (RFC 5321 §4.4: a relay MUST prepend a Received field) and, when the
// sender left them out, at the end of it (RFC 6409 §8.2 and §8.3: an MSA
// adds a missing Date and Message-ID). They are written into the spooled
// file once, so every delivery try of every copy sends the same bytes.

// receivedField formats the Received field of message id, received now
// by host for the recipients, with the line ending eol. It follows what
// other MSAs write (Postfix's layout): the client's name and address, the
// TLS version and cipher, the authenticated username (never a password or
// key), the protocol keyword of RFC 3848 and RFC 6531 §3.7.4, the spool id,
// the recipient when there is only one (more would tell each recipient
// who else got the message, RFC 5321 §7.2), and the date.
func receivedField(tr *Trace, host string, id uint64, rcpts []string, smtputf8 bool, now time.Time, eol string) string {
	if tr == nil {
		tr = &Trace{}
	}
	var b strings.Builder
	fold := eol + "\t"
	b.WriteString("Received: from ")
	addr := addressLiteral(tr.RemoteIP)
	if helo := headerWord(tr.Helo, 255); helo != "" {
		b.WriteString(helo)
	} else {
		b.WriteString(addr)
	}
	b.WriteString(" (")
	b.WriteString(addr)
	b.WriteString(")")
	if tr.TLSVersion != 0 {
		b.WriteString(fold)
		b.WriteString("(using ")
		b.WriteString(tls.VersionName(tr.TLSVersion))
		b.WriteString(" with cipher ")
		b.WriteString(tls.CipherSuiteName(tr.TLSCipher))
		b.WriteString(")")
	}
	switch {
	case tr.AuthUser != "":
		b.WriteString(fold)
		b.WriteString("(Authenticated sender: ")
		b.WriteString(headerWord(tr.AuthUser, 64))
		b.WriteString(")")
	case tr.Trusted != "":
		b.WriteString(fold)
		b.WriteString("(trusted network ")
		b.WriteString(headerWord(tr.Trusted, 64))
		b.WriteString(")")
	}
	b.WriteString(fold)
	b.WriteString("by ")
	b.WriteString(headerWord(host, 255))
	b.WriteString(" (trackrelay) with ")
	b.WriteString(protocolKeyword(tr, smtputf8))
	b.WriteString(" id ")
	b.WriteString(store.FormatID(id))
	if len(rcpts) == 1 && headerWord(rcpts[0], 256) == rcpts[0] {
		b.WriteString(fold)
		b.WriteString("for <")
		b.WriteString(rcpts[0])
		b.WriteString(">")
	}
	b.WriteString("; ")
	b.WriteString(now.UTC().Format(dateLayout))
	b.WriteString(eol)
	return b.String()
}

// dateLayout is the RFC 5322 §3.3 date-time.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// protocolKeyword is the WITH keyword: ESMTP, with S for TLS and A for
// AUTH (RFC 3848), UTF8SMTP... for SMTPUTF8 (RFC 6531), HTTP for the REST
// API.
func protocolKeyword(tr *Trace, smtputf8 bool) string {
	if tr.Via == "HTTP" {
		return "HTTP"
	}
	k := "ESMTP"
	if smtputf8 {
		k = "UTF8SMTP"
	}
	if tr.TLSVersion != 0 {
		k += "S"
	}
	if tr.AuthUser != "" {
		k += "A"
	}
	return k
}

// addressLiteral is ip as RFC 5321 §4.1.3 writes it: [192.0.2.1] or
// [IPv6:2001:db8::1].
func addressLiteral(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "[unknown]"
	case ip.Is4():
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}

// headerWord keeps what a client sent fit for a header comment: printable
// ASCII without spaces, parentheses or backslashes (which would end or
// escape the comment), at most n bytes.
func headerWord(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == '\\':
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// messageIDField is a new Message-ID field for message id, unique across
// relays by the host name and a random part.
func messageIDField(host string, id uint64, eol string) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	h := headerWord(host, 200)
	if h == "" || strings.ContainsAny(h, "<>@\"[]") {
		h = "localhost"
	}
	return "Message-ID: <" + store.FormatID(id) + "." + hex.EncodeToString(r[:]) + "@" + h + ">" + eol
}

// dateField is a Date field for now.
func dateField(now time.Time, eol string) string {
	return "Date: " + now.UTC().Format(dateLayout) + eol
}
