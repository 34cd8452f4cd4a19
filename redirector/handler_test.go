package redirector

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

func TestClickRedirect(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		tok    rewrite.Token
		target string // after "/<token>"
		want   string // Location after scheme://authority
	}{
		{"plain", click("shop.example.com"), "/products/shoes?color=red", "/products/shoes?color=red"},
		{"no path", click("shop.example.com"), "", "/"},
		{"slash", click("shop.example.com"), "/", "/"},
		{"query only", click("shop.example.com"), "?a=1&b=%20c", "/?a=1&b=%20c"},
		{"encoded slash kept", click("shop.example.com"), "/a%2Fb/c%2f", "/a%2Fb/c%2f"},
		{"spaces and utf8 as sent", click("shop.example.com"), "/caf%C3%A9%20menu?q=%E2%9C%93+x", "/caf%C3%A9%20menu?q=%E2%9C%93+x"},
		{"odd chars", click("shop.example.com"), "/a;b=c/@x/!$&'()*+,=:~", "/a;b=c/@x/!$&'()*+,=:~"},
		{"double slash stays path", click("shop.example.com"), "//evil.example/x", "//evil.example/x"},
		{"encoded dots untouched", click("shop.example.com"), "/%2e%2e/%2E", "/%2e%2e/%2E"},
		{"empty query mark", click("shop.example.com"), "/p?", "/p"},
		// What the original link had, the browser sends and the reader
		// gets: the redirector does not judge the page's own URLs.
		{"lone percent kept", click("shop.example.com"), "/100%/x?q=5%", "/100%/x?q=5%"},
		{"long query", click("shop.example.com"), "/p?" + strings.Repeat("k=v&", 500), "/p?" + strings.Repeat("k=v&", 500)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get("/" + e.tok(tc.tok) + tc.target)
			if r.code != http.StatusFound {
				t.Fatalf("code %d, body %q", r.code, r.body)
			}
			if want := "https://shop.example.com" + tc.want; r.location != want {
				t.Fatalf("Location\n got %q\nwant %q", r.location, want)
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			h := e.lastHit()
			if h.URL != r.location || h.Kind != "click" || h.MessageID != tc.tok.MessageID || h.Position != 3 {
				t.Errorf("journaled %+v", h)
			}
		})
	}
}

func TestLocationAuthority(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		tok  rewrite.Token
		want string
	}{
		{"http with port", rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), Host: "shop.example.com", Port: 8080}, "http://shop.example.com:8080/x"},
		{"https default", rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "shop.example.com"}, "https://shop.example.com/x"},
		{"ipv6", rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "2001:db8::1", Port: 8443}, "https://[2001:db8::1]:8443/x"},
		{"ipv4", rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), Host: "192.0.2.7"}, "http://192.0.2.7/x"},
		{"idn to punycode", rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "bücher.example"}, "https://xn--bcher-kva.example/x"},
		{"idn upper case", rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "BÜCHER.example"}, "https://xn--bcher-kva.example/x"},
		{"image", rewrite.Token{Kind: rewrite.KindImage, MessageID: freshID(), HTTPS: true, Host: "cdn.example.com"}, "https://cdn.example.com/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get("/" + e.tok(tc.tok) + "/x")
			if r.code != http.StatusFound || r.location != tc.want {
				t.Fatalf("got %d %q, want 302 %q", r.code, r.location, tc.want)
			}
			if u, err := url.Parse(r.location); err != nil || u.Host == "" {
				t.Fatalf("Location does not parse: %v", err)
			}
		})
	}
}

// TestNoOpenRedirect sends, with a valid token, every trick that might move
// the browser to another host; the Location's host must stay the token's.
func TestNoOpenRedirect(t *testing.T) {
	e := newEnv(t)
	tok := e.tok(click("shop.example.com"))
	rests := []string{
		"//evil.example", "//evil.example/", "///evil.example", "/\\evil.example", "/\\\\evil.example",
		"/%2F%2Fevil.example", "/%5C%5Cevil.example", "/@evil.example", "/:@evil.example",
		"/%0d%0aLocation:%20http://evil.example", "/.%2e/.%2e//evil.example", "/%09/evil.example",
		"/x?//evil.example", "/x?@evil.example", "/;@evil.example", "/https://evil.example",
		"/%E3%80%82evil.example", "/\x7fevil",
	}
	for _, rest := range rests {
		t.Run(rest, func(t *testing.T) {
			r := e.get("/" + tok + rest)
			if r.code == http.StatusBadRequest {
				return // the server refused the request line: no redirect at all
			}
			if r.code != http.StatusFound {
				t.Fatalf("code %d", r.code)
			}
			assertSafeLocation(t, r.location, "https", "shop.example.com")
		})
	}
}

// assertSafeLocation checks a Location as a browser would read it.
func assertSafeLocation(t *testing.T, loc, scheme, host string) {
	t.Helper()
	prefix := scheme + "://" + host + "/"
	if !strings.HasPrefix(loc, prefix) {
		t.Fatalf("Location %q does not start with %q", loc, prefix)
	}
	for i := 0; i < len(loc); i++ {
		if c := loc[i]; c <= ' ' || c >= 0x7f || c == '\\' || c == '#' {
			t.Fatalf("Location %q has byte %#x", loc, c)
		}
	}
	// A '%' that starts no escape passes through as the browser sent it
	// (see TestClickRedirect); url.Parse would refuse it, so it is made
	// an escape for this check only.
	var fixed strings.Builder
	for i := 0; i < len(loc); i++ {
		if loc[i] == '%' && (i+2 >= len(loc) || !isHex(loc[i+1]) || !isHex(loc[i+2])) {
			fixed.WriteString("%25")
			continue
		}
		fixed.WriteByte(loc[i])
	}
	u, err := url.Parse(fixed.String())
	if err != nil || u.Scheme != scheme || u.Host != host || u.User != nil {
		t.Fatalf("Location %q parses as %+v, %v", loc, u, err)
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// TestTamperedTokens flips every bit of every byte of a valid token (so
// every field: version, key, flags, message id, position, port, host and
// MAC) and also cuts and extends it; each must get a plain 404.
func TestTamperedTokens(t *testing.T) {
	e := newEnv(t)
	tok := rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), Position: 200, HTTPS: true, Host: "shop.example.com", Port: 8443}
	enc := e.tok(tok)
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.get("/" + enc + "/x"); r.code != http.StatusFound {
		t.Fatalf("untampered token: %d", r.code)
	}
	before := len(e.pending())
	for i := range raw {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), raw...)
			b[i] ^= 1 << bit
			r := e.get("/" + base64.RawURLEncoding.EncodeToString(b) + "/x")
			if r.code != http.StatusNotFound || r.location != "" {
				t.Fatalf("byte %d bit %d flipped: %d %q", i, bit, r.code, r.location)
			}
		}
	}
	bad := map[string]string{
		"empty":        "/",
		"truncated":    "/" + enc[:len(enc)-1] + "/x",
		"cut":          "/" + enc[:20],
		"extended":     "/" + enc + "A/x",
		"padding":      "/" + enc + "==/x",
		"std base64":   "/" + enc[:10] + "+" + enc[11:],
		"percent":      "/%41" + enc[1:],
		"encoded char": "/" + enc[:5] + "%41" + enc[6:],
		"garbage":      "/favicon.ico",
		"too long":     "/" + strings.Repeat("A", 600),
		"dot":          "/./" + enc,
		"unknown key": "/" + func() string {
			k := rewrite.Key{ID: 9, Secret: []byte(strings.Repeat("z", 32))}
			c, _ := rewrite.NewCodec(k)
			return c.Encode(tok)
		}(),
		"other secret same id": "/" + func() string {
			k := rewrite.Key{ID: testKeyNew.ID, Secret: []byte(strings.Repeat("z", 32))}
			c, _ := rewrite.NewCodec(k)
			return c.Encode(tok)
		}(),
	}
	for name, target := range bad {
		t.Run(name, func(t *testing.T) { expectNotFound(t, name, e.get(target)) })
	}
	if after := len(e.pending()); after != before {
		t.Fatalf("bad tokens journaled %d hits", after-before)
	}
}

func TestKeyRotation(t *testing.T) {
	e := newEnv(t) // signs with new, accepts old
	oldCodec, err := rewrite.NewCodec(testKeyOld)
	if err != nil {
		t.Fatal(err)
	}
	tok := click("shop.example.com")
	if r := e.get("/" + oldCodec.Encode(tok) + "/old"); r.code != http.StatusFound {
		t.Fatalf("old key: %d", r.code)
	}
	newTok := e.tok(tok)
	if newTok[1:3] == oldCodec.Encode(tok)[1:3] && e.codec.ActiveKey() != testKeyNew.ID {
		t.Fatal("new tokens not signed with the new key")
	}
	if r := e.get("/" + newTok + "/new"); r.code != http.StatusFound {
		t.Fatalf("new key: %d", r.code)
	}
	// A redirector that knows only the old key refuses new tokens.
	j, err := store.OpenJournal(t.TempDir() + "/j.db")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	h, err := New(Config{Codec: oldCodec, Domains: []string{"click.example.com"}, Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	expectNotFound(t, "new token at an old-key redirector", rawReq(t, serveHandler(t, h), "GET", "/"+newTok+"/new", "click.example.com"))
}

func TestHosts(t *testing.T) {
	e := newEnv(t)
	tok := "/" + e.tok(click("shop.example.com")) + "/x"
	tests := []struct {
		host string
		ok   bool
	}{
		{"click.example.com", true},
		{"CLICK.Example.COM", true},
		{"click.example.com.", true},
		{"click.example.com:8080", true}, // a bare domain matches any port
		{"other.example.net:8443", true},
		{"OTHER.example.net:8443", true},
		{"other.example.net", false}, // port 80 is not 8443
		{"other.example.net:8080", false},
		{"evil.example", false},
		{"click.example.com.evil.example", false},
		{"shop.example.com", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			r := e.raw("GET", tok, tc.host)
			if tc.ok && r.code != http.StatusFound {
				t.Fatalf("%q: %d", tc.host, r.code)
			}
			// An empty Host is refused by the HTTP server itself (400).
			if !tc.ok && ((r.code != http.StatusNotFound && (tc.host != "" || r.code != http.StatusBadRequest)) || r.location != "") {
				t.Fatalf("%q: %d %q, want 404", tc.host, r.code, r.location)
			}
			// The page says why, and names no click domain.
			if !tc.ok && r.code == http.StatusNotFound &&
				(!strings.Contains(r.body, "not a click domain served here") || strings.Contains(r.body, "click.example.com") || strings.Contains(strings.ToLower(r.body), "other.example.net")) {
				t.Fatalf("%q: page %q", tc.host, r.body)
			}
		})
	}
}

func TestPixel(t *testing.T) {
	e := newEnv(t)
	tok := e.tok(rewrite.Token{Kind: rewrite.KindPixel, MessageID: freshID()})
	for _, rest := range []string{"", "/", "/o.gif", "/open.GIF"} {
		r := e.get("/" + tok + rest)
		if r.code != http.StatusOK || r.body != string(pixelGIF) || r.header.Get("Content-Type") != "image/gif" {
			t.Fatalf("%q: %d %q %q", rest, r.code, r.header.Get("Content-Type"), r.body)
		}
		if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "no-store") || !strings.Contains(cc, "no-cache") {
			t.Fatalf("Cache-Control %q", cc)
		}
		if h := e.lastHit(); h.Kind != "pixel" || h.URL != "" {
			t.Fatalf("hit %+v", h)
		}
	}
	for _, rest := range []string{"/a/b.gif", "/x", "/%2e.gif", "//evil.gif/x"} {
		expectNotFound(t, rest, e.get("/"+tok+rest))
	}
	// A pixel token with a host still never redirects.
	tok = e.tok(rewrite.Token{Kind: rewrite.KindPixel, MessageID: freshID(), Host: "shop.example.com"})
	if r := e.get("/" + tok); r.code != http.StatusOK || r.location != "" {
		t.Fatalf("pixel with host: %d %q", r.code, r.location)
	}
}

func TestHitFields(t *testing.T) {
	e := newEnv(t)
	tok := e.tok(rewrite.Token{Kind: rewrite.KindImage, MessageID: freshID(), Position: 7, Host: "cdn.example.com"})
	longUA := strings.Repeat("é", 400)
	tests := []struct {
		name    string
		method  string
		hdr     []string
		head    bool
		machine bool
		ua      string
	}{
		{"browser", "GET", []string{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", "Referer", "https://mail.example/inbox"}, false, false, "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"},
		{"head", "HEAD", []string{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}, true, false, "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"},
		{"gmail proxy", "GET", []string{"User-Agent", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"}, false, true, ""},
		{"apple mpp", "GET", []string{"User-Agent", "Mozilla/5.0"}, false, true, "Mozilla/5.0"},
		{"barracuda", "GET", []string{"User-Agent", "Barracuda Sentinel (EE)"}, false, true, ""},
		{"no ua", "GET", nil, false, true, ""},
		{"long ua cut", "GET", []string{"User-Agent", longUA}, false, false, strings.Repeat("é", maxUserAgent/2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.raw(tc.method, "/"+tok+"/img.png?v=2", e.host, tc.hdr...)
			if r.code != http.StatusFound || r.location != "http://cdn.example.com/img.png?v=2" {
				t.Fatalf("%d %q", r.code, r.location)
			}
			h := e.lastHit()
			if h.Head != tc.head || h.Machine != tc.machine || h.Kind != "image" || h.Position != 7 {
				t.Fatalf("hit %+v", h)
			}
			if tc.ua != "" && h.UserAgent != tc.ua {
				t.Fatalf("UserAgent %q, want %q", h.UserAgent, tc.ua)
			}
			if h.IP != "127.0.0.1" || h.Protocol != "HTTP/1.1" || time.Since(h.Time) > time.Minute || h.ID == "" {
				t.Fatalf("hit %+v", h)
			}
			if tc.name == "browser" && h.Referer != "https://mail.example/inbox" {
				t.Fatalf("Referer %q", h.Referer)
			}
		})
	}
}

func TestForwardedFor(t *testing.T) {
	e := newEnv(t, withTrusted("127.0.0.0/8", "10.0.0.0/8"))
	untrusted := newEnv(t)
	tok := "/" + e.tok(click("shop.example.com"))
	tests := []struct {
		name string
		env  *env
		xff  []string
		want string
	}{
		{"no header", e, nil, "127.0.0.1"},
		{"one client", e, []string{"X-Forwarded-For", "203.0.113.9"}, "203.0.113.9"},
		{"rightmost untrusted", e, []string{"X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"},
		{"spoofed left part ignored", e, []string{"X-Forwarded-For", "1.1.1.1,203.0.113.9"}, "203.0.113.9"},
		{"two headers", e, []string{"X-Forwarded-For", "198.51.100.1", "X-Forwarded-For", "203.0.113.9, 10.0.0.1"}, "203.0.113.9"},
		{"all trusted", e, []string{"X-Forwarded-For", "10.0.0.2, 10.0.0.1"}, "10.0.0.2"},
		{"ipv6", e, []string{"X-Forwarded-For", "2001:db8::5"}, "2001:db8::5"},
		{"with port", e, []string{"X-Forwarded-For", "203.0.113.9:4711"}, "203.0.113.9"},
		{"garbage", e, []string{"X-Forwarded-For", "203.0.113.9, not-an-ip"}, "127.0.0.1"},
		{"peer not trusted", untrusted, []string{"X-Forwarded-For", "203.0.113.9"}, "127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := tc.env.get(tok, tc.xff...); r.code != http.StatusFound {
				t.Fatalf("code %d", r.code)
			}
			if h := tc.env.lastHit(); h.IP != tc.want {
				t.Fatalf("IP %q, want %q", h.IP, tc.want)
			}
		})
	}
}

func TestLinkAge(t *testing.T) {
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *Config) {
		c.MaxLinkAge = 30 * 24 * time.Hour
		c.Now = func() time.Time { return now }
	})
	idAt := func(t time.Time) uint64 { return uint64(t.UnixMilli()-1577836800000) << 20 }
	young := rewrite.Token{Kind: rewrite.KindClick, MessageID: idAt(now.Add(-29 * 24 * time.Hour)), Host: "shop.example.com"}
	old := rewrite.Token{Kind: rewrite.KindClick, MessageID: idAt(now.Add(-31 * 24 * time.Hour)), Host: "shop.example.com"}
	if r := e.get("/" + e.tok(young)); r.code != http.StatusFound {
		t.Fatalf("young link: %d", r.code)
	}
	expectNotFound(t, "old link", e.get("/"+e.tok(old)))
}

func TestMethodsAndHealth(t *testing.T) {
	e := newEnv(t)
	tok := "/" + e.tok(click("shop.example.com"))
	if r := e.raw("POST", tok, e.host); r.code != http.StatusMethodNotAllowed || r.location != "" {
		t.Fatalf("POST: %d %q", r.code, r.location)
	}
	if r := e.raw("GET", "/healthz", "anything"); r.code != http.StatusOK {
		t.Fatalf("healthz: %d", r.code)
	}
	if r := e.raw("GET", "/readyz", "anything"); r.code != http.StatusOK {
		t.Fatalf("readyz: %d", r.code)
	}
	e.h.SetDraining(true)
	if r := e.raw("GET", "/readyz", "anything"); r.code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", r.code)
	}
	// Absolute-form targets are answered from the Host header's view.
	if r := e.raw("GET", "http://evil.example"+tok, "evil.example"); r.code != http.StatusNotFound {
		t.Fatalf("absolute form: %d", r.code)
	}
}

// TestJournalFailureNoRedirect: a hit the journal cannot keep gets no
// 302 and no pixel, but a 503 that asks to try again, and is counted.
func TestJournalFailureNoRedirect(t *testing.T) {
	e := newEnv(t)
	tok := "/" + e.tok(click("shop.example.com"))
	if err := e.journal.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.get(tok + "/x")
	if r.code != http.StatusServiceUnavailable || r.location != "" || r.header.Get("Retry-After") == "" ||
		!strings.Contains(r.body, "try again in a moment") {
		t.Fatalf("click with a closed journal: %d %q Retry-After %q %q", r.code, r.location, r.header.Get("Retry-After"), r.body)
	}
	pix := e.get("/" + e.tok(rewrite.Token{Kind: rewrite.KindPixel, MessageID: freshID()}))
	if pix.code != http.StatusServiceUnavailable || pix.body == string(pixelGIF) {
		t.Fatalf("pixel with a closed journal: %d", pix.code)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "trackrelay_redirector_journal_errors_total" && mf.GetMetric()[0].GetCounter().GetValue() == 2 {
			return
		}
	}
	t.Fatal("journal error not counted")
}

func TestMachineAgents(t *testing.T) {
	for ua, want := range map[string]bool{
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148": false,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36":   false,
		"Mozilla/5.0 (compatible; ms-office; MSOffice 16)":                                                              true,
		"Mozilla/5.0 YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html":                          true,
		"Proofpoint URL Defense":          true,
		"Mimecast Security Service":       true,
		"facebookexternalhit/1.1":         true,
		"Slackbot-LinkExpanding 1.0":      true,
		"curl/8.5.0":                      true,
		"  ":                              true,
		"Mozilla/5.0 (Macintosh) Firefox": false,
	} {
		if got := isMachine(ua); got != want {
			t.Errorf("isMachine(%q) = %v", ua, got)
		}
	}
}

// TestRequestBounds: a header block over maxRequestHeader gets 431, a body
// over maxRequestBody 413, and neither is journaled or redirected.
func TestRequestBounds(t *testing.T) {
	e := newEnv(t)
	tok := "/" + e.tok(click("shop.example.com")) + "/x"
	if r := e.get(tok, "X-Big", strings.Repeat("a", maxRequestHeader)); r.code != http.StatusRequestHeaderFieldsTooLarge || r.location != "" {
		t.Fatalf("big header: %d %q", r.code, r.location)
	}
	if r := e.get(tok + "?" + strings.Repeat("q", maxRequestHeader)); r.code != http.StatusRequestHeaderFieldsTooLarge || r.location != "" {
		t.Fatalf("big target: %d %q", r.code, r.location)
	}
	if r := e.raw("POST", tok, e.host, "Content-Length", strconv.Itoa(maxRequestBody+1)); r.code != http.StatusRequestEntityTooLarge || r.location != "" {
		t.Fatalf("big body: %d %q", r.code, r.location)
	}
	if n := len(e.pending()); n != 0 {
		t.Fatalf("%d hits journaled", n)
	}
	if r := e.get(tok); r.code != http.StatusFound {
		t.Fatalf("then a normal click: %d", r.code)
	}
}
