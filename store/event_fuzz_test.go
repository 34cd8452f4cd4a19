package store

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"
)

// FuzzEventRoundTrip: an event that AppendEvents accepts reads back
// exactly, through the log and through every index.
func FuzzEventRoundTrip(f *testing.F) {
	f.Add("acct", "Rcpt@Example.net", "tag", "a@x", "{\"x\":1}", int64(1763800000000000000), uint64(42))
	f.Add("a\x00b", "", "", "", "", int64(1), uint64(0))
	f.Add("ü", "ü@ü", "t,u", "\r\n", "\xff", int64(0), uint64(1<<63))
	r := openTestRelay(f, "")
	f.Fuzz(func(t *testing.T, account, rcpt, tag, envelope, props string, nanos int64, id uint64) {
		e := Event{Log: LogAttempts, Account: account, ID: id, Time: time.Unix(0, nanos).UTC(), Recipient: rcpt,
			Fields: map[string]string{"envelope": envelope, "properties": props}}
		if tag != "" {
			e.Tags = []string{tag}
		}
		ctx := context.Background()
		if err := r.AppendEvents(ctx, []Event{e}); err != nil {
			return // refused as invalid
		}
		e = sanitize(e)
		found := false
		for got, err := range r.EventsByMessage(ctx, e.Account, id) {
			if err != nil {
				t.Fatal(err)
			}
			if got.Time.Equal(e.Time) && got.Recipient == e.Recipient && maps.Equal(got.Fields, e.Fields) && slices.Equal(got.Tags, e.Tags) {
				found = true
			}
		}
		if !found {
			t.Fatalf("event %+v not found by message id", e)
		}
		if e.Recipient != "" {
			n := 0
			// Stored, and looked up, as mended (invalid UTF-8 made U+FFFD).
			for got := range r.EventsByRecipient(ctx, e.Account, e.Recipient, time.Time{}, time.Time{}) {
				if got.ID == id {
					n++
				}
			}
			if n == 0 {
				t.Fatal("not found by recipient")
			}
		}
	})
}
