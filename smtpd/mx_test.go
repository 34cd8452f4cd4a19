package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// mxRig is the inbound side over real parts: a bbolt store, the real
// spool (to make real copies), VERP, the inbound spool and its processor,
// and the MX listener on a loopback port.
type mxRig struct {
	t     testing.TB
	dir   string
	st    *store.Relay
	spool *Spool
	verp  *VERP
	in    *Inbound
	srv   *Server
	addr  string
	logs  *syncBuffer
	icfg  InboundConfig
	mcfg  MXConfig
	done  chan error
}

const (
	mxBounceDomain = "bounces.test"
	mxReport       = "dmarc@bounces.test"
)

// newMXRig starts the rig in dir ("" for a new one). The processor runs
// unless run is false.
func newMXRig(t testing.TB, dir string, run bool, mutate func(*InboundConfig, *MXConfig)) *mxRig {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r := &mxRig{t: t, dir: dir, st: st, logs: &syncBuffer{}, done: make(chan error, 1)}
	ctx := context.Background()
	for _, a := range []string{"acct", "other"} {
		if err := store.Create(ctx, st, &store.Account{Name: a}); err != nil && !errors.Is(err, store.ErrExists) {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.spool, err = NewSpool(SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 1 << 20, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r.verp, err = NewVERP(VERPConfig{Codec: dlCodec(t), Domain: mxBounceDomain, Records: st, TTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.icfg = InboundConfig{
		Dir: filepath.Join(dir, "inbound"), Store: st, VERP: r.verp, ReportAddresses: []string{mxReport},
		Postmaster:      []string{"mx.test"},
		IsClickDomain:   func(_ context.Context, host string) bool { return host == "click.test" },
		SoftBounceLimit: 3, SoftBounceWindow: 24 * time.Hour, MaxMessageBytes: 4 << 20, NoSync: true,
		Logger: log.With("component", "inbound"),
	}
	cert, _ := testCert(t)
	r.mcfg = MXConfig{Hostname: "mx.test", TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, MaxMessageBytes: 4 << 20,
		MaxRecipients: 100, BadRecipientsSlow: 5, BadRecipientsBlock: 50, Logger: log.With("component", "mx")}
	if mutate != nil {
		mutate(&r.icfg, &r.mcfg)
	}
	if r.in, err = NewInbound(r.icfg); err != nil {
		t.Fatal(err)
	}
	r.mcfg.Inbound = r.in
	if r.srv, err = NewMXServer(r.mcfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go func() { r.done <- r.srv.Serve(ln, ModeSTARTTLS) }()
	if run {
		r.in.Run()
	}
	t.Cleanup(r.close)
	return r
}

// close stops everything, as a shutdown does (idempotent).
func (r *mxRig) close() {
	if r.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.srv.Shutdown(ctx)
	r.srv.Close()
	if err := <-r.done; err != nil {
		r.t.Errorf("mx serve: %v", err)
	}
	if err := r.in.Shutdown(ctx); err != nil {
		r.t.Errorf("inbound shutdown: %v", err)
	}
	r.spool.Close()
	r.st.Close()
	r.srv = nil
}

// delivered makes a real copy for each recipient (through the spool),
// recorded as delivered, and returns them.
func (r *mxRig) delivered(account string, rcpts ...string) []*store.Copy {
	r.t.Helper()
	cred := &Credential{Username: account + "-app", Account: account, Upstream: "up"}
	rc, err := r.spool.Submit(context.Background(), &Submission{Cred: cred, From: "News.Letter+x@shop.test", Recipients: rcpts},
		strings.NewReader("From: news@shop.test\r\nSubject: spring\r\nx-smtpeter-tags: spring\r\n\r\nhello\r\n"))
	if err != nil {
		r.t.Fatal(err)
	}
	var out []*store.Copy
	for _, id := range rc.CopyIDs {
		c, err := r.st.Copy(context.Background(), id)
		if err != nil {
			r.t.Fatal(err)
		}
		c.State, c.Attempts = store.CopyDelivered, 1
		ev := store.Event{Log: store.LogDeliveries, Account: account, ID: c.ID, Time: time.Now().UTC(), Recipient: c.Recipient, Tags: c.Tags,
			Fields: map[string]string{"envelope": c.From, "attempt": "1"}}
		if _, err := r.st.UpdateCopy(context.Background(), c, []store.Event{ev}); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// sendMX sends one message to the MX listener and returns the error of
// the first step that failed (an *smtp.SMTPError for a refusal).
func sendMX(t testing.TB, addr, from string, rcpts []string, msg []byte) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mta.remote.test"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// wait waits until the processor has worked through the inbound spool.
func (r *mxRig) wait() {
	r.t.Helper()
	dlWait(r.t, "the inbound spool to drain", func() bool { return len(r.in.pending()) == 0 })
}

func (r *mxRig) events(account, log string) []store.Event {
	r.t.Helper()
	var out []store.Event
	for e, err := range r.st.Events(context.Background(), account, log, time.Time{}, time.Time{}) {
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func (r *mxRig) suppressed(account, addr string) *store.AddressEntry {
	r.t.Helper()
	m, err := r.st.LookupAddresses(context.Background(), store.ListSuppressed, account, []string{addr})
	if err != nil {
		r.t.Fatal(err)
	}
	return m[store.NormalAddress(addr)]
}

func (r *mxRig) unclaimed() []string {
	names, _ := readDir(filepath.Join(r.icfg.Dir, inboundUnclaimed))
	return names
}

// dsn is an RFC 3464 report from mta.remote.test about rcpts.
func dsn(action, status, diag string, rcpts ...string) []byte {
	var b bytes.Buffer
	b.WriteString("From: Mail Delivery System <MAILER-DAEMON@mta.remote.test>\r\nTo: <bounce@bounces.test>\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n\r\n" +
		"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mta.remote.test\r\n")
	for _, rc := range rcpts {
		fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\nRemote-MTA: dns; mx.remote.test\r\nDiagnostic-Code: smtp; %s\r\n", rc, action, status, diag)
	}
	b.WriteString("\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@shop.test\r\nSubject: spring\r\n\r\n--B--\r\n")
	return b.Bytes()
}

// The MX listener is no relay: it takes VERP addresses with a good token
// at a bounce domain, the report addresses and postmaster, and refuses
// the rest at RCPT with a reason; it offers STARTTLS and no AUTH.
func TestMXRefusals(t *testing.T) {
	r := newMXRig(t, "", true, func(_ *InboundConfig, m *MXConfig) { m.BadRecipientsSlow, m.BadRecipientsBlock = 100, 100 })
	c := r.delivered("acct", "alice@example.org")[0]
	good := r.verp.Sender(c)
	if !strings.HasSuffix(good, "@"+mxBounceDomain) || !strings.HasPrefix(good, "news.letter+") {
		t.Fatalf("VERP sender %q: want news.letter+TOKEN@%s", good, mxBounceDomain)
	}
	_, tok, _ := strings.Cut(strings.TrimSuffix(good, "@"+mxBounceDomain), "+")
	altered := []byte(tok)
	altered[5] = map[bool]byte{true: 'b', false: 'a'}[altered[5] == 'a']
	other, _ := rewrite.NewCodec(rewrite.Key{ID: rewrite.DevKey.ID, Secret: []byte(strings.Repeat("f", 32))})
	tests := []struct {
		rcpt     string
		code     int
		enhanced string
	}{
		{good, 250, ""},
		{strings.ToUpper(good), 250, ""}, // an MTA may change the case
		{mxReport, 250, ""},
		{"DMARC+acct@bounces.test", 250, ""},
		{"postmaster@bounces.test", 250, ""},
		{"postmaster@mx.test", 250, ""},
		{"dmarc+nobody@bounces.test", 550, "5.1.1"},
		{"someone@gmail.example", 550, "5.7.1"},                                           // no relay
		{"x+" + tok + "@evil.test", 550, "5.7.1"},                                         // a good token at a foreign domain
		{"news+" + string(altered) + "@bounces.test", 550, "5.1.1"},                       // altered
		{"news+" + other.EncodeVERP(c.ID) + "@bounces.test", 550, "5.1.1"},                // forged with another key
		{"news+" + r.verp.Codec().EncodeVERP(c.ID+12345) + "@bounces.test", 550, "5.1.1"}, // a copy that does not exist
		{"random@bounces.test", 550, "5.1.1"},
		{"postmaster@gmail.example", 550, "5.7.1"},
	}
	plain, err := smtp.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Hello("mta.remote.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := plain.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS not offered")
	}
	if ok, _ := plain.Extension("AUTH"); ok {
		t.Error("AUTH offered on the MX listener")
	}
	plain.Close()
	_, pool := testCert(t)
	cl, err := smtp.DialStartTLS(r.addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if ok, _ := cl.Extension("AUTH"); ok {
		t.Error("AUTH offered after STARTTLS")
	}
	if err := cl.Mail("", nil); err != nil {
		t.Fatalf("null sender: %v", err)
	}
	for _, tc := range tests {
		err := cl.Rcpt(tc.rcpt, nil)
		var se *smtp.SMTPError
		switch {
		case tc.code == 250 && err != nil:
			t.Errorf("RCPT %s: %v, want 250", tc.rcpt, err)
		case tc.code != 250 && (!errors.As(err, &se) || se.Code != tc.code || fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]) != tc.enhanced):
			t.Errorf("RCPT %s: %v, want %d %s", tc.rcpt, err, tc.code, tc.enhanced)
		case tc.code != 250 && len(se.Message) < 20:
			t.Errorf("RCPT %s: reply %q says too little", tc.rcpt, se.Message)
		}
	}
	// A raw AUTH is refused too.
	rw := (&env{addr: r.addr}).rawPlain(t)
	rw.expect(220)
	rw.cmd("EHLO client.test")
	rw.expect(250)
	rw.cmd("AUTH PLAIN %s", b64("\x00u\x00p"))
	if code, _ := rw.reply(); code < 500 {
		t.Errorf("AUTH: %d, want a refusal", code)
	}
}

// A bounce with the null sender to many VERP addresses at once (and one
// DSN naming every recipient): each copy gets its own bounce, joined by
// recipient; the copies leave the delivered figure and are suppressed.
func TestMXNullSenderManyRecipients(t *testing.T) {
	r := newMXRig(t, "", true, nil)
	var rcpts []string
	for i := range 60 {
		rcpts = append(rcpts, fmt.Sprintf("user%02d@example.org", i))
	}
	copies := r.delivered("acct", rcpts...)
	var to []string
	for _, c := range copies {
		to = append(to, r.verp.Sender(c))
	}
	if err := sendMX(t, r.addr, "", to, dsn("failed", "5.1.1", "550 5.1.1 <user> User unknown", rcpts...)); err != nil {
		t.Fatalf("send: %v", err)
	}
	r.wait()
	evs := r.events("acct", store.LogBounces)
	if len(evs) != len(copies) {
		t.Fatalf("%d bounces, want %d", len(evs), len(copies))
	}
	byID := map[uint64]store.Event{}
	for _, e := range evs {
		byID[e.ID] = e
	}
	for _, c := range copies {
		e, ok := byID[c.ID]
		if !ok || e.Recipient != c.Recipient || e.Fields["type"] != "hard" || e.Fields["status"] != "5.1.1" || e.Fields["code"] != "550" ||
			e.Fields["mta"] != "mx.remote.test" || e.Fields["reason"] != "userunknown" || strings.Join(e.Tags, ",") != "spring" {
			t.Fatalf("copy %s: bounce %+v", store.FormatID(c.ID), e)
		}
		if cp, _ := r.st.Copy(context.Background(), c.ID); cp.State != store.CopyBounced {
			t.Errorf("copy %s: state %s, want bounced", store.FormatID(c.ID), cp.State)
		}
		if s := r.suppressed("acct", c.Recipient); s == nil || s.Reason != store.ReasonHardBounce || s.Copy != c.ID {
			t.Errorf("%s: suppression %+v", c.Recipient, s)
		}
	}
	tot, err := r.st.Totals(context.Background(), "acct")
	if err != nil {
		t.Fatal(err)
	}
	if tot[store.Delivered] != 0 || tot[store.BouncedHard] != uint64(len(copies)) {
		t.Errorf("totals: delivered %d, hard bounces %d; want 0 and %d", tot[store.Delivered], tot[store.BouncedHard], len(copies))
	}
	// The bounce is in the copy's own events.
	n := 0
	for e, err := range r.st.EventsByMessage(context.Background(), "acct", copies[7].ID) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Log == store.LogBounces {
			n++
		}
	}
	if n != 1 {
		t.Errorf("copy's events hold %d bounces, want 1", n)
	}
}

// Limits like the submission listener's: recipients per message, size,
// and an address that keeps guessing is slowed, then refused.
func TestMXLimits(t *testing.T) {
	r := newMXRig(t, "", true, func(_ *InboundConfig, m *MXConfig) {
		m.MaxRecipients, m.MaxMessageBytes = 3, 64<<10
		m.BadRecipientsSlow, m.BadRecipientsBlock = 2, 4
	})
	cs := r.delivered("acct", "a@x.test", "b@x.test", "c@x.test", "d@x.test")
	var to []string
	for _, c := range cs {
		to = append(to, r.verp.Sender(c))
	}
	if err := sendMX(t, r.addr, "", to, dsn("failed", "5.1.1", "no", "a@x.test")); smtpCode(err) != 452 {
		t.Errorf("4 recipients, limit 3: %v, want 452", err)
	}
	big := append(dsn("failed", "5.1.1", "no", "a@x.test"), bytes.Repeat([]byte("x"), 70<<10)...)
	if err := sendMX(t, r.addr, "", to[:1], big); smtpCode(err) != 552 {
		t.Errorf("over the size limit: %v, want 552", err)
	}
	start := time.Now()
	var last error
	for i := range 4 {
		last = sendMX(t, r.addr, "", []string{fmt.Sprintf("guess%d@gmail.example", i)}, nil)
	}
	if smtpCode(last) != 421 {
		t.Errorf("4th refused recipient: %v, want 421", last)
	}
	if time.Since(start) < time.Second {
		t.Errorf("refusals past bad_recipients_slow were not slowed (%v)", time.Since(start))
	}
	// Blocked: refused at connect now, even for a good address.
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if line := readLine(t, c); !strings.HasPrefix(line, "421 4.7.0") {
		t.Errorf("blocked address at connect: %q, want 421 4.7.0", line)
	}
}

// Durable before 250: a message taken while the processor is not
// running (as when the process dies right after the 250) is in the
// inbound spool, and a new processor on the same folder records it.
func TestMXDurableAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	r := newMXRig(t, dir, false, nil)
	c := r.delivered("acct", "bob@example.org")[0]
	if err := sendMX(t, r.addr, "", []string{r.verp.Sender(c)}, dsn("failed", "5.2.2", "552 5.2.2 mailbox full", "bob@example.org")); err != nil {
		t.Fatal(err)
	}
	if n := len(r.in.pending()); n != 1 {
		t.Fatalf("%d files in the inbound spool after the 250, want 1", n)
	}
	// A crash leaves temporary files too: they are never answered 250.
	if err := os.WriteFile(filepath.Join(dir, "inbound", tmpPrefix+"half.msg"), []byte("TRACKRELAY-INBOUND 1 {"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.close()

	r2 := newMXRig(t, dir, true, nil)
	r2.wait()
	evs := r2.events("acct", store.LogBounces)
	if len(evs) != 1 || evs[0].ID != c.ID || evs[0].Fields["type"] != "soft" || evs[0].Fields["status"] != "5.2.2" {
		t.Fatalf("after restart: %+v", evs)
	}
	if r2.suppressed("acct", "bob@example.org") != nil {
		t.Error("one soft bounce suppressed the address")
	}
	if names, _ := readDir(filepath.Join(dir, "inbound")); len(names) != 2 { // unclaimed/ and failed/
		t.Errorf("inbound spool holds %q after processing", names)
	}
}

// A file recorded but not removed (the process died in between) is
// recorded once, however often it is processed.
func TestMXRecordingIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	r := newMXRig(t, dir, false, nil)
	c := r.delivered("acct", "carol@example.org")[0]
	if err := sendMX(t, r.addr, "", []string{r.verp.Sender(c)}, dsn("failed", "4.2.2", "452 4.2.2 over quota", "carol@example.org")); err != nil {
		t.Fatal(err)
	}
	name := r.in.pending()[0]
	saved, err := os.ReadFile(filepath.Join(dir, "inbound", name))
	if err != nil {
		t.Fatal(err)
	}
	r.in.Run()
	r.wait()
	if err := os.WriteFile(filepath.Join(dir, "inbound", name), saved, 0o600); err != nil {
		t.Fatal(err)
	}
	r.in.wake <- struct{}{}
	r.wait()
	if evs := r.events("acct", store.LogBounces); len(evs) != 1 {
		t.Fatalf("%d bounce events after processing the file twice, want 1", len(evs))
	}
	tot, _ := r.st.Totals(context.Background(), "acct")
	if tot[store.BouncedSoft] != 1 || tot[store.Delivered] != 0 {
		t.Errorf("totals: soft %d delivered %d, want 1 and 0", tot[store.BouncedSoft], tot[store.Delivered])
	}
}

// A spool file the processor cannot read is kept in failed/ for the
// operator, and the files after it are still processed.
func TestMXDamagedFileKept(t *testing.T) {
	dir := t.TempDir()
	r := newMXRig(t, dir, false, nil)
	c := r.delivered("acct", "lee@example.org")[0]
	if err := os.WriteFile(filepath.Join(dir, "inbound", "0000000000000001.msg"), []byte("not a spool file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sendMX(t, r.addr, "", []string{r.verp.Sender(c)}, dsn("failed", "5.1.1", "no such user", "lee@example.org")); err != nil {
		t.Fatal(err)
	}
	r.in.Run()
	r.wait()
	if n := len(r.events("acct", store.LogBounces)); n != 1 {
		t.Errorf("%d bounces recorded after a damaged file, want 1", n)
	}
	if names, _ := readDir(filepath.Join(dir, "inbound", inboundFailed)); len(names) != 1 || names[0] != "0000000000000001.msg" {
		t.Errorf("failed/ holds %v", names)
	}
	if !strings.Contains(r.logs.String(), "kept in failed/") {
		t.Error("not logged")
	}
}
