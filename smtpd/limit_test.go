package smtpd

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"strings"
)

func TestAuthLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newAuthLimiter(2, 4, 100, time.Second, time.Hour, 6)
	l.now = func() time.Time { return now }
	a := netip.MustParseAddr("192.0.2.1")
	steps := []struct {
		delay   time.Duration
		blocked bool
	}{{0, false}, {time.Second, false}, {2 * time.Second, false}, {0, true}}
	for i, st := range steps {
		d, b, _ := l.fail(a, "u")
		if d != st.delay || b != st.blocked {
			t.Fatalf("failure %d: delay %v blocked %v, want %v %v", i+1, d, b, st.delay, st.blocked)
		}
	}
	if left, b := l.blocked(a, "u"); !b || left != time.Hour {
		t.Fatalf("blocked = %v %v", left, b)
	}
	// Only that username is blocked at that address: not another user
	// behind the same address, nor the address as a whole.
	if _, b := l.blocked(a, "other"); b {
		t.Fatal("another username blocked by u's failures")
	}
	if _, b := l.blocked(a, ""); b {
		t.Fatal("the address blocked by one username's failures")
	}
	l.succeed(a, "u") // a success does not lift a block
	if _, b := l.blocked(a, "u"); !b {
		t.Fatal("block lifted by a success")
	}
	now = now.Add(time.Hour + time.Second)
	if _, b := l.blocked(a, "u"); b {
		t.Fatal("block did not expire")
	}
	// After the window, the count starts over.
	now = now.Add(time.Hour)
	if d, b, _ := l.fail(a, "u"); d != 0 || b {
		t.Fatalf("after the window: %v %v", d, b)
	}
	l.succeed(a, "u")
	if l.len() != 1 { // the address's own count stays
		t.Fatalf("success left %d entries, want the address's only", l.len())
	}
	// An IPv6 /64 is one address.
	l.fail(netip.MustParseAddr("2001:db8::1"), "v")
	l.fail(netip.MustParseAddr("2001:db8::2"), "v")
	if d, _, _ := l.fail(netip.MustParseAddr("2001:db8::ffff"), "v"); d != 2*time.Second {
		t.Errorf("IPv6 /64 not counted together: delay %v", d)
	}
	// The table stays within its size, keeping blocked entries first.
	for range 4 {
		l.fail(a, "u")
	}
	for i := range 100 {
		l.fail(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "u")
		if n := l.len(); n > 6 {
			t.Fatalf("table holds %d entries, cap 6", n)
		}
	}
	if _, b := l.blocked(a, "u"); !b {
		t.Error("a blocked entry was evicted while unblocked ones could go")
	}
	// The delay is capped at 8 steps.
	l2 := newAuthLimiter(1, 0, 0, time.Second, time.Hour, 10)
	var d time.Duration
	for range 20 {
		d, _, _ = l2.fail(a, "u")
	}
	if d != 8*time.Second {
		t.Errorf("delay %v, want the 8s cap", d)
	}
}

// Many usernames failing from one address block the address as a whole,
// after more failures than one username needs.
func TestAuthLimiterAddress(t *testing.T) {
	l := newAuthLimiter(100, 3, 5, time.Millisecond, time.Hour, 100)
	a := netip.MustParseAddr("192.0.2.9")
	for i := range 4 {
		if _, b, _ := l.fail(a, "user"+strconv.Itoa(i)); b {
			t.Fatalf("failure %d of distinct users blocked", i+1)
		}
	}
	if _, b := l.blocked(a, ""); b {
		t.Fatal("address blocked after 4 failures, limit 5")
	}
	if _, b, _ := l.fail(a, "user9"); !b {
		t.Fatal("5th failure from the address did not block it")
	}
	for _, u := range []string{"", "someone-new"} {
		if _, b := l.blocked(a, u); !b {
			t.Errorf("blocked(%q) = false after the address block", u)
		}
	}
	if _, b := l.blocked(netip.MustParseAddr("192.0.2.10"), ""); b {
		t.Error("a neighbour address blocked")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *ServerConfig) { c.Registerer = reg })
	c := e.client(t)
	if err := c.Auth(sasl.NewPlainClient("", testUser, "wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader("X-Smtpeter-Trackclicks: perhaps\r\n\r\nx\r\n"))
	if err == nil {
		t.Fatal("bad header accepted")
	}
	m := e.srv.metrics
	for _, tt := range []struct {
		name      string
		got, want float64
	}{
		{"sessions now", metricValue(t, m.sessions), 1},
		{"sessions total", metricValue(t, m.sessionsTotal), 1},
		{"auth success", metricValue(t, m.auth.WithLabelValues("success")), 1},
		{"auth failure", metricValue(t, m.auth.WithLabelValues("failure")), 1},
		{"accepted", metricValue(t, m.messages.WithLabelValues("accepted")), 1},
		{"refused", metricValue(t, m.messages.WithLabelValues("refused")), 1},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 5 {
		t.Errorf("gather: %d families, %v", len(mfs), err)
	}
	// Registering twice on one registry is an error, not a panic.
	if _, err := NewServer(ServerConfig{Submitter: e.sub, Registerer: reg}); err == nil {
		t.Error("second registration accepted")
	}
	c.Close()
	waitFor(t, func() bool { return metricValue(t, m.sessions) == 0 })
}

// metricValue reads a counter or gauge.
func metricValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatal("not a counter or gauge")
	return 0
}

// addrConn is a connection that reports a given remote address: the only
// way to have sessions from two addresses of one IPv6 /64 on this machine.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// Sessions per IP count an IPv6 /64 as one address, and each IPv4 address
// on its own.
func TestSessionsPerIPv6Prefix(t *testing.T) {
	srv, err := NewServer(ServerConfig{Submitter: &fileSubmitter{dir: t.TempDir()}, MaxSessionsPerIP: 2, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	conn := func(addr string) net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return addrConn{a, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))}
	}
	for i, addr := range []string{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2::ffff]:1001"} {
		if _, refusal := srv.admit(conn(addr)); refusal != "" {
			t.Fatalf("session %d refused: %s", i, refusal)
		}
	}
	if _, refusal := srv.admit(conn("[2001:db8:1:2:aaaa::1]:1002")); !strings.Contains(refusal, "Too many sessions from your address") {
		t.Fatalf("third session from the same /64: %q, want refused", refusal)
	}
	if _, refusal := srv.admit(conn("[2001:db8:1:3::1]:1003")); refusal != "" {
		t.Fatalf("another /64 refused: %s", refusal)
	}
	for i, addr := range []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1"} {
		if _, refusal := srv.admit(conn(addr)); refusal != "" {
			t.Fatalf("IPv4 session %d refused: %s", i, refusal)
		}
	}
}
