package domaincheck

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/trackrelay/trackrelay/rewrite"
)

// Path is where a redirector serves the challenge, on plain HTTP and HTTPS,
// for any Host.
const Path = "/.well-known/trackrelay/domain-check"

// challengePrefix starts every challenge value; an answer that starts with
// it came from a trackrelay redirector, whatever its keys.
const challengePrefix = "trackrelay-domain-check v1 "

// maxValue bounds a challenge value: the prefix, a key id and 43 characters
// of base64.
const maxValue = 96

// Challenger computes and verifies the per-domain challenge: an HMAC-SHA256
// of the lower-cased host under a key derived from each token key, so that a
// redirector and the relay agree on it without sharing anything but the key
// file, and an answer proves the request reached a redirector holding our
// keys. The value names the key it was made with, so a redirector whose key
// file has not been rotated yet still verifies. It is safe for concurrent
// use.
//
// The key is derived (HMAC of a fixed label under the token key) rather
// than the token key itself, so that serving the challenge for any host a
// stranger names is never an oracle for token MACs.
type Challenger struct {
	active uint8
	keys   map[uint8][]byte // derived keys
}

// deriveLabel is the input of the key derivation.
const deriveLabel = "trackrelay domain-check key v1"

// NewChallenger returns a Challenger whose values are made with active and
// that accepts values made with older too (the token key file's order).
func NewChallenger(active rewrite.Key, older ...rewrite.Key) (*Challenger, error) {
	c := &Challenger{active: active.ID, keys: map[uint8][]byte{}}
	for _, k := range append([]rewrite.Key{active}, older...) {
		if len(k.Secret) < rewrite.MinSecretLen {
			return nil, fmt.Errorf("domaincheck: key %d: secret must be at least %d bytes", k.ID, rewrite.MinSecretLen)
		}
		if _, dup := c.keys[k.ID]; dup {
			return nil, fmt.Errorf("domaincheck: key %d: listed twice", k.ID)
		}
		m := hmac.New(sha256.New, k.Secret)
		m.Write([]byte(deriveLabel))
		c.keys[k.ID] = m.Sum(nil)
	}
	return c, nil
}

// Value is the challenge for host (a Host header value: a port, brackets
// and a trailing dot are ignored, case does not matter).
func (c *Challenger) Value(host string) string {
	return challengePrefix + strconv.Itoa(int(c.active)) + " " + c.mac(c.keys[c.active], CanonicalHost(host))
}

func (c *Challenger) mac(key []byte, host string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(host))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verify reports whether got is host's challenge under any of c's keys.
func (c *Challenger) Verify(host, got string) bool {
	rest, ok := strings.CutPrefix(strings.TrimSpace(got), challengePrefix)
	if !ok || len(got) > maxValue {
		return false
	}
	idS, sum, ok := strings.Cut(rest, " ")
	if !ok {
		return false
	}
	id, err := strconv.ParseUint(idS, 10, 8)
	if err != nil {
		return false
	}
	key, ok := c.keys[uint8(id)]
	if !ok {
		return false
	}
	return hmac.Equal([]byte(sum), []byte(c.mac(key, CanonicalHost(host))))
}

// isChallenge reports whether s looks like a challenge value from any
// trackrelay redirector.
func isChallenge(s string) bool {
	return strings.HasPrefix(strings.TrimSpace(s), challengePrefix)
}

// CanonicalHost is host (a Host header value or a domain) without a port,
// brackets or a trailing dot, in lower case.
func CanonicalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	return strings.ToLower(host)
}

// ErrBadName is returned for a name that cannot be a click domain.
var ErrBadName = errors.New("domaincheck: not a domain name")
