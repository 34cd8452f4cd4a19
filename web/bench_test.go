package web

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// The benchmarks' store: a million human click events over the 30 days
// before today, on 50 links of 200 messages (5 000 copies each, 8 clicks
// per clicked copy), plus every copy's attempt and delivery, kept with
// their aggregates as the relay keeps them.
const (
	benchClicks   = 1_000_000
	benchDays     = 30
	benchMessages = 200
)

var (
	benchOnce  sync.Once
	benchDir   string
	benchErr   error
	benchSrv   *httptest.Server
	benchStore *store.Relay
	benchMsg   uint64
)

func benchEnv(b *testing.B) (*httptest.Server, *http.Client) {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "trackrelay-web-bench-")
		if benchErr != nil {
			return
		}
		st, err := store.OpenRelay(filepath.Join(benchDir, "relay.db"), store.RelayOptions{NoSync: true})
		if err != nil {
			benchErr = err
			return
		}
		benchStore = st
		ctx := context.Background()
		start := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -benchDays)
		step := time.Duration(benchDays) * 24 * time.Hour / benchClicks
		const copiesPerMsg = benchClicks / 8 / benchMessages
		msgIDs := make([]uint64, benchMessages)
		for i := range msgIDs {
			msgIDs[i] = uint64(1_000_000_000 + i)
			m := &store.Message{ID: msgIDs[i], SpoolPath: "x", From: "news@shop.example", Recipients: []string{"a@example.com"},
				Created: start.Add(time.Duration(i) * time.Hour), Account: "shop", Subject: "Newsletter " + strconv.Itoa(i), Tags: []string{"newsletter"}}
			if err := st.AddMessage(ctx, m, nil, nil); err != nil {
				benchErr = err
				return
			}
			links := make([]store.MessageLink, 50)
			for p := range links {
				links[p] = store.MessageLink{Position: uint32(p), URL: "https://shop.example/product/" + strconv.Itoa(p)}
			}
			if err := st.PutMessageLinks(ctx, m.ID, links); err != nil {
				benchErr = err
				return
			}
		}
		benchMsg = msgIDs[benchMessages/2]
		const batch = 20_000
		evs := make([]store.Event, 0, batch)
		flush := func() bool {
			if err := st.AppendEvents(ctx, evs); err != nil {
				benchErr = err
				return false
			}
			evs = evs[:0]
			return true
		}
		for i := 0; i < benchClicks; i++ {
			copyID := uint64(1 + i/8)
			msg := msgIDs[(copyID-1)/copiesPerMsg%benchMessages]
			t := start.Add(time.Duration(i) * step)
			rcpt := "reader" + strconv.Itoa(int(copyID)) + "@example.com"
			tags := []string{"newsletter"}
			if i%8 == 0 {
				for _, log := range []string{store.LogAttempts, store.LogDeliveries} {
					evs = append(evs, store.Event{Log: log, Account: "shop", ID: copyID, Time: t, Recipient: rcpt, Tags: tags, Message: msg, Credential: "news",
						Fields: map[string]string{"envelope": "news@shop.example"}})
				}
			}
			pos := uint32(i % 50)
			u := "https://shop.example/product/" + strconv.Itoa(int(pos))
			evs = append(evs, store.Event{Log: store.LogClicks, Account: "shop", ID: copyID, Time: t, Recipient: rcpt, Tags: tags,
				Message: msg, Credential: "news", Link: &store.EventLink{Position: pos, URL: u},
				Fields: map[string]string{"headers": `{"User-Agent":"Mozilla/5.0 (X11) Chrome/131.0"}`, "ip": "192.0.2.7", "url": u, "destination": u}})
			if len(evs) >= batch && !flush() {
				return
			}
		}
		if !flush() {
			return
		}
		ops := &api.Ops{Store: st, BcryptCost: bcrypt.MinCost}
		root := &api.Principal{Operator: true}
		if _, err := ops.CreateAccount(ctx, root, "shop", api.AccountSettings{}); err != nil {
			benchErr = err
			return
		}
		if _, err := ops.CreateUser(ctx, &api.Principal{Operator: true, Account: "shop"}, api.NewUser{Login: "ann", Password: testPassword}); err != nil {
			benchErr = err
			return
		}
		kr, _ := api.NewKeyring(nil)
		apiH := api.New(api.Config{Submitter: nil0{}, Store: st, Keys: kr})
		h, err := New(Config{Store: st, Ops: ops, API: apiH})
		if err != nil {
			benchErr = err
			return
		}
		benchSrv = httptest.NewServer(h)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	// A logged-in browser.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(benchSrv.URL + "/login")
	if err != nil {
		b.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tok := tokenRe.FindStringSubmatch(string(page))[1]
	resp, err = c.PostForm(benchSrv.URL+"/login", url.Values{"token": {tok}, "login": {"ann"}, "password": {testPassword}})
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("login: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	return benchSrv, c
}

// nil0 is a Submitter the benchmarks never use.
type nil0 struct{}

func (nil0) Submit(context.Context, *smtpd.Submission, io.Reader) (*smtpd.Receipt, error) {
	return nil, io.EOF
}

func benchPage(b *testing.B, path string) {
	srv, c := benchEnv(b)
	b.ResetTimer()
	var n int64
	for b.Loop() {
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			b.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	b.ReportMetric(float64(n), "bytes/page")
}

// The dashboard's pages over 30 days of a million clicks, over HTTP, each
// with its session check.
func BenchmarkOverview30Days(b *testing.B)     { benchPage(b, "/?range=30d") }
func BenchmarkOverview7DaysHours(b *testing.B) { benchPage(b, "/?range=7d&step=hour") }
func BenchmarkOverviewTag30Days(b *testing.B)  { benchPage(b, "/?range=30d&tag=newsletter") }
func BenchmarkLinks30Days(b *testing.B)        { benchPage(b, "/links?range=30d") }
func BenchmarkLink30Days(b *testing.B) {
	benchPage(b, "/links/"+store.LinkID("https://shop.example/product/7")+"?range=30d")
}
func BenchmarkMessages(b *testing.B) { benchPage(b, "/messages") }
func BenchmarkMessageLinks(b *testing.B) {
	benchEnv(b)
	benchPage(b, "/links?message="+store.FormatID(benchMsg))
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchSrv != nil {
		benchSrv.Close()
		benchStore.Close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}
