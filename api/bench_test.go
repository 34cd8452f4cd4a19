package api

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// benchClicks is how many click events the benchmarks' store holds,
// spread evenly over the benchDays days before yesterday (days that are
// over, as the rollups of real past days are).
const (
	benchClicks = 1_000_000
	benchDays   = 30
)

var (
	benchStart = time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -benchDays-1)
	benchMid   = benchStart.AddDate(0, 0, benchDays/2).Format(time.DateOnly) // the downloaded day
	benchEnd   = benchStart.AddDate(0, 0, benchDays-1).Format(time.DateOnly) // inclusive
	benchFrom  = benchStart.Format(time.DateOnly)
)

var (
	benchOnce sync.Once
	benchEnv  *env
	benchDir  string
	benchErr  error
)

// bigEnv returns an API over a store with a million click events. It is
// built once per test binary run (about a minute) and removed by TestMain.
func bigEnv(b *testing.B) *env {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "trackrelay-api-bench-")
		if benchErr != nil {
			return
		}
		relay, err := store.OpenRelay(filepath.Join(benchDir, "relay.db"), store.RelayOptions{NoSync: true})
		if err != nil {
			benchErr = err
			return
		}
		start := benchStart
		step := time.Duration(benchDays) * 24 * time.Hour / benchClicks
		const batch = 20_000
		evs := make([]store.Event, 0, batch)
		tags := [][]string{{"newsletter"}, {"newsletter", "vip"}, {"receipt"}}
		for i := 0; i < benchClicks; i++ {
			copyID := uint64(1 + i/8) // 8 clicks per copy
			url := "https://shop.example/product/" + strconv.Itoa(i%50)
			evs = append(evs, store.Event{
				Log: store.LogClicks, Account: "shop", ID: copyID, Time: start.Add(time.Duration(i) * step),
				Recipient: "reader" + strconv.Itoa(int(copyID%20000)) + "@example.com", Tags: tags[copyID%3],
				Fields: map[string]string{"headers": `{"User-Agent":"Mozilla/5.0"}`, "ip": "192.0.2.7", "url": url, "destination": url},
			})
			if len(evs) == batch {
				if err := relay.AppendEvents(context.Background(), evs); err != nil {
					benchErr = err
					return
				}
				evs = evs[:0]
			}
		}
		h, _ := bcrypt.GenerateFromPassword([]byte(keyShop), bcrypt.MinCost)
		kr, err := NewKeyring([]Key{{Hash: h, Cred: &smtpd.Credential{Username: "shop-api", Account: "shop"}}})
		if err != nil {
			benchErr = err
			return
		}
		now := func() time.Time { return start.AddDate(0, 0, benchDays) }
		benchEnv = &env{relay: relay}
		benchEnv.srv = newTestServer(New(Config{Submitter: failingSubmitter{io.EOF}, Store: relay, Keys: kr, Now: now}))
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	benchEnv.t = b
	return benchEnv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchEnv != nil {
		benchEnv.srv.Close()
		benchEnv.relay.Close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// fetch GETs path and discards the body, returning its size.
func fetch(b *testing.B, e *env, path string) int64 {
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+keyShop)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("%s: %d, %v", path, resp.StatusCode, err)
	}
	return n
}

// BenchmarkScanDayBaseline reads one day of clicks straight from the store:
// the baseline for BenchmarkLogDay.
func BenchmarkScanDayBaseline(b *testing.B) {
	e := bigEnv(b)
	day, _ := time.Parse(time.DateOnly, benchMid)
	b.ResetTimer()
	for b.Loop() {
		n := 0
		for _, err := range e.relay.Events(context.Background(), "shop", store.LogClicks, day, day.AddDate(0, 0, 1)) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		b.ReportMetric(float64(n), "events/op")
	}
}

// BenchmarkLogDay downloads one day's clicks log over HTTP.
func BenchmarkLogDay(b *testing.B) {
	e := bigEnv(b)
	for _, v := range []string{"", "/header", "/json"} {
		b.Run("csv"+v, func(b *testing.B) {
			for b.Loop() {
				b.SetBytes(fetch(b, e, "/v1/logfiles/clicks."+benchMid+".log"+v))
			}
		})
	}
}

// BenchmarkScanMonthBaseline reads the whole month of clicks from the
// store: the baseline for BenchmarkLinksMonth.
func BenchmarkScanMonthBaseline(b *testing.B) {
	e := bigEnv(b)
	start := benchStart
	for b.Loop() {
		n := 0
		for _, err := range e.relay.Events(context.Background(), "shop", store.LogClicks, start, start.AddDate(0, 0, benchDays)) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		b.ReportMetric(float64(n), "events/op")
	}
}

// BenchmarkMonth asks /v1/links and /v1/stats for the month, which the
// aggregates answer.
func BenchmarkMonth(b *testing.B) {
	e := bigEnv(b)
	queries := []struct{ name, path string }{
		{"links", "/v1/links?start=" + benchFrom + "&end=" + benchEnd},
		{"links-tag", "/v1/links?start=" + benchFrom + "&end=" + benchEnd + "&tag=vip"},
		{"stats", "/v1/stats?start=" + benchFrom + "&end=" + benchEnd},
	}
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				fetch(b, e, q.path)
			}
		})
	}
}
