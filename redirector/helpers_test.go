package redirector

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

var (
	testKeyOld = rewrite.Key{ID: 1, Secret: bytes.Repeat([]byte("o"), 32)}
	testKeyNew = rewrite.Key{ID: 2, Secret: bytes.Repeat([]byte("n"), 32)}
)

// env is a redirector under test: a real journal, a real handler behind a
// real HTTP server on 127.0.0.1:0.
type env struct {
	t       *testing.T
	codec   *rewrite.Codec // signs with testKeyNew, accepts testKeyOld too
	journal *store.Journal
	h       *Handler
	addr    string // the server's address
	host    string // a click domain the handler serves
	reg     *prometheus.Registry
}

type envOpt func(*Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	codec, err := rewrite.NewCodec(testKeyNew, testKeyOld)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.OpenJournal(filepath.Join(t.TempDir(), "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := Config{
		Codec:      codec,
		Domains:    []string{"click.example.com", "Other.Example.NET:8443"},
		Journal:    j,
		Registerer: reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	})
	addr := serveHandler(t, h)
	return &env{t: t, codec: codec, journal: j, h: h, addr: addr, host: "click.example.com", reg: reg}
}

// serveHandler serves h with the production server (NewHTTPServer) on
// 127.0.0.1:0 until the test ends, and returns the address.
func serveHandler(tb testing.TB, h *Handler) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := NewHTTPServer(h, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return ln.Addr().String()
}

func withTrusted(p ...string) envOpt {
	return func(c *Config) {
		for _, s := range p {
			c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix(s))
		}
	}
}

// response is what a raw request got back.
type response struct {
	code     int
	location string
	header   http.Header
	body     string
}

// raw sends one request exactly as written (method, target and Host are
// not touched by any client library) and reads the response.
func (e *env) raw(method, target, host string, hdr ...string) response {
	e.t.Helper()
	return rawReq(e.t, e.addr, method, target, host, hdr...)
}

// rawReq sends one raw HTTP/1.1 request to addr.
func rawReq(t *testing.T, addr, method, target, host string, hdr ...string) response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n")
	for i := 0; i+1 < len(hdr); i += 2 {
		b.WriteString(hdr[i] + ": " + hdr[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://x/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, location: resp.Header.Get("Location"), header: resp.Header, body: string(body)}
}

func (e *env) get(target string, hdr ...string) response {
	e.t.Helper()
	return e.raw("GET", target, e.host, hdr...)
}

// pending returns every journaled hit.
func (e *env) pending() []store.Hit {
	e.t.Helper()
	hits, err := e.journal.Pending(1 << 20)
	if err != nil {
		e.t.Fatal(err)
	}
	return hits
}

// lastHit returns the newest journaled hit.
func (e *env) lastHit() store.Hit {
	e.t.Helper()
	hits := e.pending()
	if len(hits) == 0 {
		e.t.Fatal("journal is empty")
	}
	return hits[len(hits)-1]
}

func (e *env) tok(t rewrite.Token) string { return e.codec.Encode(t) }

func click(host string) rewrite.Token {
	return rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), Position: 3, HTTPS: true, Host: host}
}

var ids store.IDGen

// freshID is a message copy id made now, as the relay would.
func freshID() uint64 { return ids.Next() }

func expectNotFound(t *testing.T, what string, r response) {
	t.Helper()
	if r.code != http.StatusNotFound || r.location != "" || r.body != notFoundBody {
		t.Errorf("%s: got %d location %q body %q, want a plain 404", what, r.code, r.location, r.body)
	}
}

// newEnvFor returns a bare handler with a journal (disk durability, or
// as o says), for fuzzing and benchmarks.
func newEnvFor(tb testing.TB, codec *rewrite.Codec, o ...store.JournalOptions) *Handler {
	tb.Helper()
	var opts store.JournalOptions
	if len(o) > 0 {
		opts = o[0]
	}
	j, err := store.OpenJournalWith(filepath.Join(tb.TempDir(), "journal.db"), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { j.Close() })
	h, err := New(Config{Codec: codec, Domains: []string{"click.example.com"}, Journal: j})
	if err != nil {
		tb.Fatal(err)
	}
	return h
}
