package inbound

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
					t.Logf("MISS %s#%d want %s %s %s %v: got %s %d %s %s [%s] %q", f, row.index, row.status, row.reply, row.reason, row.hard, got.Status, got.ReplyCode, got.Reason, got.Verdict, got.Command, clip(got.Diagnostic, 300))
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
