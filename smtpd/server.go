package smtpd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
)

// Mode says how a listener speaks TLS.
type Mode int

const (
	// ModeSTARTTLS is submission in plain text that offers STARTTLS
	// (ports 587, 25, 2525).
	ModeSTARTTLS Mode = iota
	// ModeImplicitTLS is submission over TLS from the first byte (port 465).
	ModeImplicitTLS
)

// TrustedNetwork lets clients from Prefix submit without AUTH, as Cred.
type TrustedNetwork struct {
	Prefix netip.Prefix
	Cred   *Credential
}

// ServerConfig configures the SMTP front. Zero limits take the defaults
// below; a negative limit is an error.
type ServerConfig struct {
	Hostname  string      // name in the greeting; default "localhost"
	TLS       *tls.Config // for STARTTLS and implicit TLS; nil offers no TLS
	Submitter Submitter   // required
	Users     map[string]User
	Trusted   []TrustedNetwork
	// AllowPlaintextLoopback lets a loopback peer AUTH and submit without
	// TLS. Off by default; any other peer must use TLS.
	AllowPlaintextLoopback bool

	MaxMessageBytes  int64 // default 25 MiB (SIZE, enforced while streaming)
	MaxRecipients    int   // per message, default 100
	MaxSessions      int   // connections in total, default 1000
	MaxSessionsPerIP int   // connections per address, default 20
	// MaxUnauthPerNet bounds the connections from one /24 (IPv4) or /64
	// (IPv6) that have not authenticated yet, trusted networks aside;
	// default 50.
	MaxUnauthPerNet int
	// MaxLineLength bounds a line, of a command or of message data (go-smtp
	// reads both through one limit); a message with a longer line is
	// refused with 554 5.6.0. Default 1 MiB, at most MaxMessageBytes.
	MaxLineLength int

	ReadTimeout time.Duration // idle limit: per command line, and per read of message data; default 5m
	// DataTimeout bounds the message data of one transaction as a whole
	// (DATA, or every BDAT chunk of it), however steadily it arrives;
	// default 1h.
	DataTimeout time.Duration
	// AuthTimeout is how long a connection may go without authenticating
	// (trusted networks aside); default 45s.
	AuthTimeout  time.Duration
	WriteTimeout time.Duration // per reply, default 1m

	AuthSlowAfter  int // failures per address before replies slow down, default 3
	AuthBlockAfter int // failures of one username from one address before it is refused there, default 10
	// AuthBlockAddressAfter is the failures from one address, whatever the
	// usernames, before the address is refused; default 3 x AuthBlockAfter.
	AuthBlockAddressAfter int
	AuthDelay             time.Duration // added per failure past AuthSlowAfter (capped at 8x), default 1s
	AuthBlockFor          time.Duration // how long a blocked address is refused, default 15m
	AuthTableSize         int           // addresses remembered, default 65536

	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
}

func (c *ServerConfig) defaults() error {
	var errs []error
	neg := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("smtpd: %s: must not be negative", name))
		}
	}
	neg("max_message_bytes", c.MaxMessageBytes)
	neg("max_recipients", int64(c.MaxRecipients))
	neg("max_sessions", int64(c.MaxSessions))
	neg("max_sessions_per_ip", int64(c.MaxSessionsPerIP))
	neg("max_unauth_sessions_per_net", int64(c.MaxUnauthPerNet))
	neg("max_line_length", int64(c.MaxLineLength))
	neg("read_timeout", int64(c.ReadTimeout))
	neg("data_timeout", int64(c.DataTimeout))
	neg("auth_timeout", int64(c.AuthTimeout))
	neg("auth_block_address_after", int64(c.AuthBlockAddressAfter))
	neg("write_timeout", int64(c.WriteTimeout))
	neg("auth_slow_after", int64(c.AuthSlowAfter))
	neg("auth_block_after", int64(c.AuthBlockAfter))
	neg("auth_delay", int64(c.AuthDelay))
	neg("auth_block_for", int64(c.AuthBlockFor))
	neg("auth_table_size", int64(c.AuthTableSize))
	if c.Submitter == nil {
		errs = append(errs, errors.New("smtpd: submitter: required"))
	}
	for i, t := range c.Trusted {
		if !t.Prefix.IsValid() || t.Cred == nil {
			errs = append(errs, fmt.Errorf("smtpd: trusted[%d]: want a valid prefix and a credential", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 25 << 20
	}
	set(&c.MaxRecipients, 100)
	set(&c.MaxSessions, 1000)
	set(&c.MaxSessionsPerIP, 20)
	set(&c.MaxUnauthPerNet, 50)
	set(&c.MaxLineLength, 1<<20)
	if int64(c.MaxLineLength) > c.MaxMessageBytes {
		c.MaxLineLength = int(c.MaxMessageBytes)
	}
	setD(&c.ReadTimeout, 5*time.Minute)
	setD(&c.DataTimeout, time.Hour)
	setD(&c.AuthTimeout, 45*time.Second)
	setD(&c.WriteTimeout, time.Minute)
	set(&c.AuthSlowAfter, 3)
	set(&c.AuthBlockAfter, 10)
	set(&c.AuthBlockAddressAfter, 3*c.AuthBlockAfter)
	setD(&c.AuthDelay, time.Second)
	setD(&c.AuthBlockFor, 15*time.Minute)
	set(&c.AuthTableSize, 65536)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server is the SMTP submission front: it authenticates clients, enforces
// the limits and hands each message to the Submitter. One Server serves any
// number of listeners, each in its Mode.
type Server struct {
	cfg       ServerConfig
	log       *slog.Logger
	smtp      *smtp.Server
	users     atomic.Pointer[userTable]
	trusted   atomic.Pointer[[]TrustedNetwork]
	authLimit *authLimiter
	salt      []byte // per-process key of the auth cache
	bcryptSem chan struct{}
	metrics   *frontMetrics
	ctx       context.Context // ends on Close: aborts submissions in flight
	cancel    context.CancelFunc
	nextID    atomic.Uint64

	isLoopback func(netip.Addr) bool // injectable for tests
	listening  string                // the log message of Serve: "smtp listening", or the MX's (mx.go)

	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	perIP  map[netip.Addr]int
	unauth map[netip.Prefix]int // connections not yet authenticated, per /24 or /64

	lnMu      sync.Mutex
	listeners map[net.Listener]struct{} // ours, closed by Shutdown and Close
	draining  atomic.Bool               // set under lnMu
	refusing  chan struct{}
	refuseWG  sync.WaitGroup
}

// NewServer checks cfg, fills in defaults and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		authLimit:  newAuthLimiter(cfg.AuthSlowAfter, cfg.AuthBlockAfter, cfg.AuthBlockAddressAfter, cfg.AuthDelay, cfg.AuthBlockFor, cfg.AuthTableSize),
		salt:       make([]byte, 32),
		isLoopback: netip.Addr.IsLoopback,
		conns:      make(map[*trackedConn]struct{}),
		listeners:  make(map[net.Listener]struct{}),
		perIP:      make(map[netip.Addr]int),
		unauth:     make(map[netip.Prefix]int),
		refusing:   make(chan struct{}, maxRefusing),
		bcryptSem:  make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	if _, err := rand.Read(s.salt); err != nil {
		return nil, fmt.Errorf("smtpd: auth cache salt: %w", err)
	}
	if err := s.SetUsers(cfg.Users); err != nil {
		return nil, err
	}
	s.SetTrusted(cfg.Trusted)
	m, err := newFrontMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.ctx, s.cancel = context.WithCancel(context.Background())

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLS
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	// go-smtp applies one line limit to commands and message data alike:
	// long enough for the long lines real messages have, short enough to
	// bound the memory a command line can take.
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	// The session decides per connection whether AUTH is allowed (TLS, or
	// loopback when configured); go-smtp's switch is server-wide.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slog.NewLogLogger(cfg.Logger.With("component", "go-smtp").Handler(), slog.LevelWarn)
	s.smtp = srv
	return s, nil
}

// SetUsers replaces the users, for a reload (SIGHUP). Sessions already
// authenticated keep their credential; connections stay open. The cache of
// verified passwords starts empty. On error the old users stay.
func (s *Server) SetUsers(users map[string]User) error {
	t, err := newUserTable(users)
	if err != nil {
		return err
	}
	s.users.Store(t)
	return nil
}

// SetTrusted replaces the trusted networks, for a reload.
func (s *Server) SetTrusted(nets []TrustedNetwork) {
	cp := append([]TrustedNetwork(nil), nets...)
	s.trusted.Store(&cp)
}

// trustedCred returns the credential of the most specific trusted network
// holding ip, or nil.
func (s *Server) trustedCred(ip netip.Addr) *Credential {
	t := s.trustedNet(ip)
	if t == nil {
		return nil
	}
	return t.Cred
}

// trustedNet returns the most specific trusted network holding ip, or nil.
func (s *Server) trustedNet(ip netip.Addr) *TrustedNetwork {
	if !ip.IsValid() {
		return nil
	}
	var best *TrustedNetwork
	nets := *s.trusted.Load()
	for i := range nets {
		if t := &nets[i]; t.Prefix.Contains(ip) && (best == nil || t.Prefix.Bits() > best.Prefix.Bits()) {
			best = t
		}
	}
	return best
}

// Serve accepts connections on ln in mode until Shutdown or Close, after
// which it returns nil (also when called after them). ln is closed when
// Serve returns.
func (s *Server) Serve(ln net.Listener, mode Mode) error {
	// Registered here, not only in go-smtp: its Shutdown closes only the
	// listeners its Serve already saw, so a Serve that starts just after
	// Shutdown would accept for ever.
	s.lnMu.Lock()
	if s.draining.Load() {
		s.lnMu.Unlock()
		ln.Close()
		return nil // shut down before it started: as if stopped at once
	}
	s.listeners[ln] = struct{}{}
	s.lnMu.Unlock()
	defer func() {
		s.lnMu.Lock()
		delete(s.listeners, ln)
		s.lnMu.Unlock()
	}()
	ll := &limitListener{Listener: ln, srv: s}
	var l net.Listener = ll
	switch mode {
	case ModeSTARTTLS:
	case ModeImplicitTLS:
		if s.cfg.TLS == nil {
			ln.Close()
			return errors.New("smtpd: implicit TLS listener without a TLS config")
		}
		ll.tls = s.cfg.TLS
		l = tls.NewListener(ll, s.cfg.TLS)
	default:
		ln.Close()
		return fmt.Errorf("smtpd: unknown listener mode %d", mode)
	}
	msg := "smtp listening"
	if s.listening != "" {
		msg = s.listening
	}
	s.log.Info(msg, "addr", ln.Addr().String(), "implicit_tls", mode == ModeImplicitTLS)
	err := s.smtp.Serve(l)
	if err != nil && s.draining.Load() && errors.Is(err, net.ErrClosed) {
		err = nil // closed by our Shutdown or Close before go-smtp's
	}
	return err
}

// stopListening refuses new Serve calls and closes the listeners.
func (s *Server) stopListening() {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.draining.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting, ends idle connections, lets transactions in
// progress finish and waits for them until ctx ends. Call Close after it
// to end whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopListening()
	s.connMu.Lock()
	for c := range s.conns {
		c.wake()
	}
	s.connMu.Unlock()
	err := s.smtp.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil // already closed by Close, or by stopListening
	}
	s.refuseWG.Wait()
	return err
}

// Close closes the listeners and every connection at once, and aborts
// submissions in flight. It is safe to call after Shutdown and twice.
func (s *Server) Close() error {
	s.stopListening()
	err := s.smtp.Close() // after Shutdown it only says "already closed"
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.connMu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connMu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close() // the handler's own Close releases the slot
	}
	s.cancel()
	s.refuseWG.Wait()
	return err
}

// secureFor says whether a connection from ip, with or without TLS, may
// AUTH and submit.
func (s *Server) secureFor(ip netip.Addr, isTLS bool) bool {
	return isTLS || (s.cfg.AllowPlaintextLoopback && ip.IsValid() && s.isLoopback(ip))
}

type frontMetrics struct {
	sessions      prometheus.Gauge
	sessionsTotal prometheus.Counter
	refused       *prometheus.CounterVec
	auth          *prometheus.CounterVec
	messages      *prometheus.CounterVec
}

func newFrontMetrics(reg prometheus.Registerer) (*frontMetrics, error) {
	m := &frontMetrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trackrelay_smtp_sessions", Help: "SMTP connections open now.",
		}),
		sessionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackrelay_smtp_sessions_total", Help: "SMTP connections admitted.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_smtp_sessions_refused_total", Help: "SMTP connections refused at connect, by reason.",
		}, []string{"reason"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_smtp_auth_total", Help: "SMTP AUTH attempts, by result (success, failure, error, blocked).",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_smtp_messages_total", Help: "Messages at the end of DATA, by result (accepted, refused).",
		}, []string{"result"}),
	}
	for _, r := range []string{"success", "failure", "error", "blocked"} {
		m.auth.WithLabelValues(r)
	}
	for _, r := range []string{"auth_blocked", "max_sessions", "max_sessions_per_ip", "max_unauthenticated_per_net"} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"accepted", "refused"} {
		m.messages.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sessions, m.sessionsTotal, m.refused, m.auth, m.messages} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("smtpd: metrics: %w", err)
			}
		}
	}
	return m, nil
}

// sessionCount is the number of connections admitted and still open.
func (s *Server) sessionCount() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return len(s.conns)
}
