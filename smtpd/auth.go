package smtpd

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// User is one SMTP login: the bcrypt hash of its password and the
// credential a session that authenticates as it acts for.
type User struct {
	Hash []byte
	Cred *Credential
}

// Limits on what a client may send as a username or password. bcrypt reads
// at most 72 bytes of a password; a longer one can never match.
const (
	maxUsernameLen = 256
	maxPasswordLen = 72
)

// userTable is one immutable snapshot of the users, with its own cache of
// successful verifications, so swapping the table drops the cache.
type userTable struct {
	users map[string]User
	dummy []byte // hash compared for unknown users, at the highest cost in use

	mu    sync.Mutex
	cache map[string][sha256.Size]byte // username -> HMAC of the last good password
}

func newUserTable(users map[string]User) (*userTable, error) {
	t := &userTable{users: make(map[string]User, len(users)), cache: make(map[string][sha256.Size]byte)}
	cost := bcrypt.MinCost
	var errs []error
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		u := users[name]
		c, err := bcrypt.Cost(u.Hash)
		switch {
		case name == "" || len(name) > maxUsernameLen:
			errs = append(errs, fmt.Errorf("smtpd: user %q: name must be 1 to %d bytes", printable(name, 64), maxUsernameLen))
		case err != nil:
			errs = append(errs, fmt.Errorf("smtpd: user %q: password hash is not bcrypt: %w", name, err))
		case u.Cred == nil:
			errs = append(errs, fmt.Errorf("smtpd: user %q: no credential", name))
		default:
			cost = max(cost, c)
			t.users[name] = User{Hash: bytes.Clone(u.Hash), Cred: u.Cred}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	dummy, err := bcrypt.GenerateFromPassword(pw[:], cost)
	if err != nil {
		return nil, fmt.Errorf("smtpd: dummy hash: %w", err)
	}
	t.dummy = dummy
	return t, nil
}

// errCheckFailed marks a verification that could not be made (not a wrong
// password); the client gets 454 4.7.0.
var errCheckFailed = errors.New("smtpd: password check failed")

// verify checks a username and password. A wrong password or unknown user
// is errAuthFailed; an unknown user costs one bcrypt comparison, like a
// known one. Successful checks are cached as HMAC-SHA-256(salt, username,
// password) with the server's per-process random salt, compared in constant
// time; the plain password is never stored.
//
// sem, if not nil, bounds the bcrypt comparisons running at once, so a
// flood of logins cannot take every CPU from delivery.
func (t *userTable) verify(salt []byte, sem chan struct{}, username, password string) (*Credential, error) {
	if username == "" || len(username) > maxUsernameLen || len(password) > maxPasswordLen {
		return nil, errAuthFailed
	}
	mac := hmac.New(sha256.New, salt)
	mac.Write([]byte(username))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])

	u, known := t.users[username]
	hash := t.dummy
	if known {
		t.mu.Lock()
		cached, hit := t.cache[username]
		t.mu.Unlock()
		if hit && hmac.Equal(cached[:], sum[:]) {
			return u.Cred, nil
		}
		hash = u.Hash
	}
	if sem != nil {
		sem <- struct{}{}
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	if sem != nil {
		<-sem
	}
	switch {
	case err == nil && known:
		t.mu.Lock()
		t.cache[username] = sum // one entry per configured user: bounded
		t.mu.Unlock()
		return u.Cred, nil
	case err == nil, errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return nil, errAuthFailed
	default:
		return nil, fmt.Errorf("%w: %w", errCheckFailed, err)
	}
}

// loginServer is the server side of the LOGIN SASL mechanism
// (draft-murchison-sasl-login), which go-sasl lacks: it asks for the
// username, then the password, each as a 334 challenge. An initial response
// with AUTH LOGIN carries the username.
type loginServer struct {
	state int // 0 start, 1 asked username, 2 asked password, 3 done
	user  string
	auth  func(username, password string) error
}

var _ sasl.Server = (*loginServer)(nil)

// Next implements sasl.Server.
func (a *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch a.state {
	case 0:
		if response == nil {
			a.state = 1
			return []byte("Username:"), false, nil
		}
		a.user = string(response)
		a.state = 2
		return []byte("Password:"), false, nil
	case 1:
		a.user = string(response)
		a.state = 2
		return []byte("Password:"), false, nil
	case 2:
		a.state = 3
		return nil, true, a.auth(a.user, string(response))
	default:
		return nil, true, errAuthMalformed
	}
}

// plainServer wraps go-sasl's PLAIN server so a malformed response gets a
// clear 501 instead of go-sasl's bare error text.
type plainServer struct{ sasl.Server }

// Next implements sasl.Server.
func (p plainServer) Next(response []byte) ([]byte, bool, error) {
	c, done, err := p.Server.Next(response)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		err = errAuthMalformed
	}
	return c, done, err
}
