package smtpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// VERP (variable envelope return path) gives every copy an envelope sender
// of its own, LOCAL+TOKEN@BOUNCE-DOMAIN, where TOKEN (rewrite's VERP token)
// names the copy and is signed with the token keys. A bounce, a complaint
// or an auto-reply sent back to that address says which copy it is about,
// and nobody can make an address that marks another copy. Only the
// envelope changes: the From: header and the message bytes do not.
//
// The bounce domain is the account's own, while it is verified: the one
// store.Account.BounceDomain names, or when it names none the account's
// first verified domain of kind bounce (by name); else the relay's
// ([inbound] bounce_domain). With neither, the envelope sender stays as
// the client gave it. A null sender (<>) stays null: mail sent with one asks for no
// bounces.

// VERPConfig configures a VERP.
type VERPConfig struct {
	Codec *rewrite.Codec // signs and checks the tokens; required
	// Domain is the relay's bounce domain; "" leaves copies of accounts
	// without their own as they are.
	Domain string
	// Records holds the accounts and their bounce domains; nil: only
	// Domain is used.
	Records store.RecordStore
	// TTL is how long an account's bounce domain is remembered; default
	// 30s.
	TTL    time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// VERP makes and reads VERP envelope senders. A nil *VERP leaves every
// envelope sender alone. It is safe for concurrent use.
type VERP struct {
	cfg VERPConfig
	log *slog.Logger

	mu    sync.Mutex
	cache map[string]verpDomain // by account
}

type verpDomain struct {
	domain string
	until  time.Time
}

// NewVERP returns a VERP.
func NewVERP(cfg VERPConfig) (*VERP, error) {
	if cfg.Codec == nil {
		return nil, errors.New("smtpd: verp: a codec is required")
	}
	cfg.Domain = strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &VERP{cfg: cfg, log: cfg.Logger, cache: map[string]verpDomain{}}, nil
}

// Sender returns the envelope sender copy c is relayed with: its VERP
// address, or c.From when no bounce domain applies (or c.From is null).
func (v *VERP) Sender(c *store.Copy) string {
	if v == nil || c.From == "" {
		return c.From
	}
	d := v.domainFor(c.Account)
	if d == "" {
		return c.From
	}
	return verpLocal(c.From) + "+" + v.cfg.Codec.EncodeVERP(c.ID) + "@" + d
}

// maxVERPLocal bounds the sender's part of a VERP local part: with '+'
// and the token, the local part stays within RFC 5321's 64 octets.
const maxVERPLocal = 64 - 1 - rewrite.VERPTokenLen

// verpLocal is the readable part of a VERP address: the sender's local
// part, lower case, without any '+' suffix and with only the characters
// every MTA passes; "bounce" when nothing is left.
func verpLocal(from string) string {
	local := from
	if at := strings.LastIndexByte(from, '@'); at >= 0 {
		local = from[:at]
	}
	if plus := strings.IndexByte(local, '+'); plus >= 0 {
		local = local[:plus]
	}
	var b strings.Builder
	for i := 0; i < len(local) && b.Len() < maxVERPLocal; i++ {
		c := local[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c == '.' && b.Len() > 0:
			b.WriteByte(c)
		}
	}
	s := strings.TrimRight(b.String(), ".")
	if s == "" {
		return "bounce"
	}
	return s
}

// domainFor returns the bounce domain of account's mail: its own when it
// is verified, else the relay's. Lookups are remembered for TTL; a failed
// one falls back to the relay's domain.
func (v *VERP) domainFor(account string) string {
	if v.cfg.Records == nil || account == "" {
		return v.cfg.Domain
	}
	now := v.cfg.Now()
	v.mu.Lock()
	e, ok := v.cache[account]
	v.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.domain
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := v.cfg.Domain
	if own, err := v.accountDomain(ctx, account); err != nil {
		v.log.Warn("verp: account bounce domain lookup failed; using the relay's", "account", account, "err", err)
	} else if own != "" {
		d = own
	}
	v.mu.Lock()
	if len(v.cache) > 10000 {
		v.cache = map[string]verpDomain{}
	}
	v.cache[account] = verpDomain{domain: d, until: now.Add(v.cfg.TTL)}
	v.mu.Unlock()
	return d
}

// accountDomain returns account's own bounce domain when one is verified
// now (the one it names, else its first), else "".
func (v *VERP) accountDomain(ctx context.Context, account string) (string, error) {
	a, err := store.Get[store.Account](ctx, v.cfg.Records, store.KindAccount, account)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if a.BounceDomain == "" {
		ds, err := store.List[store.Domain](ctx, v.cfg.Records, store.KindDomain, account)
		if err != nil {
			return "", err
		}
		for _, d := range ds { // in name order
			if d.Kind == store.DomainBounce && d.Usable() {
				return d.Name, nil
			}
		}
		return "", nil
	}
	d, err := store.Get[store.Domain](ctx, v.cfg.Records, store.KindDomain, strings.ToLower(a.BounceDomain))
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if d.Account != account || d.Kind != store.DomainBounce || !d.Usable() {
		return "", nil
	}
	return d.Name, nil
}

// Errors of ParseAddress.
var (
	// ErrNotVERP: the address is not of the form local+token@domain.
	ErrNotVERP = errors.New("smtpd: verp: not a VERP address")
	// ErrNotBounceDomain: the domain is none of the bounce domains.
	ErrNotBounceDomain = errors.New("smtpd: verp: not a bounce domain")
)

// ParseAddress reads a VERP address: the copy its token names, and its
// domain (lower case). The token is verified (an error wrapping
// rewrite.ErrBadToken when forged or altered), and the domain must be a
// bounce domain (ErrNotBounceDomain).
func (v *VERP) ParseAddress(ctx context.Context, addr string) (id uint64, domain string, err error) {
	local, domain, ok := splitAddr(addr)
	if !ok {
		return 0, "", ErrNotVERP
	}
	plus := strings.LastIndexByte(local, '+')
	if plus < 0 {
		return 0, domain, ErrNotVERP
	}
	if !v.IsBounceDomain(ctx, domain) {
		return 0, domain, ErrNotBounceDomain
	}
	id, err = v.cfg.Codec.DecodeVERP(local[plus+1:])
	if err != nil {
		return 0, domain, fmt.Errorf("smtpd: verp: %w", err)
	}
	return id, domain, nil
}

// IsBounceDomain reports whether domain (lower case) takes bounces here:
// the relay's bounce domain, or an account's bounce domain once verified
// (mail sent while it was verified keeps coming back after a check fails).
func (v *VERP) IsBounceDomain(ctx context.Context, domain string) bool {
	if v == nil || domain == "" {
		return false
	}
	if domain == v.cfg.Domain {
		return true
	}
	if v.cfg.Records == nil {
		return false
	}
	d, err := store.Get[store.Domain](ctx, v.cfg.Records, store.KindDomain, domain)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			v.log.Warn("verp: bounce domain lookup failed", "domain", domain, "err", err)
		}
		return false
	}
	return d.Kind == store.DomainBounce && d.Served()
}

// Codec returns the token codec.
func (v *VERP) Codec() *rewrite.Codec { return v.cfg.Codec }

// splitAddr splits local@domain at the last '@'; the domain comes back in
// lower case without a final dot.
func splitAddr(addr string) (local, domain string, ok bool) {
	addr = strings.TrimSpace(addr)
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", false
	}
	return addr[:at], strings.TrimSuffix(strings.ToLower(addr[at+1:]), "."), true
}
