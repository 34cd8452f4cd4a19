package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
	"github.com/trackrelay/trackrelay/store"
)

// TestSignMemory50MB: a 50 MB message goes through the relay (SMTP
// submission, spool, delivery to an SMTP sink) signed with an RSA and an
// Ed25519 key at once, with the heap growing by less than 32 MB (SPEC
// §10): the copy is rendered twice instead of held. The sink streams it
// to a file, and dkimpy verifies both signatures afterwards.
func TestSignMemory50MB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 50 MB message")
	}
	rk, ek := testSigners(t)
	r := newSignRig(t, nil)
	out := filepath.Join(t.TempDir(), "copy.eml")
	var got atomic.Int64
	r.sink.onData = func(rd io.Reader) error {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		bw := bufio.NewWriterSize(f, 64<<10)
		n, err := io.Copy(bw, rd)
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			got.Store(n)
		}
		return err
	}
	r.addKey("acct", "x.test", "sr", rk[0], store.DKIMActive, true)
	r.addKey("acct", "x.test", "se", ek[0], store.DKIMActive, true)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	start := time.Now()
	c, err := smtp.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("a@x.test", []string{"b@x.test"}, bigMessage(50<<20)); err != nil {
		t.Fatal(err)
	}
	// Signing reads the copy twice through the rewrite and the body
	// hash: minutes under -race on a busy machine.
	for deadline := time.Now().Add(5 * time.Minute); got.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the 50 MB copy at the sink")
		}
	}
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use grew by %.1f MB for a %.0f MB copy signed with two keys (submitted and delivered in %v)",
		float64(growth)/(1<<20), float64(got.Load())/(1<<20), elapsed.Round(time.Millisecond))
	if got.Load() < 50<<20 {
		t.Fatalf("the sink got %d bytes", got.Load())
	}
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MB: the copy is buffered somewhere", growth>>20)
	}
	if n := r.outcome(DKIMSigned); n != 1 {
		t.Fatalf("signed counter %v, want 1", n)
	}
	// Now the copy may be held: dkimpy checks both signatures.
	msg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(msg, []byte("DKIM-Signature:")) {
		t.Fatalf("copy does not start with a signature: %.200s", msg)
	}
	r.py = dkimtest.StartVerifier(t, r.dns.Addr)
	if ok, why := dkimtest.AllOK(r.py.Verify(t, msg, 2)); !ok {
		t.Fatalf("dkimpy: %s", why)
	}
}
