package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

func newDefaultLimiter() Limiter { return smtpd.NewAuthLimiter(0, 0, 0, 0) }

// Cookies. With Secure set the session cookie takes the __Host- prefix,
// which browsers bind to this host, path / and HTTPS.
const (
	cookieSession = "trackrelay_session"
	cookieLogin   = "trackrelay_login"   // the login form's CSRF token, before a session exists
	cookieAccount = "trackrelay_account" // an operator's chosen account (not a secret)
	touchEvery    = time.Minute          // LastSeen is written at most this often
)

// session is a logged-in person on one request.
type session struct {
	rec     *store.Session
	user    *store.User
	account string // the account acted for; "" = every account (operators)
	flash   string
}

// Principal is who the session acts as, for api.Ops.
func (s *session) Principal() *api.Principal {
	return &api.Principal{Account: s.account, Operator: s.user.Operator, User: s.user.Login}
}

// self is the principal for changes to the user's own record.
func (s *session) self() *api.Principal {
	return &api.Principal{Account: s.user.Account, Operator: s.user.Operator, User: s.user.Login}
}

// Login, Operator, Account and CSRF are for templates.
func (s *session) Login() string   { return s.user.Login }
func (s *session) Operator() bool  { return s.user.Operator }
func (s *session) Account() string { return s.account }
func (s *session) CSRF() string    { return s.rec.CSRF }

func (s *session) checkCSRF(tok string) bool {
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.rec.CSRF)) == 1
}

func (h *Handler) secure(r *http.Request) bool {
	return r.TLS != nil || (h.public != nil && h.public.Scheme == "https")
}

func (h *Handler) cookieName(r *http.Request) string {
	if h.secure(r) {
		return "__Host-" + cookieSession
	}
	return cookieSession
}

func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.secure(r)}
	switch {
	case maxAge < 0:
		c.MaxAge = -1
	case maxAge > 0:
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
}

func sessionID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// session returns the request's valid session, or nil. An expired or
// orphaned session record is deleted.
func (h *Handler) session(w http.ResponseWriter, r *http.Request) (*session, error) {
	c, err := r.Cookie(h.cookieName(r))
	if err != nil || len(c.Value) < 40 || len(c.Value) > 64 {
		return nil, nil
	}
	ctx := r.Context()
	id := sessionID(c.Value)
	rec, err := store.Get[store.Session](ctx, h.cfg.Store, store.KindSession, id)
	if errors.Is(err, store.ErrNotFound) {
		h.setCookie(w, r, h.cookieName(r), "", -1)
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	now := h.cfg.Now().UTC()
	u, err := store.Get[store.User](ctx, h.cfg.Store, store.KindUser, rec.Login)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if u == nil || u.Disabled || !now.Before(rec.Expires) || now.Sub(rec.LastSeen) >= h.cfg.SessionIdle ||
		u.PasswordChanged.After(rec.Created) || u.Account != rec.Account {
		_ = store.Delete(ctx, h.cfg.Store, store.KindSession, id)
		h.setCookie(w, r, h.cookieName(r), "", -1)
		return nil, nil
	}
	if now.Sub(rec.LastSeen) >= touchEvery {
		err := store.Update(ctx, h.cfg.Store, store.KindSession, id, false, func(s *store.Session) (*store.Session, error) {
			s.LastSeen = now
			return s, nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		rec.LastSeen = now
	}
	s := &session{rec: rec, user: u, account: u.Account}
	if u.Operator {
		s.account = ""
		if c, err := r.Cookie(cookieAccount); err == nil && c.Value != "" {
			if name, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
				if _, err := h.cfg.Store.GetRecord(ctx, store.KindAccount, string(name)); err == nil {
					s.account = string(name)
				}
			}
		}
	}
	return s, nil
}

// newSession stores a session for u and sets its cookie.
func (h *Handler) newSession(ctx context.Context, w http.ResponseWriter, r *http.Request, u *store.User) error {
	secret := randomToken()
	now := h.cfg.Now().UTC()
	rec := &store.Session{ID: sessionID(secret), Login: u.Login, Account: u.Account, CSRF: randomToken(),
		Created: now, Expires: now.Add(h.cfg.SessionMax), LastSeen: now}
	if err := store.Create(ctx, h.cfg.Store, rec); err != nil {
		return err
	}
	h.setCookie(w, r, h.cookieName(r), secret, h.cfg.SessionMax)
	return nil
}

// sweepSessions deletes expired sessions (at each login, so the table
// stays as small as the people using it).
func (h *Handler) sweepSessions(ctx context.Context) {
	ss, err := store.List[store.Session](ctx, h.cfg.Store, store.KindSession, "")
	if err != nil {
		return
	}
	now := h.cfg.Now().UTC()
	for i, s := range ss {
		if i >= 10000 {
			break
		}
		if !now.Before(s.Expires) || now.Sub(s.LastSeen) >= h.cfg.SessionIdle {
			_ = store.Delete(ctx, h.cfg.Store, store.KindSession, s.ID)
		}
	}
}

// clientIP is the address a login counts against: the peer, or behind the
// declared proxy, the last X-Forwarded-For entry (the one the proxy added).
func (h *Handler) clientIP(r *http.Request) netip.Addr {
	if h.public != nil {
		if xs := r.Header.Values("X-Forwarded-For"); len(xs) > 0 {
			parts := strings.Split(xs[len(xs)-1], ",")
			if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
				return a.Unmap()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

type loginView struct {
	Token, Next, Login, Error string
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if s, err := h.session(w, r); err == nil && s != nil {
		redirect(w, r, safeNext(r.URL.Query().Get("next")))
		return
	}
	h.showLogin(w, r, http.StatusOK, loginView{Next: safeNext(r.URL.Query().Get("next"))})
}

func (h *Handler) showLogin(w http.ResponseWriter, r *http.Request, status int, v loginView) {
	// One token per browser, kept while it lasts: two login pages open
	// (or a second request for one) must not void each other's form.
	if c, err := r.Cookie(cookieLogin); err == nil && len(c.Value) == 43 {
		v.Token = c.Value
	} else {
		v.Token = randomToken()
	}
	h.setCookie(w, r, cookieLogin, v.Token, time.Hour)
	h.render(w, r, status, "login", nil, "Log in", v)
}

// login checks a login and password: the login form's token must match
// its cookie, the limiter must let the address try, and the password must
// match; then the session starts.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	login, password := r.PostFormValue("login"), r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	c, err := r.Cookie(cookieLogin)
	tok := r.PostFormValue("token")
	if err != nil || tok == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(tok)) != 1 {
		h.showLogin(w, r, http.StatusForbidden, loginView{Next: next, Login: login, Error: "The login form expired. Please try again."})
		return
	}
	ip := h.clientIP(r)
	user := api.NormalLogin(login)
	if d, blocked := h.lim.Blocked(ip, user); blocked {
		h.log.Warn("dashboard login refused: blocked", "ip", ip.String())
		h.showLogin(w, r, http.StatusTooManyRequests, loginView{Next: next, Login: login, Error: blockedText(d)})
		return
	}
	u, err := h.cfg.Ops.CheckLogin(r.Context(), login, password)
	if errors.Is(err, api.ErrBadLogin) {
		delay, blocked, left := h.lim.Fail(ip, user)
		h.log.Warn("dashboard login failed", "login", clipText(user, 64), "ip", ip.String(), "delay", delay, "blocked", blocked)
		if blocked {
			h.showLogin(w, r, http.StatusTooManyRequests, loginView{Next: next, Login: login, Error: blockedText(left)})
			return
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
			}
		}
		h.showLogin(w, r, http.StatusUnauthorized, loginView{Next: next, Login: login, Error: "Wrong login or password."})
		return
	}
	if err != nil {
		h.log.Error("dashboard login check failed", "err", err)
		h.showLogin(w, r, http.StatusServiceUnavailable, loginView{Next: next, Login: login, Error: "The login could not be checked now; try again."})
		return
	}
	h.lim.Succeed(ip, user)
	h.sweepSessions(r.Context())
	if err := h.newSession(r.Context(), w, r, u); err != nil {
		h.log.Error("dashboard session could not be stored", "err", err)
		h.showLogin(w, r, http.StatusServiceUnavailable, loginView{Next: next, Login: login, Error: "The session could not be stored; try again."})
		return
	}
	h.setCookie(w, r, cookieLogin, "", -1)
	h.log.Info("dashboard login", "login", u.Login, "account", u.Account, "operator", u.Operator, "ip", ip.String())
	redirect(w, r, next)
}

func blockedText(d time.Duration) string {
	m := int((d + time.Minute - 1) / time.Minute)
	if m < 1 {
		m = 1
	}
	if m == 1 {
		return "Too many failed logins from your address. Try again in 1 minute."
	}
	return "Too many failed logins from your address. Try again in " + itoa(m) + " minutes."
}

func clipText(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func init() {
	pages = append(pages,
		page{"POST /logout", (*Handler).logout},
		page{"GET /password", (*Handler).passwordPage},
		page{"POST /password", (*Handler).changePassword},
		page{"POST /account", (*Handler).pickAccount},
	)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := store.Delete(r.Context(), h.cfg.Store, store.KindSession, s.rec.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	h.setCookie(w, r, h.cookieName(r), "", -1)
	h.log.Info("dashboard logout", "login", s.user.Login)
	redirect(w, r, "/login")
	return nil
}

func (h *Handler) passwordPage(w http.ResponseWriter, r *http.Request, s *session) error {
	h.render(w, r, http.StatusOK, "password", s, "Change password", map[string]any{})
	return nil
}

// changePassword sets a new password after checking the current one. The
// user's other sessions end (User.PasswordChanged); this one is replaced
// by a new one.
func (h *Handler) changePassword(w http.ResponseWriter, r *http.Request, s *session) error {
	cur, pw, again := r.PostFormValue("current"), r.PostFormValue("password"), r.PostFormValue("again")
	show := func(status int, msg string) error {
		h.render(w, r, status, "password", s, "Change password", map[string]any{"Error": msg})
		return nil
	}
	ip := h.clientIP(r)
	if d, blocked := h.lim.Blocked(ip, s.user.Login); blocked {
		return show(http.StatusTooManyRequests, blockedText(d))
	}
	if _, err := h.cfg.Ops.CheckLogin(r.Context(), s.user.Login, cur); err != nil {
		if errors.Is(err, api.ErrBadLogin) {
			h.lim.Fail(ip, s.user.Login)
			return show(http.StatusUnauthorized, "The current password is wrong.")
		}
		return err
	}
	if pw != again {
		return show(http.StatusBadRequest, "The new passwords differ.")
	}
	if _, err := h.cfg.Ops.UpdateUser(r.Context(), s.self(), s.user.Login, api.UserChange{Password: &pw}); err != nil {
		status, msg := api.ErrorStatus(err)
		if status >= 500 {
			return err
		}
		return show(status, msg)
	}
	_ = store.Delete(r.Context(), h.cfg.Store, store.KindSession, s.rec.ID)
	u, err := store.Get[store.User](r.Context(), h.cfg.Store, store.KindUser, s.user.Login)
	if err != nil {
		return err
	}
	if err := h.newSession(r.Context(), w, r, u); err != nil {
		return err
	}
	h.log.Info("dashboard password changed", "login", s.user.Login)
	redirect(w, r, "/?changed=password")
	return nil
}

// pickAccount sets the account an operator acts for ("" for all).
func (h *Handler) pickAccount(w http.ResponseWriter, r *http.Request, s *session) error {
	if !s.user.Operator {
		return &pageError{http.StatusForbidden, "Only operators pick an account."}
	}
	name := r.PostFormValue("account")
	if name != "" {
		if _, err := h.cfg.Store.GetRecord(r.Context(), store.KindAccount, name); err != nil {
			return badInput("No account %q.", name)
		}
	}
	c := &http.Cookie{Name: cookieAccount, Value: base64.RawURLEncoding.EncodeToString([]byte(name)), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.secure(r)}
	if name == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
	back := safeNext(r.PostFormValue("back"))
	redirect(w, r, back)
	return nil
}
