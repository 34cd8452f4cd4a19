package smtpd

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// remoteIP returns the peer address of c, unmapped, or the zero Addr when
// c is not an IP connection.
func remoteIP(c net.Conn) netip.Addr {
	if c == nil {
		return netip.Addr{}
	}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// limitListener admits connections within the session limits and answers
// the others 421 4.7.0 at once, before go-smtp ever sees them.
type limitListener struct {
	net.Listener
	srv *Server
	tls *tls.Config // non-nil on an implicit TLS listener: refusals go out over TLS
}

// Accept returns the next admitted connection.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, refusal := l.srv.admit(c)
		if refusal == "" {
			return tc, nil
		}
		l.srv.refuse(c, refusal, l.tls)
	}
}

// trackedConn is an admitted connection. It releases its session slot on
// Close and lets Shutdown end it when it sits idle between transactions.
type trackedConn struct {
	net.Conn
	srv  *Server
	ip   netip.Addr
	busy atomic.Bool // inside a mail transaction: Shutdown lets it finish
	once sync.Once
	bdat atomic.Pointer[bdatRun] // the last chunked (BDAT) Data, see waitBDAT
}

// bdatRun is one Data call that go-smtp ran on its own goroutine for BDAT.
type bdatRun struct {
	r    *io.PipeReader
	done chan struct{} // closed when Data returns
}

// waitBDAT works around a data race in go-smtp v0.25.1: after a chunked
// message is aborted (RSET, EHLO or STARTTLS during BDAT), go-smtp's Data
// goroutine still reads Conn.dataResult after Data returns, while the next
// BDAT assigns a new channel to that field; the old result can then even
// land in the new message's channel. Every BDAT needs MAIL first, so Mail
// calls this: it waits for the old goroutine to close its pipe reader (it
// does so after its last use of the field), which go-smtp does right after
// Data returns. Reading the closed pipe synchronises with that close.
func (c *trackedConn) waitBDAT(timeout time.Duration) bool {
	run := c.bdat.Swap(nil)
	if run == nil {
		return true
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case <-run.done:
	case <-deadline.C:
		return false
	}
	var one [1]byte
	for {
		// The writer side is closed (the abort) or the reader side is: a
		// read cannot block. io.ErrClosedPipe means the reader is closed.
		if _, err := run.r.Read(one[:]); errors.Is(err, io.ErrClosedPipe) {
			return true
		}
		select {
		case <-deadline.C:
			return false
		case <-time.After(100 * time.Microsecond):
		}
	}
}

// Close closes the connection and releases its slot; safe to call twice.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.srv.release(c) })
	return err
}

// SetReadDeadline sets the read deadline, cut short to now while the server
// drains and the connection is idle, so an idle client does not hold
// Shutdown for a whole ReadTimeout.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if c.srv.draining.Load() && !c.busy.Load() {
		t = time.Now()
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, with SetReadDeadline's draining rule.
func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// wake ends a blocked read of an idle connection during Shutdown.
func (c *trackedConn) wake() {
	if !c.busy.Load() {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
}

// admit counts c against the session limits. It returns the wrapped
// connection, or a refusal text.
func (s *Server) admit(c net.Conn) (*trackedConn, string) {
	ip := remoteIP(c)
	if d, blocked := s.authLimit.blocked(ip); blocked {
		s.metrics.refused.WithLabelValues("auth_blocked").Inc()
		return nil, blockedText(d)
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.cfg.MaxSessions > 0 && len(s.conns) >= s.cfg.MaxSessions {
		s.metrics.refused.WithLabelValues("max_sessions").Inc()
		return nil, "Too many sessions on this server; try again in a few minutes"
	}
	// One IPv6 /64 counts as one address, as for AUTH failures: a host
	// usually has a whole /64 to pick source addresses from.
	key := limitKey(ip)
	if s.cfg.MaxSessionsPerIP > 0 && s.perIP[key] >= s.cfg.MaxSessionsPerIP {
		s.metrics.refused.WithLabelValues("max_sessions_per_ip").Inc()
		return nil, "Too many sessions from your address (limit " + strconv.Itoa(s.cfg.MaxSessionsPerIP) +
			"); close idle connections or try again later"
	}
	tc := &trackedConn{Conn: c, srv: s, ip: ip}
	s.conns[tc] = struct{}{}
	s.perIP[key]++
	s.metrics.sessions.Inc()
	s.metrics.sessionsTotal.Inc()
	return tc, ""
}

func (s *Server) release(c *trackedConn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	key := limitKey(c.ip)
	if s.perIP[key]--; s.perIP[key] <= 0 {
		delete(s.perIP, key)
	}
	s.metrics.sessions.Dec()
}

// maxRefusing bounds the goroutines writing refusals; beyond it a refused
// connection is closed without a word.
const maxRefusing = 64

// refuse answers c with 421 4.7.0 and closes it, on a goroutine of its own
// (a TLS handshake must not hold up Accept), bounded in number and time.
func (s *Server) refuse(c net.Conn, text string, cfg *tls.Config) {
	select {
	case s.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	s.refuseWG.Add(1)
	go func() {
		defer s.refuseWG.Done()
		defer func() { <-s.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		var w net.Conn = c
		if cfg != nil {
			tc := tls.Server(c, cfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			w = tc
		}
		_, _ = w.Write([]byte("421 4.7.0 " + text + "\r\n"))
	}()
}

func blockedText(d time.Duration) string {
	m := int((d + time.Minute - 1) / time.Minute)
	if m < 1 {
		m = 1
	}
	return "Too many failed logins from your address; try again in " + strconv.Itoa(m) + " minutes"
}

// authLimiter counts AUTH failures per remote address (IPv6 per /64).
// After slowAfter failures its replies are delayed, after blockAfter the
// address is refused for blockFor. The table holds at most max entries;
// an entry expires window after its last failure.
type authLimiter struct {
	slowAfter, blockAfter int
	step                  time.Duration // delay per failure past slowAfter
	blockFor, window      time.Duration
	max                   int
	now                   func() time.Time

	mu        sync.Mutex
	m         map[netip.Addr]*failEntry
	lastSweep time.Time
}

type failEntry struct {
	fails        int
	last         time.Time
	blockedUntil time.Time
}

func newAuthLimiter(slowAfter, blockAfter int, step, blockFor time.Duration, max int) *authLimiter {
	window := blockFor
	if window < 15*time.Minute {
		window = 15 * time.Minute
	}
	return &authLimiter{
		slowAfter: slowAfter, blockAfter: blockAfter, step: step,
		blockFor: blockFor, window: window, max: max,
		now: time.Now, m: make(map[netip.Addr]*failEntry),
	}
}

func limitKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return ip
}

// blocked says whether ip is refused now, and for how much longer.
func (l *authLimiter) blocked(ip netip.Addr) (time.Duration, bool) {
	if l.blockAfter <= 0 {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[limitKey(ip)]
	if e == nil {
		return 0, false
	}
	if d := e.blockedUntil.Sub(l.now()); d > 0 {
		return d, true
	}
	return 0, false
}

// fail records a failure from ip. It returns how long to delay the reply,
// and whether ip is now blocked (and for how long).
func (l *authLimiter) fail(ip netip.Addr) (delay time.Duration, blocked bool, left time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := limitKey(ip)
	e := l.m[k]
	if e != nil && now.Sub(e.last) > l.window && now.After(e.blockedUntil) {
		e.fails = 0 // an old run of failures no longer counts
	}
	if e == nil {
		l.makeRoom(now)
		e = &failEntry{}
		l.m[k] = e
	}
	e.fails++
	e.last = now
	if l.blockAfter > 0 && e.fails >= l.blockAfter {
		if e.blockedUntil.Before(now) {
			e.blockedUntil = now.Add(l.blockFor)
		}
		return 0, true, e.blockedUntil.Sub(now)
	}
	if l.slowAfter > 0 && e.fails >= l.slowAfter {
		delay = l.step * time.Duration(e.fails-l.slowAfter+1)
		if maxDelay := 8 * l.step; delay > maxDelay {
			delay = maxDelay
		}
	}
	return delay, false, 0
}

// succeed forgets ip's failures, unless it is blocked.
func (l *authLimiter) succeed(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := limitKey(ip)
	if e := l.m[k]; e != nil && !e.blockedUntil.After(l.now()) {
		delete(l.m, k)
	}
}

// makeRoom keeps the table under max entries: it drops expired entries
// (at most once a second), then, if still full, any unblocked entry, and
// as a last resort any entry.
func (l *authLimiter) makeRoom(now time.Time) {
	if len(l.m) < l.max {
		return
	}
	if now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		for k, e := range l.m {
			if now.Sub(e.last) > l.window && now.After(e.blockedUntil) {
				delete(l.m, k)
			}
		}
	}
	if len(l.m) < l.max {
		return
	}
	var victim netip.Addr
	found := false
	for k, e := range l.m {
		if !found || !e.blockedUntil.After(now) {
			victim, found = k, true
			if !e.blockedUntil.After(now) {
				break
			}
		}
	}
	delete(l.m, victim)
}

func (l *authLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
