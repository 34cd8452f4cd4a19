package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTestRelay(t testing.TB, path string) *Relay {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "relay.db")
	}
	r, err := OpenRelay(path, RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestOpenRelayLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	r := openTestRelay(t, path)
	start := time.Now()
	_, err := OpenRelay(path, RelayOptions{LockTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("a second open of a locked database succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("lock timeout not honoured")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := r.AppendEvents(context.Background(), []Event{testEvent("a", LogAttempts, 1, time.Now())}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}
}

func TestGroupCommitIsolatesFailures(t *testing.T) {
	r := openTestRelay(t, "")
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.update(context.Background(), func(tx *bolt.Tx) error {
				if i%7 == 0 {
					return fmt.Errorf("fail %d", i)
				}
				if i%11 == 0 {
					panic("boom")
				}
				return tx.Bucket([]byte(bucketMessages)).Put(idKey(uint64(i)), []byte("x"))
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		bad := i%7 == 0 || i%11 == 0
		if bad != (err != nil) {
			t.Errorf("update %d: err %v", i, err)
		}
		_, gerr := r.Message(context.Background(), uint64(i))
		stored := gerr == nil || !errors.Is(gerr, ErrNotFound)
		if stored == bad {
			t.Errorf("update %d: stored=%v after err=%v", i, stored, err)
		}
	}
}

func TestMessageCopyLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	r := openTestRelay(t, path)
	ctx := context.Background()
	now := time.Now().UTC()
	m := &Message{ID: r.NextID(), SpoolPath: "m.eml", Size: 10, From: "a@x", Recipients: []string{"b@x", "c@x"}, Created: now, Remaining: 2}
	c1 := &Copy{ID: r.NextID(), MessageID: m.ID, Account: "acct", Recipient: "b@x", State: CopyQueued, Created: now}
	c2 := &Copy{ID: r.NextID(), MessageID: m.ID, Account: "acct", Recipient: "c@x", State: CopyQueued, Created: now}
	if err := r.AddMessage(ctx, m, []*Copy{c1, c2}, []Event{testEvent("acct", LogAttempts, c1.ID, now)}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddMessage(ctx, m, []*Copy{{ID: 9, MessageID: 12345, State: CopyQueued}}, nil); err == nil {
		t.Error("a copy of another message was accepted")
	}
	queued := func() int {
		n := 0
		if err := r.QueuedCopies(context.Background(), func(*Copy) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if queued() != 2 {
		t.Fatal("want 2 queued")
	}
	c1.Attempts, c1.NextAttempt = 1, now.Add(time.Minute)
	if last, err := r.UpdateCopy(ctx, c1, nil); err != nil || last {
		t.Fatalf("deferral: last=%v err=%v", last, err)
	}
	c1.State = CopyDelivered
	if last, err := r.UpdateCopy(ctx, c1, nil); err != nil || last {
		t.Fatalf("first final: last=%v err=%v", last, err)
	}
	// Recording it again (a retried commit) changes nothing.
	if last, err := r.UpdateCopy(ctx, c1, nil); err != nil || last {
		t.Fatalf("repeat: last=%v err=%v", last, err)
	}
	c2.State = CopyFailed
	if last, err := r.UpdateCopy(ctx, c2, nil); err != nil || !last {
		t.Fatalf("second final: last=%v err=%v", last, err)
	}
	if queued() != 0 {
		t.Fatal("final copies still queued")
	}
	got, err := r.Copy(context.Background(), c1.ID)
	if err != nil || got.State != CopyDelivered || got.Attempts != 1 {
		t.Fatalf("copy %+v %v", got, err)
	}
	mm, err := r.Message(context.Background(), m.ID)
	if err != nil || mm.Remaining != 0 {
		t.Fatalf("message %+v %v", mm, err)
	}
	n := 0
	r.SpoolFiles(context.Background(), func(string) { n++ })
	if n != 0 {
		t.Error("a finished message's spool file is still listed")
	}
	if _, err := r.Copy(context.Background(), 424242); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown copy: %v", err)
	}
}

func TestRelayReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	r, err := OpenRelay(path, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m := &Message{ID: r.NextID(), SpoolPath: "x.eml", Remaining: 1, Created: now}
	c := &Copy{ID: r.NextID(), MessageID: m.ID, State: CopyQueued, Recipient: "b@x", Created: now}
	if err := r.AddMessage(context.Background(), m, []*Copy{c}, nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2 := openTestRelay(t, path)
	var got []*Copy
	r2.QueuedCopies(context.Background(), func(c *Copy) error { got = append(got, c); return nil })
	if len(got) != 1 || got[0].ID != c.ID || got[0].Recipient != "b@x" {
		t.Fatalf("after reopen: %+v", got)
	}
	files := 0
	r2.SpoolFiles(context.Background(), func(n string) {
		if n == "x.eml" {
			files++
		}
	})
	if files != 1 {
		t.Fatal("spool file not listed after reopen")
	}
}

// BenchmarkGroupCommit compares one synced commit per writer (serial)
// with concurrent writers sharing commits.
func BenchmarkGroupCommit(b *testing.B) {
	for _, par := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", par), func(b *testing.B) {
			r, err := OpenRelay(filepath.Join(b.TempDir(), "relay.db"), RelayOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e := testEvent("acct", LogAttempts, r.NextID(), time.Now())
					if err := r.AppendEvents(context.Background(), []Event{e}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
