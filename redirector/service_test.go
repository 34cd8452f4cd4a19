package redirector

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// writeCert writes a self-signed certificate for host and returns the
// file paths and a pool trusting it.
func writeCert(t *testing.T, host string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

func TestServiceTLSMetricsShutdown(t *testing.T) {
	codec, _ := rewrite.NewCodec(testKeyNew)
	rs, err := store.OpenRelay(filepath.Join(t.TempDir(), "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	certFile, keyFile, pool := writeCert(t, "click.example.com")
	journal := filepath.Join(t.TempDir(), "journal.db")
	reg := prometheus.NewRegistry()
	svc, err := Start(Options{
		Handler:     Config{Codec: codec, Domains: []string{"click.example.com"}, Registerer: reg},
		JournalPath: journal, Listen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile,
		AdminListen: "127.0.0.1:0", Gatherer: reg,
		Sink: SinkFunc(rs.IngestHits), ShipInterval: time.Hour, // only the final flush ships
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := svc.Addr().String()
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "click.example.com"},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "shop.example.com"})
	resp, err := client.Get("https://click.example.com/" + tok + "/landing?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://shop.example.com/landing?x=1" {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	hits, _ := svc.Journal().Pending(10)
	if len(hits) != 1 || !strings.HasSuffix(hits[0].Protocol, "+tls") {
		t.Fatalf("journal %+v", hits)
	}
	// Metrics on the admin listener.
	mresp, err := http.Get("http://" + svc.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`trackrelay_redirector_hits_total{kind="click"} 1`, "trackrelay_redirector_journal_pending_hits 1", "trackrelay_redirector_journal_lag_seconds", "trackrelay_redirector_ship_errors_total 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Get("https://click.example.com/" + tok); err == nil {
		t.Fatal("served after Shutdown")
	}
	if h, ok, err := rs.Hit(hits[0].ID); err != nil || !ok || h.URL != "https://shop.example.com/landing?x=1" {
		t.Fatalf("final flush did not ship: %+v %v %v", h, ok, err)
	}
	if _, open := <-svc.Err(); open {
		t.Fatal("Err not closed")
	}
	j, err := store.OpenJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Len() != 0 {
		t.Fatalf("%d hits left in the journal after a clean shutdown", j.Len())
	}
}

// TestServiceShutdownKeepsUnshipped: with the relay down, hits answered
// before the shutdown are still in the journal when it is opened again.
func TestServiceShutdownKeepsUnshipped(t *testing.T) {
	codec, _ := rewrite.NewCodec(testKeyNew)
	journal := filepath.Join(t.TempDir(), "journal.db")
	down := SinkFunc(func(context.Context, []store.Hit) error { return errors.New("relay down") })
	svc, err := Start(Options{
		Handler:     Config{Codec: codec, Domains: []string{"click.example.com"}},
		JournalPath: journal, Listen: "127.0.0.1:0", Sink: down, ShipInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := 0; i < n; i++ {
		tok := codec.Encode(rewrite.Token{Kind: rewrite.KindPixel, MessageID: freshID()})
		if r := rawReq(t, svc.Addr().String(), "GET", "/"+tok, "click.example.com"); r.code != http.StatusOK {
			t.Fatalf("pixel: %d", r.code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := store.OpenJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Len() != n {
		t.Fatalf("journal holds %d hits, want %d", j.Len(), n)
	}
}
