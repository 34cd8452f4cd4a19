package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// The inbound side of `relay` and `serve` (SPEC §11, [inbound]): VERP
// envelope senders for delivery, the MX listener, and the inbound spool
// (inbound/ in the data folder) with its processor.

// inboundVERP returns the VERP of delivery: always made (the MX side reads
// tokens with it); it gives copies VERP senders only where a bounce
// domain applies (the relay's, or an account's own verified one).
func inboundVERP(cfg *config.Config, codec *rewrite.Codec, st store.DB, log *slog.Logger) (*smtpd.VERP, error) {
	return smtpd.NewVERP(smtpd.VERPConfig{Codec: codec, Domain: cfg.Inbound.BounceDomain, Records: st, Logger: log.With("component", "verp")})
}

// mxSide is the running MX listener and inbound processor.
type mxSide struct {
	in   *smtpd.Inbound
	srv  *smtpd.Server
	ln   net.Listener
	done chan struct{}
	log  *slog.Logger
}

// newMX opens the inbound spool and the MX listener's address, with
// [inbound] listen; nil when it is off. serve starts them, stop ends them
// (both do nothing on nil).
func newMX(cfg *config.Config, dataDir string, st store.DB, verp *smtpd.VERP, tlsCfg *tls.Config, log *slog.Logger, reg prometheus.Registerer) (*mxSide, error) {
	ic := &cfg.Inbound
	if ic.Listen == "" {
		return nil, nil
	}
	log = log.With("component", "mx")
	static := clickHosts(cfg)
	policy := storePolicy{st}
	var postmaster []string
	for _, h := range []string{cfg.Relay.Hostname, ic.MXHost} {
		if h = strings.ToLower(strings.TrimSuffix(h, ".")); h != "" {
			postmaster = append(postmaster, h)
		}
	}
	in, err := smtpd.NewInbound(smtpd.InboundConfig{
		Dir: filepath.Join(dataDir, "inbound"), Store: st, VERP: verp,
		ReportAddresses: append([]string(nil), ic.ReportAddresses...), Postmaster: postmaster,
		IsClickDomain: func(ctx context.Context, host string) bool {
			if static[host] {
				return true
			}
			h, _, err := net.SplitHostPort(host)
			if err != nil {
				h = host
			}
			if static[h] {
				return true
			}
			ok, err := policy.ClickDomain(ctx, h)
			return err == nil && ok
		},
		SoftBounceLimit: ic.SoftBounceLimit, SoftBounceWindow: ic.SoftBounceWindow,
		MaxMessageBytes: ic.MaxMessageBytes, MinFreeBytes: cfg.Relay.MinFreeBytes, MaxUnclaimed: ic.MaxUnclaimed,
		Logger: log.With("component", "inbound"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	srv, err := smtpd.NewMXServer(smtpd.MXConfig{
		Hostname: cfg.Relay.Hostname, TLS: tlsCfg, Inbound: in,
		MaxMessageBytes: ic.MaxMessageBytes, MaxRecipients: ic.MaxRecipients,
		MaxSessions: ic.MaxSessions, MaxSessionsPerIP: ic.MaxSessionsPerIP, MaxSessionsPerNet: ic.MaxSessionsPerNet,
		MaxLineLength: cfg.SMTP.MaxLineBytes, ReadTimeout: ic.ReadTimeout, DataTimeout: ic.DataTimeout, WriteTimeout: ic.WriteTimeout,
		BadRecipientsSlow: ic.BadRecipientsSlow, BadRecipientsBlock: ic.BadRecipientsBlock, BlockFor: ic.BlockFor,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", ic.Listen)
	if err != nil {
		return nil, fmt.Errorf("inbound.listen: %w", err)
	}
	return &mxSide{in: in, srv: srv, ln: ln, log: log}, nil
}

// serve starts the processor (it resumes what the spool holds) and the
// listener; a serve error goes to errc without blocking.
func (m *mxSide) serve(errc chan<- error) {
	if m == nil {
		return
	}
	m.in.Run()
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(m.ln, smtpd.ModeSTARTTLS); err != nil {
			select {
			case errc <- fmt.Errorf("mx: %w", err):
			default:
			}
		}
	}()
}

// stop ends the MX listener (transactions in progress may finish), then
// the processor; what it has not processed stays for the next start.
func (m *mxSide) stop() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		m.log.Warn("mx shutdown", "err", err)
	}
	m.srv.Close()
	if m.done != nil {
		<-m.done
	} else {
		m.ln.Close()
	}
	if err := m.in.Shutdown(ctx); err != nil {
		m.log.Warn("inbound processor shutdown: messages stay spooled for the next start", "err", err)
	}
}

// clickHosts are the click domains of the config file (each also without
// its port), lower case.
func clickHosts(cfg *config.Config) map[string]bool {
	out := map[string]bool{}
	add := func(d string) {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" {
			return
		}
		out[d] = true
		if h, _, err := net.SplitHostPort(d); err == nil {
			out[h] = true
		}
	}
	for _, c := range cfg.Credentials {
		add(c.ClickDomain)
	}
	for _, d := range cfg.Relay.ClickDomains {
		add(d)
	}
	for _, d := range cfg.Redirector.ClickDomains {
		add(d)
	}
	return out
}
