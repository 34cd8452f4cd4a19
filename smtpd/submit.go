package smtpd

import (
	"context"
	"io"
	"net/netip"

	"github.com/trackrelay/trackrelay/config"
)

// Credential is what a sending application authenticates as: its account
// and its tracking settings (SPEC §4: weaker than headers and REST
// properties, stronger than the global default).
type Credential struct {
	Username    string
	Account     string
	Clicks      bool
	Opens       bool
	PreventScam bool
	Text        bool   // also track http(s) URLs in text/plain parts
	ClickDomain string // host[:port] of tracked URLs
	Scheme      string // "http" or "https"
	Upstream    string // name of the upstream that delivers this credential's mail
	// TrackSigned tracks messages the sender already DKIM-signed, which
	// breaks their signature (the relay does not re-sign yet).
	TrackSigned bool
}

// CredentialFromConfig is the Credential that a configuration file's
// credential describes: the one conversion, for SMTP logins, trusted
// networks and the REST API's keys alike.
func CredentialFromConfig(c *config.Credential) *Credential {
	return &Credential{
		Username: c.Username, Account: c.Account,
		Clicks: c.Clicks, Opens: c.Opens, PreventScam: c.PreventScam, Text: c.Text,
		ClickDomain: c.ClickDomain, Scheme: c.Scheme, Upstream: c.Upstream,
		TrackSigned: c.TrackSigned,
	}
}

// Submission is one message handed to the spool, from SMTP or the REST API.
type Submission struct {
	Cred       *Credential
	From       string   // envelope MAIL FROM (may be empty: the null sender)
	Recipients []string // envelope RCPT TO, one copy each
	SMTPUTF8   bool
	Body8Bit   bool  // BODY=8BITMIME (or BINARYMIME)
	Size       int64 // SIZE= declared by the client, 0 if none
	// Overrides are REST properties (SPEC §4: stronger than the
	// credential, weaker than headers). Nil means "not set".
	Clicks, Opens, PreventScam *bool
	Tags                       []string
	RemoteAddr                 string // for the attempts log
	// Trace says how the message came in, for the Received header field
	// the spool adds (RFC 5321 §4.4). Nil: only what the spool knows.
	Trace *Trace
}

// Trace is what the Received header field of a submission says about its
// arrival. It never holds a secret: no password, no API key.
type Trace struct {
	Helo     string     // the client's EHLO/HELO argument, as sent
	RemoteIP netip.Addr // the client's address
	// Via is how it came: "SMTP" (EHLO was said) or "HTTP" (the REST API).
	Via        string
	TLSVersion uint16 // 0: no TLS
	TLSCipher  uint16
	AuthUser   string // the AUTH username; "" on the trusted, no-AUTH path
	Trusted    string // the trusted network it came from, when no AUTH
}

// Receipt says what the spool made durable.
type Receipt struct {
	MessageID uint64   // the spooled original
	CopyIDs   []uint64 // one per recipient taken, in Submission.Recipients order
	// Refused are the recipients not taken, because the account's
	// suppression list holds them; CopyIDs has none for them.
	Refused []Refusal
}

// Refusal is a recipient the spool refused, and why in words.
type Refusal struct {
	Recipient, Reason string
}

// RecipientChecker is implemented by a Submitter that refuses some
// recipients (the suppression list): the SMTP session asks it at RCPT, so
// a client learns at once, with a 5.7.1 that says why.
type RecipientChecker interface {
	CheckRecipient(ctx context.Context, cred *Credential, rcpt string) error
}

// Submitter makes a message durable and queues one copy per recipient for
// delivery. Submit reads body to its end (or to the first error) before it
// returns; it returns a Receipt only once the message and its copies are on
// disk and fsynced. Errors: a *mime.ControlError for a bad control header
// (5.6.x), ErrTooBig when body exceeds the limit (5.3.4), anything else is
// a temporary local failure (4.3.0).
type Submitter interface {
	Submit(ctx context.Context, sub *Submission, body io.Reader) (*Receipt, error)
}

// SpaceChecker is implemented by a Submitter that keeps a free-space
// reserve (the Spool): the SMTP session asks it at MAIL, with the size the
// client declared (0 if none), so that a full disk is said before the
// message is sent. CheckSpace returns ErrInsufficientStorage or nil.
type SpaceChecker interface {
	CheckSpace(size int64) error
}
