package dkim

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestKeysRoundTrip(t *testing.T) {
	rsaK, edK := testKeys(t)
	for _, c := range []struct {
		kind Kind
		key  any
	}{{RSA, rsaK}, {Ed25519, edK}} {
		t.Run(string(c.kind), func(t *testing.T) {
			k, err := GenerateKey(c.kind)
			if err != nil {
				t.Fatal(err)
			}
			if kind, err := KindOf(k); err != nil || kind != c.kind {
				t.Fatalf("KindOf = %v, %v", kind, err)
			}
			if c.kind == RSA && k.Public().(*rsa.PublicKey).N.BitLen() != RSABits {
				t.Errorf("RSA key of %d bits", k.Public().(*rsa.PublicKey).N.BitLen())
			}
			p, err := MarshalPrivateKey(k)
			if err != nil || !strings.HasPrefix(string(p), "-----BEGIN PRIVATE KEY-----\n") {
				t.Fatalf("PEM %q, %v", p, err)
			}
			back, err := ParsePrivateKey(p)
			if err != nil {
				t.Fatal(err)
			}
			type equaler interface{ Equal(crypto.PrivateKey) bool }
			if !back.(equaler).Equal(k) {
				t.Error("the parsed key differs")
			}
			rec, err := Record(k)
			if err != nil || !strings.HasPrefix(rec, "v=DKIM1; k="+string(c.kind)+"; p=") {
				t.Fatalf("record %q, %v", rec, err)
			}
			kr, err := ParseRecord(rec)
			if err != nil || kr.Kind != c.kind || !keyEqual(kr.Key, k.Public()) {
				t.Fatalf("ParseRecord(Record(k)) = %+v, %v", kr, err)
			}
			line, err := ZoneLine("Sender.Example.", "tr202607"+string(c.kind[:1]), k.Public())
			if err != nil {
				t.Fatal(err)
			}
			prefix := "tr202607" + string(c.kind[:1]) + "._domainkey.sender.example. IN TXT "
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("zone line %q", line)
			}
			// The quoted strings, each at most 255 bytes, join to the record.
			var joined strings.Builder
			for i, s := range strings.Split(strings.TrimPrefix(line, prefix), `" "`) {
				s = strings.Trim(s, `"`)
				if len(s) > 255 || (len(s) < 255 && i < strings.Count(line, `" "`)) {
					t.Errorf("string %d is %d bytes", i, len(s))
				}
				joined.WriteString(s)
			}
			if joined.String() != rec {
				t.Errorf("zone line strings join to %q, want %q", joined.String(), rec)
			}
			if c.kind == RSA && strings.Count(line, `"`) < 4 {
				t.Errorf("an RSA-2048 record is longer than 255 bytes, but the line has one string: %s", line)
			}
		})
	}
}

func TestParsePrivateKeyForms(t *testing.T) {
	rsaK, _ := testKeys(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaK.(*rsa.PrivateKey))})
	if k, err := ParsePrivateKey(pkcs1); err != nil || !k.(*rsa.PrivateKey).Equal(rsaK) {
		t.Errorf("PKCS #1: %v", err)
	}
	for name, in := range map[string]string{
		"no PEM":       "hello",
		"public key":   string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})),
		"garbage DER":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})),
		"garbage RSA1": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1, 2, 3}})),
	} {
		if _, err := ParsePrivateKey([]byte(in)); err == nil || !strings.HasPrefix(err.Error(), "dkim: ") {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

func TestNewSelector(t *testing.T) {
	now := time.Date(2026, 7, 31, 23, 0, 0, 0, time.FixedZone("x", -3*3600)) // already August in UTC
	if s := NewSelector(RSA, now, nil); s != "tr202608r" {
		t.Errorf("got %s", s)
	}
	taken := map[string]bool{"tr202608e": true, "tr202608e-2": true}
	s := NewSelector(Ed25519, now, func(s string) bool { return taken[s] })
	if s != "tr202608e-3" {
		t.Errorf("got %s", s)
	}
	if err := ValidSelector(s); err != nil {
		t.Error(err)
	}
}

func TestNormalizeDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":       "example.com",
		"example.com.":      "example.com",
		" mail.example.org": "mail.example.org",
		"bücher.example":    "xn--bcher-kva.example",
	} {
		if got, err := NormalizeDomain(in); err != nil || got != want {
			t.Errorf("NormalizeDomain(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "localhost", "a..b", "-a.example", "a_b.example", "a b.example", strings.Repeat("a", 64) + ".example"} {
		if got, err := NormalizeDomain(in); err == nil {
			t.Errorf("NormalizeDomain(%q) = %q, want an error", in, got)
		}
	}
	for _, in := range []string{"", "a_b", "a b", "-a", "a."} {
		if err := ValidSelector(in); err == nil {
			t.Errorf("ValidSelector(%q): no error", in)
		}
	}
	if err := ValidSelector("s1.2026"); err != nil {
		t.Errorf("a selector may have dots (RFC 6376 §3.1): %v", err)
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"rsa": RSA, "RSA": RSA, " ed25519 ": Ed25519} {
		if k, err := ParseKind(in); err != nil || k != want {
			t.Errorf("ParseKind(%q) = %v, %v", in, k, err)
		}
	}
	if _, err := ParseKind("dsa"); err == nil {
		t.Error("dsa: no error")
	}
	if _, err := GenerateKey("dsa"); err == nil {
		t.Error("GenerateKey(dsa): no error")
	}
}
