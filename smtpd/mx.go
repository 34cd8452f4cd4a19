package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// The MX listener (SPEC §11): where the mail that comes back arrives.
// Plain SMTP (RFC 5321) with STARTTLS offered (RFC 3207), no AUTH, and
// never a relay: RCPT TO takes only VERP addresses whose token verifies
// at a bounce domain, the report addresses (and their LOCAL+ACCOUNT
// forms), and postmaster@ of the bounce domains (RFC 5321 §4.5.1);
// everything else is refused there. The null sender (MAIL FROM:<>, what
// bounces use) and many recipients work. A message is answered 250 only
// once it is durable in the inbound spool (Inbound.Submit).
//
// It is a Server of its own, with the submission server's connection
// handling: session limits in total, per address and per network,
// timeouts, size and line limits, the error boundary, graceful shutdown.
// The brute-force limiter counts refused recipients instead of failed
// logins: an address that keeps guessing VERP addresses is slowed down,
// then refused at connect for a while.

// MXConfig configures the MX listener. Zero limits take the submission
// server's defaults.
type MXConfig struct {
	Hostname          string      // name in the greeting
	TLS               *tls.Config // offered with STARTTLS; nil offers none
	Inbound           *Inbound    // required: where messages go
	MaxMessageBytes   int64
	MaxRecipients     int
	MaxSessions       int
	MaxSessionsPerIP  int
	MaxSessionsPerNet int // per /24 (IPv4) or /64 (IPv6)
	MaxLineLength     int
	ReadTimeout       time.Duration
	DataTimeout       time.Duration
	WriteTimeout      time.Duration
	// BadRecipientsSlow refused recipients from one address slow its
	// replies; BadRecipientsBlock refuse it (at connect) for BlockFor.
	BadRecipientsSlow  int
	BadRecipientsBlock int
	BlockFor           time.Duration
	Logger             *slog.Logger
	// Registerer, when set, gets the listener's session gauge.
	Registerer prometheus.Registerer
}

// mxCredential stands for every MX session in the shared Data path: the
// inbound spool needs no account.
var mxCredential = &Credential{Username: "mx"}

// NewMXServer returns a Server that answers as the MX listener; serve it
// with Serve(ln, ModeSTARTTLS), stop it with Shutdown and Close.
func NewMXServer(cfg MXConfig) (*Server, error) {
	if cfg.Inbound == nil {
		return nil, errors.New("smtpd: mx: an Inbound is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	read := cfg.ReadTimeout
	if read <= 0 {
		read = 5 * time.Minute
	}
	s, err := NewServer(ServerConfig{
		Hostname: cfg.Hostname, TLS: cfg.TLS, Submitter: cfg.Inbound,
		MaxMessageBytes: cfg.MaxMessageBytes, MaxRecipients: cfg.MaxRecipients,
		MaxSessions: cfg.MaxSessions, MaxSessionsPerIP: cfg.MaxSessionsPerIP, MaxUnauthPerNet: cfg.MaxSessionsPerNet,
		MaxLineLength: cfg.MaxLineLength, ReadTimeout: cfg.ReadTimeout, DataTimeout: cfg.DataTimeout, WriteTimeout: cfg.WriteTimeout,
		// Until EHLO, the idle limit; after it no session ever
		// authenticates (newMXSession lifts the deadline).
		AuthTimeout:   read,
		AuthSlowAfter: cfg.BadRecipientsSlow, AuthBlockAfter: cfg.BadRecipientsBlock,
		AuthBlockAddressAfter: cfg.BadRecipientsBlock, AuthBlockFor: cfg.BlockFor,
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.smtp.Backend = smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return s.newMXSession(c, cfg.Inbound) })
	s.smtp.AllowInsecureAuth = false
	s.listening = "mx listening"
	if cfg.Registerer != nil {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "trackrelay_mx_sessions", Help: "MX listener connections open now."},
			func() float64 { return float64(s.sessionCount()) })
		if err := cfg.Registerer.Register(g); err != nil {
			return nil, fmt.Errorf("smtpd: mx: metrics: %w", err)
		}
	}
	return s, nil
}

// mxSession is a session of the MX listener: the submission session's
// state, DATA path and teardown, with its own MAIL and RCPT and no AUTH.
type mxSession struct {
	*session
	in *Inbound
}

var (
	_ smtp.Session     = (*mxSession)(nil)
	_ smtp.AuthSession = (*mxSession)(nil)
)

func (s *Server) newMXSession(c *smtp.Conn, in *Inbound) (smtp.Session, error) {
	base, err := s.newSession(c)
	if err != nil {
		return nil, err
	}
	ss := base.(*session)
	// Anyone may send here, with or without TLS: what is taken is decided
	// per recipient.
	ss.secure, ss.cred, ss.trusted = true, mxCredential, ""
	if ss.conn != nil {
		ss.conn.authUntil.Store(0)
	}
	ss.log = ss.log.With("listener", "mx")
	return &mxSession{session: ss, in: in}, nil
}

var errMXNoAuth = &smtp.SMTPError{Code: 502, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
	Message: "AUTH is not offered here: this is the MX for mail that comes back; submit mail on the submission port"}

// AuthMechanisms implements smtp.AuthSession: none are offered.
func (ms *mxSession) AuthMechanisms() []string { return nil }

// Auth implements smtp.AuthSession: always refused.
func (ms *mxSession) Auth(string) (sasl.Server, error) { return nil, errMXNoAuth }

// Mail implements smtp.Session. The null sender is welcome.
func (ms *mxSession) Mail(from string, opts *smtp.MailOptions) error {
	if ms.conn != nil && !ms.conn.waitBDAT(10*time.Second) {
		ms.log.Error("smtp chunked message still running after abort")
		return errLocalFailure
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	if from != "" {
		if err := checkAddress(from, opts.UTF8, errBadSender); err != nil {
			return err
		}
	}
	if err := ms.in.CheckSpace(opts.Size); err != nil {
		return replyError(ms.log, "mail", err, ms.srv.cfg.MaxMessageBytes)
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.from, ms.mail, ms.rcpts = from, opts, nil
	if ms.conn != nil {
		ms.conn.busy.Store(true)
	}
	return nil
}

// Rcpt implements smtp.Session: only what the inbound side takes.
func (ms *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ms.mu.Lock()
	mail, n := ms.mail, len(ms.rcpts)
	ms.mu.Unlock()
	if mail == nil {
		return errNoTransaction
	}
	if max := ms.srv.cfg.MaxRecipients; n >= max {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
			Message: "Too many recipients: at most " + strconv.Itoa(max) + " per message; send the rest in another message"}
	}
	if err := checkAddress(to, mail.UTF8, errBadRecipient); err != nil {
		return err
	}
	if err := ms.take(to); err != nil {
		return err
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.mail == nil { // reset meanwhile
		return errNoTransaction
	}
	ms.rcpts = append(ms.rcpts, to)
	return nil
}

// take decides on one recipient.
func (ms *mxSession) take(to string) error {
	ctx := ms.ctx
	t := ms.in.classifyRcpt(ctx, to)
	switch t.kind {
	case rcptVERP:
		_, err := ms.in.cfg.Store.Copy(ctx, t.copy)
		if errors.Is(err, store.ErrNotFound) {
			ms.in.m.rcpt.WithLabelValues("refused").Inc()
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
				Message: "<" + printable(to, 256) + "> is no longer known here: the message it was sent with is gone"}
		}
		if err != nil {
			return replyError(ms.log, "rcpt", err, 0)
		}
		ms.in.m.rcpt.WithLabelValues("verp").Inc()
		return nil
	case rcptReport:
		if t.account != "" {
			name, err := ms.in.accountNamed(ctx, t.account)
			if err != nil {
				return replyError(ms.log, "rcpt", err, 0)
			}
			if name == "" {
				return ms.refuse(to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
					Message: "<" + printable(to, 256) + ">: no such account here"})
			}
		}
		ms.in.m.rcpt.WithLabelValues("report").Inc()
		return nil
	case rcptPostmaster:
		ms.in.m.rcpt.WithLabelValues("postmaster").Inc()
		return nil
	}
	if errors.Is(t.err, rewrite.ErrBadToken) {
		return ms.refuse(to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: "<" + printable(to, 256) + "> is not a bounce address of this relay: its token does not verify (altered or forged)"})
	}
	if _, domain, ok := splitAddr(to); ok && ms.in.ours(ctx, domain) {
		return ms.refuse(to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: "<" + printable(to, 256) + ">: no such address; this domain takes only bounces of mail sent from here"})
	}
	return ms.refuse(to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Relaying denied: this host is the MX for mail that comes back to " + ms.srv.cfg.Hostname + " and takes mail only for its bounce domains"})
}

// refuse counts a refused recipient against the client's address, delays
// the reply past the limiter's threshold, and once the address is blocked
// ends the connection after the reply.
func (ms *mxSession) refuse(to string, reply *smtp.SMTPError) error {
	ms.in.m.rcpt.WithLabelValues("refused").Inc()
	delay, blocked, left := ms.srv.authLimit.fail(ms.ip, "")
	ms.log.Info("mx recipient refused", "rcpt", printable(to, 256), "code", reply.Code, "delay", delay, "blocked", blocked)
	if blocked {
		if ms.conn != nil {
			ms.conn.closeReads()
		}
		m := int((left + time.Minute - 1) / time.Minute)
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message: "Too many refused recipients from your address; try again in " + strconv.Itoa(max(m, 1)) + " minutes"}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ms.ctx.Done():
			t.Stop()
		}
	}
	return reply
}

// Data implements smtp.Session: the submission session's DATA path, into
// the inbound spool; the reply names the spooled file.
func (ms *mxSession) Data(r io.Reader) error {
	err := ms.session.Data(r)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code == 250 {
		msg, _, _ := strings.Cut(se.Message, " (")
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: msg}
	}
	if err != nil {
		ms.in.m.received.WithLabelValues("refused").Inc()
	}
	return err
}

// ours reports whether the inbound side takes any mail at domain.
func (in *Inbound) ours(ctx context.Context, domain string) bool {
	for _, ra := range in.cfg.ReportAddresses {
		if _, d, _ := strings.Cut(ra, "@"); d == domain {
			return true
		}
	}
	for _, d := range in.cfg.Postmaster {
		if d == domain {
			return true
		}
	}
	return in.cfg.VERP.IsBounceDomain(ctx, domain)
}
