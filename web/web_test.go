package web

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// dataPages are the GET pages that show data: none is served without a
// session.
var dataPages = []string{"/", "/?range=30d", "/links", "/links/0123456789abcdef01234567", "/messages", "/messages/0123456789abcdef",
	"/credentials", "/logs", "/logs/clicks.2026-01-02.log", "/users", "/password", "/nowhere"}

func TestNoSessionNoData(t *testing.T) {
	s := newStack(t)
	b := s.browser()
	for _, p := range dataPages {
		st, hdr, body := b.do(http.MethodGet, p, nil)
		if st != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/login") {
			t.Errorf("GET %s without a session: %d to %q", p, st, hdr.Get("Location"))
		}
		if strings.Contains(body, "<table") {
			t.Errorf("GET %s without a session shows a table", p)
		}
	}
	// A made-up cookie is no session either.
	b.c.Jar.SetCookies(mustURL(s.web.URL), []*http.Cookie{{Name: cookieSession, Value: strings.Repeat("A", 43)}})
	if st, _ := b.get("/credentials"); st != http.StatusSeeOther {
		t.Errorf("a forged cookie: %d", st)
	}
	// POSTs without a session go to the login page too, and change nothing.
	st, hdr, _ := b.do(http.MethodPost, "/credentials/shop-smtp", url.Values{"action": {"disable"}})
	if st != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/login") {
		t.Errorf("POST without a session: %d %q", st, hdr.Get("Location"))
	}
	if c, _ := store.Get[store.Credential](context.Background(), s.st, store.KindCredential, "shop-smtp"); c.Disabled {
		t.Error("a POST without a session changed a credential")
	}
	// The login page's next is kept, but only to a local path.
	_, hdr, _ = b.do(http.MethodGet, "/links?range=7d", nil)
	if hdr.Get("Location") != "/login?next="+url.QueryEscape("/links?range=7d") {
		t.Errorf("next: %q", hdr.Get("Location"))
	}
	for next, want := range map[string]string{"/links": "/links", "//evil.example/": "/", "https://evil.example/": "/", "/\\evil.example": "/", "/login": "/"} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestLoginAndSessions(t *testing.T) {
	s := newStack(t)
	b := s.browser()
	if st, _, body := b.tryLogin("ann@shop.example", "wrong password"); st != http.StatusUnauthorized || !strings.Contains(body, "Wrong login or password") {
		t.Fatalf("wrong password: %d", st)
	}
	if st, _, _ := b.tryLogin("nobody@example", testPassword); st != http.StatusUnauthorized {
		t.Fatalf("unknown login: %d", st)
	}
	st, hdr, _ := b.tryLogin("ANN@shop.example", testPassword)
	if st != http.StatusSeeOther || hdr.Get("Location") != "/" {
		t.Fatalf("login: %d %q", st, hdr.Get("Location"))
	}
	var sc *http.Cookie
	for _, c := range (&http.Response{Header: hdr}).Cookies() {
		if c.Name == cookieSession {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Secure || sc.Path != "/" {
		t.Fatalf("session cookie %+v", sc)
	}
	// The store holds the cookie's hash, never the cookie.
	ss, _ := store.List[store.Session](context.Background(), s.st, store.KindSession, "")
	if len(ss) != 1 || ss[0].ID != sessionID(sc.Value) || strings.Contains(ss[0].ID, sc.Value) || ss[0].Account != "shop" {
		t.Fatalf("sessions %+v", ss)
	}
	if st, body := b.get("/"); st != 200 || !strings.Contains(body, "ann@shop.example") || !strings.Contains(body, "Overview") {
		t.Fatalf("overview: %d", st)
	}

	// Idle and absolute expiry.
	s.mu.Lock()
	s.clock = time.Now().Add(3 * time.Hour)
	s.mu.Unlock()
	if st, _ := b.get("/"); st != http.StatusSeeOther {
		t.Fatalf("after 3 idle hours: %d", st)
	}
	s.mu.Lock()
	s.clock = time.Time{}
	s.mu.Unlock()
	b.login("ann@shop.example", testPassword)
	for h := 1; h <= 25; h++ { // used every hour: only the absolute limit ends it
		s.mu.Lock()
		s.clock = time.Now().Add(time.Duration(h) * time.Hour)
		s.mu.Unlock()
		st, _ := b.get("/")
		if h < 24 && st != 200 {
			t.Fatalf("hour %d of an active session: %d", h, st)
		}
		if h >= 24 && st != http.StatusSeeOther {
			t.Fatalf("hour %d: the session outlived its 24 hours (%d)", h, st)
		}
	}
	s.mu.Lock()
	s.clock = time.Time{}
	s.mu.Unlock()

	// Log out ends the session: its cookie no longer works.
	b.login("ann@shop.example", testPassword)
	old := b.c.Jar.Cookies(mustURL(s.web.URL))
	if st, _, _ := b.post("/logout", nil); st != http.StatusSeeOther {
		t.Fatalf("logout: %d", st)
	}
	b2 := s.browser()
	b2.c.Jar.SetCookies(mustURL(s.web.URL), old)
	if st, _ := b2.get("/"); st != http.StatusSeeOther {
		t.Fatalf("the logged-out cookie still works: %d", st)
	}

	// A password change ends the other sessions, not this one.
	phone, laptop := s.browser(), s.browser()
	phone.login("ann@shop.example", testPassword)
	laptop.login("ann@shop.example", testPassword)
	laptop.get("/password")
	if st, _, body := laptop.post("/password", url.Values{"current": {"wrong one"}, "password": {"new password 1"}, "again": {"new password 1"}}); st != http.StatusUnauthorized {
		t.Fatalf("password change with a wrong current one: %d %s", st, body)
	}
	if st, _, body := laptop.post("/password", url.Values{"current": {testPassword}, "password": {"new password 1"}, "again": {"new password 2"}}); st != http.StatusBadRequest {
		t.Fatalf("password change with different new ones: %d %s", st, body)
	}
	if st, hdr, _ := laptop.post("/password", url.Values{"current": {testPassword}, "password": {"new password 1"}, "again": {"new password 1"}}); st != http.StatusSeeOther {
		t.Fatalf("password change: %d %v", st, hdr)
	}
	if st, body := laptop.get("/?changed=password"); st != 200 || !strings.Contains(body, "password was changed") {
		t.Fatalf("the changing session: %d", st)
	}
	if st, _ := phone.get("/"); st != http.StatusSeeOther {
		t.Fatalf("the other session survived the password change: %d", st)
	}
	if st, _, _ := s.browser().tryLogin("ann@shop.example", testPassword); st != http.StatusUnauthorized {
		t.Fatalf("the old password still works: %d", st)
	}
	s.browser().login("ann@shop.example", "new password 1")

	// Disabling a user ends their sessions.
	root := s.browser()
	root.login("root", testPassword)
	root.get("/users")
	if st, _, body := root.post("/users/ann@shop.example", url.Values{"action": {"disable"}}); st != http.StatusSeeOther {
		t.Fatalf("disable: %d %s", st, body)
	}
	if st, _ := laptop.get("/"); st != http.StatusSeeOther {
		t.Fatalf("a disabled user's session: %d", st)
	}
}

func TestSecureCookieBehindProxy(t *testing.T) {
	s := newStack(t, func(c *Config) { c.PublicURL = "https://relay.example.com" })
	b := s.browser()
	_, page := b.get("/login")
	tok := tokenRe.FindStringSubmatch(page)[1]
	// The proxy's origin is the dashboard's; the cookie is Secure and host-bound.
	st, hdr, _ := b.do(http.MethodPost, "/login", url.Values{"token": {tok}, "login": {"root"}, "password": {testPassword}},
		"Origin", "https://relay.example.com", "Sec-Fetch-Site", "", "X-Forwarded-For", "198.51.100.7")
	if st != http.StatusSeeOther {
		t.Fatalf("login through the proxy: %d", st)
	}
	var sc *http.Cookie
	for _, c := range (&http.Response{Header: hdr}).Cookies() {
		if strings.HasSuffix(c.Name, cookieSession) {
			sc = c
		}
	}
	if sc == nil || sc.Name != "__Host-"+cookieSession || !sc.Secure || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode {
		t.Fatalf("cookie behind a TLS proxy: %+v", sc)
	}
}

func TestCSRF(t *testing.T) {
	s := newStack(t)
	b := s.browser()
	b.login("ann@shop.example", testPassword)
	b.get("/credentials")
	disabled := func() bool {
		c, err := store.Get[store.Credential](context.Background(), s.st, store.KindCredential, "shop-smtp")
		if err != nil {
			t.Fatal(err)
		}
		return c.Disabled
	}
	form := func(tok string) url.Values {
		return url.Values{"action": {"disable"}, "csrf": {tok}}
	}
	for _, c := range []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", url.Values{"action": {"disable"}}, nil},
		{"wrong token", form("not-the-token"), nil},
		{"another session's token", form(func() string {
			o := s.browser()
			o.login("ann@shop.example", testPassword)
			o.get("/credentials")
			return o.csrf
		}()), nil},
		{"cross-site fetch", form(b.csrf), []string{"Sec-Fetch-Site", "cross-site", "Origin", ""}},
		{"foreign origin", form(b.csrf), []string{"Sec-Fetch-Site", "", "Origin", "http://evil.example"}},
		{"foreign referer", form(b.csrf), []string{"Sec-Fetch-Site", "", "Origin", "", "Referer", "http://evil.example/page"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, _, _ := b.do(http.MethodPost, "/credentials/shop-smtp", c.form, c.hdr...)
			if st != http.StatusForbidden {
				t.Fatalf("status %d, want 403", st)
			}
			if disabled() {
				t.Fatal("the credential was disabled")
			}
		})
	}
	// The login form has its own token too.
	o := s.browser()
	o.get("/login")
	if st, _, _ := o.do(http.MethodPost, "/login", url.Values{"token": {"forged"}, "login": {"root"}, "password": {testPassword}}); st != http.StatusForbidden {
		t.Fatalf("login with a forged form token: %d", st)
	}
	if st, _, _ := o.do(http.MethodPost, "/login", url.Values{"login": {"root"}, "password": {testPassword}}, "Origin", "http://evil.example", "Sec-Fetch-Site", ""); st != http.StatusForbidden {
		t.Fatalf("cross-origin login: %d", st)
	}
	// With the right token, from the page itself, it works.
	if st, _, _ := b.post("/credentials/shop-smtp", url.Values{"action": {"disable"}}); st != http.StatusSeeOther || !disabled() {
		t.Fatalf("a proper post: %d, disabled %v", st, disabled())
	}
	// And a same-origin Referer without Fetch Metadata passes.
	if st, _, _ := b.do(http.MethodPost, "/credentials/shop-smtp", form(b.csrf), "Sec-Fetch-Site", "", "Origin", "", "Referer", s.web.URL+"/credentials"); st != http.StatusSeeOther {
		t.Fatalf("same-origin referer: %d", st)
	}
}

func TestLoginLimiter(t *testing.T) {
	// The SMTP AUTH limiter: slow after 2 failures, refuse after 4.
	s := newStack(t, func(c *Config) { c.Limiter = smtpd.NewAuthLimiter(2, 4, 10*time.Millisecond, time.Minute) })
	b := s.browser()
	for i := 1; i <= 3; i++ {
		start := time.Now()
		st, _, _ := b.tryLogin("root", "wrong")
		if st != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, st)
		}
		if i >= 2 && time.Since(start) < 10*time.Millisecond {
			t.Errorf("failure %d was not slowed down", i)
		}
	}
	if st, _, body := b.tryLogin("root", "wrong"); st != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed logins") {
		t.Fatalf("failure 4: %d", st)
	}
	// Blocked: even the right password is refused, for any login.
	if st, _, _ := b.tryLogin("root", testPassword); st != http.StatusTooManyRequests {
		t.Fatalf("right password while blocked: %d", st)
	}
	// Another login from the same address is not locked out by one user's
	// failures (many people share an address), until the address itself
	// has failed three times the limit: then everyone behind it is.
	if st, _, _ := s.browser().tryLogin("ann@shop.example", testPassword); st != http.StatusSeeOther {
		t.Fatalf("another login from the address: %d", st)
	}
	for i := 0; i < 12; i++ {
		b.tryLogin(fmt.Sprintf("guess%d", i), "wrong")
	}
	if st, _, _ := s.browser().tryLogin("ann@shop.example", testPassword); st != http.StatusTooManyRequests {
		t.Fatalf("a login from an address that failed too often: %d", st)
	}
}

// TestAccountScoping puts mail, clicks, credentials, keys and people in
// two accounts and tries every page and form of one account's user
// against the other's data.
func TestAccountScoping(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	html := `<p><a href="https://shop.example/secret-sale">sale</a></p>`
	shopMail := s.send("shop-smtp", "Shop secret subject", "nov", html, "reader@shop-customers.example")
	s.send("other-smtp", "Other subject", "", `<a href="https://other.example/page">x</a>`, "reader@other-customers.example")
	for _, u := range s.trackedURLs(shopMail["reader@shop-customers.example"], rewrite.KindClick) {
		s.hit(http.MethodGet, u, browserUA)
	}
	s.ship()
	shopMsgs, _ := s.st.SearchMessages(ctx, store.MessageQuery{Account: "shop"})
	otherMsgs, _ := s.st.SearchMessages(ctx, store.MessageQuery{Account: "other"})
	if len(shopMsgs) != 1 || len(otherMsgs) != 1 {
		t.Fatalf("messages: shop %d, other %d", len(shopMsgs), len(otherMsgs))
	}
	shopID, otherID := store.FormatID(shopMsgs[0].ID), store.FormatID(otherMsgs[0].ID)
	// The spool does not record subjects and senders yet: a message that
	// has them, made through the store.
	fixture := addMessage(t, s, "shop", "Shop secret subject", "Shop <news@shop.example>", []string{"nov"}, "vip@shop-customers.example")
	linkID := store.LinkID("https://shop.example/secret-sale")
	ann := s.browser()
	ann.login("ann@shop.example", testPassword)
	ann.get("/credentials")
	var shopKey api.APIKeyView
	if st, _, body := ann.post("/apikeys", url.Values{"name": {"shop app"}}); st != http.StatusCreated {
		t.Fatalf("key: %d %s", st, body)
	} else {
		shopKey.ID = regexp.MustCompile(`trk_([0-9a-f]{16})_`).FindStringSubmatch(body)[1]
	}
	today := time.Now().UTC().Format(time.DateOnly)
	// What would give shop's data away on any page.
	secrets := []string{shopID, fixture, "Shop secret subject", "secret-sale", "shop-smtp", "ann@shop.example", shopKey.ID, "reader@shop-customers.example"}

	olga := s.browser()
	olga.login("olga@other.example", testPassword)
	pages := []string{"/", "/?range=30d&tag=nov", "/links", "/links?range=30d&tag=nov", "/links?message=" + shopID, "/links/" + linkID,
		"/messages", "/messages?subject=secret", "/messages?id=" + shopID, "/messages?recipient=reader@shop-customers.example", "/messages/" + shopID,
		"/credentials", "/logs", "/logs/clicks." + today + ".log", "/logs/clicks." + today + ".log?format=json&account=shop", "/users", "/password"}
	for _, p := range pages {
		st, body := olga.get(p)
		body = valueRe.ReplaceAllString(body, "") // the search form shows what was asked
		if st >= 500 {
			t.Errorf("%s: %d", p, st)
		}
		for _, sec := range secrets {
			if strings.Contains(body, sec) {
				t.Errorf("olga's %s (%d) shows %q", p, st, sec)
			}
		}
	}
	for _, p := range []string{"/messages/" + shopID, "/links/" + linkID, "/links?message=" + shopID} {
		if st, _ := olga.get(p); st != http.StatusNotFound {
			t.Errorf("olga's %s: %d, want 404", p, st)
		}
	}
	// Every form against shop's records: refused, nothing changes.
	olga.get("/credentials")
	before := dump(t, s)
	for _, f := range []struct {
		path string
		form url.Values
		want int
	}{
		{"/credentials/shop-smtp", url.Values{"action": {"save"}, "trackclicks": {""}}, 404},
		{"/credentials/shop-smtp", url.Values{"action": {"disable"}}, 404},
		{"/credentials/shop-smtp/delete", nil, 404},
		{"/apikeys/" + shopKey.ID, url.Values{"action": {"disable"}}, 404},
		{"/apikeys/" + shopKey.ID + "/delete", nil, 404},
		{"/users/ann@shop.example", url.Values{"action": {"disable"}}, 404},
		{"/users/ann@shop.example", url.Values{"action": {"password"}, "password": {"taken over!"}}, 404},
		{"/users/ann@shop.example/delete", nil, 404},
		{"/users/root", url.Values{"action": {"disable"}}, 404},
		{"/accounts", url.Values{"name": {"mine"}}, 403},
		{"/accounts/shop/delete", nil, 403},
		{"/account", url.Values{"account": {"shop"}}, 403},
		{"/credentials", url.Values{"username": {"sneaky"}, "account": {"shop"}}, 201},
		{"/apikeys", url.Values{"name": {"sneaky"}, "account": {"shop"}}, 201},
		{"/apikeys", url.Values{"operator": {"on"}}, 403},
		{"/users", url.Values{"login": {"sneaky"}, "password": {"long enough"}, "account": {"shop"}}, 201},
		{"/users", url.Values{"login": {"sneakyop"}, "password": {"long enough"}, "operator": {"on"}}, 403},
	} {
		st, _, _ := olga.post(f.path, f.form)
		if st != f.want {
			t.Errorf("olga POST %s %v: %d, want %d", f.path, f.form, st, f.want)
		}
	}
	after := dump(t, s)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("olga changed shop's %s", k)
		}
	}
	// What olga made (naming shop in the form) went into her own account.
	for _, k := range []struct {
		kind store.RecordKind
		key  string
	}{{store.KindCredential, "sneaky"}, {store.KindUser, "sneaky"}} {
		raw, err := s.st.GetRecord(ctx, k.kind, k.key)
		if err != nil || raw.Account != "other" {
			t.Errorf("%s %s: %v, account %q", k.kind, k.key, err, raw.Account)
		}
	}
	keys, _ := store.List[store.APIKey](ctx, s.st, store.KindAPIKey, "shop")
	if len(keys) != 1 {
		t.Errorf("shop has %d keys, want its own one", len(keys))
	}
	// The account cookie means nothing to a non-operator.
	olga.c.Jar.SetCookies(mustURL(s.web.URL), []*http.Cookie{{Name: cookieAccount, Value: "c2hvcA", Path: "/"}}) // "shop"
	if _, body := olga.get("/messages"); strings.Contains(body, shopID) {
		t.Error("an account cookie opened shop's messages to olga")
	}
	// An operator picks shop and sees it all.
	root := s.browser()
	root.login("root", testPassword)
	root.get("/")
	if st, _, _ := root.post("/account", url.Values{"account": {"shop"}, "back": {"/messages"}}); st != http.StatusSeeOther {
		t.Fatalf("pick: %d", st)
	}
	if _, body := root.get("/messages"); !strings.Contains(body, shopID) || !strings.Contains(body, "Shop secret subject") || strings.Contains(body, otherID) {
		t.Error("the operator in shop does not see exactly shop's messages")
	}
	root.post("/account", url.Values{"account": {""}})
	if _, body := root.get("/messages"); !strings.Contains(body, shopID) || !strings.Contains(body, otherID) {
		t.Error("the operator in all accounts does not see both")
	}
}

var valueRe = regexp.MustCompile(`value="[^"]*"`)

// addMessage stores a delivered message with the fields the spool does not
// fill yet (subject, From, tags), and its attempt and delivery events.
func addMessage(t *testing.T, s *stack, account, subject, from string, tags []string, rcpt string) string {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	m := &store.Message{ID: s.st.NextID(), SpoolPath: "fixture", From: "news@shop.example", Recipients: []string{rcpt}, Created: now,
		Remaining: 1, Account: account, Credential: account + "-smtp", Subject: subject, HeaderFrom: from, Tags: tags}
	c := &store.Copy{ID: s.st.NextID(), MessageID: m.ID, Account: account, Credential: account + "-smtp", Recipient: rcpt, Tags: tags,
		State: store.CopyQueued, Created: now, Clicks: true, Opens: true}
	ev := []store.Event{{Log: store.LogAttempts, Account: account, ID: c.ID, Time: now, Recipient: rcpt, Tags: tags,
		Fields: map[string]string{"envelope": m.From, "properties": `{"trackclicks":true,"trackopens":true,"preventscam":false}`}}}
	if err := s.st.AddMessage(ctx, m, []*store.Copy{c}, ev); err != nil {
		t.Fatal(err)
	}
	c.State, c.Attempts, c.Delivered, c.LastReply = store.CopyDelivered, 1, now, "250 2.0.0 queued as F1XTURE"
	if _, err := s.st.UpdateCopy(ctx, c, []store.Event{{Log: store.LogDeliveries, Account: account, ID: c.ID, Time: now.Add(time.Second), Recipient: rcpt, Tags: tags,
		Fields: map[string]string{"envelope": m.From, "from": "relay", "to": "upstream", "attempt": "1"}}}); err != nil {
		t.Fatal(err)
	}
	return store.FormatID(m.ID)
}

// dump reads every record of account shop.
func dump(t *testing.T, s *stack) map[string]string {
	out := map[string]string{}
	for _, k := range store.RecordKinds {
		recs, err := s.st.ListRecords(context.Background(), k, "shop")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if k != store.KindSession {
				out[string(k)+"/"+r.Key] = string(r.Value)
			}
		}
	}
	return out
}
