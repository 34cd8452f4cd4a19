package store

import (
	"context"
	"errors"
	"time"
)

// Retention says how long each log is kept: per account and log when an
// account's settings say (Account.Retention), else per log, else Default.
type Retention struct {
	Default  time.Duration
	Logs     map[string]time.Duration            // per log, for every account
	Accounts map[string]map[string]time.Duration // per account, per log
}

// For returns how long account keeps log.
func (rt *Retention) For(account, log string) time.Duration {
	if d, ok := rt.Accounts[account][log]; ok && d > 0 {
		return d
	}
	if d, ok := rt.Logs[log]; ok && d > 0 {
		return d
	}
	return rt.Default
}

// Longest returns the longest period anything is kept: the aggregates,
// which hold no personal data, are kept that long.
func (rt *Retention) Longest() time.Duration {
	m := rt.Default
	for _, d := range rt.Logs {
		m = max(m, d)
	}
	for _, a := range rt.Accounts {
		for _, d := range a {
			m = max(m, d)
		}
	}
	return m
}

// RetentionFromAccounts adds each account record's own retention days to
// rt.
func RetentionFromAccounts(rt Retention, accounts []Account) Retention {
	for _, a := range accounts {
		if len(a.Retention) == 0 {
			continue
		}
		if rt.Accounts == nil {
			rt.Accounts = map[string]map[string]time.Duration{}
		}
		m := map[string]time.Duration{}
		for log, days := range a.Retention {
			if days > 0 {
				m[log] = time.Duration(days) * 24 * time.Hour
			}
		}
		rt.Accounts[a.Name] = m
	}
	return rt
}

// Pruned counts what DeleteBefore removed.
type Pruned struct {
	Events, Hits, Aggregates int
}

// DeleteBefore applies log retention as of now: every event older than
// its log's period (per account), the raw orphan hits and the records of
// finished messages and copies older than rt.Default, and the aggregates
// older than rt.Longest(). Each part runs even if another fails; the
// errors are joined.
func (r *Relay) DeleteBefore(ctx context.Context, now time.Time, rt Retention) (Pruned, error) {
	var p Pruned
	var errEv, errHits, errAgg error
	p.Events, errEv = r.DeleteEventsBefore(ctx, func(account, log string) time.Time { return now.Add(-rt.For(account, log)) })
	if errEv == nil {
		errEv = r.deleteFinalBefore(ctx, now.Add(-rt.Default))
	}
	p.Hits, errHits = r.DeleteHitsBefore(ctx, now.Add(-rt.Default))
	p.Aggregates, errAgg = r.DeleteAggregatesBefore(ctx, now.Add(-rt.Longest()))
	return p, errors.Join(errEv, errHits, errAgg)
}
