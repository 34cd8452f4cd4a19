package rewrite

import (
	"errors"
	"strings"
	"testing"
)

func TestVERPRoundTrip(t *testing.T) {
	c := testCodec(t)
	for _, id := range []uint64{0, 1, 42, 1<<63 + 7, 1<<64 - 1} {
		s := c.EncodeVERP(id)
		if len(s) != VERPTokenLen {
			t.Fatalf("token %q: %d characters, want %d", s, len(s), VERPTokenLen)
		}
		if s != strings.ToLower(s) || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("token %q: want lower-case base32 only", s)
		}
		for _, form := range []string{s, strings.ToUpper(s), strings.ToUpper(s[:10]) + s[10:]} {
			got, err := c.DecodeVERP(form)
			if err != nil || got != id {
				t.Fatalf("DecodeVERP(%q) = %d, %v; want %d", form, got, err, id)
			}
		}
	}
}

// Every change of one character, every truncation and extension, and
// tokens of other keys are refused.
func TestVERPAltered(t *testing.T) {
	c := testCodec(t)
	s := c.EncodeVERP(123456789)
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	for i := range s {
		for _, r := range alphabet {
			if byte(r) == s[i] {
				continue
			}
			b := []byte(s)
			b[i] = byte(r)
			if _, err := c.DecodeVERP(string(b)); !errors.Is(err, ErrBadToken) {
				t.Fatalf("char %d changed to %c: err = %v, want ErrBadToken", i, r, err)
			}
		}
	}
	for n := 0; n < len(s); n++ {
		if _, err := c.DecodeVERP(s[:n]); !errors.Is(err, ErrBadToken) {
			t.Fatalf("truncated to %d: err = %v", n, err)
		}
	}
	for _, bad := range []string{s + "a", "", strings.Repeat("a", 32), strings.Repeat("1", 32), s[:31] + "!"} {
		if _, err := c.DecodeVERP(bad); !errors.Is(err, ErrBadToken) {
			t.Fatalf("%q: err = %v, want ErrBadToken", bad, err)
		}
	}
	other, err := NewCodec(Key{ID: 7, Secret: []byte(strings.Repeat("x", 32))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.DecodeVERP(s); !errors.Is(err, ErrBadToken) {
		t.Fatalf("another secret under the same key id: err = %v", err)
	}
	unknown, err := NewCodec(Key{ID: 9, Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unknown.DecodeVERP(s); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key id: err = %v, want ErrUnknownKey", err)
	}
}

// A token made with an older key still verifies after rotation; a new
// one is signed with the new key.
func TestVERPKeyRotation(t *testing.T) {
	old := Key{ID: 1, Secret: []byte(strings.Repeat("o", 32))}
	c1, _ := NewCodec(old)
	c2, err := NewCodec(Key{ID: 2, Secret: []byte(strings.Repeat("n", 32))}, old)
	if err != nil {
		t.Fatal(err)
	}
	s := c1.EncodeVERP(77)
	if id, err := c2.DecodeVERP(s); err != nil || id != 77 {
		t.Fatalf("old token after rotation: %d, %v", id, err)
	}
	if _, err := c1.DecodeVERP(c2.EncodeVERP(77)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("new token under the old codec: err = %v, want ErrUnknownKey", err)
	}
}

// A VERP token and a link token are never mistaken for each other, even
// for the same copy: the MACs are over different labels.
func TestVERPNotALinkToken(t *testing.T) {
	c := testCodec(t)
	if _, err := c.Decode(c.EncodeVERP(5)); err == nil {
		t.Fatal("a VERP token decoded as a link token")
	}
	link := c.Encode(Token{Kind: KindPixel, MessageID: 5})
	if _, err := c.DecodeVERP(strings.ToLower(link)); err == nil {
		t.Fatal("a link token decoded as a VERP token")
	}
}

// FuzzVERPDecode checks that DecodeVERP never panics, and that whatever it
// accepts re-encodes to the same token (in lower case).
func FuzzVERPDecode(f *testing.F) {
	c := testCodec(f)
	f.Add(c.EncodeVERP(1))
	f.Add(strings.ToUpper(c.EncodeVERP(1 << 40)))
	f.Add(strings.Repeat("a", 32))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := c.DecodeVERP(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error %v does not wrap ErrBadToken", err)
			}
			return
		}
		if got := c.EncodeVERP(id); got != strings.ToLower(s) {
			t.Fatalf("accepted %q, which re-encodes as %q", s, got)
		}
	})
}
