package smtpd

import (
	"context"
	"fmt"
	"io"
	"log"
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

	"github.com/trackrelay/trackrelay/store"
)

// countSink is a fast SMTP sink: it reads each message and counts it.
type countSink struct {
	n    atomic.Int64
	addr string
}

// relay submits n copies of msg to the SMTP front at addr over sessions
// connections at once and returns, with the time taken, once the sink
// has them all.
func (s *countSink) relay(b *testing.B, addr, from string, msg []byte, sessions, n int) time.Duration {
	start := time.Now()
	base := s.n.Load()
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
			for next.Add(1) <= int64(n) {
				if err := c.SendMail(from, []string{"rcpt@example.net"}, bytesReader(msg)); err != nil {
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
	for s.n.Load() < base+int64(n) {
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
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

func newCountSink(b testing.TB) *countSink {
	s := &countSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &countSession{s}, nil }))
	srv.Domain = "sink.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return s
}

// BenchmarkRelay measures the whole relay end to end: parallel SMTP
// sessions submit the 36 KB newsletter through the SMTP front, the
// fsynced spool and store, and delivery (rewrite included) to a fast
// sink; a message counts once the sink has it. It reports messages per
// second with tracking off and on, and their ratio (target >= 0.8).
//
// The garbage collector runs as in the relay binary: `trackrelay relay`
// and `serve` set GOGC=400 unless the environment sets GOGC
// (cmd/trackrelay, serverGCPercent).
func BenchmarkRelay(b *testing.B) {
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	_, file, _, _ := runtime.Caller(0)
	msg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skip("../shared/bench/newsletter.eml is absent")
	}
	const sessions, perRun = 32, 400
	sink := newCountSink(b)
	dir := b.TempDir()
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var q *Queue
	sp, err := NewSpool(SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 10 << 20,
		Enqueue: func(c []*store.Copy) { q.Add(c) }})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	_, port, _ := net.SplitHostPort(sink.addr)
	var p int
	fmt.Sscan(port, &p)
	up, err := NewSMTPUpstream(SMTPUpstreamConfig{Name: "sink", Host: "127.0.0.1", Port: p, TLS: "none", PoolSize: 32})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	q, err = NewQueue(QueueConfig{Store: st, Spool: sp, Upstreams: map[string]Upstream{"sink": up}, Codec: dlCodec(b), Workers: 32})
	if err != nil {
		b.Fatal(err)
	}
	q.Run()
	defer q.Shutdown(context.Background())

	front := func(track bool) string {
		cred := &Credential{Username: "bench", Account: "bench", Clicks: track, Opens: track,
			ClickDomain: "click.example.com", Scheme: "https", Upstream: "sink"}
		srv, err := NewServer(ServerConfig{Submitter: sp, MaxSessionsPerIP: 1000, MaxSessions: 1000, AllowPlaintextLoopback: true,
			Trusted: []TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Cred: cred}},
			Logger:  discardLogger()})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(ln, ModeSTARTTLS)
		b.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	addrOff, addrOn := front(false), front(true)

	runOnce := func(addr string) time.Duration { return sink.relay(b, addr, "news@example.com", msg, sessions, perRun) }
	runOnce(addrOff) // warm-up
	b.ResetTimer()
	var on, off time.Duration
	for range b.N {
		off += runOnce(addrOff)
		on += runOnce(addrOn)
	}
	total := float64(b.N * perRun)
	offRate, onRate := total/off.Seconds(), total/on.Seconds()
	b.ReportMetric(offRate, "off-msgs/s")
	b.ReportMetric(onRate, "on-msgs/s")
	b.ReportMetric(onRate/offRate, "on/off")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWriteCopy measures the delivery-side CPU cost of one copy of
// the newsletter (spool file to upstream writer) with tracking off and
// on, and reports their ratio: the bound BenchmarkRelay approaches when
// the relay is CPU-bound rather than fsync-bound.
func BenchmarkWriteCopy(b *testing.B) {
	_, file, _, _ := runtime.Caller(0)
	msg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skip("../shared/bench/newsletter.eml is absent")
	}
	q := &Queue{cfg: QueueConfig{Codec: dlCodec(b)}}
	one := func(track bool) time.Duration {
		c := &store.Copy{ID: 42, Clicks: track, Opens: track, ClickDomain: "click.example.com", Scheme: "https"}
		start := time.Now()
		if err := q.WriteCopy(io.Discard, bytesReader(msg), c); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var on, off time.Duration
	b.SetBytes(int64(len(msg)) * 2)
	for range b.N {
		off += one(false)
		on += one(true)
	}
	b.ReportMetric(float64(off.Nanoseconds())/float64(b.N), "off-ns/copy")
	b.ReportMetric(float64(on.Nanoseconds())/float64(b.N), "on-ns/copy")
	b.ReportMetric(float64(off)/float64(on), "off/on")
}

// BenchmarkWriteCopyTracked measures one tracked copy of the newsletter
// alone (clicks and opens on), for profiles and instruction counts: one
// op is one copy.
func BenchmarkWriteCopyTracked(b *testing.B) {
	_, file, _, _ := runtime.Caller(0)
	msg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skip("../shared/bench/newsletter.eml is absent")
	}
	q := &Queue{cfg: QueueConfig{Codec: dlCodec(b)}}
	c := &store.Copy{ID: 42, Clicks: true, Opens: true, ClickDomain: "click.example.com", Scheme: "https"}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := q.WriteCopy(io.Discard, bytesReader(msg), c); err != nil {
			b.Fatal(err)
		}
	}
}
