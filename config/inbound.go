package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Inbound configures the mail that comes back (SPEC §11): VERP envelope
// senders on a bounce domain, the MX listener that takes bounces,
// complaints, replies and DMARC reports, and when repeated soft bounces
// suppress an address.
type Inbound struct {
	// Listen is the MX listener's address (port 25 in production); empty
	// turns it off. It speaks plain SMTP with STARTTLS offered (with
	// smtp.tls_cert), takes no AUTH and accepts mail only for the bounce
	// domains and the report addresses.
	Listen string `toml:"listen"`
	// BounceDomain is the relay's bounce domain: every copy is relayed
	// with the envelope sender LOCAL+TOKEN@BounceDomain (an account's own
	// verified bounce domain takes its place for that account's mail).
	// Empty: copies keep the envelope sender the client gave. Its MX must
	// be this relay's MX listener.
	BounceDomain string `toml:"bounce_domain"`
	// MXHost is the public name of the MX listener: an account's own bounce
	// domain is verified when its MX record (or a CNAME) leads to it.
	MXHost string `toml:"mx_host"`
	// ReportAddresses take DMARC aggregate and failure reports (rua= and
	// ruf= of a DMARC record) and feedback-loop reports. LOCAL+ACCOUNT@DOMAIN
	// of one of them names the account the reports belong to.
	ReportAddresses []string `toml:"report_addresses"`
	// SoftBounceLimit suppresses an address after this many soft bounces
	// within SoftBounceWindow (an account may set its own); -1: soft
	// bounces never suppress.
	SoftBounceLimit  int           `toml:"soft_bounce_limit"`
	SoftBounceWindow time.Duration `toml:"soft_bounce_window"`

	// Limits of the MX listener.
	MaxMessageBytes  int64 `toml:"max_message_bytes"`
	MaxRecipients    int   `toml:"max_recipients"`
	MaxSessions      int   `toml:"max_sessions"`
	MaxSessionsPerIP int   `toml:"max_sessions_per_ip"`
	// MaxSessionsPerNet bounds the connections from one /24 (IPv4) or /64
	// (IPv6).
	MaxSessionsPerNet int `toml:"max_sessions_per_net"`
	// BadRecipientsSlow refused recipients (unknown domains, forged or
	// altered VERP addresses) from one address start slowing its replies;
	// BadRecipientsBlock refuses the address for BlockFor.
	BadRecipientsSlow  int           `toml:"bad_recipients_slow"`
	BadRecipientsBlock int           `toml:"bad_recipients_block"`
	BlockFor           time.Duration `toml:"block_for"`
	ReadTimeout        time.Duration `toml:"read_timeout"`
	DataTimeout        time.Duration `toml:"data_timeout"`
	WriteTimeout       time.Duration `toml:"write_timeout"`
	// MaxUnclaimed bounds the messages kept for the operator in the
	// inbound spool's unclaimed folder (mail that belongs to no account);
	// the oldest go first.
	MaxUnclaimed int `toml:"max_unclaimed"`
}

// Inbound defaults.
const (
	DefaultSoftBounceLimit    = 5
	DefaultSoftBounceWindow   = 14 * 24 * time.Hour
	DefaultInboundMaxBytes    = 32 << 20
	DefaultInboundMaxRcpts    = 100
	DefaultInboundMaxUnclaim  = 1000
	DefaultInboundDataTimeout = 30 * time.Minute
)

// SetDefaults fills unset fields of the inbound section.
func (in *Inbound) SetDefaults() {
	in.BounceDomain = normalHost(in.BounceDomain)
	in.MXHost = normalHost(in.MXHost)
	for i, a := range in.ReportAddresses {
		in.ReportAddresses[i] = strings.ToLower(strings.TrimSpace(a))
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&in.SoftBounceLimit, DefaultSoftBounceLimit)
	defDur(&in.SoftBounceWindow, DefaultSoftBounceWindow)
	if in.MaxMessageBytes == 0 {
		in.MaxMessageBytes = DefaultInboundMaxBytes
	}
	def(&in.MaxRecipients, DefaultInboundMaxRcpts)
	def(&in.MaxSessions, 500)
	def(&in.MaxSessionsPerIP, 20)
	def(&in.MaxSessionsPerNet, 50)
	def(&in.BadRecipientsSlow, 5)
	def(&in.BadRecipientsBlock, 50)
	defDur(&in.BlockFor, 15*time.Minute)
	defDur(&in.ReadTimeout, 5*time.Minute)
	defDur(&in.DataTimeout, DefaultInboundDataTimeout)
	defDur(&in.WriteTimeout, 5*time.Minute)
	def(&in.MaxUnclaimed, DefaultInboundMaxUnclaim)
}

func normalHost(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// Validate checks the inbound section and joins every problem, each named
// by its dotted key. Call SetDefaults first. It is pure.
func (in *Inbound) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("inbound.%s: "+format, append([]any{key}, a...)...))
	}
	if in.Listen != "" {
		if _, _, err := net.SplitHostPort(in.Listen); err != nil {
			bad("listen", "%q is not host:port", in.Listen)
		}
	}
	if in.BounceDomain != "" && !validHostName(in.BounceDomain) {
		bad("bounce_domain", "want a host name like bounces.relay.example, got %q", in.BounceDomain)
	}
	if in.MXHost != "" && !validHostName(in.MXHost) {
		bad("mx_host", "want a host name like mx.relay.example, got %q", in.MXHost)
	}
	seen := map[string]bool{}
	for i, a := range in.ReportAddresses {
		k := fmt.Sprintf("report_addresses[%d]", i)
		local, domain, ok := strings.Cut(a, "@")
		switch {
		case !ok || local == "" || strings.ContainsAny(local, "+@ \t\"<>()[],;:\\") || len(local) > 64 || !validHostName(domain):
			bad(k, "want an address like dmarc@bounces.relay.example (no '+': LOCAL+ACCOUNT@DOMAIN is taken for each account), got %q", a)
		case seen[a]:
			bad(k, "%q is listed twice", a)
		}
		seen[a] = true
	}
	if in.SoftBounceLimit < -1 {
		bad("soft_bounce_limit", "must be >= 1, or -1 (soft bounces never suppress)")
	}
	if in.SoftBounceWindow < time.Minute {
		bad("soft_bounce_window", "must be at least 1m")
	}
	if in.MaxMessageBytes < 64<<10 {
		bad("max_message_bytes", "must be at least 65536 (bounces carry the message they return)")
	}
	if in.MaxRecipients < 1 {
		bad("max_recipients", "must be > 0")
	}
	if in.MaxSessions < 1 {
		bad("max_sessions", "must be > 0")
	}
	if in.MaxSessionsPerIP < 1 || in.MaxSessionsPerIP > in.MaxSessions {
		bad("max_sessions_per_ip", "must be 1 to inbound.max_sessions")
	}
	if in.MaxSessionsPerNet < 1 {
		bad("max_sessions_per_net", "must be > 0")
	}
	if in.BadRecipientsSlow < 1 {
		bad("bad_recipients_slow", "must be > 0")
	}
	if in.BadRecipientsBlock < in.BadRecipientsSlow {
		bad("bad_recipients_block", "must be >= inbound.bad_recipients_slow")
	}
	if in.BlockFor <= 0 {
		bad("block_for", "must be > 0")
	}
	if in.ReadTimeout <= 0 {
		bad("read_timeout", "must be > 0")
	}
	if in.DataTimeout < in.ReadTimeout {
		bad("data_timeout", "must be >= inbound.read_timeout")
	}
	if in.WriteTimeout <= 0 {
		bad("write_timeout", "must be > 0")
	}
	if in.MaxUnclaimed < 1 {
		bad("max_unclaimed", "must be > 0")
	}
	return errors.Join(errs...)
}

// On reports whether any of the inbound side is configured: the MX
// listener, VERP or report addresses.
func (in *Inbound) On() bool {
	return in.Listen != "" || in.BounceDomain != "" || len(in.ReportAddresses) > 0
}
