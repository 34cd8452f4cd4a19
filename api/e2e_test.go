package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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

	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// upstream is a real SMTP server (go-smtp's, in-process) that keeps what
// it receives.
type upstream struct {
	mu   sync.Mutex
	msgs []upMsg
}

type upMsg struct {
	from, to string
	data     []byte
}

func (u *upstream) NewSession(*smtp.Conn) (smtp.Session, error) { return &upSession{u: u}, nil }

type upSession struct {
	u     *upstream
	from  string
	rcpts []string
}

func (s *upSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *upSession) Logout() error { return nil }
func (s *upSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
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
		s.u.msgs = append(s.u.msgs, upMsg{s.from, to, b})
	}
	return nil
}

func (u *upstream) find(to string) (upMsg, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, m := range u.msgs {
		if m.to == to {
			return m, true
		}
	}
	return upMsg{}, false
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestEndToEnd sends one message through /v1/send and one through SMTP,
// lets the real queue deliver them to a real SMTP upstream, clicks a link
// of each through the real redirector, ships the hits to the store, and
// finds the same events in the CSV and JSON logs and in /v1/events.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)

	// The upstream.
	up := &upstream{}
	upSrv := smtp.NewServer(up)
	upSrv.Domain = "upstream.test"
	upSrv.AllowInsecureAuth = true
	upLn := listen(t)
	go upSrv.Serve(upLn)
	t.Cleanup(func() { upSrv.Close() })
	upPort := upLn.Addr().(*net.TCPAddr).Port

	// The redirector, its journal and its shipper into the relay's store.
	relay, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	codec, err := rewrite.NewCodec(rewrite.DevKey)
	if err != nil {
		t.Fatal(err)
	}
	journal, err := store.OpenJournal(filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close() })
	redirLn := listen(t)
	clickDomain := redirLn.Addr().String()
	rh, err := redirector.New(redirector.Config{Codec: codec, Domains: []string{clickDomain}, Journal: journal, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	redirSrv := redirector.NewHTTPServer(rh, log)
	go redirSrv.Serve(redirLn)
	t.Cleanup(func() { _ = redirSrv.Shutdown() })
	shipper, err := redirector.NewShipper(redirector.ShipperConfig{Journal: journal, Sink: redirector.SinkFunc(relay.IngestHits), Logger: log})
	if err != nil {
		t.Fatal(err)
	}

	// The relay: spool, queue, SMTP front.
	upstreamClient, err := smtpd.NewSMTPUpstream(smtpd.SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: upPort, TLS: "none"})
	if err != nil {
		t.Fatal(err)
	}
	var queue *smtpd.Queue
	spool, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: relay, MaxMessageBytes: 1 << 20, NoSync: true,
		Enqueue: func(c []*store.Copy) { queue.Add(c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	queue, err = smtpd.NewQueue(smtpd.QueueConfig{Store: relay, Spool: spool, Codec: codec, Logger: log,
		Upstreams: map[string]smtpd.Upstream{"up": upstreamClient}})
	if err != nil {
		t.Fatal(err)
	}
	queue.Run()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		queue.Shutdown(sctx)
		upstreamClient.Close()
	})
	cred := func(user string) *smtpd.Credential {
		return &smtpd.Credential{Username: user, Account: "shop", Clicks: true, Opens: true, ClickDomain: clickDomain, Scheme: "http", Upstream: "up"}
	}
	pw, _ := bcrypt.GenerateFromPassword([]byte("smtp-secret"), bcrypt.MinCost)
	smtpSrv, err := smtpd.NewServer(smtpd.ServerConfig{Submitter: spool, AllowPlaintextLoopback: true, Logger: log,
		Users: map[string]smtpd.User{"shop-smtp": {Hash: pw, Cred: cred("shop-smtp")}}})
	if err != nil {
		t.Fatal(err)
	}
	smtpLn := listen(t)
	go smtpSrv.Serve(smtpLn, smtpd.ModeSTARTTLS)
	t.Cleanup(func() { smtpSrv.Close() })

	// The API.
	kr, err := NewKeyring([]Key{
		{Hash: hashKey(t, keyShop), Cred: cred("shop-api")},
		{Hash: hashKey(t, keyOther), Cred: &smtpd.Credential{Username: "other-api", Account: "other", Upstream: "up"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, relay: relay, spool: spool, now: time.Now()}
	e.srv = newTestServer(New(Config{Submitter: spool, Store: relay, Keys: kr, Log: log}))
	t.Cleanup(e.srv.Close)

	// 1. Through the API.
	html := `<p>Hello, <a href="https://shop.example/sale?x=1">the sale</a></p>`
	st, body := e.send(keyShop, map[string]any{"from": "news@shop.example", "to": "ann@example.com", "subject": "Sale", "html": html, "tags": "nov"})
	if st != 200 {
		t.Fatalf("send: %d %s", st, body)
	}
	ids := sendIDs(t, body)
	apiID := ids["ann@example.com"]

	// 2. Through SMTP.
	c, err := smtp.Dial(smtpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "shop-smtp", "smtp-secret")); err != nil {
		t.Fatal(err)
	}
	msg := "From: news@shop.example\r\nTo: bob@example.com\r\nSubject: Sale\r\nX-Smtpeter-Tags: nov\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
	if err := c.SendMail("news@shop.example", []string{"bob@example.com"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	// Both are delivered upstream.
	delivered := map[string]upMsg{}
	deadline := time.Now().Add(20 * time.Second)
	for len(delivered) < 2 {
		for _, rcpt := range []string{"ann@example.com", "bob@example.com"} {
			if m, ok := up.find(rcpt); ok {
				delivered[rcpt] = m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered in time: %v", delivered)
		}
		time.Sleep(20 * time.Millisecond)
	}
	smtpID := ""
	for _, ev := range e.events(t, "/v1/events/email/bob@example.com") {
		if ev.Event == "attempt" {
			smtpID = ev.Data["id"].(string)
		}
	}
	if smtpID == "" {
		t.Fatal("no attempt event for the SMTP message")
	}

	// Click the tracked link of each delivered copy through the redirector.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tracked := regexp.MustCompile(`https?://` + regexp.QuoteMeta(clickDomain) + `/[^"'\s<>]+`)
	for rcpt, id := range map[string]string{"ann@example.com": apiID, "bob@example.com": smtpID} {
		link := string(tracked.Find(unQP(delivered[rcpt].data)))
		if link == "" {
			t.Fatalf("no tracked link in the message delivered to %s:\n%s", rcpt, delivered[rcpt].data)
		}
		seg, _, _ := strings.Cut(strings.TrimPrefix(link, "http://"+clickDomain+"/"), "/")
		if tok, err := codec.Decode(seg); err != nil || store.FormatID(tok.MessageID) != id || tok.Kind != rewrite.KindClick {
			t.Fatalf("tracked link %s of %s: token %+v, %v; want a click on copy %s", link, rcpt, tok, err, id)
		}
		req, _ := http.NewRequest(http.MethodGet, link, nil)
		req.Header.Set("User-Agent", browserUA) // a person, not Go's client (a machine)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://shop.example/sale?x=1" {
			t.Fatalf("click %s: %d to %q", link, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if err := shipper.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// The same story in /v1/events, the CSV log and the JSON log.
	today := time.Now().UTC().Format(time.DateOnly)
	for _, id := range []string{apiID, smtpID} {
		var got []string
		for _, ev := range e.events(t, "/v1/events/messageid/"+id) {
			got = append(got, ev.Event)
			if ev.Data["id"] != id || fmt.Sprint(ev.Data["tags"]) != "[nov]" {
				t.Fatalf("event of %s: %v", id, ev)
			}
		}
		if strings.Join(got, ",") != "attempt,delivery,click" {
			t.Fatalf("events of %s: %v", id, got)
		}
	}
	for _, logName := range []string{"attempts", "deliveries", "clicks"} {
		recs := parseCSV(t, mustGet(t, e, "/v1/logfiles/"+logName+"."+today+".log", keyShop))
		var js []map[string]any
		unmarshal(t, mustGet(t, e, "/v1/logfiles/"+logName+"."+today+".log/json", keyShop), &js)
		if len(recs) != 2 || len(js) != 2 {
			t.Fatalf("%s: %d CSV records, %d JSON records, want 2 each", logName, len(recs), len(js))
		}
		for i := range recs {
			if recs[i][0] != js[i]["id"] || (recs[i][0] != apiID && recs[i][0] != smtpID) {
				t.Fatalf("%s: CSV %q and JSON %v disagree", logName, recs[i], js[i])
			}
		}
		if logName == "clicks" && js[0]["url"] != "https://shop.example/sale?x=1" {
			t.Fatalf("click url %v", js[0]["url"])
		}
	}
	var stats statsAnswer
	unmarshal(t, mustGet(t, e, "/v1/stats", keyShop), &stats)
	if stats.Total.Sent != 2 || stats.Total.Delivered != 2 || stats.Total.Clicks != 2 || stats.Total.UniqueClicks != 2 {
		t.Fatalf("stats %+v", stats.Total)
	}
	unmarshal(t, mustGet(t, e, "/v1/stats?credential=shop-smtp", keyShop), &stats)
	if stats.Total.Sent != 1 || stats.Total.Clicks != 1 {
		t.Fatalf("stats for credential shop-smtp %+v", stats.Total)
	}
	// Both clicks were on the link recorded when the message was
	// rewritten, whatever period is asked.
	from := url.QueryEscape(time.Now().UTC().Add(-time.Hour).Format(time.RFC3339))
	for _, p := range []string{"/v1/links", "/v1/links?start=" + from} {
		var links struct{ Links []Link }
		unmarshal(t, mustGet(t, e, p, keyShop), &links)
		if l := links.Links; len(l) != 1 || l[0].URL != "https://shop.example/sale?x=1" || l[0].ID != store.LinkID(l[0].URL) ||
			l[0].Clicks != 2 || l[0].UniqueClicks != 2 {
			t.Fatalf("%s: %+v", p, l)
		}
	}
	// Another account sees none of it.
	for _, p := range []string{"/v1/events/messageid/" + apiID, "/v1/events/email/ann@example.com", "/v1/logfiles/clicks." + today + ".log/json"} {
		if b := mustGet(t, e, p, keyOther); strings.Contains(string(b), apiID) || strings.Contains(string(b), smtpID) {
			t.Fatalf("other account sees %s: %s", p, b)
		}
	}
}

type apiEvent struct {
	Event string         `json:"event"`
	Data  map[string]any `json:"data"`
}

func (e *env) events(t testing.TB, path string) []apiEvent {
	t.Helper()
	var out []apiEvent
	unmarshal(t, mustGet(t, e, path, keyShop), &out)
	return out
}

// unQP undoes quoted-printable soft breaks and =3D, enough to find URLs.
func unQP(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("=\r\n"), nil)
	return bytes.ReplaceAll(b, []byte("=3D"), []byte("="))
}

// browserUA is what a desktop browser sends: hits with it are human ones.
const browserUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
