package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// subjectSink is an SMTP server that records the Subject of every message
// it accepts, and how often.
type subjectSink struct {
	mu   sync.Mutex
	seen map[string]int
	addr string
}

func newSubjectSink(t testing.TB) *subjectSink {
	t.Helper()
	s := &subjectSink{seen: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	srv.Domain = "sink.test"
	srv.ErrorLog = log.New(io.Discard, "", 0) // resets from killed relays are expected
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *subjectSink) count(subject string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[subject]
}

type sinkSession struct{ s *subjectSink }

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *sinkSession) Reset()                               {}
func (ss *sinkSession) Logout() error                        { return nil }
func (ss *sinkSession) Data(r io.Reader) error {
	h, err := textproto.NewReader(bufio.NewReader(r)).ReadMIMEHeader()
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.seen[h.Get("Subject")]++
	ss.s.mu.Unlock()
	return nil
}

// outcome of one submission, as the client saw it.
type outcome int

const (
	accepted   outcome = iota // 250 after the final dot
	incomplete                // failed before the final dot was sent
	ambiguous                 // failed while ending DATA: it may or may not have landed
)

// submitLoop sends messages on one connection (redialing after errors)
// until stop closes, recording each subject's outcome.
func submitLoop(addr, prefix string, stop <-chan struct{}, rec func(string, outcome)) {
	var c *smtp.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		subject := fmt.Sprintf("%s-%d", prefix, n)
		if c == nil {
			conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			c = smtp.NewClient(conn)
		}
		fail := func(o outcome) {
			rec(subject, o)
			c.Close()
			c = nil
		}
		if err := c.Mail("crash@example.com", nil); err != nil {
			fail(incomplete)
			continue
		}
		if err := c.Rcpt(subject+"@example.net", nil); err != nil {
			fail(incomplete)
			continue
		}
		w, err := c.Data()
		if err != nil {
			fail(incomplete)
			continue
		}
		body := fmt.Sprintf(e2eMsg, subject) + strings.Repeat("<p>padding <a href=\"https://example.org/x\">x</a></p>\r\n", 100)
		if _, err := io.WriteString(w, body); err != nil {
			fail(incomplete)
			continue
		}
		if err := w.Close(); err != nil {
			fail(ambiguous)
			continue
		}
		rec(subject, accepted)
	}
}

// TestCrashKill9 runs the real binary (`serve`: relay and redirector in one
// process), submits mail and follows tracked links in parallel, kills it
// with SIGKILL at random moments and restarts it, in each redirector
// durability. Every message that got 250 must reach the upstream at least
// once; no message whose DATA the client did not finish may reach it at
// all; every click answered 302 must be in the relay's store in the end.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	for _, durability := range []string{"process", "disk"} {
		t.Run(durability, func(t *testing.T) { testCrashKill9(t, durability) })
	}
}

func testCrashKill9(t *testing.T, durability string) {
	sink := newSubjectSink(t)
	data := t.TempDir()
	cfgPath, _, err := ensureDevConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[redirector]\ndurability = %q\nship_interval = \"50ms\"\n", durability)
	f.Close()
	keys, err := os.Open(filepath.Join(data, "token.keys"))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := rewrite.ReadKeys(keys)
	keys.Close()
	if err != nil {
		t.Fatal(err)
	}
	codec, err := rewrite.NewCodec(ks[0])
	if err != nil {
		t.Fatal(err)
	}
	clickTok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: new(store.IDGen).Next(), HTTPS: true, Host: "shop.example.com"})
	var mu sync.Mutex
	outcomes := map[string]outcome{}
	clicked := map[string]bool{} // the n of every click answered 302
	rec := func(s string, o outcome) {
		mu.Lock()
		outcomes[s] = o
		mu.Unlock()
	}
	client := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var seq atomic.Int64
	clickLoop := func(addr string, stop <-chan struct{}) {
		_, port, _ := net.SplitHostPort(addr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := fmt.Sprint(seq.Add(1))
			req, _ := http.NewRequest("GET", "http://"+addr+"/"+clickTok+"/p?n="+n, nil)
			req.Host = "localhost:" + port
			resp, err := client.Do(req)
			if err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusFound {
				mu.Lock()
				clicked[n] = true
				mu.Unlock()
			}
		}
	}
	const rounds, workers, clickers = 4, 8, 4
	for round := range rounds {
		httpAddr := freeAddr(t)
		p := startRelay(t, data, "--upstream", "smtp://"+sink.addr, "--http-addr", httpAddr)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				submitLoop(p.smtpAddr, fmt.Sprintf("crash-r%d-w%d", round, w), stop, rec)
			}()
		}
		for range clickers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				clickLoop(httpAddr, stop)
			}()
		}
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
	}
	p := startRelay(t, data, "--upstream", "smtp://"+sink.addr)
	var acc, inc, amb []string
	for s, o := range outcomes {
		switch o {
		case accepted:
			acc = append(acc, s)
		case incomplete:
			inc = append(inc, s)
		default:
			amb = append(amb, s)
		}
	}
	if len(acc) < 20 {
		t.Fatalf("only %d messages accepted over %d rounds; the test proves little", len(acc), rounds)
	}
	if len(clicked) < 100 {
		t.Fatalf("only %d clicks answered over %d rounds; the test proves little", len(clicked), rounds)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range acc {
		for sink.count(s) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("accepted message %s never reached the upstream\n%s", s, truncateStr(p.stderr.String(), 4000))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond) // let stray deliveries land before checking the others
	for _, s := range inc {
		if n := sink.count(s); n != 0 {
			t.Errorf("message %s was never finished by the client but reached the upstream %d times", s, n)
		}
	}
	dups, landed := 0, 0
	for _, s := range acc {
		if sink.count(s) > 1 {
			dups++
		}
	}
	for _, s := range amb {
		if sink.count(s) > 0 {
			landed++
		}
	}
	// A clean stop ships what the killed runs left in the journal; then
	// the relay's store holds every click that was answered 302.
	p.stop()
	rs, err := store.OpenRelay(filepath.Join(data, "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	got := map[string]bool{}
	if err := rs.HitIDs(func(id string) {
		if h, ok, _ := rs.Hit(id); ok {
			if _, n, found := strings.Cut(h.URL, "?n="); found {
				got[n] = true
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for n := range clicked {
		if !got[n] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%s durability: %d of %d clicks answered 302 are not in the relay's store", durability, missing, len(clicked))
	}
	t.Logf("%s durability: accepted %d (all delivered, %d more than once), incomplete %d (none delivered), ambiguous %d (%d delivered); %d clicks answered 302, all stored",
		durability, len(acc), dups, len(inc), len(amb), landed, len(clicked))
}
