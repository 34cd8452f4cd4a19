package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/redirector/domaincheck"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

func init() {
	commands["redirector"] = command{cmdRedirector, "run the redirector alone: verify tracked links, record hits, ship them to the relay"}
}

func cmdRedirector(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("redirector", io)
	path := fs.String("config", "", "config file (TOML)")
	listen := fs.String("listen", "", "public address, overriding redirector.listen")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() != 0 {
		fmt.Fprintln(io.err, "usage: trackrelay redirector --config FILE [--listen ADDR]")
		return errUsage
	}
	log, err := newLogger(&serveFlags{logFormat: *logFormat, logLevel: *logLevel}, io)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	rc := &cfg.Redirector
	rc.SetDefaults()
	if *listen != "" {
		rc.Listen = *listen
	}
	if err := rc.ValidateStandalone(); err != nil {
		return err
	}
	codec, err := loadKeys(cfg)
	if err != nil {
		return err
	}
	secret, err := ingestSecret(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sink := &redirector.HTTPSink{URL: rc.IngestURL, Secret: secret, Client: &http.Client{Timeout: time.Minute}}
	polURL, err := redirector.PolicyURL(rc.IngestURL)
	if err != nil {
		return err
	}
	policy := &redirector.HTTPPolicy{BaseURL: polURL, Secret: secret, Client: &http.Client{Timeout: 10 * time.Second}}
	opts, err := redirectorOptions(cfg, codec, sink, policy, log, reg)
	if err != nil {
		return err
	}
	if rc.AdminListen != "off" {
		opts.AdminListen, opts.Gatherer = rc.AdminListen, reg
	}
	svc, err := redirector.Start(opts)
	if err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-svc.Err():
	}
	log.Info("redirector stopping")
	sctx, cancel := context.WithTimeout(context.Background(), rc.ShutdownTimeout)
	defer cancel()
	return errors.Join(runErr, svc.Shutdown(sctx))
}

// redirectorOptions builds the redirector's options from the config; both
// `trackrelay redirector` and `trackrelay serve` start it from these.
func redirectorOptions(cfg *config.Config, codec *rewrite.Codec, sink redirector.Sink, policy redirector.DomainPolicy, log *slog.Logger, reg prometheus.Registerer) (redirector.Options, error) {
	rc := cfg.Redirector
	rc.SetDefaults()
	domains := rc.ClickDomains
	if len(domains) == 0 {
		seen := map[string]bool{}
		for _, c := range cfg.Credentials {
			if d := strings.ToLower(c.ClickDomain); d != "" && !seen[d] {
				seen[d] = true
				domains = append(domains, d)
			}
		}
		for _, d := range cfg.Relay.ClickDomains {
			if d = strings.ToLower(d); !seen[d] {
				seen[d] = true
				domains = append(domains, d)
			}
		}
	}
	if len(domains) == 0 && policy == nil {
		return redirector.Options{}, errors.New("redirector.click_domains: none configured, and no credential names a click_domain")
	}
	trusted, err := redirector.ParsePrefixes(rc.TrustedProxies)
	if err != nil {
		return redirector.Options{}, err
	}
	journal := cfg.Path(rc.Journal)
	if journal == "" {
		dir := cfg.Path(cfg.Relay.DataDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return redirector.Options{}, fmt.Errorf("relay.data_dir: %w", err)
		}
		journal = filepath.Join(dir, "redirector.db")
	}
	challenger, err := domainChallenger(cfg)
	if err != nil {
		return redirector.Options{}, err
	}
	acme, err := acmeOptions(cfg)
	if err != nil {
		return redirector.Options{}, err
	}
	durability := store.DurabilityProcess
	if rc.Durability == "disk" {
		durability = store.DurabilityDisk
	}
	return redirector.Options{
		Journal: store.JournalOptions{Durability: durability, FlushInterval: rc.FlushInterval, MinFree: rc.MinFreeBytes},
		Handler: redirector.Config{
			Codec: codec, Domains: domains, MaxLinkAge: rc.MaxLinkAge, TrustedProxies: trusted,
			Logger: log.With("component", "redirector"), Registerer: reg, Challenger: challenger,
			Policy: policy,
		},
		JournalPath:  journal,
		Listen:       rc.Listen,
		TLSListen:    rc.TLSListen,
		ACME:         acme,
		TLSCert:      cfg.Path(rc.TLSCert),
		TLSKey:       cfg.Path(rc.TLSKey),
		Sink:         sink,
		ShipBatch:    rc.ShipBatch,
		ShipInterval: rc.ShipInterval,
	}, nil
}

// startServeRedirector starts the redirector inside `serve`: hits go to
// the relay's store in-process, through the same journal and shipper as
// in a separate process. httpAddr (--http-addr) overrides the listener.
// The caller stops it with Shutdown before closing the store.
func startServeRedirector(cfg *config.Config, httpAddr string, codec *rewrite.Codec, st store.DB, log *slog.Logger, reg prometheus.Registerer) (*redirector.Service, error) {
	c := *cfg
	c.Redirector.SetDefaults()
	if httpAddr != "" {
		c.Redirector.Listen = httpAddr
	}
	if err := c.Redirector.Validate(); err != nil {
		return nil, err
	}
	opts, err := redirectorOptions(&c, codec, redirector.CheckedSink(hitStoreSink(&c, st)), storePolicy{st}, log, reg)
	if err != nil {
		return nil, err
	}
	return redirector.Start(opts)
}

// ingestPath is where the relay's internal API takes hits from standalone
// redirectors; their redirector.ingest_url ends with it.
const ingestPath = "/internal/hits"

// relayIngestHandler returns the relay's hit ingest endpoint for
// standalone redirectors (mount it at POST ingestPath on the internal API
// listener), or nil when no redirector.ingest_secret is configured, so the
// endpoint is off.
func relayIngestHandler(cfg *config.Config, st store.DB, log *slog.Logger) (http.Handler, error) {
	secret, err := ingestSecret(cfg)
	if err != nil || secret == "" {
		return nil, err
	}
	return redirector.IngestHandler(hitStoreSink(cfg, st), secret, log.With("component", "ingest")), nil
}

// hitStoreSink is the relay's store of hits, refused while relay.data_dir
// is below the hits' floor (redirector.min_free_bytes), so that hits never
// take the free space mail needs; the redirector keeps them meanwhile.
func hitStoreSink(cfg *config.Config, st store.DB) redirector.Sink {
	rc := cfg.Redirector
	rc.SetDefaults()
	return redirector.ReserveSink(redirector.SinkFunc(st.IngestHits), cfg.Path(cfg.Relay.DataDir), rc.MinFreeBytes)
}

// ingestSecret reads redirector.ingest_secret or ingest_secret_file.
func ingestSecret(cfg *config.Config) (string, error) {
	rc := cfg.Redirector
	if rc.IngestSecretFile == "" {
		return rc.IngestSecret, nil
	}
	b, err := os.ReadFile(cfg.Path(rc.IngestSecretFile))
	if err != nil {
		return "", fmt.Errorf("redirector.ingest_secret_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// domainChallenger makes the domain check's challenge from the token key
// file (the relay computes the same value to compare).
func domainChallenger(cfg *config.Config) (*domaincheck.Challenger, error) {
	keys, err := tokenKeys(cfg)
	if err != nil {
		return nil, err
	}
	return domaincheck.NewChallenger(keys[0], keys[1:]...)
}

// acmeOptions is the redirector's ACME setup from [acme], or nil when there
// is no redirector.tls_listen or acme.directory is "off".
func acmeOptions(cfg *config.Config) (*redirector.ACME, error) {
	a := cfg.ACME
	a.SetDefaults()
	if cfg.Redirector.TLSListen == "" || !a.Enabled() {
		return nil, nil
	}
	var roots *x509.CertPool
	if a.CAFile != "" {
		pem, err := os.ReadFile(cfg.Path(a.CAFile))
		if err != nil {
			return nil, fmt.Errorf("acme.ca_file: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme.ca_file: %s holds no PEM certificate", a.CAFile)
		}
	}
	storage := cfg.Path(a.Storage)
	if storage == "" {
		storage = filepath.Join(cfg.Path(cfg.Relay.DataDir), "acme")
	}
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, fmt.Errorf("acme.storage: %w", err)
	}
	return &redirector.ACME{Directory: a.Directory, Roots: roots, Email: a.Email, StorageDir: storage}, nil
}
