package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime/dkim"
	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
)

// keepSink is a real SMTP server keeping each message by its Subject.
type keepSink struct {
	mu   sync.Mutex
	msgs map[string][]byte
	addr string
}

type keepSession struct{ s *keepSink }

func (ks *keepSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ks *keepSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ks *keepSession) Reset()                               {}
func (ks *keepSession) Logout() error                        { return nil }
func (ks *keepSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	hdr, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(hdr, "\r\n\r\n"...)))).ReadMIMEHeader()
	if err != nil {
		return err
	}
	ks.s.mu.Lock()
	ks.s.msgs[h.Get("Subject")] = b
	ks.s.mu.Unlock()
	return nil
}

func newKeepSink(t testing.TB) *keepSink {
	t.Helper()
	s := &keepSink{msgs: map[string][]byte{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &keepSession{s}, nil }))
	srv.Domain = "sink.test"
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

// wait returns the message with subject once the sink has it.
func (s *keepSink) wait(t testing.TB, subject string) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		b, ok := s.msgs[subject]
		s.mu.Unlock()
		if ok {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sink has no message %q", subject)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const dkimE2EMsg = "From: Shop <news@shop.example>\r\nTo: you@example.net\r\nSubject: %s\r\n" +
	"Date: Mon, 06 Jul 2026 10:00:00 +0000\r\nMessage-ID: <%s@shop.example>\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<html><body><p>Hello</p><a href=\"https://shop.example/p?id=1\">Shop</a></body></html>\r\n"

// dkimRelay is `trackrelay serve` with DKIM checks against a test DNS
// server, delivering to a sink, and dkimpy to verify what arrives.
type dkimRelay struct {
	t    *testing.T
	p    *relayProc
	cfg  string
	dns  *dkimtest.DNS
	py   *dkimtest.Verifier
	sink *keepSink
	n    int
}

func startDKIMRelay(t *testing.T) *dkimRelay {
	t.Helper()
	r := &dkimRelay{t: t, dns: dkimtest.StartDNS(t), sink: newKeepSink(t)}
	r.py = dkimtest.StartVerifier(t, r.dns.Addr)
	data := t.TempDir()
	cfg, _, err := ensureDevConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[accounts]]\nname = \"other\"\n\n[dkim]\nresolver = %q\ncheck_interval = \"1s\"\nrecheck_interval = \"1s\"\nretire_after = \"4s\"\n", r.dns.Addr)
	f.Close()
	r.cfg = cfg
	r.p = startRelay(t, data, "--upstream", "smtp://"+r.sink.addr)
	return r
}

// send submits a message with subject (From news@shop.example) and
// returns the copy the sink got.
func (r *dkimRelay) send(subject string) []byte {
	r.t.Helper()
	r.n++
	sendPlain(r.t, r.p.smtpAddr, "news@shop.example", "you@example.net", fmt.Sprintf(dkimE2EMsg, subject, subject))
	return r.sink.wait(r.t, subject)
}

func (r *dkimRelay) cli(args ...string) (string, string, error) {
	r.t.Helper()
	return runCmd(r.t, "", append(args, "--config", r.cfg)...)
}

// verified has dkimpy check every signature of msg and returns their
// d/s, topmost first.
func (r *dkimRelay) verified(msg []byte, want ...string) {
	r.t.Helper()
	sigs := dkimtest.Signatures(msg)
	if strings.Join(sigs, " ") != strings.Join(want, " ") {
		r.t.Fatalf("signatures %v, want %v", sigs, want)
	}
	if ok, why := dkimtest.AllOK(r.py.Verify(r.t, msg, len(sigs))); !ok {
		r.t.Fatalf("dkimpy: %s", why)
	}
}

// sendUntil sends messages (subject prefix-1, prefix-2, ...) until one
// is signed by want, at most for ten seconds: the relay applies a key's
// new state within a second of the change. Every copy on the way must
// verify; the last one is returned.
func (r *dkimRelay) sendUntil(prefix string, want ...string) []byte {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 1; ; i++ {
		got := r.send(fmt.Sprintf("%s-%d", prefix, i))
		sigs := dkimtest.Signatures(got)
		if ok, why := dkimtest.AllOK(r.py.Verify(r.t, got, len(sigs))); len(sigs) == 0 || !ok {
			r.t.Fatalf("%s-%d: signatures %v do not verify: %s", prefix, i, sigs, why)
		}
		if strings.Join(sigs, " ") == strings.Join(want, " ") {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: signatures %v, want %v", prefix, sigs, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitState polls `dkim list` until the key is in state.
func (r *dkimRelay) waitState(selector, state string) {
	r.t.Helper()
	re := regexp.MustCompile(`(?m)^shop\.example\s+` + regexp.QuoteMeta(selector) + `\s+\S+\s+` + state + `\b`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err := r.cli("dkim", "list", "--account", "dev")
		if err != nil {
			r.t.Fatal(err)
		}
		if re.MatchString(out) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("key %s never %s:\n%s", selector, state, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var zoneLine = regexp.MustCompile(`^(tr\d{6}[re](?:-\d+)?)\._domainkey\.shop\.example\. IN TXT( "[^"]+")+\n$`)

// TestE2EDKIM runs the built relay with DKIM: keys made, checked and
// rotated with the CLI over the admin socket while it runs, mail
// submitted over SMTP and delivered to a real SMTP sink, every copy
// verified by dkimpy against a real DNS server. A key that is not
// published does not sign; the relay's own checks activate a published
// key; RSA and Ed25519 sign side by side; a tampered copy fails; a
// rotation keeps mail verifying throughout; one account never sees
// another's keys.
func TestE2EDKIM(t *testing.T) {
	r := startDKIMRelay(t)

	out, stderr, err := r.cli("dkim", "keygen", "shop.example", "--account", "dev")
	m := zoneLine.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("keygen: %v\nstdout %q\nstderr %s", err, out, stderr)
	}
	rsa1, rsaLine := m[1], strings.TrimSpace(out)
	if !strings.Contains(stderr, "pending") {
		t.Errorf("keygen says nothing of what to do: %s", stderr)
	}

	// Not published: check fails with the reason, and mail goes unsigned.
	out, _, err = r.cli("dkim", "check", "shop.example")
	if !errors.Is(err, errReported) || !strings.Contains(out, "no TXT record at "+rsa1+"._domainkey.shop.example") || !strings.Contains(out, rsaLine) {
		t.Fatalf("check of an unpublished key: %v\n%s", err, out)
	}
	if got := r.send("unpublished"); len(dkimtest.Signatures(got)) != 0 {
		t.Fatalf("a key that is not published signed: %v", dkimtest.Signatures(got))
	}

	// Published (from the zone line keygen printed): check passes, mail
	// is signed and verifies; a tampered copy does not.
	r.dns.SetZoneLine(t, rsaLine)
	if out, _, err = r.cli("dkim", "check", "shop.example"); err != nil || !strings.Contains(out, "every key is published right") {
		t.Fatalf("check of a published key: %v\n%s", err, out)
	}
	got := r.send("rsa")
	r.verified(got, "shop.example/"+rsa1)
	if !strings.Contains(string(got), "http://localhost:") {
		t.Errorf("copy not tracked:\n%s", got)
	}
	bad := bytes.Replace(got, []byte("Hello"), []byte("Hallo"), 1)
	if res := r.py.Verify(t, bad, 1); res[0].OK {
		t.Fatal("a tampered copy verifies")
	}

	// An Ed25519 key beside it, activated by the relay's own checks.
	out, _, err = r.cli("dkim", "keygen", "shop.example", "--account", "dev", "--type", "ed25519")
	if m = zoneLine.FindStringSubmatch(out); err != nil || m == nil || !strings.Contains(out, "k=ed25519") {
		t.Fatalf("ed25519 keygen: %v %q", err, out)
	}
	ed1 := m[1]
	r.dns.SetZoneLine(t, strings.TrimSpace(out))
	r.waitState(ed1, "active")
	oldCopy := r.sendUntil("both", "shop.example/"+rsa1, "shop.example/"+ed1)

	// Rotate the RSA key: the old one signs until the new record is
	// published and checked, then the new one alone, and the old record
	// (still published) keeps the mail signed before verifying.
	out, _, err = r.cli("dkim", "rotate", "shop.example", "--type", "rsa")
	if m = zoneLine.FindStringSubmatch(out); err != nil || m == nil || m[1] == rsa1 {
		t.Fatalf("rotate: %v %q", err, out)
	}
	rsa2 := m[1]
	r.verified(r.send("rotating"), "shop.example/"+rsa1, "shop.example/"+ed1)
	r.dns.SetZoneLine(t, strings.TrimSpace(out))
	r.waitState(rsa2, "active")
	r.waitState(rsa1, "retiring")
	r.sendUntil("rotated", "shop.example/"+rsa2, "shop.example/"+ed1)
	r.verified(oldCopy, "shop.example/"+rsa1, "shop.example/"+ed1)
	r.waitState(rsa1, "retired") // retire_after is 4s here
	r.verified(r.send("retired"), "shop.example/"+rsa2, "shop.example/"+ed1)

	// A message its sender signed (ResignSigned off, the default): left
	// untracked, so the sender's signature stays valid, and ours beside it.
	senderKey, err := dkim.GenerateKey(dkim.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := dkim.ZoneLine("shop.example", "sender", senderKey)
	r.dns.SetZoneLine(t, line)
	var signed bytes.Buffer
	err = dkim.Sign(&signed, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, dkimE2EMsg, "sender-signed", "sender-signed")
		return err
	}, []dkim.Key{{Domain: "shop.example", Selector: "sender", Signer: senderKey}}, dkim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sendPlain(t, r.p.smtpAddr, "news@shop.example", "you@example.net", signed.String())
	got = r.sink.wait(t, "sender-signed")
	r.verified(got, "shop.example/"+rsa2, "shop.example/"+ed1, "shop.example/sender")
	if strings.Contains(string(got), "http://localhost:") {
		t.Error("a sender-signed message was tracked although it is not re-signed")
	}

	// Scoping: account other sees none of dev's keys and cannot touch them.
	if out, _, err = r.cli("dkim", "list", "--account", "other"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("other's list: %v %q", err, out)
	}
	if _, _, err = r.cli("dkim", "remove", "shop.example", rsa2, "--account", "other", "--force"); err == nil || !strings.Contains(err.Error(), "has no keys for shop.example") {
		t.Fatalf("other removing dev's key: %v", err)
	}
	if _, _, err = r.cli("dkim", "keygen", "other.example", "--account", "other", "--type", "ed25519"); err != nil {
		t.Fatal(err)
	}
	if out, _, _ = r.cli("dkim", "list", "--account", "dev"); strings.Contains(out, "other.example") {
		t.Fatalf("dev's list shows other's key:\n%s", out)
	}
	if out, _, _ = r.cli("dkim", "list"); !strings.Contains(out, "other.example") || !strings.Contains(out, "shop.example") {
		t.Fatalf("the operator's list lacks a key:\n%s", out)
	}
	// An active key is removed only with --force.
	if _, _, err = r.cli("dkim", "remove", "shop.example", rsa2, "--account", "dev"); err == nil || !strings.Contains(err.Error(), "force") {
		t.Fatalf("removing an active key without --force: %v", err)
	}
	if out, _, err = r.cli("dkim", "remove", "shop.example", rsa2, "--account", "dev", "--force"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("forced remove: %v %q", err, out)
	}
	r.verified(r.send("ed only"), "shop.example/"+ed1)

	r.p.stop()
	if logs := r.p.stderr.String(); strings.Contains(logs, "PRIVATE KEY") {
		t.Fatal("the relay logged a private key")
	}
}

// TestDKIMCommandUsage: bad invocations print the usage and exit 2; the
// command says so when the relay is not running.
func TestDKIMCommandUsage(t *testing.T) {
	for _, args := range [][]string{{"dkim"}, {"dkim", "frobnicate", "x"}, {"dkim", "keygen"}, {"dkim", "remove", "shop.example"}, {"dkim", "check", "shop.example"}} {
		_, stderr, err := runCmd(t, "", args...)
		if !errors.Is(err, errUsage) || !strings.Contains(stderr, "usage:") && !strings.Contains(stderr, "--config") {
			t.Errorf("%q: %v %q", args, err, stderr)
		}
	}
	data := t.TempDir()
	cfg, _, err := ensureDevConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCmd(t, "", "dkim", "list", "--config", cfg); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("no relay: %v", err)
	}
	if _, stderr, err := runCmd(t, "", "dkim", "keygen", "shop.example", "--config", cfg); !errors.Is(err, errUsage) || !strings.Contains(stderr, "--account") {
		t.Fatalf("keygen without --account: %v %q", err, stderr)
	}
}
