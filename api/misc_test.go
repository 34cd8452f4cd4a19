package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// blockingSubmitter waits for its context: a stuck spool.
type blockingSubmitter struct{}

func (blockingSubmitter) Submit(ctx context.Context, _ *smtpd.Submission, body io.Reader) (*smtpd.Receipt, error) {
	io.Copy(io.Discard, body)
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	kr, _ := NewKeyring([]Key{{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "u", Account: "shop"}}})
	e.srv.Close()
	e.srv = newTestServer(New(Config{Submitter: blockingSubmitter{}, Store: e.relay, Keys: kr, Timeout: 100 * time.Millisecond}))
	defer e.srv.Close()
	start := time.Now()
	st, body := e.send(keyShop, map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t"})
	wantError(t, st, body, http.StatusServiceUnavailable, "try again later")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("answered after %v", d)
	}
}

// stuckSubmitter ignores its context until release is closed: a spool
// stuck in a system call.
type stuckSubmitter struct{ release chan struct{} }

func (s stuckSubmitter) Submit(ctx context.Context, _ *smtpd.Submission, body io.Reader) (*smtpd.Receipt, error) {
	io.Copy(io.Discard, body)
	<-s.release
	return nil, ctx.Err()
}

// TestSendSlots: with every send slot taken by a stuck spool, another send
// waits at most Timeout and is told to try again.
func TestSendSlots(t *testing.T) {
	e := newEnv(t)
	kr, _ := NewKeyring([]Key{{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "u", Account: "shop"}}})
	e.srv.Close()
	release := make(chan struct{})
	e.srv = newTestServer(New(Config{Submitter: stuckSubmitter{release}, Store: e.relay, Keys: kr, Timeout: 300 * time.Millisecond, MaxSends: 1}))
	defer e.srv.Close()
	req := map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t"}
	type answer struct {
		st   int
		body []byte
	}
	done := make(chan answer)
	for range 3 {
		go func() {
			st, body := e.send(keyShop, req)
			done <- answer{st, body}
		}()
	}
	waited := 0
	for i := range 3 {
		if i == 2 {
			// The others were refused; the stuck one has hit Timeout by
			// now, and returns, as a spool would at last.
			time.Sleep(600 * time.Millisecond)
			close(release)
		}
		a := <-done
		wantError(t, a.st, a.body, http.StatusServiceUnavailable, "try again later")
		if strings.Contains(string(a.body), "too many sends") {
			waited++
		}
	}
	if waited == 0 {
		t.Fatal("no send waited for a slot")
	}
}

func FuzzSendRequest(f *testing.F) {
	for _, s := range []string{
		`{"from":"Shop <news@shop.example>","to":["ann@example.com","Bob <bob@example.com>"],"cc":"c@example.com","subject":"Grüße","text":"t","html":"<p>h</p>","tags":"a,b"}`,
		`{"from":"a@b.example","to":"c@d.example","text":"t","attachments":[{"name":"a.pdf","type":"application/pdf","data":"JVBERg=="}]}`,
		`{"mime":"From: a@b.example\r\nTo: c@d.example\r\n\r\nbody","recipients":["x@y.example"],"envelope":""}`,
		`{"mime":"Subject: x\r\n\r\nb","recipient":"c@d.example","envelope":"<>"}`,
		`{"from":"\"quoted, name\" <q@x.example>","replyto":["r@x.example"],"html":"x","recipient":"\"a b\"@c.example"}`,
		`{"from":"a@b.example","to":"c@d.example","text":"t","unsubscribe":"mailto:u@b.example","extra":{"X-Campaign":"n\u00fcv"}}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req sendRequest
		if err := decodeJSON(strings.NewReader(string(b)), &req); err != nil {
			if he, ok := err.(*httpError); !ok || he.status != 400 || he.msg == "" {
				t.Fatalf("decode error %v is not a 400 with a message", err)
			}
			return
		}
		plan, err := planSend(&req, now)
		if err != nil {
			if he, ok := err.(*httpError); !ok || he.status != 400 || !strings.Contains(he.msg, ":") {
				t.Fatalf("plan error %v is not a 400 naming a field", err)
			}
			return
		}
		if len(plan.recipients) == 0 || len(plan.recipients) > MaxRecipients || len(plan.body) == 0 {
			t.Fatalf("plan %+v", plan)
		}
		for _, r := range append([]string{plan.envelope}, plan.recipients...) {
			if strings.ContainsAny(r, "\r\n<>") {
				t.Fatalf("envelope address %q would inject SMTP", r)
			}
		}
		if req.MIME == nil {
			// A built message parses, and its header cannot be split.
			if _, got := leaves(t, plan.body); len(got) == 0 {
				t.Fatal("no leaves")
			}
		}
	})
}

func FuzzLogName(f *testing.F) {
	for _, s := range []string{"clicks.2026-11-22.log", "attempts.2000-02-29.log", "opens.2026-13-01.log", "x.log", "clicks..log", "2026-11-22"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		log, day, ok := parseLogName(s)
		if !ok {
			return
		}
		if _, known := store.LogFields[log]; !known {
			t.Fatalf("%q: unknown log %q accepted", s, log)
		}
		if got := logName(log, day); got != s {
			t.Fatalf("%q parses to %s %v, which formats as %q", s, log, day, got)
		}
	})
}

// TestSendSlowBody: an account that trickles request bodies holds at most
// half the send slots, and only for Timeout; another account's send goes
// through meanwhile.
func TestSendSlowBody(t *testing.T) {
	e := newEnv(t)
	kr, _ := NewKeyring([]Key{
		{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "u", Account: "shop"}},
		{Hash: hashKey(t, keyOther), Cred: &smtpd.Credential{Username: "o", Account: "other"}},
	})
	e.srv.Close()
	e.srv = newTestServer(New(Config{Submitter: e.spool, Store: e.relay, Keys: kr, Timeout: 500 * time.Millisecond, MaxSends: 2}))
	defer e.srv.Close()
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	// shop opens two sends and never finishes a body: it may hold one slot.
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"from\":", keyShop)
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond)
	// Meanwhile the other account sends, at once.
	start := time.Now()
	st, body := e.send(keyOther, map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t"})
	if st != http.StatusOK || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("other account: %d %s after %v", st, body, time.Since(start))
	}
	// shop's second send was refused; its first is cut off at Timeout.
	refused := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("a trickled send still holds its slot: %v", err)
		}
		if strings.HasPrefix(line, "HTTP/1.1 503") {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("%d of shop's sends refused at once, want 1", refused)
	}
}
