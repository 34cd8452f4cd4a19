//go:debug rsa1024min=0

package dkim

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
)

const plainMsg = "From: Shop <news@sender.example>\n" +
	"To: reader@example.net\n" +
	"Subject: Hello\n" +
	"Date: Mon, 06 Jul 2026 10:00:00 +0000\n" +
	"Message-ID: <1@sender.example>\n" +
	"MIME-Version: 1.0\n" +
	"Content-Type: text/plain; charset=utf-8\n" +
	"Received: from x by y\n" +
	"X-Mailer: test\n" +
	"\n" +
	"Hello   there,  \n" +
	"\n" +
	"bye\n\n\n"

// TestSignVerifies signs messages of every shape with RSA, Ed25519 and
// both keys at once, each rendered in one write, in one-byte writes and
// in odd chunks, buffered and rendered twice, and has dkimpy verify
// every signature. The copy after the signatures must not depend on how
// it was rendered.
func TestSignVerifies(t *testing.T) {
	d := startDNS(t)
	py := dkimtest.StartVerifier(t, d.addr)
	rk, ek := signingKeys(t, d)
	sender := "DKIM-Signature: v=1; a=rsa-sha256; d=old.example; s=s1; c=relaxed/relaxed;\r\n h=From:Subject; bh=AAAA; b=BBBB\r\n"
	cases := []struct {
		name, msg string
		keep      bool
		wantH     string // the h= list
		wantSigs  int    // DKIM-Signature fields in the copy
	}{
		{name: "lf", msg: plainMsg, wantH: "From:From:To:Subject:Date:Message-ID:MIME-Version:Content-Type"},
		{name: "crlf", msg: strings.ReplaceAll(plainMsg, "\n", "\r\n"), wantH: "From:From:To:Subject:Date:Message-ID:MIME-Version:Content-Type"},
		{name: "no final newline", msg: "From: a@sender.example\nSubject: x\n\nbody", wantH: "From:From:Subject"},
		{name: "header only", msg: "From: a@sender.example\nTo: b@example.net", wantH: "From:From:To"},
		{name: "empty body", msg: "From: a@sender.example\n\n", wantH: "From:From"},
		{name: "folded and repeated", msg: "from: a@sender.example\nTo: b@example.net,\n\tc@example.net\nCc: x@example.net\nCc: y@example.net\nList-Unsubscribe: <https://sender.example/u>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\nFeedback-ID: 1:2:3\n\nhi\n",
			wantH: "From:From:To:Cc:Cc:List-Unsubscribe:List-Unsubscribe-Post:Feedback-ID"},
		{name: "sender signature dropped", msg: sender + strings.ReplaceAll(plainMsg, "\n", "\r\n"), wantH: "From:From:To:Subject:Date:Message-ID:MIME-Version:Content-Type"},
		{name: "sender signature kept", msg: sender + strings.ReplaceAll(plainMsg, "\n", "\r\n"), keep: true, wantSigs: 1, wantH: "From:From:To:Subject:Date:Message-ID:MIME-Version:Content-Type"},
		{name: "lone CR is data", msg: "From: a@sender.example\n\nline\rwith CR\n", wantH: "From:From"},
		{name: "odd header shapes", msg: "FROM:a@sender.example  \nSubject:\nTo: b@example.net,\n   \n\tc@example.net \t\nContent-Type:text/plain;\tcharset=utf-8\nReply-To: \"Zoë\" <z@sender.example>\n\n \t\nx \t \n\t\n",
			wantH: "From:From:Reply-To:To:Subject:Content-Type"},
		{name: "dot lines and long line", msg: "From: a@sender.example\n\n.\n..x\n" + strings.Repeat("y", 990) + "\n", wantH: "From:From"},
	}
	keysets := map[string][]Key{"rsa": {rk}, "ed25519": {ek}, "both": {rk, ek}}
	for _, c := range cases {
		for ksName, keys := range keysets {
			t.Run(c.name+"/"+ksName, func(t *testing.T) {
				var want []byte
				for _, chunk := range []int{0, 1, 7, 4096} {
					for _, buf := range []int{0, -1} {
						var out bytes.Buffer
						calls := 0
						render := bytesRender([]byte(c.msg), chunk)
						err := Sign(&out, func(w io.Writer) error { calls++; return render(w) }, keys, Options{KeepExisting: c.keep, BufferBytes: buf})
						if err != nil {
							t.Fatalf("chunk %d buffer %d: %v", chunk, buf, err)
						}
						if wantCalls := map[int]int{0: 1, -1: 2}[buf]; calls != wantCalls {
							t.Errorf("render called %d times, want %d", calls, wantCalls)
						}
						got := out.Bytes()
						sigs, rest := splitSignatures(t, got, len(keys))
						for i, s := range sigs {
							ps := ParseSignature(s)
							if ps.Err != nil || ps.Domain != keys[i].Domain || ps.Selector != keys[i].Selector {
								t.Fatalf("signature %d %q: %+v", i, s, ps)
							}
							if h := strings.Join(ps.Headers, ":"); h != c.wantH {
								t.Errorf("h=%s, want %s", h, c.wantH)
							}
						}
						if n := bytes.Count(bytes.ToLower(rest), []byte("\ndkim-signature:")) + boolInt(bytes.HasPrefix(bytes.ToLower(rest), []byte("dkim-signature:"))); n != c.wantSigs {
							t.Errorf("%d sender signatures left, want %d", n, c.wantSigs)
						}
						if bytes.Contains(bytes.ReplaceAll(rest, []byte("\r\n"), nil), []byte("\n")) {
							t.Errorf("bare LF in the copy: %q", rest)
						}
						if !bytes.HasSuffix(rest, []byte("\r\n")) || !bytes.Contains(rest, []byte("\r\n\r\n")) {
							t.Errorf("copy does not end in CRLF or has no empty line: %q", rest)
						}
						if want == nil {
							want = rest
							if ok, why := dkimtest.AllOK(py.Verify(t, got, len(keys))); !ok {
								t.Fatalf("dkimpy: %s\n%s", why, got)
							}
						} else if !bytes.Equal(rest, want) {
							t.Errorf("chunk %d buffer %d: copy differs:\n%q\nwant\n%q", chunk, buf, rest, want)
						}
					}
				}
			})
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// splitSignatures cuts the n signature fields off the top of msg.
func splitSignatures(t testing.TB, msg []byte, n int) ([]string, []byte) {
	t.Helper()
	sigs, rest, err := cutSignatures(msg, n)
	if err != nil {
		t.Fatal(err)
	}
	return sigs, rest
}

func cutSignatures(msg []byte, n int) ([]string, []byte, error) {
	var sigs []string
	for range n {
		if !bytes.HasPrefix(msg, []byte("DKIM-Signature:")) {
			return nil, nil, fmt.Errorf("copy does not start with a DKIM-Signature: %q", msg[:min(len(msg), 80)])
		}
		end := 0
		for {
			i := bytes.Index(msg[end:], []byte("\r\n"))
			if i < 0 {
				return nil, nil, errors.New("unterminated DKIM-Signature")
			}
			end += i + 2
			if end >= len(msg) || (msg[end] != ' ' && msg[end] != '\t') {
				break
			}
		}
		_, v, _ := strings.Cut(string(msg[:end]), ":")
		sigs = append(sigs, v)
		msg = msg[end:]
	}
	return sigs, msg, nil
}

// TestSignTampered checks that the signatures can fail: dkimpy refuses
// a copy with a changed body byte, a changed signed header, or a second
// From (oversigning), and still accepts one with an unsigned field added.
func TestSignTampered(t *testing.T) {
	d := startDNS(t)
	py := dkimtest.StartVerifier(t, d.addr)
	rk, ek := signingKeys(t, d)
	for _, k := range []Key{rk, ek} {
		out := signed(t, []byte(plainMsg), []Key{k}, Options{})
		if ok, why := dkimtest.AllOK(py.Verify(t, out, 1)); !ok {
			t.Fatalf("%s: untampered copy fails: %s", k.Selector, why)
		}
		sigs, rest := splitSignatures(t, out, 1)
		sig := "DKIM-Signature:" + sigs[0]
		cases := []struct {
			name string
			msg  string
			ok   bool
		}{
			{"body byte", strings.Replace(string(rest), "there", "therf", 1), false},
			{"subject", strings.Replace(string(rest), "Subject: Hello", "Subject: Hellp", 1), false},
			{"second From on top", "From: evil@attacker.example\r\n" + string(rest), false},
			{"second From below", strings.Replace(string(rest), "\r\n\r\n", "\r\nFrom: evil@attacker.example\r\n\r\n", 1), false},
			{"trailing empty lines", string(rest) + "\r\n\r\n", true},
			{"unsigned field added", "X-Added: yes\r\n" + string(rest), true},
		}
		for _, c := range cases {
			r := py.Verify(t, []byte(sig+c.msg), 1)
			if r[0].OK != c.ok {
				t.Errorf("%s %s: verified %v, want %v (%s)", k.Selector, c.name, r[0].OK, c.ok, r[0].Reason)
			}
		}
	}
}

// TestSignErrors covers the refusals: each before anything is written.
func TestSignErrors(t *testing.T) {
	rk, _ := testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	good := []Key{{Domain: "sender.example", Selector: "s1", Signer: rk}}
	boom := errors.New("spool gone")
	cases := []struct {
		name   string
		keys   []Key
		render func(io.Writer) error
		want   error  // errors.Is target, or nil for any error
		text   string // in the error
	}{
		{"no keys", nil, bytesRender([]byte(plainMsg), 0), nil, "no signing key"},
		{"bad domain", []Key{{Domain: "not a domain", Selector: "s1", Signer: rk}}, bytesRender([]byte(plainMsg), 0), nil, "not a domain"},
		{"bad selector", []Key{{Domain: "sender.example", Selector: "a_b", Signer: rk}}, bytesRender([]byte(plainMsg), 0), nil, "selector"},
		{"no private key", []Key{{Domain: "sender.example", Selector: "s1"}}, bytesRender([]byte(plainMsg), 0), nil, "no private key"},
		{"short RSA key", []Key{{Domain: "sender.example", Selector: "s1", Signer: small}}, bytesRender([]byte(plainMsg), 0), nil, "too short"},
		{"no From", good, bytesRender([]byte("To: a@example.net\n\nhi\n"), 0), ErrUnsignable, "no From"},
		{"mbox line", good, bytesRender([]byte("From a@b Mon Jul  6 10:00:00 2026\nFrom: a@sender.example\n\nhi\n"), 0), ErrUnsignable, "mbox"},
		{"space before colon", good, bytesRender([]byte("From : a@sender.example\n\nhi\n"), 0), ErrUnsignable, "not allowed"},
		{"continuation first", good, bytesRender([]byte(" x\nFrom: a@sender.example\n\nhi\n"), 0), ErrUnsignable, "continuation"},
		{"lone CR in header", good, bytesRender([]byte("From: a@sender.example\nSubject: a\rb\n\nhi\n"), 0), ErrUnsignable, "CR without LF"},
		{"empty", good, bytesRender(nil, 0), ErrUnsignable, "empty"},
		{"empty header", good, bytesRender([]byte("\nFrom: a@sender.example\n"), 0), ErrUnsignable, "empty header"},
		{"huge header", good, bytesRender([]byte("From: a@sender.example\nX: "+strings.Repeat("x", MaxHeaderBytes)+"\n\nhi\n"), 4096), ErrUnsignable, "longer than"},
		{"render fails", good, func(w io.Writer) error { io.WriteString(w, plainMsg); return boom }, boom, "spool gone"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Sign(&out, c.render, c.keys, Options{})
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("error %v, want %v containing %q", err, c.want, c.text)
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes written before the error", out.Len())
			}
		})
	}
}

// TestSignNotDeterministic: a render that changes between its two calls
// is caught, whether it changes the header or the body.
func TestSignNotDeterministic(t *testing.T) {
	rk, _ := testKeys(t)
	keys := []Key{{Domain: "sender.example", Selector: "s1", Signer: rk}}
	for _, change := range []string{"Subject: Hello", "bye"} {
		calls := 0
		render := func(w io.Writer) error {
			calls++
			m := plainMsg
			if calls == 2 {
				m = strings.Replace(m, change, change+"!", 1)
			}
			_, err := io.WriteString(w, m)
			return err
		}
		err := Sign(io.Discard, render, keys, Options{BufferBytes: -1})
		if !errors.Is(err, ErrNotDeterministic) {
			t.Errorf("%q changed: error %v, want ErrNotDeterministic", change, err)
		}
	}
}

// TestSignBufferLimit: a copy larger than BufferBytes is rendered twice,
// a smaller one once.
func TestSignBufferLimit(t *testing.T) {
	rk, _ := testKeys(t)
	keys := []Key{{Domain: "sender.example", Selector: "s1", Signer: rk}}
	msg := []byte("From: a@sender.example\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 1000))
	for _, c := range []struct{ limit, calls int }{{len(msg), 1}, {len(msg) - 1, 2}, {-1, 2}, {0, 1}} {
		calls := 0
		var out bytes.Buffer
		err := Sign(&out, func(w io.Writer) error { calls++; _, err := w.Write(msg); return err }, keys, Options{BufferBytes: c.limit})
		if err != nil || calls != c.calls || !bytes.HasSuffix(out.Bytes(), msg) {
			t.Errorf("limit %d: %v, %d calls, want %d", c.limit, err, calls, c.calls)
		}
	}
}

// TestSignWriteError: an error from dst reaches the caller as render
// returned it.
func TestSignWriteError(t *testing.T) {
	rk, _ := testKeys(t)
	keys := []Key{{Domain: "sender.example", Selector: "s1", Signer: rk}}
	boom := errors.New("upstream gone")
	msg := []byte("From: a@sender.example\r\n\r\n" + strings.Repeat("x\r\n", 100000))
	for _, limit := range []int{0, -1} {
		err := Sign(failAfter{n: 1000, err: boom}, bytesRender(msg, 4096), keys, Options{BufferBytes: limit})
		if !errors.Is(err, boom) {
			t.Errorf("limit %d: %v, want %v", limit, err, boom)
		}
	}
}

type failAfter struct {
	n   int
	err error
}

func (f failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, f.err
	}
	return len(p), nil
}

// TestSignConcurrent signs different copies from several goroutines at
// once (the relay delivers in parallel): every copy must be its own, and
// verify (go-msgauth's verifier here, for speed; dkimpy checks the same
// signer everywhere else).
func TestSignConcurrent(t *testing.T) {
	rk, ek := testKeys(t)
	keys := []Key{{Domain: "sender.example", Selector: "rsa1", Signer: rk}, {Domain: "sender.example", Selector: "ed1", Signer: ek}}
	recs := map[string]string{}
	for _, k := range keys {
		r, err := Record(k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		recs[k.Selector+"._domainkey.sender.example"] = r
	}
	lookup := &msgauth.VerifyOptions{LookupTXT: func(name string) ([]string, error) { return []string{recs[name]}, nil }}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				body := strings.Repeat(fmt.Sprintf("goroutine %d copy %d\n", g, i), 1+i*5000) // some past BufferBytes
				msg := []byte("From: a@sender.example\nSubject: " + strconv.Itoa(g*100+i) + "\n\n" + body)
				var out bytes.Buffer
				if err := Sign(&out, bytesRender(msg, 1000), keys, Options{}); err != nil {
					errs <- err
					return
				}
				_, rest, err := cutSignatures(out.Bytes(), 2)
				if err != nil || !bytes.Equal(rest, shapeModel(msg)) {
					errs <- fmt.Errorf("goroutine %d copy %d: wrong copy", g, i)
					return
				}
				vs, err := msgauth.VerifyWithOptions(bytes.NewReader(out.Bytes()), lookup)
				if err != nil || len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
					errs <- fmt.Errorf("goroutine %d copy %d: does not verify: %v %+v", g, i, err, vs)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
