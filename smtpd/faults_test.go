package smtpd

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// startData opens a transaction on an authenticated TLS session and
// sends DATA.
func startData(t *testing.T, e *env) *raw {
	t.Helper()
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	r.cmd("MAIL FROM:<a@x.test>")
	r.expect(250)
	r.cmd("RCPT TO:<b@y.test>")
	r.expect(250)
	r.cmd("DATA")
	r.expect(354)
	return r
}

// A slow but steady upload is not cut at ReadTimeout: the timeout is an
// idle limit per read. A stalled one is cut after ReadTimeout of silence,
// and one that takes longer than DataTimeout in all is cut then, each
// with a reply that says which, and the connection closed after it.
func TestDataTimeouts(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) {
		// Wide enough for a loaded machine under -race.
		c.ReadTimeout = time.Second
		c.DataTimeout = 5 * time.Second
	})
	trickle := func(r *raw, pieces int, every time.Duration) {
		r.write("Subject: slow\r\n\r\n")
		for range pieces {
			time.Sleep(every)
			r.write(strings.Repeat("x", 100) + "\r\n")
		}
	}
	t.Run("steady", func(t *testing.T) {
		r := startData(t, e)
		start := time.Now()
		trickle(r, 10, 250*time.Millisecond) // 2.5 s, more than twice ReadTimeout
		r.write(".\r\n")
		r.expectPrefix(250, "2.0.0")
		if time.Since(start) < 2*e.srv.cfg.ReadTimeout {
			t.Fatal("upload was not slow enough to test anything")
		}
		if got := e.sub.last(t).body; len(got) != len("Subject: slow\r\n\r\n")+10*102 {
			t.Errorf("submitted %d bytes", len(got))
		}
	})
	t.Run("stalled", func(t *testing.T) {
		r := startData(t, e)
		r.write("Subject: stalled\r\n\r\nhalf a mess")
		start := time.Now()
		msg := r.expectPrefix(451, "4.4.2")
		if !strings.Contains(msg, "No message data for 1s") {
			t.Errorf("reply %q does not say why", msg)
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 4*time.Second {
			t.Errorf("cut after %v, want about ReadTimeout", d)
		}
		assertClosed(t, r)
	})
	t.Run("too long in all", func(t *testing.T) {
		r := startData(t, e)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Steady, but longer than DataTimeout; writes fail once the
			// server has closed.
			_ = r.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			for range 40 {
				if _, err := io.WriteString(r.conn, strings.Repeat("y", 100)+"\r\n"); err != nil {
					return
				}
				time.Sleep(250 * time.Millisecond)
			}
		}()
		start := time.Now()
		msg := r.expectPrefix(451, "4.4.2")
		if !strings.Contains(msg, "took longer than 5s") {
			t.Errorf("reply %q does not say why", msg)
		}
		if d := time.Since(start); d < 4500*time.Millisecond || d > 8*time.Second {
			t.Errorf("cut after %v, want about DataTimeout", d)
		}
		r.conn.Close()
		<-done
	})
}

// assertClosed checks that the server closed the connection.
func assertClosed(t *testing.T, r *raw) {
	t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	var b [64]byte
	n, err := r.conn.Read(b[:])
	if err == nil || isTimeout(err) {
		t.Fatalf("connection still open after the reply (read %q, %v)", b[:n], err)
	}
}

// A line ending in CR CR LF (a bare CR, then the line break) must not hide
// the line start after it: go-smtp's reader misses it, so the end of data
// after such a line was not seen and a dot-stuffed line kept its dot. Over
// plain text and TLS, the session goes on after the message.
func TestDataBareCRBeforeCRLF(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) { c.AllowPlaintextLoopback = true })
	for _, tc := range []struct{ name, sent, want string }{
		{"end after CR CR LF", "Subject: x\r\n\r\nline\r\r\n.\r\n", "Subject: x\r\n\r\nline\r\r\n"},
		{"stuffed line after CR CR LF", "Subject: x\r\n\r\na\r\r\n..dot\r\nb\r\n.\r\n", "Subject: x\r\n\r\na\r\r\n.dot\r\nb\r\n"},
		{"four CRs", "Subject: x\r\n\r\na\r\r\r\r\n.\r\n", "Subject: x\r\n\r\na\r\r\r\r\n"},
		{"three CRs (go-smtp gets it right)", "Subject: x\r\n\r\na\r\r\r\n..b\r\n.\r\n", "Subject: x\r\n\r\na\r\r\r\n.b\r\n"},
		{"dot CR not at the end", "Subject: x\r\n\r\na\r\r\n.\rb\r\n.\r\n", "Subject: x\r\n\r\na\r\r\n\rb\r\n"},
	} {
		for _, mode := range []string{"plain", "tls"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				var r *raw
				if mode == "tls" {
					r = e.rawTLS(t)
				} else {
					r = e.rawPlain(t)
					r.expect(220)
					r.cmd("EHLO client.test")
					r.expect(250)
				}
				r.authPlain(testUser, testPassword)
				r.expect(235)
				for round := range 2 { // the session goes on after the message
					r.cmd("MAIL FROM:<a@x.test>")
					r.expect(250)
					r.cmd("RCPT TO:<b@y.test>")
					r.expect(250)
					r.cmd("DATA")
					r.expect(354)
					_ = r.conn.SetDeadline(time.Now().Add(5 * time.Second))
					r.write(tc.sent)
					r.expectPrefix(250, "2.0.0")
					if got := string(e.sub.last(t).body); got != tc.want {
						t.Fatalf("round %d: submitted %q, want %q", round, got, tc.want)
					}
				}
				r.cmd("NOOP")
				r.expect(250)
			})
		}
	}
}

// Long lines are taken up to MaxLineLength; a longer one is refused with
// a permanent reply that says why, so the client does not retry for ever.
func TestDataLongLines(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) { c.MaxLineLength = 8000 })
	r := startData(t, e)
	long := "Subject: long\r\n\r\n<p>" + strings.Repeat("a", 5000) + "</p>\r\n"
	r.write(long + ".\r\n")
	r.expectPrefix(250, "2.0.0")
	if got := string(e.sub.last(t).body); got != long {
		t.Fatalf("long line changed: %d bytes, want %d", len(got), len(long))
	}
	r2 := startData(t, e)
	r2.write("Subject: too long\r\n\r\n" + strings.Repeat("b", 9000) + "\r\n.\r\n")
	msg := r2.expectPrefix(554, "5.6.0")
	if !strings.Contains(msg, "longer than 8000 bytes") {
		t.Errorf("reply %q does not say why", msg)
	}
	// And the default takes lines far beyond go-smtp's own 2000.
	e2 := newEnv(t, nil)
	r3 := startData(t, e2)
	huge := "Subject: long\r\n\r\n" + strings.Repeat("c", 300000) + "\r\n"
	r3.write(huge + ".\r\n")
	r3.expectPrefix(250, "2.0.0")
	if got := e2.sub.last(t).body; len(got) != len(huge) {
		t.Fatalf("300 KB line: submitted %d bytes", len(got))
	}
}

// Connections that have not authenticated are limited per /24 (or /64),
// and an idle one is closed after AuthTimeout; once authenticated, neither
// applies.
func TestUnauthenticatedSessions(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) {
		c.MaxUnauthPerNet = 3
		c.AuthTimeout = 500 * time.Millisecond
		c.ReadTimeout = 5 * time.Second
	})
	var rs []*raw
	for range 3 {
		r := e.rawPlain(t)
		r.expect(220)
		rs = append(rs, r)
	}
	over := e.rawPlain(t)
	msg := over.expectPrefix(421, "4.7.0")
	if !strings.Contains(msg, "not authenticated") {
		t.Errorf("refusal %q does not say why", msg)
	}
	// One authenticates: its slot goes back to the network.
	a := rs[0]
	a.cmd("EHLO client.test")
	a.expect(250)
	a.cmd("STARTTLS")
	a.expect(220)
	tc := tls.Client(a.conn, e.clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	a.conn = tc
	a.tp = textproto.NewConn(tc)
	a.cmd("EHLO client.test")
	a.expect(250)
	a.authPlain(testUser, testPassword)
	a.expect(235)
	r4 := e.rawPlain(t)
	r4.expect(220)
	// The idle, unauthenticated ones are closed at AuthTimeout; the
	// authenticated one stays.
	start := time.Now()
	code, _ := rs[1].reply()
	if code != 421 {
		t.Errorf("idle unauthenticated session got %d, want 421", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v, want about AuthTimeout", d)
	}
	time.Sleep(600 * time.Millisecond)
	a.cmd("NOOP")
	a.expect(250)
	waitFor(t, func() bool { e.srv.connMu.Lock(); defer e.srv.connMu.Unlock(); return len(e.srv.unauth) == 0 })
}

// spaceless is a Submitter whose disk is below its reserve.
type spaceless struct{ *fileSubmitter }

func (spaceless) CheckSpace(int64) error { return ErrInsufficientStorage }

func (s spaceless) Submit(ctx context.Context, sub *Submission, body io.Reader) (*Receipt, error) {
	_, _ = io.Copy(io.Discard, body)
	return nil, ErrInsufficientStorage
}

// Below the disk reserve, MAIL is answered 452 4.3.1 with words.
func TestLowDiskAtMail(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) { c.Submitter = spaceless{&fileSubmitter{dir: t.TempDir()}} })
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	r.cmd("MAIL FROM:<a@x.test> SIZE=100")
	msg := r.expectPrefix(452, "4.3.1")
	if !strings.Contains(msg, "disk space") {
		t.Errorf("reply %q does not say why", msg)
	}
}

// The session hands the spool what the Received field needs: EHLO name,
// address, TLS version and cipher, the AUTH username; no password.
func TestSubmissionTrace(t *testing.T) {
	e := newEnv(t, nil)
	r := startData(t, e)
	r.write("Subject: x\r\n\r\nhi\r\n.\r\n")
	r.expect(250)
	tr := e.sub.last(t).sub.Trace
	if tr == nil || tr.Helo != "client.test" || tr.RemoteIP.String() != "127.0.0.1" || tr.AuthUser != testUser ||
		tr.TLSVersion < tls.VersionTLS12 || tr.TLSCipher == 0 || tr.Via != "SMTP" {
		t.Fatalf("trace %+v", tr)
	}
	if f := receivedField(tr, "relay.test", 1, []string{"b@y.test"}, false, time.Now(), "\r\n"); strings.Contains(f, testPassword) ||
		!strings.Contains(f, "ESMTPSA") || !strings.Contains(f, "(Authenticated sender: "+testUser+")") {
		t.Errorf("Received field %q", f)
	}
}

var _ net.Conn = (*trackedConn)(nil)
