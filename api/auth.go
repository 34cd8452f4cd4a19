package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/smtpd"
)

// ErrBadKey is returned by a KeyChecker for a key that matches no account.
var ErrBadKey = errors.New("api: unknown API key")

// KeyChecker maps an API key to the account it speaks for.
type KeyChecker interface {
	// CheckKey returns the key's principal, ErrBadKey if there is none,
	// or another error if the check itself failed.
	CheckKey(ctx context.Context, key string) (*Principal, error)
}

// Key is one API key as the store holds it: a bcrypt hash, never the key
// itself.
type Key struct {
	// ID is the key's record id. Keys made at run time read
	// "trk_" + ID + "_" + secret, so only their own hash is compared;
	// keys declared in the config file may be anything and are compared
	// one by one.
	ID   string
	Hash []byte // bcrypt hash of the key
	// Cred is the account and credential the key speaks for.
	Cred *smtpd.Credential
	// Operator keys speak for every account (Cred may then be nil).
	Operator bool
}

// KeyPrefix starts every API key made at run time.
const KeyPrefix = "trk_"

// DeclaredKeyID reports whether a key record id is that of a key
// declared in the config file ("cfg-" and a digest of its hash).
func DeclaredKeyID(id string) bool { return id == "" || strings.HasPrefix(id, "cfg-") }

// keyID returns the record id a run-time key names.
func keyID(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	return id, ok && id != ""
}

// MaxKeyLen bounds an API key: bcrypt reads at most 72 bytes.
const MaxKeyLen = 72

// Keyring is a KeyChecker over bcrypt-hashed keys. Checking a key against
// bcrypt hashes is slow on purpose (tens of milliseconds a hash), so a key
// that passed once is remembered: by its HMAC under a per-process random
// salt (the key itself is never kept), in a bounded cache. Keys that
// failed are remembered the same way, so a client hammering a bad key
// costs one bcrypt round per cache eviction, not one per request. At most
// a few bcrypt checks run at once.
//
// SetKeys replaces the keys while requests are served (the relay's SIGHUP).
type Keyring struct {
	salt [32]byte
	sem  chan struct{}

	mu   sync.Mutex
	keys []Key            // replaced whole by SetKeys, never changed in place
	gen  uint64           // counts SetKeys calls
	good map[[32]byte]int // HMAC -> index in keys
	bad  map[[32]byte]struct{}
}

// keyCacheSize bounds each of the good and bad caches.
const keyCacheSize = 4096

// NewKeyring returns a Keyring over keys. It fails if a hash is not a
// bcrypt hash or a key has no credential.
func NewKeyring(keys []Key) (*Keyring, error) {
	if err := CheckKeys(keys); err != nil {
		return nil, err
	}
	kr := &Keyring{
		keys: append([]Key(nil), keys...),
		sem:  make(chan struct{}, 4),
		good: map[[32]byte]int{},
		bad:  map[[32]byte]struct{}{},
	}
	if _, err := rand.Read(kr.salt[:]); err != nil {
		return nil, err
	}
	return kr, nil
}

// CheckKeys reports the first key that NewKeyring and SetKeys would refuse:
// a hash that is not bcrypt, or a key without an account.
func CheckKeys(keys []Key) error {
	for i, k := range keys {
		if _, err := bcrypt.Cost(k.Hash); err != nil {
			return fmt.Errorf("api: key %d: hash is not bcrypt: %w", i, err)
		}
		if !k.Operator && (k.Cred == nil || k.Cred.Account == "") {
			return fmt.Errorf("api: key %d: no account", i)
		}
	}
	return nil
}

// SetKeys replaces the keys, checked as NewKeyring checks them; on an
// error the old keys stay. Both caches are emptied: a removed key stops
// working at once, and a key that failed before may now pass. A check
// that was running against the old keys answers by them.
func (kr *Keyring) SetKeys(keys []Key) error {
	if err := CheckKeys(keys); err != nil {
		return err
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	kr.keys = append([]Key(nil), keys...)
	kr.gen++
	clear(kr.good)
	clear(kr.bad)
	return nil
}

func (kr *Keyring) mac(key string) [32]byte {
	m := hmac.New(sha256.New, kr.salt[:])
	m.Write([]byte(key))
	var sum [32]byte
	m.Sum(sum[:0])
	return sum
}

// CheckKey implements KeyChecker.
func (kr *Keyring) CheckKey(ctx context.Context, key string) (*Principal, error) {
	if key == "" || len(key) > MaxKeyLen {
		return nil, ErrBadKey
	}
	sum := kr.mac(key)
	kr.mu.Lock()
	keys, gen := kr.keys, kr.gen
	i, ok := kr.good[sum]
	_, isBad := kr.bad[sum]
	kr.mu.Unlock()
	if ok {
		return principal(&keys[i]), nil
	}
	if isBad {
		return nil, ErrBadKey
	}
	select {
	case kr.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-kr.sem }()
	// Compare against every hash, even after a match, so the time taken
	// does not say which key matched.
	found := -1
	id, hasID := keyID(key)
	for i, k := range keys {
		// A run-time key is compared with its own record only; any other
		// text with every declared key (few), all of them.
		if hasID && k.ID != id || !hasID && !DeclaredKeyID(k.ID) {
			continue
		}
		if bcrypt.CompareHashAndPassword(k.Hash, []byte(key)) == nil {
			found = subtle.ConstantTimeSelect(subtle.ConstantTimeEq(int32(found), -1), i, found) // the first match
		}
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	current := kr.gen == gen // else the answer is not cached: the keys changed
	if found < 0 {
		if current {
			if len(kr.bad) >= keyCacheSize {
				clear(kr.bad)
			}
			kr.bad[sum] = struct{}{}
		}
		return nil, ErrBadKey
	}
	if current {
		if len(kr.good) >= keyCacheSize {
			clear(kr.good)
		}
		kr.good[sum] = found
	}
	return principal(&keys[found]), nil
}

func principal(k *Key) *Principal {
	p := &Principal{Operator: k.Operator, KeyID: k.ID}
	if k.Cred != nil {
		cred := *k.Cred
		p.Account, p.Cred = cred.Account, &cred
	}
	return p
}

// bearer returns the request's API key: the Authorization header's Bearer
// token (RFC 6750 §2.1) or the access_token query parameter (§2.3).
func bearer(r *http.Request) (string, error) {
	h := r.Header.Values("Authorization")
	q, inQuery := r.URL.Query()["access_token"]
	switch {
	case len(h) > 1 || len(q) > 1 || (len(h) == 1 && inQuery):
		return "", errorf(http.StatusBadRequest, "give the API key once")
	case len(h) == 1:
		scheme, tok, ok := strings.Cut(h[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", errorf(http.StatusUnauthorized, "authorization: want Bearer")
		}
		return strings.TrimSpace(tok), nil
	case inQuery:
		return q[0], nil
	}
	return "", errorf(http.StatusUnauthorized, "missing API key")
}

// trustedKey marks a request context as the relay's local admin socket
// (a Unix socket only its owner can open): such requests act as an
// operator without a key. The command-line tools use it.
type trustedKey struct{}

// TrustedContext returns ctx marked as the local admin socket's. Only the
// admin socket's server may use it (as its BaseContext).
func TrustedContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, trustedKey{}, true)
}

func (s *server) authenticate(r *http.Request) (*Principal, error) {
	if t, _ := r.Context().Value(trustedKey{}).(bool); t {
		return &Principal{Operator: true, User: "admin socket"}, nil
	}
	if p, ok := r.Context().Value(principalKey{}).(*Principal); ok && p != nil {
		return p, nil // set in this process (WithPrincipal): the dashboard
	}
	key, err := bearer(r)
	if err != nil {
		return nil, err
	}
	// Checks wait for a bcrypt slot: a flood of unknown keys must not
	// pile up requests without end.
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	p, err := s.cfg.Keys.CheckKey(ctx, key)
	switch {
	case errors.Is(err, ErrBadKey):
		return nil, &httpError{status: http.StatusUnauthorized, msg: "invalid API key"}
	case err != nil:
		return nil, &httpError{status: http.StatusServiceUnavailable, msg: "cannot check the API key now", err: err}
	case p == nil || !p.Operator && (p.Account == "" || p.Cred == nil):
		return nil, &httpError{status: http.StatusInternalServerError, msg: "internal error", err: errors.New("key checker returned no account")}
	}
	return p, nil
}
