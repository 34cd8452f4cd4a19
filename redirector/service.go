package redirector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"

	"github.com/trackrelay/trackrelay/store"
)

// Options configure a whole running redirector: the handler, its journal,
// listeners and shipper. Handler.Journal is ignored: the Service opens its
// own at JournalPath.
type Options struct {
	Handler     Config
	JournalPath string
	// Listen is the public address; HTTPS when TLSCert and TLSKey are set
	// and there is no TLSListen. TLSListen is the HTTPS address, served
	// with the files, ACME, or both (acme.go); Listen is then plain HTTP.
	Listen, TLSListen string
	TLSCert, TLSKey   string
	ACME              *ACME
	// Journal tunes the journal: durability, flush interval and the hits'
	// floor on free disk space.
	Journal store.JournalOptions
	// AdminListen serves /healthz, /readyz and /metrics; "" = none.
	AdminListen string
	// Gatherer is what /metrics shows; nil is the default registry.
	Gatherer prometheus.Gatherer
	// Sink receives shipped hits: an *HTTPSink, or the relay in-process.
	Sink         Sink
	ShipBatch    int
	ShipInterval time.Duration
}

// Service is a running redirector. Start it with Start, stop it with
// Shutdown.
type Service struct {
	h        *Handler
	journal  *store.Journal
	shipper  *Shipper
	srv      *fasthttp.Server
	admin    *http.Server
	ln, aln  net.Listener
	pub      *public // the public listeners and their TLS (acme.go)
	log      *slog.Logger
	stopShip context.CancelFunc
	wg       sync.WaitGroup
	errc     chan error
	once     sync.Once
}

// Start opens the journal, binds the listeners and starts serving and
// shipping. Errors from serving later arrive on Err.
func Start(o Options) (s *Service, err error) {
	log := o.Handler.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		o.Handler.Logger = log
	}
	if o.Sink == nil {
		return nil, errors.New("redirector: no sink to ship hits to")
	}
	j, err := store.OpenJournalWith(o.JournalPath, o.Journal)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = j.Close()
		}
	}()
	o.Handler.Journal = j
	h, err := New(o.Handler)
	if err != nil {
		return nil, err
	}
	sh, err := NewShipper(ShipperConfig{
		Journal: j, Sink: o.Sink, Batch: o.ShipBatch, Interval: o.ShipInterval,
		Logger: log, Handler: h,
	})
	if err != nil {
		return nil, err
	}
	s = &Service{h: h, journal: j, shipper: sh, log: log, errc: make(chan error, 3)}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	s.srv = NewHTTPServer(h, log)
	if s.pub, err = openPublic(o, h, log); err != nil {
		return nil, err
	}
	s.ln = s.pub.ln
	s.srv.Handler = s.pub.handler(h, s.srv.Handler)
	if o.AdminListen != "" {
		if s.aln, err = net.Listen("tcp", o.AdminListen); err != nil {
			s.pub.close()
			return nil, fmt.Errorf("redirector: admin listen: %w", err)
		}
		g := o.Gatherer
		if g == nil {
			g = prometheus.DefaultGatherer
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errLog}))
		mux.Handle("/healthz", h.HealthHandler())
		mux.Handle("/readyz", h.HealthHandler())
		s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	}
	shipCtx, cancel := context.WithCancel(context.Background())
	s.stopShip = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = sh.Run(shipCtx)
	}()
	for _, ln := range s.pub.serve {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// An error once shutting down is the listener closing under
			// Serve (Shutdown closes them itself, in case Serve had not
			// registered it with fasthttp yet).
			if err := s.srv.Serve(ln); err != nil && !s.h.draining.Load() {
				select {
				case s.errc <- fmt.Errorf("redirector: serve: %w", err):
				default:
				}
			}
		}()
	}
	if s.admin != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.admin.Serve(s.aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.errc <- fmt.Errorf("redirector: admin serve: %w", err)
			}
		}()
	}
	log.Info("redirector listening", "addr", s.ln.Addr().String(), "tls_addr", s.TLSAddr(), "tls", s.pub.tls, "acme", o.ACME != nil,
		"pending_hits", j.Len(), "durability", o.Journal.Durability.String())
	return s, nil
}

// NewHTTPServer returns the HTTP server for h with the redirector's
// limits: request headers (and so the tracked URL) up to 16 KiB, no
// request bodies to speak of, read, write and idle timeouts, and panics
// answered 500 instead of ending the process. Serve it on a listener (a
// TLS listener for HTTPS); stop it with ShutdownWithContext.
//
// It is fasthttp rather than net/http because the redirector's whole job
// is one small answer per request: net/http's per-request allocations and
// its background read goroutine cost more CPU than verifying the token
// and journaling the hit together (see README, "Performance").
func NewHTTPServer(h *Handler, log *slog.Logger) *fasthttp.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &fasthttp.Server{
		Handler:               h.serveRecover,
		ErrorHandler:          h.badRequest,
		Logger:                fastLogger{log},
		ReadBufferSize:        maxRequestHeader,
		Concurrency:           maxConns,
		MaxRequestBodySize:    maxRequestBody,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		// Requests carry tokens; fasthttp's own error logs must not.
		SecureErrorLogMessage:        true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
	}
}

// Request bounds: the header block (request line included; nginx allows
// 8 KiB for one line), the body, and open connections (each holds a read
// buffer of maxRequestHeader while it lives; idle ones close after
// IdleTimeout).
const (
	maxRequestHeader = 16 << 10
	maxRequestBody   = 4 << 10
	maxConns         = 64 << 10
)

// fastLogger sends fasthttp's own messages to slog at warn.
type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "msg", fmt.Sprintf(format, args...))
}

// Addr is the public listener's address.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// TLSAddr is the HTTPS listener's address (Options.TLSListen), nil
// without one.
func (s *Service) TLSAddr() net.Addr {
	if s.pub.tln == nil {
		return nil
	}
	return s.pub.tln.Addr()
}

// AdminAddr is the admin listener's address, nil without one.
func (s *Service) AdminAddr() net.Addr {
	if s.aln == nil {
		return nil
	}
	return s.aln.Addr()
}

// Handler is the public handler.
func (s *Service) Handler() *Handler { return s.h }

// Journal is the service's journal.
func (s *Service) Journal() *store.Journal { return s.journal }

// Err delivers a serving error (a listener that failed); it is closed by
// Shutdown.
func (s *Service) Err() <-chan error { return s.errc }

// Shutdown stops the redirector gracefully: /readyz fails, the listeners
// close, in-flight requests finish (their hits are journaled), the shipper
// makes a final attempt to ship everything, and the journal is closed.
// Hits that could not be shipped before ctx ended stay journaled for the
// next start.
func (s *Service) Shutdown(ctx context.Context) error {
	var errs []error
	s.once.Do(func() {
		s.h.SetDraining(true)
		if err := s.srv.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("redirector: shutdown: %w", err))
		}
		// fasthttp closes only the listeners its Serve has registered: one
		// whose Serve had not yet started would accept for ever.
		s.pub.closeListeners()
		if s.admin != nil {
			_ = s.admin.Close()
		}
		s.stopShip()
		s.wg.Wait()
		s.pub.stop()
		if err := s.shipper.Flush(ctx); err != nil {
			s.log.Warn("final ship incomplete; hits stay journaled", "err", err)
		}
		if err := s.journal.Close(); err != nil {
			errs = append(errs, err)
		}
		close(s.errc) // every sender has returned
	})
	return errors.Join(errs...)
}
