package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// watchRecords polls the store's records version every interval and, when
// it has moved since the last reload that worked, calls reload: the way a
// change made on another node (or by a command over the admin socket)
// reaches this one. A reload that fails is tried again at the next tick,
// the old state kept meanwhile. It returns when ctx ends.
func watchRecords(ctx context.Context, st store.DB, interval time.Duration, log *slog.Logger, reload func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var seen uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v, err := st.RecordsVersion(ctx)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				log.Warn("records version", "err", err)
			}
			continue
		}
		if v == seen {
			continue
		}
		if err := reload(ctx); err != nil {
			if ctx.Err() == nil {
				log.Error("reloading the records failed; keeping the old ones", "err", err)
			}
			continue
		}
		seen = v
	}
}
