package smtpd

import (
	"context"
	"crypto"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/mime/dkim"
	"github.com/trackrelay/trackrelay/store"
)

// BenchmarkRelaySigned measures the relay end to end as BenchmarkRelay
// does (32 SMTP sessions submit the 36 KB newsletter through the front,
// the fsynced spool and store, and tracked delivery to a fast sink), with
// DKIM signing off and on, in turn within every iteration: accounts
// "plain" (no key), "ed" (an Ed25519 key) and "rsa" (an RSA-2048 key)
// send the same mail, tracking on for all. It reports messages per
// second of each and the ratios ed/off and rsa/off.
func BenchmarkRelaySigned(b *testing.B) {
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	_, file, _, _ := runtime.Caller(0)
	msg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "shared", "bench", "newsletter.eml"))
	if err != nil {
		b.Skip("../shared/bench/newsletter.eml is absent")
	}
	from := "news@example.com"
	const sessions, perRun = 32, 400
	sink := newCountSink(b)
	dir := b.TempDir()
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	rk, ek := testSigners(b)
	for _, a := range []struct {
		name string
		key  crypto.Signer
	}{{"plain", nil}, {"ed", ek[0]}, {"rsa", rk[0]}} {
		if err := store.Create(ctx, st, &store.Account{Name: a.name}); err != nil {
			b.Fatal(err)
		}
		if a.key == nil {
			continue
		}
		pem, _ := dkim.MarshalPrivateKey(a.key)
		kind, _ := dkim.KindOf(a.key)
		if err := store.Create(ctx, st, &store.DKIMKey{Account: a.name, Domain: "example.com", Selector: a.name,
			Algorithm: string(kind), Private: string(pem), State: store.DKIMActive}); err != nil {
			b.Fatal(err)
		}
	}
	signer, err := NewDKIM(discardLogger(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if n, err := signer.Load(ctx, st); err != nil || n != 2 {
		b.Fatalf("loaded %d keys: %v", n, err)
	}
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
	q, err = NewQueue(QueueConfig{Store: st, Spool: sp, Upstreams: map[string]Upstream{"sink": up}, Codec: dlCodec(b), Workers: 32, DKIM: signer})
	if err != nil {
		b.Fatal(err)
	}
	q.Run()
	defer q.Shutdown(context.Background())

	front := func(account string) string {
		cred := &Credential{Username: account, Account: account, Clicks: true, Opens: true,
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
	addrOff, addrEd, addrRSA := front("plain"), front("ed"), front("rsa")
	if !strings.Contains(string(msg[:min(len(msg), 4096)]), from) {
		b.Fatalf("the newsletter's From is not %s: the keys would not sign it", from)
	}

	runOnce := func(addr string) time.Duration { return sink.relay(b, addr, from, msg, sessions, perRun) }
	runOnce(addrOff) // warm-up
	signedBefore := metricValue(b, signer.outcomes.WithLabelValues(DKIMSigned))
	b.ResetTimer()
	var off, ed, rsa time.Duration
	for range b.N {
		off += runOnce(addrOff)
		ed += runOnce(addrEd)
		rsa += runOnce(addrRSA)
	}
	b.StopTimer()
	if got := metricValue(b, signer.outcomes.WithLabelValues(DKIMSigned)) - signedBefore; got != float64(2*b.N*perRun) {
		b.Fatalf("%v copies signed, want %d", got, 2*b.N*perRun)
	}
	total := float64(b.N * perRun)
	offRate, edRate, rsaRate := total/off.Seconds(), total/ed.Seconds(), total/rsa.Seconds()
	b.ReportMetric(offRate, "off-msgs/s")
	b.ReportMetric(edRate, "ed25519-msgs/s")
	b.ReportMetric(rsaRate, "rsa-msgs/s")
	b.ReportMetric(edRate/offRate, "ed25519/off")
	b.ReportMetric(rsaRate/offRate, "rsa/off")
	b.ReportMetric(0, "ns/op")
}
