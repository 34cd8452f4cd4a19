package dkim

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
)

// corpusSeeds returns a sample of the shared MIME corpus (when present)
// and the test messages, as fuzz seeds.
func corpusSeeds(f *testing.F) [][]byte {
	seeds := [][]byte{[]byte(plainMsg), []byte(strings.ReplaceAll(plainMsg, "\n", "\r\n")), []byte("From: a@b.example\n"), []byte("From: a@b.example\r\n\r\nx\r")}
	corpus := filepath.Join(moduleRoot(f), "..", "shared", "corpora", "mime")
	for _, g := range []string{"spamassassin/t/data/nice/dkim/*", "rspamd/test/functional/messages/dkim*.eml", "mnako-letters/tests/test_english_*7bit.txt", "cpython-test_email/msg_0*.txt"} {
		more, _ := filepath.Glob(filepath.Join(corpus, g))
		for _, p := range more[:min(len(more), 20)] {
			if b, err := os.ReadFile(p); err == nil && len(b) < 32<<10 {
				seeds = append(seeds, b)
			}
		}
	}
	return seeds
}

// FuzzSign signs arbitrary input (Ed25519, so the fuzzer stays fast) and
// checks: an unsignable input writes nothing; otherwise the copy after
// the signature is the input with its line endings made CRLF and the
// final line ending or empty line added (a reference model), the copy
// does not depend on the buffering, and go-msgauth's verifier accepts it.
func FuzzSign(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s)
	}
	_, ek := testKeys(f)
	keys := []Key{{Domain: "sender.example", Selector: "ed1", Signer: ek}}
	rec, err := Record(ek)
	if err != nil {
		f.Fatal(err)
	}
	lookup := &msgauth.VerifyOptions{LookupTXT: func(string) ([]string, error) { return []string{rec}, nil }}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		err := Sign(&out, bytesRender(in, 0), keys, Options{KeepExisting: true})
		if errors.Is(err, ErrUnsignable) {
			if out.Len() != 0 {
				t.Fatalf("%d bytes written for an unsignable input", out.Len())
			}
			return
		}
		if err != nil {
			t.Fatalf("error on content: %v", err)
		}
		_, rest := splitSignatures(t, out.Bytes(), 1)
		if want := shapeModel(in); !bytes.Equal(rest, want) {
			t.Fatalf("copy\n%q\nwant\n%q", rest, want)
		}
		var two bytes.Buffer
		if err := Sign(&two, bytesRender(in, 3), keys, Options{KeepExisting: true, BufferBytes: -1}); err != nil {
			t.Fatalf("rendered twice: %v", err)
		}
		if _, rest2 := splitSignatures(t, two.Bytes(), 1); !bytes.Equal(rest2, rest) {
			t.Fatal("the copy depends on the buffering")
		}
		vs, err := msgauth.VerifyWithOptions(bytes.NewReader(out.Bytes()), lookup)
		if err != nil || len(vs) == 0 || vs[0].Err != nil || vs[0].Domain != "sender.example" {
			var verr error
			if len(vs) > 0 {
				verr = vs[0].Err
			}
			t.Fatalf("go-msgauth does not verify the copy: %v %v\n%q", err, verr, out.Bytes())
		}
	})
}

// shapeModel is what Sign's copy must be for input in: every LF with its
// CR, a final line ending, and an empty line ending a header that had
// none.
func shapeModel(in []byte) []byte {
	var b []byte
	for i, c := range in {
		if c == '\n' && (i == 0 || in[i-1] != '\r') {
			b = append(b, '\r')
		}
		b = append(b, c)
	}
	headerOnly := !bytes.HasPrefix(b, []byte("\r\n")) && !bytes.Contains(b, []byte("\r\n\r\n"))
	switch {
	case bytes.HasSuffix(b, []byte("\n")):
	case bytes.HasSuffix(b, []byte("\r")):
		b = append(b, '\n')
	default:
		b = append(b, "\r\n"...)
	}
	if headerOnly {
		b = append(b, "\r\n"...)
	}
	return b
}

// FuzzParseTags checks the tag-list parser: no panic; a list it accepts
// has valid, distinct names and values that need no trimming, and
// formatting it back gives a list that parses to the same tags.
func FuzzParseTags(f *testing.F) {
	for _, s := range []string{"v=1; a=rsa-sha256; d=x.example; s=s1; h=From:To; bh=AAAA; b=BB\r\n CC", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "a=;b=", ";", "p=AB\n CD;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := parseTags(s)
		if err != nil {
			return
		}
		var b strings.Builder
		for i, tg := range tags {
			if !validTagName(tg.name) || tg.value != trimFWS(tg.value) || strings.Contains(tg.value, ";") {
				t.Fatalf("tag %q=%q", tg.name, tg.value)
			}
			for _, u := range tags[:i] {
				if u.name == tg.name {
					t.Fatalf("duplicate %q accepted", tg.name)
				}
			}
			b.WriteString(tg.name + "=" + tg.value + ";")
		}
		back, err := parseTags(b.String())
		if err != nil || len(back) != len(tags) {
			t.Fatalf("reparse of %q: %v, %v", b.String(), back, err)
		}
		for i := range back {
			if back[i] != tags[i] {
				t.Fatalf("reparse: %v, want %v", back, tags)
			}
		}
	})
}

// FuzzParseRecord checks the key record parser: no panic; an accepted
// record has a key of its kind, and Record of that key parses back to
// the same key.
func FuzzParseRecord(f *testing.F) {
	rsaK, edK := testKeys(f)
	for _, k := range []any{rsaK, edK} {
		r, err := Record(k)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(r)
		f.Add(r + "; t=y; h=sha256")
	}
	f.Add("v=DKIM1; p=")
	f.Add("k=ed25519; p=AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		kr, err := ParseRecord(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "dkim: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		kind, err := KindOf(kr.Key)
		if err != nil || kind != kr.Kind {
			t.Fatalf("record of kind %s holds %T: %v", kr.Kind, kr.Key, err)
		}
		r, err := Record(kr.Key)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseRecord(r)
		if err != nil || !keyEqual(back.Key, kr.Key) {
			t.Fatalf("Record(key) = %q does not parse back: %v", r, err)
		}
	})
}

// FuzzInspect checks Inspect on arbitrary headers: no panic, and every
// signature it reads as well-formed has a domain, a selector and an
// algorithm.
func FuzzInspect(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		info, err := Inspect(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrUnsignable) {
				t.Fatalf("error on content: %v", err)
			}
			return
		}
		for _, s := range info.Signatures {
			if s.Err == nil && (s.Domain == "" || s.Selector == "" || s.Algorithm == "") {
				t.Fatalf("well-formed signature without d=, s= or a=: %+v", s)
			}
		}
		if (len(info.FromDomains) == 0) == (info.FromErr == nil) {
			t.Fatalf("From domains %v with error %v", info.FromDomains, info.FromErr)
		}
	})
}

// FuzzDkimpy signs arbitrary input and has dkimpy, the independent
// verifier, check every copy Sign agrees to sign: the two must agree on
// what the signature covers, whatever the header's shape.
func FuzzDkimpy(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s)
	}
	d := startDNS(f)
	py := dkimtest.StartVerifier(f, d.addr)
	_, ek := signingKeys(f, d)
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		if err := Sign(&out, bytesRender(in, 0), []Key{ek}, Options{}); err != nil {
			if !errors.Is(err, ErrUnsignable) {
				t.Fatalf("error on content: %v", err)
			}
			return
		}
		if ok, why := dkimtest.AllOK(py.Verify(t, out.Bytes(), 1)); !ok {
			t.Fatalf("dkimpy: %s\n%q", why, out.Bytes())
		}
	})
}
