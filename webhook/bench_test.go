package webhook

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// countReceiver is a fast local webhook receiver: it reads each request
// and counts it.
type countReceiver struct {
	n   atomic.Int64
	srv *httptest.Server
}

func newCountReceiver(b testing.TB) *countReceiver {
	cr := &countReceiver{}
	cr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		cr.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	cr.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	b.Cleanup(cr.srv.Close)
	return cr
}

func waitCount(b *testing.B, n *atomic.Int64, want int64, what string) {
	deadline := time.Now().Add(5 * time.Minute)
	for n.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d after 5 minutes", what, n.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkDeliver measures the webhook path alone on a real (fsynced)
// store: events stored in batches of 100 as the relay stores them (each
// queues a message in the event's transaction), claimed, signed, POSTed
// to a local receiver and recorded. It reports events delivered per
// second.
func BenchmarkDeliver(b *testing.B) {
	db, err := store.OpenRelay(filepath.Join(b.TempDir(), "relay.db"), store.RelayOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rc := newCountReceiver(b)
	w := &store.Webhook{ID: "wh_bench", Account: "shop", URL: rc.srv.URL + "/hook", Secret: NewSecret(), Created: time.Now()}
	if err := store.Create(context.Background(), db, w); err != nil {
		b.Fatal(err)
	}
	eng, err := New(Config{Store: db, Policy: testPolicy})
	if err != nil {
		b.Fatal(err)
	}
	eng.Start()
	defer eng.Shutdown(context.Background())
	const perRun, batch = 4000, 100
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		base := rc.n.Load()
		start := time.Now()
		for i := 0; i < perRun; i += batch {
			evs := make([]store.Event, batch)
			for j := range evs {
				evs[j] = store.Event{Log: store.LogDeliveries, Account: "shop", ID: db.NextID(), Time: time.Now().UTC(),
					Recipient: "rcpt@example.net", Tags: []string{"news"},
					Fields: map[string]string{"envelope": "news@example.com", "from": "relay", "to": "mx.example.net", "attempt": "1"}}
			}
			if err := db.AppendEvents(context.Background(), evs); err != nil {
				b.Fatal(err)
			}
		}
		waitCount(b, &rc.n, base+perRun, "deliveries")
		total += time.Since(start)
		if os.Getenv("WEBHOOK_BENCH_LOG") != "" {
			b.Logf("run: %v", time.Since(start))
		}
	}
	b.ReportMetric(float64(b.N*perRun)/total.Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}

// countSink is a fast SMTP sink.
type countSink struct {
	n atomic.Int64
}

type countSession struct{ s *countSink }

func (c *countSession) Mail(string, *smtp.MailOptions) error { return nil }
func (c *countSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (c *countSession) Reset()                               {}
func (c *countSession) Logout() error                        { return nil }
func (c *countSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	c.s.n.Add(1)
	return nil
}

// BenchmarkRelayWebhooks measures the whole relay (SMTP front, fsynced
// spool and store, delivery with tracking to a fast SMTP sink, as
// smtpd's BenchmarkRelay) with and without a webhook endpoint taking
// every event (accepted and delivered: two per message) to a local
// receiver, alternating in the same run, the engine running throughout.
// It reports messages per second off and on and their ratio (target >=
// 0.9), the median of the ratios of each pair of runs (robust to a busy
// neighbour in one run), the webhook events delivered per second in the
// on runs, and the on/off ratio counted until the last webhook arrived
// (drain).
// WEBHOOK_BENCH_NOSYNC=1 skips fsync, to see the CPU-bound case.
func BenchmarkRelayWebhooks(b *testing.B) {
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(400)) // as the relay binary
	}
	_, file, _, _ := runtime.Caller(0)
	msg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skip("../shared/bench/newsletter.eml is absent")
	}
	const sessions, perRun = 32, 400
	sink := &countSink{}
	ssrv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &countSession{sink}, nil }))
	ssrv.Domain = "sink.test"
	ssrv.ErrorLog = log.New(io.Discard, "", 0)
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go ssrv.Serve(sln)
	defer ssrv.Close()

	dir := b.TempDir()
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: os.Getenv("WEBHOOK_BENCH_NOSYNC") != ""})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var q *smtpd.Queue
	sp, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 10 << 20,
		Enqueue: func(c []*store.Copy) { q.Add(c) }})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	up, err := smtpd.NewSMTPUpstream(smtpd.SMTPUpstreamConfig{Name: "sink", Host: "127.0.0.1", Port: sln.Addr().(*net.TCPAddr).Port, TLS: "none", PoolSize: 32})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	codec, err := rewrite.NewCodec(rewrite.DevKey)
	if err != nil {
		b.Fatal(err)
	}
	q, err = smtpd.NewQueue(smtpd.QueueConfig{Store: st, Spool: sp, Upstreams: map[string]smtpd.Upstream{"sink": up}, Codec: codec, Workers: 32})
	if err != nil {
		b.Fatal(err)
	}
	q.Run()
	defer q.Shutdown(context.Background())

	rc := newCountReceiver(b)
	w := &store.Webhook{ID: "wh_bench", Account: "hooked", URL: rc.srv.URL + "/hook", Secret: NewSecret(), Created: time.Now()}
	if err := store.Create(context.Background(), st, w); err != nil {
		b.Fatal(err)
	}
	eng, err := New(Config{Store: st, Policy: testPolicy})
	if err != nil {
		b.Fatal(err)
	}
	eng.Start()
	defer eng.Shutdown(context.Background())

	front := func(account string) string {
		cred := &smtpd.Credential{Username: account, Account: account, Clicks: true, Opens: true,
			ClickDomain: "click.example.com", Scheme: "https", Upstream: "sink"}
		srv, err := smtpd.NewServer(smtpd.ServerConfig{Submitter: sp, MaxSessionsPerIP: 1000, MaxSessions: 1000, AllowPlaintextLoopback: true,
			Trusted: []smtpd.TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: cred}},
			Logger:  slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(ln, smtpd.ModeSTARTTLS)
		b.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	addrOff, addrOn := front("quiet"), front("hooked")

	// runOnce submits perRun messages and returns when the sink has them
	// all, and when the receiver has every webhook expected of them.
	var cpuOff, cpuOn time.Duration // process CPU time spent in the runs
	runOnce := func(addr string, hooks int64) (relay, drained time.Duration) {
		cpu0 := cpuTime()
		defer func() {
			if hooks == 0 {
				cpuOff += cpuTime() - cpu0
			} else {
				cpuOn += cpuTime() - cpu0
			}
		}()
		start := time.Now()
		base, hbase := sink.n.Load(), rc.n.Load()
		var wg sync.WaitGroup
		var next, failed atomic.Int64
		for range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := smtp.Dial(addr)
				if err != nil {
					b.Error(err)
					failed.Add(1)
					return
				}
				defer c.Close()
				for next.Add(1) <= perRun {
					if err := c.SendMail("news@example.com", []string{"rcpt@example.net"}, bytesReader(msg)); err != nil {
						b.Error(err)
						failed.Add(1)
						return
					}
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			b.FailNow()
		}
		waitCount(b, &sink.n, base+perRun, "relayed messages")
		relay = time.Since(start)
		waitCount(b, &rc.n, hbase+hooks, "webhooks")
		return relay, time.Since(start)
	}
	runOnce(addrOff, 0) // warm-up
	runOnce(addrOn, 2*perRun)
	cpuOff, cpuOn = 0, 0
	b.ResetTimer()
	var off, on, onDrained time.Duration
	var ratios []float64 // per pair of runs, back to back
	for i := range b.N {
		// Alternate which goes first, so neither gains from the order.
		var pairOff, pairOn time.Duration
		for j := range 2 {
			if (i+j)%2 == 0 {
				pairOff, _ = runOnce(addrOff, 0)
				off += pairOff
			} else {
				d, dd := runOnce(addrOn, 2*perRun)
				pairOn = d
				on += d
				onDrained += dd
			}
		}
		ratios = append(ratios, pairOff.Seconds()/pairOn.Seconds())
	}
	slices.Sort(ratios)
	total := float64(b.N * perRun)
	offRate, onRate := total/off.Seconds(), total/on.Seconds()
	b.ReportMetric(offRate, "off-msgs/s")
	b.ReportMetric(onRate, "on-msgs/s")
	b.ReportMetric(onRate/offRate, "on/off")
	b.ReportMetric(ratios[len(ratios)/2], "on/off-median")
	b.ReportMetric((total/onDrained.Seconds())/offRate, "on/off-drained")
	b.ReportMetric(2*total/onDrained.Seconds(), "webhooks/s")
	// CPU per message (the receiver's included, as it runs in this
	// process): what the ratio would approach on a machine where the
	// relay is CPU-bound and has the cores to itself.
	b.ReportMetric(float64(cpuOff.Microseconds())/total, "cpu-µs/msg-off")
	b.ReportMetric(float64(cpuOn.Microseconds())/total, "cpu-µs/msg-on")
	b.ReportMetric(0, "ns/op")
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
