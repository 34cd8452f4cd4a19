package redirector

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// BenchmarkHandler measures hits over real loopback HTTP: every request is
// journaled before its 302, written and fdatasynced (shared commits) in
// disk durability, written (fdatasynced every 10 ms behind) in process
// durability. The
// "bare302" case is the same HTTP stack answering a fixed 302 with no
// token and no journal (bare fasthttp), the baseline to read the others
// against.
func BenchmarkHandler(b *testing.B) {
	codec, err := rewrite.NewCodec(testKeyNew)
	if err != nil {
		b.Fatal(err)
	}
	tok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "shop.example.com"})
	bare := func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusFound)
		ctx.Response.Header.Set("Location", "https://shop.example.com"+string(ctx.Request.Header.RequestURI()))
	}
	for _, tc := range []struct {
		name string
		h    *Handler
	}{
		{"bare302", nil},
		{"disk", newEnvFor(b, codec)},
		{"process", newEnvFor(b, codec, store.JournalOptions{Durability: store.DurabilityProcess})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var srv *fasthttp.Server
			if tc.h != nil {
				srv = NewHTTPServer(tc.h, nil)
			} else {
				srv = &fasthttp.Server{Handler: bare, NoDefaultServerHeader: true, NoDefaultContentType: true}
			}
			go srv.Serve(ln)
			defer srv.Shutdown()
			tr := &http.Transport{MaxIdleConnsPerHost: 256}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			url := "http://" + ln.Addr().String() + "/" + tok + "/products/shoes?color=red"
			b.SetParallelism(32) // 32 × GOMAXPROCS connections, like wrk -c64 on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "click.example.com"
				for pb.Next() {
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusFound {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hits/s")
			if tc.h != nil {
				j := tc.h.journal
				c := float64(max(j.Commits(), 1))
				b.ReportMetric(float64(b.N)/c, "hits/commit")
				b.ReportMetric(j.CommitTime().Seconds()*1e3/c, "ms/commit")
				b.ReportMetric(j.CommitTime().Seconds()/b.Elapsed().Seconds(), "commit-busy")
			}
		})
	}
}
