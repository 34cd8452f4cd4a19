package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/html"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

const crashSecret = "crash-test-ingest-secret-0123456789"

// buildBinary builds trackrelay once per test binary.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "trackrelay-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "trackrelay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// redirectorProc is one run of the real `trackrelay redirector` process.
type redirectorProc struct {
	cmd   *exec.Cmd
	addr  string            // the redirector's
	addrs map[string]string // component -> listening address
	done  chan struct{}     // closed when the process has exited
	err   error             // its exit status, once done is closed
}

var listenRE = regexp.MustCompile(`msg="([a-z]+) listening".* addr=(\S+)`)

func startRedirectorProc(t *testing.T, bin, cfgPath string) *redirectorProc {
	t.Helper()
	p := startProc(t, bin, []string{"redirector"}, "redirector", "--config", cfgPath, "--listen", "127.0.0.1:0")
	p.addr = p.addrs["redirector"]
	return p
}

// startProc runs the binary with args and waits until it has logged the
// listening address of every component in want.
func startProc(t *testing.T, bin string, want []string, args ...string) *redirectorProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &redirectorProc{cmd: cmd, done: make(chan struct{}), addrs: map[string]string{}}
	t.Cleanup(func() { // never leave a process behind, even on a failure
		_ = cmd.Process.Kill()
		<-p.done
	})
	addrc := make(chan [2]string, 8)
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logBuf.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrc <- [2]string{m[1], m[2]}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
		close(p.done)
	}()
	timeout := time.After(30 * time.Second)
	for {
		missing := false
		for _, w := range want {
			if p.addrs[w] == "" {
				missing = true
			}
		}
		if !missing {
			return p
		}
		select {
		case a := <-addrc:
			p.addrs[a[0]] = a[1]
		case <-p.done:
			logMu.Lock()
			defer logMu.Unlock()
			t.Fatalf("%s exited: %v\n%s", args[0], p.err, logBuf.String())
		case <-timeout:
			_ = cmd.Process.Kill()
			logMu.Lock()
			defer logMu.Unlock()
			t.Fatalf("%s did not start\n%s", args[0], logBuf.String())
		}
	}
}

// TestRedirectorCrash runs the real redirector process under load, kills it
// with SIGKILL at random moments and restarts it; every hit that was
// answered (302 or pixel) must reach the relay in the end, in either
// durability (in process durability the unflushed tail of the hit log is
// in the kernel, which a killed process does not lose).
func TestRedirectorCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary; skipped with -short")
	}
	for _, durability := range []string{"process", "disk"} {
		t.Run(durability, func(t *testing.T) { testRedirectorCrash(t, durability) })
	}
}

func testRedirectorCrash(t *testing.T, durability string) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, _ := rewrite.GenerateKey(3)
	if err := os.WriteFile(filepath.Join(dir, "token.keys"), []byte(rewrite.FormatKey(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The relay: a real store behind the real ingest handler.
	rs, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	ingest, err := relayIngestHandler(&config.Config{Redirector: config.Redirector{IngestSecret: crashSecret}}, rs, slog.New(slog.DiscardHandler))
	if err != nil || ingest == nil {
		t.Fatalf("relay ingest handler: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+ingestPath, ingest)
	relay := httptest.NewServer(mux)
	defer relay.Close()
	cfgPath := filepath.Join(dir, "trackrelay.toml")
	cfg := fmt.Sprintf(`[relay]
data_dir = "data"

[keys]
key_file = "token.keys"

[redirector]
click_domains = ["click.test"]
admin_listen = "off"
ingest_url = %q
ingest_secret = %q
ship_interval = "50ms"
durability = %q
journal = "journal/of/hits.db" # folders that do not exist yet
`, relay.URL+ingestPath, crashSecret, durability)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	codec, _ := rewrite.NewCodec(key)
	clickTok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: 1 << 40, HTTPS: true, Host: "shop.example.com"})
	pixelTok := codec.Encode(rewrite.Token{Kind: rewrite.KindPixel, MessageID: 1 << 40})

	var addr atomic.Value
	addr.Store("")
	var (
		mu    sync.Mutex
		acked = map[string]bool{} // the n of every answered hit
		seq   atomic.Int64
	)
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopLoad()
	client := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a := addr.Load().(string)
				if a == "" {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				n := fmt.Sprint(seq.Add(1))
				target, want := "/"+clickTok+"/p?n="+n, http.StatusFound
				if len(n)%2 == 0 && n[len(n)-1] == '0' {
					target, want = "/"+pixelTok, http.StatusOK
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+a+target, nil)
				req.Host = "click.test"
				req.Header.Set("User-Agent", "crash-test "+n) // pixels are told apart by UA
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == want {
					mu.Lock()
					acked[n] = true
					mu.Unlock()
				}
			}
		}()
	}
	const kills = 6
	for i := 0; i < kills; i++ {
		p := startRedirectorProc(t, bin, cfgPath)
		addr.Store(p.addr)
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		addr.Store("")
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
	}
	stopLoad()
	wg.Wait()
	// A last start ships whatever the killed runs left journaled.
	p := startRedirectorProc(t, bin, cfgPath)
	got := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = map[string]bool{}
		err := rs.HitIDs(func(id string) {
			h, ok, _ := rs.Hit(id)
			if !ok {
				return
			}
			if _, n, found := strings.Cut(h.URL, "?n="); found {
				got[n] = true
			} else if n, found := strings.CutPrefix(h.UserAgent, "crash-test "); found {
				got[n] = true
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for n := range acked {
			if !got[n] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d answered hits never reached the relay", missing, len(acked))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if p.err != nil {
		t.Fatalf("redirector exit after SIGTERM: %v", p.err)
	}
	if len(acked) < 100 {
		t.Fatalf("only %d hits answered: the load did not run", len(acked))
	}
	t.Logf("%s durability: %d kills; %d hits answered, all at the relay (%d stored, duplicates dropped by id)", durability, kills, len(acked), len(got))
}

// TestServeEndToEnd submits a message over SMTP to the real `trackrelay
// serve`, takes the delivered .eml, follows every tracked link and image
// through the real redirector to a local origin server, and finds the
// clicks and the open in the relay's logs with the right recipient.
func TestServeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary; skipped with -short")
	}
	bin, dir, cfgPath, cfgText := testDevConfig(t)
	cfgText += "\n[redirector]\nlisten = \"127.0.0.1:0\"\nship_interval = \"50ms\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}

	var (
		omu  sync.Mutex
		seen []string
	)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		omu.Lock()
		seen = append(seen, r.RequestURI)
		omu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	defer origin.Close()

	p := startProc(t, bin, []string{"smtp", "redirector"}, "serve", "--config", cfgPath)
	links := []string{"/products/shoes?color=red&size=42", "/caf%C3%A9/men%C3%BC?q=a%20b", "/a%2Fb//c;d"}
	var body strings.Builder
	body.WriteString("<html><body>")
	for _, l := range links {
		fmt.Fprintf(&body, `<a href="%s%s">link</a> `, origin.URL, l)
	}
	fmt.Fprintf(&body, `<img src="%s/img/logo.png?v=3"></body></html>`, origin.URL)
	msg := "From: shop@example.com\r\nTo: reader@example.org\r\nSubject: e2e\r\nMIME-Version: 1.0\r\n" +
		"x-smtpeter-tags: launch\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body.String() + "\r\n"
	sendPlain(t, p.addrs["smtp"], "shop@example.com", "reader@example.org", msg)

	// The delivered copy.
	eml := waitEML(t, dir)
	mr, err := mail.CreateReader(bytes.NewReader(eml))
	if err != nil {
		t.Fatal(err)
	}
	var htmlBody []byte
	for {
		part, err := mr.NextPart()
		if err != nil {
			break
		}
		if ct, _, _ := part.Header.(*mail.InlineHeader).ContentType(); ct == "text/html" {
			htmlBody, _ = io.ReadAll(part.Body)
		}
	}
	if htmlBody == nil {
		t.Fatalf("no HTML part in the delivered copy:\n%s", eml)
	}
	var tracked []string
	z := html.NewTokenizer(bytes.NewReader(htmlBody))
	for tt := z.Next(); tt != html.ErrorToken; tt = z.Next() {
		for {
			k, v, more := z.TagAttr()
			if (string(k) == "href" || string(k) == "src") && strings.HasPrefix(string(v), "http://click.test/") {
				tracked = append(tracked, string(v))
			}
			if !more {
				break
			}
		}
	}
	if len(tracked) != len(links)+2 { // the links, the image, the pixel
		t.Fatalf("tracked URLs %q in\n%s", tracked, htmlBody)
	}
	// Follow them as a mail client would: click.test is the redirector.
	raddr := p.addrs["redirector"]
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasPrefix(addr, "click.test:") {
				addr = raddr
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	for _, u := range tracked {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	omu.Lock()
	got := strings.Join(seen, " ")
	omu.Unlock()
	for _, l := range append(links, "/img/logo.png?v=3") {
		if !strings.Contains(" "+got+" ", " "+l+" ") {
			t.Errorf("origin never saw %q (saw %s)", l, got)
		}
	}

	// A graceful stop ships what is left; then the relay's logs tell.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if p.err != nil {
		t.Fatalf("serve exit: %v", p.err)
	}
	rs, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	logs := map[string]int{}
	for ev, err := range rs.EventsByRecipient(context.Background(), "dev", "reader@example.org", time.Time{}, time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.Tags) != 1 || ev.Tags[0] != "launch" {
			t.Errorf("%s event tags %q", ev.Log, ev.Tags)
		}
		logs[ev.Log]++
		if ev.Log == store.LogClicks && !strings.HasPrefix(ev.Value("url"), origin.URL+"/") {
			t.Errorf("click url %q", ev.Value("url"))
		}
	}
	if logs[store.LogClicks] != len(links) || logs[store.LogOpens] != 2 {
		t.Fatalf("relay logs for the recipient: %v", logs)
	}
	c, err := rs.HitCounts(context.Background(), "dev")
	if err != nil || c.UniqueOpens != 1 || c.UniqueClicks != 1 || c.Clicks < uint64(len(links)) {
		t.Fatalf("counts %+v %v", c, err)
	}
}

// sendPlain submits msg without TLS from loopback (a trusted network in
// the dev config).
func sendPlain(t *testing.T, addr, from, to, msg string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("DATA end: %v", err)
	}
	_ = c.Quit()
}
