package redirector

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/store"
)

type metrics struct {
	requests      *prometheus.CounterVec
	hits          *prometheus.CounterVec
	outcome       map[string]prometheus.Counter // requests by outcome, resolved once
	hitKind       map[string]prometheus.Counter
	journalErrors prometheus.Counter
	shipped       prometheus.Counter
	shipErrors    prometheus.Counter
	dropped       *prometheus.CounterVec // by reason: rejected, unreadable
}

// outcomes are the values of the requests counter's label.
var outcomes = []string{"redirect", "pixel", "health", "method", "bad_request", "unavailable",
	"not_found_host", "not_found_path", "not_found_token", "not_found_expired", "not_found_location", "not_found_kind"}

// count adds one request with outcome o (one of outcomes).
func (m *metrics) count(o string) {
	if c, ok := m.outcome[o]; ok {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(o).Inc()
}

func newMetrics(reg prometheus.Registerer, j *store.Journal, now func() time.Time) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_redirector_requests_total",
			Help: "Requests to the redirector by outcome.",
		}, []string{"outcome"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_redirector_hits_total",
			Help: "Hits made durable in the journal, by kind (click, image, pixel).",
		}, []string{"kind"}),
		journalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackrelay_redirector_journal_errors_total",
			Help: "Hits the journal could not keep, answered 503 (never a 302).",
		}),
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackrelay_redirector_shipped_hits_total",
			Help: "Hits the relay acknowledged.",
		}),
		shipErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackrelay_redirector_ship_errors_total",
			Help: "Failed attempts to ship a batch of hits to the relay.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_redirector_dropped_hits_total",
			Help: "Journal records not shipped and deleted: refused by the relay (rejected) or unreadable.",
		}, []string{"reason"}),
	}
	m.outcome, m.hitKind = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, o := range outcomes {
		m.outcome[o] = m.requests.WithLabelValues(o)
	}
	for _, k := range []string{"click", "image", "pixel"} {
		m.hitKind[k] = m.hits.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{
		m.requests, m.hits, m.journalErrors, m.shipped, m.shipErrors, m.dropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trackrelay_redirector_journal_pending_hits",
			Help: "Hits in the journal not yet acknowledged by the relay.",
		}, func() float64 { return float64(j.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trackrelay_redirector_journal_lag_seconds",
			Help: "Age of the oldest hit not yet acknowledged by the relay.",
		}, func() float64 {
			if t, ok := j.Oldest(); ok {
				return now().Sub(t).Seconds()
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "trackrelay_redirector_journal_commits_total",
			Help: "Group commits (writes) into the journal's hit log.",
		}, func() float64 { return float64(j.Commits()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "trackrelay_redirector_journal_flushes_total",
			Help: "fdatasyncs of the journal's hit log.",
		}, func() float64 { return float64(j.Flushes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trackrelay_redirector_journal_unsynced_bytes",
			Help: "Bytes written to the hit log and not yet fdatasynced (process durability).",
		}, func() float64 {
			w, s := j.LogPosition()
			return float64(w - s)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trackrelay_redirector_journal_ready",
			Help: "1 when the journal can keep new hits, 0 when they are answered 503.",
		}, func() float64 {
			if j.Ready() != nil {
				return 0
			}
			return 1
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("redirector: metrics: %w", err)
		}
	}
	return m, nil
}
