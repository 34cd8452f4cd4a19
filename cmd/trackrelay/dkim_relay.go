package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// dkimKeeper is the relay's DKIM side (SPEC §13): the signer delivery
// signs copies with, reloaded whenever the store's records change (on
// this node at once, from other nodes within a second: watchRecords), and the periodic
// checks that make published keys active, note problems and retire
// replaced keys (api.DKIMMaintainer).
type dkimKeeper struct {
	st     store.DB
	cfg    config.DKIM
	log    *slog.Logger
	signer *smtpd.DKIM

	mu      sync.Mutex
	version uint64
}

// newDKIMKeeper makes the signer and loads the active keys, so the first
// deliveries after a start sign.
func newDKIMKeeper(ctx context.Context, st store.DB, cfg config.DKIM, log *slog.Logger, reg prometheus.Registerer) (*dkimKeeper, error) {
	signer, err := smtpd.NewDKIM(log, reg)
	if err != nil {
		return nil, err
	}
	k := &dkimKeeper{st: st, cfg: cfg, log: log, signer: signer}
	if err := k.Reload(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// settings are what the REST API needs of the [dkim] section.
func (k *dkimKeeper) settings() api.DKIMSettings {
	return api.DKIMSettings{Resolver: k.cfg.Resolver, RetireAfter: k.cfg.RetireAfter, CNAMEZone: k.cfg.CNAMEZone}
}

// Reload reads the keys now.
func (k *dkimKeeper) Reload(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, err := k.st.RecordsVersion(ctx)
	if err != nil {
		return err
	}
	n, err := k.signer.Load(ctx, k.st)
	if err != nil {
		return err
	}
	if v != k.version {
		k.log.Debug("dkim keys loaded", "signing_keys", n)
	}
	k.version = v
	return nil
}

// maintain checks due keys every tick (a fifth of check_interval,
// between a second and a minute: pending ones every dkim.check_interval,
// published ones every dkim.recheck_interval) and reloads the signer at
// once when a check changed a key, until ctx ends. It runs on a goroutine
// of its own, so a slow DNS server does not hold up reloads.
func (k *dkimKeeper) maintain(ctx context.Context) {
	tick := min(max(k.cfg.CheckInterval/5, time.Second), time.Minute)
	m := &api.DKIMMaintainer{Store: k.st, Settings: k.settings(), CheckEvery: k.cfg.CheckInterval,
		RecheckEvery: k.cfg.RecheckInterval, Log: k.log}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := m.Run(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			k.log.Warn("dkim key checks failed", "err", err)
		}
		if n > 0 {
			if err := k.Reload(ctx); err != nil && ctx.Err() == nil {
				k.log.Error("reloading dkim keys failed; keeping the old ones", "err", err)
			}
		}
		t.Reset(tick)
	}
}

// dkimConfig is the [dkim] section, its resolver defaulting to
// [domains] resolver (one DNS server for every check the relay makes).
func dkimConfig(cfg *config.Config) config.DKIM {
	d := cfg.DKIM
	if d.Resolver == "" {
		d.Resolver = cfg.Domains.Resolver
	}
	return d
}
