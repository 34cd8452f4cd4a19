package inbound

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOrdinaryMail reads the MIME corpus (about 1,200 ordinary messages:
// newsletters, spam, torture tests, broken mail) as if each had come back
// to a VERP address: none may fail or break an invariant, and few may be
// taken for bounces or reports (the corpus holds a few real ones).
func TestOrdinaryMail(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "corpora", "mime")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("MIME corpus absent (%v): it sits in ../shared beside the checkout", err)
	}
	kinds := map[Kind]int{}
	var notResponse []string
	n := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || fi.Size() > 4<<20 {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".eml", ".msg", ".mbox", ".txt", "":
		default:
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		res, err := Classify(bytes.NewReader(b), Envelope{MailFrom: "someone@example.org", Rcpt: []string{"b+t@b.example"}})
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		n++
		kinds[res.Kind]++
		checkInvariants(t, p, res)
		if res.Kind != KindResponse {
			rel, _ := filepath.Rel(dir, p)
			notResponse = append(notResponse, rel+"="+string(res.Kind))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages: %v", n, kinds)
	t.Logf("not responses: %v", notResponse)
	if n < 500 {
		t.Fatalf("only %d messages read", n)
	}
	if len(notResponse)*20 > n {
		t.Errorf("%d of %d ordinary messages were not read as responses", len(notResponse), n)
	}
}
