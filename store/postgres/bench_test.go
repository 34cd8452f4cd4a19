package postgres

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/store/postgres/pgtest"
)

// Benchmarks of the PostgreSQL store, each against bbolt in the same run
// (both fsync every commit: the server here keeps fsync and synchronous
// commit on), reported as ratios.

var (
	durableOnce sync.Once
	durable     *pgtest.Server
	durableErr  error
)

// durableDSN makes a database on a server started with fsync on, shared
// by the benchmarks of this binary (stopped by TestMain).
func durableDSN(b *testing.B) string {
	b.Helper()
	durableOnce.Do(func() { durable, durableErr = pgtest.Start(pgtest.Options{Durable: true}) })
	if durableErr == pgtest.ErrNoPostgres {
		b.Skip(durableErr)
	}
	if durableErr != nil {
		b.Fatal(durableErr)
	}
	dsn, err := durable.NewDatabase()
	if err != nil {
		b.Fatal(err)
	}
	return dsn
}

func stopDurable() {
	if durable != nil {
		durable.Stop()
	}
}

type backend struct {
	name string
	open func(b *testing.B) store.DB
}

func backends() []backend {
	return []backend{
		{"bbolt", func(b *testing.B) store.DB {
			r, err := store.OpenRelay(filepath.Join(b.TempDir(), "relay.db"), store.RelayOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { r.Close() })
			return r
		}},
		{"postgres", func(b *testing.B) store.DB {
			d, err := Open(context.Background(), Options{DSN: durableDSN(b), Node: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { d.Close() })
			return d
		}},
	}
}

// sink is a fast SMTP sink that counts messages.
type sink struct {
	n    atomic.Int64
	addr string
}

type sinkSession struct{ s *sink }

func (c *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (c *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (c *sinkSession) Reset()                               {}
func (c *sinkSession) Logout() error                        { return nil }
func (c *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	c.s.n.Add(1)
	return nil
}

// relayRig is the relay's mail path on one store: SMTP front, fsynced
// spool, delivery with tracking on, to the sink.
func relayRig(b *testing.B, st store.DB, sk *sink) string {
	dir := b.TempDir()
	var q *smtpd.Queue
	sp, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 10 << 20,
		Enqueue: func(c []*store.Copy) { q.Add(c) }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	_, port, _ := net.SplitHostPort(sk.addr)
	var p int
	fmt.Sscan(port, &p)
	up, err := smtpd.NewSMTPUpstream(smtpd.SMTPUpstreamConfig{Name: "sink", Host: "127.0.0.1", Port: p, TLS: "none", PoolSize: 32})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { up.Close() })
	codec, err := rewrite.NewCodec(rewrite.DevKey)
	if err != nil {
		b.Fatal(err)
	}
	q, err = smtpd.NewQueue(smtpd.QueueConfig{Store: st, Spool: sp, Upstreams: map[string]smtpd.Upstream{"sink": up}, Codec: codec, Workers: 32})
	if err != nil {
		b.Fatal(err)
	}
	q.Run()
	b.Cleanup(func() { q.Shutdown(context.Background()) })
	cred := &smtpd.Credential{Username: "bench", Account: "bench", Clicks: true, Opens: true, ClickDomain: "click.example.com", Scheme: "https", Upstream: "sink"}
	srv, err := smtpd.NewServer(smtpd.ServerConfig{Submitter: sp, MaxSessionsPerIP: 1000, MaxSessions: 1000, AllowPlaintextLoopback: true,
		Trusted: []smtpd.TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: cred}}, Logger: slog.New(slog.DiscardHandler)})
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

// BenchmarkRelayStore runs the whole relay (as smtpd's BenchmarkRelay
// does: 32 SMTP sessions, the 36 KB newsletter, tracking on, every
// message through the fsynced spool, the store and delivery to a sink) on
// bbolt and on PostgreSQL, alternating, and reports messages per second
// of each and their ratio.
func BenchmarkRelayStore(b *testing.B) {
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	_, file, _, _ := runtime.Caller(0)
	msg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skip("../shared/bench/newsletter.eml is absent")
	}
	const sessions, perRun = 32, 400
	sk := &sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sk}, nil }))
	srv.Domain = "sink.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sk.addr = ln.Addr().String()
	go srv.Serve(ln)
	defer srv.Close()
	bs := backends()
	addrs := make([]string, len(bs))
	for i, be := range bs {
		addrs[i] = relayRig(b, be.open(b), sk)
	}
	runOnce := func(addr string) time.Duration {
		start := time.Now()
		base := sk.n.Load()
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
					if err := c.SendMail("news@example.com", []string{"rcpt@example.net"}, bytes.NewReader(msg)); err != nil {
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
		for sk.n.Load() < base+perRun {
			time.Sleep(time.Millisecond)
		}
		return time.Since(start)
	}
	for _, a := range addrs {
		runOnce(a) // warm-up
	}
	b.ResetTimer()
	took := make([]time.Duration, len(bs))
	for range b.N {
		for i, a := range addrs {
			took[i] += runOnce(a)
		}
	}
	total := float64(b.N * perRun)
	bolt, pg := total/took[0].Seconds(), total/took[1].Seconds()
	b.ReportMetric(bolt, "bbolt-msgs/s")
	b.ReportMetric(pg, "postgres-msgs/s")
	b.ReportMetric(pg/bolt, "postgres/bbolt")
	b.ReportMetric(0, "ns/op")
}

// seedCopies adds n delivered one-copy messages to st, with links
// recorded, from 16 writers at once.
func seedCopies(b *testing.B, st store.DB, n, links int) []*store.Copy {
	ctx := context.Background()
	out := make([]*store.Copy, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				m := &store.Message{ID: st.NextID(), SpoolPath: fmt.Sprint("m", i), Recipients: []string{fmt.Sprintf("r%d@example.org", i)}, Created: time.Now().UTC(), Remaining: 1}
				c := &store.Copy{ID: st.NextID(), MessageID: m.ID, Account: "shop", Credential: "shop", Recipient: m.Recipients[0], Tags: []string{"news", fmt.Sprint("t", i%4)},
					State: store.CopyQueued, Created: m.Created}
				if err := st.AddMessage(ctx, m, []*store.Copy{c}, nil); err != nil {
					b.Error(err)
					return
				}
				var ls []store.MessageLink
				for p := range links {
					ls = append(ls, store.MessageLink{Position: uint32(p), URL: fmt.Sprintf("https://shop.example.com/p/%d?utm=news", p)})
				}
				if err := st.PutMessageLinks(ctx, m.ID, ls); err != nil {
					b.Error(err)
					return
				}
				c.State = store.CopyDelivered
				if _, err := st.UpdateCopy(ctx, c, []store.Event{{Log: store.LogDeliveries, Account: "shop", ID: c.ID, Time: c.Created, Recipient: c.Recipient, Tags: c.Tags}}); err != nil {
					b.Error(err)
					return
				}
				out[i] = c
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return out
}

// hitBatch makes batch click hits on copies, spread over days days
// before now, ids unique through ids.
func hitBatch(ids *store.IDGen, copies []*store.Copy, links, batch, days int, seq int) []store.Hit {
	hits := make([]store.Hit, batch)
	now := time.Now().UTC()
	for k := range hits {
		i := seq*batch + k
		c := copies[i%len(copies)]
		at := now.Add(-time.Duration(i%(days*24)) * time.Hour).Add(-time.Duration(k) * time.Millisecond)
		hits[k] = store.Hit{ID: store.FormatID(ids.Next()) + "aaaaaaaa", Time: at, Kind: "click", MessageID: c.ID, Position: uint32(i % links),
			URL: fmt.Sprintf("https://shop.example.com/p/%d?utm=news", i%links), IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/120", Protocol: "HTTP/1.1"}
	}
	return hits
}

// BenchmarkIngestHits stores batches of 1000 click hits on real copies
// (the shipper's batches) in bbolt and in PostgreSQL, and reports hits
// per second of each and their ratio.
func BenchmarkIngestHits(b *testing.B) {
	const batch = 1000
	bs := backends()
	dbs := make([]store.DB, len(bs))
	copies := make([][]*store.Copy, len(bs))
	for i, be := range bs {
		dbs[i] = be.open(b)
		copies[i] = seedCopies(b, dbs[i], 200, 8)
	}
	var ids store.IDGen
	took := make([]time.Duration, len(bs))
	b.ResetTimer()
	rounds := max(1, b.N/batch)
	for r := range rounds {
		for i, db := range dbs {
			hits := hitBatch(&ids, copies[i], 8, batch, 1, r)
			start := time.Now()
			if err := db.IngestHits(context.Background(), hits); err != nil {
				b.Fatal(err)
			}
			took[i] += time.Since(start)
		}
	}
	n := float64(rounds * batch)
	bolt, pg := n/took[0].Seconds(), n/took[1].Seconds()
	b.ReportMetric(bolt, "bbolt-hits/s")
	b.ReportMetric(pg, "postgres-hits/s")
	b.ReportMetric(pg/bolt, "postgres/bbolt")
	b.ReportMetric(0, "ns/op")
}

// links1M are the filled stores of BenchmarkLinks1M, made once per test
// binary (the framework calls a benchmark several times) and closed by
// TestMain.
var (
	links1MOnce   sync.Once
	links1MDBs    []store.DB
	links1MClose  []func()
	links1MEvents int
)

func closeLinks1M() {
	for _, f := range links1MClose {
		f()
	}
}

const links1MLinks, links1MDays = 20, 30

func fillLinks1M(b *testing.B) []store.DB {
	links1MOnce.Do(func() {
		total := 1_000_000
		if v := os.Getenv("BENCH_EVENTS"); v != "" {
			fmt.Sscan(v, &total)
		}
		links1MEvents = total
		const batch = 5000
		var ids store.IDGen
		for _, name := range []string{"bbolt", "postgres"} {
			var db store.DB
			if name == "bbolt" {
				dir, err := os.MkdirTemp("", "trackrelay-bench-")
				if err != nil {
					b.Fatal(err)
				}
				r, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
				if err != nil {
					b.Fatal(err)
				}
				db = r
				links1MClose = append(links1MClose, func() { r.Close(); os.RemoveAll(dir) })
			} else {
				d, err := Open(context.Background(), Options{DSN: durableDSN(b), Node: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				db = d
				links1MClose = append(links1MClose, func() { d.Close() })
			}
			copies := seedCopies(b, db, 5000, links1MLinks)
			start := time.Now()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 4 { // as several redirectors ship at once
				wg.Add(1)
				go func() {
					defer wg.Done()
					for r := int(next.Add(1)) - 1; r < total/batch; r = int(next.Add(1)) - 1 {
						if err := db.IngestHits(context.Background(), hitBatch(&ids, copies, links1MLinks, batch, links1MDays, r)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if b.Failed() {
				b.FailNow()
			}
			fmt.Fprintf(os.Stderr, "BenchmarkLinks1M: %s: %d click events stored in %v\n", name, total, time.Since(start).Round(time.Millisecond))
			links1MDBs = append(links1MDBs, db)
		}
	})
	if len(links1MDBs) != 2 {
		b.Fatal("the stores of BenchmarkLinks1M were not made")
	}
	return links1MDBs
}

// BenchmarkLinks1M fills bbolt and PostgreSQL with a million click events
// (5000 copies, 20 links, 30 days, shipped by 4 writers at once) and
// measures what /v1/links asks for a month (TopLinks) and a day of the
// clicks log (Events), reporting each backend's time and the ratio, right
// after the writes (PostgreSQL's counter tables still hold the dead rows
// of their updates). Set BENCH_EVENTS to use fewer events.
func BenchmarkLinks1M(b *testing.B) { benchLinks(b, fillLinks1M(b)) }

var vacuumOnce sync.Once

// BenchmarkLinks1MVacuumed is BenchmarkLinks1M on the same stores once
// PostgreSQL has vacuumed and analyzed them, as autovacuum soon does.
func BenchmarkLinks1MVacuumed(b *testing.B) {
	dbs := fillLinks1M(b)
	vacuumOnce.Do(func() {
		if _, err := dbs[1].(*DB).pool.Exec(context.Background(), `VACUUM (ANALYZE)`); err != nil {
			b.Fatal(err)
		}
	})
	benchLinks(b, dbs)
}

func benchLinks(b *testing.B, dbs []store.DB) {
	total, links, days := links1MEvents, links1MLinks, links1MDays
	ctx := context.Background()
	now := time.Now().UTC()
	top := make([]time.Duration, len(dbs))
	day := make([]time.Duration, len(dbs))
	b.ResetTimer()
	for range b.N {
		for i, db := range dbs {
			start := time.Now()
			ls, err := db.TopLinks(ctx, "shop", "", now.AddDate(0, 0, -31), now, 50)
			if err != nil || len(ls) != links {
				b.Fatalf("top links: %d %v", len(ls), err)
			}
			top[i] += time.Since(start)
			start = time.Now()
			d := now.AddDate(0, 0, -3).Truncate(24 * time.Hour)
			n := 0
			for _, err := range db.Events(ctx, "shop", store.LogClicks, d, d.Add(24*time.Hour)) {
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			if n < total/days/2 {
				b.Fatalf("a day's clicks: %d", n)
			}
			day[i] += time.Since(start)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(top[0]), "bbolt-links-ms")
	b.ReportMetric(per(top[1]), "postgres-links-ms")
	b.ReportMetric(per(top[1])/per(top[0]), "links-postgres/bbolt")
	b.ReportMetric(per(day[0]), "bbolt-day-ms")
	b.ReportMetric(per(day[1]), "postgres-day-ms")
	b.ReportMetric(per(day[1])/per(day[0]), "day-postgres/bbolt")
	b.ReportMetric(0, "ns/op")
}
