// Command ceiling serves the two baselines the redirector benchmark reads
// trackrelay against (redirector/bench/wrk.sh): a bare fasthttp 302 that
// writes nothing, and the same 302 answered only after the request is
// made durable in a store.Journal, with no token check, no relay and no
// metrics. The second is the most a redirector that keeps the journal's
// guarantee can answer on the machine; the gap between it and trackrelay
// is the cost of everything else a hit does.
//
//	ceiling -addr 127.0.0.1:18484 -mode bare|journal -data DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/trackrelay/trackrelay/store"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18484", "listen address")
	mode := flag.String("mode", "journal", "bare: a 302 only; journal: a 302 after a durable journal append")
	data := flag.String("data", "", "directory for the journal (mode journal)")
	flag.Parse()
	var j *store.Journal
	switch *mode {
	case "bare":
	case "journal":
		if *data == "" {
			log.Fatal("ceiling: -data is required with -mode journal")
		}
		var err error
		if j, err = store.OpenJournal(filepath.Join(*data, "journal.db")); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("ceiling: unknown mode %q", *mode)
	}
	// The shipper's part, reduced to its least: settle what is logged.
	go func() {
		for j != nil {
			hits, _, err := j.Next(1000)
			if err != nil {
				return
			}
			ids := make([]string, len(hits))
			for i := range hits {
				ids[i] = hits[i].ID
			}
			if len(ids) == 0 || j.Delete(ids) != nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	srv := &fasthttp.Server{
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			uri := string(ctx.Request.Header.RequestURI())
			if j != nil {
				h := store.Hit{ID: j.NewHitID(), Time: time.Now(), Kind: "click", URL: uri, UserAgent: string(ctx.Request.Header.UserAgent())}
				if err := j.Append(context.Background(), h); err != nil {
					ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
					return
				}
			}
			ctx.SetStatusCode(fasthttp.StatusFound)
			ctx.Response.Header.Set("Location", "https://shop.example.com"+uri)
		},
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		_ = srv.Shutdown()
	}()
	if err := srv.ListenAndServe(*addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if j != nil {
		if err := j.Close(); err != nil {
			log.Fatal(err)
		}
	}
}
