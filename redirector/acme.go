package redirector

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/trackrelay/trackrelay/redirector/domaincheck"
)

// ACME gets the HTTPS listener's certificates over ACME (RFC 8555) with
// certmagic: on demand, at the first handshake for a name, and only for a
// click domain (Config.Domains or Config.Policy, cached), so that a stranger
// pointing a name at the redirector cannot make it ask the CA for anything.
// Certificates are renewed at a handshake inside their renewal window and
// kept in Storage, so a restart reuses them. Challenges are answered on the
// public listeners: TLS-ALPN-01 (RFC 8737) on TLSListen, HTTP-01 on Listen.
type ACME struct {
	// Directory is the ACME server's directory URL ([acme] directory).
	Directory string
	// Roots are trusted for the ACME server's own HTTPS ([acme] ca_file
	// added to the system's); nil: the system's.
	Roots *x509.CertPool
	// Email is the ACME account's contact; may be empty.
	Email string
	// Storage keeps certificates, their keys, the ACME account and the
	// challenge tokens in flight. Redirectors that share it share all of
	// them, and any of them answers a challenge another one started.
	// nil: certmagic's FileStorage in StorageDir, which may be a folder
	// every redirector mounts (it locks with lock files). A store-backed
	// certmagic.Storage fits here unchanged.
	Storage    certmagic.Storage
	StorageDir string
	// RenewalWindowRatio is the part of a certificate's lifetime, at its
	// end, in which it is renewed; 0: certmagic's (a third).
	RenewalWindowRatio float64
	// RenewCheckInterval is how often certmagic looks at its certificates;
	// a certificate with less than five of these left is renewed at once.
	// 0: certmagic's (ten minutes). Short-lived test certificates need a
	// short one.
	RenewCheckInterval time.Duration
	// DisableHTTPChallenge and DisableTLSALPNChallenge turn one challenge
	// type off (HTTP-01 is off anyway without a plain HTTP listener).
	DisableHTTPChallenge    bool
	DisableTLSALPNChallenge bool
}

// acmeChallengePrefix starts the HTTP-01 challenge path (RFC 8555 §8.3).
var acmeChallengePrefix = []byte("/.well-known/acme-challenge/")

// public holds the public listeners and what serves their TLS.
type public struct {
	ln     net.Listener // Listen: plain HTTP (HTTPS with files when there is no TLSListen)
	tln    net.Listener // TLSListen: HTTPS; nil without one
	serve  []net.Listener
	tls    bool // some listener is HTTPS
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	m      *tlsMetrics
}

// openPublic binds the public listeners and builds their TLS: certificate
// files (Options.TLSCert/TLSKey), ACME, or both on TLSListen, the files
// serving the names they cover and ACME the rest. Without TLSListen,
// Listen is HTTPS when files are given, as it always was.
func openPublic(o Options, h *Handler, log *slog.Logger) (_ *public, err error) {
	var static []tls.Certificate
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("redirector: tls: %w", err)
		}
		static = append(static, cert)
	}
	if o.ACME != nil && o.TLSListen == "" {
		return nil, errors.New("redirector: ACME needs a TLS listener (tls_listen)")
	}
	if o.TLSListen != "" && o.ACME == nil && len(static) == 0 {
		return nil, errors.New("redirector: the TLS listener needs certificate files or ACME")
	}
	m, err := newTLSMetrics(o.Handler.Registerer)
	if err != nil {
		return nil, err
	}
	failed := func(remote net.Addr, err error) {
		m.handshakeFailures.Inc()
		log.Debug("tls handshake failed", "remote", remote.String(), "err", err)
	}
	p := &public{m: m}
	defer func() { // p, not the result, which a failing return sets to nil
		if err != nil {
			p.close()
		}
	}()
	if p.ln, err = net.Listen("tcp", o.Listen); err != nil {
		return nil, fmt.Errorf("redirector: listen: %w", err)
	}
	if o.TLSListen == "" {
		if len(static) == 0 {
			p.serve = []net.Listener{p.ln}
			return p, nil
		}
		p.tls = true
		p.serve = []net.Listener{quietTLS(p.ln, staticTLS(static), failed)}
		return p, nil
	}
	if p.tln, err = net.Listen("tcp", o.TLSListen); err != nil {
		return nil, fmt.Errorf("redirector: tls listen: %w", err)
	}
	p.tls = true
	tc := staticTLS(static)
	if o.ACME != nil {
		if tc, err = p.startACME(o, h, static, log); err != nil {
			return nil, err
		}
	}
	p.serve = []net.Listener{p.ln, quietTLS(p.tln, tc, failed)}
	return p, nil
}

func staticTLS(certs []tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: certs, NextProtos: []string{"http/1.1"}}
}

// startACME sets certmagic up over the bound listeners and returns the TLS
// listener's config.
func (p *public) startACME(o Options, h *Handler, static []tls.Certificate, log *slog.Logger) (*tls.Config, error) {
	a := o.ACME
	if a.Directory == "" {
		return nil, errors.New("redirector: acme: no directory URL")
	}
	storage := a.Storage
	if storage == nil {
		if a.StorageDir == "" {
			return nil, errors.New("redirector: acme: no storage")
		}
		storage = &certmagic.FileStorage{Path: a.StorageDir}
	}
	events := p.m.certificates
	alog := log.With("component", "acme")
	zl := zapLogger(alog)
	var magic *certmagic.Config
	p.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		RenewCheckInterval: a.RenewCheckInterval,
		Logger:             zl,
	})
	magic = certmagic.New(p.cache, certmagic.Config{
		Storage:            storage,
		Logger:             zl,
		RenewalWindowRatio: a.RenewalWindowRatio,
		OnDemand:           &certmagic.OnDemandConfig{DecisionFunc: h.certAllowed},
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			switch event {
			case "cert_obtained":
				kind := "obtained"
				if r, _ := data["renewal"].(bool); r {
					kind = "renewed"
				}
				events.WithLabelValues(kind).Inc()
				alog.Info("certificate "+kind, "identifier", data["identifier"])
			case "cert_failed":
				events.WithLabelValues("failed").Inc()
				alog.Warn("certificate not obtained", "identifier", data["identifier"], "err", data["error"])
			}
			return nil
		},
	})
	p.magic = magic
	iss := certmagic.ACMEIssuer{
		CA:                      a.Directory,
		Email:                   a.Email,
		Agreed:                  true, // configuring a directory is agreeing to its terms (example.toml says so)
		DisableHTTPChallenge:    a.DisableHTTPChallenge,
		DisableTLSALPNChallenge: a.DisableTLSALPNChallenge,
		// The challenges are answered on our own listeners. certmagic
		// starts a solver server only where it can bind the port; on
		// the wildcard address with our ports it never can, so it never
		// listens anywhere of its own.
		AltHTTPPort:    p.ln.Addr().(*net.TCPAddr).Port,
		AltTLSALPNPort: p.tln.Addr().(*net.TCPAddr).Port,
		TrustedRoots:   a.Roots,
		Logger:         zl,
	}
	p.issuer = certmagic.NewACMEIssuer(magic, iss)
	magic.Issuers = []certmagic.Issuer{p.issuer}
	for _, c := range static {
		if _, err := magic.CacheUnmanagedTLSCertificate(context.Background(), c, nil); err != nil {
			return nil, fmt.Errorf("redirector: tls: %w", err)
		}
	}
	tc := magic.TLSConfig()
	tc.MinVersion = tls.VersionTLS12
	tc.NextProtos = []string{"http/1.1", "acme-tls/1"}
	return tc, nil
}

// certAllowed is certmagic's on-demand decision: a certificate only for a
// click domain, static or admitted by the policy.
func (h *Handler) certAllowed(ctx context.Context, name string) error {
	host := canonicalRequestHost(name)
	if _, err := domaincheck.Normalize(host); err != nil {
		// IP addresses, single labels such as localhost: no CA certifies them.
		return fmt.Errorf("redirector: no certificate for %q: %w", clipName(name), err)
	}
	for _, d := range h.domains {
		if d.host == host {
			return nil
		}
	}
	if h.dyn != nil && h.dyn.allowed(ctx, host) {
		return nil
	}
	return fmt.Errorf("redirector: %q is not a click domain", clipName(name))
}

func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// handler returns the public listeners' request handler: next, and on
// plain HTTP the ACME HTTP-01 challenge path answered by certmagic.
func (p *public) handler(h *Handler, next fasthttp.RequestHandler) fasthttp.RequestHandler {
	if p.issuer == nil || p.issuer.DisableHTTPChallenge {
		return next
	}
	notFound := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.m.count("not_found_path")
		plain(w, http.StatusNotFound, notFoundBody)
	})
	acme := fasthttpadaptor.NewFastHTTPHandler(p.issuer.HTTPChallengeHandler(notFound))
	return func(ctx *fasthttp.RequestCtx) {
		if ctx.IsTLS() || !bytes.HasPrefix(ctx.Request.Header.RequestURI(), acmeChallengePrefix) {
			next(ctx)
			return
		}
		defer func() {
			if v := recover(); v != nil {
				h.log.Error("redirector: panic answering an ACME challenge", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				ctx.Response.Reset()
				plainFast(ctx, fasthttp.StatusInternalServerError, "500 internal server error\n")
			}
		}()
		h.m.count("acme_challenge")
		acme(ctx)
	}
}

// stop ends certmagic's maintenance; the listeners are closed by the
// server's shutdown.
func (p *public) stop() {
	if p.cache != nil {
		p.cache.Stop()
		p.cache = nil
	}
}

// close closes the listeners (on a failed start) and stops certmagic.
func (p *public) close() {
	p.closeListeners()
	p.stop()
}

// closeListeners closes the public listeners; closing one twice is
// harmless.
func (p *public) closeListeners() {
	if p.ln != nil {
		p.ln.Close()
	}
	if p.tln != nil {
		p.tln.Close()
	}
}

// tlsMetrics count what the HTTPS side does.
type tlsMetrics struct {
	certificates      *prometheus.CounterVec
	handshakeFailures prometheus.Counter
}

func newTLSMetrics(reg prometheus.Registerer) (*tlsMetrics, error) {
	m := &tlsMetrics{
		certificates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_redirector_certificates_total",
			Help: "ACME certificate events: obtained, renewed, failed.",
		}, []string{"event"}),
		handshakeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackrelay_redirector_tls_handshake_failures_total",
			Help: "TLS handshakes that failed: no certificate for the name (not a click domain), or a bad client.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.certificates, m.handshakeFailures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("redirector: metrics: %w", err)
			}
		}
	}
	return m, nil
}

// quietTLS is tls.NewListener, but a failed handshake is counted and
// logged at debug and the connection then reads as closed, instead of
// fasthttp logging it at warn: a public HTTPS port meets scanners and
// names that are no click domain all day.
func quietTLS(ln net.Listener, cfg *tls.Config, failed func(net.Addr, error)) net.Listener {
	return &tlsListener{Listener: ln, cfg: cfg, failed: failed}
}

type tlsListener struct {
	net.Listener
	cfg    *tls.Config
	failed func(net.Addr, error)
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tlsConn{Conn: tls.Server(c, l.cfg), failed: l.failed}, nil
}

// tlsConn is a server *tls.Conn whose failed handshake ends it quietly.
// fasthttp calls Handshake, ignores its error, and then reads.
type tlsConn struct {
	*tls.Conn
	failed func(net.Addr, error)
	bad    atomic.Bool
}

func (c *tlsConn) Handshake() error {
	err := c.Conn.Handshake()
	if err != nil && !c.bad.Swap(true) {
		c.failed(c.RemoteAddr(), err)
	}
	return err
}

func (c *tlsConn) Read(b []byte) (int, error) {
	if c.bad.Load() {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(b)
	if err != nil && !c.Conn.ConnectionState().HandshakeComplete {
		if !c.bad.Swap(true) {
			c.failed(c.RemoteAddr(), err)
		}
		return n, io.EOF
	}
	return n, err
}
