package mime

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-message/textproto"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/mime")

type goldenCase struct {
	name      string
	opt       Options
	off       bool     // decide returns a nil Tracker
	tracked   []string // want Report.Parts
	untouched string   // want Report.Untouched to contain this ("" = empty)
	skips     []string // want these Skip reasons (substrings), in order
	requoted  []string
	check     func(t *testing.T, in, out []byte, rep Report)
}

var goldenCases = []goldenCase{
	{name: "single-html-crlf", tracked: []string{""}, check: func(t *testing.T, in, out []byte, rep Report) {
		if bytes.Contains(bytes.ToLower(out), []byte("x-smtpeter")) {
			t.Error("control header left in output")
		}
		if rep.Controls.TrackClicks == nil || !*rep.Controls.TrackClicks {
			t.Error("trackclicks not parsed as true")
		}
		if want := []string{"spring", "sale", "vip"}; !slices.Equal(rep.Controls.Tags, want) {
			t.Errorf("tags %q, want %q", rep.Controls.Tags, want)
		}
	}},
	{name: "single-html-lf", tracked: []string{""}, check: func(t *testing.T, in, out []byte, rep Report) {
		if bytes.Contains(out, []byte("\r")) {
			t.Error("CR added to an LF message")
		}
		if rep.Controls.TrackOpens == nil || *rep.Controls.TrackOpens {
			t.Error("trackopens not parsed as false")
		}
	}},
	// Boundary lines that change line ending: Go's multipart reader stops
	// seeing delimiters where Python's goes on, so the rest passes through.
	{name: "mixed-line-endings", tracked: []string{"1"}, skips: []string{"boundary lines mix CRLF and LF"}},
	{name: "alternative-qp", opt: Options{TrackText: true}, tracked: []string{"1", "2"}, check: func(t *testing.T, in, out []byte, rep Report) {
		for _, keep := range []string{"This is a multi-part message in MIME format.\r\n\r\n------=_Part_1  \r\n", "------=_Part_1\t\r\n", "------=_Part_1--  \r\n\r\nepilogue text\r\n"} {
			if !bytes.Contains(out, []byte(keep)) {
				t.Errorf("output lost %q", keep)
			}
		}
		assertLineLimit(t, out, 76, "quoted-printable")
	}},
	{name: "related-base64", tracked: []string{"1"}, check: func(t *testing.T, in, out []byte, rep Report) {
		assertLineLimit(t, out, 76, "base64")
	}},
	{name: "mixed-attachments", tracked: []string{"1.2"}, check: func(t *testing.T, in, out []byte, rep Report) {
		for _, keep := range []string{"http://attachment.example.com/", "http://forwarded.example.org/", "Plain http://plain.example.com/"} {
			if !bytes.Contains(out, []byte(keep)) {
				t.Errorf("untracked part changed: %q missing", keep)
			}
		}
	}},
	{name: "long-line-8bit", tracked: []string{"1"}, requoted: []string{"1"}, check: func(t *testing.T, in, out []byte, rep Report) {
		if !bytes.Contains(out, []byte("Content-Transfer-Encoding: quoted-printable\r\n")) || bytes.Contains(out, []byte("8bit")) {
			t.Error("Content-Transfer-Encoding not replaced by quoted-printable")
		}
		assertLineLimit(t, out, 998, "")
	}},
	{name: "long-line-no-cte", tracked: []string{""}, requoted: []string{""}, check: func(t *testing.T, in, out []byte, rep Report) {
		if !bytes.Contains(out, []byte("Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n")) {
			t.Error("Content-Transfer-Encoding not added with the header's LF ending")
		}
		if bytes.Contains(out, []byte("\r")) {
			t.Error("CR added to an LF message")
		}
	}},
	{name: "signed", untouched: "signed or encrypted (multipart/signed)"},
	{name: "dkim", untouched: "DKIM-signed"},
	{name: "dkim-tracksigned", opt: Options{TrackSigned: true}, tracked: []string{""}},
	{name: "dkim-covers-control", untouched: "covers a control header", check: func(t *testing.T, in, out []byte, rep Report) {
		if !bytes.Equal(in, out) {
			t.Error("header block changed although DKIM signs a control header")
		}
	}},
	{name: "utf16-base64", tracked: []string{""}},
	{name: "iso-2022-jp", tracked: []string{""}},
	{name: "shift-jis-8bit", tracked: []string{""}},
	{name: "unknown-charset", skips: []string{"unknown charset"}},
	{name: "bad-base64", skips: []string{"illegal base64"}},
	{name: "no-boundary", skips: []string{"multipart without boundary"}},
	{name: "unterminated", tracked: []string{"1"}, skips: []string{"unterminated multipart", "unterminated multipart"}},
	{name: "too-deep", opt: Options{MaxDepth: 2}, tracked: []string{"1.2"}, skips: []string{"nested deeper than 2"}},
	{name: "nul-byte", skips: []string{"NUL byte"}},
	{name: "empty-html", tracked: []string{"1"}},
	{name: "malformed-part-header", tracked: []string{"2"}, skips: []string{"malformed part header"}},
	{name: "mbox-from-line", tracked: []string{""}},
	{name: "tracking-off", off: true, untouched: "tracking off", check: func(t *testing.T, in, out []byte, rep Report) {
		want := bytes.ReplaceAll(in, []byte("X-Smtpeter-Trackclicks: false\r\n"), nil)
		want = bytes.ReplaceAll(want, []byte("X-Smtpeter-Trackopens: no\r\n"), nil)
		if !bytes.Equal(out, want) {
			t.Errorf("nil Tracker: got\n%q\nwant\n%q", out, want)
		}
	}},
	{name: "text-plain-tracktext", opt: Options{TrackText: true}, tracked: []string{""}},
	{name: "double-boundary", tracked: []string{"1"}},
	{name: "reused-boundary", tracked: []string{"2"}, skips: []string{"boundary reused"}},
	{name: "inline-filename", tracked: []string{"1"}, check: func(t *testing.T, in, out []byte, rep Report) {
		if !bytes.Contains(out, []byte(`"http://file.example.com/"`)) {
			t.Error("a file the sender attached was rewritten")
		}
	}},
	{name: "boundary-trailing-space", skips: []string{"boundary ends with a space"}},
	{name: "part-header-space-before-colon", skips: []string{"malformed part header"}},
	{name: "digest-default-rfc822"},
	{name: "requote-top-with-controls", tracked: []string{""}, requoted: []string{""}, check: func(t *testing.T, in, out []byte, rep Report) {
		if bytes.Contains(out, []byte("X-Smtpeter")) || !bytes.Contains(out, []byte("Content-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\n\r\n")) {
			t.Errorf("header not as expected:\n%s", out[:200])
		}
	}},
}

// assertLineLimit checks every line after the top header is within n
// octets; with cte set, only lines of bodies in that encoding.
func assertLineLimit(t *testing.T, out []byte, n int, cte string) {
	t.Helper()
	inBody := cte == ""
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSuffix(l, "\r")
		if cte != "" {
			if strings.HasPrefix(strings.ToLower(l), "content-transfer-encoding: ") {
				inBody = strings.EqualFold(strings.TrimSpace(l[len("content-transfer-encoding: "):]), cte)
			}
			if strings.HasPrefix(l, "--") {
				inBody = false
			}
		}
		if inBody && len(l) > n {
			t.Errorf("line of %d octets (limit %d): %.60q...", len(l), n, l)
		}
	}
}

var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"plain", func(r io.Reader) io.Reader { return r }},
	{"onebyte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
}

func runRewrite(in []byte, wrap func(io.Reader) io.Reader, opt Options, tr Tracker) ([]byte, Report, error) {
	out, rep, _, err := runTraced(in, wrap, opt, tr)
	return out, rep, err
}

func runTraced(in []byte, wrap func(io.Reader) io.Reader, opt Options, tr Tracker) ([]byte, Report, []leafTrace, error) {
	var traces []leafTrace
	opt.trace = func(lt leafTrace) { traces = append(traces, lt) }
	var out bytes.Buffer
	rep, err := Rewrite(&out, wrap(bytes.NewReader(in)), opt, func(Controls) (Tracker, error) {
		if tr == nil {
			return nil, nil
		}
		return tr, nil
	})
	return out.Bytes(), rep, traces, err
}

// TestGolden runs every message under testdata/mime through the walker with
// the fake tracker (want.eml) and with the real rewrite.Tracker
// (want-real.eml), whole, one byte at a time and in halves.
func TestGolden(t *testing.T) {
	root := filepath.Join(moduleRoot(t), "testdata", "mime")
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(root, tc.name)
			in, err := os.ReadFile(filepath.Join(dir, "input.eml"))
			if err != nil {
				t.Fatal(err)
			}
			for _, real := range []bool{false, true} {
				golden := filepath.Join(dir, "want.eml")
				if real {
					golden = filepath.Join(dir, "want-real.eml")
				}
				var first []byte
				for _, rd := range readers {
					var tr Tracker
					var fake *fakeTracker
					var rec *recorder
					if !tc.off {
						if real {
							rec, err = newRecorder(42)
							if err != nil {
								t.Fatal(err)
							}
							tr = rec
						} else {
							fake = &fakeTracker{}
							tr = fake
						}
					}
					out, rep, traces, err := runTraced(in, rd.wrap, tc.opt, tr)
					if err != nil {
						t.Fatalf("%s: %v", rd.name, err)
					}
					if first == nil {
						first = out
						checkReport(t, tc, rep)
						if tc.check != nil && !real {
							tc.check(t, in, out, rep)
						}
						var calls []call
						if fake != nil {
							calls = fake.calls
						} else if rec != nil {
							calls = rec.calls
						}
						checkFidelity(t, in, out, rep, calls, traces)
					} else if !bytes.Equal(out, first) {
						t.Errorf("%s reader: output differs from a whole read", rd.name)
					}
				}
				if *update {
					if err := os.WriteFile(golden, first, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./mime -run TestGolden -update)", err)
				}
				if !bytes.Equal(first, want) {
					t.Errorf("%s: output differs from golden:\ngot:\n%s\nwant:\n%s", filepath.Base(golden), first, want)
				}
			}
		})
	}
}

func checkReport(t *testing.T, tc goldenCase, rep Report) {
	t.Helper()
	if !slices.Equal(rep.Parts, tc.tracked) || rep.Tracked != len(tc.tracked) {
		t.Errorf("tracked %d %q, want %q", rep.Tracked, rep.Parts, tc.tracked)
	}
	if tc.untouched == "" && rep.Untouched != "" || !strings.Contains(rep.Untouched, tc.untouched) {
		t.Errorf("untouched %q, want %q", rep.Untouched, tc.untouched)
	}
	if len(rep.Skipped) != len(tc.skips) {
		t.Errorf("skipped %v, want %q", rep.Skipped, tc.skips)
	} else {
		for i, s := range rep.Skipped {
			if !strings.Contains(s.Reason, tc.skips[i]) {
				t.Errorf("skip %d: %q, want %q", i, s.Reason, tc.skips[i])
			}
		}
	}
	if !slices.Equal(rep.Requoted, tc.requoted) {
		t.Errorf("requoted %q, want %q", rep.Requoted, tc.requoted)
	}
}

func TestParseControls(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		want    string // formatted Controls
		wantErr string // header named in the ControlError
	}{
		{"none", "From: a@b\r\n", "clicks=nil opens=nil scam=nil tags=[]", ""},
		{"all true forms", "X-Smtpeter-Trackclicks: TRUE\r\nx-smtpeter-trackopens:  yes \r\nX-SMTPETER-PREVENTSCAM: On\r\n", "clicks=true opens=true scam=true tags=[]", ""},
		{"all false forms", "X-Smtpeter-Trackclicks: false\r\nX-Smtpeter-Trackopens: No\r\nX-Smtpeter-Preventscam: 0\r\n", "clicks=false opens=false scam=false tags=[]", ""},
		{"one", "X-Smtpeter-Trackclicks: 1\r\n", "clicks=true opens=nil scam=nil tags=[]", ""},
		{"off", "X-Smtpeter-Trackopens: OFF\r\n", "clicks=nil opens=false scam=nil tags=[]", ""},
		{"folded value", "X-Smtpeter-Trackclicks:\r\n true\r\n", "clicks=true opens=nil scam=nil tags=[]", ""},
		{"tags", "X-Smtpeter-Tags: a, b ,,c\r\nX-Smtpeter-Tags: d\r\n", "clicks=nil opens=nil scam=nil tags=[a b c d]", ""},
		{"first wins", "X-Smtpeter-Trackclicks: yes\r\nX-Smtpeter-Trackclicks: no\r\n", "clicks=true opens=nil scam=nil tags=[]", ""},
		{"unknown ignored", "X-Smtpeter-Whatever: maybe\r\n", "clicks=nil opens=nil scam=nil tags=[]", ""},
		{"bad value", "X-Smtpeter-Trackclicks: maybe\r\n", "", "x-smtpeter-trackclicks"},
		{"empty value", "X-Smtpeter-Trackopens:\r\n", "", "x-smtpeter-trackopens"},
		{"bad second value", "X-Smtpeter-Preventscam: yes\r\nX-Smtpeter-Preventscam: y\r\n", "", "x-smtpeter-preventscam"},
		{"duplicate tags once", "X-Smtpeter-Tags: a,b,a\r\nX-Smtpeter-Tags: b\r\n", "clicks=nil opens=nil scam=nil tags=[a b]", ""},
		{"too many tags", "X-Smtpeter-Tags: " + strings.Repeat("t,", MaxTags) + "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21\r\n", "", "x-smtpeter-tags"},
		{"tag too long", "X-Smtpeter-Tags: " + strings.Repeat("x", MaxTagLen+1) + "\r\n", "", "x-smtpeter-tags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := textproto.ReadHeader(bufioReader(tt.header + "\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseControls(&h)
			if tt.wantErr != "" {
				var ce *ControlError
				if !errors.As(err, &ce) || ce.Header != tt.wantErr {
					t.Fatalf("error %v, want a ControlError for %s", err, tt.wantErr)
				}
				if !strings.HasPrefix(ce.Error(), "mime: header "+tt.wantErr) {
					t.Errorf("message %q", ce.Error())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := formatControls(c); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func formatControls(c Controls) string {
	b := func(p *bool) string {
		if p == nil {
			return "nil"
		}
		if *p {
			return "true"
		}
		return "false"
	}
	return "clicks=" + b(c.TrackClicks) + " opens=" + b(c.TrackOpens) + " scam=" + b(c.PreventScam) + " tags=[" + strings.Join(c.Tags, " ") + "]"
}

func TestRewriteErrors(t *testing.T) {
	msg := []byte("From: a@b\r\nX-Smtpeter-Trackclicks: perhaps\r\nContent-Type: text/html\r\n\r\n<a href=\"http://x.example/\">x</a>\r\n")
	t.Run("bad control header", func(t *testing.T) {
		var out bytes.Buffer
		var got Controls
		rep, err := Rewrite(&out, bytes.NewReader(msg), Options{}, func(c Controls) (Tracker, error) { got = c; return &fakeTracker{}, nil })
		if err != nil {
			t.Fatalf("error %v: a bad control header must not fail delivery", err)
		}
		var ce *ControlError
		if !errors.As(rep.ControlErr, &ce) || ce.Value != "perhaps" || ce.Header != "x-smtpeter-trackclicks" {
			t.Fatalf("ControlErr %v, want the ControlError", rep.ControlErr)
		}
		if got.TrackClicks != nil || rep.Tracked != 1 || bytes.Contains(out.Bytes(), []byte("perhaps")) {
			t.Errorf("bad header not treated as absent and removed: %+v\n%s", got, out.Bytes())
		}
	})
	good := bytes.Replace(msg, []byte("perhaps"), []byte("yes"), 1)
	t.Run("decide error", func(t *testing.T) {
		var out bytes.Buffer
		_, err := Rewrite(&out, bytes.NewReader(good), Options{}, func(Controls) (Tracker, error) { return nil, errBoom })
		if !errors.Is(err, errBoom) || out.Len() != 0 {
			t.Fatalf("error %v, %d bytes written; want errBoom and nothing", err, out.Len())
		}
	})
	t.Run("write error", func(t *testing.T) {
		for n := 0; n < len(good)-40; n += 7 {
			_, err := Rewrite(&failWriter{n: n}, bytes.NewReader(good), Options{}, func(Controls) (Tracker, error) { return &fakeTracker{}, nil })
			if !errors.Is(err, errBoom) {
				t.Fatalf("fail after %d: error %v, want errBoom", n, err)
			}
		}
	})
	t.Run("read error", func(t *testing.T) {
		for n := 0; n < len(good); n += 5 {
			r := io.MultiReader(bytes.NewReader(good[:n]), iotest.ErrReader(errBoom))
			_, err := Rewrite(io.Discard, r, Options{}, func(Controls) (Tracker, error) { return &fakeTracker{}, nil })
			if !errors.Is(err, errBoom) {
				t.Fatalf("fail after %d: error %v, want errBoom", n, err)
			}
		}
	})
}

// TestQPWriter checks the encoder against the standard library's decoder
// and the 76-character limit, keeping hard line breaks as they were.
func TestQPWriter(t *testing.T) {
	tests := []string{
		"",
		"plain\r\ntext\r\n",
		"lf only\nlines\n",
		"trailing space \r\ntab\t\nend ",
		"lone\rcr and = sign and \x00\xff bytes",
		strings.Repeat("a", 200) + "\r\n" + strings.Repeat("=", 100),
		strings.Repeat("x ", 100) + "\r",
		strings.Repeat("a", 75) + "--B\r\n--B--\n-",
	}
	for i, s := range tests {
		for _, eol := range []string{"\r\n", "\n"} {
			var b bytes.Buffer
			q := newQPWriter(&b, eol, nil)
			for _, c := range []byte(s) { // byte by byte: state across writes
				if _, err := q.Write([]byte{c}); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(qpReader(b.Bytes()))
			if err != nil {
				t.Fatalf("%d: %v", i, err)
			}
			if string(got) != s {
				t.Errorf("%d %q: round trip %q via %q", i, s, got, b.String())
			}
			for _, l := range strings.Split(b.String(), "\n") {
				if len(strings.TrimSuffix(l, "\r")) > 76 {
					t.Errorf("%d: line of %d", i, len(l))
				}
				if strings.HasPrefix(l, "-") {
					t.Errorf("%d: encoded line starts with a dash: %q", i, l)
				}
			}
			if eol == "\n" && strings.Count(b.String(), "\r") > strings.Count(s, "\r\n") {
				t.Errorf("%d: CR in soft breaks of an LF part: %q", i, b.String())
			}
		}
	}
}

// TestLargeBody makes a tracked body spill to a temporary file and checks
// the result equals the in-memory path's.
func TestLargeBody(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("From: a@b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	line := "<p>caf=C3=A9 <a href=3D\"http://big.example.com/x\">x</a></p>\r\n"
	for b.Len() < 3*spoolMem {
		b.WriteString(line)
	}
	dir := t.TempDir()
	fake := &fakeTracker{}
	out, rep, traces, err := runTraced(b.Bytes(), func(r io.Reader) io.Reader { return r }, Options{TempDir: dir}, fake)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tracked != 1 || len(rep.Skipped) != 0 {
		t.Fatalf("report %+v", rep)
	}
	checkFidelity(t, b.Bytes(), out, rep, fake.calls, traces)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}
