package rewrite

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// looksLikeURL reports whether the visible text of a link is a URL or a
// bare domain ("example.com", "www.shop.example/x", "https://..."). With
// preventscam such a link is left alone: a reader who hovers or reads the
// text sees where it goes, and a tracked URL there looks like phishing.
func looksLikeURL(text string) bool {
	s := strings.TrimFunc(text, unicode.IsSpace)
	if s == "" || strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		return false
	}
	ls := strings.ToLower(s)
	for _, p := range []string{"http://", "https://", "ftp://", "www."} {
		if strings.HasPrefix(ls, p) && len(ls) > len(p) {
			return true
		}
	}
	// A bare domain: labels of letters, digits and hyphens, a dot, a TLD
	// of letters (or punycode), then an optional port and path.
	host := s
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		host = host[:i]
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		port := host[i+1:]
		for _, c := range port {
			if c < '0' || c > '9' {
				return false
			}
		}
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	labels := strings.Split(host, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	if strings.HasPrefix(strings.ToLower(tld), "xn--") {
		return true
	}
	if utf8.RuneCountInString(tld) < 2 {
		return false
	}
	for _, r := range tld {
		if !unicode.IsLetter(r) {
			return false
		}
	}
	return true
}
