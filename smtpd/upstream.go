package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Envelope is what an upstream needs besides the body of one copy.
type Envelope struct {
	From     string
	To       string
	SMTPUTF8 bool
	Body8Bit bool
	Size     int64 // 0: unknown, not sent
}

// Result describes one delivery try, for the logs.
type Result struct {
	Reply string // the upstream's final reply text, or the error
	From  string // local address of the connection ("" for a folder)
	To    string // upstream address (or folder)
	State string // where it ended: "connect", "mail", "rcpt", "data" or "done"
}

// Upstream delivers one copy. write streams the copy's body; it is called
// at most once per Deliver. An error is an *smtp.SMTPError when the
// upstream replied (its code says temporary or permanent); anything else
// is a temporary fault.
type Upstream interface {
	Deliver(ctx context.Context, env Envelope, write func(io.Writer) error) (Result, error)
	Close() error
}

// SMTPUpstreamConfig configures an SMTPUpstream.
type SMTPUpstreamConfig struct {
	Name      string
	Host      string
	Port      int
	TLS       string      // "starttls", "implicit" or "none"
	TLSConfig *tls.Config // nil: system roots, ServerName = Host
	Username  string      // AUTH PLAIN when set
	Password  string
	PoolSize  int    // connections kept and used at once; default 8
	LocalName string // EHLO name
	// Timeouts; defaults 30s dial, 5m command, 10m after the final dot.
	DialTimeout, CommandTimeout, SubmissionTimeout time.Duration
	// IdleTimeout closes pooled connections unused this long; default 1m.
	IdleTimeout time.Duration
}

// SMTPUpstream delivers over a pool of reused SMTP client connections.
type SMTPUpstream struct {
	cfg  SMTPUpstreamConfig
	addr string
	sem  chan struct{}

	mu     sync.Mutex
	idle   []*pooledConn
	closed bool
}

type pooledConn struct {
	c        *smtp.Client
	conn     net.Conn
	lastUsed time.Time
}

// NewSMTPUpstream returns an upstream; it dials lazily.
func NewSMTPUpstream(cfg SMTPUpstreamConfig) (*SMTPUpstream, error) {
	switch cfg.TLS {
	case "starttls", "implicit", "none":
	default:
		return nil, fmt.Errorf("smtpd: upstream %s: tls %q: want starttls, implicit or none", cfg.Name, cfg.TLS)
	}
	if cfg.Host == "" || cfg.Port <= 0 {
		return nil, fmt.Errorf("smtpd: upstream %s: host and port are required", cfg.Name)
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 8
	}
	if cfg.LocalName == "" {
		cfg.LocalName = "localhost"
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&cfg.DialTimeout, 30*time.Second)
	def(&cfg.CommandTimeout, 5*time.Minute)
	def(&cfg.SubmissionTimeout, 10*time.Minute)
	def(&cfg.IdleTimeout, time.Minute)
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{}
	} else {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
	}
	if cfg.TLSConfig.ServerName == "" {
		cfg.TLSConfig.ServerName = cfg.Host
	}
	if cfg.TLSConfig.MinVersion == 0 {
		cfg.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return &SMTPUpstream{
		cfg:  cfg,
		addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		sem:  make(chan struct{}, cfg.PoolSize),
	}, nil
}

// flushOnReadConn buffers what is written to an upstream connection and
// sends it when the client next reads (it then waits for a reply), or when
// the buffer is full. go-smtp's writer hands the connection 4 KB at a
// time, so a 36 KB copy took nine write system calls (and as many wake-ups
// of the receiver); now it takes one. SMTP is a request-reply protocol
// (and without PIPELINING one command at a time), so nothing waits in the
// buffer while the client waits for the server. It sits under TLS, so TLS
// records are coalesced the same way.
//
// Close closes the connection without sending what is buffered (QUIT is
// followed by a read of its reply, which sends it): it may be called from
// another goroutine to abort a transaction.
type flushOnReadConn struct {
	net.Conn
	w *bufio.Writer
}

// upstreamWriteBuf is the coalescing buffer of an upstream connection.
const upstreamWriteBuf = 64 << 10

func newFlushOnReadConn(c net.Conn) *flushOnReadConn {
	return &flushOnReadConn{Conn: c, w: bufio.NewWriterSize(c, upstreamWriteBuf)}
}

func (c *flushOnReadConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *flushOnReadConn) Read(p []byte) (int, error) {
	if c.w.Buffered() > 0 {
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

// ErrUpstreamClosed is returned by Deliver after Close.
var ErrUpstreamClosed = errors.New("smtpd: upstream closed")

func (u *SMTPUpstream) dial(ctx context.Context) (*pooledConn, error) {
	d := net.Dialer{Timeout: u.cfg.DialTimeout}
	raw, err := d.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, err
	}
	var conn net.Conn = newFlushOnReadConn(raw)
	// Bound the greeting, TLS handshake and EHLO.
	conn.SetDeadline(time.Now().Add(u.cfg.CommandTimeout))
	var c *smtp.Client
	switch u.cfg.TLS {
	case "implicit":
		tc := tls.Client(conn, u.cfg.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
		c = smtp.NewClient(conn)
	case "starttls":
		// go-smtp says EHLO localhost before STARTTLS; our name follows
		// after it, below.
		c, err = smtp.NewClientStartTLS(conn, u.cfg.TLSConfig)
		if err != nil {
			conn.Close()
			return nil, err
		}
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = u.cfg.CommandTimeout
	c.SubmissionTimeout = u.cfg.SubmissionTimeout
	if err := c.Hello(u.cfg.LocalName); err != nil {
		c.Close()
		return nil, err
	}
	if u.cfg.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", u.cfg.Username, u.cfg.Password)); err != nil {
			c.Close()
			return nil, err
		}
	}
	conn.SetDeadline(time.Time{})
	return &pooledConn{c: c, conn: conn}, nil
}

// get returns an idle connection or a new one; reused reports which.
func (u *SMTPUpstream) get(ctx context.Context) (pc *pooledConn, reused bool, err error) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, false, ErrUpstreamClosed
	}
	now := time.Now()
	for len(u.idle) > 0 {
		pc = u.idle[len(u.idle)-1]
		u.idle = u.idle[:len(u.idle)-1]
		if now.Sub(pc.lastUsed) < u.cfg.IdleTimeout {
			u.mu.Unlock()
			return pc, true, nil
		}
		pc.c.Close()
	}
	u.mu.Unlock()
	pc, err = u.dial(ctx)
	return pc, false, err
}

func (u *SMTPUpstream) put(pc *pooledConn) {
	pc.lastUsed = time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		pc.c.Close()
		return
	}
	u.idle = append(u.idle, pc)
}

// Deliver sends one copy. A pooled connection that turns out dead before
// the transaction started is replaced once.
func (u *SMTPUpstream) Deliver(ctx context.Context, env Envelope, write func(io.Writer) error) (Result, error) {
	res := Result{To: u.addr, State: "connect"}
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		return res, ctx.Err()
	}
	defer func() { <-u.sem }()

	for try := 0; ; try++ {
		pc, reused, err := u.get(ctx)
		if err != nil {
			return res, err
		}
		res.From = pc.conn.LocalAddr().String()
		// A context end aborts the try by closing the connection.
		stop := context.AfterFunc(ctx, func() { pc.conn.Close() })
		res, err = u.transact(pc, env, write, res)
		aborted := !stop()
		if err == nil && !aborted {
			u.put(pc)
			return res, nil
		}
		var se *smtp.SMTPError
		if aborted {
			pc.c.Close()
			if err == nil {
				// Delivered, then the context ended: it still counts.
				return res, nil
			}
			return res, fmt.Errorf("smtpd: upstream %s: %w", u.cfg.Name, ctx.Err())
		}
		if errors.As(err, &se) && res.State != "data" {
			// The connection is fine: reset the transaction, keep it.
			if pc.c.Reset() == nil {
				u.put(pc)
			} else {
				pc.c.Close()
			}
			return res, err
		}
		pc.c.Close()
		if reused && res.State == "mail" && se == nil && try == 0 {
			continue // the idle connection died; dial a fresh one
		}
		return res, err
	}
}

// transact runs MAIL, RCPT and DATA on pc. When writing the body fails it
// closes the connection and never ends DATA, so the upstream cannot
// accept a truncated message.
func (u *SMTPUpstream) transact(pc *pooledConn, env Envelope, write func(io.Writer) error, res Result) (Result, error) {
	c := pc.c
	opts := &smtp.MailOptions{UTF8: env.SMTPUTF8, Size: env.Size}
	if ok, _ := c.Extension("SMTPUTF8"); env.SMTPUTF8 && !ok {
		if !isASCII(env.From) || !isASCII(env.To) {
			// RFC 6531 §3.2: cannot be relayed to this upstream.
			res.State = "mail"
			return res, &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
				Message: "upstream does not support SMTPUTF8 and the envelope needs it"}
		}
		opts.UTF8 = false // ASCII envelope: send it without the extension
	}
	if env.Body8Bit {
		opts.Body = smtp.Body8BitMIME
	}
	res.State = "mail"
	if err := c.Mail(env.From, opts); err != nil {
		return res, err
	}
	res.State = "rcpt"
	if err := c.Rcpt(env.To, nil); err != nil {
		return res, err
	}
	res.State = "data"
	w, err := c.Data()
	if err != nil {
		return res, err
	}
	pc.conn.SetDeadline(time.Now().Add(u.cfg.SubmissionTimeout))
	if err := write(w); err != nil {
		pc.conn.Close() // never w.Close(): that would commit a truncated message
		return res, fmt.Errorf("smtpd: upstream %s: writing data: %w", u.cfg.Name, err)
	}
	pc.conn.SetDeadline(time.Time{})
	resp, err := w.CloseWithResponse()
	if err != nil {
		return res, err
	}
	res.State = "done"
	res.Reply = "250 " + resp.StatusText
	return res, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Close closes idle connections; connections in use close when their
// delivery ends.
func (u *SMTPUpstream) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	for _, pc := range u.idle {
		pc.c.Quit()
		pc.c.Close()
	}
	u.idle = nil
	return nil
}

// FolderUpstream writes each delivered copy as DIR/<name>.eml, for
// development. The file holds exactly the bytes an SMTP upstream would
// receive in DATA (the envelope is not in it).
type FolderUpstream struct {
	Dir    string
	NoSync bool
}

type folderNameKey struct{}

// WithFileName returns a context that tells a FolderUpstream the file name
// (without .eml) to write; delivery passes the copy id.
func WithFileName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, folderNameKey{}, name)
}

// Deliver writes the copy to a temporary file and renames it into place.
func (f *FolderUpstream) Deliver(ctx context.Context, env Envelope, write func(io.Writer) error) (Result, error) {
	res := Result{To: f.Dir, State: "data"}
	name, _ := ctx.Value(folderNameKey{}).(string)
	if name == "" {
		name = strconv.FormatInt(time.Now().UnixNano(), 16)
	}
	name = filepath.Base(name) + ".eml"
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return res, fmt.Errorf("smtpd: folder upstream: %w", err)
	}
	tmp, err := os.CreateTemp(f.Dir, ".tmp-*")
	if err != nil {
		return res, fmt.Errorf("smtpd: folder upstream: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return res, fmt.Errorf("smtpd: folder upstream: %w", err)
	}
	if !f.NoSync {
		if err := tmp.Sync(); err != nil {
			return res, fmt.Errorf("smtpd: folder upstream: %w", err)
		}
	}
	if err := tmp.Close(); err != nil {
		return res, fmt.Errorf("smtpd: folder upstream: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return res, fmt.Errorf("smtpd: folder upstream: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(f.Dir, name)); err != nil {
		return res, fmt.Errorf("smtpd: folder upstream: %w", err)
	}
	done = true
	res.State = "done"
	res.Reply = "250 written to " + name
	return res, nil
}

// Close implements Upstream.
func (f *FolderUpstream) Close() error { return nil }
