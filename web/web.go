// Package web is the dashboard: server-rendered HTML pages (html/template,
// assets embedded, no script needed) on the relay's internal listener,
// beside the REST API. People of an account and operators log in with a
// password (bcrypt); a session cookie (HttpOnly, SameSite=Lax, Secure over
// TLS) names a session record in the store. Every form carries the
// session's CSRF token and every POST must come from the dashboard's own
// origin (Fetch Metadata, Origin, Referer). Failed logins go through the
// same brute-force limiter as SMTP AUTH.
//
// Every figure comes from the store's aggregates, every change goes
// through api.Ops (the code the REST API runs), and log downloads are
// served by the REST API's own handler: the dashboard can do nothing the
// API cannot.
package web

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Limiter is the brute-force limiter logins pass through
// (smtpd.AuthLimiter).
type Limiter interface {
	Blocked(ip netip.Addr, user string) (time.Duration, bool)
	Fail(ip netip.Addr, user string) (delay time.Duration, blocked bool, left time.Duration)
	Succeed(ip netip.Addr, user string)
}

// Config is what New needs. Store, Ops and API are required.
type Config struct {
	Store store.DB
	// Ops makes every change (the REST API's own operations).
	Ops *api.Ops
	// API is the REST API's handler: log downloads are served by it.
	API     http.Handler
	Limiter Limiter // nil: a limiter of its own with the SMTP defaults
	Log     *slog.Logger

	// PublicURL is where people reach the dashboard when a TLS-terminating
	// proxy stands in front of the listener ("https://relay.example.com").
	// Then cookies are Secure, form posts must come from that origin, and
	// a login's address is the last X-Forwarded-For entry (the proxy's
	// own view of its client).
	PublicURL string
	// SessionIdle ends a session unused this long (default 2h);
	// SessionMax ends any session this old (default 24h).
	SessionIdle, SessionMax time.Duration
	// MaxSpan bounds a report's period (default 366 days).
	MaxSpan time.Duration
	Now     func() time.Time
}

// Handler is the dashboard.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	public *url.URL
	cop    *http.CrossOriginProtection
	lim    Limiter
}

// navItem is one entry of the navigation. Pages added later (domains,
// DKIM keys, webhooks, the suppression list) add theirs with
// nav = append(nav, ...) from their own file's init, beside their routes.
type navItem struct {
	Path, Label string
	Order       int
}

var nav = []navItem{
	{"/", "Overview", 10},
	{"/links", "Links", 20},
	{"/messages", "Messages", 30},
	{"/credentials", "Credentials", 40},
	{"/logs", "Logs", 50},
	{"/users", "People", 90},
}

// page is one dashboard route: pages of later features register theirs
// with pages = append(pages, ...) from their own file's init.
type page struct {
	pattern string // net/http.ServeMux pattern, method included
	handle  func(h *Handler, w http.ResponseWriter, r *http.Request, s *session) error
}

var pages []page

// New returns the dashboard's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Ops == nil || cfg.API == nil {
		return nil, errors.New("web: New needs a Store, Ops and the API handler")
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 2 * time.Hour
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 24 * time.Hour
	}
	if cfg.MaxSpan <= 0 {
		cfg.MaxSpan = 366 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, log: cfg.Log, mux: http.NewServeMux(), lim: cfg.Limiter, cop: http.NewCrossOriginProtection()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("web: public url %q: want https://host[:port]", cfg.PublicURL)
		}
		h.public = u
		if err := h.cop.AddTrustedOrigin(u.Scheme + "://" + u.Host); err != nil {
			return nil, fmt.Errorf("web: public url: %w", err)
		}
	}
	if h.lim == nil {
		h.lim = newDefaultLimiter()
	}
	if err := h.parseTemplates(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(staticFS, "static")
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(static)))
	h.mux.Handle("GET /favicon.ico", http.NotFoundHandler())
	h.mux.HandleFunc("GET /login", h.loginPage)
	h.mux.HandleFunc("POST /login", h.login)
	for _, p := range pages {
		h.mux.Handle(p.pattern, h.authed(p.handle))
	}
	h.mux.Handle("/", h.authed(func(h *Handler, w http.ResponseWriter, r *http.Request, s *session) error {
		return errNotFound
	}))
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	if r.Method == http.MethodPost {
		if err := h.sameOrigin(r); err != nil {
			h.log.Warn("dashboard post refused", "path", r.URL.Path, "err", err)
			http.Error(w, "This form was sent from another site: refused (CSRF).", http.StatusForbidden)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	h.mux.ServeHTTP(w, r)
}

// sameOrigin refuses a cross-site POST: by Fetch Metadata or Origin
// (net/http's CrossOriginProtection), and, when a browser sent neither, by
// Referer.
func (h *Handler) sameOrigin(r *http.Request) error {
	if err := h.cop.Check(r); err != nil {
		return err
	}
	if r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Origin") != "" {
		return nil
	}
	ref := r.Header.Get("Referer")
	if ref == "" {
		return nil // not a browser; the CSRF token still has to match
	}
	u, err := url.Parse(ref)
	if err != nil {
		return errors.New("web: bad referer")
	}
	if h.public != nil && u.Scheme == h.public.Scheme && u.Host == h.public.Host {
		return nil
	}
	if u.Host != r.Host {
		return errors.New("web: referer from another origin")
	}
	return nil
}

var errNotFound = &pageError{http.StatusNotFound, "There is no such page."}

// pageError is an error answered with its status and message.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return "web: " + e.msg }

func badInput(format string, args ...any) error {
	return &pageError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// authed serves a page to a valid session only: any other request is sent
// to the login page (and a POST without the session's CSRF token is
// refused).
func (h *Handler) authed(fn func(h *Handler, w http.ResponseWriter, r *http.Request, s *session) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s, err := h.session(w, r)
		if err != nil {
			h.log.Error("dashboard session check failed", "err", err)
			http.Error(w, "The session could not be checked; try again.", http.StatusServiceUnavailable)
			return
		}
		if s == nil {
			next := ""
			if r.Method == http.MethodGet && r.URL.Path != "/" {
				next = "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			http.Redirect(w, r, "/login"+next, http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && !s.checkCSRF(r.PostFormValue("csrf")) {
			h.log.Warn("dashboard post without the session's csrf token", "path", r.URL.Path, "login", s.user.Login)
			h.fail(w, r, s, &pageError{http.StatusForbidden, "This form has expired or came from elsewhere. Reload the page and try again."})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := fn(h, w, r.WithContext(ctx), s); err != nil {
			h.fail(w, r, s, err)
		}
	})
}

// fail answers an error with the error page.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	status, msg := http.StatusInternalServerError, "Something went wrong; it was logged."
	var pe *pageError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &pe):
		status, msg = pe.status, pe.msg
	case errors.As(err, &mbe):
		status, msg = http.StatusRequestEntityTooLarge, "The form is too large."
	default:
		status, msg = api.ErrorStatus(err)
		if status < 500 && msg != "" {
			msg = strings.ToUpper(msg[:1]) + msg[1:] + "."
		} else {
			msg = "Something went wrong; it was logged."
		}
	}
	if status >= 500 {
		h.log.Error("dashboard page failed", "path", r.URL.Path, "status", status, "err", err)
	}
	h.render(w, r, status, "error", s, "Error", map[string]any{"Status": status, "Message": msg})
}

// view is what every page's template gets.
type view struct {
	Title    string
	Path     string
	Nav      []navItem
	S        *session
	Accounts []string // for an operator's account picker
	Data     any
	Flash    string
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, title string, data any) {
	t := h.pages[name]
	if t == nil {
		h.log.Error("dashboard template missing", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v := &view{Title: title, Path: r.URL.Path, Nav: nav, S: s, Data: data}
	if s != nil && s.user.Operator {
		if as, err := h.cfg.Ops.Accounts(r.Context(), &api.Principal{Operator: true}); err == nil {
			for _, a := range as {
				v.Accounts = append(v.Accounts, a.Name)
			}
		}
	}
	if s != nil {
		v.Flash = s.flash
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		h.log.Error("dashboard template failed", "name", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// staticHandler serves the embedded assets with a day's caching.
func staticHandler(fsys fs.FS) http.Handler {
	fsrv := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=86400")
		fsrv.ServeHTTP(w, r)
	})
}

// redirect answers a POST with 303 to a page of the dashboard.
func redirect(w http.ResponseWriter, r *http.Request, path string) {
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// safeNext returns a local path to go to after the login, or "/".
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n\\") || strings.HasPrefix(next, "/login") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}
