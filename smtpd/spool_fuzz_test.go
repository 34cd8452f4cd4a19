package smtpd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/store"
)

// FuzzSpoolSubmit: whatever a client sends, the spool either keeps exactly
// those bytes (after its Received field, with a Date and Message-ID added
// where missing) or refuses with one of the documented errors and leaves
// nothing behind.
func FuzzSpoolSubmit(f *testing.F) {
	f.Add([]byte(htmlMsg))
	f.Add([]byte("X-Smtpeter-TrackOpens: perhaps\r\n\r\nbody"))
	f.Add([]byte(" leading space\r\nSubject: x\r\n\r\n"))
	f.Add([]byte("no header at all"))
	f.Add(bytes.Repeat([]byte("H: v\r\n"), 1000))
	dir := f.TempDir()
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	sp, err := NewSpool(SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 4096, MaxHeaderBytes: 512, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sp.Close() })
	f.Fuzz(func(t *testing.T, msg []byte) {
		before, _ := readDir(filepath.Join(dir, "spool"))
		rc, err := sp.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, bytes.NewReader(msg))
		if err != nil {
			var ce *mime.ControlError
			if !errors.Is(err, ErrTooBig) && !errors.As(err, &ce) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, ErrTooBig) != (len(msg) > 4096) {
				t.Fatalf("ErrTooBig for %d bytes", len(msg))
			}
			after, _ := readDir(filepath.Join(dir, "spool"))
			if len(after) != len(before) {
				t.Fatalf("a refused message left files: %v", after)
			}
			return
		}
		m, err := st.Message(context.Background(), rc.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		fh, err := sp.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(fh)
		fh.Close()
		unspoolCheck(t, got, msg)
		sp.Remove(m)
	})
}
