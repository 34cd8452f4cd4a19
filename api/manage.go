package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/store"
)

// Ops is the one place that reads and changes the relay's records
// (accounts, users, SMTP credentials, API keys) and builds the dashboard's
// reports, for the REST API, the dashboard (package web) and the CLI
// alike: each checks what the principal may see and do, validates, and
// changes the store in one transaction, so the three cannot drift. Every
// operation is scoped to the principal's account; an operator acting for
// no account (Principal.Account "") sees every account. Errors carry the
// HTTP status and the client-safe message they are answered with
// (ErrorStatus).
type Ops struct {
	Store store.DB
	// Reload applies changed records to this node's SMTP front and key
	// ring at once (the relay's directory); other nodes see them within
	// its poll interval. nil: nothing to reload.
	Reload func(context.Context) error
	// BcryptCost is the work factor of new password and key hashes; 0
	// means 12.
	BcryptCost int
	Log        *slog.Logger // nil: discard
	Now        func() time.Time
}

func (o *Ops) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

func (o *Ops) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (o *Ops) cost() int {
	if o.BcryptCost != 0 {
		return o.BcryptCost
	}
	return 12
}

// changed runs Reload after a change; a failure is logged (the change is
// stored and the directory's poll applies it).
func (o *Ops) changed(ctx context.Context) {
	if o.Reload == nil {
		return
	}
	if err := o.Reload(ctx); err != nil {
		o.log().Error("reload after a record change failed; the poll will retry", "err", err)
	}
}

// ErrorStatus returns the HTTP status and the client-safe message of an
// error from Ops (500 and "internal error" for any other).
func ErrorStatus(err error) (int, string) {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "timeout"
	}
	return http.StatusInternalServerError, "internal error"
}

// storeErr maps the record layer's errors to answers.
func storeErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return &httpError{status: http.StatusNotFound, msg: what + " not found", err: err}
	case errors.Is(err, store.ErrDeclared):
		return &httpError{status: http.StatusConflict, msg: what + " is declared in the config file: change it there", err: err}
	case errors.Is(err, store.ErrExists):
		return &httpError{status: http.StatusConflict, msg: what + " already exists", err: err}
	}
	var he *httpError
	if errors.As(err, &he) {
		return err
	}
	return fmt.Errorf("api: %s: %w", what, err)
}

// hidden answers a record the principal may not see as if it were not
// there (err nil), and a failed read as it is.
func hidden(err error, what string) error {
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return &httpError{status: http.StatusNotFound, msg: what + " not found", err: err}
}

// sees reports whether p may see and change a record of account.
func sees(p *Principal, account string) bool {
	if p.Operator {
		return p.Account == "" || p.Account == account
	}
	return p.Account != "" && p.Account == account
}

// listViews lists the records of kind in account ("": every account's),
// keeps those keep allows (nil: all) and returns their views, in the
// store's order; never nil, so an empty list is [] in JSON.
func listViews[T any, P interface {
	*T
	store.Record
}, V any](ctx context.Context, st store.DB, kind store.RecordKind, account string, keep func(*T) bool, view func(*T) V) ([]V, error) {
	recs, err := store.List[T, P](ctx, st, kind, account)
	if err != nil {
		return nil, err
	}
	out := make([]V, 0, len(recs))
	for i := range recs {
		if keep == nil || keep(&recs[i]) {
			out = append(out, view(&recs[i]))
		}
	}
	return out, nil
}

// needAccount is the account a new record goes into.
func needAccount(p *Principal) (string, error) {
	if p.Account == "" {
		return "", badRequest("account: name the account (?account=NAME)")
	}
	return p.Account, nil
}

func needOperator(p *Principal) error {
	if !p.Operator {
		return errorf(http.StatusForbidden, "only an operator may do this")
	}
	return nil
}

// checkName checks a login, credential or account name: 1 to max bytes
// of printable text without spaces.
func checkName(field, s string, max int) error {
	if s == "" {
		return badRequest("%s: must not be empty", field)
	}
	if len(s) > max {
		return badRequest("%s: longer than %d bytes", field, max)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' || r == '\\' || r == '?' || r == '#' || r == '%'
	}) >= 0 {
		return badRequest("%s: %q has spaces, control characters or one of / \\ ? # %%", field, clip(s))
	}
	return nil
}

// MinPasswordLen bounds a password people choose; bcrypt reads at most 72
// bytes.
const MinPasswordLen = 8

func checkPassword(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return badRequest("password: at least %d characters", MinPasswordLen)
	case len(pw) > 72:
		return badRequest("password: at most 72 bytes (bcrypt ignores the rest)")
	}
	return nil
}

func randomText(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ----- accounts

// AccountSettings are an account's own settings (GET/PATCH /v1/account).
type AccountSettings struct {
	IP                  *string         `json:"ip,omitempty"`         // full, truncated or none
	UserAgent           *string         `json:"user_agent,omitempty"` // full or class
	Retention           *map[string]int `json:"retention,omitempty"`  // days per log
	ResignSigned        *bool           `json:"resign_signed,omitempty"`
	KeepSenderSignature *bool           `json:"keep_sender_signature,omitempty"`
	SoftBounceLimit     *int            `json:"soft_bounce_limit,omitempty"`
	SoftBounceWindow    *string         `json:"soft_bounce_window,omitempty"` // Go duration: "168h"
}

// AccountView is an account as the API shows it.
type AccountView struct {
	Name                string         `json:"name"`
	Declared            bool           `json:"declared"`
	Created             time.Time      `json:"created"`
	IP                  string         `json:"ip"`
	UserAgent           string         `json:"user_agent"`
	Retention           map[string]int `json:"retention"`
	ResignSigned        bool           `json:"resign_signed"`
	KeepSenderSignature bool           `json:"keep_sender_signature"`
	BounceDomain        string         `json:"bounce_domain,omitempty"`
	SoftBounceLimit     int            `json:"soft_bounce_limit"`
	SoftBounceWindow    string         `json:"soft_bounce_window"`
}

func viewAccount(a *store.Account) AccountView {
	v := AccountView{Name: a.Name, Declared: a.Declared, Created: a.Created, IP: a.IP, UserAgent: a.UserAgent,
		Retention: a.Retention, ResignSigned: a.ResignSigned, KeepSenderSignature: a.KeepSenderSignature,
		BounceDomain: a.BounceDomain, SoftBounceLimit: a.SoftBounceLimit, SoftBounceWindow: a.SoftBounceWindow.String()}
	if v.IP == "" {
		v.IP = store.KeepFull
	}
	if v.UserAgent == "" {
		v.UserAgent = store.KeepFull
	}
	if v.Retention == nil {
		v.Retention = map[string]int{}
	}
	return v
}

// Accounts lists the accounts: every one for an operator acting for no
// account, else the principal's own.
func (o *Ops) Accounts(ctx context.Context, p *Principal) ([]AccountView, error) {
	return listViews(ctx, o.Store, store.KindAccount, "", func(a *store.Account) bool { return sees(p, a.Name) }, viewAccount)
}

// Account returns one account the principal sees.
func (o *Ops) Account(ctx context.Context, p *Principal, name string) (*AccountView, error) {
	if !sees(p, name) {
		return nil, errorf(http.StatusNotFound, "account not found")
	}
	a, err := store.Get[store.Account](ctx, o.Store, store.KindAccount, name)
	if err != nil {
		return nil, storeErr(err, "account")
	}
	v := viewAccount(a)
	return &v, nil
}

// CreateAccount makes an account (operators only).
func (o *Ops) CreateAccount(ctx context.Context, p *Principal, name string, s AccountSettings) (*AccountView, error) {
	if err := needOperator(p); err != nil {
		return nil, err
	}
	if err := checkName("name", name, 128); err != nil {
		return nil, err
	}
	a := &store.Account{Name: name, Created: o.now()}
	if err := applySettings(a, &s); err != nil {
		return nil, err
	}
	if err := store.Create(ctx, o.Store, a); err != nil {
		return nil, storeErr(err, "account "+name)
	}
	o.log().Info("account created", "account", name, "by", actor(p))
	v := viewAccount(a)
	return &v, nil
}

// UpdateAccount changes an account's settings. An account's own key or
// user may change its privacy and retention settings.
func (o *Ops) UpdateAccount(ctx context.Context, p *Principal, name string, s AccountSettings) (*AccountView, error) {
	if !sees(p, name) || name == "" {
		return nil, errorf(http.StatusNotFound, "account not found")
	}
	var out *store.Account
	err := store.Update(ctx, o.Store, store.KindAccount, name, false, func(a *store.Account) (*store.Account, error) {
		if err := applySettings(a, &s); err != nil {
			return nil, err
		}
		out = a
		return a, nil
	})
	if err != nil {
		return nil, storeErr(err, "account")
	}
	o.log().Info("account changed", "account", name, "by", actor(p))
	o.changed(ctx)
	v := viewAccount(out)
	return &v, nil
}

func applySettings(a *store.Account, s *AccountSettings) error {
	if s.IP != nil {
		switch *s.IP {
		case store.KeepFull, store.KeepTruncated, store.KeepNone:
			a.IP = *s.IP
		default:
			return badRequest("ip: want full, truncated or none")
		}
	}
	if s.UserAgent != nil {
		switch *s.UserAgent {
		case store.KeepFull, store.KeepClass:
			a.UserAgent = *s.UserAgent
		default:
			return badRequest("user_agent: want full or class")
		}
	}
	if s.Retention != nil {
		r := map[string]int{}
		for log, days := range *s.Retention {
			if _, ok := store.LogFields[log]; !ok {
				return badRequest("retention: no log %q (want one of %s)", clip(log), strings.Join(store.Logs, ", "))
			}
			if days < 1 || days > 3650 {
				return badRequest("retention: %s: want 1 to 3650 days", log)
			}
			r[log] = days
		}
		a.Retention = r
	}
	if s.ResignSigned != nil {
		a.ResignSigned = *s.ResignSigned
	}
	if s.KeepSenderSignature != nil {
		a.KeepSenderSignature = *s.KeepSenderSignature
	}
	if s.SoftBounceLimit != nil {
		if *s.SoftBounceLimit < 0 || *s.SoftBounceLimit > 1000 {
			return badRequest("soft_bounce_limit: want 0 to 1000")
		}
		a.SoftBounceLimit = *s.SoftBounceLimit
	}
	if s.SoftBounceWindow != nil {
		d, err := time.ParseDuration(*s.SoftBounceWindow)
		if err != nil || d < 0 || d > 366*24*time.Hour {
			return badRequest("soft_bounce_window: want a duration such as 168h, at most a year")
		}
		a.SoftBounceWindow = d
	}
	return nil
}

// DeleteAccount removes an account (operators only) once nothing of it
// is left: its credentials, keys, users, domains, DKIM keys and webhooks
// go first, so that nothing is orphaned by mistake.
func (o *Ops) DeleteAccount(ctx context.Context, p *Principal, name string) error {
	if err := needOperator(p); err != nil {
		return err
	}
	if name == "" || !sees(p, name) {
		return errorf(http.StatusNotFound, "account not found")
	}
	for _, kind := range []store.RecordKind{store.KindCredential, store.KindAPIKey, store.KindUser, store.KindDomain, store.KindDKIMKey, store.KindWebhook} {
		recs, err := o.Store.ListRecords(ctx, kind, name)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			return errorf(http.StatusConflict, "account %s still has %d %s record(s): delete them first", name, len(recs), kind)
		}
	}
	if err := store.Delete(ctx, o.Store, store.KindAccount, name); err != nil {
		return storeErr(err, "account")
	}
	o.log().Info("account deleted", "account", name, "by", actor(p))
	o.changed(ctx)
	return nil
}

// accountExists checks that a record's account is there.
func (o *Ops) accountExists(ctx context.Context, name string) error {
	if _, err := o.Store.GetRecord(ctx, store.KindAccount, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return badRequest("account %q does not exist", clip(name))
		}
		return err
	}
	return nil
}

func actor(p *Principal) string {
	switch {
	case p.User != "":
		return "user " + p.User
	case p.KeyID != "":
		return "key " + p.KeyID
	}
	return "cli"
}

// ----- users

// UserView is a dashboard user as the API shows it (never its hash).
type UserView struct {
	Login           string    `json:"login"`
	Account         string    `json:"account,omitempty"`
	Operator        bool      `json:"operator"`
	Disabled        bool      `json:"disabled"`
	Declared        bool      `json:"declared"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
}

func viewUser(u *store.User) UserView {
	return UserView{Login: u.Login, Account: u.Account, Operator: u.Operator, Disabled: u.Disabled,
		Declared: u.Declared, Created: u.Created, PasswordChanged: u.PasswordChanged}
}

// NormalLogin is a login as users are stored under: trimmed, lower case.
func NormalLogin(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// NewUser is what CreateUser needs.
type NewUser struct {
	Login    string `json:"login"`
	Password string `json:"password"`
	// Operator makes an operator, who sees every account (operators only;
	// the user then has no account).
	Operator bool `json:"operator,omitempty"`
}

func (o *Ops) seesUser(p *Principal, u *store.User) bool {
	if u.Operator || u.Account == "" {
		return p.Operator && p.Account == ""
	}
	return sees(p, u.Account)
}

// Users lists the users the principal sees: an account's, or (an
// operator acting for no account) everyone, operators included.
func (o *Ops) Users(ctx context.Context, p *Principal) ([]UserView, error) {
	return listViews(ctx, o.Store, store.KindUser, "", func(u *store.User) bool { return o.seesUser(p, u) }, viewUser)
}

// User returns one user the principal sees.
func (o *Ops) User(ctx context.Context, p *Principal, login string) (*UserView, error) {
	u, err := store.Get[store.User](ctx, o.Store, store.KindUser, NormalLogin(login))
	if err != nil || !o.seesUser(p, u) {
		return nil, hidden(err, "user")
	}
	v := viewUser(u)
	return &v, nil
}

// CreateUser adds a dashboard user to the principal's account, or an
// operator.
func (o *Ops) CreateUser(ctx context.Context, p *Principal, nu NewUser) (*UserView, error) {
	login := NormalLogin(nu.Login)
	if err := checkName("login", login, 254); err != nil {
		return nil, err
	}
	if err := checkPassword(nu.Password); err != nil {
		return nil, err
	}
	u := &store.User{Login: login, Created: o.now()}
	if nu.Operator {
		if err := needOperator(p); err != nil {
			return nil, err
		}
		u.Operator = true
	} else {
		acct, err := needAccount(p)
		if err != nil {
			return nil, err
		}
		if err := o.accountExists(ctx, acct); err != nil {
			return nil, err
		}
		u.Account = acct
	}
	h, err := bcrypt.GenerateFromPassword([]byte(nu.Password), o.cost())
	if err != nil {
		return nil, fmt.Errorf("api: user: %w", err)
	}
	u.PasswordHash, u.PasswordChanged = string(h), u.Created
	if err := store.Create(ctx, o.Store, u); err != nil {
		return nil, storeErr(err, "user "+login)
	}
	o.log().Info("user created", "login", login, "account", u.Account, "operator", u.Operator, "by", actor(p))
	v := viewUser(u)
	return &v, nil
}

// UserChange is a change to a user: a new password (which ends every
// session made before it), enabling or disabling.
type UserChange struct {
	Password *string `json:"password,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// UpdateUser changes a user the principal sees.
func (o *Ops) UpdateUser(ctx context.Context, p *Principal, login string, ch UserChange) (*UserView, error) {
	login = NormalLogin(login)
	var hash string
	if ch.Password != nil {
		if err := checkPassword(*ch.Password); err != nil {
			return nil, err
		}
		h, err := bcrypt.GenerateFromPassword([]byte(*ch.Password), o.cost())
		if err != nil {
			return nil, fmt.Errorf("api: user: %w", err)
		}
		hash = string(h)
	}
	if cur, err := store.Get[store.User](ctx, o.Store, store.KindUser, login); err != nil || !o.seesUser(p, cur) {
		return nil, hidden(err, "user")
	}
	var out *store.User
	now := o.now()
	err := store.Update(ctx, o.Store, store.KindUser, login, false, func(u *store.User) (*store.User, error) {
		if !o.seesUser(p, u) {
			return nil, store.ErrNotFound
		}
		if ch.Disabled != nil {
			if *ch.Disabled && p.User == u.Login {
				return nil, badRequest("disabled: you cannot disable yourself")
			}
			u.Disabled = *ch.Disabled
		}
		if hash != "" {
			u.PasswordHash, u.PasswordChanged = hash, now
		}
		out = u
		return u, nil
	})
	if err != nil {
		return nil, storeErr(err, "user")
	}
	o.log().Info("user changed", "login", login, "password", hash != "", "by", actor(p))
	v := viewUser(out)
	return &v, nil
}

// DeleteUser removes a user the principal sees (and so every session of
// theirs: a session of a missing user is refused).
func (o *Ops) DeleteUser(ctx context.Context, p *Principal, login string) error {
	login = NormalLogin(login)
	if p.User == login {
		return badRequest("login: you cannot delete yourself")
	}
	u, err := store.Get[store.User](ctx, o.Store, store.KindUser, login)
	if err != nil || !o.seesUser(p, u) {
		return hidden(err, "user")
	}
	if err := o.deleteIn(ctx, store.KindUser, login, u.Account); err != nil {
		return storeErr(err, "user")
	}
	o.log().Info("user deleted", "login", login, "by", actor(p))
	return nil
}

// CheckLogin returns the user whose login and password these are, for the
// dashboard's login: ErrBadLogin when there is none (or it is disabled).
// The time taken does not say whether the login exists.
func (o *Ops) CheckLogin(ctx context.Context, login, password string) (*store.User, error) {
	login = NormalLogin(login)
	if login == "" || len(login) > 254 || password == "" || len(password) > 72 {
		return nil, ErrBadLogin
	}
	u, err := store.Get[store.User](ctx, o.Store, store.KindUser, login)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	hash := dummyHash()
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	if u == nil || !ok || u.Disabled {
		return nil, ErrBadLogin
	}
	return u, nil
}

// ErrBadLogin is CheckLogin's answer to a wrong login or password.
var ErrBadLogin = errors.New("api: wrong login or password")

// dummyHash is compared against when a login does not exist, so that a
// wrong login costs as long as a wrong password.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), 12)
	return h
})

// ----- SMTP credentials

// CredentialView is an SMTP credential as the API shows it.
type CredentialView struct {
	Username    string    `json:"username"`
	Account     string    `json:"account"`
	Clicks      bool      `json:"trackclicks"`
	Opens       bool      `json:"trackopens"`
	PreventScam bool      `json:"preventscam"`
	Text        bool      `json:"text"`
	ClickDomain string    `json:"click_domain"`
	Scheme      string    `json:"scheme"`
	Upstream    string    `json:"upstream,omitempty"`
	Disabled    bool      `json:"disabled"`
	Declared    bool      `json:"declared"`
	Created     time.Time `json:"created"`
	// Password is set only in the answer to a create, once.
	Password string `json:"password,omitempty"`
}

func viewCredential(c *store.Credential) CredentialView {
	return CredentialView{Username: c.Username, Account: c.Account, Clicks: c.Clicks, Opens: c.Opens,
		PreventScam: c.PreventScam, Text: c.Text, ClickDomain: c.ClickDomain, Scheme: c.Scheme, Upstream: c.Upstream,
		Disabled: c.Disabled, Declared: c.Declared, Created: c.Created}
}

// CredentialChange sets a credential's tracking and state; absent fields
// stay. In a create, Username is required and Password optional (one is
// made and shown once).
type CredentialChange struct {
	Username    string  `json:"username,omitempty"`
	Password    string  `json:"password,omitempty"`
	Clicks      *bool   `json:"trackclicks,omitempty"`
	Opens       *bool   `json:"trackopens,omitempty"`
	PreventScam *bool   `json:"preventscam,omitempty"`
	Text        *bool   `json:"text,omitempty"`
	ClickDomain *string `json:"click_domain,omitempty"`
	Scheme      *string `json:"scheme,omitempty"`
	Disabled    *bool   `json:"disabled,omitempty"`
}

// Credentials lists the principal's SMTP credentials (every account's for
// an operator acting for none).
func (o *Ops) Credentials(ctx context.Context, p *Principal) ([]CredentialView, error) {
	return listViews(ctx, o.Store, store.KindCredential, p.Account, func(c *store.Credential) bool { return sees(p, c.Account) }, viewCredential)
}

// Credential returns one credential the principal sees.
func (o *Ops) Credential(ctx context.Context, p *Principal, username string) (*CredentialView, error) {
	c, err := store.Get[store.Credential](ctx, o.Store, store.KindCredential, username)
	if err != nil || !sees(p, c.Account) {
		return nil, hidden(err, "credential")
	}
	v := viewCredential(c)
	return &v, nil
}

// ClickDomains lists the click domains a credential of account may use:
// the account's own click domain records.
func (o *Ops) ClickDomains(ctx context.Context, account string) ([]store.Domain, error) {
	ds, err := store.List[store.Domain](ctx, o.Store, store.KindDomain, account)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ds, func(d store.Domain) bool { return d.Kind != store.DomainClick || d.Account != account }), nil
}

func (o *Ops) applyCredential(ctx context.Context, c *store.Credential, ch *CredentialChange) error {
	set := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.Clicks, ch.Clicks)
	set(&c.Opens, ch.Opens)
	set(&c.PreventScam, ch.PreventScam)
	set(&c.Text, ch.Text)
	set(&c.Disabled, ch.Disabled)
	if ch.Scheme != nil {
		if *ch.Scheme != "https" && *ch.Scheme != "http" {
			return badRequest("scheme: want https or http")
		}
		c.Scheme = *ch.Scheme
	}
	if ch.ClickDomain != nil {
		d := strings.ToLower(strings.TrimSpace(*ch.ClickDomain))
		if d != "" {
			ds, err := o.ClickDomains(ctx, c.Account)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(ds, func(x store.Domain) bool { return x.Name == d }) {
				return badRequest("click_domain: %q is not a click domain of account %s (add it under domains first)", clip(d), c.Account)
			}
		}
		c.ClickDomain = d
	}
	return nil
}

// CreateCredential makes an SMTP credential in the principal's account.
// Without a password one is made; the answer holds it, once.
func (o *Ops) CreateCredential(ctx context.Context, p *Principal, ch CredentialChange) (*CredentialView, error) {
	acct, err := needAccount(p)
	if err != nil {
		return nil, err
	}
	if err := checkName("username", ch.Username, 128); err != nil {
		return nil, err
	}
	if err := o.accountExists(ctx, acct); err != nil {
		return nil, err
	}
	pw := ch.Password
	if pw == "" {
		pw = randomText(18)
	} else if err := checkPassword(pw); err != nil {
		return nil, err
	}
	c := &store.Credential{Username: ch.Username, Account: acct, Scheme: "https", Created: o.now()}
	if err := o.applyCredential(ctx, c, &ch); err != nil {
		return nil, err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), o.cost())
	if err != nil {
		return nil, fmt.Errorf("api: credential: %w", err)
	}
	c.PasswordHash = string(h)
	if err := store.Create(ctx, o.Store, c); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, errorf(http.StatusConflict, "username %s is taken", ch.Username)
		}
		return nil, storeErr(err, "credential")
	}
	o.log().Info("credential created", "credential", c.Username, "account", acct, "by", actor(p))
	o.changed(ctx)
	v := viewCredential(c)
	v.Password = pw
	return &v, nil
}

// UpdateCredential changes a credential's tracking settings or state. The
// next SMTP session uses them (this node at once, others within a second).
func (o *Ops) UpdateCredential(ctx context.Context, p *Principal, username string, ch CredentialChange) (*CredentialView, error) {
	if ch.Username != "" && ch.Username != username {
		return nil, badRequest("username: cannot be changed; make a new credential")
	}
	var hash string
	if ch.Password != "" {
		if err := checkPassword(ch.Password); err != nil {
			return nil, err
		}
		h, err := bcrypt.GenerateFromPassword([]byte(ch.Password), o.cost())
		if err != nil {
			return nil, fmt.Errorf("api: credential: %w", err)
		}
		hash = string(h)
	}
	// The click domain check reads records: done before the update's
	// transaction, on the credential's account.
	cur, err := store.Get[store.Credential](ctx, o.Store, store.KindCredential, username)
	if err != nil || !sees(p, cur.Account) {
		return nil, hidden(err, "credential")
	}
	probe := *cur
	if err := o.applyCredential(ctx, &probe, &ch); err != nil {
		return nil, err
	}
	var out *store.Credential
	err = store.Update(ctx, o.Store, store.KindCredential, username, false, func(c *store.Credential) (*store.Credential, error) {
		if !sees(p, c.Account) || c.Account != cur.Account {
			return nil, store.ErrNotFound
		}
		// The toggles onto the current record; the click domain as
		// checked above.
		if err := o.applyCredential(ctx, c, &CredentialChange{Clicks: ch.Clicks, Opens: ch.Opens, PreventScam: ch.PreventScam,
			Text: ch.Text, Scheme: ch.Scheme, Disabled: ch.Disabled}); err != nil {
			return nil, err
		}
		c.ClickDomain = probe.ClickDomain
		if hash != "" {
			c.PasswordHash = hash
		}
		out = c
		return c, nil
	})
	if err != nil {
		return nil, storeErr(err, "credential")
	}
	o.log().Info("credential changed", "credential", username, "account", out.Account, "by", actor(p))
	o.changed(ctx)
	v := viewCredential(out)
	return &v, nil
}

// DeleteCredential removes a credential the principal sees.
func (o *Ops) DeleteCredential(ctx context.Context, p *Principal, username string) error {
	c, err := store.Get[store.Credential](ctx, o.Store, store.KindCredential, username)
	if err != nil || !sees(p, c.Account) {
		return hidden(err, "credential")
	}
	if err := o.deleteIn(ctx, store.KindCredential, username, c.Account); err != nil {
		return storeErr(err, "credential")
	}
	o.log().Info("credential deleted", "credential", username, "account", c.Account, "by", actor(p))
	o.changed(ctx)
	return nil
}

// deleteIn deletes a record if it still belongs to account.
func (o *Ops) deleteIn(ctx context.Context, kind store.RecordKind, key, account string) error {
	return o.Store.UpdateRecord(ctx, kind, key, func(cur *store.RawRecord) (*store.RawRecord, error) {
		if cur == nil || cur.Account != account {
			return nil, store.ErrNotFound
		}
		var d struct {
			Declared bool `json:"declared"`
		}
		if err := json.Unmarshal(cur.Value, &d); err == nil && d.Declared {
			return nil, store.ErrDeclared
		}
		return nil, nil
	})
}

// ----- API keys

// APIKeyView is an API key as the API shows it (never its hash).
type APIKeyView struct {
	ID         string    `json:"id"`
	Account    string    `json:"account,omitempty"`
	Name       string    `json:"name,omitempty"`
	Credential string    `json:"credential,omitempty"`
	Operator   bool      `json:"operator"`
	Disabled   bool      `json:"disabled"`
	Declared   bool      `json:"declared"`
	Created    time.Time `json:"created"`
	// Key is set only in the answer to a create, once.
	Key string `json:"key,omitempty"`
}

func viewKey(k *store.APIKey) APIKeyView {
	return APIKeyView{ID: k.ID, Account: k.Account, Name: k.Name, Credential: k.Credential, Operator: k.Account == "",
		Disabled: k.Disabled, Declared: k.Declared, Created: k.Created}
}

// APIKeyChange names, points and enables or disables a key. In a create,
// Operator (operators only) makes a key for every account.
type APIKeyChange struct {
	Name       *string `json:"name,omitempty"`
	Credential *string `json:"credential,omitempty"`
	Disabled   *bool   `json:"disabled,omitempty"`
	Operator   bool    `json:"operator,omitempty"`
}

func (o *Ops) seesKey(p *Principal, k *store.APIKey) bool {
	if k.Account == "" {
		return p.Operator && p.Account == ""
	}
	return sees(p, k.Account)
}

// APIKeys lists the keys the principal sees.
func (o *Ops) APIKeys(ctx context.Context, p *Principal) ([]APIKeyView, error) {
	return listViews(ctx, o.Store, store.KindAPIKey, "", func(k *store.APIKey) bool { return o.seesKey(p, k) }, viewKey)
}

func (o *Ops) applyKey(ctx context.Context, k *store.APIKey, ch *APIKeyChange) error {
	if ch.Name != nil {
		if len(*ch.Name) > 128 || !utf8.ValidString(*ch.Name) || strings.IndexFunc(*ch.Name, unicode.IsControl) >= 0 {
			return badRequest("name: at most 128 printable characters")
		}
		k.Name = *ch.Name
	}
	if ch.Credential != nil {
		if *ch.Credential != "" {
			c, err := store.Get[store.Credential](ctx, o.Store, store.KindCredential, *ch.Credential)
			if err != nil || c.Account != k.Account {
				return badRequest("credential: %q is not a credential of this account", clip(*ch.Credential))
			}
		}
		k.Credential = *ch.Credential
	}
	if ch.Disabled != nil {
		k.Disabled = *ch.Disabled
	}
	return nil
}

// CreateAPIKey makes a REST API key; the answer holds it, once. It reads
// "trk_" + ID + "_" + secret.
func (o *Ops) CreateAPIKey(ctx context.Context, p *Principal, ch APIKeyChange) (*APIKeyView, error) {
	k := &store.APIKey{Created: o.now()}
	if ch.Operator {
		if err := needOperator(p); err != nil {
			return nil, err
		}
		if p.Account != "" {
			return nil, badRequest("operator: an operator key belongs to no account; leave ?account out")
		}
		if ch.Credential != nil && *ch.Credential != "" {
			return nil, badRequest("credential: an operator key sends no mail")
		}
	} else {
		acct, err := needAccount(p)
		if err != nil {
			return nil, err
		}
		if err := o.accountExists(ctx, acct); err != nil {
			return nil, err
		}
		k.Account = acct
	}
	if err := o.applyKey(ctx, k, &ch); err != nil {
		return nil, err
	}
	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	k.ID = hex.EncodeToString(idb)
	key := KeyPrefix + k.ID + "_" + randomText(32)
	h, err := bcrypt.GenerateFromPassword([]byte(key), o.cost())
	if err != nil {
		return nil, fmt.Errorf("api: key: %w", err)
	}
	k.Hash = string(h)
	if err := store.Create(ctx, o.Store, k); err != nil {
		return nil, storeErr(err, "key")
	}
	o.log().Info("api key created", "key", k.ID, "account", k.Account, "by", actor(p))
	o.changed(ctx)
	v := viewKey(k)
	v.Key = key
	return &v, nil
}

// UpdateAPIKey renames, repoints, enables or disables a key.
func (o *Ops) UpdateAPIKey(ctx context.Context, p *Principal, id string, ch APIKeyChange) (*APIKeyView, error) {
	cur, err := store.Get[store.APIKey](ctx, o.Store, store.KindAPIKey, id)
	if err != nil || !o.seesKey(p, cur) {
		return nil, hidden(err, "key")
	}
	probe := *cur
	if err := o.applyKey(ctx, &probe, &ch); err != nil {
		return nil, err
	}
	var out *store.APIKey
	err = store.Update(ctx, o.Store, store.KindAPIKey, id, false, func(k *store.APIKey) (*store.APIKey, error) {
		if k.Account != cur.Account {
			return nil, store.ErrNotFound
		}
		k.Name, k.Credential, k.Disabled = probe.Name, probe.Credential, probe.Disabled
		out = k
		return k, nil
	})
	if err != nil {
		return nil, storeErr(err, "key")
	}
	o.log().Info("api key changed", "key", id, "account", out.Account, "by", actor(p))
	o.changed(ctx)
	v := viewKey(out)
	return &v, nil
}

// DeleteAPIKey removes a key the principal sees.
func (o *Ops) DeleteAPIKey(ctx context.Context, p *Principal, id string) error {
	k, err := store.Get[store.APIKey](ctx, o.Store, store.KindAPIKey, id)
	if err != nil || !o.seesKey(p, k) {
		return hidden(err, "key")
	}
	if p.KeyID == id {
		return badRequest("id: a key cannot delete itself")
	}
	if err := o.deleteIn(ctx, store.KindAPIKey, id, k.Account); err != nil {
		return storeErr(err, "key")
	}
	o.log().Info("api key deleted", "key", id, "account", k.Account, "by", actor(p))
	o.changed(ctx)
	return nil
}
