package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/redirector/acmetest"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// TestE2EClickDomainHTTPS is issue 15's story on the real binary, with a
// real ACME server (pebble, validating for real) and a DNS server both it
// and the relay use: an account adds its own click domain, the check
// fails and says there is no record, the record is made, the check
// passes; mail sent with the account's credential then carries https
// links on that domain, which curl (trusting pebble's root) follows to the
// origin; a hostname nobody verified gets no certificate and no redirect.
func TestE2EClickDomainHTTPS(t *testing.T) {
	if _, err := acmetest.Binary(); err != nil {
		t.Skip("pebble is not installed (make deps installs Debian's pebble)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	bin := binary(t)
	dns := acmetest.StartDNS(t)
	dns.SetA("track.test", "127.0.0.1")
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "the shop")
	}))
	defer origin.Close()

	dir := t.TempDir()
	key, _ := rewrite.GenerateKey(7)
	if err := os.WriteFile(filepath.Join(dir, "token.keys"), []byte(rewrite.FormatKey(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("secret-1"), bcrypt.MinCost)
	// The account's own credential, made at run time (here: straight in
	// the store, before the relay holds it), wanting links on its domain.
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenRelay(filepath.Join(data, "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(context.Background(), st, &store.Credential{Username: "shop-app", Account: "shop",
		PasswordHash: string(hash), Clicks: true, Opens: true, ClickDomain: "link.shop.test", Scheme: "https"}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	smtpAddr, apiAddr := freeAddr(t), freeAddr(t)
	var httpAddr, tlsAddr string
	var pb *acmetest.Pebble
	cfgPath := filepath.Join(dir, "trackrelay.toml")
	var relay *bgProc
	for attempt := 0; ; attempt++ {
		var held [2]net.Listener
		for i := range held {
			if held[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
		}
		httpAddr, tlsAddr = held[0].Addr().String(), held[1].Addr().String()
		pb = acmetest.StartPebble(t, acmetest.PebbleOptions{DNS: dns.Addr, HTTPPort: portOf(t, httpAddr), TLSPort: portOf(t, tlsAddr)})
		held[0].Close()
		held[1].Close()
		cfg := fmt.Sprintf(`[relay]
hostname = "relay.test"
data_dir = "data"

[smtp]
allow_plaintext_loopback = true
[[smtp.listeners]]
addr = %q
mode = "plain"

[[accounts]]
name = "shop"

[[upstreams]]
name = "outbox"
folder = "outbox"

[keys]
key_file = "token.keys"

[api]
addr = %q

[redirector]
listen = %q
tls_listen = %q
click_domains = ["track.test"]
admin_listen = "off"

[acme]
directory = %q
ca_file = %q
email = "ops@relay.test"

[domains]
target = "track.test"
resolver = %q
check_port = %d
`, smtpAddr, apiAddr, httpAddr, tlsAddr, pb.Directory, pb.CAFile, dns.Addr, portOf(t, httpAddr))
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var log string
		if relay, log, err = tryServe(t, bin, cfgPath, apiAddr); err == nil {
			break
		}
		if !strings.Contains(log, "address already in use") || attempt == 2 {
			t.Fatalf("serve: %v\n%s", err, log)
		}
		pb.Stop()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", relay.log.String())
		}
	})

	// Add the domain: the record to make is printed; the check fails
	// with the reason, then passes once the record exists.
	out, _, err := runCmd(t, "", "domains", "add", "link.shop.test", "--account", "shop", "--config", cfgPath)
	if err != nil || !strings.Contains(out, "link.shop.test. 3600 IN CNAME track.test.") {
		t.Fatalf("domains add: %q %v", out, err)
	}
	out, _, err = runCmd(t, "", "domains", "check", "link.shop.test", "--config", cfgPath)
	if err == nil || !strings.Contains(strings.ToLower(out), "no") || !strings.Contains(out, "CNAME") {
		t.Fatalf("check before the record: %q %v", out, err)
	}
	dns.SetCNAME("link.shop.test", "track.test")
	out, _, err = runCmd(t, "", "domains", "check", "link.shop.test", "--config", cfgPath)
	if err != nil || !strings.Contains(out, "verified") {
		t.Fatalf("check after the record: %q %v", out, err)
	}

	// Mail from the account's credential: its links are on its domain,
	// over https.
	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "shop-app", "secret-1")); err != nil {
		t.Fatal(err)
	}
	body := "Subject: sale\r\nFrom: shop@shop.test\r\nContent-Type: text/html\r\n\r\n<a href=\"" + origin.URL + "/sale?x=1\">sale</a>\r\n"
	if err := c.SendMail("shop@shop.test", []string{"reader@example.net"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	files := waitOutbox(t, filepath.Join(dir, "outbox"), 1)
	eml, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`https://link\.shop\.test/[^"'\s<>]+`).FindString(string(eml))
	if link == "" {
		t.Fatalf("no https link on link.shop.test in the delivered copy:\n%s", eml)
	}
	tlsPort := strconv.Itoa(portOf(t, tlsAddr))
	follow := func(name, u string) (string, error) {
		out, err := exec.Command(curl, "-sS", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
			"--cacert", pb.RootFile, "--connect-to", name+":443:127.0.0.1:"+tlsPort, u).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	got, err := follow("link.shop.test", link)
	if err != nil || got != "302 "+origin.URL+"/sale?x=1" {
		t.Fatalf("https click: %q %v\npebble:\n%s", got, err, pb.Log())
	}
	if pb.Validations("link.shop.test") == 0 {
		t.Error("pebble validated nothing for link.shop.test")
	}
	// A name that points here but nobody verified: no certificate, no
	// redirect.
	dns.SetCNAME("stranger.test", "track.test")
	orders := pb.Orders()
	strangerLink := strings.Replace(link, "link.shop.test", "stranger.test", 1)
	if got, err := follow("stranger.test", strangerLink); err == nil {
		t.Fatalf("an unverified name got an answer over https: %q", got)
	}
	if n := pb.Orders(); n != orders {
		t.Errorf("an unverified name made %d orders", n-orders)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+strings.TrimPrefix(strangerLink, "https://stranger.test"), nil)
	req.Host = "stranger.test"
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unverified name over http: %d, want 404", resp.StatusCode)
	}
}

// tryServe starts `trackrelay serve --config` and waits until it is
// ready; it returns the error and the log when it exits first. The process
// is killed when the test ends.
func tryServe(t *testing.T, bin, cfgPath, apiAddr string) (*bgProc, string, error) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	log := &lockedBuf{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &bgProc{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	deadline := time.After(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + apiAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, log.String(), nil
			}
		}
		select {
		case <-p.done:
			return nil, log.String(), fmt.Errorf("exited: %v", p.err)
		case <-deadline:
			return nil, log.String(), fmt.Errorf("not ready")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
