package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/redirector"
	"github.com/trackrelay/trackrelay/redirector/domaincheck"
	"github.com/trackrelay/trackrelay/store"
)

// Click domains at run time (SPEC §12): the relay checks them
// (domaincheck, through [domains] target and resolver), keeps the
// verdict in each domain's record and re-checks them periodically; the
// redirector asks which hosts it serves (storePolicy in `serve`, the
// relay's internal endpoint for a standalone redirector).

// relayChecker is the REST API's DomainChecker over domaincheck (click
// domains) and bounce_domain.go (bounce domains).
type relayChecker struct {
	c        *domaincheck.Checker // nil without [domains] target
	target   string
	mxHost   string // [inbound] mx_host; "" without
	resolver string // [domains] resolver
	// dnsTimeout bounds one query of a bounce domain check; 0: 5s.
	dnsTimeout time.Duration
}

// newRelayChecker returns the checker of cfg, or nil when neither
// [domains] target nor [inbound] mx_host is set (checks are off).
func newRelayChecker(cfg *config.Config) (*relayChecker, error) {
	if cfg.Domains.Target == "" && cfg.Inbound.MXHost == "" {
		return nil, nil
	}
	rc := &relayChecker{target: strings.TrimSuffix(cfg.Domains.Target, "."), mxHost: cfg.Inbound.MXHost, resolver: cfg.Domains.Resolver}
	if cfg.Domains.Target != "" {
		ch, err := domainChallenger(cfg)
		if err != nil {
			return nil, err
		}
		rc.c = &domaincheck.Checker{Target: cfg.Domains.Target, Resolver: cfg.Domains.Resolver, Challenger: ch,
			HTTPPort: cfg.Domains.CheckPort}
	}
	return rc, nil
}

// Records implements api.DomainChecker.
func (rc *relayChecker) Records(name, kind string) []string {
	if kind == store.DomainBounce {
		return []string{bounceRecord(name, rc.mxHost)}
	}
	return []string{fmt.Sprintf("%s. 3600 IN CNAME %s.", name, rc.target)}
}

// Check implements api.DomainChecker.
func (rc *relayChecker) Check(ctx context.Context, name, kind string) api.DomainCheck {
	if kind == store.DomainBounce {
		return checkBounceDomain(ctx, rc, name)
	}
	if rc.c == nil {
		return api.DomainCheck{Problem: "click domains cannot be checked: the operator has not set [domains] target"}
	}
	res := rc.c.Check(ctx, name)
	out := api.DomainCheck{OK: res.Verified, Records: append(append([]string(nil), res.Records...), res.Alternative...)}
	if !res.Verified {
		out.Problem = strings.TrimSpace(res.Message + " " + res.Advice)
	}
	return out
}

// checkBounceDomain is the check of a bounce domain: its MX (or a CNAME)
// leads to the relay's MX host (bounce_domain.go).
var checkBounceDomain = checkBounceMX

// storePolicy is the redirector's DomainPolicy over the store: every
// click domain that was verified once (old links keep working while it
// fails a re-check).
type storePolicy struct{ st store.RecordStore }

// ClickDomain implements redirector.DomainPolicy.
func (p storePolicy) ClickDomain(ctx context.Context, host string) (bool, error) {
	d, err := store.Get[store.Domain](ctx, p.st, store.KindDomain, host)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return d.Kind == store.DomainClick && d.Served(), nil
}

// domainsPath is the relay's internal endpoint that standalone
// redirectors ask about a host (redirector.HTTPPolicy).
const domainsPath = "/internal/domains/"

// domainsHandler answers GET domainsPath+host: 200 when host is a click
// domain served, 404 when not, for callers holding the ingest secret.
func domainsHandler(st store.RecordStore, secret string, log *slog.Logger) http.Handler {
	pol := storePolicy{st}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(secret)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		host := strings.ToLower(strings.TrimPrefix(r.URL.Path, domainsPath))
		if host == "" || len(host) > 253 || strings.ContainsAny(host, "/ ") {
			http.Error(w, "bad host", http.StatusBadRequest)
			return
		}
		served, err := pol.ClickDomain(r.Context(), host)
		switch {
		case err != nil:
			log.Error("domain lookup failed", "host", host, "err", err)
			http.Error(w, "lookup failed", http.StatusServiceUnavailable)
		case served:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"click_domain":true}`)
		default:
			http.Error(w, "not a click domain", http.StatusNotFound)
		}
	})
}

// Re-check periods: a pending domain often (so that a record just made is
// seen soon), a verified one a few times a day.
const (
	recheckPending  = 10 * time.Minute
	recheckVerified = 6 * time.Hour
)

// recheckDomains re-checks the domains that are due, until ctx ends. A
// verified domain that fails is flagged failing (links stop going to it;
// the redirector keeps answering its old links) and logged at warn, for
// the operator.
func recheckDomains(ctx context.Context, st store.DB, dc api.DomainChecker, log *slog.Logger, onChange func()) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ds, err := store.List[store.Domain](ctx, st, store.KindDomain, "")
		if err != nil {
			if ctx.Err() == nil {
				log.Error("domain re-check: listing failed", "err", err)
			}
			t.Reset(recheckPending)
			continue
		}
		changed := false
		for _, d := range ds {
			period := recheckVerified
			if d.State != store.DomainVerified {
				period = recheckPending
			}
			if time.Since(d.Checked) < period {
				continue
			}
			nd, err := api.CheckAndRecord(ctx, st, dc, d.Name, time.Now())
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Error("domain re-check failed", "domain", d.Name, "err", err)
				continue
			}
			if nd.State != d.State {
				changed = true
				lvl := slog.LevelInfo
				if nd.State == store.DomainFailing {
					lvl = slog.LevelWarn
				}
				log.Log(ctx, lvl, "domain state changed", "domain", d.Name, "account", d.Account, "from", d.State, "to", nd.State, "problem", nd.Problem)
			}
		}
		if changed && onChange != nil {
			onChange()
		}
		t.Reset(recheckPending)
	}
}

var _ redirector.DomainPolicy = storePolicy{}
