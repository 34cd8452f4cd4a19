package rewrite

import (
	"net/url"
	"strconv"
	"strings"
)

// target is an absolute http(s) URL the rewriter has decided to track.
type target struct {
	https bool
	host  string // as written; no brackets around an IPv6 literal
	port  uint16 // 0 when not written
	rest  string // path, query and fragment exactly as written
}

// original is the URL tg was parsed from, as the redirector rebuilds it
// from the token: scheme, host (IPv6 in brackets), port when written, and
// the rest as written.
func (tg target) original() string {
	var b strings.Builder
	if tg.https {
		b.WriteString("https://")
	} else {
		b.WriteString("http://")
	}
	if strings.IndexByte(tg.host, ':') >= 0 {
		b.WriteByte('[')
		b.WriteString(tg.host)
		b.WriteByte(']')
	} else {
		b.WriteString(tg.host)
	}
	if tg.port != 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(tg.port)))
	}
	b.WriteString(tg.rest)
	return b.String()
}

// placeholders are the template markers of the ESPs and template engines
// people move from (Handlebars, Liquid, Jinja, Mailchimp merge tags,
// Salesforce/ExactTarget, Twig, ERB, JSP, ...). A URL holding one is
// filled in later by someone else: tracking it would freeze the marker.
var placeholders = []string{
	"{{", "}}", "{%", "%}", "*|", "|*", "%%", "[[", "]]", "<%", "%>", "${",
	"%7b%7b", "%7d%7d", "%7b%25", "%2a%7c", "%7c%2a", "%5b%5b", "%25%25",
}

// byteSet is a set of ASCII bytes, for the scans done once per URL:
// strings.ContainsAny builds its set on every call.
type byteSet [256]bool

func makeSet(chars string) (set byteSet) {
	for i := 0; i < len(chars); i++ {
		set[chars[i]] = true
	}
	return set
}

// indexSet returns the index of the first byte of s in set, or -1.
func indexSet[T ~string | ~[]byte](s T, set *byteSet) int {
	for i := 0; i < len(s); i++ {
		if set[s[i]] {
			return i
		}
	}
	return -1
}

var (
	placeholderStart = makeSet("{}%|[]<$")
	pathEnd          = makeSet("/?#")
	queryOrFragment  = makeSet("?#")
	needsURLParse    = makeSet("%[]")
)

func hasPlaceholder(s string) bool {
	if indexSet(s, &placeholderStart) < 0 {
		return false
	}
	ls := strings.ToLower(s)
	for _, p := range placeholders {
		if strings.Contains(ls, p) {
			return true
		}
	}
	return false
}

// trimURL trims what browsers trim around a URL: leading and trailing C0
// controls and spaces.
func trimURL(s string) string {
	i, j := 0, len(s)
	for i < j && s[i] <= ' ' {
		i++
	}
	for j > i && s[j-1] <= ' ' {
		j--
	}
	return s[i:j]
}

// parseTarget decides whether the URL value s (entity-decoded) is tracked
// and splits it. base, when non-nil, is an absolute http(s) <base href>
// that relative URLs resolve against.
func (t *Tracker) parseTarget(s string, base *url.URL) (target, bool) {
	s = trimURL(s)
	if s == "" || len(s) > maxURLLen || hasPlaceholder(s) {
		return target{}, false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f || c == '\\' {
			// Tabs and newlines inside, or backslashes that browsers read
			// as slashes: the URL means something other than it shows.
			return target{}, false
		}
	}
	scheme, after, ok := splitScheme(s)
	if !ok {
		// Relative. Fragments, scheme-relative ("//host") and anything
		// without a base stay as written.
		if base == nil || s[0] == '#' || strings.HasPrefix(s, "//") {
			return target{}, false
		}
		ref, err := url.Parse(s)
		if err != nil {
			return target{}, false
		}
		s = base.ResolveReference(ref).String()
		if scheme, after, ok = splitScheme(s); !ok {
			return target{}, false
		}
	}
	var tg target
	switch strings.ToLower(scheme) {
	case "http":
	case "https":
		tg.https = true
	default: // mailto:, tel:, sms:, javascript:, data:, cid:, ...
		return target{}, false
	}
	if !strings.HasPrefix(after, "//") {
		return target{}, false
	}
	after = after[2:]
	end := indexSet(after, &pathEnd)
	if end < 0 {
		end = len(after)
	}
	auth := after[:end]
	tg.rest = after[end:]
	if strings.IndexByte(auth, '@') >= 0 {
		// Userinfo: left alone. Such links are a phishing pattern
		// ("https://bank.example@evil.example/") and browsers warn or
		// strip; a redirect through us would hide the warning.
		return target{}, false
	}
	host, portStr := auth, ""
	if strings.HasPrefix(auth, "[") {
		k := strings.IndexByte(auth, ']')
		if k < 0 {
			return target{}, false
		}
		host, portStr = auth[1:k], auth[k+1:]
		if portStr != "" && portStr[0] != ':' {
			return target{}, false
		}
		if strings.IndexByte(host, ':') < 0 {
			return target{}, false
		}
	} else if k := strings.LastIndexByte(auth, ':'); k >= 0 {
		host, portStr = auth[:k], auth[k:]
		if strings.IndexByte(host, ':') >= 0 {
			return target{}, false // an IPv6 literal needs brackets
		}
	}
	if portStr != "" {
		// Only a port the token can give back as written: no empty port,
		// no leading zeros.
		portStr = portStr[1:]
		if portStr == "" || portStr[0] < '1' || portStr[0] > '9' {
			return target{}, false
		}
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return target{}, false
		}
		tg.port = uint16(p)
	}
	if host == "" || len(host) > maxHostLen || !validHost([]byte(host)) {
		return target{}, false
	}
	// The checks above leave net/url little to object to but bad percent
	// escapes and brackets; ask it only then, it is the costly part.
	if indexSet(s, &needsURLParse) >= 0 {
		if _, err := url.Parse(s); err != nil {
			return target{}, false
		}
	}
	if climbsAboveRoot(tg.rest) {
		return target{}, false
	}
	tg.host = host
	if t.isClickDomain(auth, host) {
		return target{}, false
	}
	return tg, true
}

// climbsAboveRoot reports whether the path of rest has more ".." segments
// than segments before them. For the original URL a browser stops at the
// root; behind a token it would climb over the token and lose it, so such
// a URL stays as written. Dot segments count as browsers count them
// (WHATWG URL): "..", ".%2e", "%2e." and "%2e%2e" in any case.
func climbsAboveRoot(rest string) bool {
	path := rest
	if i := indexSet(path, &queryOrFragment); i >= 0 {
		path = path[:i]
	}
	depth := 0
	for len(path) > 0 {
		if path[0] == '/' {
			path = path[1:]
		}
		seg := path
		if i := strings.IndexByte(path, '/'); i >= 0 {
			seg, path = path[:i], path[i:]
		} else {
			path = ""
		}
		switch {
		case len(seg) == 0 || seg[0] != '.' && seg[0] != '%':
			depth++ // the usual case: no dot segment
		case seg == ".." || strings.EqualFold(seg, ".%2e") || strings.EqualFold(seg, "%2e.") || strings.EqualFold(seg, "%2e%2e"):
			if depth == 0 {
				return true
			}
			depth--
		case seg == "." || strings.EqualFold(seg, "%2e"):
		default:
			depth++
		}
	}
	return false
}

// maxURLLen bounds the URLs the rewriter tracks; longer ones stay as
// written.
const maxURLLen = 8 << 10

// splitScheme splits "scheme:rest" when s starts with a valid scheme.
func splitScheme(s string) (scheme, rest string, ok bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.':
			if i == 0 {
				return "", "", false
			}
		case c == ':':
			if i == 0 {
				return "", "", false
			}
			return s[:i], s[i+1:], true
		default:
			return "", "", false
		}
	}
	return "", "", false
}

func (t *Tracker) isClickDomain(auth, host string) bool {
	match := func(d string) bool {
		if strings.EqualFold(d, auth) {
			return true
		}
		// An entry without a port matches the host on any port.
		return strings.IndexByte(strings.TrimPrefix(d, "["), ':') < 0 && strings.EqualFold(strings.Trim(d, "[]"), host)
	}
	if match(t.cfg.Domain) {
		return true
	}
	for _, d := range t.cfg.ClickDomains {
		if match(d) {
			return true
		}
	}
	return false
}

// trackedURL builds the tracked URL for tg in t.buf, taking the next
// position. The result is valid until the next call that builds a URL.
func (t *Tracker) trackedURL(tg target, kind Kind) []byte {
	tok := Token{Kind: kind, MessageID: t.cfg.MessageID, Position: t.pos, HTTPS: tg.https, Host: tg.host, Port: tg.port}
	if t.cfg.OnLink != nil {
		t.cfg.OnLink(t.pos, kind, tg.original())
	}
	t.pos++
	if kind == KindClick {
		t.stats.Links++
	} else {
		t.stats.Images++
	}
	return t.urlFor(tok, tg.rest)
}

// urlFor builds the tracked URL of tok followed by rest in t.buf.
func (t *Tracker) urlFor(tok Token, rest string) []byte {
	b := t.buf[:0]
	b = append(b, t.cfg.Scheme...)
	b = append(b, "://"...)
	b = append(b, t.cfg.Domain...)
	b = append(b, '/')
	b = t.cfg.Codec.AppendEncode(b, tok)
	b = append(b, rest...)
	t.buf = b
	return b
}
