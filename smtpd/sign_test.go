package smtpd

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/mime/dkim"
	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
	"github.com/trackrelay/trackrelay/store"
)

// mailSink is a real SMTP server that keeps every message it accepts.
type mailSink struct {
	addr string
	mu   sync.Mutex
	msgs [][]byte
	// aborted counts DATA transfers that ended without the final dot.
	aborted int
	// onData, when set, reads the message instead of keeping it.
	onData func(io.Reader) error
}

type mailSinkSession struct{ s *mailSink }

func (ss *mailSinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *mailSinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *mailSinkSession) Reset()                               {}
func (ss *mailSinkSession) Logout() error                        { return nil }
func (ss *mailSinkSession) Data(r io.Reader) error {
	if ss.s.onData != nil {
		return ss.s.onData(r)
	}
	b, err := io.ReadAll(r)
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if err != nil {
		ss.s.aborted++
		return err
	}
	ss.s.msgs = append(ss.s.msgs, b)
	return nil
}

func newMailSink(t testing.TB) *mailSink {
	t.Helper()
	s := &mailSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSinkSession{s}, nil }))
	srv.Domain = "sink.test"
	srv.MaxMessageBytes = 128 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *mailSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *mailSink) message(i int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[i]
}

// Test keys, made once per test binary (RSA-2048 takes a moment).
var (
	signKeysOnce  sync.Once
	signKeys      []crypto.Signer
	signKeysError error
)

// testSigners returns n RSA keys and n Ed25519 keys: rsa[i], ed[i].
func testSigners(t testing.TB) (rsa, ed []crypto.Signer) {
	t.Helper()
	const n = 3
	signKeysOnce.Do(func() {
		for _, kind := range []dkim.Kind{dkim.RSA, dkim.Ed25519} {
			for range n {
				k, err := dkim.GenerateKey(kind)
				if err != nil {
					signKeysError = err
					return
				}
				signKeys = append(signKeys, k)
			}
		}
	})
	if signKeysError != nil {
		t.Fatal(signKeysError)
	}
	return signKeys[:n], signKeys[n:]
}

// signRig is the relay's mail path in one process: a real SMTP front
// (the Server, trusting loopback as credential "app" of account "acct"),
// the spool and store, delivery with DKIM signing to a real SMTP sink,
// a DNS server holding the key records and dkimpy to verify what the
// sink got.
type signRig struct {
	t      testing.TB
	st     *store.Relay
	spool  *Spool
	q      *Queue
	dkim   *DKIM
	sink   *mailSink
	dns    *dkimtest.DNS
	py     *dkimtest.Verifier
	addr   string // the SMTP front
	wrapUp func(Upstream) Upstream
}

func newSignRig(t testing.TB, wrapUp func(Upstream) Upstream) *signRig {
	t.Helper()
	r := &signRig{t: t, sink: newMailSink(t), wrapUp: wrapUp}
	r.dns = dkimtest.StartDNS(t)
	dir := t.TempDir()
	var err error
	r.st, err = store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.st.Close() })
	r.spool, err = NewSpool(SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: r.st, MaxMessageBytes: 64 << 20, NoSync: true,
		Enqueue: func(c []*store.Copy) { r.q.Add(c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.spool.Close() })
	if r.dkim, err = NewDKIM(discardLogger(), prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(r.sink.addr)
	var p int
	fmt.Sscan(port, &p)
	smtpUp, err := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: p, TLS: "none", PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { smtpUp.Close() })
	var up Upstream = smtpUp
	if wrapUp != nil {
		up = wrapUp(up)
	}
	r.q, err = NewQueue(QueueConfig{Store: r.st, Spool: r.spool, Upstreams: map[string]Upstream{"up": up}, Codec: dlCodec(t),
		DKIM: r.dkim, Workers: 4, RetryBase: time.Hour, MaxAge: 24 * time.Hour, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	r.q.Run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.q.Shutdown(ctx)
	})
	r.addr = r.front(dlCred)
	if err := store.Create(context.Background(), r.st, &store.Account{Name: "acct"}); err != nil {
		t.Fatal(err)
	}
	return r
}

// front starts an SMTP front trusting loopback as cred.
func (r *signRig) front(cred *Credential) string {
	srv, err := NewServer(ServerConfig{Submitter: r.spool, MaxSessionsPerIP: 1000, MaxSessions: 1000, AllowPlaintextLoopback: true,
		MaxMessageBytes: 64 << 20,
		Trusted:         []TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: cred}},
		Logger:          discardLogger()})
	if err != nil {
		r.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	go srv.Serve(ln, ModeSTARTTLS)
	r.t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// addKey stores a key of account for domain in state, publishes its
// record when publish is set, and reloads the signer.
func (r *signRig) addKey(account, domain, selector string, k crypto.Signer, state string, publish bool) {
	r.t.Helper()
	pem, err := dkim.MarshalPrivateKey(k)
	if err != nil {
		r.t.Fatal(err)
	}
	rec, err := dkim.Record(k)
	if err != nil {
		r.t.Fatal(err)
	}
	kind, _ := dkim.KindOf(k)
	err = store.Create(context.Background(), r.st, &store.DKIMKey{Account: account, Domain: domain, Selector: selector,
		Algorithm: string(kind), Private: string(pem), Record: rec, State: state, Created: time.Now().UTC()})
	if err != nil {
		r.t.Fatal(err)
	}
	if publish {
		r.publish(domain, selector, k)
	}
	r.load()
}

func (r *signRig) publish(domain, selector string, k crypto.Signer) {
	r.t.Helper()
	line, err := dkim.ZoneLine(domain, selector, k)
	if err != nil {
		r.t.Fatal(err)
	}
	r.dns.SetZoneLine(r.t, line)
}

func (r *signRig) setState(domain, selector, state string) {
	r.t.Helper()
	err := store.Update[store.DKIMKey](context.Background(), r.st, store.KindDKIMKey, store.DKIMKeyID(domain, selector), false,
		func(k *store.DKIMKey) (*store.DKIMKey, error) { k.State = state; return k, nil })
	if err != nil {
		r.t.Fatal(err)
	}
	r.load()
}

func (r *signRig) setAccount(resign, keep bool) {
	r.t.Helper()
	err := store.Update[store.Account](context.Background(), r.st, store.KindAccount, "acct", false,
		func(a *store.Account) (*store.Account, error) {
			a.ResignSigned, a.KeepSenderSignature = resign, keep
			return a, nil
		})
	if err != nil {
		r.t.Fatal(err)
	}
	r.load()
}

func (r *signRig) load() {
	r.t.Helper()
	if _, err := r.dkim.Load(context.Background(), r.st); err != nil {
		r.t.Fatal(err)
	}
}

// send submits msg over SMTP to addr (the rig's front when "") and waits
// for the sink to hold one more message, which it returns.
func (r *signRig) send(addr string, msg []byte) []byte {
	r.t.Helper()
	if addr == "" {
		addr = r.addr
	}
	before := r.sink.count()
	c, err := smtp.Dial(addr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("news@shop.test", []string{"reader@example.net"}, bytes.NewReader(msg)); err != nil {
		r.t.Fatalf("submit: %v", err)
	}
	dlWait(r.t, "the sink to get the copy", func() bool { return r.sink.count() > before })
	return r.sink.message(before)
}

// verify has dkimpy check every signature of msg and returns the d/s of
// each, topmost first.
func (r *signRig) verify(msg []byte) []string {
	r.t.Helper()
	sigs := dkimtest.Signatures(msg)
	if len(sigs) == 0 {
		r.t.Fatalf("copy is not signed:\n%.600s", msg)
	}
	if ok, why := dkimtest.AllOK(r.py.Verify(r.t, msg, len(sigs))); !ok {
		r.t.Fatalf("dkimpy: %s\n%.600s", why, msg)
	}
	return sigs
}

func (r *signRig) outcome(o string) float64 {
	return metricValue(r.t, r.dkim.outcomes.WithLabelValues(o))
}

const signMsg = "From: Shop <news@shop.test>\r\nTo: reader@example.net\r\nSubject: Deals\r\n" +
	"Date: Mon, 06 Jul 2026 10:00:00 +0000\r\nMessage-ID: <deals-1@shop.test>\r\n" +
	"List-Unsubscribe: <https://shop.test/u/1>\r\nX-Smtpeter-Tags: spring\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<html><body><p>Hello</p><a href=\"https://shop.test/sale?x=1\">Sale</a>\r\n" +
	"<img src=\"https://cdn.shop.test/banner.png\"></body></html>\r\n"

// tamper changes one byte of the body.
func tamper(msg []byte) []byte {
	out := bytes.Clone(msg)
	i := bytes.Index(out, []byte("Hello"))
	if i < 0 {
		i = len(out) - 10
	}
	out[i] ^= 0x20
	return out
}

// TestSignThroughRelay submits a tracked message over SMTP and checks
// with dkimpy that the copy the sink got is signed and verifies, with an
// RSA key, an Ed25519 key and both at once; a tampered copy fails, so
// the check can fail. Corpus messages go through with both keys.
func TestSignThroughRelay(t *testing.T) {
	rk, ek := testSigners(t)
	for _, tc := range []struct {
		name string
		keys []crypto.Signer
		want []string
	}{
		{"rsa", []crypto.Signer{rk[0]}, []string{"shop.test/sr"}},
		{"ed25519", []crypto.Signer{ek[0]}, []string{"shop.test/se"}},
		{"both", []crypto.Signer{ek[0], rk[0]}, []string{"shop.test/sr", "shop.test/se"}}, // RSA on top
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSignRig(t, nil)
			r.py = dkimtest.StartVerifier(t, r.dns.Addr)
			for _, k := range tc.keys {
				kind, _ := dkim.KindOf(k)
				r.addKey("acct", "shop.test", "s"+string(kind)[:1], k, store.DKIMActive, true)
			}
			got := r.send("", []byte(signMsg))
			if sigs := r.verify(got); strings.Join(sigs, " ") != strings.Join(tc.want, " ") {
				t.Errorf("signatures %v, want %v", sigs, tc.want)
			}
			if !strings.Contains(string(got), "https://click.test/") || strings.Contains(string(got), "X-Smtpeter-Tags") {
				t.Errorf("copy not tracked, or its control header kept:\n%s", got)
			}
			bad := tamper(got)
			for i, res := range r.py.Verify(t, bad, len(tc.want)) {
				if res.OK {
					t.Errorf("tampered copy: signature %d still verifies", i)
				}
			}
			if n := r.outcome(DKIMSigned); n != 1 {
				t.Errorf("signed counter %v, want 1", n)
			}
		})
	}
	t.Run("corpus", func(t *testing.T) {
		// Every 8th message of the MIME corpus (the whole of it takes
		// minutes under -race), the DKIM-signed ones among them tracked
		// and re-signed: each must carry our two signatures alone, both
		// valid.
		msgs := corpusSample(t, 8)
		r := newSignRig(t, nil)
		r.py = dkimtest.StartVerifier(t, r.dns.Addr)
		r.addKey("acct", "shop.test", "sr", rk[0], store.DKIMActive, true)
		r.addKey("acct", "shop.test", "se", ek[0], store.DKIMActive, true)
		r.setAccount(true, false)
		signed, senderSigned := 0, 0
		for _, m := range msgs {
			// The message's own From goes: ours signs it.
			msg := setFrom(m.body, "Shop <news@shop.test>")
			got := r.send("", msg)
			info, err := dkim.Inspect(bytes.NewReader(msg))
			if err != nil {
				if sigs := dkimtest.Signatures(got); len(sigs) != 0 {
					t.Errorf("%s: unsignable (%v) but signed", m.name, err)
				}
				continue
			}
			if sigs := dkimtest.Signatures(got); strings.Join(sigs, " ") != "shop.test/sr shop.test/se" {
				t.Errorf("%s: signatures %v, want ours alone", m.name, sigs)
				continue
			}
			if ok, why := dkimtest.AllOK(r.py.Verify(t, got, 2)); !ok {
				t.Errorf("%s: %s", m.name, why)
			}
			signed++
			if info.Signed() {
				senderSigned++
			}
		}
		if signed < len(msgs)/2 || senderSigned == 0 {
			t.Fatalf("only %d of %d corpus messages signed, %d of them signed by their sender", signed, len(msgs), senderSigned)
		}
		t.Logf("%d of %d corpus messages signed and verified, %d of them re-signed", signed, len(msgs), senderSigned)
	})
}

type namedMsg struct {
	name string
	body []byte
}

// corpusSample returns every nth message of ../shared/corpora/mime, in
// path order, skipping when the corpus is absent.
func corpusSample(t testing.TB, n int) []namedMsg {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "shared", "corpora", "mime")
	if _, err := os.Stat(root); err != nil {
		t.Skipf("%s absent (%v): the shared corpora sit beside the checkout", root, err)
	}
	var out []namedMsg
	i := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".eml") {
			return err
		}
		i++
		if i%n != 0 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, namedMsg{rel, b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// setFrom replaces (or adds) the top-level From field of msg.
func setFrom(msg []byte, from string) []byte {
	nl := "\r\n"
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	if j := bytes.Index(msg, []byte("\n\n")); j >= 0 && (i < 0 || j < i) {
		nl, i = "\n", j
	}
	if i < 0 {
		return msg
	}
	lines := strings.Split(string(msg[:i]), nl)
	var out []string
	skip := false
	for _, l := range lines {
		if skip && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			continue
		}
		skip = false
		if name, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "from") {
			skip = true
			continue
		}
		out = append(out, l)
	}
	out = append([]string{"From: " + from}, out...)
	return append([]byte(strings.Join(out, nl)), msg[i:]...)
}

// TestSignOnlyPublishedKeys: only an active key of the copy's own
// account for its From domain signs; a pending key (its record not seen
// published yet, or seen but not checked), another account's key, a key
// for another domain and a retiring key do not.
func TestSignOnlyPublishedKeys(t *testing.T) {
	rk, ek := testSigners(t)
	r := newSignRig(t, nil)
	r.py = dkimtest.StartVerifier(t, r.dns.Addr)
	if err := store.Create(context.Background(), r.st, &store.Account{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	r.addKey("acct", "shop.test", "pend", rk[0], store.DKIMPending, false)
	r.addKey("acct", "shop.test", "pend2", ek[0], store.DKIMPending, true)
	r.addKey("other", "shop.test", "theirs", rk[1], store.DKIMActive, true)
	r.addKey("acct", "elsewhere.test", "else", ek[1], store.DKIMActive, true)
	r.addKey("acct", "shop.test", "old", rk[2], store.DKIMRetiring, true)
	if got := r.send("", []byte(signMsg)); len(dkimtest.Signatures(got)) != 0 {
		t.Fatalf("signed with a key that must not sign: %v", dkimtest.Signatures(got))
	}
	r.setState("shop.test", "pend2", store.DKIMActive)
	got := r.send("", []byte(signMsg))
	if sigs := r.verify(got); len(sigs) != 1 || sigs[0] != "shop.test/pend2" {
		t.Fatalf("signatures %v, want shop.test/pend2 alone", sigs)
	}
	// The other account's key signs its own mail.
	addr := r.front(&Credential{Username: "them", Account: "other", Clicks: true, ClickDomain: "click.test", Scheme: "https", Upstream: "up"})
	if sigs := r.verify(r.send(addr, []byte(signMsg))); len(sigs) != 1 || sigs[0] != "shop.test/theirs" {
		t.Fatalf("other account's copy: signatures %v, want shop.test/theirs", sigs)
	}
	// Back to pending (its record vanished): it stops signing.
	r.setState("shop.test", "pend2", store.DKIMPending)
	if got := r.send("", []byte(signMsg)); len(dkimtest.Signatures(got)) != 0 {
		t.Fatalf("a key back in pending still signs")
	}
}

// senderSigned returns signMsg signed by its sender with k (selector
// "sender" of shop.test, published in the rig's DNS).
func (r *signRig) senderSigned(k crypto.Signer) []byte {
	r.t.Helper()
	r.publish("shop.test", "sender", k)
	var b bytes.Buffer
	err := dkim.Sign(&b, func(w io.Writer) error { _, err := io.WriteString(w, signMsg); return err },
		[]dkim.Key{{Domain: "shop.test", Selector: "sender", Signer: k}}, dkim.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	return b.Bytes()
}

// TestSignSenderSigned: a message its sender signed is re-signed only
// with a key for its domain. Without one it passes untouched (untracked,
// the sender's signature valid); with one and ResignSigned off it stays
// untracked and gets our signature beside the sender's, both valid; with
// ResignSigned it is tracked, re-signed, and the sender's broken
// signature dropped (or kept with KeepSenderSignature).
func TestSignSenderSigned(t *testing.T) {
	rk, ek := testSigners(t)
	r := newSignRig(t, nil)
	r.py = dkimtest.StartVerifier(t, r.dns.Addr)
	msg := r.senderSigned(ek[2])
	if !bytes.HasPrefix(msg, []byte("DKIM-Signature:")) {
		t.Fatalf("sender's message not signed:\n%s", msg)
	}
	tracked := func(b []byte) bool { return bytes.Contains(b, []byte("https://click.test/")) }

	got := r.send("", msg)
	if tracked(got) || strings.Join(r.verify(got), " ") != "shop.test/sender" {
		t.Fatalf("no key: want untouched with the sender's valid signature:\n%s", got)
	}

	r.addKey("acct", "shop.test", "ours", rk[0], store.DKIMActive, true)
	got = r.send("", msg)
	if tracked(got) || strings.Join(r.verify(got), " ") != "shop.test/ours shop.test/sender" {
		t.Fatalf("key, resign off: want untracked, ours beside the sender's, both valid: %v\n%s", dkimtest.Signatures(got), got)
	}

	r.setAccount(true, false)
	got = r.send("", msg)
	if !tracked(got) || strings.Join(r.verify(got), " ") != "shop.test/ours" {
		t.Fatalf("resign: want tracked, ours alone: %v\n%s", dkimtest.Signatures(got), got)
	}

	r.setAccount(true, true)
	got = r.send("", msg)
	sigs := dkimtest.Signatures(got)
	if !tracked(got) || strings.Join(sigs, " ") != "shop.test/ours shop.test/sender" {
		t.Fatalf("resign, keep: want tracked with both signatures: %v", sigs)
	}
	res := r.py.Verify(t, got, 2)
	if !res[0].OK || res[1].OK {
		t.Fatalf("resign, keep: want ours valid and the sender's broken by the rewrite: %+v", res)
	}

	// Without a key for its domain, resigning is moot: untouched again.
	r.setState("shop.test", "ours", store.DKIMRetired)
	got = r.send("", msg)
	if tracked(got) || strings.Join(r.verify(got), " ") != "shop.test/sender" {
		t.Fatalf("key retired: want untouched with the sender's valid signature: %v", dkimtest.Signatures(got))
	}
}

// TestSignUnsignable: a copy whose header is not an RFC 5322 header
// cannot be signed; it goes out unsigned, counted, instead of not at
// all. One without a From field has no From domain, so no key: unsigned
// too.
func TestSignUnsignable(t *testing.T) {
	rk, _ := testSigners(t)
	r := newSignRig(t, nil)
	r.addKey("acct", "shop.test", "sr", rk[0], store.DKIMActive, true)
	for _, tc := range []struct {
		name, msg string
		counted   float64
	}{
		{"malformed header", strings.Replace(signMsg, "Subject: Deals\r\n", "Subject: Deals\r\nthis line is no header field\r\n", 1), 1},
		{"no from", strings.Replace(signMsg, "From: Shop <news@shop.test>\r\n", "", 1), 0},
	} {
		before := r.outcome(DKIMUnsignable)
		got := r.send("", []byte(tc.msg))
		if len(dkimtest.Signatures(got)) != 0 || !bytes.Contains(got, []byte("Subject: Deals")) {
			t.Fatalf("%s: want the copy unsigned:\n%s", tc.name, got)
		}
		if n := r.outcome(DKIMUnsignable) - before; n != tc.counted {
			t.Errorf("%s: unsignable counter grew by %v, want %v", tc.name, n, tc.counted)
		}
	}
}

// flipUpstream changes the spooled message while a copy is being signed:
// at the first write to the upstream (the signatures, written after the
// first rendering of a copy too large to buffer) it flips a byte of the
// spool file, so the second rendering differs from the one signed.
type flipUpstream struct {
	Upstream
	spoolDir string
	flipped  bool
}

func (f *flipUpstream) Deliver(ctx context.Context, env Envelope, write func(io.Writer) error) (Result, error) {
	return f.Upstream.Deliver(ctx, env, func(w io.Writer) error {
		return write(&hookWriter{w: w, first: func() {
			if f.flipped {
				return
			}
			f.flipped = true
			matches, _ := filepath.Glob(filepath.Join(f.spoolDir, "*"))
			for _, p := range matches {
				fl, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					continue
				}
				if fi, err := fl.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > 1<<20 {
					fl.WriteAt([]byte("Z"), fi.Size()-100)
				}
				fl.Close()
			}
		}})
	})
}

type hookWriter struct {
	w     io.Writer
	first func()
	done  bool
}

func (h *hookWriter) Write(p []byte) (int, error) {
	if !h.done {
		h.done = true
		h.first()
	}
	return h.w.Write(p)
}

// TestSignNotDeterministic: when the second rendering of a copy differs
// from the one signed, the try is aborted: the upstream never gets the
// final dot, so it keeps nothing, and the copy stays queued.
func TestSignNotDeterministic(t *testing.T) {
	rk, _ := testSigners(t)
	var flip *flipUpstream
	r := newSignRig(t, func(u Upstream) Upstream { flip = &flipUpstream{Upstream: u}; return flip })
	flip.spoolDir = r.spool.cfg.Dir
	r.addKey("acct", "shop.test", "sr", rk[0], store.DKIMActive, true)
	big := signMsg + strings.Repeat("<p>"+strings.Repeat("x", 70)+"</p>\r\n", 20000) // 1.5 MB: rendered twice
	c, err := smtp.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("news@shop.test", []string{"reader@example.net"}, strings.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	dlWait(t, "the aborted try", func() bool { return r.outcome(DKIMNotDeterministic) == 1 })
	dlWait(t, "the sink to see the DATA cut", func() bool {
		r.sink.mu.Lock()
		defer r.sink.mu.Unlock()
		return r.sink.aborted == 1
	})
	if n := r.sink.count(); n != 0 {
		t.Fatalf("the sink kept %d messages", n)
	}
	var fails []store.Event
	for e, err := range r.st.Events(context.Background(), "acct", store.LogFailures, time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		fails = append(fails, e)
	}
	if len(fails) != 1 || fails[0].Fields["type"] != "soft" || !strings.Contains(fails[0].Fields["description"], "different bytes") {
		t.Fatalf("failures log: %+v", fails)
	}
}
