package redirector

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// origin is the site tracked links lead back to: it records the request
// target of every request exactly as it arrived.
type origin struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

// png1x1 is a 1×1 PNG.
var png1x1 = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")

func newOrigin(t *testing.T) *origin {
	o := &origin{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/favicon.ico" {
			http.NotFound(w, r) // the browser's own request, not a link's
			return
		}
		o.mu.Lock()
		o.seen = append(o.seen, r.RequestURI)
		o.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/img/") {
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(png1x1)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>landed</title><p id=landed>landed</p>")
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// lastPage returns the newest request that was not for an image.
func (o *origin) lastPage() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.seen) - 1; i >= 0; i-- {
		if !strings.HasPrefix(o.seen[i], "/img/") {
			return o.seen[i]
		}
	}
	return ""
}

func (o *origin) saw(uri string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.seen {
		if s == uri {
			return true
		}
	}
	return false
}

// TestBrowser drives headless Chromium: it opens a mail whose links and
// images went through the real rewriter, loads the images, clicks links
// with odd paths, non-ASCII and spaces, and checks that the origin sees
// the same request target the browser sends for the original link, and
// that the relay's logs show the clicks and the open for the recipient.
func TestBrowser(t *testing.T) {
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		t.Skip("no chromium on PATH: install the Debian package chromium (make deps) to run the browser test")
	}
	org := newOrigin(t)
	_, oport, _ := net.SplitHostPort(org.srv.Listener.Addr().String())
	e := newEnv(t, func(c *Config) { c.Domains = []string{"localhost"} })
	_, rport, _ := net.SplitHostPort(e.addr)
	re := newRelayEnv(t, 0, 0)

	// The message copy the relay knows, with its recipient and tags.
	copyID := freshID()
	m := &store.Message{ID: freshID(), SpoolPath: "m", Recipients: []string{"reader@example.org"}, Created: time.Now().UTC(), Remaining: 1}
	cp := &store.Copy{ID: copyID, MessageID: m.ID, Account: "shop", Recipient: "reader@example.org", Tags: []string{"launch"}, State: store.CopyQueued, Created: m.Created}
	if err := re.store.AddMessage(context.Background(), m, []*store.Copy{cp}, nil); err != nil {
		t.Fatal(err)
	}

	base := "http://127.0.0.1:" + oport
	links := []string{
		base + "/odd path/ä ö/x%2Fy;p=1?q=ä b&e=%E2%9C%93&plus=a+b",
		base + "/plain/page?color=red&size=42",
		base + "/ünïcode/日本語?name=José",
		base + "/a//b/./c/../d?x=",
	}
	var src strings.Builder
	src.WriteString(`<!doctype html><html><head><meta charset="utf-8"></head><body>`)
	for i, l := range links {
		fmt.Fprintf(&src, `<p><a id="l%d" href="%s">link %d</a></p>`, i, l, i)
	}
	fmt.Fprintf(&src, `<img id="img" src="%s/img/logo.png?v=2" width="1" height="1"></body></html>`, base)
	var mail bytes.Buffer
	tr := rewrite.New(rewrite.Config{Clicks: true, Opens: true, Codec: e.codec, Scheme: "http", Domain: "localhost:" + rport, MessageID: copyID})
	if err := tr.HTML(&mail, strings.NewReader(src.String())); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mail.String(), "http://localhost:"+rport+"/") {
		t.Fatalf("the rewriter tracked nothing:\n%s", mail.String())
	}
	mailSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(mail.Bytes())
	}))
	defer mailSrv.Close()
	// The same links untracked: what this browser sends for each.
	plainSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(src.String()))
	}))
	defer plainSrv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first call starts the browser and must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("chromium would not start: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	want := make([]string, len(links))
	for i := range links {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(plainSrv.URL),
			chromedp.Click(chromedp.CSS(fmt.Sprintf("#l%d", i))),
			chromedp.WaitVisible(chromedp.CSS("#landed")),
		); err != nil {
			t.Fatalf("plain link %d: %v", i, err)
		}
		want[i] = org.lastPage()
		t.Logf("link %d: browser sends %q", i, want[i])
		if want[i] == "" || (i > 0 && want[i] == want[i-1]) {
			t.Fatalf("link %d: the origin did not see the click (%q)", i, want[i])
		}
	}
	for i := range links {
		if err := chromedp.Do(ctx, chromedp.Navigate(mailSrv.URL)); err != nil {
			t.Fatalf("mail page: %v", err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("images did not load through the redirector: %v", err)
		}
		if err := chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(fmt.Sprintf("#l%d", i))),
			chromedp.WaitVisible(chromedp.CSS("#landed")),
		); err != nil {
			t.Fatalf("tracked link %d: %v", i, err)
		}
		if got := org.lastPage(); got != want[i] {
			t.Errorf("link %d: origin saw %q through the redirector, %q directly", i, got, want[i])
		}
	}
	if !org.saw("/img/logo.png?v=2") {
		t.Error("the tracked image never reached the origin")
	}

	// The journal holds the clicks and the opens ...
	hits := e.pending()
	kinds := map[string]int{}
	for _, h := range hits {
		kinds[h.Kind]++
		if h.MessageID != copyID {
			t.Errorf("hit for copy %x, want %x", h.MessageID, copyID)
		}
		if h.Kind == "click" && !strings.HasPrefix(h.URL, base+"/") {
			t.Errorf("click URL %q", h.URL)
		}
	}
	// Every link followed is journaled (a browser under load may ask for
	// one twice: each request is a hit).
	if kinds["click"] < len(links) || kinds["image"] < 1 || kinds["pixel"] < 1 {
		t.Fatalf("journaled %v", kinds)
	}
	// ... and once shipped, the relay's logs show them for the recipient.
	sh, err := NewShipper(ShipperConfig{Journal: e.journal, Sink: &HTTPSink{URL: re.srv.URL, Secret: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := sh.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	for _, log := range []string{store.LogClicks, store.LogOpens} {
		n := 0
		for ev, err := range re.store.EventsByRecipient(context.Background(), "shop", "reader@example.org", time.Time{}, time.Time{}) {
			if err != nil {
				t.Fatal(err)
			}
			if ev.Log == log && ev.ID == copyID && len(ev.Tags) == 1 && ev.Tags[0] == "launch" {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no %s event for the recipient", log)
		}
	}
	c, _ := re.store.HitCounts(context.Background(), "shop")
	// One copy: clicked (once per copy in the unique figure) and opened.
	if c.Clicks != uint64(kinds["click"]) || c.UniqueClicks != 1 || c.UniqueOpens != 1 {
		t.Errorf("counts %+v", c)
	}
	t.Logf("origin saw %d requests; %d hits %v", len(org.seen), len(hits), kinds)
}
