package rewrite

import (
	"crypto/hmac"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
)

// VERP tokens name a message copy in its envelope sender
// (local+TOKEN@bounce-domain), so that a bounce, a complaint or a reply
// sent back to that address says which copy it is about. Like link tokens
// they are signed with the token keys, so nobody can make an address that
// marks someone else's copy as bounced.
//
// Layout, before base32 (RFC 4648 alphabet, lower case, no padding):
//
//	version(1) key(1) copy-id(8) mac(10)
//
// 20 bytes are exactly 32 characters. The MAC is HMAC-SHA256, truncated
// to 80 bits, over a label that sets VERP tokens apart from link tokens
// followed by the first 10 bytes. Mail systems may change the case of a
// local part, and base32 in one case survives that: decoding folds case.
const (
	verpVersion = 1
	verpRawLen  = 2 + 8 + macLen
	// VERPTokenLen is the length of every VERP token.
	VERPTokenLen = 32
	verpLabel    = "trackrelay verp v1\x00"
)

var verpB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// EncodeVERP returns the VERP token of copy id, signed with the active key.
func (c *Codec) EncodeVERP(id uint64) string {
	var raw [verpRawLen]byte
	raw[0], raw[1] = verpVersion, c.active
	binary.BigEndian.PutUint64(raw[2:10], id)
	copy(raw[10:], c.verpMAC(c.keys[c.active], raw[:10]))
	return verpB32.EncodeToString(raw[:])
}

func (c *Codec) verpMAC(key *macKey, body []byte) []byte {
	st := key.pool.Get().(*macState)
	defer key.pool.Put(st)
	msg := append(append(st.raw[:0], verpLabel...), body...)
	sum := st.mac(msg)
	st.raw = msg[:0]
	out := make([]byte, macLen)
	copy(out, sum)
	return out
}

// DecodeVERP verifies a VERP token, in any case, and returns the copy id
// it names. Every malformed, altered or unknown-key token yields an error
// wrapping ErrBadToken; it never panics.
func (c *Codec) DecodeVERP(s string) (uint64, error) {
	if len(s) != VERPTokenLen {
		return 0, fmt.Errorf("%w: verp token: want %d characters", ErrBadToken, VERPTokenLen)
	}
	raw, err := verpB32.DecodeString(strings.ToLower(s))
	if err != nil || len(raw) != verpRawLen {
		return 0, fmt.Errorf("%w: verp token: not base32", ErrBadToken)
	}
	if raw[0] != verpVersion {
		return 0, fmt.Errorf("%w: verp token: unknown version %d", ErrBadToken, raw[0])
	}
	key, ok := c.keys[raw[1]]
	if !ok {
		return 0, ErrUnknownKey
	}
	if !hmac.Equal(raw[10:], c.verpMAC(key, raw[:10])) {
		return 0, fmt.Errorf("%w: verp token: signature mismatch", ErrBadToken)
	}
	return binary.BigEndian.Uint64(raw[2:10]), nil
}
