package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestHitRecordRoundTrip(t *testing.T) {
	tests := []Hit{
		{},
		{Time: time.Date(2026, 11, 23, 4, 0, 0, 123456789, time.UTC), Kind: "click", MessageID: 1<<63 + 5, Position: 1<<32 - 1,
			URL: "https://shop.example.com/p?q=1", IP: "2001:db8::1", UserAgent: "Mozilla/5.0 (X11)", Referer: "https://mail.example/",
			Protocol: "HTTP/1.1+tls", Head: true, Machine: true},
		{Time: time.Unix(0, 0).UTC(), Kind: "pixel", UserAgent: strings.Repeat("ü", 300)},
		{Time: time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC), Kind: "image", Head: true},
	}
	for i, h := range tests {
		rec := appendHitRecord(nil, &h)
		var got Hit
		if err := decodeHitRecord(rec, &got); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if h.Time.IsZero() {
			h.Time = time.Unix(0, h.Time.UnixNano()).UTC() // the zero time does not fit in ns
		}
		if !got.Time.Equal(h.Time) || got.Time.Location() != time.UTC {
			t.Errorf("%d: time %v, want %v", i, got.Time, h.Time)
		}
		got.Time, h.Time = time.Time{}, time.Time{}
		if got != h {
			t.Errorf("%d: got %+v\nwant %+v", i, got, h)
		}
		// Every strict prefix and every extension is refused.
		for n := range len(rec) {
			if decodeHitRecord(rec[:n], &got) == nil {
				t.Errorf("%d: prefix of %d bytes accepted", i, n)
			}
		}
		if decodeHitRecord(append(rec, 0), &got) == nil {
			t.Errorf("%d: trailing byte accepted", i)
		}
	}
}

// A journal written by an earlier version holds JSON records; they are
// still read.
func TestHitRecordReadsJSON(t *testing.T) {
	h := Hit{ID: "x", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Kind: "click", MessageID: 7, Position: 2, URL: "http://a/", Machine: true}
	v, err := json.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var got Hit
	if err := decodeHitRecord(v, &got); err != nil || got != h {
		t.Fatalf("got %+v, %v", got, err)
	}
}

// FuzzHitRecord: any bytes decode or fail cleanly, and what decodes
// encodes back to the same record (one encoding per hit).
func FuzzHitRecord(f *testing.F) {
	f.Add(appendHitRecord(nil, &Hit{Kind: "click", URL: "https://a/", Time: time.Unix(1, 2)}))
	f.Add([]byte(`{"id":"a","kind":"pixel"}`))
	f.Add([]byte{1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Hit
		if decodeHitRecord(b, &h) != nil || (len(b) > 0 && b[0] == '{') {
			return
		}
		if again := appendHitRecord(nil, &h); string(again) != string(b) {
			t.Fatalf("re-encoded\n%q\nfrom\n%q", again, b)
		}
	})
}
