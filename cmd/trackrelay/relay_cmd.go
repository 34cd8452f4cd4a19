package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/webhook"
)

func init() {
	commands["serve"] = command{cmdServe, "run the relay and the redirector in one process (--dev for a quick start)"}
	commands["relay"] = command{cmdRelay, "run the relay: SMTP in, spool, delivery, internal API"}
}

// serveFlags are the flags of serve and relay.
type serveFlags struct {
	serve     bool // set by cmdServe: also run the redirector (issue 5)
	config    string
	dev       bool
	data      string
	smtpAddr  string
	httpAddr  string
	apiAddr   string
	upstream  string
	mxAddr    string
	logFormat string
	logLevel  string
}

func parseServeFlags(name string, args []string, io stdio, dev bool) (*serveFlags, error) {
	f := &serveFlags{}
	fs := newFlags(name, io)
	fs.StringVar(&f.config, "config", "", "config file (TOML)")
	if dev {
		fs.BoolVar(&f.dev, "dev", false, "development mode: generate and keep a config in --data")
		fs.StringVar(&f.httpAddr, "http-addr", "", "redirector address (dev default 127.0.0.1:8080)")
	}
	fs.StringVar(&f.data, "data", "", "data folder (with --dev: holds the generated config too)")
	fs.StringVar(&f.smtpAddr, "smtp-addr", "", "SMTP listener address, overriding the config's listeners (dev default 127.0.0.1:2525)")
	fs.StringVar(&f.apiAddr, "api-addr", "", "internal API listener (health, metrics; default 127.0.0.1:8025)")
	fs.StringVar(&f.upstream, "upstream", "", "deliver to smtp://host:port, smtps://host:port or a folder path")
	fs.StringVar(&f.mxAddr, "mx-addr", "", "MX listener address for mail that comes back, overriding [inbound] listen (dev default 127.0.0.1:2530)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(io.err, "trackrelay %s: unexpected argument %q\n", name, fs.Arg(0))
		return nil, errUsage
	}
	if f.dev == (f.config != "") {
		fmt.Fprintf(io.err, "trackrelay %s: give --config FILE", name)
		if dev {
			fmt.Fprint(io.err, " or --dev --data DIR")
		}
		fmt.Fprintln(io.err)
		return nil, errUsage
	}
	if f.dev && f.data == "" {
		fmt.Fprintf(io.err, "trackrelay %s: --dev needs --data DIR\n", name)
		return nil, errUsage
	}
	return f, nil
}

func newLogger(f *serveFlags, io stdio) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(io.err, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(io.err, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f.logFormat)
}

func cmdServe(ctx context.Context, args []string, io stdio) error {
	f, err := parseServeFlags("serve", args, io, true)
	if err != nil {
		return err
	}
	f.serve = true
	return runRelay(ctx, f, io)
}

func cmdRelay(ctx context.Context, args []string, io stdio) error {
	f, err := parseServeFlags("relay", args, io, false)
	if err != nil {
		return err
	}
	return runRelay(ctx, f, io)
}

// loadConfig returns the configuration: the file, or in dev mode the one
// kept in the data folder (made on first start), with flags applied.
func loadConfig(f *serveFlags, io stdio) (*config.Config, string, error) {
	path := f.config
	if f.dev {
		p, created, err := ensureDevConfig(f.data)
		if err != nil {
			return nil, "", err
		}
		if created {
			fmt.Fprintf(io.err, "trackrelay: wrote a development config to %s\n", p)
		}
		path = p
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, "", err
	}
	if err := applyFlags(cfg, f); err != nil {
		return nil, "", err
	}
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	if err := cfg.CheckFiles(); err != nil {
		return nil, "", err
	}
	return cfg, path, nil
}

// applyFlags overrides the configuration with command-line flags.
func applyFlags(cfg *config.Config, f *serveFlags) error {
	if f.data != "" && !f.dev {
		abs, err := filepath.Abs(f.data)
		if err != nil {
			return err
		}
		cfg.Relay.DataDir = abs
	}
	if f.smtpAddr != "" {
		mode := config.ModeSTARTTLS
		if cfg.SMTP.TLSCert == "" {
			mode = config.ModePlain
		}
		cfg.SMTP.Listeners = []config.Listener{{Addr: f.smtpAddr, Mode: mode}}
	}
	if f.apiAddr != "" {
		cfg.API.Addr = f.apiAddr
	}
	if f.dev {
		// Webhook receivers on this machine, also with a dev config made
		// before [webhooks] existed.
		cfg.Webhooks.AllowHTTP, cfg.Webhooks.AllowLoopback = true, true
	}
	if f.mxAddr != "" {
		cfg.Inbound.Listen = f.mxAddr
	}
	if f.dev && f.httpAddr != "" {
		// Tracked links point at the redirector wherever it listens.
		_, port, err := net.SplitHostPort(f.httpAddr)
		if err != nil {
			return fmt.Errorf("--http-addr %q: want host:port", f.httpAddr)
		}
		for i := range cfg.Credentials {
			cfg.Credentials[i].ClickDomain = "localhost:" + port
		}
	}
	if f.upstream != "" {
		u, err := parseUpstreamFlag(f.upstream)
		if err != nil {
			return err
		}
		// Replace the first upstream (the default of every credential
		// without one); credentials naming another keep theirs.
		if len(cfg.Upstreams) == 0 {
			cfg.Upstreams = []config.Upstream{u}
		} else {
			u.Name = cfg.Upstreams[0].Name
			cfg.Upstreams[0] = u
		}
		cfg.SetDefaults()
	}
	return nil
}

// parseUpstreamFlag reads --upstream: smtp://host:port (no TLS),
// smtps://host:port (implicit TLS) or a folder path.
func parseUpstreamFlag(s string) (config.Upstream, error) {
	u := config.Upstream{Name: "upstream"}
	var rest string
	switch {
	case len(s) > 7 && s[:7] == "smtp://":
		u.TLS, rest = config.UpstreamNone, s[7:]
	case len(s) > 8 && s[:8] == "smtps://":
		u.TLS, rest = config.UpstreamImplicit, s[8:]
	default:
		abs, err := filepath.Abs(s)
		if err != nil {
			return u, err
		}
		u.Folder = abs
		return u, nil
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return u, fmt.Errorf("--upstream %q: want smtp://host:port, smtps://host:port or a folder", s)
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 1 || p > 65535 {
		return u, fmt.Errorf("--upstream %q: bad port", s)
	}
	u.Host, u.Port = host, p
	return u, nil
}

// relayApp is the running relay: everything run builds, in the order it
// is torn down.
type relayApp struct {
	cfg       *config.Config
	log       *slog.Logger
	store     store.DB
	dir       *directory
	checker   *relayChecker // domain checks; nil without [domains] target
	spool     *smtpd.Spool
	queue     *smtpd.Queue
	server    *smtpd.Server
	upstreams map[string]smtpd.Upstream
	keyring   *api.Keyring // the REST API's keys; nil when the API is off
	dkim      *dkimKeeper  // DKIM signing keys and their checks (dkim_relay.go)
	webhooks  *webhook.Engine
	api       *http.Server
	admin     *http.Server // the admin socket
	ready     atomic.Bool
	rdr       atomic.Pointer[redirector.Service] // the redirector in serve, for /readyz
}

// tokenKeys reads the token key file (the first key signs, all verify).
func tokenKeys(cfg *config.Config) ([]rewrite.Key, error) {
	f, err := os.Open(cfg.Path(cfg.Keys.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("keys.key_file: %w", err)
	}
	defer f.Close()
	keys, err := rewrite.ReadKeys(f)
	if err != nil {
		return nil, fmt.Errorf("keys.key_file: %w", err)
	}
	return keys, nil
}

func loadKeys(cfg *config.Config) (*rewrite.Codec, error) {
	keys, err := tokenKeys(cfg)
	if err != nil {
		return nil, err
	}
	return rewrite.NewCodec(keys[0], keys[1:]...)
}

func loadKeysErr(cfg *config.Config) error {
	if cfg.Keys.KeyFile == "" {
		return nil
	}
	_, err := loadKeys(cfg)
	return err
}

func buildUpstreams(cfg *config.Config) (map[string]smtpd.Upstream, error) {
	ups := map[string]smtpd.Upstream{}
	for i := range cfg.Upstreams {
		u := &cfg.Upstreams[i]
		if u.Folder != "" {
			ups[u.Name] = &smtpd.FolderUpstream{Dir: cfg.Path(u.Folder)}
			continue
		}
		pw, err := cfg.UpstreamPassword(u)
		if err != nil {
			return nil, err
		}
		tc := &tls.Config{ServerName: u.Host}
		if u.CAFile != "" {
			pem, err := os.ReadFile(cfg.Path(u.CAFile))
			if err != nil {
				return nil, fmt.Errorf("upstreams[%d].ca_file: %w", i, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upstreams[%d].ca_file: no certificates", i)
			}
			tc.RootCAs = pool
		}
		up, err := smtpd.NewSMTPUpstream(smtpd.SMTPUpstreamConfig{
			Name: u.Name, Host: u.Host, Port: u.Port, TLS: u.TLS, TLSConfig: tc,
			Username: u.Username, Password: pw, PoolSize: u.PoolSize, LocalName: cfg.Relay.Hostname,
		})
		if err != nil {
			return nil, err
		}
		ups[u.Name] = up
	}
	return ups, nil
}

// runRelay builds the relay from the configuration, serves until ctx ends,
// and shuts down in order: stop taking mail, drain delivery, close the
// store last (STYLE 1).
func runRelay(ctx context.Context, f *serveFlags, io stdio) (err error) {
	log, err := newLogger(f, io)
	if err != nil {
		return err
	}
	cfg, cfgPath, err := loadConfig(f, io)
	if err != nil {
		return err
	}
	a := &relayApp{cfg: cfg, log: log}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	codec, err := loadKeys(cfg)
	if err != nil {
		return err
	}
	dataDir := cfg.Path(cfg.Relay.DataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("relay.data_dir: %w", err)
	}
	a.store, err = openStore(cfg, dataDir, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := a.store.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if a.upstreams, err = buildUpstreams(cfg); err != nil {
		return err
	}
	defer func() {
		for _, u := range a.upstreams {
			u.Close()
		}
	}()
	var queue *smtpd.Queue
	a.spool, err = smtpd.NewSpool(smtpd.SpoolConfig{
		Dir: filepath.Join(dataDir, "spool"), Store: a.store, MaxMessageBytes: cfg.SMTP.MaxMessageBytes,
		Hostname: cfg.Relay.Hostname, MinFreeBytes: cfg.Relay.MinFreeBytes,
		Enqueue: func(c []*store.Copy) { queue.Add(c) }, Logger: log.With("component", "spool"),
	})
	if err != nil {
		return err
	}
	defer a.spool.Close()
	if n, err := a.spool.Recover(); err != nil {
		return err
	} else if n > 0 {
		log.Info("spool removed unfinished files", "files", n)
	}
	clickDomains := append([]string(nil), cfg.Relay.ClickDomains...)
	if a.dkim, err = newDKIMKeeper(ctx, a.store, dkimConfig(cfg), log.With("component", "dkim"), reg); err != nil {
		return err
	}
	verp, err := inboundVERP(cfg, codec, a.store, log) // inbound.go
	if err != nil {
		return err
	}
	queue, err = smtpd.NewQueue(smtpd.QueueConfig{
		Store: a.store, Spool: a.spool, Upstreams: a.upstreams, Codec: codec, ClickDomains: clickDomains, DKIM: a.dkim.signer, VERP: verp,
		Workers: cfg.Delivery.Workers, RetryBase: cfg.Delivery.RetryBase, RetryMax: cfg.Delivery.RetryMax,
		MaxAge: cfg.Delivery.MaxAge, Logger: log.With("component", "delivery"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	a.queue = queue
	queue.Run()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := queue.Shutdown(sctx); err != nil {
			log.Warn("delivery shutdown: tries abandoned, they stay queued", "err", err)
		}
	}()

	// Webhooks (issue 17): delivery stops before the store closes.
	if a.webhooks, err = newWebhooks(cfg, a.store, log, reg); err != nil {
		return err
	}
	a.webhooks.Start()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.webhooks.Shutdown(sctx); err != nil {
			log.Warn("webhook shutdown: requests cut off; they go again after their lease", "err", err)
		}
	}()

	var tlsCfg *tls.Config
	if cfg.SMTP.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.SMTP.TLSCert), cfg.Path(cfg.SMTP.TLSKey))
		if err != nil {
			return fmt.Errorf("smtp.tls_cert: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// The config file's accounts, credentials and keys go into the store;
	// logins are checked against the store's records from then on.
	if err := syncDeclared(ctx, a.store, cfg); err != nil {
		return err
	}
	if a.checker, err = newRelayChecker(cfg); err != nil {
		return err
	}
	if f.dev {
		if err := ensureDevOperator(ctx, a.store); err != nil {
			return err
		}
	}
	a.dir = newDirectory(a.store, cfg, log.With("component", "directory"))
	snap, err := a.dir.firstSnapshot(ctx)
	if err != nil {
		return err
	}
	us, nets := snap.users, snap.trusted
	a.server, err = smtpd.NewServer(smtpd.ServerConfig{
		Hostname: cfg.Relay.Hostname, TLS: tlsCfg, Submitter: a.spool, Users: us, Trusted: nets,
		AllowPlaintextLoopback: cfg.SMTP.AllowPlaintextLoopback,
		MaxMessageBytes:        cfg.SMTP.MaxMessageBytes, MaxRecipients: cfg.SMTP.MaxRecipients,
		MaxSessions: cfg.SMTP.MaxSessions, MaxSessionsPerIP: cfg.SMTP.MaxSessionsPerIP,
		MaxUnauthPerNet: cfg.SMTP.MaxUnauthSessionsPerNet, MaxLineLength: cfg.SMTP.MaxLineBytes,
		ReadTimeout: cfg.SMTP.ReadTimeout, DataTimeout: cfg.SMTP.DataTimeout, AuthTimeout: cfg.SMTP.AuthTimeout,
		WriteTimeout:  cfg.SMTP.WriteTimeout,
		AuthSlowAfter: cfg.SMTP.AuthFailuresSlow, AuthBlockAfter: cfg.SMTP.AuthFailuresBlock,
		AuthBlockAddressAfter: cfg.SMTP.AuthFailuresBlockAddress, AuthBlockFor: cfg.SMTP.AuthBlockFor,
		Logger: log.With("component", "smtp"), Registerer: reg,
	})
	if err != nil {
		return err
	}

	// Listen on everything before serving anything: a bad address fails
	// the start, not half of it.
	type smtpLn struct {
		ln   net.Listener
		mode smtpd.Mode
	}
	var lns []smtpLn
	closeAll := func() {
		for _, l := range lns {
			l.ln.Close()
		}
	}
	for i, l := range cfg.SMTP.Listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("smtp.listeners[%d].addr: %w", i, err)
		}
		mode := smtpd.ModeSTARTTLS
		if l.Mode == config.ModeImplicit {
			mode = smtpd.ModeImplicitTLS
		}
		lns = append(lns, smtpLn{ln, mode})
	}
	mx, err := newMX(cfg, dataDir, a.store, verp, tlsCfg, log, reg) // inbound.go; nil when off
	if err != nil {
		closeAll()
		return err
	}
	defer mx.stop()
	apiLn, err := net.Listen("tcp", cfg.API.Addr)
	if err != nil {
		closeAll()
		return fmt.Errorf("api.addr: %w", err)
	}
	a.api = &http.Server{
		Handler:           a.apiHandler(reg, snap.keys),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.With("component", "api").Handler(), slog.LevelWarn),
	}
	log.Info("api listening", "addr", apiLn.Addr().String())
	// The admin socket: the same API for the command-line tools, as an
	// operator, to whoever may open the socket file (its owner).
	adminLn, err := listenAdmin(adminSocketPath(dataDir))
	if err != nil {
		// Not fatal: mail flows without it; only the tools cannot reach
		// this relay (a data folder path too long for a socket, say).
		log.Warn("admin socket off: the command-line tools cannot reach this relay", "err", err)
	}
	a.admin = &http.Server{
		Handler:           a.api.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return api.TrustedContext(context.Background()) },
		ErrorLog:          slog.NewLogLogger(log.With("component", "admin").Handler(), slog.LevelWarn),
	}

	var wg sync.WaitGroup
	errc := make(chan error, len(lns)+2)
	mx.serve(errc)
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.server.Serve(l.ln, l.mode); err != nil {
				errc <- fmt.Errorf("smtp: %w", err)
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := a.api.Serve(apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("api: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if adminLn == nil {
			return
		}
		if err := a.admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin socket: %w", err)
		}
	}()

	// The redirector (issue 5), in serve only: hits reach the store
	// in-process through the same journal and shipper as a separate
	// redirector's. It stops (final ship included) before the store closes.
	if f.serve {
		rdr, rerr := startServeRedirector(cfg, f.httpAddr, codec, a.store, log, reg)
		if rerr != nil {
			a.server.Close()
			a.api.Close()
			wg.Wait()
			return rerr
		}
		a.rdr.Store(rdr)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), config.DefaultShutdownTimeout)
			defer cancel()
			if err := rdr.Shutdown(sctx); err != nil {
				log.Warn("redirector shutdown", "err", err)
			}
		}()
		go func() {
			if err, ok := <-rdr.Err(); ok {
				select {
				case errc <- err:
				default:
				}
			}
		}()
	}

	a.dir.server = a.server
	a.dir.keyring = a.keyring
	wg.Add(3)
	rctx, stopRetention := context.WithCancel(context.Background())
	go func() {
		defer wg.Done()
		a.dkim.maintain(rctx)
	}()
	go func() {
		defer wg.Done()
		a.retention(rctx)
	}()
	go func() {
		defer wg.Done()
		watchRecords(rctx, a.store, time.Second, log, a.reloadAll)
	}()
	if a.checker != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recheckDomains(rctx, a.store, a.checker, log.With("component", "domains"), func() { _ = a.dir.Reload(rctx) })
		}()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a.ready.Store(true)
	log.Info("relay started", "data", dataDir, "queued", queue.Len())
	if f.dev && len(lns) > 0 {
		printNextSteps(io, lns[0].ln.Addr().String(), cfg, dataDir)
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case <-hup:
			a.reload(cfgPath, f)
		}
	}
	a.ready.Store(false)
	log.Info("relay stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.server.Shutdown(sctx); err != nil {
		log.Warn("smtp shutdown", "err", err)
	}
	a.server.Close()
	if err := a.api.Shutdown(sctx); err != nil {
		a.api.Close()
	}
	if err := a.admin.Shutdown(sctx); err != nil {
		a.admin.Close()
	}
	stopRetention()
	wg.Wait()
	return runErr
}

// printNextSteps tells a developer how to send a first message.
func printNextSteps(io stdio, smtpAddr string, cfg *config.Config, dataDir string) {
	out := "the outbox folder"
	if len(cfg.Upstreams) > 0 && cfg.Upstreams[0].Folder != "" {
		out = cfg.Path(cfg.Upstreams[0].Folder)
	}
	fmt.Fprintf(io.err, `
trackrelay is running (development mode, data in %s).
Send a test message (user dev, password dev; loopback may also skip AUTH):

  swaks --server %s --auth-user dev --auth-password dev --to you@example.com \
        --header 'Content-Type: text/html' --body '<a href="https://example.com/">a link</a>'

  printf 'Subject: hi\r\nContent-Type: text/html\r\n\r\n<a href="https://example.com/">a link</a>\r\n' |
    curl -sS --url smtp://%s --user dev:dev --mail-from me@example.com --mail-rcpt you@example.com -T -

Delivered copies appear in %s as .eml files.

Dashboard: http://%s/ (user dev, password dev)

`, dataDir, smtpAddr, smtpAddr, out, cfg.API.Addr)
}

// reload re-reads the configuration, copies its accounts, credentials and
// API keys into the store and reloads every login; connections stay up.
// Other changes need a restart.
func (a *relayApp) reload(path string, f *serveFlags) {
	cfg, err := config.Load(path)
	if err == nil {
		err = applyFlags(cfg, f)
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil {
		for _, c := range cfg.Credentials {
			if _, ok := a.upstreams[c.Upstream]; !ok {
				err = fmt.Errorf("credential %s: upstream %q needs a restart", c.Username, c.Upstream)
				break
			}
		}
	}
	ctx := context.Background()
	if err == nil {
		err = syncDeclared(ctx, a.store, cfg)
	}
	if err == nil {
		a.dir.setConfig(cfg)
		err = a.dir.Reload(ctx)
	}
	if err != nil {
		a.log.Error("reload failed, keeping the old credentials", "err", err)
		return
	}
	a.log.Info("reloaded credentials", "credentials", len(cfg.Credentials), "trusted_networks", len(cfg.TrustedNetworks), "api_keys", len(cfg.API.Keys))
}

// retention applies store.DeleteBefore for the configured days, at start and
// then daily.
func (a *relayApp) retention(ctx context.Context) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rt := store.Retention{Default: time.Duration(a.cfg.Logs.RetentionDays) * 24 * time.Hour, Logs: map[string]time.Duration{}}
		for log, days := range a.cfg.Logs.RetentionDaysByLog {
			rt.Logs[log] = time.Duration(days) * 24 * time.Hour
		}
		if accts, err := store.List[store.Account](ctx, a.store, store.KindAccount, ""); err == nil {
			rt = store.RetentionFromAccounts(rt, accts)
		}
		p, err := a.store.DeleteBefore(ctx, time.Now(), rt)
		if err != nil && ctx.Err() == nil {
			a.log.Error("log retention failed", "err", err)
		}
		if p != (store.Pruned{}) {
			a.log.Info("log retention", "events", p.Events, "hits", p.Hits, "aggregates", p.Aggregates)
		}
		t.Reset(24 * time.Hour)
	}
}

// apiHandler serves the internal listener: health, readiness, metrics
// and the REST API under /v1/.
func (a *relayApp) apiHandler(reg *prometheus.Registry, keys []api.Key) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		// Mail intake (the spool's disk floor) and, in serve, the
		// redirector's hits: not ready while either cannot be kept.
		if !a.spool.HasSpace() {
			http.Error(w, "not ready: low on disk space for mail", http.StatusServiceUnavailable)
			return
		}
		if rdr := a.rdr.Load(); rdr != nil {
			if err := rdr.Journal().Ready(); err != nil {
				http.Error(w, "not ready: hits cannot be kept", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Hits from standalone redirectors, when an ingest secret is set (in
	// serve the redirector hands hits over in-process instead).
	if h, err := relayIngestHandler(a.cfg, a.store, a.log); err != nil {
		a.log.Error("hit ingest endpoint off", "err", err)
	} else if h != nil {
		mux.Handle("POST "+ingestPath, h)
		secret, _ := ingestSecret(a.cfg) // read by relayIngestHandler already
		mux.Handle("GET "+domainsPath, domainsHandler(a.store, secret, a.log.With("component", "domains")))
	}
	// The REST API, over the keys the directory keeps.
	kr, err := api.NewKeyring(keys)
	if err != nil {
		a.log.Error("rest api off", "err", err)
		return mux
	}
	a.keyring = kr
	var dc api.DomainChecker
	if a.checker != nil {
		dc = a.checker
	}
	apiH := api.New(api.Config{
		Submitter: a.spool, Store: a.store, Keys: kr, Domains: dc,
		DKIM:         a.dkim.settings(),
		Reload:       a.reloadRecords,
		MaxBodyBytes: a.cfg.SMTP.MaxMessageBytes*4/3 + 1<<20, // base64 attachments in JSON
		Log:          a.log.With("component", "api"),
		Webhooks:     a.webhooks,
	})
	mux.Handle("/v1/", apiH)
	// The dashboard (package web) at /, beside the API it is built on.
	if dh, err := a.dashboard(apiH); err != nil {
		a.log.Error("dashboard off", "err", err)
	} else {
		mux.Handle("/", dh)
	}
	return mux
}

// newWebhooks makes the webhook delivery engine from [webhooks].
func newWebhooks(cfg *config.Config, db store.DB, log *slog.Logger, reg prometheus.Registerer) (*webhook.Engine, error) {
	w := &cfg.Webhooks
	return webhook.New(webhook.Config{
		Store: db, Log: log.With("component", "webhooks"), Registerer: reg,
		Policy:  webhook.Policy{AllowHTTP: w.AllowHTTP, AllowLoopback: w.AllowLoopback, AllowPrivate: w.AllowPrivate, AllowNetworks: w.Networks()},
		Timeout: w.Timeout, Concurrency: w.Concurrency, DisableAfter: w.DisableAfter, Lease: w.Lease,
	})
}

// openStore opens the relay's store: bbolt in the data folder, or the
// PostgreSQL database several nodes share ([store], store_cmd.go).
func openStore(cfg *config.Config, dataDir string, log *slog.Logger) (store.DB, error) {
	if cfg.Store.Backend == config.StorePostgres {
		return openPostgres(context.Background(), cfg, log)
	}
	return store.OpenRelay(filepath.Join(dataDir, "relay.db"), store.RelayOptions{Logger: log})
}
