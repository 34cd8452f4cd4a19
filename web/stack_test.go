package web

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// stack is the real relay in one process: SMTP front, spool, queue, a real
// SMTP upstream, the redirector with its journal and shipper, the REST
// API and the dashboard over HTTP. Credentials come from the store's
// records, reloaded on every change (as the relay's directory does).
type stack struct {
	t           *testing.T
	st          *store.Relay
	codec       *rewrite.Codec
	clickDomain string
	shipper     *redirector.Shipper
	smtpAddr    string
	smtpSrv     *smtpd.Server
	up          *upstream
	web         *httptest.Server
	handler     *Handler
	now         func() time.Time
	mu          sync.Mutex
	clock       time.Time // zero: the real time
}

type upstream struct {
	mu   sync.Mutex
	msgs map[string][]byte // recipient -> last message
}

func (u *upstream) NewSession(*smtp.Conn) (smtp.Session, error) { return &upSession{u: u}, nil }

type upSession struct {
	u     *upstream
	rcpts []string
}

func (s *upSession) Reset()                               { s.rcpts = nil }
func (s *upSession) Logout() error                        { return nil }
func (s *upSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *upSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *upSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.u.mu.Lock()
	defer s.u.mu.Unlock()
	for _, to := range s.rcpts {
		s.u.msgs[to] = b
	}
	return nil
}

func (u *upstream) take(to string) []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.msgs[to]
	delete(u.msgs, to)
	return b
}

const testPassword = "correct horse battery"

type stackOpt func(*Config)

func newStack(t *testing.T, opts ...stackOpt) *stack {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	s := &stack{t: t, up: &upstream{msgs: map[string][]byte{}}}
	s.now = func() time.Time {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.clock.IsZero() {
			return time.Now()
		}
		return s.clock
	}
	var err error
	if s.st, err = store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.st.Close() })
	if s.codec, err = rewrite.NewCodec(rewrite.DevKey); err != nil {
		t.Fatal(err)
	}

	upSrv := smtp.NewServer(s.up)
	upSrv.Domain = "upstream.test"
	upLn := listen(t)
	go upSrv.Serve(upLn)
	t.Cleanup(func() { upSrv.Close() })

	journal, err := store.OpenJournal(filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close() })
	redirLn := listen(t)
	s.clickDomain = redirLn.Addr().String()
	rh, err := redirector.New(redirector.Config{Codec: s.codec, Domains: []string{s.clickDomain}, Journal: journal, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	redirSrv := redirector.NewHTTPServer(rh, log)
	go redirSrv.Serve(redirLn)
	t.Cleanup(func() { _ = redirSrv.Shutdown() })
	if s.shipper, err = redirector.NewShipper(redirector.ShipperConfig{Journal: journal, Sink: redirector.SinkFunc(s.st.IngestHits), Logger: log}); err != nil {
		t.Fatal(err)
	}

	upClient, err := smtpd.NewSMTPUpstream(smtpd.SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: upLn.Addr().(*net.TCPAddr).Port, TLS: "none"})
	if err != nil {
		t.Fatal(err)
	}
	var queue *smtpd.Queue
	spool, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: s.st, MaxMessageBytes: 1 << 20, NoSync: true,
		Enqueue: func(c []*store.Copy) { queue.Add(c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	if queue, err = smtpd.NewQueue(smtpd.QueueConfig{Store: s.st, Spool: spool, Codec: s.codec, Logger: log,
		Upstreams: map[string]smtpd.Upstream{"up": upClient}}); err != nil {
		t.Fatal(err)
	}
	queue.Run()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		queue.Shutdown(sctx)
		upClient.Close()
	})
	if s.smtpSrv, err = smtpd.NewServer(smtpd.ServerConfig{Submitter: spool, AllowPlaintextLoopback: true, Logger: log}); err != nil {
		t.Fatal(err)
	}
	smtpLn := listen(t)
	s.smtpAddr = smtpLn.Addr().String()
	go s.smtpSrv.Serve(smtpLn, smtpd.ModeSTARTTLS)
	t.Cleanup(func() { s.smtpSrv.Close() })

	kr, err := api.NewKeyring(nil)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(ctx context.Context) error {
		creds, err := store.List[store.Credential](ctx, s.st, store.KindCredential, "")
		if err != nil {
			return err
		}
		users := map[string]smtpd.User{}
		for _, c := range creds {
			if c.Disabled {
				continue
			}
			users[c.Username] = smtpd.User{Hash: []byte(c.PasswordHash), Cred: &smtpd.Credential{Username: c.Username, Account: c.Account,
				Clicks: c.Clicks, Opens: c.Opens, PreventScam: c.PreventScam, ClickDomain: s.clickDomain, Scheme: "http", Upstream: "up"}}
		}
		return s.smtpSrv.SetUsers(users)
	}
	ops := &api.Ops{Store: s.st, Reload: reload, BcryptCost: bcrypt.MinCost, Now: s.now}
	apiH := api.New(api.Config{Submitter: spool, Store: s.st, Keys: kr, Reload: reload, BcryptCost: bcrypt.MinCost})
	cfg := Config{Store: s.st, Ops: ops, API: apiH, Now: s.now, Limiter: smtpd.NewAuthLimiter(100, 100, time.Millisecond, time.Minute)}
	for _, o := range opts {
		o(&cfg)
	}
	if s.handler, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	s.web = httptest.NewServer(s.handler)
	t.Cleanup(s.web.Close)

	// Two accounts, a person in each, an operator; a credential each.
	root := &api.Principal{Operator: true}
	for _, a := range []string{"shop", "other"} {
		if _, err := ops.CreateAccount(ctx, root, a, api.AccountSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []struct{ login, account string }{{"ann@shop.example", "shop"}, {"olga@other.example", "other"}} {
		if _, err := ops.CreateUser(ctx, &api.Principal{Operator: true, Account: u.account}, api.NewUser{Login: u.login, Password: testPassword}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ops.CreateUser(ctx, root, api.NewUser{Login: "root", Password: testPassword, Operator: true}); err != nil {
		t.Fatal(err)
	}
	yes := true
	for _, c := range []struct{ user, account string }{{"shop-smtp", "shop"}, {"other-smtp", "other"}} {
		if _, err := ops.CreateCredential(ctx, &api.Principal{Operator: true, Account: c.account},
			api.CredentialChange{Username: c.user, Password: testPassword, Clicks: &yes, Opens: &yes}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// send submits a message over SMTP with a credential and waits until the
// upstream has every recipient's copy; it returns them.
func (s *stack) send(user, subject, tags, html string, to ...string) map[string][]byte {
	s.t.Helper()
	c, err := smtp.Dial(s.smtpAddr)
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, testPassword)); err != nil {
		s.t.Fatal(err)
	}
	hdr := "From: Shop News <news@shop.example>\r\nTo: " + strings.Join(to, ", ") + "\r\nSubject: " + subject + "\r\n"
	if tags != "" {
		hdr += "X-Smtpeter-Tags: " + tags + "\r\n"
	}
	msg := hdr + "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
	if err := c.SendMail("news@shop.example", to, strings.NewReader(msg)); err != nil {
		s.t.Fatal(err)
	}
	_ = c.Quit()
	out := map[string][]byte{}
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < len(to) {
		for _, r := range to {
			if b := s.up.take(r); b != nil {
				out[r] = b
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not delivered in time: %d of %d", len(out), len(to))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return out
}

// trackedURLs returns a delivered copy's tracked URLs of a kind.
func (s *stack) trackedURLs(msg []byte, kind rewrite.Kind) []string {
	msg = bytes.ReplaceAll(bytes.ReplaceAll(msg, []byte("=\r\n"), nil), []byte("=3D"), []byte("="))
	re := regexp.MustCompile(`http://` + regexp.QuoteMeta(s.clickDomain) + `/[^"'\s<>]+`)
	var out []string
	for _, u := range re.FindAllString(string(msg), -1) {
		seg, _, _ := strings.Cut(strings.TrimPrefix(u, "http://"+s.clickDomain+"/"), "/")
		if tok, err := s.codec.Decode(seg); err == nil && tok.Kind == kind {
			out = append(out, u)
		}
	}
	return out
}

// Browser and machine User-Agents.
const (
	browserUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
	scannerUA = "Mozilla/5.0 (compatible; SafeLinks scanner)"
)

// hit follows a tracked URL through the redirector.
func (s *stack) hit(method, u, ua string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	req.Header.Set("User-Agent", ua)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusOK {
		s.t.Fatalf("%s %s: %d", method, u, resp.StatusCode)
	}
}

// ship hands the redirector's hits to the store.
func (s *stack) ship() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.shipper.Flush(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// browser is an HTTP client with its own cookies, like one browser.
type browser struct {
	t    *testing.T
	s    *stack
	c    *http.Client
	csrf string
}

func (s *stack) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: s.t, s: s, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do makes a request as a browser on the dashboard's own pages would
// (same-origin Fetch Metadata on POSTs).
func (b *browser) do(method, path string, form url.Values, hdr ...string) (int, http.Header, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.s.web.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Origin", b.s.web.URL)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if m := csrfRe.FindStringSubmatch(string(raw)); m != nil {
		b.csrf = m[1]
	}
	return resp.StatusCode, resp.Header, string(raw)
}

var (
	csrfRe  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	tokenRe = regexp.MustCompile(`name="token" value="([^"]+)"`)
)

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	st, _, body := b.do(http.MethodGet, path, nil)
	return st, body
}

// post sends a form with the session's CSRF token.
func (b *browser) post(path string, form url.Values) (int, http.Header, string) {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get("csrf") == "" {
		form.Set("csrf", b.csrf)
	}
	return b.do(http.MethodPost, path, form)
}

// login logs in and fails the test unless it works.
func (b *browser) login(login, password string) {
	b.t.Helper()
	if st, _, body := b.tryLogin(login, password); st != http.StatusSeeOther {
		b.t.Fatalf("login %s: %d\n%s", login, st, body)
	}
	if st, _ := b.get("/"); st != http.StatusOK {
		b.t.Fatalf("overview after login: %d", st)
	}
}

func (b *browser) tryLogin(login, password string) (int, http.Header, string) {
	b.t.Helper()
	_, page := b.get("/login")
	m := tokenRe.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no login token in\n%s", page)
	}
	return b.do(http.MethodPost, "/login", url.Values{"token": {m[1]}, "login": {login}, "password": {password}})
}
