package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/store/postgres/pgtest"
)

// testPostgres starts a throwaway PostgreSQL for one test and returns
// the DSN of a fresh database in it.
func testPostgres(t *testing.T) string {
	t.Helper()
	srv, err := pgtest.Start(pgtest.Options{})
	if err == pgtest.ErrNoPostgres {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	dsn, err := srv.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// bodySink is an SMTP server that keeps, per Subject, how often it got
// a message and the last one's bytes.
type bodySink struct {
	mu     sync.Mutex
	count  map[string]int
	bodies map[string][]byte
	addr   string
}

func newBodySink(t *testing.T) *bodySink {
	t.Helper()
	s := &bodySink{count: map[string]int{}, bodies: map[string][]byte{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &bodySession{s: s}, nil }))
	srv.Domain = "sink.test"
	srv.ErrorLog = log.New(io.Discard, "", 0) // resets from killed relays are expected
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *bodySink) get(subject string) (int, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[subject], s.bodies[subject]
}

type bodySession struct{ s *bodySink }

func (ss *bodySession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *bodySession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *bodySession) Reset()                               {}
func (ss *bodySession) Logout() error                        { return nil }
func (ss *bodySession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw))).ReadMIMEHeader()
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.count[h.Get("Subject")]++
	ss.s.bodies[h.Get("Subject")] = raw
	ss.s.mu.Unlock()
	return nil
}

var clickRE = regexp.MustCompile(`href="http://click\.test(/[^"]+)"`)

// multiNode is the layout of TestMultiNode: relay nodes and redirectors
// sharing one PostgreSQL.
type multiNode struct {
	t      *testing.T
	bin    string
	dir    string
	apiKey string
	relays map[string]*nodeProc
}

type nodeProc struct {
	name, cfg         string
	smtpAddr, apiAddr string
	proc              *redirectorProc
}

func (mn *multiNode) startRelay(n *nodeProc) {
	mn.t.Helper()
	n.proc = startProc(mn.t, mn.bin, []string{"smtp", "api"}, "relay", "--config", n.cfg, "--smtp-addr", n.smtpAddr, "--api-addr", n.apiAddr)
}

// events reads a recipient's events through one relay's REST API.
func (mn *multiNode) events(node *nodeProc, rcpt string) ([]apiEvent, error) {
	req, _ := http.NewRequest("GET", "http://"+node.apiAddr+"/v1/events/email/"+rcpt, nil)
	req.Header.Set("Authorization", "Bearer "+mn.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("events of %s from %s: %d %s", rcpt, node.name, resp.StatusCode, body)
	}
	var evs []apiEvent
	if err := json.Unmarshal(body, &evs); err != nil {
		return nil, fmt.Errorf("events: %v in %s", err, body)
	}
	return evs, nil
}

type apiEvent struct {
	Event string         `json:"event"`
	Data  map[string]any `json:"data"`
}

func countEvents(evs []apiEvent) map[string]int {
	m := map[string]int{}
	for _, e := range evs {
		m[e.Event]++
	}
	return m
}

// TestMultiNode runs two relay nodes and two redirectors, real processes
// of this tree, on one PostgreSQL: mail is submitted through both relays,
// every delivered copy's link is clicked through both redirectors, one
// relay node is killed with SIGKILL under load and started again, and
// every event is read back through either relay's REST API. Nothing
// answered 250 or 302 is lost or doubled: each accepted message has
// exactly one attempt and one delivery event (the upstream gets it at
// least once), each 302 exactly one click event, on both nodes alike.
func TestMultiNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary; skipped with -short")
	}
	dsn := testPostgres(t)
	sink := newBodySink(t)
	bin, dir, _, cfgText := testDevConfig(t)
	const secret = "multi-node-ingest-secret-0123456789"
	for _, r := range [][2]string{
		{`data_dir = "."`, `data_dir = "NODE-data"`},
		{`folder = "outbox"`, fmt.Sprintf("host = \"127.0.0.1\"\nport = %s\ntls = \"none\"", sink.addr[strings.LastIndex(sink.addr, ":")+1:])},
		{`retry_base = "10s"`, `retry_base = "1s"`},
	} {
		if !strings.Contains(cfgText, r[0]) {
			t.Fatalf("the dev config changed: no %q in it", r[0])
		}
		cfgText = strings.Replace(cfgText, r[0], r[1], 1)
	}
	key, err := os.ReadFile(filepath.Join(dir, devAPIKeyName))
	if err != nil {
		t.Fatal(err)
	}
	mn := &multiNode{t: t, bin: bin, dir: dir, apiKey: strings.TrimSpace(string(key)), relays: map[string]*nodeProc{}}
	var nodes []*nodeProc
	for _, name := range []string{"relay-a", "relay-b"} {
		n := &nodeProc{name: name, cfg: filepath.Join(dir, name+".toml"), smtpAddr: freeAddr(t), apiAddr: freeAddr(t)}
		text := strings.Replace(cfgText, "NODE", name, 1) + fmt.Sprintf("\n[redirector]\ningest_secret = %q\n\n[store]\nbackend = \"postgres\"\ndsn = %q\nnode = %q\n", secret, dsn, name)
		if err := os.WriteFile(n.cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		mn.startRelay(n)
		mn.relays[name] = n
		nodes = append(nodes, n)
	}
	// Each redirector ships to its own relay node.
	var redirs []*redirectorProc
	for i, n := range nodes {
		cfg := filepath.Join(dir, fmt.Sprintf("redirector-%d.toml", i))
		text := fmt.Sprintf("[relay]\ndata_dir = \"redirector-%d-data\"\n\n[keys]\nkey_file = \"token.keys\"\n\n[redirector]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"off\"\n"+
			"click_domains = [\"click.test\"]\ningest_url = \"http://%s/internal/hits\"\ningest_secret = %q\nship_interval = \"50ms\"\n", i, n.apiAddr, secret)
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		redirs = append(redirs, startProc(t, bin, []string{"redirector"}, "redirector", "--config", cfg))
	}

	var mu sync.Mutex
	outcomes := map[string]outcome{} // subject -> what the submitting client saw
	clicks := map[string]int{}       // subject -> clicks answered 302
	clicking := map[string]bool{}
	rec := func(s string, o outcome) {
		mu.Lock()
		outcomes[s] = o
		mu.Unlock()
	}
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var clicked atomic.Int64
	// click follows the tracked link of subject's delivered copy through
	// redirector i, counting a 302.
	click := func(subject string, i int) bool {
		_, body := sink.get(subject)
		m := clickRE.FindSubmatch(body)
		if m == nil {
			return false
		}
		req, _ := http.NewRequest("GET", "http://"+redirs[i%2].addrs["redirector"]+strings.ReplaceAll(string(m[1]), "&amp;", "&"), nil)
		req.Host = "click.test"
		resp, err := noFollow.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Errorf("click on %s: %d", subject, resp.StatusCode)
			return false
		}
		mu.Lock()
		clicks[subject]++
		mu.Unlock()
		clicked.Add(1)
		return true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			submitLoop(nodes[w%2].smtpAddr, fmt.Sprintf("mn-%s-w%d", nodes[w%2].name, w), stop, rec)
		}()
	}
	// The clicker follows every delivered copy's link, twice, through
	// both redirectors, while the load runs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			mu.Lock()
			var todo []string
			for s, o := range outcomes {
				if o == accepted && !clicking[s] {
					todo = append(todo, s)
				}
			}
			mu.Unlock()
			for _, s := range todo {
				if n, _ := sink.get(s); n == 0 {
					continue
				}
				mu.Lock()
				clicking[s] = true
				mu.Unlock()
				click(s, i)
				click(s, i+1)
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	a := nodes[0]
	if err := a.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.proc.done
	t.Logf("killed %s with %d clicks answered so far", a.name, clicked.Load())
	time.Sleep(time.Second) // relay-b alone; redirector 0 holds its hits
	mn.startRelay(a)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

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
		t.Fatalf("only %d messages accepted; the test proves little", len(acc))
	}
	// Every accepted message reaches the upstream (the killed node
	// delivers its queue when it is back) and is clicked.
	deadline := time.Now().Add(90 * time.Second)
	for _, s := range acc {
		for {
			if n, _ := sink.get(s); n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("accepted message %s never reached the upstream", s)
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		done := clicking[s]
		mu.Unlock()
		if !done {
			click(s, 0)
			click(s, 1)
		}
	}
	// Every event, read through either node, until the hits held by the
	// redirectors have all arrived.
	rcpt := func(s string) string { return s + "@example.net" }
	for i, s := range acc {
		for {
			evs, err := mn.events(nodes[i%2], rcpt(s))
			if err != nil {
				t.Fatal(err)
			}
			c := countEvents(evs)
			mu.Lock()
			want := clicks[s]
			mu.Unlock()
			if c["click"] >= want && c["delivery"] >= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: events %v, want %d clicks and a delivery", s, c, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // a doubled hit or event would land now
	dupDeliveries, totalClicks := 0, 0
	for _, s := range acc {
		ea, err := mn.events(nodes[0], rcpt(s))
		if err != nil {
			t.Fatal(err)
		}
		eb, err := mn.events(nodes[1], rcpt(s))
		if err != nil {
			t.Fatal(err)
		}
		ja, _ := json.Marshal(ea)
		jb, _ := json.Marshal(eb)
		if !bytes.Equal(ja, jb) {
			t.Errorf("%s: the two nodes answer differently:\n%s\n%s", s, ja, jb)
		}
		c := countEvents(ea)
		mu.Lock()
		want := clicks[s]
		mu.Unlock()
		totalClicks += want
		if c["attempt"] != 1 || c["delivery"] != 1 || c["click"] != want {
			t.Errorf("%s (answered 250): %v, want 1 attempt, 1 delivery, %d clicks", s, c, want)
		}
		if n, _ := sink.get(s); n > 1 {
			dupDeliveries++
		}
	}
	for _, s := range inc {
		if evs, _ := mn.events(nodes[0], rcpt(s)); len(evs) != 0 {
			t.Errorf("%s never got its final dot but has events %v", s, countEvents(evs))
		}
		if n, _ := sink.get(s); n != 0 {
			t.Errorf("%s never got its final dot but reached the upstream", s)
		}
	}
	for _, s := range amb {
		evs, _ := mn.events(nodes[1], rcpt(s))
		if c := countEvents(evs); c["attempt"] > 1 || c["delivery"] > 1 {
			t.Errorf("%s (no answer to its final dot): doubled events %v", s, c)
		}
	}
	if totalClicks < len(acc) {
		t.Errorf("only %d clicks for %d messages", totalClicks, len(acc))
	}
	t.Logf("accepted %d (all delivered, %d twice to the upstream after the kill, each with 1 attempt and 1 delivery event), incomplete %d, ambiguous %d; %d clicks answered 302, each stored once",
		len(acc), dupDeliveries, len(inc), len(amb), totalClicks)
	for _, p := range append(redirs, nodes[0].proc, nodes[1].proc) {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-p.done
		if p.err != nil {
			t.Errorf("exit after SIGTERM: %v", p.err)
		}
	}
}
