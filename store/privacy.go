package store

import (
	"net/netip"
	"net/url"
	"strings"
)

// KeepIP returns ip as an account's privacy setting keeps it: whole
// (KeepFull or ""), truncated to its /24 (IPv4) or /48 (IPv6), or not at
// all (KeepNone). Text that is not an address is kept whole only with
// KeepFull.
func KeepIP(ip, keep string) string {
	switch keep {
	case "", KeepFull:
		return ip
	case KeepTruncated:
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return ""
		}
		a = a.Unmap()
		bits := 48
		if a.Is4() {
			bits = 24
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return ""
		}
		return p.Addr().String()
	}
	return ""
}

// User agent classes, for accounts that keep only the class.
const (
	UABrowser    = "browser"
	UAMailClient = "mail client"
	UAProxy      = "proxy"
	UAScanner    = "scanner"
	UAUnknown    = "unknown"
)

// UserAgentClass names the kind of program a user agent string belongs
// to: an image proxy (Gmail's, Apple's), a scanner (machine is the
// redirector's verdict, or a known bot word), a mail client, or a browser.
func UserAgentClass(ua string, machine bool) string {
	l := strings.ToLower(ua)
	switch {
	case ua == "":
		return UAUnknown
	case strings.Contains(l, "googleimageproxy") || strings.Contains(l, "yahoomailproxy") ||
		strings.Contains(l, "via ggpht.com") || strings.Contains(l, "apple-mail-privacy") ||
		strings.Contains(l, "proxy"):
		return UAProxy
	case machine || strings.Contains(l, "bot") || strings.Contains(l, "spider") || strings.Contains(l, "crawl") ||
		strings.Contains(l, "scan") || strings.Contains(l, "curl/") || strings.Contains(l, "python") ||
		strings.Contains(l, "go-http-client") || strings.Contains(l, "wget"):
		return UAScanner
	case strings.Contains(l, "thunderbird") || strings.Contains(l, "outlook") || strings.Contains(l, "microsoft office") ||
		strings.Contains(l, "applewebkit") && !strings.Contains(l, "safari") || strings.Contains(l, "mail/"):
		return UAMailClient
	case strings.HasPrefix(l, "mozilla/"):
		return UABrowser
	}
	return UAUnknown
}

// Altered reports whether a reader asked for a different path or query
// than the link's own (dest is where the redirector sent the reader,
// link the URL recorded when the message was rewritten). What browsers
// change on their own does not count: the fragment (never sent),
// percent-escape case, characters escaped or not, an empty query.
func Altered(link, dest string) bool {
	if link == dest {
		return false
	}
	a, err1 := url.Parse(link)
	b, err2 := url.Parse(dest)
	if err1 != nil || err2 != nil {
		return true
	}
	if !strings.EqualFold(a.Scheme, b.Scheme) || !strings.EqualFold(a.Host, b.Host) {
		return true
	}
	return canonPath(a) != canonPath(b) || canonQuery(a.RawQuery) != canonQuery(b.RawQuery)
}

func canonPath(u *url.URL) string {
	p := u.EscapedPath()
	if s, err := url.PathUnescape(p); err == nil {
		p = s
	}
	if p == "" {
		p = "/"
	}
	return p
}

func canonQuery(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	for i, kv := range parts {
		if s, err := url.QueryUnescape(kv); err == nil {
			parts[i] = s
		}
	}
	return strings.Join(parts, "&")
}
