package redirector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// ShipperConfig configures a Shipper.
type ShipperConfig struct {
	Journal  *store.Journal
	Sink     Sink
	Batch    int           // most hits per Ingest call; 0 = 1000
	Interval time.Duration // idle poll; 0 = 1s
	Timeout  time.Duration // per Ingest call; 0 = 30s
	Logger   *slog.Logger
	// Handler, when set, wakes the shipper as soon as it journals a hit
	// and counts shipping in its metrics.
	Handler *Handler
}

// Shipper sends journaled hits to a Sink in batches, retrying with backoff
// until the sink acknowledges, then deletes them from the journal: every
// hit is delivered at least once.
type Shipper struct {
	cfg  ShipperConfig
	log  *slog.Logger
	kick <-chan struct{}
	m    *metrics
}

// Backoff bounds.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	linger     = 100 * time.Millisecond // lets a burst gather into one batch
)

// NewShipper returns a Shipper; Run starts it.
func NewShipper(cfg ShipperConfig) (*Shipper, error) {
	if cfg.Journal == nil || cfg.Sink == nil {
		return nil, errors.New("redirector: shipper needs a journal and a sink")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	s := &Shipper{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Handler != nil {
		s.kick, s.m = cfg.Handler.kick, cfg.Handler.m
	} else {
		s.m, _ = newMetrics(nil, cfg.Journal, time.Now)
	}
	return s, nil
}

// Run ships until ctx ends. It returns nil then.
func (s *Shipper) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		n, err := s.shipOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			backoff = min(max(backoff*2, minBackoff), maxBackoff)
		} else {
			backoff = 0
			if n == s.cfg.Batch {
				continue // more waiting
			}
		}
		wait := s.cfg.Interval
		if backoff > 0 {
			// Full jitter keeps many redirectors from retrying in step.
			wait = backoff/2 + rand.N(backoff/2+1)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.kick:
			if backoff > 0 {
				// A failing relay is not retried faster because of load.
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
				continue
			}
			if !timer.Stop() {
				<-timer.C
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(linger):
			}
		}
	}
}

// shipOnce sends one batch. It returns how many journal records it
// settled: hits acknowledged or rejected by the sink, and unreadable
// records, all deleted from the journal.
func (s *Shipper) shipOnce(ctx context.Context) (int, error) {
	hits, unreadable, err := s.cfg.Journal.Next(s.cfg.Batch)
	if err != nil {
		s.log.Error("journal read failed", "err", err)
		return 0, err
	}
	for _, id := range unreadable {
		s.log.Error("unreadable journal record dropped", "hit", id)
	}
	var rejected []Rejection
	if len(hits) > 0 {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err = s.cfg.Sink.Ingest(cctx, hits)
		cancel()
		var re *RejectedError
		if errors.As(err, &re) {
			// The sink stored the rest; these would be refused again
			// on every retry, so they are dropped, loudly.
			rejected, err = re.Rejected, nil
		}
		if err != nil {
			s.m.shipErrors.Inc()
			if ctx.Err() == nil {
				s.log.Warn("shipping hits failed; will retry", "err", err, "hits", len(hits))
			}
			if len(unreadable) > 0 {
				_ = s.deleteUnreadable(unreadable)
			}
			return 0, err
		}
	}
	if len(hits)+len(unreadable) == 0 {
		return 0, nil
	}
	for _, r := range rejected {
		s.log.Warn("relay rejected hit; dropped", "hit", r.ID, "index", r.Index, "reason", r.Reason)
	}
	ids := make([]string, 0, len(hits)+len(unreadable))
	for _, h := range hits {
		ids = append(ids, h.ID)
	}
	ids = append(ids, unreadable...)
	if err := s.cfg.Journal.Delete(ids); err != nil {
		// Shipped but still journaled: they go again, and the relay
		// drops the duplicates.
		s.log.Error("journal delete failed", "err", err)
		return 0, err
	}
	s.m.shipped.Add(float64(len(hits) - len(rejected)))
	s.m.dropped.WithLabelValues("rejected").Add(float64(len(rejected)))
	s.m.dropped.WithLabelValues("unreadable").Add(float64(len(unreadable)))
	return len(ids), nil
}

// deleteUnreadable deletes unreadable records while the sink is failing,
// so that they do not wait for the relay to come back.
func (s *Shipper) deleteUnreadable(ids []string) error {
	if err := s.cfg.Journal.Delete(ids); err != nil {
		s.log.Error("journal delete failed", "err", err)
		return err
	}
	s.m.dropped.WithLabelValues("unreadable").Add(float64(len(ids)))
	return nil
}

// Flush ships until the journal is empty, retrying with backoff, or until
// ctx ends (then it returns ctx's error with the hits left journaled).
func (s *Shipper) Flush(ctx context.Context) error {
	backoff := minBackoff
	for {
		n, err := s.shipOnce(ctx)
		if err == nil && n == 0 {
			return nil
		}
		if err == nil {
			backoff = minBackoff
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redirector: flush: %d hits left in the journal: %w", s.cfg.Journal.Len(), ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}
