package rewrite

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"sync"
)

// Kind says what a tracked URL stands for.
type Kind uint8

// The kinds of hit a token can carry.
const (
	KindClick Kind = 1 // a hyperlink: 302 to the original URL
	KindImage Kind = 2 // an image: an open, then 302 to the original image
	KindPixel Kind = 3 // the open pixel: an open, answered with a 1x1 GIF
)

func (k Kind) String() string {
	switch k {
	case KindClick:
		return "click"
	case KindImage:
		return "image"
	case KindPixel:
		return "pixel"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Token is what a tracked URL carries: everything the redirector needs to
// record a hit and send the reader on, without a lookup. The path, query
// and fragment of the original URL are not in the token; they stay visible
// after it in the tracked URL.
type Token struct {
	Kind      Kind
	MessageID uint64 // the message copy (one per recipient)
	Position  uint32 // link position in document order, from 0
	HTTPS     bool   // original scheme: https (true) or http (false)
	Host      string // original host, as written (may be an IDN in Unicode)
	Port      uint16 // original port; 0 means the scheme's default
}

// Scheme returns "https" or "http".
func (t Token) Scheme() string {
	if t.HTTPS {
		return "https"
	}
	return "http"
}

// Authority returns host[:port] as it goes into a URL.
func (t Token) Authority() string {
	h := t.Host
	if strings.IndexByte(h, ':') >= 0 { // IPv6 literal
		h = "[" + h + "]"
	}
	if t.Port != 0 {
		h += ":" + strconv.Itoa(int(t.Port))
	}
	return h
}

// Key is a token signing key. ID names it inside every token so keys can
// rotate: the codec signs with one active key and accepts all it knows.
type Key struct {
	ID     uint8
	Secret []byte // at least MinSecretLen bytes
}

// Token format constants.
const (
	tokenVersion = 1
	macLen       = 10 // 80 bits of HMAC-SHA256
	MinSecretLen = 32
	maxHostLen   = 253
	// MaxTokenLen bounds the encoded length the decoder will look at.
	MaxTokenLen = 512
)

// Errors returned by Decode. Every failure wraps ErrBadToken.
var (
	ErrBadToken   = errors.New("rewrite: bad token")
	ErrUnknownKey = fmt.Errorf("%w: unknown key", ErrBadToken)
)

// strictB64 refuses non-zero trailing bits, so that exactly one string
// encodes each token.
var strictB64 = base64.RawURLEncoding.Strict()

// Codec encodes and verifies tokens. It is safe for concurrent use.
type Codec struct {
	active uint8
	keys   map[uint8]*macKey
}

// macKey pools keyed HMAC states: hmac.New costs several allocations and
// two hash blocks, Reset on a used state costs neither.
type macKey struct {
	pool sync.Pool // of *macState
}

type macState struct {
	h   hash.Hash
	raw []byte // scratch for the token bytes
	sum []byte
}

func newMacKey(secret []byte) *macKey {
	secret = append([]byte(nil), secret...)
	k := &macKey{}
	k.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, secret), raw: make([]byte, 0, 3+8+binary.MaxVarintLen32+2+maxHostLen+macLen), sum: make([]byte, 0, sha256.Size)}
	}
	return k
}

// mac appends the truncated MAC of msg to msg's state buffer.
func (s *macState) mac(msg []byte) []byte {
	s.h.Reset()
	s.h.Write(msg)
	s.sum = s.h.Sum(s.sum[:0])
	return s.sum[:macLen]
}

// NewCodec returns a codec that signs with active and also accepts older.
func NewCodec(active Key, older ...Key) (*Codec, error) {
	c := &Codec{active: active.ID, keys: map[uint8]*macKey{}}
	for _, k := range append([]Key{active}, older...) {
		if len(k.Secret) < MinSecretLen {
			return nil, fmt.Errorf("rewrite: key %d: secret must be at least %d bytes", k.ID, MinSecretLen)
		}
		if _, dup := c.keys[k.ID]; dup {
			return nil, fmt.Errorf("rewrite: key %d: listed twice", k.ID)
		}
		c.keys[k.ID] = newMacKey(k.Secret)
	}
	return c, nil
}

// ActiveKey returns the id of the key new tokens are signed with.
func (c *Codec) ActiveKey() uint8 { return c.active }

// Layout, before base64url without padding:
//
//	version(1) key(1) flags(1) message-id(8) position(uvarint) [port(2)] host(n) mac(10)
//
// flags: bits 0-1 kind, bit 2 https, bit 3 port present. The host runs to
// the MAC, so it needs no length byte. For a 20-byte host and a position
// under 128 that is 42 bytes, 56 characters.
const (
	flagKindMask = 0x03
	flagHTTPS    = 0x04
	flagPort     = 0x08
	flagKnown    = flagKindMask | flagHTTPS | flagPort
)

// Encode returns the token as a base64url string. It panics only on a
// programming error: a kind out of range or a host longer than 253 bytes
// (the rewriter never asks for either).
func (c *Codec) Encode(t Token) string {
	buf := c.AppendEncode(make([]byte, 0, 96), t)
	return string(buf)
}

// AppendEncode appends the encoded token to dst and returns the result.
func (c *Codec) AppendEncode(dst []byte, t Token) []byte {
	if t.Kind < KindClick || t.Kind > KindPixel || len(t.Host) > maxHostLen {
		panic("rewrite: Encode: invalid token")
	}
	key := c.keys[c.active]
	st := key.pool.Get().(*macState)
	defer key.pool.Put(st)
	b := st.raw[:0]
	flags := byte(t.Kind)
	if t.HTTPS {
		flags |= flagHTTPS
	}
	if t.Port != 0 {
		flags |= flagPort
	}
	b = append(b, tokenVersion, c.active, flags)
	b = binary.BigEndian.AppendUint64(b, t.MessageID)
	b = binary.AppendUvarint(b, uint64(t.Position))
	if t.Port != 0 {
		b = binary.BigEndian.AppendUint16(b, t.Port)
	}
	b = append(b, t.Host...)
	b = append(b, st.mac(b)...)
	st.raw = b[:0]
	return base64.RawURLEncoding.AppendEncode(dst, b)
}

// Decode verifies s and returns the token it carries. Every malformed,
// truncated, tampered or unknown-key token yields an error wrapping
// ErrBadToken; Decode never panics.
func (c *Codec) Decode(s string) (Token, error) {
	if len(s) > MaxTokenLen {
		return Token{}, fmt.Errorf("%w: too long", ErrBadToken)
	}
	// The decoder skips CR and LF; a token has neither.
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return Token{}, fmt.Errorf("%w: not base64url", ErrBadToken)
		}
	}
	raw, err := strictB64.DecodeString(s)
	if err != nil {
		return Token{}, fmt.Errorf("%w: not base64url", ErrBadToken)
	}
	if len(raw) < 3+8+1+macLen {
		return Token{}, fmt.Errorf("%w: truncated", ErrBadToken)
	}
	if raw[0] != tokenVersion {
		return Token{}, fmt.Errorf("%w: unknown version %d", ErrBadToken, raw[0])
	}
	key, ok := c.keys[raw[1]]
	if !ok {
		return Token{}, ErrUnknownKey
	}
	body, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	st := key.pool.Get().(*macState)
	good := hmac.Equal(sum, st.mac(body))
	key.pool.Put(st)
	if !good {
		return Token{}, fmt.Errorf("%w: signature mismatch", ErrBadToken)
	}
	// Signed by us: the rest is checked for sanity, not trust.
	flags := body[2]
	if flags&^flagKnown != 0 {
		return Token{}, fmt.Errorf("%w: unknown flags", ErrBadToken)
	}
	t := Token{
		Kind:      Kind(flags & flagKindMask),
		HTTPS:     flags&flagHTTPS != 0,
		MessageID: binary.BigEndian.Uint64(body[3:11]),
	}
	if t.Kind == 0 {
		return Token{}, fmt.Errorf("%w: no kind", ErrBadToken)
	}
	rest := body[11:]
	pos, n := binary.Uvarint(rest)
	if n <= 0 || pos > 1<<32-1 {
		return Token{}, fmt.Errorf("%w: bad position", ErrBadToken)
	}
	t.Position = uint32(pos)
	rest = rest[n:]
	if flags&flagPort != 0 {
		if len(rest) < 2 {
			return Token{}, fmt.Errorf("%w: truncated port", ErrBadToken)
		}
		t.Port = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
		if t.Port == 0 {
			return Token{}, fmt.Errorf("%w: zero port", ErrBadToken)
		}
	}
	if !validHost(rest) {
		return Token{}, fmt.Errorf("%w: bad host", ErrBadToken)
	}
	t.Host = string(rest)
	if t.Kind != KindPixel && t.Host == "" {
		return Token{}, fmt.Errorf("%w: no host", ErrBadToken)
	}
	return t, nil
}

// validHost accepts what may stand between "//" and the path of a URL we
// redirect to: no delimiters, no whitespace, no control bytes.
func validHost(h []byte) bool {
	for _, c := range h {
		if c <= ' ' || c == 0x7f {
			return false
		}
		switch c {
		case '/', '\\', '@', '?', '#', '%', '"', '<', '>', '`', '^', '{', '}', '|':
			return false
		}
	}
	return true
}

// GenerateKey returns a new random key with the given id.
func GenerateKey(id uint8) (Key, error) {
	s := make([]byte, MinSecretLen)
	if _, err := rand.Read(s); err != nil {
		return Key{}, fmt.Errorf("rewrite: generate key: %w", err)
	}
	return Key{ID: id, Secret: s}, nil
}

// FormatKey renders k as one line of a key file: "ID SECRET", the secret in
// base64url without padding.
func FormatKey(k Key) string {
	return strconv.Itoa(int(k.ID)) + " " + base64.RawURLEncoding.EncodeToString(k.Secret)
}

// ParseKey parses one "ID SECRET" line as written by FormatKey. The secret
// may also be in standard base64, with or without padding.
func ParseKey(line string) (Key, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return Key{}, errors.New("rewrite: key: want \"ID SECRET\"")
	}
	id, err := strconv.ParseUint(f[0], 10, 8)
	if err != nil {
		return Key{}, fmt.Errorf("rewrite: key id %q: must be 0-255", f[0])
	}
	var secret []byte
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if secret, err = enc.DecodeString(f[1]); err == nil {
			break
		}
	}
	if err != nil {
		return Key{}, fmt.Errorf("rewrite: key %d: secret is not base64", id)
	}
	if len(secret) < MinSecretLen {
		return Key{}, fmt.Errorf("rewrite: key %d: secret must be at least %d bytes", id, MinSecretLen)
	}
	return Key{ID: uint8(id), Secret: secret}, nil
}

// ReadKeys reads a key file: one "ID SECRET" line per key, blank lines and
// lines starting with '#' ignored. The first key is the active one.
func ReadKeys(r io.Reader) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParseKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("rewrite: read keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("rewrite: no keys")
	}
	return keys, nil
}

// DevKey is the fixed key used when no key is configured in development.
// Tokens signed with it are forgeable by anyone who reads this source:
// never use it in production.
var DevKey = Key{ID: 0, Secret: []byte("trackrelay-development-key-do-not-use-in-production")}
