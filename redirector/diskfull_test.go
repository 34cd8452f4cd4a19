package redirector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// mountTmpfs mounts a tmpfs of size bytes on a new folder and unmounts it
// when the test ends. It skips the test where mounting is not allowed (not
// root, or no CAP_SYS_ADMIN in a container): the full disk must be real.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root with CAP_SYS_ADMIN, as CI has): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file at path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	for _, n := range []int{4096, 512, 1} { // the last partial blocks
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
}

// keepAliveClient sends requests one after another on one connection and
// reads each answer's status, Location, and whole body.
type keepAliveClient struct {
	c net.Conn
	r *bufio.Reader
}

func (k *keepAliveClient) get(t *testing.T, target, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+host+target, nil)
	req.Host = host
	if err := req.Write(k.c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.r, req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDiskFull fills a real (tmpfs) file system that holds the journal and
// the relay's store, under the hits' floor and then to the last byte: hits
// go on into the preallocated hit log while the relay's store and the
// journal's bbolt refuse to grow; once the log is full, clicks get 503 with
// Retry-After (never a 302), and /readyz (public and admin) fails. When
// space comes back, /readyz recovers, clicks get 302 again, and every hit
// that was answered 302 reaches the relay's store.
func TestDiskFull(t *testing.T) {
	for _, d := range []store.Durability{store.DurabilityProcess, store.DurabilityDisk} {
		t.Run(d.String(), func(t *testing.T) { testDiskFull(t, d) })
	}
}

func testDiskFull(t *testing.T, durability store.Durability) {
	dir := mountTmpfs(t, 32<<20)
	const floor = 4 << 20
	codec, _ := rewrite.NewCodec(testKeyNew)
	rs, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	reg := prometheus.NewRegistry()
	svc, err := Start(Options{
		Handler:     Config{Codec: codec, Domains: []string{"click.example.com"}, Registerer: reg},
		JournalPath: filepath.Join(dir, "journal", "journal.db"),
		Journal:     store.JournalOptions{Durability: durability, MinFree: floor},
		Listen:      "127.0.0.1:0", AdminListen: "127.0.0.1:0", Gatherer: reg,
		Sink:         CheckedSink(ReserveSink(SinkFunc(rs.IngestHits), dir, floor)),
		ShipInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	}()
	addr := svc.Addr().String()
	public, admin := "http://"+addr+"/readyz", "http://"+svc.AdminAddr().String()+"/readyz"
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := &keepAliveClient{c: conn, r: bufio.NewReader(conn)}
	tok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "shop.example.com"})
	long := strings.Repeat("p", 6000) // about 6 KB a hit: the 4 MB log fills in a few hundred
	redirected := map[string]bool{}
	click := func(n int) int {
		code, loc := client.get(t, fmt.Sprintf("/%s/%s?n=%d", tok, long, n), "click.example.com")
		switch code {
		case http.StatusFound:
			if !strings.HasSuffix(loc, fmt.Sprintf("?n=%d", n)) {
				t.Fatalf("click %d: Location %q", n, loc)
			}
			redirected[fmt.Sprint(n)] = true
		case http.StatusServiceUnavailable:
		default:
			t.Fatalf("click %d: %d", n, code)
		}
		return code
	}
	n := 0
	for ; n < 10; n++ {
		if click(n) != http.StatusFound {
			t.Fatalf("click %d before the disk filled: not a 302", n)
		}
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	if free, _ := store.FreeBytes(dir); free >= floor {
		t.Fatalf("filled, yet %d bytes free", free)
	}
	if c := status(t, public); c != http.StatusOK {
		t.Fatalf("readyz with the hit log still empty: %d", c)
	}
	// The log takes hits until it is full; then 503s, and /readyz fails.
	first503 := -1
	for ; n < 3000 && first503 < 0; n++ {
		if click(n) == http.StatusServiceUnavailable {
			first503 = n
		}
	}
	if first503 < 0 {
		t.Fatalf("3000 clicks on a full disk all answered 302")
	}
	if len(redirected) < 300 {
		t.Fatalf("only %d clicks redirected before the 503s: the log's reserve was not used", len(redirected))
	}
	for _, u := range []string{public, admin} {
		if c := status(t, u); c != http.StatusServiceUnavailable {
			t.Fatalf("%s while hits cannot be kept: %d", u, c)
		}
	}
	start := time.Now()
	for i := 0; i < 20; i++ { // answered at once, not after a wait
		if code := click(n); code != http.StatusServiceUnavailable {
			t.Fatalf("click %d while full: %d", n, code)
		}
		n++
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("20 refused clicks took %v", el)
	}
	if c := rsCount(t, rs); c > 10 {
		t.Fatalf("the relay stored %d hits below the floor", c)
	}
	// Space comes back.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for status(t, public) != http.StatusOK || status(t, admin) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("readyz did not recover once space was freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		if code := click(n); code != http.StatusFound {
			t.Fatalf("click %d after recovery: %d", n, code)
		}
		n++
	}
	// Every 302 is a hit at the relay.
	deadline = time.Now().Add(60 * time.Second)
	for {
		got := map[string]bool{}
		if err := rs.HitIDs(func(id string) {
			if h, ok, _ := rs.Hit(id); ok {
				if _, q, found := strings.Cut(h.URL, "?n="); found {
					got[q] = true
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		missing := 0
		for q := range redirected {
			if !got[q] {
				missing++
			}
		}
		if missing == 0 {
			t.Logf("%d clicks: %d answered 302, all stored; 503 from click %d on", n, len(redirected), first503)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d redirected clicks never reached the relay", missing, len(redirected))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func rsCount(t *testing.T, rs *store.Relay) int {
	t.Helper()
	n := 0
	if err := rs.HitIDs(func(string) { n++ }); err != nil {
		t.Fatal(err)
	}
	return n
}
