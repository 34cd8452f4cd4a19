package smtpd

import (
	"crypto/tls"
	"errors"
	"hash/maphash"
	"io"
	"net"
	"net/netip"
	"os"
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
//
// It also keeps the read deadlines go-smtp cannot: before AUTH, no read
// deadline lies beyond the session's auth deadline (ServerConfig.
// AuthTimeout); while message data streams, each read may wait
// ReadTimeout for its bytes (an idle limit, not one for the whole
// message), up to DataTimeout after the data began.
type trackedConn struct {
	net.Conn
	srv  *Server
	ip   netip.Addr
	busy atomic.Bool // inside a mail transaction: Shutdown lets it finish
	once sync.Once
	bdat atomic.Pointer[bdatRun] // the last chunked (BDAT) Data, see waitBDAT

	// unauth is the network this connection counts against until it
	// authenticates (Server.unauth); invalid when it does not count.
	unauth    netip.Prefix
	authUntil atomic.Int64 // unix nanoseconds; 0 once authenticated or trusted

	dataStart   atomic.Int64 // unix nanoseconds the message data began; 0 outside it
	dataRunning atomic.Bool  // Data is running (for BDAT: across chunks)
	dataUntil   atomic.Int64 // unix nanoseconds: the read deadline last set for data
	dataLimit   atomic.Int64 // unix nanoseconds: the real one (idle limit or DataTimeout)
	pauses      atomic.Bool  // report pauses in the data: see errDataPause
	lastBytes   atomic.Int64 // unix nanoseconds: when data last came (or began)
	abortRead   atomic.Bool  // the next read fails at once: see endDataEarly
	closed      atomic.Bool  // reads end: the message data timed out
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
// Shutdown for a whole ReadTimeout, and to the auth deadline before AUTH.
// go-smtp calls it before each command line: message data is then over.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if !c.dataRunning.Load() {
		c.dataStart.Store(0)
		c.abortRead.Store(false)
	}
	if c.srv.draining.Load() && !c.busy.Load() {
		t = time.Now()
	}
	if au := c.authUntil.Load(); au != 0 {
		if d := time.Unix(0, au); t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// errReadAborted ends go-smtp's read of message data that the session
// found complete before go-smtp's own reader did (see dotFixer). It is a
// timeout to crypto/tls, which keeps the connection usable after it.
var errReadAborted = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

// errDataPause tells the session's dotFixer, reading message data, that
// no bytes came for dataPause: go-smtp's reader then hands over what it
// has so far (it otherwise waits for a full buffer), so the fixer can see
// an end of data that go-smtp missed. It is a timeout to crypto/tls, which
// keeps the connection usable, and the fixer reads on after it.
var errDataPause = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

// dataPause is how long message data may pause before go-smtp's reader is
// made to hand over what it has (errDataPause).
const dataPause = 150 * time.Millisecond

// Read reads from the connection, moving the read deadline on while
// message data streams.
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, io.EOF
	}
	if c.abortRead.CompareAndSwap(true, false) {
		return 0, errReadAborted
	}
	ds := c.dataStart.Load()
	if ds == 0 {
		return c.Conn.Read(p)
	}
	pauses := c.pauses.Load()
	c.extendData(ds, pauses)
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastBytes.Store(time.Now().UnixNano())
	}
	if err != nil && pauses && isTimeoutErr(err) && time.Now().UnixNano() < c.dataLimit.Load() {
		c.dataUntil.Store(0) // the next read sets a deadline again
		return n, errDataPause
	}
	return n, err
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// extendData sets the read deadline of a read of message data: ReadTimeout
// after data last came, but not past DataTimeout after the data began (and with
// pauses, dataPause from now). It leaves the deadline alone while it moves
// by less than a tenth of its span, to spare a timer update per read.
func (c *trackedConn) extendData(ds int64, pauses bool) {
	cfg := &c.srv.cfg
	now := time.Now()
	limit := time.Unix(0, max(c.lastBytes.Load(), ds)).Add(cfg.ReadTimeout)
	if capAt := time.Unix(0, ds).Add(cfg.DataTimeout); limit.After(capAt) {
		limit = capAt
	}
	d, span := limit, cfg.ReadTimeout
	if pauses {
		if p := now.Add(dataPause); p.Before(d) {
			d = p
		}
		span = dataPause
	}
	step := min(span/10, time.Second)
	if last := c.dataUntil.Load(); last != 0 && d.UnixNano() > last && d.UnixNano()-last < int64(step) {
		return
	}
	c.dataLimit.Store(limit.UnixNano())
	c.dataUntil.Store(d.UnixNano())
	_ = c.Conn.SetReadDeadline(d)
}

// startData marks the start of message data (DATA, or the first BDAT).
func (c *trackedConn) startData() {
	c.dataUntil.Store(0)
	now := time.Now().UnixNano()
	c.lastBytes.Store(now)
	if c.dataStart.Load() == 0 {
		c.dataStart.Store(now)
	}
	c.dataRunning.Store(true)
}

// endData marks the end of the session's Data call. Reads stay data reads
// until go-smtp asks for the next command, so the rest of a refused
// message drains under the data deadlines too.
func (c *trackedConn) endData() { c.dataRunning.Store(false) }

// dataElapsed is how long the current message data has been streaming.
func (c *trackedConn) dataElapsed() time.Duration {
	if ds := c.dataStart.Load(); ds != 0 {
		return time.Since(time.Unix(0, ds))
	}
	return 0
}

// endDataEarly makes go-smtp's reader of message data give up at its next
// read from the network, once the session has seen the end of the data
// that go-smtp's reader missed.
func (c *trackedConn) endDataEarly() { c.abortRead.Store(true) }

// closeReads ends the connection after the reply in progress: reads
// return EOF, so go-smtp writes its reply and closes.
func (c *trackedConn) closeReads() { c.closed.Store(true) }

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
// connection, or a refusal text. A client on a trusted network is never
// refused for failed logins, nor counted as unauthenticated.
func (s *Server) admit(c net.Conn) (*trackedConn, string) {
	ip := remoteIP(c)
	trusted := s.trustedCred(ip) != nil
	if !trusted {
		if d, blocked := s.authLimit.blocked(ip, ""); blocked {
			s.metrics.refused.WithLabelValues("auth_blocked").Inc()
			return nil, blockedText(d)
		}
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
	if !trusted {
		// Sessions that have not authenticated yet are limited per /24
		// (IPv4) or /64 (IPv6), so that a few networks cannot fill every
		// slot before anyone logs in.
		net := unauthNet(ip)
		if s.cfg.MaxUnauthPerNet > 0 && s.unauth[net] >= s.cfg.MaxUnauthPerNet {
			s.metrics.refused.WithLabelValues("max_unauthenticated_per_net").Inc()
			return nil, "Too many sessions from your network that have not authenticated (limit " +
				strconv.Itoa(s.cfg.MaxUnauthPerNet) + "); authenticate promptly or close idle connections"
		}
		s.unauth[net]++
		tc.unauth = net
		tc.authUntil.Store(time.Now().Add(s.cfg.AuthTimeout).UnixNano())
	}
	s.conns[tc] = struct{}{}
	s.perIP[key]++
	s.metrics.sessions.Inc()
	s.metrics.sessionsTotal.Inc()
	return tc, ""
}

// unauthNet is the network a connection from ip counts against before it
// authenticates: its /24 or /64.
func unauthNet(ip netip.Addr) netip.Prefix {
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// authenticated stops counting c as unauthenticated, and lifts its auth
// deadline. Safe to call more than once.
func (s *Server) authenticated(c *trackedConn) {
	c.authUntil.Store(0)
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.uncountUnauth(c)
}

// uncountUnauth releases c's unauthenticated slot. Called with connMu held.
func (s *Server) uncountUnauth(c *trackedConn) {
	if !c.unauth.IsValid() {
		return
	}
	if s.unauth[c.unauth]--; s.unauth[c.unauth] <= 0 {
		delete(s.unauth, c.unauth)
	}
	c.unauth = netip.Prefix{}
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
	s.uncountUnauth(c)
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

// authLimiter counts failed AUTH attempts, never successful ones and
// never the trusted path, which does not AUTH. It counts them per remote
// address (IPv6 per /64) and username first: after slowAfter failures of
// one username from one address its replies are delayed, after blockAfter
// that username is refused from that address for blockFor. Many users
// behind one shared address do not lock each other out that way; only
// addrBlockAfter failures from the address, whatever the usernames, refuse
// the address as a whole. The table holds at most max entries; an entry
// expires window after its last failure.
type authLimiter struct {
	slowAfter, blockAfter int
	addrBlockAfter        int
	step                  time.Duration // delay per failure past slowAfter
	blockFor, window      time.Duration
	max                   int
	now                   func() time.Time
	seed                  maphash.Seed

	mu        sync.Mutex
	m         map[failKey]*failEntry
	lastSweep time.Time
}

// failKey is one address (its /64 for IPv6) and a hash of a username, or
// the address as a whole (all set). Usernames are hashed so that what
// clients send as names is neither kept nor able to grow an entry.
type failKey struct {
	addr netip.Addr
	user uint64
	all  bool
}

type failEntry struct {
	fails        int
	last         time.Time
	blockedUntil time.Time
}

func newAuthLimiter(slowAfter, blockAfter, addrBlockAfter int, step, blockFor time.Duration, max int) *authLimiter {
	window := blockFor
	if window < 15*time.Minute {
		window = 15 * time.Minute
	}
	return &authLimiter{
		slowAfter: slowAfter, blockAfter: blockAfter, addrBlockAfter: addrBlockAfter, step: step,
		blockFor: blockFor, window: window, max: max, seed: maphash.MakeSeed(),
		now: time.Now, m: make(map[failKey]*failEntry),
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

func (l *authLimiter) keys(ip netip.Addr, user string) (addr, pair failKey) {
	a := limitKey(ip)
	return failKey{addr: a, all: true}, failKey{addr: a, user: maphash.String(l.seed, user)}
}

// blocked says whether AUTH as user from ip is refused now, and for how
// much longer. With user "" it asks about the address as a whole.
func (l *authLimiter) blocked(ip netip.Addr, user string) (time.Duration, bool) {
	if l.blockAfter <= 0 && l.addrBlockAfter <= 0 {
		return 0, false
	}
	ak, pk := l.keys(ip, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var left time.Duration
	for _, k := range []failKey{ak, pk} {
		if k == pk && user == "" {
			continue
		}
		if e := l.m[k]; e != nil {
			left = max(left, e.blockedUntil.Sub(now))
		}
	}
	return left, left > 0
}

// fail records a failed AUTH as user from ip. It returns how long to
// delay the reply, and whether the user or the address is now blocked
// (and for how long).
func (l *authLimiter) fail(ip netip.Addr, user string) (delay time.Duration, blocked bool, left time.Duration) {
	ak, pk := l.keys(ip, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	pe := l.count(pk, now)
	ae := l.count(ak, now)
	for _, c := range []struct {
		e     *failEntry
		after int
	}{{pe, l.blockAfter}, {ae, l.addrBlockAfter}} {
		if c.after > 0 && c.e.fails >= c.after {
			if c.e.blockedUntil.Before(now) {
				c.e.blockedUntil = now.Add(l.blockFor)
			}
			blocked = true
			left = max(left, c.e.blockedUntil.Sub(now))
		}
	}
	if blocked {
		return 0, true, left
	}
	if l.slowAfter > 0 && pe.fails >= l.slowAfter {
		delay = l.step * time.Duration(pe.fails-l.slowAfter+1)
		if maxDelay := 8 * l.step; delay > maxDelay {
			delay = maxDelay
		}
	}
	return delay, false, 0
}

// count adds a failure to the entry of k. Called with mu held.
func (l *authLimiter) count(k failKey, now time.Time) *failEntry {
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
	return e
}

// succeed forgets the failures of user from ip, unless that pair is
// blocked. The address's count stays: one good login must not wipe out
// the failures of other names from the same address.
func (l *authLimiter) succeed(ip netip.Addr, user string) {
	_, pk := l.keys(ip, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[pk]; e != nil && !e.blockedUntil.After(l.now()) {
		delete(l.m, pk)
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
	var victim failKey
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
