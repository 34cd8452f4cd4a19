package smtpd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/store"
)

// session is one SMTP session: from EHLO to QUIT, or to STARTTLS, after
// which go-smtp starts a new one. With CHUNKING, go-smtp runs Data on its
// own goroutine while Reset or Logout may come from the connection's, so
// the state is guarded by mu.
type session struct {
	srv    *Server
	log    *slog.Logger
	sc     *smtp.Conn
	conn   *trackedConn // nil if the connection is not one of ours
	ip     netip.Addr
	remote string
	secure bool // TLS, or loopback with plaintext allowed
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	cred    *Credential
	trusted string // the trusted network's prefix, when cred comes from one
	user    string // AUTH username, "" when trusted
	from    string
	mail    *smtp.MailOptions
	rcpts   []string
	closed  bool
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	_, isTLS := c.TLSConnectionState()
	ip := remoteIP(nc)
	var tc *trackedConn
	if nn, ok := nc.(interface{ NetConn() net.Conn }); ok {
		tc, _ = nn.NetConn().(*trackedConn)
	} else {
		tc, _ = nc.(*trackedConn)
	}
	id := strconv.FormatUint(s.nextID.Add(1), 16)
	ctx, cancel := context.WithCancel(s.ctx)
	ss := &session{
		srv:    s,
		sc:     c,
		conn:   tc,
		ip:     ip,
		remote: nc.RemoteAddr().String(),
		secure: s.secureFor(ip, isTLS),
		ctx:    ctx,
		cancel: cancel,
		log:    s.log.With("remote", nc.RemoteAddr().String(), "session", id),
	}
	if t := s.trustedNet(ip); t != nil {
		ss.cred, ss.trusted = t.Cred, t.Prefix.String()
	}
	ss.log.Debug("smtp session", "tls", isTLS, "helo", printable(c.Hostname(), 255), "trusted", ss.cred != nil)
	return ss, nil
}

// AuthMechanisms implements smtp.AuthSession. AUTH is not offered on a
// connection that may not use it.
func (ss *session) AuthMechanisms() []string {
	if !ss.secure {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	if !ss.secure {
		return nil, errTLSRequired
	}
	ss.mu.Lock()
	inTx := ss.from != "" || ss.mail != nil
	ss.mu.Unlock()
	if inTx {
		return nil, errAuthInTransaction
	}
	if d, blocked := ss.srv.authLimit.blocked(ss.ip, ""); blocked {
		ss.srv.metrics.auth.WithLabelValues("blocked").Inc()
		return nil, &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: blockedText(d)}
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return plainServer{sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return ss.authenticate(username, "\x00") // never matches: counts as a failure
			}
			return ss.authenticate(username, password)
		})}, nil
	case sasl.Login:
		return &loginServer{auth: ss.authenticate}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authenticate checks a username and password. Failures are counted per
// address and username (and per address), delayed past the limiter's
// threshold, and refused once blocked; a blocked username is refused
// without a check.
func (ss *session) authenticate(username, password string) error {
	if d, blocked := ss.srv.authLimit.blocked(ss.ip, username); blocked {
		ss.srv.metrics.auth.WithLabelValues("blocked").Inc()
		ss.log.Warn("smtp auth refused: blocked", "user", printable(username, 64))
		return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: blockedText(d)}
	}
	cred, err := ss.srv.users.Load().verify(ss.srv.salt, ss.srv.bcryptSem, username, password)
	if err == nil {
		ss.srv.authLimit.succeed(ss.ip, username)
		if ss.conn != nil {
			ss.srv.authenticated(ss.conn)
		}
		ss.srv.metrics.auth.WithLabelValues("success").Inc()
		ss.mu.Lock()
		ss.cred, ss.user, ss.trusted = cred, username, ""
		ss.mu.Unlock()
		ss.log.Info("smtp auth", "user", printable(username, 64), "account", cred.Account)
		return nil
	}
	if errors.Is(err, errCheckFailed) {
		ss.srv.metrics.auth.WithLabelValues("error").Inc()
		ss.log.Error("smtp auth check failed", "user", printable(username, 64), "err", err)
		return errAuthTempFail
	}
	ss.srv.metrics.auth.WithLabelValues("failure").Inc()
	delay, blocked, left := ss.srv.authLimit.fail(ss.ip, username)
	ss.log.Warn("smtp auth failed", "user", printable(username, 64), "delay", delay, "blocked", blocked)
	if blocked {
		return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: blockedText(left)}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ss.ctx.Done():
			t.Stop()
		}
	}
	return errAuthFailed
}

// allowed is the gate of Mail, Rcpt and Data: go-smtp requires neither TLS
// nor AUTH before a transaction. Called with mu held.
func (ss *session) allowed() error {
	if !ss.secure {
		return errTLSRequired
	}
	if ss.cred == nil {
		return errAuthRequired
	}
	return nil
}

// Mail implements smtp.Session.
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.conn != nil && !ss.conn.waitBDAT(10*time.Second) {
		ss.log.Error("smtp chunked message still running after abort")
		return errLocalFailure
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err := ss.allowed(); err != nil {
		ss.log.Info("smtp mail refused", "reason", err.(*smtp.SMTPError).Message)
		return err
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	if from != "" {
		if err := checkAddress(from, opts.UTF8, errBadSender); err != nil {
			return err
		}
	}
	// Refused now, before the client sends the message, when the disk is
	// below its reserve (RFC 5321 §4.2.2 names 452 for this).
	if sc, ok := ss.srv.cfg.Submitter.(SpaceChecker); ok {
		if err := sc.CheckSpace(opts.Size); err != nil {
			return replyError(ss.log, "mail", err, ss.srv.cfg.MaxMessageBytes)
		}
	}
	ss.from, ss.mail, ss.rcpts = from, opts, nil
	if ss.conn != nil {
		ss.conn.busy.Store(true)
	}
	return nil
}

// Rcpt implements smtp.Session.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err := ss.allowed(); err != nil {
		return err
	}
	if ss.mail == nil {
		return errNoTransaction
	}
	if n := ss.srv.cfg.MaxRecipients; len(ss.rcpts) >= n {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
			Message: "Too many recipients: at most " + strconv.Itoa(n) + " per message; send the rest in another message"}
	}
	if err := checkAddress(to, ss.mail.UTF8, errBadRecipient); err != nil {
		return err
	}
	if rc, ok := ss.srv.cfg.Submitter.(RecipientChecker); ok {
		if err := rc.CheckRecipient(ss.ctx, ss.cred, to); err != nil {
			return replyError(ss.log, "rcpt", err, 0)
		}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

// Data implements smtp.Session. r is consumed before Data returns (by the
// Submitter, and by go-smtp after an error).
func (ss *session) Data(r io.Reader) error {
	ss.mu.Lock()
	if err := ss.allowed(); err != nil {
		ss.mu.Unlock()
		return err
	}
	if ss.mail == nil || len(ss.rcpts) == 0 {
		ss.mu.Unlock()
		return errNoTransaction
	}
	sub := &Submission{
		Cred:       ss.cred,
		From:       ss.from,
		Recipients: append([]string(nil), ss.rcpts...),
		SMTPUTF8:   ss.mail.UTF8,
		Body8Bit:   ss.mail.Body == smtp.Body8BitMIME || ss.mail.Body == smtp.BodyBinaryMIME,
		Size:       ss.mail.Size,
		RemoteAddr: ss.remote,
		Trace:      ss.trace(),
	}
	ctx, user := ss.ctx, ss.user
	ss.mu.Unlock()
	_, chunked := r.(*io.PipeReader)
	if ss.conn != nil {
		ss.conn.startData()
		defer ss.conn.endData()
		if chunked {
			run := &bdatRun{r: r.(*io.PipeReader), done: make(chan struct{})}
			ss.conn.bdat.Store(run)
			defer close(run.done)
		}
	}
	body := r
	var fix *dotFixer
	if !chunked {
		fix = &dotFixer{r: r}
		body = fix
		if ss.conn != nil {
			ss.conn.pauses.Store(true)
		}
	}

	max := ss.srv.cfg.MaxMessageBytes
	rcpt, err := ss.srv.cfg.Submitter.Submit(ctx, sub, &sizeLimitReader{r: body, n: max})
	timedOut := ss.dataTimeout(err)
	if fix != nil && timedOut == nil {
		// Read to the end here, not in go-smtp, which may miss it.
		_, _ = io.Copy(io.Discard, fix)
		if fix.endedEarly && ss.conn != nil {
			ss.conn.endDataEarly()
		}
	}
	if fix != nil && ss.conn != nil {
		ss.conn.pauses.Store(false) // go-smtp drains what is left: no pauses
	}
	if err == nil && (rcpt == nil || len(rcpt.CopyIDs)+len(rcpt.Refused) != len(sub.Recipients)) {
		err = errors.New("smtpd: submitter returned no receipt or the wrong number of copies")
	}
	if err != nil {
		ss.srv.metrics.messages.WithLabelValues("refused").Inc()
		if errors.Is(err, smtp.ErrDataTooLarge) {
			err = ErrTooBig
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			ss.log.Info("smtp message refused: line too long", "rcpts", len(sub.Recipients), "max_line", ss.srv.cfg.MaxLineLength)
			return lineTooLong(ss.srv.cfg.MaxLineLength)
		}
		if timedOut != nil {
			return timedOut
		}
		rerr := replyError(ss.log, "data", err, max)
		ss.log.Info("smtp message refused", "rcpts", len(sub.Recipients), "code", rerr.(*smtp.SMTPError).Code)
		return rerr
	}
	ss.srv.metrics.messages.WithLabelValues("accepted").Inc()
	ss.log.Info("smtp message accepted", "id", store.FormatID(rcpt.MessageID), "rcpts", len(sub.Recipients), "user", printable(user, 64))
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: queuedText(rcpt)}
}

// trace describes the session for the Received field. Called with mu held.
func (ss *session) trace() *Trace {
	tr := &Trace{Via: "SMTP", RemoteIP: ss.ip, AuthUser: ss.user, Trusted: ss.trusted}
	if ss.sc != nil {
		tr.Helo = ss.sc.Hostname()
		if cs, ok := ss.sc.TLSConnectionState(); ok {
			tr.TLSVersion, tr.TLSCipher = cs.Version, cs.CipherSuite
		}
	}
	return tr
}

// dataTimeout turns a read of message data that timed out into its
// reply, and ends the connection after it: what the client sends next
// would otherwise be read as commands. It returns nil for other errors.
func (ss *session) dataTimeout(err error) error {
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() || ss.conn == nil {
		return nil
	}
	cfg := &ss.srv.cfg
	elapsed := ss.conn.dataElapsed()
	ss.conn.closeReads()
	msg := "No message data for " + cfg.ReadTimeout.String() + "; connection closed, send the message again"
	if elapsed >= cfg.DataTimeout-time.Second {
		msg = "Message data took longer than " + cfg.DataTimeout.String() + "; connection closed, send the message again or on a faster link"
	}
	ss.log.Info("smtp message refused: data timeout", "elapsed", elapsed.Round(time.Millisecond))
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: msg}
}

// maxListedIDs bounds the copy ids named in the reply to DATA.
const maxListedIDs = 5

// queuedText is the text of the 250 reply to DATA: the message id, and the
// copy ids while they fit on a short line.
func queuedText(r *Receipt) string {
	var b strings.Builder
	b.WriteString("Ok: queued as ")
	b.WriteString(store.FormatID(r.MessageID))
	n := len(r.CopyIDs)
	b.WriteString(" (")
	b.WriteString(strconv.Itoa(n))
	if n == 1 {
		b.WriteString(" copy:")
	} else {
		b.WriteString(" copies:")
	}
	for i, id := range r.CopyIDs {
		if i == maxListedIDs {
			b.WriteString(" +")
			b.WriteString(strconv.Itoa(n - maxListedIDs))
			b.WriteString(" more")
			break
		}
		b.WriteByte(' ')
		b.WriteString(store.FormatID(id))
	}
	b.WriteByte(')')
	return b.String()
}

// Reset implements smtp.Session; safe to call any number of times.
func (ss *session) Reset() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.from, ss.mail, ss.rcpts = "", nil, nil
	if ss.conn != nil {
		ss.conn.busy.Store(false)
	}
}

// Logout implements smtp.Session; safe to call twice. go-smtp calls it
// from Conn.Close outside its own panic guard, so it guards itself.
func (ss *session) Logout() error {
	defer func() {
		if p := recover(); p != nil {
			ss.log.Error("smtp panic in logout", "panic", p)
		}
	}()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return nil
	}
	ss.closed = true
	ss.cancel()
	ss.from, ss.mail, ss.rcpts = "", nil, nil
	if ss.conn != nil {
		ss.conn.busy.Store(false)
	}
	return nil
}

// sizeLimitReader passes at most n bytes of r and returns
// ErrTooBig if r holds more.
type sizeLimitReader struct {
	r io.Reader
	n int64
}

func (l *sizeLimitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		k, err := l.r.Read(one[:])
		if k > 0 {
			return 0, ErrTooBig
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.r.Read(p)
	l.n -= int64(k)
	return k, err
}

// Address limits from RFC 5321 §4.5.3.1.
const (
	maxLocalLen  = 64
	maxDomainLen = 255
	maxPathLen   = 256
)

// checkAddress checks the syntax of an envelope address beyond what
// go-smtp parsed: local@domain within the RFC 5321 lengths, a plausible
// domain or address literal, and non-ASCII only with SMTPUTF8.
func checkAddress(addr string, utf8ok bool, bad *smtp.SMTPError) error {
	if len(addr) > maxPathLen || !utf8.ValidString(addr) {
		return bad
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return bad
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > maxLocalLen || len(domain) > maxDomainLen {
		return bad
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c < 0x20 || c == 0x7f {
			return bad
		}
		if c >= 0x80 && !utf8ok {
			return errNeedUTF8
		}
	}
	if !validLocal(local) {
		return bad
	}
	if strings.HasPrefix(domain, "[") {
		if !strings.HasSuffix(domain, "]") {
			return bad
		}
		lit := domain[1 : len(domain)-1]
		lit = strings.TrimPrefix(lit, "IPv6:")
		if _, err := netip.ParseAddr(lit); err != nil {
			return bad
		}
		return nil
	}
	for _, label := range strings.Split(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r >= 0x80) {
				return bad
			}
		}
	}
	return nil
}

// validLocal checks that a local part is a dot-atom (UTF-8 allowed; Mail
// and Rcpt require SMTPUTF8 for it). go-smtp hands over quoted local parts
// unquoted, so "a b"@x and a@b@x look alike here: both are refused, a
// price worth paying for addresses that are rare in submission.
func validLocal(local string) bool {
	for _, label := range strings.Split(local, ".") {
		if label == "" {
			return false
		}
		for j := 0; j < len(label); j++ {
			c := label[j]
			if c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 {
				continue
			}
			return false
		}
	}
	return true
}
