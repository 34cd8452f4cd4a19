package smtpd

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// Store is what the spool and delivery need from persistence; every
// store.DB backend implements it.
type Store interface {
	NextID() uint64
	AddMessage(ctx context.Context, m *store.Message, copies []*store.Copy, events []store.Event) error
	UpdateCopy(ctx context.Context, c *store.Copy, events []store.Event) (last bool, err error)
	Message(ctx context.Context, id uint64) (*store.Message, error)
	Copy(ctx context.Context, id uint64) (*store.Copy, error)
	QueuedCopies(ctx context.Context, fn func(*store.Copy) error) error
	SpoolFiles(ctx context.Context, fn func(name string)) error
	SetBeforeCommit(fn func() error)
	// PutMessageLinks and HasMessageLinks record each message's link
	// positions once, when its first copy is rewritten.
	PutMessageLinks(ctx context.Context, message uint64, links []store.MessageLink) error
	HasMessageLinks(ctx context.Context, message uint64) (bool, error)
	// LookupAddresses and AppendEvents serve the suppression and
	// no-tracking lists: suppressed recipients are refused (and the
	// refusal logged), listed ones sent untracked.
	LookupAddresses(ctx context.Context, list, account string, addresses []string) (map[string]*store.AddressEntry, error)
	AppendEvents(ctx context.Context, events []store.Event) error
}

var _ Store = (*store.Relay)(nil)

// QueueConfig configures delivery.
type QueueConfig struct {
	Store     Store
	Spool     *Spool
	Upstreams map[string]Upstream // by name, as copies name them
	Codec     *rewrite.Codec
	// ClickDomains are hosts whose links are never rewritten (each copy's
	// own click domain is always one).
	ClickDomains []string
	DKIM         *DKIM         // signs copies with active keys (sign.go); nil signs nothing
	VERP         *VERP         // gives each copy its own envelope sender (verp.go); nil keeps them
	Workers      int           // deliveries at once; default 16
	RetryBase    time.Duration // first retry delay, doubling; default 1m
	RetryMax     time.Duration // backoff cap; default 1h
	MaxAge       time.Duration // a copy older than this fails; default 5 days
	Logger       *slog.Logger
	// Registerer, when set, gets the queue's metrics.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Queue schedules copies for delivery and runs the workers. Copies wait
// in memory ordered by their next attempt; the store holds the truth, and
// NewQueue loads every copy that is not final, so a restart delivers what
// a crash left queued.
type Queue struct {
	cfg QueueConfig
	log *slog.Logger

	mu      sync.Mutex
	items   copyHeap
	queued  map[uint64]bool // in items or being delivered
	wake    chan struct{}   // closed and replaced when items change
	stopped bool

	workCtx    context.Context // in-flight tries; cancelled to abandon them
	cancelWork context.CancelFunc
	wg         sync.WaitGroup

	m queueMetrics

	linksMu sync.Mutex
	links   map[uint64]struct{} // messages whose links are recorded
}

type queueMetrics struct {
	depth      prometheus.GaugeFunc
	deliveries *prometheus.CounterVec
}

// NewQueue returns a queue holding every copy the store has not finished.
func NewQueue(cfg QueueConfig) (*Queue, error) {
	if cfg.Store == nil || cfg.Spool == nil || cfg.Codec == nil {
		return nil, errors.New("smtpd: queue: Store, Spool and Codec are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Minute
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = max(time.Hour, cfg.RetryBase)
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 5 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	q := &Queue{cfg: cfg, log: cfg.Logger, queued: map[uint64]bool{}, wake: make(chan struct{})}
	q.workCtx, q.cancelWork = context.WithCancel(context.Background())
	q.m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackrelay_deliveries_total",
		Help: "Delivery tries by outcome: delivered, deferred (will retry) or failed (final).",
	}, []string{"outcome"})
	q.m.depth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "trackrelay_queue_depth",
		Help: "Copies waiting for delivery or being delivered.",
	}, func() float64 { return float64(q.Len()) })
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(q.m.deliveries); err != nil {
			return nil, err
		}
		if err := cfg.Registerer.Register(q.m.depth); err != nil {
			return nil, err
		}
	}
	var loaded []*store.Copy
	err := cfg.Store.QueuedCopies(context.Background(), func(c *store.Copy) error {
		loaded = append(loaded, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	q.Add(loaded)
	if len(loaded) > 0 {
		q.log.Info("queue recovered copies", "copies", len(loaded))
	}
	return q, nil
}

// Len returns how many copies are queued or being delivered.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queued)
}

// Add queues copies (already recorded in the store). A copy queued already
// is ignored.
func (q *Queue) Add(copies []*store.Copy) {
	q.mu.Lock()
	defer q.mu.Unlock()
	added := false
	for _, c := range copies {
		if c.Final() || q.queued[c.ID] {
			continue
		}
		q.queued[c.ID] = true
		heap.Push(&q.items, c)
		added = true
	}
	if added {
		close(q.wake)
		q.wake = make(chan struct{})
	}
}

// Run starts the workers and returns at once. Stop them with Shutdown.
func (q *Queue) Run() {
	for range q.cfg.Workers {
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			q.worker()
		}()
	}
}

// Shutdown stops taking work and waits for tries in flight until ctx ends;
// then it abandons them (their copies stay queued in the store, to be
// retried on the next start) and waits for the workers to return.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.mu.Lock()
	q.stopped = true
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
	done := make(chan struct{})
	go func() {
		q.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		q.cancelWork()
		return nil
	case <-ctx.Done():
		q.cancelWork()
		<-done
		return ctx.Err()
	}
}

// next blocks until a copy is due, and takes it; nil when stopped.
func (q *Queue) next() *store.Copy {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		q.mu.Lock()
		if q.stopped {
			q.mu.Unlock()
			return nil
		}
		wake := q.wake
		var wait time.Duration = -1
		if len(q.items) > 0 {
			top := q.items[0]
			d := top.NextAttempt.Sub(q.cfg.Now())
			if d <= 0 {
				c := heap.Pop(&q.items).(*store.Copy)
				q.mu.Unlock()
				return c
			}
			wait = d
		}
		q.mu.Unlock()
		var tc <-chan time.Time
		if wait >= 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tc = timer.C
		}
		select {
		case <-wake:
		case <-tc:
		}
	}
}

func (q *Queue) worker() {
	for {
		c := q.next()
		if c == nil {
			return
		}
		q.deliverCopy(q.workCtx, c)
	}
}

// requeue puts c back for its next attempt, or forgets it once final.
func (q *Queue) requeue(c *store.Copy) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.Final() {
		delete(q.queued, c.ID)
		return
	}
	heap.Push(&q.items, c)
	close(q.wake)
	q.wake = make(chan struct{})
}

// forget drops c from the in-memory queue without touching the store: an
// abandoned try, retried on the next start.
func (q *Queue) forget(c *store.Copy) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.queued, c.ID)
}

// copyHeap orders copies by next attempt, then id.
type copyHeap []*store.Copy

func (h copyHeap) Len() int { return len(h) }
func (h copyHeap) Less(i, j int) bool {
	if !h[i].NextAttempt.Equal(h[j].NextAttempt) {
		return h[i].NextAttempt.Before(h[j].NextAttempt)
	}
	return h[i].ID < h[j].ID
}
func (h copyHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *copyHeap) Push(x any)   { *h = append(*h, x.(*store.Copy)) }
func (h *copyHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
