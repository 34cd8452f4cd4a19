package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/redirector/acmetest"
	"github.com/trackrelay/trackrelay/redirector/domaincheck"
	"github.com/trackrelay/trackrelay/rewrite"
)

// TestRedirectorACMEFromConfig runs the real `trackrelay redirector` with
// redirector.tls_listen and an [acme] section naming pebble (its
// directory, ca_file, storage): curl trusting pebble's root follows a
// tracked link over https:// to a 302, the HTTP listener still answers
// the same link and the domain check's challenge, and a restart reuses
// the stored certificate.
func TestRedirectorACMEFromConfig(t *testing.T) {
	if _, err := acmetest.Binary(); err != nil {
		t.Skip("pebble is not installed (make deps installs Debian's pebble)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	bin := binary(t)
	dns := acmetest.StartDNS(t)
	dns.SetA("link.test", "127.0.0.1")
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer relay.Close()

	dir := t.TempDir()
	key, _ := rewrite.GenerateKey(4)
	if err := os.WriteFile(filepath.Join(dir, "token.keys"), []byte(rewrite.FormatKey(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "trackrelay.toml")
	// The redirector's ports are held while pebble picks its own; another
	// process may still take one before the redirector binds it, and then
	// all is tried anew.
	var httpAddr, tlsAddr string
	var pb *acmetest.Pebble
	var p *bgProc
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
data_dir = "data"
[keys]
key_file = "token.keys"
[redirector]
listen = %q
tls_listen = %q
click_domains = ["link.test"]
admin_listen = "off"
ingest_url = %q
ingest_secret = "0123456789abcdef0123"
[acme]
directory = %q
ca_file = %q
email = "ops@relay.test"
storage = "shared-acme"
`, httpAddr, tlsAddr, relay.URL+"/internal/hits", pb.Directory, pb.CAFile)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var log string
		if p, log, err = tryRedirector(t, bin, cfgPath); err == nil {
			break
		}
		if !strings.Contains(log, "address already in use") || attempt == 2 {
			t.Fatalf("redirector: %v\n%s", err, log)
		}
		pb.Stop()
	}
	if out, _, err := runCmd(t, "", "check-config", cfgPath); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	codec, _ := rewrite.NewCodec(key)
	tok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: 1 << 40, HTTPS: true, Host: "shop.example.com"})
	get := func(scheme, addr, path string) (string, string) {
		t.Helper()
		out, err := exec.Command(curl, "-sS", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
			"--cacert", pb.RootFile, "--resolve", "link.test:"+strconv.Itoa(portOf(t, addr))+":127.0.0.1",
			scheme+"://link.test:"+strconv.Itoa(portOf(t, addr))+path).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v: %s", scheme, err, out)
		}
		code, loc, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
		return code, loc
	}

	if code, loc := get("https", tlsAddr, "/"+tok+"/shoes?c=red"); code != "302" || loc != "https://shop.example.com/shoes?c=red" {
		t.Fatalf("https: %s %q\npebble:\n%s", code, loc, pb.Log())
	}
	if code, loc := get("http", httpAddr, "/"+tok+"/shoes"); code != "302" || loc != "https://shop.example.com/shoes" {
		t.Errorf("http: %s %q", code, loc)
	}
	resp, err := http.Get("http://" + httpAddr + domaincheck.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ch, _ := domaincheck.NewChallenger(key)
	if !ch.Verify(strings.Split(httpAddr, ":")[0], string(body)) {
		t.Errorf("challenge %q does not verify", body)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "shared-acme")); err != nil || len(entries) == 0 {
		t.Errorf("acme.storage holds nothing: %v", err)
	}
	orders := pb.Orders()
	_ = p.cmd.Process.Signal(os.Interrupt)
	if err := p.wait(); err != nil {
		t.Errorf("redirector exit: %v", err)
	}
	startProc(t, bin, []string{"redirector"}, "redirector", "--config", cfgPath)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", tlsAddr, &tls.Config{ServerName: "link.test", RootCAs: pb.Roots})
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	c.Close()
	if n := pb.Orders(); n != orders {
		t.Errorf("the restart placed %d new orders", n-orders)
	}
	if !bytes.Contains([]byte(pb.Log()), []byte("link.test")) {
		t.Error("pebble never validated link.test")
	}
}

// bgProc is a process whose Wait is run by its own goroutine.
type bgProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *lockedBuf // its stderr, when kept
}

// wait returns the process's exit status once it has exited.
func (p *bgProc) wait() error {
	<-p.done
	return p.err
}

// tryRedirector starts `trackrelay redirector` and waits until it listens;
// it returns the error and the log when it exits first. The process is
// killed when the test ends.
func tryRedirector(t *testing.T, bin, cfgPath string) (*bgProc, string, error) {
	t.Helper()
	cmd := exec.Command(bin, "redirector", "--config", cfgPath)
	var log lockedBuf
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	deadline := time.After(30 * time.Second)
	for !strings.Contains(log.String(), "redirector listening") {
		select {
		case <-p.done:
			return nil, log.String(), fmt.Errorf("exited: %v", p.err)
		case <-deadline:
			return nil, log.String(), errors.New("did not start")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p, log.String(), nil
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}
