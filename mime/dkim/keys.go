package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Kind is a key type, named as the k= tag of a key record names it.
type Kind string

// The key types the relay generates and signs with.
const (
	RSA     Kind = "rsa"     // RSA-2048, rsa-sha256 (RFC 6376, RFC 8301)
	Ed25519 Kind = "ed25519" // ed25519-sha256 (RFC 8463)
)

// RSABits is the size of the RSA keys GenerateKey makes.
const RSABits = 2048

// minRSABits is the smallest RSA key RFC 8301 §3.2 lets verifiers accept.
const minRSABits = 1024

// ParseKind parses "rsa" or "ed25519" (any case).
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(s))); k {
	case RSA, Ed25519:
		return k, nil
	}
	return "", fmt.Errorf("dkim: unknown key type %q (want rsa or ed25519)", s)
}

// KindOf returns the kind of a public or private key.
func KindOf(key any) (Kind, error) {
	if s, ok := key.(crypto.Signer); ok {
		key = s.Public()
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return "", fmt.Errorf("dkim: RSA key of %d bits is too short (at least %d, RFC 8301)", k.N.BitLen(), minRSABits)
		}
		return RSA, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Errorf("dkim: Ed25519 public key of %d bytes", len(k))
		}
		return Ed25519, nil
	}
	return "", fmt.Errorf("dkim: unsupported key type %T (want RSA or Ed25519)", key)
}

// GenerateKey makes a new private key: RSA-2048 or Ed25519.
func GenerateKey(kind Kind) (crypto.Signer, error) {
	switch kind {
	case RSA:
		k, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate key: %w", err)
		}
		return k, nil
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("dkim: unknown key type %q (want rsa or ed25519)", kind)
}

// MarshalPrivateKey encodes a private key as a PKCS #8 "PRIVATE KEY" PEM
// block (RFC 5958, RFC 8410 for Ed25519), the form openssl and most DKIM
// signers read.
func MarshalPrivateKey(key crypto.Signer) ([]byte, error) {
	if _, err := KindOf(key); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes the first PEM block of b: a PKCS #8 "PRIVATE
// KEY" (RSA or Ed25519) or a PKCS #1 "RSA PRIVATE KEY", as opendkim-genkey
// writes. RSA keys shorter than 1024 bits are refused (RFC 8301).
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("dkim: no PEM block in the private key")
	}
	var key any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("dkim: PEM block %q is not a private key (want PRIVATE KEY or RSA PRIVATE KEY)", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: parse private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("dkim: unsupported private key type %T", key)
	}
	if _, err := KindOf(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Record returns the TXT value that publishes pub (RFC 6376 §3.6.1):
// "v=DKIM1; k=rsa; p=..." with the SubjectPublicKeyInfo of an RSA key, or
// "v=DKIM1; k=ed25519; p=..." with the 32 raw bytes of an Ed25519 key
// (RFC 8463 §4.2). pub may also be the private key.
func Record(pub any) (string, error) {
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	kind, err := KindOf(pub)
	if err != nil {
		return "", err
	}
	var raw []byte
	switch kind {
	case RSA:
		if raw, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return "", fmt.Errorf("dkim: encode public key: %w", err)
		}
	case Ed25519:
		raw = pub.(ed25519.PublicKey)
	}
	return "v=DKIM1; k=" + string(kind) + "; p=" + base64.StdEncoding.EncodeToString(raw), nil
}

// RecordName returns the DNS name of a key record:
// SELECTOR._domainkey.DOMAIN (RFC 6376 §3.6.2.1), without the final dot.
func RecordName(domain, selector string) (string, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return "", err
	}
	if err := ValidSelector(selector); err != nil {
		return "", err
	}
	return strings.ToLower(selector) + "._domainkey." + d, nil
}

// maxTXTString is the longest character-string a TXT record holds
// (RFC 1035 §3.3): longer values are split into several, which verifiers
// join (RFC 6376 §3.6.2.2).
const maxTXTString = 255

// ZoneLine returns the zone-file line that publishes pub for domain and
// selector:
//
//	SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..." "..."
//
// with the value split into strings of at most 255 bytes.
func ZoneLine(domain, selector string, pub any) (string, error) {
	name, err := RecordName(domain, selector)
	if err != nil {
		return "", err
	}
	rec, err := Record(pub)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(name + ". IN TXT")
	for rec != "" {
		n := min(len(rec), maxTXTString)
		// The record is base64 and ASCII punctuation: no quoting needed
		// beyond the quotes themselves.
		b.WriteString(` "` + rec[:n] + `"`)
		rec = rec[n:]
	}
	return b.String(), nil
}

// NewSelector names the selector of a new key: "tr" (trackrelay), the
// year and month, and "r" for RSA or "e" for Ed25519, such as tr202607r.
// The date says how old a key is at a glance, and the letter lets an RSA
// and an Ed25519 key of the same month sit side by side. If taken (which
// may be nil) says the name is in use for the domain, "-2", "-3", ... is
// appended until it is free.
func NewSelector(kind Kind, now time.Time, taken func(string) bool) string {
	base := "tr" + now.UTC().Format("200601") + string(kind[:1])
	s := base
	for i := 2; taken != nil && taken(s); i++ {
		s = base + "-" + strconv.Itoa(i)
	}
	return s
}

// NormalizeDomain returns domain in the form a d= tag and a DNS query
// use: lower case, A-labels for an internationalized name (RFC 5890), no
// final dot. It fails for what is not a host name.
func NormalizeDomain(domain string) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(domain), ".")
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("dkim: domain %q: %w", domain, err)
	}
	a = strings.ToLower(a)
	if err := validName(a); err != nil || !strings.Contains(a, ".") {
		return "", fmt.Errorf("dkim: %q is not a domain name", domain)
	}
	return a, nil
}

// ValidSelector checks a selector: one or more DNS labels of letters,
// digits and hyphens (RFC 6376 §3.1).
func ValidSelector(s string) error {
	if err := validName(s); err != nil {
		return fmt.Errorf("dkim: selector %q: %w", s, err)
	}
	return nil
}

// validName checks dot-separated LDH labels of 1-63 bytes, 253 in all.
func validName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 bytes")
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("a label is empty or longer than 63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("a label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlpha(c) && !isDigit(c) && c != '-' {
				return fmt.Errorf("character %q is not a letter, digit or '-'", c)
			}
		}
	}
	return nil
}
