package webhook

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/store"
)

// metrics are the engine's Prometheus metrics. The queue's depth and age
// per endpoint are read from the store when scraped (at most every
// queueTTL: the read walks every pending message).
type metrics struct {
	e        *Engine
	attempts *prometheus.CounterVec
	latency  prometheus.Histogram
	disabled *prometheus.CounterVec

	depthDesc, ageDesc, heldDesc, offDesc *prometheus.Desc

	mu     sync.Mutex
	queue  []store.WebhookQueueStat
	readAt time.Time
}

const queueTTL = 5 * time.Second

func newMetrics(e *Engine) *metrics {
	return &metrics{
		e: e,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_webhook_attempts_total",
			Help: "Webhook delivery attempts by outcome: delivered, retry (failed, tried again later), failed (for good).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trackrelay_webhook_attempt_seconds",
			Help:    "Time from sending a webhook to the end of its answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}),
		disabled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackrelay_webhook_endpoints_disabled_total",
			Help: "Webhook endpoints disabled after failing for too long, by account.",
		}, []string{"account"}),
		depthDesc: prometheus.NewDesc("trackrelay_webhook_queue_depth",
			"Webhook messages waiting (pending) per endpoint.", []string{"account", "endpoint"}, nil),
		ageDesc: prometheus.NewDesc("trackrelay_webhook_queue_oldest_seconds",
			"Age of the oldest pending webhook message per endpoint.", []string{"account", "endpoint"}, nil),
		heldDesc: prometheus.NewDesc("trackrelay_webhook_in_flight",
			"Webhook messages claimed by this node and not yet finished.", nil, nil),
		offDesc: prometheus.NewDesc("trackrelay_webhook_endpoint_disabled",
			"1 for each webhook endpoint that is disabled (failing too long).", []string{"account", "endpoint"}, nil),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.attempts, m.latency, m.disabled, m} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.depthDesc
	ch <- m.ageDesc
	ch <- m.heldDesc
	ch <- m.offDesc
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	m.mu.Lock()
	if now.Sub(m.readAt) >= queueTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		q, err := m.e.cfg.Store.WebhookQueue(ctx)
		cancel()
		if err == nil {
			m.queue, m.readAt = q, now
		} else {
			m.e.log.Warn("webhook queue metrics unavailable", "err", err)
		}
	}
	queue := m.queue
	m.mu.Unlock()
	for _, s := range queue {
		ch <- prometheus.MustNewConstMetric(m.depthDesc, prometheus.GaugeValue, float64(s.Depth), s.Account, s.Endpoint)
		ch <- prometheus.MustNewConstMetric(m.ageDesc, prometheus.GaugeValue, max(now.Sub(s.Oldest).Seconds(), 0), s.Account, s.Endpoint)
	}
	m.e.mu.Lock()
	held := len(m.e.held)
	var off [][2]string
	for _, ep := range m.e.eps {
		if ep.rec.Disabled != "" {
			off = append(off, [2]string{ep.rec.Account, ep.rec.ID})
		}
	}
	m.e.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.heldDesc, prometheus.GaugeValue, float64(held))
	for _, o := range off {
		ch <- prometheus.MustNewConstMetric(m.offDesc, prometheus.GaugeValue, 1, o[0], o[1])
	}
}
