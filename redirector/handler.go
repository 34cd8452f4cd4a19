package redirector

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

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

var pixelLen = strconv.Itoa(len(pixelGIF))

const notFoundBody = "404 not found\n"

// ServeHTTP answers one request to a click domain.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		h.m.count("health")
		plain(w, http.StatusOK, "ok\n")
		return
	case "/readyz":
		h.m.count("health")
		if h.draining.Load() {
			plain(w, http.StatusServiceUnavailable, "draining\n")
			return
		}
		plain(w, http.StatusOK, "ready\n")
		return
	}
	if !h.knownHost(r) {
		h.notFound(w, "host")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.m.count("method")
		w.Header().Set("Allow", "GET, HEAD")
		plain(w, http.StatusMethodNotAllowed, "405 method not allowed\n")
		return
	}
	// The path as the browser sent it: the token is its first segment,
	// the rest is the original path, escaped as it arrived.
	p := r.URL.EscapedPath()
	if r.URL.Opaque != "" || !strings.HasPrefix(p, "/") {
		h.notFound(w, "path")
		return
	}
	tokStr, rest := p[1:], ""
	if i := strings.IndexByte(tokStr, '/'); i >= 0 {
		tokStr, rest = tokStr[:i], tokStr[i:]
	}
	tok, err := h.codec.Decode(tokStr)
	if err != nil {
		h.notFound(w, "token")
		return
	}
	now := h.now()
	if h.maxAge > 0 && now.Sub(store.IDTime(tok.MessageID)) > h.maxAge {
		h.notFound(w, "expired")
		return
	}
	var location string
	switch tok.Kind {
	case rewrite.KindClick, rewrite.KindImage:
		location, err = buildLocation(tok, rest, r.URL.RawQuery)
		if err != nil {
			h.notFound(w, "location")
			return
		}
	case rewrite.KindPixel:
		if !pixelPath(rest) {
			h.notFound(w, "path")
			return
		}
	default:
		h.notFound(w, "kind")
		return
	}

	ua := r.UserAgent()
	hit := store.Hit{
		ID:        h.journal.NewHitID(),
		Time:      now.UTC(),
		Kind:      tok.Kind.String(),
		MessageID: tok.MessageID,
		Position:  tok.Position,
		URL:       location,
		IP:        h.clientIP(r),
		UserAgent: truncate(ua, maxUserAgent),
		Referer:   truncate(r.Referer(), maxReferer),
		Protocol:  r.Proto,
		Head:      r.Method == http.MethodHead,
		Machine:   isMachine(ua),
	}
	if r.TLS != nil {
		hit.Protocol += "+tls"
	}
	if err := h.journal.Append(r.Context(), hit); err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nothing was promised
		}
		// The reader must not see a broken link: answer anyway, and make
		// the loss loud.
		h.m.journalErrors.Inc()
		h.log.Error("journal append failed", "err", err, "kind", hit.Kind)
	} else {
		h.m.hitKind[hit.Kind].Inc()
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}

	hdr := w.Header()
	if tok.Kind == rewrite.KindPixel {
		h.m.count("pixel")
		hdr["Content-Type"] = []string{"image/gif"}
		hdr["Content-Length"] = []string{pixelLen}
		hdr["Cache-Control"] = []string{"no-store, no-cache, must-revalidate, max-age=0"}
		hdr["Pragma"] = []string{"no-cache"}
		hdr["Expires"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(pixelGIF)
		}
		return
	}
	h.m.count("redirect")
	hdr["Location"] = []string{location}
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["Referrer-Policy"] = []string{"no-referrer-when-downgrade"}
	hdr["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusFound)
}

// buildLocation is the one place a redirect target is made: the scheme and
// authority come from the verified token, then a path that starts with "/"
// (so nothing in the request can end the authority), then the query.
func buildLocation(tok rewrite.Token, rest, rawQuery string) (string, error) {
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
	if rest == "" {
		rest = "/"
	}
	writeSafe(&b, rest)
	if rawQuery != "" {
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
func writeSafe(b *strings.Builder, s string) {
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
func pixelPath(rest string) bool {
	if rest == "" || rest == "/" {
		return true
	}
	seg := rest[1:]
	return len(seg) <= 64 && !strings.ContainsAny(seg, "/%") && strings.HasSuffix(strings.ToLower(seg), ".gif")
}

// knownHost matches the request's Host against the click domains.
func (h *Handler) knownHost(r *http.Request) bool {
	host, port := r.Host, ""
	if hh, pp, err := net.SplitHostPort(host); err == nil {
		host, port = hh, pp
	}
	if port == "" {
		port = "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, d := range h.domains {
		if d.host == host && (d.port == "" || d.port == port) {
			return true
		}
	}
	return false
}

func (h *Handler) notFound(w http.ResponseWriter, why string) {
	h.m.count("not_found_" + why)
	plain(w, http.StatusNotFound, notFoundBody)
}

func plain(w http.ResponseWriter, code int, body string) {
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
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
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
