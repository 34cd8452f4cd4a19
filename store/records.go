package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Records are the relay's run-time configuration data: accounts, the people
// who log in, SMTP credentials, API keys, click and bounce domains, DKIM
// keys, webhook endpoints and dashboard sessions. They are few and small
// next to the event logs, change at run time (REST API, dashboard, CLI) and
// may be declared in the config file (then Declared is set and they are
// read-only at run time). Every backend keeps them the same way: a JSON
// value under (kind, key), tagged with the account it belongs to, changed
// in one transaction by UpdateRecord. The typed helpers below (Get, List,
// Put, Update, Delete) are what the rest of the code uses.

// RecordKind names a kind of record.
type RecordKind string

// Record kinds.
const (
	KindAccount    RecordKind = "account"
	KindUser       RecordKind = "user"
	KindCredential RecordKind = "credential"
	KindAPIKey     RecordKind = "apikey"
	KindDomain     RecordKind = "domain"
	KindDKIMKey    RecordKind = "dkim"
	KindWebhook    RecordKind = "webhook"
	KindSession    RecordKind = "session"
)

// RecordKinds lists every kind, in the order a copy between backends takes
// them (accounts first).
var RecordKinds = []RecordKind{KindAccount, KindUser, KindCredential, KindAPIKey, KindDomain, KindDKIMKey, KindWebhook, KindSession}

// Errors of the record layer.
var (
	ErrExists   = errors.New("store: already exists")
	ErrDeclared = errors.New("store: declared in the config file: change it there")
)

// RawRecord is one stored record.
type RawRecord struct {
	Kind    RecordKind
	Key     string
	Account string // "" for records of no account (operators, sessions of operators)
	Value   []byte // JSON
}

// RecordStore is what every backend provides for records.
type RecordStore interface {
	// GetRecord returns the record, or ErrNotFound.
	GetRecord(ctx context.Context, kind RecordKind, key string) (*RawRecord, error)
	// ListRecords returns the records of kind in key order: all of them
	// when account is "", else those of that account.
	ListRecords(ctx context.Context, kind RecordKind, account string) ([]RawRecord, error)
	// UpdateRecord reads the record (nil when absent), calls fn with it in
	// one transaction and stores what fn returns: a record to put, or nil
	// to delete (or leave absent). fn may run more than once and must not
	// keep state between runs. An error from fn is returned as it is and
	// nothing changes.
	UpdateRecord(ctx context.Context, kind RecordKind, key string, fn func(cur *RawRecord) (*RawRecord, error)) error
	// RecordsVersion grows with every change to any record, so caches
	// (on this node or others sharing the store) know to reload.
	RecordsVersion(ctx context.Context) (uint64, error)
}

// Record is a typed record.
type Record interface {
	// RecordID names the record: its kind, key and account.
	RecordID() (kind RecordKind, key, account string)
}

// Get returns the record of kind with key, or ErrNotFound.
func Get[T any, P interface {
	*T
	Record
}](ctx context.Context, rs RecordStore, kind RecordKind, key string) (*T, error) {
	raw, err := rs.GetRecord(ctx, kind, key)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(raw.Value, v); err != nil {
		return nil, fmt.Errorf("store: %s %q: %w", kind, key, err)
	}
	return v, nil
}

// List returns the records of kind of account ("" for all), in key order.
func List[T any, P interface {
	*T
	Record
}](ctx context.Context, rs RecordStore, kind RecordKind, account string) ([]T, error) {
	raws, err := rs.ListRecords(ctx, kind, account)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(raws))
	for _, raw := range raws {
		var v T
		if err := json.Unmarshal(raw.Value, &v); err != nil {
			return nil, fmt.Errorf("store: %s %q: %w", kind, raw.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func encodeRecord(r Record) (*RawRecord, error) {
	kind, key, account := r.RecordID()
	if key == "" || len(key) > 512 || strings.IndexByte(key, 0) >= 0 {
		return nil, fmt.Errorf("store: %s: bad key %q", kind, key)
	}
	if strings.IndexByte(account, 0) >= 0 {
		return nil, fmt.Errorf("store: %s: bad account", kind)
	}
	v, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("store: %s %q: %w", kind, key, err)
	}
	return &RawRecord{Kind: kind, Key: key, Account: account, Value: v}, nil
}

// Create stores a new record: ErrExists if one has its key.
func Create(ctx context.Context, rs RecordStore, r Record) error {
	raw, err := encodeRecord(r)
	if err != nil {
		return err
	}
	return rs.UpdateRecord(ctx, raw.Kind, raw.Key, func(cur *RawRecord) (*RawRecord, error) {
		if cur != nil {
			return nil, fmt.Errorf("%w: %s %q", ErrExists, raw.Kind, raw.Key)
		}
		return raw, nil
	})
}

// Update changes the record of kind with key in one transaction: fn gets
// the current value (ErrNotFound if there is none) and returns the new
// one, or nil to delete it. A declared record is refused (ErrDeclared)
// unless declared is true (the config sync). fn may run more than once.
func Update[T any, P interface {
	*T
	Record
	declared() bool
}](ctx context.Context, rs RecordStore, kind RecordKind, key string, declared bool, fn func(cur *T) (*T, error)) error {
	return rs.UpdateRecord(ctx, kind, key, func(cur *RawRecord) (*RawRecord, error) {
		if cur == nil {
			return nil, fmt.Errorf("%w: %s %q", ErrNotFound, kind, key)
		}
		v := new(T)
		if err := json.Unmarshal(cur.Value, v); err != nil {
			return nil, fmt.Errorf("store: %s %q: %w", kind, key, err)
		}
		if P(v).declared() && !declared {
			return nil, fmt.Errorf("%w (%s %q)", ErrDeclared, kind, key)
		}
		nv, err := fn(v)
		if err != nil || nv == nil {
			return nil, err
		}
		raw, err := encodeRecord(P(nv))
		if err != nil {
			return nil, err
		}
		if raw.Kind != kind || raw.Key != key {
			return nil, fmt.Errorf("store: %s %q: an update cannot change the key", kind, key)
		}
		return raw, nil
	})
}

// Delete removes the record of kind with key: ErrNotFound if absent,
// ErrDeclared if the config file declares it.
func Delete(ctx context.Context, rs RecordStore, kind RecordKind, key string) error {
	return rs.UpdateRecord(ctx, kind, key, func(cur *RawRecord) (*RawRecord, error) {
		if cur == nil {
			return nil, fmt.Errorf("%w: %s %q", ErrNotFound, kind, key)
		}
		var d struct {
			Declared bool `json:"declared"`
		}
		if json.Unmarshal(cur.Value, &d) == nil && d.Declared {
			return nil, fmt.Errorf("%w (%s %q)", ErrDeclared, kind, key)
		}
		return nil, nil
	})
}

// SyncDeclared makes the declared records of kind exactly recs (all with
// Declared set): new ones are created, changed ones replaced, declared
// ones no longer in recs deleted. A run-time record with the key of a
// declared one is replaced by it: the config file wins. It is how the
// config file's accounts, credentials, API keys and users reach the store
// at start and on SIGHUP.
func SyncDeclared(ctx context.Context, rs RecordStore, kind RecordKind, recs []Record) (changed int, err error) {
	want := map[string]*RawRecord{}
	for _, r := range recs {
		raw, err := encodeRecord(r)
		if err != nil {
			return changed, err
		}
		if raw.Kind != kind {
			return changed, fmt.Errorf("store: sync %s: got a %s", kind, raw.Kind)
		}
		want[raw.Key] = raw
	}
	have, err := rs.ListRecords(ctx, kind, "")
	if err != nil {
		return 0, err
	}
	for _, h := range have {
		var d struct {
			Declared bool `json:"declared"`
		}
		if json.Unmarshal(h.Value, &d) != nil || !d.Declared {
			continue
		}
		if _, ok := want[h.Key]; ok {
			continue
		}
		err := rs.UpdateRecord(ctx, kind, h.Key, func(cur *RawRecord) (*RawRecord, error) { return nil, nil })
		if err != nil {
			return changed, err
		}
		changed++
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		raw := want[k]
		same := false
		err := rs.UpdateRecord(ctx, kind, k, func(cur *RawRecord) (*RawRecord, error) {
			same = cur != nil && sameDeclared(cur.Value, raw.Value) && cur.Account == raw.Account
			if same {
				return cur, nil
			}
			return raw, nil
		})
		if err != nil {
			return changed, err
		}
		if !same {
			changed++
		}
	}
	return changed, nil
}

// sameDeclared compares two records' JSON, ignoring the run-time fields a
// declared record may gain (its creation time).
func sameDeclared(a, b []byte) bool {
	var ma, mb map[string]any
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return false
	}
	delete(ma, "created")
	delete(mb, "created")
	ja, _ := json.Marshal(ma)
	jb, _ := json.Marshal(mb)
	return string(ja) == string(jb)
}

// Privacy choices of an account (SPEC §13): how much of a reader's request
// is kept.
const (
	KeepFull      = "full"      // IP or user agent as it came
	KeepTruncated = "truncated" // IPv4 /24, IPv6 /48
	KeepNone      = "none"      // not stored at all
	KeepClass     = "class"     // user agent: only its class (browser, mail client, proxy, scanner)
)

// Account is a customer of the relay: it owns credentials, API keys,
// domains, keys, webhooks and every report.
type Account struct {
	Name     string    `json:"name"`
	Declared bool      `json:"declared,omitempty"`
	Created  time.Time `json:"created"`
	// IP is how a reader's address is stored: KeepFull (default),
	// KeepTruncated or KeepNone.
	IP string `json:"ip,omitempty"`
	// UserAgent is KeepFull (default) or KeepClass.
	UserAgent string `json:"user_agent,omitempty"`
	// Retention holds days per log name; absent logs keep the relay's
	// default (logs.retention_days).
	Retention map[string]int `json:"retention,omitempty"`
	// ResignSigned tracks and re-signs mail that arrives DKIM-signed by
	// the sender, when the account has a key for its From domain.
	ResignSigned bool `json:"resign_signed,omitempty"`
	// KeepSenderSignature keeps the sender's (now broken) DKIM-Signature
	// headers when re-signing; by default they are dropped.
	KeepSenderSignature bool `json:"keep_sender_signature,omitempty"`
	// BounceDomain names which of the account's own verified bounce
	// domains VERP envelope senders use; "" takes its first verified one,
	// and with none the relay's.
	BounceDomain string `json:"bounce_domain,omitempty"`
	// SoftBounceLimit suppresses an address after this many soft bounces
	// within SoftBounceWindow; 0 takes the relay's default.
	SoftBounceLimit  int           `json:"soft_bounce_limit,omitempty"`
	SoftBounceWindow time.Duration `json:"soft_bounce_window,omitempty"`
}

// RecordID implements Record.
func (a *Account) RecordID() (RecordKind, string, string) { return KindAccount, a.Name, a.Name }
func (a *Account) declared() bool                         { return a.Declared }

// User is a person who logs in to the dashboard: a user of one account,
// or an operator (no account) who sees every account.
type User struct {
	// Login is the email address or name used to log in, lower case.
	Login        string    `json:"login"`
	Account      string    `json:"account,omitempty"`
	Operator     bool      `json:"operator,omitempty"`
	PasswordHash string    `json:"password_hash"` // bcrypt
	Disabled     bool      `json:"disabled,omitempty"`
	Declared     bool      `json:"declared,omitempty"`
	Created      time.Time `json:"created"`
	// PasswordChanged ends every session made before it.
	PasswordChanged time.Time `json:"password_changed"`
}

// RecordID implements Record.
func (u *User) RecordID() (RecordKind, string, string) { return KindUser, u.Login, u.Account }
func (u *User) declared() bool                         { return u.Declared }

// Credential is an SMTP login with its tracking settings (SPEC §4).
type Credential struct {
	Username     string `json:"username"`
	Account      string `json:"account"`
	PasswordHash string `json:"password_hash"` // bcrypt
	Clicks       bool   `json:"clicks"`
	Opens        bool   `json:"opens"`
	PreventScam  bool   `json:"preventscam"`
	Text         bool   `json:"text"`
	TrackSigned  bool   `json:"track_signed,omitempty"`
	// ClickDomain is host[:port] of tracked links; "" is the relay's
	// default. Only a verified domain of the account is used.
	ClickDomain string    `json:"click_domain,omitempty"`
	Scheme      string    `json:"scheme"`   // "https" or "http"
	Upstream    string    `json:"upstream"` // "" is the first upstream
	Disabled    bool      `json:"disabled,omitempty"`
	Declared    bool      `json:"declared,omitempty"`
	Created     time.Time `json:"created"`
}

// RecordID implements Record.
func (c *Credential) RecordID() (RecordKind, string, string) {
	return KindCredential, c.Username, c.Account
}
func (c *Credential) declared() bool { return c.Declared }

// APIKey is a REST API key of an account, kept as a bcrypt hash. Keys made
// at run time read "trk_" + ID + "_" + secret, so the record is found by
// its ID; keys declared in the config file may be anything.
type APIKey struct {
	ID      string `json:"id"`
	Account string `json:"account"`
	Name    string `json:"name,omitempty"`
	Hash    string `json:"hash"` // bcrypt of the whole key
	// Credential names the credential whose settings and upstream apply
	// to mail sent with the key; "" is the account's first.
	Credential string    `json:"credential,omitempty"`
	Disabled   bool      `json:"disabled,omitempty"`
	Declared   bool      `json:"declared,omitempty"`
	Created    time.Time `json:"created"`
}

// RecordID implements Record.
func (k *APIKey) RecordID() (RecordKind, string, string) { return KindAPIKey, k.ID, k.Account }
func (k *APIKey) declared() bool                         { return k.Declared }

// Domain kinds and states.
const (
	DomainClick  = "click"
	DomainBounce = "bounce"

	DomainPending  = "pending"  // added, never seen right
	DomainVerified = "verified" // the last check passed
	DomainFailing  = "failing"  // was verified; the last check failed
)

// Domain is an account's own click or bounce domain.
type Domain struct {
	Name    string `json:"name"` // lower case, no trailing dot
	Account string `json:"account"`
	Kind    string `json:"kind"`
	State   string `json:"state"`
	// Problem is the last check's explanation when it failed.
	Problem string `json:"problem,omitempty"`
	// Records are the DNS records to create, as the last check found them
	// (a CNAME, or A/AAAA lines for an apex).
	Records  []string  `json:"records,omitempty"`
	Checked  time.Time `json:"checked"`
	Verified time.Time `json:"verified"` // when it first passed
	Declared bool      `json:"declared,omitempty"`
	Created  time.Time `json:"created"`
}

// RecordID implements Record.
func (d *Domain) RecordID() (RecordKind, string, string) { return KindDomain, d.Name, d.Account }
func (d *Domain) declared() bool                         { return d.Declared }

// Usable reports whether new links (or envelope senders) may go on d:
// only while its last check passed.
func (d *Domain) Usable() bool { return d.State == DomainVerified }

// Served reports whether the redirector answers for d: once verified, for
// as long as it is added (old links keep working while it is failing).
func (d *Domain) Served() bool { return !d.Verified.IsZero() }

// DKIM key states.
const (
	DKIMPending  = "pending"  // made; its record is not (yet) seen published
	DKIMActive   = "active"   // published: signs
	DKIMRetiring = "retiring" // replaced by a newer key; record kept published until RetireAt
	DKIMRetired  = "retired"
)

// DKIMKey is a signing key of an account for one From domain.
type DKIMKey struct {
	Account   string    `json:"account"`
	Domain    string    `json:"domain"`
	Selector  string    `json:"selector"`
	Algorithm string    `json:"algorithm"`   // "rsa" or "ed25519"
	Private   string    `json:"private_key"` // PEM; never shown
	Record    string    `json:"record"`      // the TXT value to publish
	State     string    `json:"state"`
	Problem   string    `json:"problem,omitempty"`
	Checked   time.Time `json:"checked"`
	Created   time.Time `json:"created"`
	RetireAt  time.Time `json:"retire_at"`
}

// DKIMKeyID is the key of a DKIM key record.
func DKIMKeyID(domain, selector string) string { return domain + "/" + selector }

// RecordID implements Record.
func (k *DKIMKey) RecordID() (RecordKind, string, string) {
	return KindDKIMKey, DKIMKeyID(k.Domain, k.Selector), k.Account
}
func (k *DKIMKey) declared() bool { return false }

// Webhook is an account's endpoint for pushed events (SPEC §13).
type Webhook struct {
	ID      string   `json:"id"`
	Account string   `json:"account"`
	URL     string   `json:"url"`
	Events  []string `json:"events"`         // event types; empty = all
	Tags    []string `json:"tags,omitempty"` // only events of messages with one of these
	Machine bool     `json:"machine,omitempty"`
	Paused  bool     `json:"paused,omitempty"`
	// Disabled is set (with the reason) when the endpoint failed for too
	// long; it is cleared by enabling it again.
	Disabled       string    `json:"disabled,omitempty"`
	Secret         string    `json:"secret"`
	OldSecret      string    `json:"old_secret,omitempty"`
	OldSecretUntil time.Time `json:"old_secret_until"`
	FailingSince   time.Time `json:"failing_since"`
	Created        time.Time `json:"created"`
}

// RecordID implements Record.
func (w *Webhook) RecordID() (RecordKind, string, string) { return KindWebhook, w.ID, w.Account }
func (w *Webhook) declared() bool                         { return false }

// Session is a logged-in dashboard session, under the hash of its cookie.
type Session struct {
	ID       string    `json:"id"` // hex SHA-256 of the cookie value
	Login    string    `json:"login"`
	Account  string    `json:"account,omitempty"`
	CSRF     string    `json:"csrf"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	LastSeen time.Time `json:"last_seen"`
}

// RecordID implements Record.
func (s *Session) RecordID() (RecordKind, string, string) { return KindSession, s.ID, s.Account }
func (s *Session) declared() bool                         { return false }
