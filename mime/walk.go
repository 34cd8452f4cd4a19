package mime

import (
	"io"

	"github.com/emersion/go-message/textproto"
)

// Tracker rewrites the decoded body of one leaf. The rewrite package's
// *Tracker satisfies it. Both methods copy src to dst, changing only URLs.
type Tracker interface {
	HTML(dst io.Writer, src io.Reader) error
	Text(dst io.Writer, src io.Reader) error
}

// Controls are the x-smtpeter-* control headers of a message. A nil switch
// means the header was absent (the caller's default applies).
type Controls struct {
	TrackClicks *bool    // x-smtpeter-trackclicks
	TrackOpens  *bool    // x-smtpeter-trackopens
	PreventScam *bool    // x-smtpeter-preventscam
	Tags        []string // x-smtpeter-tags, trimmed, empty ones dropped
}

// Options tune the walk. The zero value is the safe default.
type Options struct {
	TrackText   bool // also track text/plain leaves
	TrackSigned bool // track DKIM-signed messages anyway (breaks the signature)
	MaxDepth    int  // multipart nesting limit; 0 means DefaultMaxDepth
}

// DefaultMaxDepth is the multipart nesting limit when Options.MaxDepth is 0.
const DefaultMaxDepth = 32

// Report says what the walk did, for the caller to log.
type Report struct {
	Controls  Controls
	Tracked   int    // leaves rewritten
	Untouched string // non-empty: why the whole message passed through untracked
	Skipped   []Skip // leaves passed through, and why
}

// Skip records a leaf passed through unchanged.
type Skip struct {
	Part   string // part path, such as "1.2"
	Reason string
}

// Rewrite copies the message from src to dst. Once the top-level header is
// read, decide is called with its control headers; it returns the Tracker
// for the body, or nil to only strip the control headers. An error from
// decide stops the walk before anything is written. Rewrite returns an
// error only for I/O failures and decide's error: malformed MIME is passed
// through unchanged and reported.
func Rewrite(dst io.Writer, src io.Reader, opt Options, decide func(Controls) (Tracker, error)) (Report, error) {
	// TODO(issue 3): the walker.
	if _, err := decide(Controls{}); err != nil {
		return Report{}, err
	}
	_, err := io.Copy(dst, src)
	return Report{Untouched: "walker not built yet"}, err
}

// ControlError reports a control header with a value that is not a
// boolean. The SMTP side turns it into a 5.6.x reply naming the header.
type ControlError struct {
	Header string // canonical lower-case name, such as "x-smtpeter-trackclicks"
	Value  string
}

func (e *ControlError) Error() string {
	return "mime: header " + e.Header + ": value " + quote(e.Value) + " is not true/false, yes/no, on/off or 1/0"
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}

// ParseControls reads the x-smtpeter-* headers of a top-level header. A
// switch with any value other than true/false, yes/no, on/off or 1/0 (case
// and surrounding space ignored) is a *ControlError.
//
// TODO(issue 3): the stub below handles no headers yet.
func ParseControls(h *textproto.Header) (Controls, error) {
	return Controls{}, nil
}
