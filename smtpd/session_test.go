package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TestOpenRelay: an unauthenticated, untrusted client gets 530 5.7.0 on
// MAIL; its pipelined RCPT and DATA are refused too, and nothing is
// submitted.
func TestOpenRelay(t *testing.T) {
	e := newEnv(t, nil)
	r := e.rawTLS(t)
	// Pipelined: the whole transaction in one write.
	r.write("MAIL FROM:<spammer@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: spam\r\n\r\nspam\r\n.\r\n")
	r.expectPrefix(530, "5.7.0")
	if code, msg := r.reply(); code/100 != 5 {
		t.Errorf("pipelined RCPT got %d %q, want 5xx", code, msg)
	}
	if code, msg := r.reply(); code/100 != 5 {
		t.Errorf("pipelined DATA got %d %q, want 5xx", code, msg)
	}
	// The message lines after the refused DATA are read as commands and
	// refused; the connection is closed after too many errors, but in no
	// case is anything accepted.
	for {
		code, _, err := r.tp.ReadResponse(0)
		if err != nil && code == 0 {
			break
		}
		if code/100 == 2 || code == 354 {
			t.Fatalf("got %d after a refused transaction", code)
		}
	}
	if n := e.sub.count(); n != 0 {
		t.Fatalf("%d messages submitted by an unauthenticated client", n)
	}
}

// TestAuthBeforeTLS: without TLS, AUTH is neither offered nor accepted, and
// MAIL is refused, unless the peer is loopback and plaintext on loopback
// is allowed. "Not loopback" is simulated by the injectable check, because
// a test cannot count on a second, non-loopback address.
func TestAuthBeforeTLS(t *testing.T) {
	tests := []struct {
		name      string
		allow     bool
		loopback  bool
		wantAuth  bool
		trustedOK bool
	}{
		{"remote, plaintext allowed for loopback", true, false, false, false},
		{"loopback, plaintext not allowed", false, true, false, false},
		{"loopback, plaintext allowed", true, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *ServerConfig) {
				c.AllowPlaintextLoopback = tt.allow
				c.Trusted = []TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: &Credential{Username: "trusted"}}}
			})
			e.srv.isLoopback = func(netip.Addr) bool { return tt.loopback }
			r := e.rawPlain(t)
			r.expect(220)
			r.cmd("EHLO client.test")
			ehlo := r.expect(250)
			if got := strings.Contains(ehlo, "AUTH PLAIN LOGIN"); got != tt.wantAuth {
				t.Errorf("AUTH offered = %v, want %v: %q", got, tt.wantAuth, ehlo)
			}
			// Even a trusted network needs TLS off loopback.
			r.cmd("MAIL FROM:<app@example.com>")
			if tt.trustedOK {
				r.expect(250)
				r.cmd("RSET")
				r.expect(250)
			} else {
				r.expectPrefix(530, "5.7.0")
			}
			r.authPlain(testUser, testPassword)
			if tt.wantAuth {
				r.expect(235)
			} else {
				msg := r.expectPrefix(530, "5.7.0")
				if !strings.Contains(msg, "STARTTLS") {
					t.Errorf("reply %q does not say what to do", msg)
				}
				r.cmd("AUTH LOGIN")
				r.expectPrefix(530, "5.7.0")
			}
			if e.sub.count() != 0 {
				t.Error("something was submitted")
			}
		})
	}
}

func TestTrustedNetwork(t *testing.T) {
	trusted := &Credential{Username: "lan", Account: "office"}
	e := newEnv(t, func(c *ServerConfig) {
		c.Trusted = []TrustedNetwork{
			{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Cred: &Credential{Username: "other"}},
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: &Credential{Username: "wide"}},
			{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Cred: trusted},
		}
	})
	c := e.client(t)
	if err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	if got := e.sub.last(t).sub.Cred; got != trusted {
		t.Errorf("credential %+v, want the most specific network's", got)
	}
	// AUTH still wins over the network's credential.
	c2 := e.client(t)
	if err := c2.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c2.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	if got := e.sub.last(t).sub.Cred; got != e.cred {
		t.Errorf("credential %+v, want the authenticated one", got)
	}
	// A reload that drops the network closes the path for new sessions.
	e.srv.SetTrusted(nil)
	c3 := e.client(t)
	err := c3.Mail("app@example.com", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 530 {
		t.Errorf("MAIL after the reload: %v, want 530", err)
	}
}

func TestWrongPasswords(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name string
		send func(r *raw)
		code int
		enh  string
	}{
		{"wrong password PLAIN", func(r *raw) { r.authPlain(testUser, "nope") }, 535, "5.7.8"},
		{"unknown user PLAIN", func(r *raw) { r.authPlain("nobody", testPassword) }, 535, "5.7.8"},
		{"authzid of someone else", func(r *raw) { r.cmd("AUTH PLAIN %s", b64("root\x00"+testUser+"\x00"+testPassword)) }, 535, "5.7.8"},
		{"too long password", func(r *raw) { r.authPlain(testUser, strings.Repeat("x", 500)) }, 535, "5.7.8"},
		{"malformed PLAIN", func(r *raw) { r.cmd("AUTH PLAIN %s", b64("just-one-field")) }, 501, "5.5.2"},
		{"bad base64", func(r *raw) { r.cmd("AUTH PLAIN !!!") }, 454, "4.7.0"},
		{"unknown mechanism", func(r *raw) { r.cmd("AUTH CRAM-MD5") }, 504, "5.7.4"},
		{"wrong password LOGIN", func(r *raw) {
			r.cmd("AUTH LOGIN")
			if msg := r.expect(334); msg != b64("Username:") {
				r.t.Errorf("challenge %q", msg)
			}
			r.cmd("%s", b64(testUser))
			if msg := r.expect(334); msg != b64("Password:") {
				r.t.Errorf("challenge %q", msg)
			}
			r.cmd("%s", b64("nope"))
		}, 535, "5.7.8"},
		{"cancelled LOGIN", func(r *raw) {
			r.cmd("AUTH LOGIN %s", b64(testUser))
			r.expect(334)
			r.cmd("*")
		}, 501, "5.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.rawTLS(t)
			r.t = t
			tt.send(r)
			r.expectPrefix(tt.code, tt.enh)
			r.cmd("MAIL FROM:<app@example.com>")
			r.expectPrefix(530, "5.7.0")
		})
	}
	if e.sub.count() != 0 {
		t.Error("something was submitted")
	}
}

// TestBruteForce: past AuthSlowAfter failures of one username the replies
// slow down; at AuthBlockAfter that username is refused from that address,
// even with the right password, while another user behind the same
// address still logs in; at AuthBlockAddressAfter failures, whatever the
// usernames, the address is refused, on AUTH and at connect.
func TestBruteForce(t *testing.T) {
	const step = 150 * time.Millisecond
	other := &Credential{Username: "other", Account: "acme"}
	e := newEnv(t, func(c *ServerConfig) {
		c.AuthSlowAfter = 2
		c.AuthBlockAfter = 4
		c.AuthBlockAddressAfter = 7
		c.AuthDelay = step
		c.AuthBlockFor = time.Hour
		c.Users["other"] = User{Hash: testHash(t), Cred: other}
	})
	r := e.rawTLS(t)
	wantMin := []time.Duration{0, step, 2 * step}
	for i, min := range wantMin {
		start := time.Now()
		r.authPlain(testUser, fmt.Sprintf("guess-%d", i))
		r.expectPrefix(535, "5.7.8")
		if took := time.Since(start); took < min {
			t.Errorf("failure %d answered after %v, want at least %v", i+1, took, min)
		}
	}
	r.authPlain(testUser, "guess-4")
	msg := r.expectPrefix(454, "4.7.0")
	if !strings.Contains(msg, "try again in 60 minutes") {
		t.Errorf("blocked reply %q does not say when to come back", msg)
	}
	r.authPlain(testUser, testPassword)
	r.expectPrefix(454, "4.7.0")
	// Another user at the same address is not locked out.
	r2 := e.rawTLS(t)
	r2.authPlain("other", testPassword)
	r2.expect(235)
	// More failures from the address, with other names, block it whole.
	r3 := e.rawTLS(t)
	for i := range 3 {
		r3.authPlain(fmt.Sprintf("nobody-%d", i), "x")
		code, _ := r3.reply()
		if i < 2 && code != 535 || i == 2 && code != 454 {
			t.Fatalf("failure %d from the address: %d", i+5, code)
		}
	}
	r4 := e.rawPlain(t)
	r4.expectPrefix(421, "4.7.0")
	// So is one over implicit TLS, in TLS.
	c, err := tlsDial(e.tlsAddr, e)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if line := readLine(t, c); !strings.HasPrefix(line, "421 4.7.0 Too many failed logins") {
		t.Errorf("implicit TLS greeting %q", line)
	}
	// The session that logged in before keeps working.
	r2.cmd("MAIL FROM:<a@x.test>")
	r2.expect(250)
	if e.sub.count() != 0 {
		t.Error("something was submitted")
	}
}

// TestBruteForceSparesTrusted: failed logins from an address never lock
// out the trusted, no-AUTH path from it (the dev setup's loopback).
func TestBruteForceSparesTrusted(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) {
		c.AuthSlowAfter = 1
		c.AuthBlockAfter = 2
		c.AuthBlockAddressAfter = 2
		c.AuthDelay = time.Millisecond
		c.AuthBlockFor = time.Hour
		c.AllowPlaintextLoopback = true
	})
	e.srv.SetTrusted([]TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: e.cred}})
	r := e.rawPlain(t)
	r.expect(220)
	r.cmd("EHLO client.test")
	r.expect(250)
	for range 2 {
		r.authPlain(testUser, "wrong")
		r.reply()
	}
	r.authPlain(testUser, testPassword)
	r.expectPrefix(454, "4.7.0") // AUTH itself stays blocked
	// A new connection from the address is taken, and mails without AUTH.
	r2 := e.rawPlain(t)
	r2.expect(220)
	r2.cmd("EHLO client.test")
	r2.expect(250)
	r2.cmd("MAIL FROM:<a@x.test>")
	r2.expect(250)
	r2.cmd("RCPT TO:<b@y.test>")
	r2.expect(250)
	r2.cmd("DATA")
	r2.expect(354)
	r2.write("Subject: x\r\n\r\nhi\r\n.\r\n")
	r2.expect(250)
	if e.sub.count() != 1 {
		t.Error("the trusted message was not submitted")
	}
}

func TestMessageLimits(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig) {
		c.MaxMessageBytes = 1000
		c.MaxRecipients = 3
	})
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 200)
	t.Run("declared SIZE", func(t *testing.T) {
		r := e.rawTLS(t)
		r.authPlain(testUser, testPassword)
		r.expect(235)
		r.cmd("MAIL FROM:<app@example.com> SIZE=5000")
		r.expectPrefix(552, "5.3.4")
	})
	t.Run("DATA", func(t *testing.T) {
		r := e.rawTLS(t)
		r.authPlain(testUser, testPassword)
		r.expect(235)
		r.cmd("MAIL FROM:<app@example.com>")
		r.expect(250)
		r.cmd("RCPT TO:<a@example.org>")
		r.expect(250)
		r.cmd("DATA")
		r.expect(354)
		r.write(big + ".\r\n")
		msg := r.expectPrefix(552, "5.3.4")
		if !strings.Contains(msg, "1000 bytes") {
			t.Errorf("reply %q does not name the limit", msg)
		}
		// The session goes on.
		r.cmd("NOOP")
		r.expect(250)
	})
	t.Run("BDAT", func(t *testing.T) {
		r := e.rawTLS(t)
		r.authPlain(testUser, testPassword)
		r.expect(235)
		r.cmd("MAIL FROM:<app@example.com>")
		r.expect(250)
		r.cmd("RCPT TO:<a@example.org>")
		r.expect(250)
		r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(big), big))
		r.expectPrefix(552, "5.3.4")
	})
	t.Run("recipients", func(t *testing.T) {
		r := e.rawTLS(t)
		r.authPlain(testUser, testPassword)
		r.expect(235)
		r.cmd("MAIL FROM:<app@example.com>")
		r.expect(250)
		for i := range 3 {
			r.cmd("RCPT TO:<r%d@example.org>", i)
			r.expect(250)
		}
		r.cmd("RCPT TO:<r4@example.org>")
		r.expectPrefix(452, "4.5.3")
	})
	t.Run("exactly at the limit", func(t *testing.T) {
		c := e.client(t)
		if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
			t.Fatal(err)
		}
		msg := "Subject: fits\r\n\r\n" + strings.Repeat("x", 900) + "\r\n"
		if err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	})
	if n := e.sub.count(); n != 1 {
		t.Errorf("%d submitted, want only the one that fits", n)
	}
}

func TestBadControlHeader(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: x\r\nX-SMTPeter-TrackOpens: maybe\r\n\r\nbody\r\n"
	err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(msg))
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) || !strings.Contains(se.Message, "x-smtpeter-trackopens") {
		t.Fatalf("got %v, want 550 5.6.0 naming the header", err)
	}
	if e.sub.count() != 0 {
		t.Error("submitted")
	}
}

func TestAddressSyntax(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		mail, rcpt string
		code       int
		enh        string
	}{
		{"MAIL FROM:<nodomain>", "", 501, "5.5.2"}, // go-smtp's parser
		{"MAIL FROM:<a@bad_domain.com>", "", 553, "5.1.7"},
		{"MAIL FROM:<jos\u00e9@example.es>", "", 553, "5.6.7"},
		{"MAIL FROM:<jos\u00e9@example.es> SMTPUTF8", "RCPT TO:<b@example.org>", 250, "2.0.0"},
		{"MAIL FROM:<>", "RCPT TO:<postmaster>", 501, "5.5.2"},
		{"MAIL FROM:<>", "RCPT TO:<a@b@example.org>", 553, "5.1.3"},
		{"MAIL FROM:<>", "RCPT TO:<\"a b\"@example.org>", 553, "5.1.3"},
		{"MAIL FROM:<a..b@example.com>", "", 553, "5.1.7"},
		{"MAIL FROM:<>", "RCPT TO:<a@x..example.org>", 553, "5.1.3"},
		{"MAIL FROM:<a@example.com>", "RCPT TO:<b@-example.org>", 553, "5.1.3"},
		{"MAIL FROM:<a@example.com>", "RCPT TO:<b@[300.1.1.1]>", 553, "5.1.3"},
		{"MAIL FROM:<a@example.com>", "RCPT TO:<b@[192.0.2.1]>", 250, "2.0.0"},
		{"MAIL FROM:<a@example.com>", "RCPT TO:<" + strings.Repeat("l", 65) + "@example.org>", 553, "5.1.3"},
		{"MAIL FROM:<a@example.com>", "RCPT TO:<m\u00fcller@example.de>", 553, "5.6.7"},
		{"MAIL FROM:<a@example.com> BODY=BINARYMIME", "", 504, "5.5.4"},
		{"MAIL FROM:<a@example.com> FOO=bar", "", 500, "5.5.4"},
	}
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expect(235)
	for _, tt := range tests {
		t.Run(tt.mail+" "+tt.rcpt, func(t *testing.T) {
			r.t = t
			r.cmd("RSET")
			r.expect(250)
			r.cmd("%s", tt.mail)
			if tt.rcpt == "" {
				r.expectPrefix(tt.code, tt.enh)
				return
			}
			r.expect(250)
			r.cmd("%s", tt.rcpt)
			r.expectPrefix(tt.code, tt.enh)
		})
	}
}

// TestSessionLimits: connections past the per-address and total limits
// are answered 421 4.7.0 at connect; a freed slot is usable again.
func TestSessionLimits(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*ServerConfig)
		want string
	}{
		{"per IP", func(c *ServerConfig) { c.MaxSessionsPerIP = 2 }, "from your address (limit 2)"},
		{"total", func(c *ServerConfig) { c.MaxSessions = 2 }, "on this server"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.set)
			a, b := e.rawPlain(t), e.rawPlain(t)
			a.expect(220)
			b.expect(220)
			c := e.rawPlain(t)
			if msg := c.expectPrefix(421, "4.7.0"); !strings.Contains(msg, tt.want) {
				t.Errorf("refusal %q", msg)
			}
			a.cmd("QUIT")
			a.expect(221)
			waitFor(t, func() bool { return e.srv.sessionCount() < 2 })
			d := e.rawPlain(t)
			d.expect(220)
		})
	}
}

// TestReloadUsers: SetUsers swaps the users under a live connection; the
// open session keeps working, new logins use the new table.
func TestReloadUsers(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	newCred := &Credential{Username: "app2"}
	if err := e.srv.SetUsers(map[string]User{"app2": {Hash: testHash(t), Cred: newCred}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatalf("open session after reload: %v", err)
	}
	old := e.client(t)
	if err := old.Auth(sasl.NewPlainClient("", testUser, testPassword)); err == nil {
		t.Error("removed user still logs in")
	}
	c2 := e.client(t)
	if err := c2.Auth(sasl.NewPlainClient("", "app2", testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c2.SendMail("app@example.com", []string{"a@example.org"}, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	if got := e.sub.last(t).sub.Cred; got != newCred {
		t.Errorf("credential %+v", got)
	}
	if err := e.srv.SetUsers(map[string]User{"x": {Hash: []byte("bad")}}); err == nil {
		t.Error("bad users accepted")
	}
}

func TestQueuedText(t *testing.T) {
	ids := func(n int) []uint64 {
		s := make([]uint64, n)
		for i := range s {
			s[i] = uint64(i + 1)
		}
		return s
	}
	tests := []struct {
		r    Receipt
		want string
	}{
		{Receipt{MessageID: 0xabc, CopyIDs: ids(1)}, "Ok: queued as 0000000000000abc (1 copy: 0000000000000001)"},
		{Receipt{MessageID: 1, CopyIDs: ids(5)}, "Ok: queued as 0000000000000001 (5 copies: 0000000000000001 0000000000000002 0000000000000003 0000000000000004 0000000000000005)"},
		{Receipt{MessageID: 1, CopyIDs: ids(1000)}, "Ok: queued as 0000000000000001 (1000 copies: 0000000000000001 0000000000000002 0000000000000003 0000000000000004 0000000000000005 +995 more)"},
	}
	for _, tt := range tests {
		t.Run(tt.want[:30], func(t *testing.T) {
			got := queuedText(&tt.r)
			if got != tt.want {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
			if len(got) > 200 {
				t.Errorf("reply of %d bytes", len(got))
			}
		})
	}
}

// TestResetLogoutTwice: go-smtp may call Reset and Logout more than once
// (Close after QUIT, reset after an aborted BDAT); after Logout a session
// refuses a late Data and its context is done.
func TestResetLogoutTwice(t *testing.T) {
	e := newEnv(t, nil)
	ss := &session{srv: e.srv, log: e.srv.log, secure: true, cred: e.cred}
	ss.ctx, ss.cancel = context.WithCancel(context.Background())
	if err := ss.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := ss.Rcpt("b@example.org", nil); err != nil {
		t.Fatal(err)
	}
	ss.Reset()
	ss.Reset()
	if err := ss.Data(strings.NewReader("x")); err != errNoTransaction {
		t.Errorf("Data after Reset: %v", err)
	}
	if err := ss.Logout(); err != nil {
		t.Fatal(err)
	}
	if err := ss.Logout(); err != nil {
		t.Fatal(err)
	}
	if ss.ctx.Err() == nil {
		t.Error("context not cancelled by Logout")
	}
	if err := ss.Data(strings.NewReader("x")); err == nil {
		t.Error("Data after Logout accepted")
	}
	if e.sub.count() != 0 {
		t.Error("submitted")
	}
}

// TestSizeLimitReader: the DATA limit holds at every chunking of the
// input: exactly the limit passes, one byte more is ErrTooBig.
func TestSizeLimitReader(t *testing.T) {
	const limit = 100
	readers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, n := range []int{0, 1, limit - 1, limit, limit + 1, 10 * limit} {
		for name, wrap := range readers {
			t.Run(fmt.Sprintf("%d bytes %s", n, name), func(t *testing.T) {
				src := strings.Repeat("x", n)
				got, err := io.ReadAll(&sizeLimitReader{r: wrap(strings.NewReader(src)), n: limit})
				if n > limit {
					if !errors.Is(err, ErrTooBig) {
						t.Fatalf("err %v, want ErrTooBig", err)
					}
					if len(got) > limit {
						t.Fatalf("passed %d bytes", len(got))
					}
					return
				}
				if err != nil || string(got) != src {
					t.Fatalf("got %d bytes, %v", len(got), err)
				}
			})
		}
	}
}

// TestAuthCheckFailure: when the check itself fails (here, a stored hash
// that bcrypt cannot read), the client gets 454 4.7.0, not 535, and the
// failure is not held against its address.
func TestAuthCheckFailure(t *testing.T) {
	e := newEnv(t, nil)
	tbl := e.srv.users.Load()
	tbl.users[testUser] = User{Hash: []byte("$2a$10$broken"), Cred: e.cred}
	r := e.rawTLS(t)
	r.authPlain(testUser, testPassword)
	r.expectPrefix(454, "4.7.0")
	if n := e.srv.authLimit.len(); n != 0 {
		t.Errorf("%d limiter entries after a check failure", n)
	}
	if !strings.Contains(e.logs.String(), "smtp auth check failed") {
		t.Error("check failure not logged")
	}
}
