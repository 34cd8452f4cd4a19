// Command ceiling serves the baselines the redirector benchmark reads
// trackrelay against (redirector/bench/wrk.sh):
//
//   - bare: a fasthttp 302 that writes nothing;
//
//   - journal: the same 302 answered only after the request is appended to
//     a store.Journal (in -durability process or disk), with no token
//     check, no relay and no metrics: the most a redirector that keeps the
//     journal's guarantee answers on the machine;
//
//   - redirector: the real redirector (redirector.Start: token check, hit
//     record, journal, metrics, shipper) whose sink only acknowledges each
//     batch, storing nothing. It is a measurement baseline, never the
//     product: the gap between it and `trackrelay serve` is the relay's
//     ingest of each hit; the gap between it and -mode journal is the rest
//     of the redirector's own work.
//
//     ceiling -addr 127.0.0.1:18484 -mode bare|journal|redirector -data DIR [-durability process|disk] [-keys FILE -domain HOST:PORT]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18484", "listen address")
	mode := flag.String("mode", "journal", "bare, journal or redirector")
	data := flag.String("data", "", "directory for the journal (modes journal and redirector)")
	durability := flag.String("durability", "process", "the journal's durability: process or disk")
	keys := flag.String("keys", "", "token key file (mode redirector)")
	domain := flag.String("domain", "", "click domain served (mode redirector)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here until the process stops")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	opts := store.JournalOptions{Durability: store.DurabilityProcess}
	switch *durability {
	case "process":
	case "disk":
		opts.Durability = store.DurabilityDisk
	default:
		log.Fatalf("ceiling: unknown durability %q", *durability)
	}
	if *mode != "bare" && *data == "" {
		log.Fatalf("ceiling: -data is required with -mode %s", *mode)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if *mode == "redirector" {
		runRedirector(*addr, filepath.Join(*data, "ceiling-journal.db"), opts, *keys, *domain, sig)
		return
	}
	var j *store.Journal
	switch *mode {
	case "bare":
	case "journal":
		var err error
		if j, err = store.OpenJournalWith(filepath.Join(*data, "journal.db"), opts); err != nil {
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

// runRedirector serves the real redirector with a sink that only
// acknowledges, until a signal.
func runRedirector(addr, journal string, opts store.JournalOptions, keyFile, domain string, sig <-chan os.Signal) {
	if keyFile == "" || domain == "" {
		log.Fatal("ceiling: -keys and -domain are required with -mode redirector")
	}
	f, err := os.Open(keyFile)
	if err != nil {
		log.Fatal(err)
	}
	ks, err := rewrite.ReadKeys(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	codec, err := rewrite.NewCodec(ks[0], ks[1:]...)
	if err != nil {
		log.Fatal(err)
	}
	ack := redirector.SinkFunc(func(context.Context, []store.Hit) error { return nil })
	svc, err := redirector.Start(redirector.Options{
		Handler:     redirector.Config{Codec: codec, Domains: []string{domain}},
		JournalPath: journal, Journal: opts, Listen: addr,
		Sink: redirector.CheckedSink(ack),
	})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-sig:
	case err := <-svc.Err():
		log.Print(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
}
