package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// Defaults for the zero values of Config's limits.
const (
	DefaultMaxBodyBytes  = 32 << 20 // a JSON send request, base64 attachments included
	DefaultTimeout       = 30 * time.Second
	DefaultStreamTimeout = 15 * time.Minute
	DefaultMaxSpan       = 366 * 24 * time.Hour
	DefaultMaxSends      = 8
)

// Config is what New needs. Submitter, Store and Keys are required.
type Config struct {
	Submitter smtpd.Submitter
	// Store holds the logs, the aggregates and the records the API reads
	// and changes. Every call is scoped to the caller's account.
	Store store.DB
	Keys  KeyChecker
	// Domains checks click and bounce domains; nil turns checks off.
	Domains DomainChecker
	// DKIM holds the settings of DKIM key checks and records (dkim.go).
	DKIM DKIMSettings
	Log  *slog.Logger // nil: discard

	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Timeout bounds a non-streaming call; 0 means DefaultTimeout.
	Timeout time.Duration
	// StreamTimeout bounds a log download or event listing; 0 means
	// DefaultStreamTimeout. Each write must also progress within Timeout.
	StreamTimeout time.Duration
	// MaxSends bounds the sends handled at once (each holds its request
	// body and the built message in memory); 0 means DefaultMaxSends.
	// More wait, up to Timeout.
	MaxSends int
	// MaxSpan bounds the period of a stats, links, email or tags query; 0
	// means DefaultMaxSpan.
	MaxSpan time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Webhooks is the delivery engine (webhooks.go); nil: endpoint URLs
	// are held to the strict default policy.
	Webhooks WebhookEngine
	// Reload applies changed records (credentials, keys) to this node at
	// once (see Ops.Reload); nil: the directory's poll does.
	Reload func(context.Context) error
	// BcryptCost is the work factor of hashes made for new passwords and
	// keys; 0 means 12.
	BcryptCost int
}

// route is one entry of the API. All routes are registered from the routes
// table, so tests (and the OpenAPI check) can enumerate them.
type route struct {
	method  string
	pattern string // net/http.ServeMux pattern without the method
	mode    mode
	handle  func(s *server, w http.ResponseWriter, r *http.Request, p *Principal) error
}

// mode says how a route is bounded in time.
type mode uint8

const (
	// buffered: a read-only answer under http.TimeoutHandler, which
	// answers 503 at Timeout whatever the handler is doing.
	buffered mode = iota
	// stream: the answer streams, so TimeoutHandler (which buffers) cannot
	// be used: the context ends at StreamTimeout and each flush must
	// reach the client within Timeout.
	stream
	// direct: the context ends at Timeout and the handler answers by
	// itself. For calls that change state: a TimeoutHandler 503 could
	// come after the spool committed the message, and a client retrying
	// it would send it twice.
	direct
	// public: as buffered, and needs no API key (the handler gets a nil
	// Principal). Only for what every client may read: the API's own
	// document.
	public
)

var routes = []route{
	{http.MethodGet, "/v1/openapi.json", public, (*server).openapi},
	{http.MethodPost, "/v1/send", direct, (*server).send},
	{http.MethodGet, "/v1/logfiles", buffered, (*server).logDays},
	{http.MethodGet, "/v1/logfiles/{file}", stream, (*server).logFile},
	{http.MethodGet, "/v1/logfiles/{file}/header", stream, (*server).logFileHeader},
	{http.MethodGet, "/v1/logfiles/{file}/json", stream, (*server).logFileJSON},
	{http.MethodGet, "/v1/events/messageid/{id}", stream, (*server).eventsByID},
	{http.MethodGet, "/v1/events/email/{address}", stream, (*server).eventsByEmail},
	{http.MethodGet, "/v1/events/tags/{tags}", stream, (*server).eventsByTags},
	{http.MethodGet, "/v1/stats", buffered, (*server).stats},
	{http.MethodGet, "/v1/links", buffered, (*server).links},
}

type server struct {
	cfg   Config
	log   *slog.Logger
	sends chan struct{} // a slot per send in progress

	mu        sync.Mutex
	acctSends map[string]int // slots held per account; at most half of MaxSends each
}

// New returns the API's handler. It panics if a required dependency is
// missing (a programming error, found at startup).
func New(cfg Config) http.Handler {
	if cfg.Submitter == nil || cfg.Store == nil || cfg.Keys == nil {
		panic("api: New needs a Submitter, a Store and a KeyChecker")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StreamTimeout <= 0 {
		cfg.StreamTimeout = DefaultStreamTimeout
	}
	if cfg.MaxSpan <= 0 {
		cfg.MaxSpan = DefaultMaxSpan
	}
	if cfg.MaxSends <= 0 {
		cfg.MaxSends = DefaultMaxSends
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &server{cfg: cfg, log: cfg.Log, sends: make(chan struct{}, cfg.MaxSends), acctSends: map[string]int{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	byPattern := map[string][]route{}
	var order []string
	for _, rt := range routes {
		if _, ok := byPattern[rt.pattern]; !ok {
			order = append(order, rt.pattern)
		}
		byPattern[rt.pattern] = append(byPattern[rt.pattern], rt)
	}
	for _, pat := range order {
		mux.Handle(pat, s.dispatch(byPattern[pat]))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

// Principal is who an API key speaks for.
type Principal struct {
	Account string
	// Cred is the credential whose settings and upstream apply to mail
	// sent through the API, and whose name its events carry.
	Cred *smtpd.Credential
	// Operator keys (and operators in the dashboard) speak for every
	// account: account-scoped calls name one with ?account=NAME.
	Operator bool
	KeyID    string
	// User is the dashboard user acting, "" for an API key.
	User string
}

// httpError is an error with the status and the client-safe message it is
// answered with.
type httpError struct {
	status int
	msg    string
	err    error // the cause, logged, never shown
}

func (e *httpError) Error() string {
	if e.err != nil {
		return "api: " + e.msg + ": " + e.err.Error()
	}
	return "api: " + e.msg
}

func (e *httpError) Unwrap() error { return e.err }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, format, args...)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// changed tells the relay that a record changed.
func (s *server) changed() {
	if s.cfg.Reload != nil {
		if err := s.cfg.Reload(context.Background()); err != nil {
			s.log.Error("applying a changed record failed; the next poll retries", "err", err)
		}
	}
}

// dispatch serves one path pattern: method check, authentication, limits,
// then the route's handler, with one error boundary.
func (s *server) dispatch(rts []route) http.Handler {
	var allow []string
	for _, rt := range rts {
		allow = append(allow, rt.method)
	}
	allowed := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rt *route
		for i := range rts {
			if rts[i].method == r.Method || (r.Method == http.MethodHead && rts[i].method == http.MethodGet) {
				rt = &rts[i]
				break
			}
		}
		if rt == nil {
			w.Header().Set("Allow", allowed)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+allowed)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		start := time.Now()
		lw := &logWriter{ResponseWriter: w}
		w = lw
		account := ""
		defer func() {
			// The route's pattern, not the path: paths hold addresses.
			s.log.Info("api call", "method", r.Method, "route", rt.pattern, "account", account,
				"status", lw.status(), "bytes", lw.n, "duration", time.Since(start).Round(time.Millisecond))
		}()
		var p *Principal
		if rt.mode != public {
			var err error
			p, err = s.authenticate(r)
			if err == nil {
				p, err = s.scope(r, p)
			}
			if err != nil {
				s.fail(w, r, err, false)
				return
			}
			account = p.Account
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		switch rt.mode {
		case direct:
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
			defer cancel()
			if err := rt.handle(s, w, r.WithContext(ctx), p); err != nil {
				s.fail(w, r, err, false)
			}
			return
		case stream:
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StreamTimeout)
			defer cancel()
			sw := &streamWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.Timeout}
			sw.extend()
			err := rt.handle(s, sw, r.WithContext(ctx), p)
			if err == nil {
				err = sw.flush()
			}
			if err != nil {
				s.fail(sw, r, err, sw.wrote)
			}
			return
		}
		h := http.TimeoutHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := rt.handle(s, w, r, p); err != nil {
				s.fail(w, r, err, false)
			}
		}), s.cfg.Timeout, `{"error":"timeout"}`+"\n")
		h.ServeHTTP(&jsonTimeout{ResponseWriter: w}, r)
	})
}

// jsonTimeout makes TimeoutHandler's 503 a JSON answer.
type jsonTimeout struct {
	http.ResponseWriter
	wroteHeader bool
}

func (j *jsonTimeout) WriteHeader(code int) {
	if !j.wroteHeader && code == http.StatusServiceUnavailable && j.Header().Get("Content-Type") == "" {
		j.Header().Set("Content-Type", "application/json")
	}
	j.wroteHeader = true
	j.ResponseWriter.WriteHeader(code)
}

// fail answers err. Once a streaming answer has started, its status is
// sent: the connection is cut instead so the client sees a broken
// download, never a silently short one.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error, started bool) {
	var he *httpError
	status, msg := http.StatusInternalServerError, "internal error"
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		status, msg = he.status, he.msg
	case errors.As(err, &mbe):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusServiceUnavailable, "timeout"
	case errors.Is(err, context.Canceled):
		status, msg = 499, "client went away"
	}
	if status >= 500 {
		s.log.Error("api call failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else {
		s.log.Debug("api call refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if started {
		panic(http.ErrAbortHandler)
	}
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="trackrelay"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "10")
	}
	writeError(w, status, msg)
}

// streamWriter tracks whether a streaming answer has started, and pushes
// the write deadline forward on each flush so that a stalled client is cut
// off while a slow but moving one is not.
type streamWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	wrote   bool
	n       int // bytes since the last flush
}

// flushEvery is how many bytes a stream buffers before it flushes.
const flushEvery = 64 << 10

func (sw *streamWriter) WriteHeader(code int) {
	sw.wrote = true
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *streamWriter) Write(p []byte) (int, error) {
	sw.wrote = true
	n, err := sw.ResponseWriter.Write(p)
	sw.n += n
	if err == nil && sw.n >= flushEvery {
		err = sw.flush()
	}
	return n, err
}

func (sw *streamWriter) extend() {
	_ = sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout))
}

func (sw *streamWriter) flush() error {
	sw.n = 0
	if !sw.wrote {
		return nil
	}
	sw.extend()
	if err := sw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("api: flush: %w", err)
	}
	return nil
}

func (sw *streamWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// logWriter notes the status and size of an answer for the access log.
type logWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (lw *logWriter) WriteHeader(code int) {
	if lw.code == 0 {
		lw.code = code
	}
	lw.ResponseWriter.WriteHeader(code)
}

func (lw *logWriter) Write(p []byte) (int, error) {
	if lw.code == 0 {
		lw.code = http.StatusOK
	}
	n, err := lw.ResponseWriter.Write(p)
	lw.n += int64(n)
	return n, err
}

func (lw *logWriter) status() int {
	if lw.code == 0 {
		return http.StatusOK
	}
	return lw.code
}

func (lw *logWriter) Unwrap() http.ResponseWriter { return lw.ResponseWriter }
