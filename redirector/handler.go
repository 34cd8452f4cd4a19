package redirector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/idna"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// Bounds on what a hit records from the request.
const (
	maxUserAgent = 512
	maxReferer   = 1024
	maxLocation  = 8192
)

// pixelGIF is a 1×1 transparent GIF89a.
var pixelGIF = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

const notFoundBody = "404 not found\n"

// unknownHostBody is the page for a Host that is no click domain here. It
// names no domain that is.
const unknownHostBody = "404 not found\n\nThis host is not a click domain served here.\n"

// The answer to a hit the journal could not keep.
const (
	retryAfter      = "5"
	unavailableBody = "503 service unavailable\n\nThis link could not be followed just now. Please try again in a moment.\n"
)

// Serve answers one request to a click domain. It is the
// fasthttp.RequestHandler that NewHTTPServer runs.
//
// The request target is used exactly as it arrived on the request line:
// the token is its first path segment, and the rest of the path and the
// query go into the Location as the browser sent them.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	target := ctx.Request.Header.RequestURI()
	path, query := target, []byte(nil)
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i+1:]
	}
	switch string(path) {
	case "/healthz", "/readyz":
		code, body := h.health(string(path))
		plainFast(ctx, code, body)
		return
	case challengePath:
		h.serveChallenge(ctx)
		return
	}
	if !h.knownHost(string(ctx.Request.Header.Host()), ctx.IsTLS()) {
		h.m.count("not_found_host")
		plainFast(ctx, fasthttp.StatusNotFound, unknownHostBody)
		return
	}
	head := ctx.IsHead()
	if !ctx.IsGet() && !head {
		h.m.count("method")
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		plainFast(ctx, fasthttp.StatusMethodNotAllowed, "405 method not allowed\n")
		return
	}
	// Origin form only: "/token[/rest]".
	if len(path) < 2 || path[0] != '/' {
		h.notFound(ctx, "path")
		return
	}
	tokB, rest := path[1:], []byte(nil)
	if i := bytes.IndexByte(tokB, '/'); i >= 0 {
		tokB, rest = tokB[:i], tokB[i:]
	}
	tok, err := h.codec.Decode(string(tokB))
	if err != nil {
		h.notFound(ctx, "token")
		return
	}
	now := h.now()
	if h.maxAge > 0 && now.Sub(store.IDTime(tok.MessageID)) > h.maxAge {
		h.notFound(ctx, "expired")
		return
	}
	var location string
	switch tok.Kind {
	case rewrite.KindClick, rewrite.KindImage:
		location, err = buildLocation(tok, rest, query)
		if err != nil {
			h.notFound(ctx, "location")
			return
		}
	case rewrite.KindPixel:
		if !pixelPath(rest) {
			h.notFound(ctx, "path")
			return
		}
	default:
		h.notFound(ctx, "kind")
		return
	}

	ua := ctx.Request.Header.UserAgent()
	hit := store.Hit{
		ID:        h.journal.NewHitID(),
		Time:      now.UTC(),
		Kind:      tok.Kind.String(),
		MessageID: tok.MessageID,
		Position:  tok.Position,
		URL:       location,
		IP:        h.clientIP(ctx),
		UserAgent: string(truncate(ua, maxUserAgent)),
		Referer:   string(truncate(ctx.Request.Header.Referer(), maxReferer)),
		Protocol:  protocol(ctx),
		Head:      head,
		Machine:   isMachine(string(ua)),
	}
	// The journal is not given the request's context: fasthttp ends it
	// at server shutdown, and a hit that is being made durable then must
	// still be answered, not dropped.
	if err := h.journal.Append(context.Background(), hit); err != nil {
		// No 302 (or pixel) for a hit that was not kept: the reader is
		// asked to try again in a moment, and the link works again as
		// soon as the journal does (see README, "Architecture").
		h.m.journalErrors.Inc()
		if now := time.Now().UnixNano(); now-h.lastErrLog.Load() >= int64(time.Second) {
			h.lastErrLog.Store(now) // at most about one line a second under load
			h.log.Error("journal append failed; answered 503", "err", err, "kind", hit.Kind)
		}
		ctx.Response.Header.Set("Retry-After", retryAfter)
		plainFast(ctx, fasthttp.StatusServiceUnavailable, unavailableBody)
		h.m.count("unavailable")
		return
	}
	h.m.hitKind[hit.Kind].Inc()
	select {
	case h.kick <- struct{}{}:
	default:
	}

	hdr := &ctx.Response.Header
	if tok.Kind == rewrite.KindPixel {
		h.m.count("pixel")
		ctx.SetStatusCode(fasthttp.StatusOK)
		hdr.SetContentType("image/gif")
		hdr.Set("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")
		hdr.Set("Pragma", "no-cache")
		hdr.Set("Expires", "0")
		ctx.Response.SetBodyRaw(pixelGIF)
		return
	}
	h.m.count("redirect")
	ctx.SetStatusCode(fasthttp.StatusFound)
	hdr.Set("Location", location)
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer-when-downgrade")
}

// serveRecover is Serve with a panic answered 500 and logged, as
// net/http would: fasthttp does not recover.
func (h *Handler) serveRecover(ctx *fasthttp.RequestCtx) {
	defer func() {
		if v := recover(); v != nil {
			h.log.Error("redirector: panic serving a request", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			ctx.Response.Reset()
			plainFast(ctx, fasthttp.StatusInternalServerError, "500 internal server error\n")
		}
	}()
	h.Serve(ctx)
}

// badRequest answers a request fasthttp could not read or parse.
func (h *Handler) badRequest(ctx *fasthttp.RequestCtx, err error) {
	h.m.count("bad_request")
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		plainFast(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "431 request header fields too large\n")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		plainFast(ctx, fasthttp.StatusRequestEntityTooLarge, "413 request entity too large\n")
	default:
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			plainFast(ctx, fasthttp.StatusRequestTimeout, "408 request timeout\n")
			return
		}
		plainFast(ctx, fasthttp.StatusBadRequest, "400 bad request\n")
	}
	ctx.SetConnectionClose()
}

// health answers /healthz and /readyz. /readyz fails while draining and
// while the journal cannot keep hits (then every hit would get a 503).
func (h *Handler) health(path string) (int, string) {
	h.m.count("health")
	if path != "/readyz" {
		return http.StatusOK, "ok\n"
	}
	if h.draining.Load() {
		return http.StatusServiceUnavailable, "draining\n"
	}
	if h.journal.Ready() != nil {
		// The reason is in the metrics and the log, not on the public edge.
		return http.StatusServiceUnavailable, "not ready: hits cannot be kept\n"
	}
	return http.StatusOK, "ready\n"
}

// HealthHandler serves /healthz and /readyz over net/http, for the admin
// listener.
func (h *Handler) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, body := h.health(r.URL.Path)
		plain(w, code, body)
	})
}

// protocol is the hit's protocol field: "HTTP/1.1", with "+tls" over
// HTTPS.
func protocol(ctx *fasthttp.RequestCtx) string {
	var p string
	switch proto := ctx.Request.Header.Protocol(); string(proto) {
	case "HTTP/1.1":
		p = "HTTP/1.1"
	case "HTTP/1.0":
		p = "HTTP/1.0"
	default:
		p = string(truncate(proto, 16))
	}
	if ctx.IsTLS() {
		p += "+tls"
	}
	return p
}

// buildLocation is the one place a redirect target is made: the scheme and
// authority come from the verified token, then a path that starts with "/"
// (so nothing in the request can end the authority), then the query.
func buildLocation(tok rewrite.Token, rest, rawQuery []byte) (string, error) {
	host := tok.Host
	if !isASCII(host) {
		a, err := idna.Lookup.ToASCII(host)
		if err != nil {
			if a, err = idna.Punycode.ToASCII(host); err != nil {
				return "", err
			}
		}
		host = a
	}
	tok.Host = host
	var b strings.Builder
	b.Grow(len(tok.Host) + len(rest) + len(rawQuery) + 16)
	b.WriteString(tok.Scheme())
	b.WriteString("://")
	b.WriteString(tok.Authority())
	if len(rest) == 0 {
		b.WriteByte('/')
	}
	writeSafe(&b, rest)
	if len(rawQuery) != 0 {
		b.WriteByte('?')
		writeSafe(&b, rawQuery)
	}
	if b.Len() > maxLocation {
		return "", errTooLong
	}
	return b.String(), nil
}

type locationError string

func (e locationError) Error() string { return string(e) }

const errTooLong = locationError("redirector: location too long")

// writeSafe copies s, percent-encoding the bytes that must never reach a
// Location header raw: controls, space, DEL, non-ASCII, and '#' and '\'
// which would change how a browser reads the path. The request line cannot
// carry most of them; this is the belt to that brace.
func writeSafe(b *strings.Builder, s []byte) {
	const hexd = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '#' || c == '\\' || c == '"' || c == '<' || c == '>' {
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
			continue
		}
		b.WriteByte(c)
	}
}

// pixelPath says whether what follows a pixel token fits: nothing, "/",
// or one segment naming a GIF.
func pixelPath(rest []byte) bool {
	if len(rest) == 0 || string(rest) == "/" {
		return true
	}
	seg := rest[1:]
	return len(seg) <= 64 && !bytes.ContainsAny(seg, "/%") && len(seg) >= 4 && strings.EqualFold(string(seg[len(seg)-4:]), ".gif")
}

// knownHost matches the request's Host against the click domains.
func (h *Handler) knownHost(host string, tls bool) bool {
	port := ""
	if hh, pp, err := net.SplitHostPort(host); err == nil {
		host, port = hh, pp
	}
	if port == "" {
		port = "80"
		if tls {
			port = "443"
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, d := range h.domains {
		if d.host == host && (d.port == "" || d.port == port) {
			return true
		}
	}
	return h.dyn != nil && h.dyn.allowed(context.Background(), host) // domains.go
}

func (h *Handler) notFound(ctx *fasthttp.RequestCtx, why string) {
	h.m.count("not_found_" + why)
	plainFast(ctx, fasthttp.StatusNotFound, notFoundBody)
}

func plainFast(ctx *fasthttp.RequestCtx, code int, body string) {
	ctx.SetStatusCode(code)
	hdr := &ctx.Response.Header
	hdr.SetContentType("text/plain; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.SetBodyString(body)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate[T ~string | ~[]byte](s T, n int) T {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
