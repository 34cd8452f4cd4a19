package store

import (
	"context"
	"errors"
	"time"
)

// Pruned counts what DeleteBefore removed.
type Pruned struct {
	Events, Hits, Rollups int
}

// DeleteBefore applies log retention: it removes every event older than
// cutoff, the raw hits they were made from (IP, user agent, URL) and the
// daily summaries of those days. Each part runs even if another fails; the
// errors are joined.
func (r *Relay) DeleteBefore(ctx context.Context, cutoff time.Time) (Pruned, error) {
	var p Pruned
	var errEv, errHits, errRoll error
	p.Events, errEv = r.DeleteEventsBefore(ctx, cutoff)
	p.Hits, errHits = r.DeleteHitsBefore(ctx, cutoff)
	p.Rollups, errRoll = r.DeleteRollupsBefore(ctx, cutoff)
	return p, errors.Join(errEv, errHits, errRoll)
}
