package rewrite

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func testCodec(t testing.TB) *Codec {
	t.Helper()
	c, err := NewCodec(Key{ID: 7, Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTokenRoundTrip(t *testing.T) {
	c := testCodec(t)
	for _, tok := range []Token{
		{Kind: KindClick, MessageID: 1, Position: 0, HTTPS: true, Host: "shop.example.com"},
		{Kind: KindClick, MessageID: 1<<63 + 5, Position: 1<<32 - 1, Host: "example.com", Port: 8443},
		{Kind: KindImage, MessageID: 42, Position: 300, HTTPS: true, Host: "bücher.example"},
		{Kind: KindImage, MessageID: 42, Position: 3, Host: "::1", Port: 80},
		{Kind: KindPixel, MessageID: 99},
	} {
		s := c.Encode(tok)
		if strings.ContainsAny(s, "+/=") {
			t.Errorf("%q: not base64url without padding", s)
		}
		got, err := c.Decode(s)
		if err != nil {
			t.Fatalf("Decode(%q): %v", s, err)
		}
		if got != tok {
			t.Errorf("round trip: got %+v, want %+v", got, tok)
		}
	}
}

func TestTokenCompact(t *testing.T) {
	c := testCodec(t)
	host := "shop.example-abc.com" // 20 characters
	if len(host) != 20 {
		t.Fatal("host length")
	}
	s := c.Encode(Token{Kind: KindClick, MessageID: 1<<64 - 1, Position: 1000, HTTPS: true, Host: host, Port: 65535})
	if len(s) > 64 {
		t.Errorf("token for a 20-character host is %d characters, want <= 64", len(s))
	}
}

func TestTokenTampered(t *testing.T) {
	c := testCodec(t)
	s := c.Encode(Token{Kind: KindClick, MessageID: 12345, Position: 2, HTTPS: true, Host: "shop.example.com", Port: 8080})
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	// Flip every bit of every byte: each must be refused.
	for i := range raw {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), raw...)
			b[i] ^= 1 << bit
			if _, err := c.Decode(base64.RawURLEncoding.EncodeToString(b)); !errors.Is(err, ErrBadToken) {
				t.Fatalf("byte %d bit %d flipped: err = %v, want ErrBadToken", i, bit, err)
			}
		}
	}
	// Every truncation and every extension must be refused.
	for n := 0; n < len(s); n++ {
		if _, err := c.Decode(s[:n]); err == nil {
			t.Fatalf("truncated to %d accepted", n)
		}
	}
	for _, extra := range []string{"A", "AA", "AAA", "-", "_x"} {
		if _, err := c.Decode(s + extra); err == nil {
			t.Fatalf("extended with %q accepted", extra)
		}
	}
	for _, bad := range []string{"", "!!!!", strings.Repeat("A", MaxTokenLen+1), "AQcB" + strings.Repeat("A", 40)} {
		if _, err := c.Decode(bad); !errors.Is(err, ErrBadToken) {
			t.Fatalf("Decode(%q) = %v, want ErrBadToken", bad, err)
		}
	}
}

func TestTokenKeyRotation(t *testing.T) {
	oldKey := Key{ID: 1, Secret: []byte(strings.Repeat("o", 32))}
	newKey := Key{ID: 2, Secret: []byte(strings.Repeat("n", 32))}
	oldC, _ := NewCodec(oldKey)
	rotated, err := NewCodec(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	newOnly, _ := NewCodec(newKey)
	tok := Token{Kind: KindImage, MessageID: 5, Host: "cdn.example.com", HTTPS: true}

	oldTok := oldC.Encode(tok)
	if _, err := rotated.Decode(oldTok); err != nil {
		t.Errorf("rotated codec refuses a token of the old key: %v", err)
	}
	if _, err := newOnly.Decode(oldTok); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("codec without the old key: err = %v, want ErrUnknownKey", err)
	}
	newTok := rotated.Encode(tok)
	if _, err := newOnly.Decode(newTok); err != nil {
		t.Errorf("rotated codec does not sign with the new key: %v", err)
	}
	if _, err := oldC.Decode(newTok); err == nil {
		t.Error("old codec accepts a token of a key it does not know")
	}
	// Same id, other secret: a forgery.
	forger, _ := NewCodec(Key{ID: 2, Secret: []byte(strings.Repeat("f", 32))})
	if _, err := rotated.Decode(forger.Encode(tok)); !errors.Is(err, ErrBadToken) {
		t.Errorf("forged token: err = %v", err)
	}
}

func TestNewCodecRejects(t *testing.T) {
	if _, err := NewCodec(Key{ID: 1, Secret: []byte("short")}); err == nil {
		t.Error("short secret accepted")
	}
	k := Key{ID: 1, Secret: []byte(strings.Repeat("a", 32))}
	if _, err := NewCodec(k, k); err == nil {
		t.Error("duplicate key id accepted")
	}
}

func TestKeyFile(t *testing.T) {
	k1, err := GenerateKey(3)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := GenerateKey(4)
	file := "# keys\n" + FormatKey(k1) + "\n\n" + FormatKey(k2) + "\n"
	keys, err := ReadKeys(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != 3 || string(keys[0].Secret) != string(k1.Secret) || keys[1].ID != 4 {
		t.Fatalf("ReadKeys = %+v", keys)
	}
	for _, bad := range []string{"", "# only a comment\n", "300 abc\n", "1\n", "1 !!!\n", "1 c2hvcnQ\n"} {
		if _, err := ReadKeys(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadKeys(%q) accepted", bad)
		}
	}
	std := "5 " + base64.StdEncoding.EncodeToString(k1.Secret)
	if k, err := ParseKey(std); err != nil || string(k.Secret) != string(k1.Secret) {
		t.Errorf("standard base64 secret: %v", err)
	}
}

func FuzzTokenDecode(f *testing.F) {
	c := testCodec(f)
	f.Add(c.Encode(Token{Kind: KindClick, MessageID: 1, HTTPS: true, Host: "example.com"}))
	f.Add(c.Encode(Token{Kind: KindPixel, MessageID: 1 << 40}))
	f.Add(c.Encode(Token{Kind: KindImage, MessageID: 3, Position: 70000, Host: "a.b", Port: 81}))
	f.Add("")
	f.Add("AQcB")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := c.Decode(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error does not wrap ErrBadToken: %v", err)
			}
			return
		}
		// Anything that verifies must re-encode to the same string: the
		// encoding is canonical, so no two strings name one token.
		if again := c.Encode(tok); again != s {
			t.Fatalf("accepted %q, re-encodes as %q", s, again)
		}
	})
}

func FuzzTokenRoundTrip(f *testing.F) {
	c := testCodec(f)
	f.Add(uint8(1), uint64(1), uint32(0), true, "example.com", uint16(0))
	f.Add(uint8(3), uint64(1<<63), uint32(1<<31), false, "", uint16(443))
	f.Fuzz(func(t *testing.T, kind uint8, id uint64, pos uint32, https bool, host string, port uint16) {
		tok := Token{Kind: Kind(kind%3 + 1), MessageID: id, Position: pos, HTTPS: https, Host: host, Port: port}
		if len(host) > maxHostLen || !validHost([]byte(host)) || (tok.Kind != KindPixel && host == "") {
			return
		}
		got, err := c.Decode(c.Encode(tok))
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", tok, err)
		}
		if got != tok {
			t.Fatalf("round trip: got %+v, want %+v", got, tok)
		}
	})
}

func BenchmarkTokenEncode(b *testing.B) {
	c := testCodec(b)
	tok := Token{Kind: KindClick, MessageID: 1 << 50, Position: 12, HTTPS: true, Host: "shop.example.com"}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendEncode(buf[:0], tok)
	}
}

func BenchmarkTokenDecode(b *testing.B) {
	c := testCodec(b)
	s := c.Encode(Token{Kind: KindClick, MessageID: 1 << 50, Position: 12, HTTPS: true, Host: "shop.example.com"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decode(s); err != nil {
			b.Fatal(err)
		}
	}
}
