package rewrite

import "testing"

func TestLooksLikeURL(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"example.com", true},
		{"  Example.COM\n", true},
		{"www.shop.example/x", true},
		{"https://anything", true},
		{"http://x", true},
		{"shop.example:8080/path?q=1", true},
		{"bücher.example", true},
		{"xn--bcher-kva.example", true},
		{"sub.domain.co.uk", true},
		{"Buy now", false},
		{"Visit example.com", false},
		{"", false},
		{"www.", false},
		{"example", false},
		{"example.c", false},
		{"example.123", false},
		{"-bad.example", false},
		{"a..b", false},
		{"shop.example:80x", false},
		{"3.14", false},
	} {
		t.Run(tc.text, func(t *testing.T) {
			if got := looksLikeURL(tc.text); got != tc.want {
				t.Errorf("looksLikeURL(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tr := New(Config{Domain: "click.example", ClickDomains: []string{"Links.Example.Org", "[::1]:8080"}})
	base, err := parseBase("https://base.example/a/b")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   string
		base bool
		want target
		ok   bool
	}{
		{in: "https://x.example/p?q#f", want: target{https: true, host: "x.example", rest: "/p?q#f"}, ok: true},
		{in: "HTTP://X.example", want: target{host: "X.example"}, ok: true},
		{in: "http://x.example:8080?q", want: target{host: "x.example", port: 8080, rest: "?q"}, ok: true},
		{in: "http://[2001:db8::1]/", want: target{host: "2001:db8::1", rest: "/"}, ok: true},
		{in: "\t https://x.example/ \n", want: target{https: true, host: "x.example", rest: "/"}, ok: true},
		{in: "c", base: true, want: target{https: true, host: "base.example", rest: "/a/c"}, ok: true},
		{in: "https://x.example/%41", want: target{https: true, host: "x.example", rest: "/%41"}, ok: true},
		{in: "https://click.example/x"},
		{in: "https://CLICK.example:443/x"},
		{in: "https://links.example.org/x"},
		{in: "http://[::1]:8080/"},
		{in: "http://x.example:0/"},
		{in: "http://x.example:080/"},
		{in: "http://x.example:/"},
		{in: "http://x.example:65536/"},
		{in: "http://[::1/"},
		{in: "http://[x]/"},
		{in: "http://::1"},
		{in: "http://a:b:1/"},
		{in: "http://x%41.example/"},
		{in: "https://x.example/%zz"},
		{in: "http:x.example"},
		{in: "https:\\\\x.example"},
		{in: "//x.example/", base: true},
		{in: "#top", base: true},
		{in: "c"},
		{in: "ftp://x.example/"},
		{in: "javascript:alert(1)"},
		{in: "https://u@x.example/"},
		{in: "https://x.example/{{id}}"},
		{in: ""},
		// Dot segments: fine while they stay below the root, left alone
		// when they would climb over the token.
		{in: "https://x.example/a/../b", want: target{https: true, host: "x.example", rest: "/a/../b"}, ok: true},
		{in: "https://x.example/a/./b?x=..", want: target{https: true, host: "x.example", rest: "/a/./b?x=.."}, ok: true},
		{in: "https://x.example/../x"},
		{in: "https://x.example/a/../../x"},
		{in: "https://x.example/%2E%2e/x"},
		{in: "https://x.example/a/.%2E/.%2e"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var b = base
			if !tc.base {
				b = nil
			}
			got, ok := tr.parseTarget(tc.in, b)
			if ok != tc.ok || got != tc.want {
				t.Errorf("parseTarget(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}
