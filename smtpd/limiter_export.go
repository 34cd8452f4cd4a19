package smtpd

import (
	"net/netip"
	"time"
)

// AuthLimiter is the SMTP AUTH brute-force limiter (limit.go) for other
// front ends that check passwords, the dashboard's login: the same rules
// (slow down after some failures, then refuse for a while) with their own
// table. user names the login tried; the limiter may count per (address,
// user) as well as per address.
type AuthLimiter struct{ l *authLimiter }

// NewAuthLimiter returns a limiter that delays replies by delay per
// failure after slowAfter failures and refuses an address for blockFor
// after blockAfter failures of one (address, user), and every user of an
// address after three times as many; zero values take the SMTP front's
// defaults (3, 10, 1s, 15m).
func NewAuthLimiter(slowAfter, blockAfter int, delay, blockFor time.Duration) *AuthLimiter {
	if slowAfter <= 0 {
		slowAfter = 3
	}
	if blockAfter <= 0 {
		blockAfter = 10
	}
	if delay <= 0 {
		delay = time.Second
	}
	if blockFor <= 0 {
		blockFor = 15 * time.Minute
	}
	// Past three times blockAfter failures from one address, every user
	// behind it is refused, as the SMTP front does by default.
	return &AuthLimiter{newAuthLimiter(slowAfter, blockAfter, 3*blockAfter, delay, blockFor, 65536)}
}

// Blocked says whether a login of user from ip is refused now, and for
// how much longer.
func (a *AuthLimiter) Blocked(ip netip.Addr, user string) (time.Duration, bool) {
	return a.l.blocked(ip, user)
}

// Fail records a failed login. It returns how long to delay the reply,
// and whether the address is now refused (and for how long).
func (a *AuthLimiter) Fail(ip netip.Addr, user string) (delay time.Duration, blocked bool, left time.Duration) {
	return a.l.fail(ip, user)
}

// Succeed forgets the failures of a login that passed.
func (a *AuthLimiter) Succeed(ip netip.Addr, user string) { a.l.succeed(ip, user) }
