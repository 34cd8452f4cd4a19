package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// -screenshots DIR (or TRACKRELAY_SCREENSHOTS=DIR) makes the browser test
// write a PNG of every page it opens there; CI leaves it unset, so no file
// churns.
var screenshots = flag.String("screenshots", os.Getenv("TRACKRELAY_SCREENSHOTS"), "write the dashboard's screenshots to this folder")

func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH: install the Debian package chromium (make deps) to run the browser test")
	return ""
}

// sendDev submits one HTML message over SMTP (plaintext on loopback, as the
// dev config allows) with a username and password.
func sendDev(t *testing.T, addr, user, pass, subject string, to ...string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatalf("auth %s: %v", user, err)
	}
	msg := "From: Shop <news@shop.example>\r\nTo: " + strings.Join(to, ", ") + "\r\nSubject: " + subject + "\r\nX-Smtpeter-Tags: launch\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n\r\n<p>New: <a href=\"https://shop.example/new?ref=mail\">the collection</a>, " +
		"<a href=\"https://shop.example/sale\">the sale</a>, <a href=\"https://shop.example/guides/sizes\">sizes</a>, " +
		"<a href=\"https://stores.shop.example/near-you\">stores</a>, <a href=\"https://shop.example/account/preferences\">preferences</a>" +
		"</p><img src=\"https://cdn.shop.example/logo.png\" alt=\"\">\r\n"
	if err := c.SendMail("news@shop.example", to, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
}

// outboxFor waits for the copy delivered to rcpt in the dev outbox.
func outboxFor(t *testing.T, dir, rcpt string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, []byte("To: "+rcpt)) {
				return string(bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("=\r\n"), nil), []byte("=3D"), []byte("=")))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no copy for %s in the outbox", rcpt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDashboardBrowser drives headless Chromium through the dashboard of a
// real "serve --dev": log in, open every page, follow a message's
// timeline, make a credential, turn its click tracking off and on, and
// send mail with it each time to see the change take effect at once.
func TestDashboardBrowser(t *testing.T) {
	chromium := findChromium(t)
	data := t.TempDir()
	httpAddr := freeAddr(t)
	p := startRelay(t, data, "--http-addr", httpAddr)
	outbox := filepath.Join(data, "outbox")
	base := "http://" + p.apiAddr
	_, rport, _ := strings.Cut(httpAddr, ":")
	clickHost := "localhost:" + rport

	// Mail with the dev credential, clicks and opens through the
	// redirector by people and by machines, so the pages have something
	// to show.
	readers := []string{"ann", "bob", "cy", "dana", "eve", "finn", "gus", "hana", "ivan", "jo", "kim", "lee"}
	for i := 0; i < len(readers); i += 4 {
		var to []string
		for _, r := range readers[i : i+4] {
			to = append(to, r+"@example.net")
		}
		sendDev(t, p.smtpAddr, "dev", "dev", fmt.Sprintf("Launch %d", i/4+1), to...)
	}
	tracked := regexp.MustCompile(`http://` + regexp.QuoteMeta(clickHost) + `/[^"'\s<>]+`)
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	hit := func(method, u, ua string) {
		req, _ := http.NewRequest(method, u, nil)
		req.Header.Set("User-Agent", ua)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	const person = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
	files := waitOutbox(t, outbox, len(readers))
	sort.Strings(files)
	for i, f := range files {
		b, _ := os.ReadFile(f)
		links := tracked.FindAllString(string(bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("=\r\n"), nil), []byte("=3D"), []byte("="))), -1)
		if len(links) != 7 { // five links, the image, the pixel
			t.Fatalf("tracked links in %s: %v", f, links)
		}
		for j := 0; j < 1+i%4; j++ {
			hit(http.MethodGet, links[j], person)
		}
		if i%5 == 0 {
			hit(http.MethodGet, links[4], person)
		}
		if i%2 == 0 {
			hit(http.MethodGet, links[6], person) // the pixel
		}
		if i%3 == 0 {
			hit(http.MethodHead, links[0], person) // a link checker: a machine
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("chromium would not start: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 6*time.Minute)
	defer cancelT()
	// shot takes the whole page; a name ending in "-top" takes what the
	// window shows (for the README).
	shot := func(name string) {
		t.Helper()
		if *screenshots == "" {
			return
		}
		act := chromedp.FullScreenshot(100)
		if strings.HasSuffix(name, "-top") {
			act = chromedp.CaptureScreenshot()
		}
		png, err := chromedp.Run(ctx, act)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.MkdirAll(*screenshots, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(*screenshots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(what string, acts ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, acts...); err != nil {
			html, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.OuterHTML(chromedp.CSS("html")))
			loc, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Location())
			t.Fatalf("%s: %v\nat %s:\n%s\nrelay:\n%s", what, err, loc, html, p.stderr.String())
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}

	// clickLoad clicks sel and waits for the page it leads to (a new
	// document, loaded), so no check reads the page before it.
	clickLoad := func(what, sel string, search bool) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__stale = 1`)); err != nil {
			t.Fatal(err)
		}
		if search {
			run(what, chromedp.Click(chromedp.Search(sel)))
		} else {
			run(what, chromedp.Click(chromedp.CSS(sel)))
		}
		// Evaluated again and again: a navigation ends each evaluation
		// that it overlaps.
		deadline := time.Now().Add(60 * time.Second)
		for {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__stale === undefined && document.readyState === "complete"`))
			if err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the next page did not load: %v", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Every page without a session leads to the login page.
	run("open the dashboard", chromedp.Navigate(base+"/links"), chromedp.WaitVisible(chromedp.CSS(`input[name=login]`)))
	shot("login")
	run("log in", chromedp.SendKeys(chromedp.CSS(`input[name=login]`), "dev"), chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "dev"),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`table.links`)))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(loc, "/links") {
		t.Fatalf("after the login: %s, want the page asked for", loc)
	}
	// The operator picks the dev account.
	run("pick dev", chromedp.SetValue(chromedp.ID("pick-account"), "dev"))
	clickLoad("show dev", `.picker button`, false)
	if !strings.Contains(text(`main .head`), "account dev") {
		t.Fatalf("links page after picking dev: %q", text(`main .head`))
	}
	shot("links")
	shot("links-top")
	run("overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`.cards`)))
	if got := text(`.kpi:nth-child(2) .v`); got != fmt.Sprint(len(readers)) {
		t.Errorf("overview delivered %q, want %d", got, len(readers))
	}
	shot("overview")
	run("links", chromedp.Navigate(base+"/links"), chromedp.WaitVisible(chromedp.CSS(`table.links`)))
	clickLoad("link detail", `table.links td.url a`, false)
	shot("link")
	// A message's timeline, from the search.
	clickLoad("messages", `nav a[href="/messages"]`, false)
	run("search", chromedp.SendKeys(chromedp.CSS(`input[name=recipient]`), "cy@example.net"))
	clickLoad("search", `form.search button`, false)
	shot("messages")
	clickLoad("timeline", `main table a[href^="/messages/"]`, false)
	tl := text(`ol.timeline`)
	for _, want := range []string{"Accepted for cy@example.net", "Delivered to cy@example.net", " clicked https://shop.example/", "trackclicks on"} {
		if !strings.Contains(tl, want) {
			t.Errorf("timeline lacks %q:\n%s", want, tl)
		}
	}
	run("open a log record", chromedp.Click(chromedp.CSS(`ol.timeline details summary`)), chromedp.WaitVisible(chromedp.CSS(`table.fields`)))
	shot("message")
	run("a taller window", chromedp.EmulateViewport(1280, 1240))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.scrollTo(0, 0), true`)); err != nil {
		t.Fatal(err)
	}
	shot("message-top")
	run("the window back", chromedp.EmulateReset())
	clickLoad("logs", `nav a[href="/logs"]`, false)
	shot("logs")
	clickLoad("people", `nav a[href="/users"]`, false)
	shot("people")
	run("password", chromedp.Navigate(base+"/password"), chromedp.WaitVisible(chromedp.CSS(`input[name=current]`)))
	shot("password")

	// A new credential: its password is shown once.
	run("credentials", chromedp.Navigate(base+"/credentials"), chromedp.WaitVisible(chromedp.CSS(`details.create`)),
		chromedp.Click(chromedp.CSS(`details.create summary`)),
		chromedp.SendKeys(chromedp.CSS(`form[action="/credentials"] input[name=username]`), "news"))
	clickLoad("create a credential", `form[action="/credentials"] button`, false)
	secret := text(`#secret`)
	if len(secret) < 20 {
		t.Fatalf("secret %q", secret)
	}
	shot("credentials")
	sendDev(t, p.smtpAddr, "news", secret, "With tracking", "first@example.net")
	if m := outboxFor(t, outbox, "first@example.net"); !tracked.MatchString(m) {
		t.Fatalf("a new credential with click tracking sent untracked links:\n%s", m)
	}
	// Click tracking off: the next session sends the links as they are.
	toggle := func(on bool) {
		t.Helper()
		box := `input[aria-label="Track clicks for news"]`
		checked := func() bool {
			t.Helper()
			v, err := chromedp.Run(ctx, chromedp.JavascriptAttribute[bool](chromedp.CSS(box), "checked"))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		run("read the toggle", chromedp.Navigate(base+"/credentials"), chromedp.WaitVisible(chromedp.CSS(box)))
		if checked() != on {
			run("toggle", chromedp.Click(chromedp.CSS(box)))
		}
		clickLoad("save", `//tr[th[contains(., "news")]]//button[@value="save"]`, true)
		if got := checked(); got != on {
			t.Fatalf("after saving, track clicks is %v, want %v", got, on)
		}
	}
	toggle(false)
	sendDev(t, p.smtpAddr, "news", secret, "Without tracking", "second@example.net")
	m := outboxFor(t, outbox, "second@example.net")
	if tracked.MatchString(strings.Split(m, "<img")[0]) || !strings.Contains(m, `href="https://shop.example/new?ref=mail"`) {
		t.Fatalf("click tracking was turned off, but:\n%s", m)
	}
	if !tracked.MatchString(m) {
		t.Fatalf("open tracking is still on, but no tracked image or pixel:\n%s", m)
	}
	toggle(true)
	sendDev(t, p.smtpAddr, "news", secret, "Tracking again", "third@example.net")
	if m := outboxFor(t, outbox, "third@example.net"); strings.Contains(m, `href="https://shop.example/new?ref=mail"`) {
		t.Fatalf("click tracking was turned on again, but:\n%s", m)
	}

	// On a phone.
	run("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile), chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`.cards`)))
	shot("overview-phone")
	run("phone links", chromedp.Navigate(base+"/links"), chromedp.WaitVisible(chromedp.CSS(`table.links`)))
	shot("links-phone")
	// Log out: the pages are gone.
	run("desktop", chromedp.EmulateReset(), chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`.who`)))
	clickLoad("log out", `.who form[action="/logout"] button`, false)
	run("after the logout", chromedp.Navigate(base+"/credentials"), chromedp.WaitVisible(chromedp.CSS(`input[name=login]`)))
}

// TestUserCommand adds the first operator to a fresh install's store with
// the relay stopped, logs in with it once the relay runs, and manages
// users through the running relay.
func TestUserCommand(t *testing.T) {
	data := t.TempDir()
	if _, _, err := ensureDevConfig(data); err != nil {
		t.Fatal(err)
	}
	user := func(stdin string, args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"user"}, args...), stdio{strings.NewReader(stdin), &out, &errb})
		return out.String() + errb.String(), err
	}
	devArgs := []string{"--dev", "--data", data}
	out, err := user("first operator pw\n", append([]string{"add", "boss@example.com", "--operator"}, devArgs...)...)
	if err != nil || !strings.Contains(out, "in the store") {
		t.Fatalf("add with the relay stopped: %v\n%s", err, out)
	}
	if out, err := user("short\n", append([]string{"add", "x@example.com", "--account", "dev"}, devArgs...)...); err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("a short password: %v %s", err, out)
	}
	if _, err := user("", append([]string{"add", "y@example.com"}, devArgs...)...); err == nil {
		t.Fatal("add without --account or --operator worked")
	}

	p := startRelay(t, data)
	login := func(name, pw string) int {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get("http://" + p.apiAddr + "/login")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		tok := regexp.MustCompile(`name="token" value="([^"]+)"`).FindStringSubmatch(buf.String())[1]
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.apiAddr+"/login", strings.NewReader(url.Values{"token": {tok}, "login": {name}, "password": {pw}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := login("boss@example.com", "first operator pw"); st != http.StatusSeeOther {
		t.Fatalf("the first operator's login: %d", st)
	}
	if st := login("dev", "dev"); st != http.StatusSeeOther {
		t.Fatalf("the dev operator's login: %d", st)
	}
	// While the relay runs: through its API, with the local key.
	out, err = user("ann password\n", append([]string{"add", "--account", "dev", "Ann@Example.com"}, devArgs...)...)
	if err != nil || !strings.Contains(out, "through the running relay") || !strings.Contains(out, "ann@example.com for account dev") {
		t.Fatalf("add while running: %v\n%s", err, out)
	}
	if st := login("ann@example.com", "ann password"); st != http.StatusSeeOther {
		t.Fatalf("ann's login: %d", st)
	}
	out, err = user("", append([]string{"list"}, devArgs...)...)
	if err != nil || !regexp.MustCompile(`ann@example.com +dev +active`).MatchString(out) || !strings.Contains(out, "boss@example.com") || !strings.Contains(out, "(operator)") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err := user("new ann password\n", append([]string{"passwd", "ann@example.com"}, devArgs...)...); err != nil {
		t.Fatalf("passwd: %v %s", err, out)
	}
	if st := login("ann@example.com", "ann password"); st != http.StatusUnauthorized {
		t.Fatalf("the old password after passwd: %d", st)
	}
	if st := login("ann@example.com", "new ann password"); st != http.StatusSeeOther {
		t.Fatalf("the new password: %d", st)
	}
	if out, err := user("", append([]string{"remove", "ann@example.com"}, devArgs...)...); err != nil {
		t.Fatalf("remove: %v %s", err, out)
	}
	if st := login("ann@example.com", "new ann password"); st != http.StatusUnauthorized {
		t.Fatalf("a removed user's login: %d", st)
	}
	if _, err := user("", append([]string{"remove", "nobody@example.com"}, devArgs...)...); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("removing nobody: %v", err)
	}
	// The admin socket the command used is its owner's alone.
	if fi, err := os.Stat(adminSocketPath(data)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", err, fi)
	}
}
