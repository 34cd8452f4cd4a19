package dkim

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
)

// TestCorpusVerifies produces the tracked copy of every file of the
// shared MIME corpus as the relay's delivery does (mime.Rewrite with the
// rewrite tracker, clicks, opens and text on, DKIM-signed messages
// tracked anyway), signs it with RSA, with Ed25519 and with both, and has
// dkimpy verify each signature with the key from the test DNS server.
// Each verified copy is then tampered with twice (one body byte, one
// letter of the From field) and must fail. Files that are not messages
// (licences, expected-structure XML, images) cannot be signed: they are
// listed with the reason.
func TestCorpusVerifies(t *testing.T) {
	root := sharedDir(t, filepath.Join("corpora", "mime"))
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d := startDNS(t)
	py := dkimtest.StartVerifier(t, d.addr)
	rk, ek := signingKeys(t, d)
	modes := []struct {
		name string
		keys []Key
	}{{"rsa", []Key{rk}}, {"ed25519", []Key{ek}}, {"rsa+ed25519", []Key{rk, ek}}}

	type count struct{ signed, verified, bodyFails, noBody, fromFails int }
	counts := make([]count, len(modes))
	var failures []string
	unsignable := map[string][]string{} // reason -> files
	tracked, wasSigned, wasSignedTracked, mboxLines, fromAdded := 0, 0, 0, 0, 0
	for i, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, f)
		in, fixed := asSubmitted(in)
		switch fixed {
		case "mbox":
			mboxLines++
		case "from":
			fromAdded++
		}
		var rep mime.Report
		render := reportingRender(t, in, uint64(i+1), &rep)
		info, ierr := Inspect(bytes.NewReader(in))
		for m, mode := range modes {
			var out bytes.Buffer
			err := Sign(&out, render, mode.keys, Options{})
			if errors.Is(err, ErrUnsignable) {
				if m == 0 {
					_, reason, _ := strings.Cut(err.Error(), ErrUnsignable.Error()+": ")
					if i := strings.Index(reason, `"`); i > 0 {
						reason = reason[:i] + "..."
					}
					unsignable[reason] = append(unsignable[reason], name)
					if !strings.HasPrefix(rep.Untouched, "malformed header") && !strings.HasPrefix(reason, "empty") {
						// The MIME walker's own header parser found a
						// well-formed header: the two must agree.
						t.Errorf("%s: the MIME walker reads a header, Sign says %v", name, err)
					}
				}
				continue
			}
			if err != nil {
				t.Errorf("%s %s: %v", name, mode.name, err)
				continue
			}
			if m == 0 {
				if rep.Tracked > 0 {
					tracked++
				}
				if ierr == nil && info.Signed() {
					wasSigned++
					if rep.Tracked > 0 {
						wasSignedTracked++
					}
				}
			}
			c := &counts[m]
			c.signed++
			msg := out.Bytes()
			if ok, why := dkimtest.AllOK(py.Verify(t, msg, len(mode.keys))); !ok {
				failures = append(failures, name+" "+mode.name+": "+why)
				continue
			}
			c.verified++
			body := bytes.Clone(msg)
			if flipOne(body[bodyOffset(body):]) {
				if ok, _ := dkimtest.AllOK(py.Verify(t, body, len(mode.keys))); ok {
					failures = append(failures, name+" "+mode.name+": verified with a body byte changed")
				} else {
					c.bodyFails++
				}
			} else {
				c.noBody++ // no letter or digit in the body: nothing to change there
			}
			from := flipField(bytes.Clone(msg), "from")
			if from == nil {
				t.Fatalf("%s: no From field in the signed copy", name)
			}
			if ok, _ := dkimtest.AllOK(py.Verify(t, from, len(mode.keys))); ok {
				failures = append(failures, name+" "+mode.name+": verified with the From field changed")
			} else {
				c.fromFails++
			}
		}
	}
	t.Logf("%d files; %d start with an mbox From line and %d have no From field, which the test removes and adds as a submission would",
		len(files), mboxLines, fromAdded)
	t.Logf("%d files; %d signable copies, %d with tracked leaves; %d were DKIM-signed by their sender (%d of them tracked), re-signed",
		len(files), counts[0].signed, tracked, wasSigned, wasSignedTracked)
	for m, c := range counts {
		t.Logf("%s: %d signed, %d verified by dkimpy; tampered copies refused: %d with a body byte changed (%d bodies had no letter or digit to change), %d with the From field changed",
			modes[m].name, c.signed, c.verified, c.bodyFails, c.noBody, c.fromFails)
		if c.verified != c.signed || c.bodyFails+c.noBody != c.verified || c.fromFails != c.verified {
			t.Errorf("%s: not every signed copy verified, or a tampered one did", modes[m].name)
		}
	}
	reasons := make([]string, 0, len(unsignable))
	n := 0
	for r, fs := range unsignable {
		reasons = append(reasons, r)
		n += len(fs)
	}
	sort.Strings(reasons)
	t.Logf("%d files not signable:", n)
	for _, r := range reasons {
		t.Logf("  %s (%d): %s", r, len(unsignable[r]), strings.Join(unsignable[r], " "))
	}
	for _, f := range failures {
		t.Errorf("%s", f)
	}
}

// asSubmitted returns a corpus file as an application would submit it
// over SMTP: without the mbox "From " line of a saved mailbox file, and
// with a From field when it has a header without one (DKIM cannot sign
// a message without From, and the relay picks its key by the From
// domain). It says which change it made, if any.
func asSubmitted(in []byte) ([]byte, string) {
	if bytes.HasPrefix(in, []byte("From ")) {
		if i := bytes.IndexByte(in, '\n'); i > 0 {
			return in[i+1:], "mbox"
		}
	}
	info, err := Inspect(bytes.NewReader(in))
	if err == nil && len(info.FromDomains) == 0 && errors.Is(info.FromErr, errNoFrom) && !bytes.HasPrefix(in, []byte("\n")) && !bytes.HasPrefix(in, []byte("\r\n")) && len(in) > 0 {
		return slices.Concat([]byte("From: corpus@sender.example\r\n"), in), "from"
	}
	return in, ""
}

// reportingRender is trackedRender that also keeps the walk's report.
func reportingRender(t testing.TB, msg []byte, id uint64, rep *mime.Report) func(io.Writer) error {
	return func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 32<<10)
		r, err := mime.Rewrite(bw, bytes.NewReader(msg), mime.Options{TrackText: true, TrackSigned: true},
			func(mime.Controls) (mime.Tracker, error) { return tracker(t, id), nil })
		*rep = r
		if err != nil {
			return err
		}
		return bw.Flush()
	}
}

// flipField changes one letter or digit in the first line of the first
// field named name of a CRLF message's header, or appends an "x" to that
// line when it has none. It returns the changed message.
func flipField(msg []byte, name string) []byte {
	h := msg[:bodyOffset(msg)]
	for off := 0; off < len(h); {
		end := bytes.Index(h[off:], []byte("\r\n"))
		if end < 0 {
			return nil
		}
		line := h[off : off+end]
		if k, _, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(k), name) {
			if flipOne(line[len(k)+1:]) {
				return msg
			}
			return slices.Concat(msg[:off+end], []byte("x"), msg[off+end:])
		}
		off += end + 2
	}
	return nil
}
