package smtpd

import (
	"context"
	"io"

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
}

// CredentialFromConfig is the Credential that a configuration file's
// credential describes: the one conversion, for SMTP logins, trusted
// networks and the REST API's keys alike.
func CredentialFromConfig(c *config.Credential) *Credential {
	return &Credential{
		Username: c.Username, Account: c.Account,
		Clicks: c.Clicks, Opens: c.Opens, PreventScam: c.PreventScam, Text: c.Text,
		ClickDomain: c.ClickDomain, Scheme: c.Scheme, Upstream: c.Upstream,
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
}

// Receipt says what the spool made durable.
type Receipt struct {
	MessageID uint64   // the spooled original
	CopyIDs   []uint64 // one per recipient, in Submission.Recipients order
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
