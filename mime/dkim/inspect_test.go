package dkim

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestInspect(t *testing.T) {
	sig := func(d, s string) string {
		return "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + d + ";\n\ts=" + s + "; h=From:To:\n  Subject; bh=AAAA;\n b=BBBB\n"
	}
	cases := []struct {
		name    string
		msg     string
		from    []string
		fromErr string
		domains []string // d= of the well-formed signatures
		bad     int      // malformed signatures
		err     error
	}{
		{name: "unsigned", msg: "From: A <a@Sender.Example>\nTo: b@example.net\n\nbody\n", from: []string{"sender.example"}},
		{name: "signed twice", msg: sig("ESP.example", "s1") + sig("sender.example", "s2") + "From: a@sender.example\n\nbody\n",
			from: []string{"sender.example"}, domains: []string{"esp.example", "sender.example"}},
		{name: "crlf and no body", msg: strings.ReplaceAll(sig("sender.example", "s1")+"From: a@sender.example", "\n", "\r\n"),
			from: []string{"sender.example"}, domains: []string{"sender.example"}},
		{name: "malformed signature", msg: "DKIM-Signature: v=1; d=x.example; d=y.example\nDKIM-Signature: v=1; a=rsa-sha256; d=x.example\nFrom: a@sender.example\n\n",
			from: []string{"sender.example"}, bad: 2},
		{name: "group of two", msg: "From: a@one.example, \"B\" <b@bücher.example>\n\n", from: []string{"one.example", "xn--bcher-kva.example"}},
		{name: "no from", msg: "To: b@example.net\n\n", fromErr: "no From field"},
		{name: "two froms", msg: "From: a@one.example\nFrom: b@two.example\n\n", fromErr: "more than one From"},
		{name: "bad from", msg: "From: not an address\n\n", fromErr: "From"},
		{name: "malformed header", msg: "From: a@x.example\nnot a header\n\n", err: ErrUnsignable},
		{name: "long line", msg: "From: a@x.example\nX-Long: " + strings.Repeat("y", 10000) + "\n\n", from: []string{"x.example"}},
		{name: "huge header", msg: "From: a@x.example\nX-Long: " + strings.Repeat("y", MaxHeaderBytes) + "\n\n", err: ErrUnsignable},
	}
	for _, c := range cases {
		for rname, wrap := range map[string]func(io.Reader) io.Reader{"whole": nil, "onebyte": iotest.OneByteReader, "half": iotest.HalfReader} {
			t.Run(c.name+"/"+rname, func(t *testing.T) {
				msg := c.msg
				if strings.Contains(msg, "\n\n") {
					msg += "more body\n"
				}
				var r io.Reader = bytes.NewReader([]byte(msg))
				if wrap != nil {
					r = wrap(r)
				}
				in, err := Inspect(r)
				if c.err != nil || err != nil {
					if !errors.Is(err, c.err) {
						t.Fatalf("error %v, want %v", err, c.err)
					}
					return
				}
				if !slices.Equal(in.FromDomains, c.from) {
					t.Errorf("From domains %v, want %v", in.FromDomains, c.from)
				}
				if (in.FromErr == nil) != (c.fromErr == "") || (in.FromErr != nil && !strings.Contains(in.FromErr.Error(), c.fromErr)) {
					t.Errorf("From error %v, want %q", in.FromErr, c.fromErr)
				}
				var domains []string
				bad := 0
				for _, s := range in.Signatures {
					if s.Err != nil {
						bad++
						continue
					}
					domains = append(domains, s.Domain)
					if s.Algorithm != "rsa-sha256" || !slices.Equal(s.Headers, []string{"From", "To", "Subject"}) || s.Selector == "" {
						t.Errorf("signature %+v", s)
					}
				}
				if !slices.Equal(domains, c.domains) || bad != c.bad {
					t.Errorf("signed by %v (%d malformed), want %v (%d)", domains, bad, c.domains, c.bad)
				}
				if in.Signed() != (len(c.domains)+c.bad > 0) {
					t.Errorf("Signed() = %v", in.Signed())
				}
				for _, d := range c.domains {
					if !in.SignedBy(strings.ToUpper(d)) {
						t.Errorf("SignedBy(%s) false", d)
					}
				}
				if in.SignedBy("other.example") {
					t.Error("SignedBy(other.example) true")
				}
			})
		}
	}
}

func TestParseTags(t *testing.T) {
	cases := []struct {
		in   string
		want []tag
		err  string
	}{
		{in: "v=1; a=rsa-sha256", want: []tag{{"v", "1"}, {"a", "rsa-sha256"}}},
		{in: " v = 1 ;\r\n\ta=x ; ", want: []tag{{"v", "1"}, {"a", "x"}}},
		{in: "p=AB CD\r\n EF", want: []tag{{"p", "AB CD\r\n EF"}}},
		{in: "p=AB\n EF", want: []tag{{"p", "AB\n EF"}}},
		{in: "p=", want: []tag{{"p", ""}}},
		{in: "", want: nil},
		{in: "a_1=x", want: []tag{{"a_1", "x"}}},
		{in: "v=1;;a=2", err: "empty tag 2"},
		{in: "v", err: "no '='"},
		{in: "1a=x", err: "not a tag name"},
		{in: "a-b=x", err: "not a tag name"},
		{in: "a=x\r\nb", err: "not allowed"},
		{in: "a=x\x00", err: "not allowed"},
		{in: "a=é", err: "not allowed"},
		{in: "a=1; a=2", err: "appears twice"},
		{in: strings.Repeat("a=1;", 70), err: "more than"},
	}
	for _, c := range cases {
		got, err := parseTags(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, %v, want %v", c.in, got, err, c.want)
		}
	}
}
