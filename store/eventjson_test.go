package store

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// appendStoredEvent writes what encoding/json writes, for any strings.
func FuzzStoredEventJSON(f *testing.F) {
	f.Add(uint64(1), int64(2), "rcpt@example.org", "tag", "url", "https://x/?a=1&b=<2>", "k", "\u2028\u2029\x00\x1f\x7f\"\\\b\f\n\r\t")
	f.Add(uint64(0), int64(-1), "", "", "", "", "", "")
	f.Add(uint64(1<<64-1), int64(-1<<63), "\xff\xfe", "\xc3", "é", "\xed\xa0\x80", "日本", "a\u00e9\U0001F600")
	f.Fuzz(func(t *testing.T, id uint64, tm int64, rcpt, tag, fk, fv, key, extra string) {
		e := storedEvent{ID: id, Time: tm, Recipient: rcpt, Key: key}
		if tag != "" {
			e.Tags = []string{tag, extra}
		}
		if fk != "" || fv != "" {
			e.Fields = map[string]string{fk: fv, "z" + extra: extra, "ip": rcpt}
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendStoredEvent(nil, &e); !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

func TestStoredEventJSONEmpty(t *testing.T) {
	for _, e := range []storedEvent{{}, {Tags: []string{}, Fields: map[string]string{}}} {
		want, _ := json.Marshal(e)
		if got := appendStoredEvent(nil, &e); !bytes.Equal(got, want) {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

// Every byte alone, and every rune, quote as encoding/json quotes them.
func TestJSONStringExhaustive(t *testing.T) {
	check := func(s string) {
		want, _ := json.Marshal(s)
		if got := AppendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		check(string([]byte{byte(c)}))
		check("a" + string([]byte{byte(c)}) + "b")
	}
	for r := rune(0); r <= 0x10FFFF; r++ {
		check(string(r))
	}
}

// AppendJSONString's output reads back as s (mended) and equals
// encoding/json's.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quo\"te\\", "<script>&", "\x00\x1f\x7f", "\xff\xfe", "Grüße \u2028\u2029 😀", "a\r\nb\tc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("%q round-trips to %q", s, got)
		}
		if std, _ := json.Marshal(s); !bytes.Equal(std, b) {
			t.Fatalf("%q: %s, encoding/json: %s", s, b, std)
		}
	})
}
