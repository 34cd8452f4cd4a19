package redirector

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/html"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// corpusLinks returns the path-and-query of up to max http(s) links found
// in the shared HTML corpus, or nil when it is absent.
func corpusLinks(tb testing.TB, max int) []string {
	tb.Helper()
	root := filepath.Join("..", "..", "shared", "corpora", "html")
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || len(out) >= max || !strings.HasSuffix(p, ".html") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		z := html.NewTokenizer(bufio.NewReader(f))
		for len(out) < max {
			tt := z.Next()
			if tt == html.ErrorToken {
				break
			}
			if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
				continue
			}
			for {
				k, v, more := z.TagAttr()
				if s := string(k); s == "href" || s == "src" {
					if u, err := url.Parse(strings.TrimSpace(string(v))); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
						out = append(out, u.RequestURI())
					}
				}
				if !more {
					break
				}
			}
		}
		return nil
	})
	return out
}

// FuzzRedirect sends arbitrary request targets after a valid token through
// Go's request parser and the handler. Whatever comes back, a redirect
// goes to the token's scheme and host and nowhere else.
func FuzzRedirect(f *testing.F) {
	for _, s := range []string{"/products/shoes?color=red", "", "/", "//evil.example", "/\\evil", "/%2F%2Fevil", "/@evil", "?a=b", "/caf%C3%A9", "/a%0d%0ab", "/x/../..//y", "/%E3%80%82evil"} {
		f.Add(s)
	}
	for _, s := range corpusLinks(f, 300) {
		f.Add(s)
	}
	codec, err := rewrite.NewCodec(testKeyNew)
	if err != nil {
		f.Fatal(err)
	}
	e := newEnvFor(f, codec)
	tok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: freshID(), HTTPS: true, Host: "shop.example.com", Port: 444})
	peer := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1234}
	f.Fuzz(func(t *testing.T, target string) {
		raw := "GET /" + tok + target + " HTTP/1.1\r\nHost: click.example.com\r\n\r\n"
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return // the server refuses it before the handler sees it
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, peer, nil)
		e.Serve(&ctx)
		code, loc := ctx.Response.StatusCode(), string(ctx.Response.Header.Peek("Location"))
		switch code {
		case http.StatusFound:
			assertSafeLocation(t, loc, "https", "shop.example.com:444")
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusOK:
			if loc != "" {
				t.Fatalf("%d with a Location", code)
			}
		default:
			t.Fatalf("unexpected status %d", code)
		}
	})
}

// FuzzForwardedFor: whatever X-Forwarded-For says, the recorded address
// is the peer or an address that appears in the header, never garbage.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{"203.0.113.9", "198.51.100.1, 203.0.113.9, 10.1.2.3", "[2001:db8::1]:443", "unknown", "", ",,,", "10.0.0.1, 1.1.1.1:80"} {
		f.Add(s)
	}
	h := &Handler{trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")}}
	peer := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5555}
	f.Fuzz(func(t *testing.T, xff string) {
		var req fasthttp.Request
		req.Header.Set("X-Forwarded-For", xff)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, peer, nil)
		ip := h.clientIP(&ctx)
		a, err := netip.ParseAddr(ip)
		if err != nil {
			t.Fatalf("recorded %q, not an address", ip)
		}
		if ip == "192.0.2.1" {
			return
		}
		for _, part := range strings.Split(xff, ",") {
			if b, err := parseForwarded(strings.TrimSpace(part)); err == nil && b == a {
				return
			}
		}
		t.Fatalf("recorded %q, which is neither the peer nor in %q", ip, xff)
	})
}

// FuzzIngest posts arbitrary bodies to the ingest handler: it answers, never
// panics, and stores only what it acknowledges.
func FuzzIngest(f *testing.F) {
	f.Add(`{"hits":[{"id":"0000000000000001aaaaaaaa","time":"2026-11-23T01:00:00Z","kind":"click","message_id":1,"url":"https://x/"}]}`)
	f.Add(`{"hits":[]}`)
	f.Add(`{"hits":[{"id":"","kind":"pixel"}]}`)
	f.Add(`[]`)
	var stored int
	sink := SinkFunc(func(_ context.Context, hits []store.Hit) error {
		for _, h := range hits {
			if checkHit(h) != nil {
				return errors.New("unchecked hit reached the sink")
			}
		}
		stored += len(hits)
		return nil
	})
	h := IngestHandler(sink, testSecret, nil)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+testSecret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
