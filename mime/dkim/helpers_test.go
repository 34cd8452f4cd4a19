package dkim

import (
	"bufio"
	"bytes"
	"crypto"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/rewrite"
)

// Test keys, made once per test binary (RSA-2048 takes a moment).
var (
	keysOnce      sync.Once
	rsaKey, edKey crypto.Signer
	keysErr       error
)

func testKeys(t testing.TB) (rsaK, edK crypto.Signer) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKey, keysErr = GenerateKey(RSA); keysErr == nil {
			edKey, keysErr = GenerateKey(Ed25519)
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return rsaKey, edKey
}

// signingKeys returns the RSA and the Ed25519 Key of sender.example,
// published in d.
func signingKeys(t testing.TB, d *testDNS) (rsaK, edK Key) {
	t.Helper()
	r, e := testKeys(t)
	rsaK = Key{Domain: "sender.example", Selector: "rsa1", Signer: r}
	edK = Key{Domain: "sender.example", Selector: "ed1", Signer: e}
	for _, k := range []Key{rsaK, edK} {
		publish(t, d, k)
	}
	return rsaK, edK
}

func publish(t testing.TB, d *testDNS, k Key) {
	t.Helper()
	rec, err := Record(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	name, err := RecordName(k.Domain, k.Selector)
	if err != nil {
		t.Fatal(err)
	}
	d.setTXT(name, rec)
}

// moduleRoot finds the directory holding go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// sharedDir returns ../shared/<sub> beside the module, skipping when absent.
func sharedDir(t testing.TB, sub string) string {
	t.Helper()
	dir := filepath.Join(moduleRoot(t), "..", "shared", sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s absent (%v): the shared corpora sit beside the checkout in CI", dir, err)
	}
	return dir
}

// tracker returns the relay's tracker for copy id, as smtpd.Queue.Tracker
// builds it, with clicks and opens on.
func tracker(t testing.TB, id uint64) *rewrite.Tracker {
	t.Helper()
	codec, err := rewrite.NewCodec(rewrite.Key{ID: 1, Secret: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return rewrite.New(rewrite.Config{
		Clicks: true, Opens: true, Codec: codec, Scheme: "https",
		Domain: "click.example.com", MessageID: id,
	})
}

// trackedRender renders the tracked copy of msg as smtpd.Queue.WriteCopy
// does (mime.Rewrite with the rewrite tracker, buffered output), with
// tracking on, text too, and DKIM-signed messages tracked anyway. Like
// WriteCopy it makes a new Tracker for each rendering: a Tracker numbers
// the links it rewrites, so reusing one would not give the same bytes.
func trackedRender(t testing.TB, msg []byte, id uint64) func(io.Writer) error {
	return func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 32<<10)
		_, err := mime.Rewrite(bw, bytes.NewReader(msg), mime.Options{TrackText: true, TrackSigned: true},
			func(mime.Controls) (mime.Tracker, error) { return tracker(t, id), nil })
		if err != nil {
			return err
		}
		return bw.Flush()
	}
}

// bytesRender renders msg as is, writing it in chunks of size bytes (all
// at once when size is 0).
func bytesRender(msg []byte, size int) func(io.Writer) error {
	return func(w io.Writer) error {
		if size <= 0 {
			_, err := w.Write(msg)
			return err
		}
		for p := msg; len(p) > 0; {
			n := min(size, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	}
}

// signed signs msg (rendered as is) and fails the test on error.
func signed(t testing.TB, msg []byte, keys []Key, opt Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Sign(&b, bytesRender(msg, 0), keys, opt); err != nil {
		t.Fatalf("sign: %v", err)
	}
	return b.Bytes()
}

// bodyOffset returns where the body of a CRLF message starts.
func bodyOffset(msg []byte) int {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return len(msg)
}

// flipOne changes one letter or digit of b (the middle one), reporting
// whether there was one.
func flipOne(b []byte) bool {
	var idx []int
	for i, c := range b {
		if isAlpha(c) || isDigit(c) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return false
	}
	b[idx[len(idx)/2]] ^= 1
	return true
}
