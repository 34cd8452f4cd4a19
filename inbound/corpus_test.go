package inbound

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// bounceCorpus returns the Sisimai set-of-emails folder, or skips.
func bounceCorpus(t testing.TB) string {
	dir := filepath.Join("..", "..", "shared", "corpora", "bounces", "sisimai-set-of-emails")
	if _, err := os.Stat(filepath.Join(dir, "expected.tsv")); err != nil {
		t.Skipf("bounce corpus absent (%v): it sits in ../shared beside the checkout", err)
	}
	return dir
}

// expectedRow is one row of expected.tsv: what Sisimai reads.
type expectedRow struct {
	file, status, reply, reason string
	index                       int
	hard                        bool
}

func loadExpected(t testing.TB, dir string) map[string][]expectedRow {
	f, err := os.Open(filepath.Join(dir, "expected.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]expectedRow{}
	sc := bufio.NewScanner(f)
	first := true
	for sc.Scan() {
		if first {
			first = false
			if got := sc.Text(); got != "file\tindex\tstatus\treply_code\treason\thard_bounce" {
				t.Fatalf("expected.tsv header changed: %q", got)
			}
			continue
		}
		c := strings.Split(sc.Text(), "\t")
		if len(c) != 6 {
			t.Fatalf("expected.tsv: bad row %q", sc.Text())
		}
		var idx int
		fmt.Sscan(c[1], &idx)
		out[c[0]] = append(out[c[0]], expectedRow{file: c[0], index: idx, status: c[2], reply: c[3], reason: c[4], hard: c[5] == "true"})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, rows := range out {
		sort.Slice(rows, func(i, j int) bool { return rows[i].index < rows[j].index })
	}
	return out
}

func classifyFile(t testing.TB, path string) *Result {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Classify(bytes.NewReader(b), Envelope{Rcpt: []string{"bounce+tok@b.example"}})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return res
}

var mtaOf = regexp.MustCompile(`^((?:lhost|rhost)-[a-z0-9]+|rfc3464)`)

// bounceScore compares our reading of the bounce files with Sisimai's.
type bounceScore struct {
	rows, status, verdict int
	perMTA                map[string]*[3]int // rows, status, verdict
	wrongStatus           []string
	wrongVerdict          []string
}

func scoreBounces(t testing.TB, dir, sub string, exp map[string][]expectedRow) *bounceScore {
	s := &bounceScore{perMTA: map[string]*[3]int{}}
	var files []string
	for f := range exp {
		if mtaOf.MatchString(f) {
			files = append(files, f)
		}
	}
	sort.Strings(files)
	debug := os.Getenv("INBOUND_DEBUG") != ""
	for _, f := range files {
		res := classifyFile(t, filepath.Join(dir, "maildir", sub, f))
		mta := mtaOf.FindString(f)
		pm := s.perMTA[mta]
		if pm == nil {
			pm = &[3]int{}
			s.perMTA[mta] = pm
		}
		for i, row := range exp[f] {
			s.rows++
			pm[0]++
			var got *Recipient
			if i < len(res.Recipients) {
				got = &res.Recipients[i]
			}
			// A feedback row is Sisimai's reading of a complaint: it
			// agrees with a complaint (which has no status).
			feedback := row.reason == "feedback" && (res.Kind == KindComplaint || res.Kind == KindDMARCFailure)
			okS := got != nil && got.Status == row.status || feedback
			wantV := Soft
			if row.hard {
				wantV = Hard
			}
			okV := got != nil && got.Verdict == wantV || feedback
			if okS {
				s.status++
				pm[1]++
			} else {
				s.wrongStatus = append(s.wrongStatus, fmt.Sprintf("%s#%d", f, row.index))
			}
			if okV {
				s.verdict++
				pm[2]++
			} else {
				s.wrongVerdict = append(s.wrongVerdict, fmt.Sprintf("%s#%d", f, row.index))
			}
			if debug && (!okS || !okV || (os.Getenv("INBOUND_DEBUG") == "all" && got != nil && string(got.Reason) != row.reason)) {
				if got == nil {
					t.Logf("MISS %s#%d want %s %s %s %v: got kind %s with %d recipients (%+v)", f, row.index, row.status, row.reply, row.reason, row.hard, res.Kind, len(res.Recipients), res.Response)
				} else {
					t.Logf("MISS %s%s %s#%d want %s %s %s %v: got %s %d %s %s [%s] %q", map[bool]string{true: "", false: "S"}[okS], map[bool]string{true: "", false: "V"}[okV], f, row.index, row.status, row.reply, row.reason, row.hard, got.Status, got.ReplyCode, got.Reason, got.Verdict, got.Command, clip(got.Diagnostic, 300))
				}
			}
		}
	}
	return s
}

// TestBounceCorpus reads every lhost-*, rhost-* and rfc3464-* file that
// Sisimai's expected.tsv covers and compares status and verdict per row.
func TestBounceCorpus(t *testing.T) {
	dir := bounceCorpus(t)
	exp := loadExpected(t, dir)
	s := scoreBounces(t, dir, "bsd", exp)
	if s.rows < 590 {
		t.Fatalf("only %d rows in expected.tsv for the bounce files", s.rows)
	}
	ps := float64(s.status) / float64(s.rows)
	pv := float64(s.verdict) / float64(s.rows)
	t.Logf("status %d/%d (%.1f%%), verdict %d/%d (%.1f%%)", s.status, s.rows, 100*ps, s.verdict, s.rows, 100*pv)
	var mtas []string
	for k := range s.perMTA {
		mtas = append(mtas, k)
	}
	sort.Strings(mtas)
	var b strings.Builder
	for _, k := range mtas {
		v := s.perMTA[k]
		if v[1] != v[0] || v[2] != v[0] {
			fmt.Fprintf(&b, " %s %d/%d/%d", k, v[0], v[1], v[2])
		}
	}
	t.Logf("MTAs not all right (rows/status/verdict):%s", b.String())
	t.Logf("wrong status: %s", strings.Join(s.wrongStatus, " "))
	t.Logf("wrong verdict: %s", strings.Join(s.wrongVerdict, " "))
	if ps < 0.95 {
		t.Errorf("status matches Sisimai for %.1f%% of rows, want >= 95%%", 100*ps)
	}
	if pv < 0.95 {
		t.Errorf("verdict matches Sisimai for %.1f%% of rows, want >= 95%%", 100*pv)
	}
}

// TestComplaintsAndAutoReplies reads arf-* as complaints (DMARC failure
// reports for Feedback-Type: auth-failure) and rfc3834-* as automatic
// replies.
func TestComplaintsAndAutoReplies(t *testing.T) {
	dir := filepath.Join(bounceCorpus(t), "maildir", "bsd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var arf, arfOK, auto, autoOK int
	var misses []string
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, "arf-"):
			arf++
			res := classifyFile(t, filepath.Join(dir, n))
			if (res.Kind == KindComplaint || res.Kind == KindDMARCFailure) && res.Feedback != nil && res.Feedback.FeedbackType != "" && res.Feedback.Reporter != "" {
				arfOK++
			} else {
				misses = append(misses, fmt.Sprintf("%s (%s)", n, res.Kind))
			}
		case strings.HasPrefix(n, "rfc3834-"):
			auto++
			res := classifyFile(t, filepath.Join(dir, n))
			if res.Kind == KindResponse && res.Response.Kind == ResponseAutoReply {
				autoOK++
			} else {
				misses = append(misses, fmt.Sprintf("%s (%s)", n, res.Kind))
			}
		}
	}
	t.Logf("arf: %d/%d complaints or DMARC failure reports; rfc3834: %d/%d auto-replies; misses: %v", arfOK, arf, autoOK, auto, misses)
	if arf < 17 || auto < 6 {
		t.Fatalf("corpus changed: %d arf, %d rfc3834 files", arf, auto)
	}
	if float64(arfOK) < 0.95*float64(arf) || float64(autoOK) < 0.95*float64(auto) {
		t.Errorf("arf %d/%d, rfc3834 %d/%d: want >= 95%% each", arfOK, arf, autoOK, auto)
	}
}

// TestLineEndings reads the CRLF (maildir/dos) and CR (maildir/mac)
// copies and wants exactly what the LF original gives.
func TestLineEndings(t *testing.T) {
	base := filepath.Join(bounceCorpus(t), "maildir")
	n := 0
	for _, sub := range []string{"dos", "mac"} {
		ents, err := os.ReadDir(filepath.Join(base, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			got := classifyFile(t, filepath.Join(base, sub, e.Name()))
			// Some copies have no LF original; the CRLF copy is the
			// reference for the CR one then.
			ref := "bsd"
			if _, err := os.Stat(filepath.Join(base, ref, e.Name())); err != nil {
				if sub == "dos" {
					continue
				}
				ref = "dos"
			}
			want := classifyFile(t, filepath.Join(base, ref, e.Name()))
			// A few copies differ from their original in more than line
			// ends (RFC 2047 words decoded), so what is compared is what
			// was read: kind, recipients, report, the original's identity.
			if !reflect.DeepEqual(semantic(got), semantic(want)) {
				g, _ := json.Marshal(semantic(got))
				w, _ := json.Marshal(semantic(want))
				t.Errorf("%s/%s differs from %s/%s:\n got %s\nwant %s", sub, e.Name(), ref, e.Name(), g, w)
			}
			n++
		}
	}
	if n < 100 {
		t.Errorf("only %d copies", n)
	}
}

// semantic is what a result says, without the text it quotes (some
// copies in the corpus were re-encoded: ISO-2022-JP text stored as
// UTF-8, RFC 2047 words decoded).
func semantic(r *Result) any {
	type rcpt struct {
		Address, Action, Status string
		ReplyCode               int
		Reason                  Reason
		Verdict                 Verdict
	}
	out := struct {
		Kind                    Kind
		Recipients              []rcpt
		FeedbackType, Recipient string
		Response                *Response
		MessageID               string
	}{Kind: r.Kind, Response: r.Response}
	for _, x := range r.Recipients {
		out.Recipients = append(out.Recipients, rcpt{x.Address, x.Action, x.Status, x.ReplyCode, x.Reason, x.Verdict})
	}
	if r.Feedback != nil {
		out.FeedbackType, out.Recipient = r.Feedback.FeedbackType, r.Feedback.Recipient
	}
	if r.Original != nil {
		out.MessageID = r.Original.MessageID
	}
	return out
}

// TestNotBounces reads maildir/err (mbox pieces) and maildir/not (mail
// that is not a bounce, says Sisimai): never an error, and every bounce
// recipient well-formed.
func TestNotBounces(t *testing.T) {
	base := filepath.Join(bounceCorpus(t), "maildir")
	kinds := map[string]map[Kind]int{}
	for _, sub := range []string{"err", "not"} {
		kinds[sub] = map[Kind]int{}
		ents, err := os.ReadDir(filepath.Join(base, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			res := classifyFile(t, filepath.Join(base, sub, e.Name()))
			kinds[sub][res.Kind]++
			checkInvariants(t, e.Name(), res)
			if sub == "not" && strings.HasPrefix(e.Name(), "is-not-bounce") && res.Kind != KindResponse {
				t.Errorf("%s: got %s, want a response", e.Name(), res.Kind)
			}
		}
	}
	t.Logf("err: %v; not: %v", kinds["err"], kinds["not"])
}

// checkInvariants asserts what holds for every result.
func checkInvariants(t testing.TB, name string, res *Result) {
	t.Helper()
	switch res.Kind {
	case KindBounce, KindDelayed, KindDelivered:
		if len(res.Recipients) == 0 {
			t.Errorf("%s: %s without recipients", name, res.Kind)
		}
		for _, r := range res.Recipients {
			if !statusForm.MatchString(r.Status) || (r.Verdict != Hard && r.Verdict != Soft) || r.Reason == "" || r.Address == "" || len(r.Diagnostic) > 1000 {
				t.Errorf("%s: bad recipient %+v", name, r)
			}
			if r.Verdict == Hard && (r.Status[0] != '5' || res.Kind != KindBounce) {
				t.Errorf("%s: hard verdict on %s %s", name, res.Kind, r.Status)
			}
		}
	case KindComplaint, KindDMARCFailure:
		if res.Feedback == nil || res.Feedback.FeedbackType == "" {
			t.Errorf("%s: %s without feedback", name, res.Kind)
		}
	case KindDMARC:
		if res.DMARC == nil {
			t.Errorf("%s: dmarc without report", name)
		}
	case KindTLSReport:
		if res.TLS == nil {
			t.Errorf("%s: tls-report without report", name)
		}
	case KindResponse:
		if res.Response == nil || res.Response.Kind == "" || (res.Response.Kind == ResponseUnparsed) != (res.Response.Reason != "") {
			t.Errorf("%s: bad response %+v", name, res.Response)
		}
	default:
		t.Errorf("%s: unknown kind %q", name, res.Kind)
	}
	if o := res.Original; o != nil && len(o.Excerpt) > 32<<10 {
		t.Errorf("%s: excerpt of %d bytes", name, len(o.Excerpt))
	}
}

var statusForm = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

var update = flag.Bool("update", false, "rewrite testdata/corpus.golden")

// TestCorpusGolden records what every message of the bounce corpus is
// read as, one line per recipient (or per message for other kinds), in
// testdata/corpus.golden: a change in any reading shows in review. Run
// with -update to accept a change.
func TestCorpusGolden(t *testing.T) {
	base := filepath.Join(bounceCorpus(t), "maildir")
	var b strings.Builder
	b.WriteString("# file\tkind\trecipient\tstatus\treply\treason\tverdict (or the report's summary)\n")
	for _, sub := range []string{"bsd", "err", "not"} {
		ents, err := os.ReadDir(filepath.Join(base, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			res := classifyFile(t, filepath.Join(base, sub, e.Name()))
			name := sub + "/" + e.Name()
			switch {
			case len(res.Recipients) > 0:
				for _, r := range res.Recipients {
					fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, res.Kind, r.Address, r.Status, r.ReplyCode, r.Reason, r.Verdict)
				}
			case res.Feedback != nil:
				fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\n", name, res.Kind, res.Feedback.Recipient, res.Feedback.FeedbackType, res.Feedback.Reporter)
			case res.Response != nil:
				fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\n", name, res.Kind, res.Response.Kind, res.Response.Auto, res.Response.Reason)
			default:
				fmt.Fprintf(&b, "%s\t%s\n", name, res.Kind)
			}
		}
	}
	golden := filepath.Join("testdata", "corpus.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got := b.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("corpus.golden differs at line %d:\n got %q\nwant %q\n(run with -update to accept)", i+1, g, w)
			}
		}
	}
}
