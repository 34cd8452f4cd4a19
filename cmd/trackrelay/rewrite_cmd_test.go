package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/rewrite"
)

var updateRewrite = flag.Bool("update-rewrite", false, "rewrite the golden files under testdata/rewrite/cmd")

func runRewrite(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"rewrite"}, args...), stdio{strings.NewReader(stdin), &out, &errb})
	return out.String(), errb.String(), err
}

func TestRewriteCmdHTML(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "rewrite", "cmd")
	in, err := os.ReadFile(filepath.Join(dir, "newsletter.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		stderr []string
	}{
		{"default", []string{"--html"}, []string{"development key", "links tracked: 4, images tracked: 2, open pixel: yes"}},
		{"https-scam", []string{"--html", "--scheme", "https", "--click-domain", "click.shop.example", "--preventscam"}, []string{"links tracked: 3, images tracked: 2, open pixel: yes"}},
		{"no-opens", []string{"--html", "--opens=false"}, []string{"links tracked: 4, images tracked: 0, open pixel: no"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runRewrite(t, string(in), tc.args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			golden := filepath.Join(dir, "newsletter-"+tc.name+".golden")
			if *updateRewrite {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update-rewrite)", err)
			}
			if out != string(want) {
				t.Errorf("output differs from %s:\n%s", golden, out)
			}
		})
	}
}

func TestRewriteCmdKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, err := rewrite.GenerateKey(9)
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "keys")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("# keys\n"+rewrite.FormatKey(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("9 c2hvcnQ\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const body = `<a href="https://shop.example/x">x</a>`

	out, stderr, err := runRewrite(t, body, "--html", "--key-file", good, "--opens=false")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr, "development key") {
		t.Errorf("stderr mentions the development key with --key-file:\n%s", stderr)
	}
	c, err := rewrite.NewCodec(k)
	if err != nil {
		t.Fatal(err)
	}
	const prefix = `<a href="http://localhost:8080/`
	rest, ok := strings.CutPrefix(out, prefix)
	if !ok {
		t.Fatalf("output %q", out)
	}
	tok, err := c.Decode(rest[:strings.IndexByte(rest, '/')])
	if err != nil || tok.Host != "shop.example" || !tok.HTTPS || tok.MessageID != previewMessageID {
		t.Errorf("token %+v, %v", tok, err)
	}

	for _, path := range []string{bad, filepath.Join(dir, "missing")} {
		_, _, err := runRewrite(t, body, "--html", "--key-file", path)
		if err == nil || !strings.Contains(err.Error(), "key file") || errors.Is(err, errUsage) {
			t.Errorf("--key-file %s: err %v, want a key file error", path, err)
		}
	}
}

func TestRewriteCmdUsage(t *testing.T) {
	for _, args := range [][]string{{"--scheme", "ftp"}, {"--click-domain", "a/b"}, {"--nope"}, {"extra"}} {
		if _, _, err := runRewrite(t, "", args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: err %v, want usage", args, err)
		}
	}
	_, stderr, err := runRewrite(t, "", "-h")
	if err != nil || !strings.Contains(stderr, "--html") && !strings.Contains(stderr, "-html") || !strings.Contains(stderr, "message id 1") {
		t.Errorf("-h: %v\n%s", err, stderr)
	}
}

func TestRewriteCmdMessage(t *testing.T) {
	msg := "From: a@shop.example\r\nTo: b@example.com\r\nSubject: sale\r\nMIME-Version: 1.0\r\n%sContent-Type: text/html; charset=utf-8\r\n\r\n" +
		"<html><body><a href=\"https://shop.example/sale\">Sale</a><img src=\"https://img.shop.example/a.png\"></body></html>\r\n"
	for _, tc := range []struct {
		name, header string
		args         []string
		has, hasNot  []string
		stderr       string
	}{
		{"defaults", "", nil, []string{`<a href="http://localhost:8080/`, `<img src="http://localhost:8080/`, "Subject: sale\r\n"}, []string{"shop.example/sale\""}, "links tracked: 1, images tracked: 1, open pixel: yes"},
		{"header-beats-flag", "X-Smtpeter-TrackClicks: no\r\n", nil, []string{`<a href="https://shop.example/sale">`, `<img src="http://localhost:8080/`}, []string{"X-Smtpeter"}, "links tracked: 0, images tracked: 1"},
		{"header-turns-on", "X-Smtpeter-TrackOpens: yes\r\n", []string{"--opens=false"}, []string{`<img src="http://localhost:8080/`}, nil, "images tracked: 1"},
		{"all-off", "", []string{"--clicks=false", "--opens=false"}, []string{`<a href="https://shop.example/sale">`}, []string{"localhost:8080"}, "tracking is off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(msg, "%s", tc.header, 1)
			out, stderr, err := runRewrite(t, in, tc.args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, s := range tc.has {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s\nstderr: %s", s, out, stderr)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(out, s) {
					t.Errorf("output holds %q:\n%s", s, out)
				}
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
		})
	}
}

// A bad control header value is what the relay refuses at DATA; the
// preview must say so and fail, not quietly ignore the header.
func TestRewriteCmdBadControlHeader(t *testing.T) {
	msg := "From: a@example.com\r\nX-SMTPeter-TrackClicks: maybe\r\nContent-Type: text/html\r\n\r\n<a href=\"https://shop.example.com/x\">x</a>\r\n"
	_, _, err := runRewrite(t, msg)
	if err == nil || !strings.Contains(err.Error(), "x-smtpeter-trackclicks") || !strings.Contains(err.Error(), "5.6.0") {
		t.Fatalf("err = %v, want a refusal naming the header", err)
	}
}

// TestRewriteCmdSummaryOwnLine: on a terminal (stdout and stderr the same
// stream) the summary starts on a line of its own after output that does
// not end with a newline; stdout alone is not changed.
func TestRewriteCmdSummaryOwnLine(t *testing.T) {
	const in = `<p><a href="https://shop.example.com/a">a</a></p>`
	for _, args := range [][]string{{"--html"}, {}} {
		stdin := in
		if len(args) == 0 {
			stdin = "From: a@example.com\r\nContent-Type: text/html\r\n\r\n" + in
		}
		var both bytes.Buffer
		if err := run(context.Background(), append([]string{"rewrite"}, args...), stdio{strings.NewReader(stdin), &both, &both}); err != nil {
			t.Fatal(err)
		}
		out, _, err := runRewrite(t, stdin, args...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(out, "\n") {
			t.Fatalf("%v: output %q ends with a newline: the test proves nothing", args, out)
		}
		if !strings.Contains(both.String(), out+"\n") || !strings.HasSuffix(both.String(), "open pixel: yes\n") {
			t.Fatalf("%v: the summary does not start on its own line:\n%q", args, both.String())
		}
	}
}
