package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/rewrite"
)

// postfix is a Postfix instance of the test's own: config, queue and data
// in a temporary folder, listening on a loopback port; it never touches
// the system's instance. Mail for rcpt.test goes to its error transport
// (accepted, then bounced with a DSN: the user is unknown) and mail for
// the relay's bounce domain to the relay's MX listener.
type postfix struct {
	dir, conf string
	addr      string
}

// startPostfix starts it on addr (127.0.0.1:PORT), sending mail for the
// bounce domain to mxAddr.
func startPostfix(t *testing.T, mxAddr, addr string) *postfix {
	t.Helper()
	if _, err := exec.LookPath("postfix"); err != nil {
		t.Skip("postfix is not installed (make deps installs it): the end-to-end bounce test needs a real MTA")
	}
	if os.Geteuid() != 0 {
		t.Skip("starting a private Postfix instance needs root (its daemons change to the postfix user); CI runs as root")
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		t.Skipf("no postfix user (%v): Postfix is not installed properly", err)
	}
	uid, _ := strconv.Atoi(pu.Uid)
	dir, err := os.MkdirTemp("", "trackrelay-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Postfix's daemons, as the postfix user, must reach the queue.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &postfix{dir: dir, conf: filepath.Join(dir, "conf"), addr: addr}
	for _, d := range []string{"conf", "queue", "data"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		t.Fatal(err)
	}
	mxHost, mxPort, _ := net.SplitHostPort(mxAddr)
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test
mydomain = mta.test
myorigin = mta.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject
smtpd_reject_unlisted_recipient = no
transport_maps = inline:{ { rcpt.test = error:5.1.1 No such user here }, { bounces.localhost = smtp:[%[2]s]:%[3]s } }
smtp_tls_security_level = may
smtpd_tls_security_level = none
smtp_dns_support_level = disabled
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
alias_maps =
alias_database =
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
`, dir, mxHost, mxPort)
	master := p.addr + " inet n - n - - smtpd\n" + `pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
	if err := os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(master), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("postfix", "-c", p.conf, "start").CombinedOutput(); err != nil {
		t.Skipf("postfix would not start (%v): %s\n%s", err, out, p.maillog())
	}
	t.Cleanup(func() {
		if out, err := exec.Command("postfix", "-c", p.conf, "stop").CombinedOutput(); err != nil {
			t.Logf("postfix stop: %v %s", err, out)
			exec.Command("postfix", "-c", p.conf, "abort").Run()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", p.addr)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Skipf("postfix started but does not listen on %s:\n%s", p.addr, p.maillog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *postfix) maillog() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// apiJSON GETs a REST path with the dev API key and decodes the answer.
func apiJSON(t *testing.T, p *relayProc, path string, out any) int {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(p.data, "api-key"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.apiAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

// sendRelay submits one message on the relay's SMTP listener from
// loopback (trusted in the dev setup: no AUTH) and returns the reply to
// DATA, or the first refusal.
func sendRelay(t *testing.T, addr, from, to, msg string) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("app.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, c.Quit()
}

// TestE2EBounceFromPostfix: the relay delivers to a real Postfix, which
// takes the copy, finds the user unknown and sends its own DSN to the
// copy's VERP address on the relay's MX listener. The bounce lands in
// the bounces log with the right recipient and status, the copy is no
// longer counted delivered, and the address is suppressed: a second
// message to it is refused at RCPT.
func TestE2EBounceFromPostfix(t *testing.T) {
	data := t.TempDir()
	// The relay first (its MX address goes into Postfix's transport map),
	// delivering to the Postfix address reserved before either starts.
	pfAddr := freeAddr(t)
	p := startRelay(t, data, "--upstream", "smtp://"+pfAddr)
	pf := startPostfix(t, p.mxAddr, pfAddr)

	const rcpt = "nobody@rcpt.test"
	msg := "From: Shop <news@shop.test>\r\nTo: " + rcpt + "\r\nSubject: spring sale\r\nX-Smtpeter-Tags: spring\r\n\r\nhello\r\n"
	reply, err := sendRelay(t, p.smtpAddr, "news@shop.test", rcpt, msg)
	if err != nil {
		t.Fatal(err)
	}
	// "Ok: queued as MESSAGE (1 copy: COPY)"
	f := strings.Fields(strings.TrimSuffix(reply, ")"))
	copyID := f[len(f)-1]

	day := time.Now().UTC().Format(time.DateOnly)
	var bounces []map[string]any
	deadline := time.Now().Add(90 * time.Second)
	for len(bounces) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no bounce recorded.\npostfix log:\n%s\nrelay log:\n%s", pf.maillog(), p.stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
		apiJSON(t, p, "/v1/logfiles/bounces."+day+".log/json", &bounces)
	}
	b := bounces[0]
	if len(bounces) != 1 || b["id"] != copyID || b["recipient"] != rcpt || b["type"] != "hard" || b["status"] != "5.1.1" ||
		!strings.Contains(fmt.Sprint(b["diagnostic"]), "No such user here") || fmt.Sprint(b["tags"]) != "[spring]" {
		t.Fatalf("bounces log: %+v (copy %s)", bounces, copyID)
	}
	if !strings.Contains(pf.maillog(), "status=bounced") || !strings.Contains(pf.maillog(), "relay=127.0.0.1") {
		t.Logf("postfix log:\n%s", pf.maillog())
	}
	// Delivered once to Postfix, then no longer counted delivered.
	var deliveries []map[string]any
	apiJSON(t, p, "/v1/logfiles/deliveries."+day+".log/json", &deliveries)
	if len(deliveries) != 1 || deliveries[0]["id"] != copyID {
		t.Fatalf("deliveries log: %+v", deliveries)
	}
	var stats struct {
		Total struct {
			Sent, Delivered, Bounced int
			HardBounced              int `json:"hard_bounced"`
		}
	}
	if st := apiJSON(t, p, "/v1/stats", &stats); st != http.StatusOK || stats.Total.Sent != 1 || stats.Total.Delivered != 0 || stats.Total.HardBounced != 1 {
		t.Fatalf("stats: %d %+v", st, stats.Total)
	}
	var events []struct {
		Event string
		Data  map[string]any
	}
	apiJSON(t, p, "/v1/events/messageid/"+copyID, &events)
	found := false
	for _, e := range events {
		found = found || e.Event == "bounce" && e.Data["status"] == "5.1.1"
	}
	if !found {
		t.Errorf("the bounce is not among the copy's events: %+v", events)
	}
	var sup map[string]any
	if st := apiJSON(t, p, "/v1/suppressions/"+rcpt, &sup); st != http.StatusOK || sup["reason"] != "hard-bounce" || sup["copy"] != copyID {
		t.Fatalf("suppression: %d %+v", st, sup)
	}
	// A second message to the address is refused at RCPT.
	_, err = sendRelay(t, p.smtpAddr, "news@shop.test", rcpt, msg)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "suppression list") {
		t.Fatalf("second message: %v, want 550 for the suppressed address", err)
	}
}

// TestCrashMXDurable: bounces answered 250 by the MX listener survive a
// kill -9 of the relay right after the last 250: whatever the processor
// had not recorded yet is recorded after the restart, each exactly once.
func TestCrashMXDurable(t *testing.T) {
	data := t.TempDir()
	p := startRelay(t, data)
	const n = 30
	var ids []string
	for i := range n {
		rcpt := fmt.Sprintf("gone%02d@example.net", i)
		reply, err := sendRelay(t, p.smtpAddr, "news@shop.test", rcpt, "From: news@shop.test\r\nSubject: crash\r\n\r\nhello\r\n")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(strings.TrimSuffix(reply, ")"))
		ids = append(ids, f[len(f)-1])
	}
	waitOutbox(t, filepath.Join(data, "outbox"), n)
	kf, err := os.Open(filepath.Join(data, "token.keys"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := rewrite.ReadKeys(kf)
	kf.Close()
	if err != nil {
		t.Fatal(err)
	}
	codec, err := rewrite.NewCodec(keys[0], keys[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	// Delivered first (the folder upstream is quick, the record trails it).
	day := time.Now().UTC().Format(time.DateOnly)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ds []map[string]any
		apiJSON(t, p, "/v1/logfiles/deliveries."+day+".log/json", &ds)
		if len(ds) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries recorded", len(ds), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := smtp.Dial(p.mxAddr)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		cid, err := strconv.ParseUint(id, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		verp := "news+" + codec.EncodeVERP(cid) + "@bounces.localhost"
		dsn := fmt.Sprintf("From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"+
			"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; gone%02d@example.net\r\n"+
			"Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n--B--\r\n", i)
		if err := c.SendMail("", []string{verp}, strings.NewReader(dsn)); err != nil {
			t.Fatalf("bounce %d: %v", i, err)
		}
	}
	p.kill() // right after the last 250
	c.Close()
	left, _ := filepath.Glob(filepath.Join(data, "inbound", "*.msg"))
	t.Logf("%d of %d bounces were still unprocessed in the inbound spool at the kill", len(left), n)

	p = startRelay(t, data)
	deadline = time.Now().Add(30 * time.Second)
	var bounces []map[string]any
	for {
		apiJSON(t, p, "/v1/logfiles/bounces."+day+".log/json", &bounces)
		if len(bounces) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bounces recorded after the restart\n%s", len(bounces), n, truncateStr(p.stderr.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	apiJSON(t, p, "/v1/logfiles/bounces."+day+".log/json", &bounces)
	seen := map[string]int{}
	for _, b := range bounces {
		seen[fmt.Sprint(b["id"])]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("copy %s: %d bounces recorded, want 1", id, seen[id])
		}
	}
	if left, _ := filepath.Glob(filepath.Join(data, "inbound", "*.msg")); len(left) != 0 {
		t.Errorf("%d files left in the inbound spool", len(left))
	}
	p.stop()
}
