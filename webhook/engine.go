package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/store"
)

// DB is what the engine needs from the store; every store.DB backend
// implements it.
type DB interface {
	store.RecordStore
	ClaimWebhooks(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.WebhookMessage, error)
	NextWebhookDue(ctx context.Context) (time.Time, bool, error)
	FinishWebhookAttempt(ctx context.Context, id string, a store.WebhookAttempt, state string, next time.Time) error
	WebhookQueue(ctx context.Context) ([]store.WebhookQueueStat, error)
}

var _ DB = store.DB(nil)

// DefaultSchedule is Standard Webhooks' retry schedule: the delay before
// each attempt, the first one immediate. The eighth failure is final;
// the last attempt comes 27h35m5s after the first.
var DefaultSchedule = []time.Duration{
	0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// Defaults for Config's zero values.
const (
	DefaultTimeout      = 15 * time.Second
	DefaultConcurrency  = 4
	DefaultMaxInFlight  = 2048
	DefaultDisableAfter = 5 * 24 * time.Hour
	DefaultLease        = 2 * time.Minute
	DefaultPoll         = 200 * time.Millisecond
	// MaxRetryAfter caps the wait a Retry-After can ask for.
	MaxRetryAfter = 24 * time.Hour
	// ResponseBytes is how much of an answer an attempt records.
	ResponseBytes = 1024
	// maxDrain is how much of an answer is read at most (then the
	// connection is closed rather than reused).
	maxDrain = 64 << 10
	// claimBatch is the most messages one claim takes.
	claimBatch = 256
)

// Config configures an Engine. Store is required.
type Config struct {
	Store DB
	Log   *slog.Logger // nil: discard
	// Registerer, when set, gets the engine's metrics.
	Registerer prometheus.Registerer
	// Policy says where requests may go.
	Policy Policy
	// Timeout bounds one attempt: connecting, TLS, sending and reading the
	// answer. 0 means DefaultTimeout.
	Timeout time.Duration
	// Concurrency is the most requests in flight to one endpoint (on this
	// node); 0 means DefaultConcurrency.
	Concurrency int
	// MaxInFlight bounds the messages held in memory, claimed and not yet
	// finished, over all endpoints; 0 means DefaultMaxInFlight.
	MaxInFlight int
	// Schedule is the delay before each attempt (the first is usually 0);
	// its length is the number of attempts. nil means DefaultSchedule.
	Schedule []time.Duration
	// DisableAfter disables an endpoint that has failed, without one
	// success, for this long; 0 means DefaultDisableAfter.
	DisableAfter time.Duration
	// Lease is how long a claimed message is kept from other workers and
	// nodes; a node that dies holding it delays it by this much. 0 means
	// DefaultLease. It must exceed Timeout.
	Lease time.Duration
	// Poll is how often an idle engine looks for new messages (the store
	// queues them with their events and tells nobody); 0 means
	// DefaultPoll.
	Poll time.Duration
	// Resolver resolves endpoint names; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// TLS, when set, is the TLS client configuration (a private CA).
	TLS *tls.Config
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// control, when set (tests), runs after the policy's check at every
	// connection.
	control func(network, address string) error
}

// Engine delivers queued webhook messages. Start it once; Shutdown stops it.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	metrics *metrics
	own     ownAddrs

	kick chan struct{} // wakes the dispatcher (buffered 1)

	runCtx    context.Context // ends at Shutdown: no new work
	stopRun   context.CancelFunc
	sendCtx   context.Context // ends when Shutdown gives up waiting: requests are cut
	stopSends context.CancelFunc
	wg        sync.WaitGroup
	started   bool

	mu      sync.Mutex
	held    map[string]*item     // claimed messages by id, until finished or dropped
	queues  map[string]*epQueue  // per endpoint
	eps     map[string]*endpoint // the records, by id
	version uint64               // RecordsVersion eps were read at
	loaded  bool
	dropped bool // a claim found an endpoint's queue full
}

// item is one claimed message in memory.
type item struct {
	msg      store.WebhookMessage
	deadline time.Time // the lease ends: sending must be done by then
}

// epQueue is one endpoint's messages waiting to be sent, how many
// workers send them, and how long its requests take.
type epQueue struct {
	items   []*item
	active  int
	latency time.Duration // moving average; 0 until the first request
}

// endpoint is a Webhook record with what the engine derives from it.
type endpoint struct {
	rec store.Webhook
}

// New returns an engine; it panics without a Store (a programming error).
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		panic("webhook: New needs a Store")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Schedule == nil {
		cfg.Schedule = DefaultSchedule
	}
	if len(cfg.Schedule) == 0 {
		return nil, errors.New("webhook: the schedule needs at least one attempt")
	}
	if cfg.DisableAfter <= 0 {
		cfg.DisableAfter = DefaultDisableAfter
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease <= cfg.Timeout {
		return nil, fmt.Errorf("webhook: lease %v must exceed the timeout %v", cfg.Lease, cfg.Timeout)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Engine{
		cfg:    cfg,
		log:    cfg.Log,
		kick:   make(chan struct{}, 1),
		held:   map[string]*item{},
		queues: map[string]*epQueue{},
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.client = e.newClient()
	e.metrics = newMetrics(e)
	if cfg.Registerer != nil {
		if err := e.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	e.runCtx, e.stopRun = context.WithCancel(context.Background())
	e.sendCtx, e.stopSends = context.WithCancel(context.Background())
	return e, nil
}

// newClient makes the HTTP client: every connection checked by the
// policy after DNS, no proxy (it would connect for us, unchecked), no
// redirects followed, bounded in time.
func (e *Engine) newClient() *http.Client {
	ctl := e.cfg.Policy.control(&e.own)
	d := &net.Dialer{
		Timeout:   e.cfg.Timeout,
		KeepAlive: 30 * time.Second,
		Resolver:  e.cfg.Resolver,
		Control: func(network, address string, c syscall.RawConn) error {
			if err := ctl(network, address, c); err != nil {
				return err
			}
			if e.cfg.control != nil {
				return e.cfg.control(network, address)
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        e.cfg.TLS,
		TLSHandshakeTimeout:    e.cfg.Timeout,
		ResponseHeaderTimeout:  e.cfg.Timeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    e.cfg.Concurrency,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true, // answers are bounded in bytes as sent
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       e.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Start runs the dispatcher. It owns every goroutine it starts; Shutdown
// waits for them.
func (e *Engine) Start() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return
	}
	e.started = true
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.dispatch()
	}()
}

// Shutdown stops claiming and sending. Requests in flight may finish
// until ctx ends; then they are cut off, and their messages (not
// recorded) are sent again once their lease ends, here or on another
// node. Messages claimed but not yet sent are left to their lease the
// same way.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.stopRun()
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		e.stopSends()
		<-done
	}
	e.stopSends()
	e.client.CloseIdleConnections()
	return err
}

// Kick makes the engine look for due messages now (a test event or a
// resend was just queued).
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// CheckURL reports whether raw may be an endpoint URL under the
// engine's policy.
func (e *Engine) CheckURL(raw string) error { return e.cfg.Policy.CheckURL(raw) }

// dispatch claims due messages and hands them to the endpoints' workers
// until Shutdown.
func (e *Engine) dispatch() {
	ctx := e.runCtx
	var fails int
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait, err := e.dispatchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			wait = min(time.Duration(fails)*time.Second, 30*time.Second)
			e.log.Error("webhook dispatch failed", "err", err, "retry_in", wait)
		} else {
			fails = 0
		}
		if wait <= 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}

// dispatchOnce claims what is due and returns how long to wait before
// looking again (0: at once, more may be due).
func (e *Engine) dispatchOnce(ctx context.Context) (time.Duration, error) {
	if err := e.loadEndpoints(ctx, false); err != nil {
		return 0, err
	}
	now := e.cfg.Now()
	due, ok, err := e.cfg.Store.NextWebhookDue(ctx)
	if err != nil {
		return 0, err
	}
	if !ok {
		return e.cfg.Poll, nil
	}
	if wait := due.Sub(now); wait > 0 {
		return min(wait, e.cfg.Poll), nil
	}
	e.mu.Lock()
	room := e.cfg.MaxInFlight - len(e.held)
	e.mu.Unlock()
	if room <= 0 {
		return e.cfg.Poll, nil // the first message released kicks us sooner
	}
	limit := min(room, claimBatch)
	msgs, err := e.cfg.Store.ClaimWebhooks(ctx, now, e.cfg.Lease, limit)
	if err != nil {
		return 0, err
	}
	deadline := now.Add(e.cfg.Lease)
	reloaded := false
	for i := range msgs {
		e.take(ctx, &msgs[i], deadline, &reloaded)
	}
	e.mu.Lock()
	dropped := e.dropped
	e.dropped = false
	e.mu.Unlock()
	if len(msgs) == limit && !dropped {
		return 0, nil // more may be due
	}
	// Nothing more is due, or what is due waits for a busy endpoint:
	// claiming it again at once would only move its lease.
	return e.cfg.Poll, nil
}

// loadEndpoints reads the endpoint records again when they changed (or
// always, with force).
func (e *Engine) loadEndpoints(ctx context.Context, force bool) error {
	v, err := e.cfg.Store.RecordsVersion(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	fresh := e.loaded && v == e.version
	e.mu.Unlock()
	if fresh && !force {
		return nil
	}
	recs, err := store.List[store.Webhook](ctx, e.cfg.Store, store.KindWebhook, "")
	if err != nil {
		return err
	}
	eps := make(map[string]*endpoint, len(recs))
	for _, r := range recs {
		eps[r.ID] = &endpoint{rec: r}
	}
	e.mu.Lock()
	e.eps, e.version, e.loaded = eps, v, true
	for id, q := range e.queues {
		if eps[id] == nil && q.active == 0 && len(q.items) == 0 {
			delete(e.queues, id)
		}
	}
	e.mu.Unlock()
	return nil
}

// take places a claimed message: with its endpoint's workers, or back
// to the store when the endpoint cannot take it now. A message for an
// endpoint not known here makes the records be read again, once per
// claim (*reloaded).
func (e *Engine) take(ctx context.Context, m *store.WebhookMessage, deadline time.Time, reloaded *bool) {
	e.mu.Lock()
	if it, ok := e.held[m.ID]; ok {
		// Claimed again while waiting here (its lease ran out): the new
		// claim extends it.
		it.deadline = deadline
		e.mu.Unlock()
		return
	}
	ep := e.eps[m.Endpoint]
	e.mu.Unlock()
	if ep == nil && !*reloaded {
		// Maybe made a moment ago: read the records once more.
		if err := e.loadEndpoints(ctx, true); err != nil {
			return // unsure: it waits for its lease to end
		}
		*reloaded = true
		e.mu.Lock()
		ep = e.eps[m.Endpoint]
		e.mu.Unlock()
	}
	switch {
	case ep == nil:
		e.finishUnsent(m, "endpoint deleted")
		return
	case ep.rec.Disabled != "":
		e.finishUnsent(m, "endpoint disabled: "+ep.rec.Disabled)
		return
	case ep.rec.Paused:
		// It stays pending and comes back when its lease ends.
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	q := e.queues[m.Endpoint]
	if q == nil {
		q = &epQueue{}
		e.queues[m.Endpoint] = q
	}
	if !e.fits(q, len(q.items), deadline, e.cfg.Now()) {
		e.dropped = true
		return // a slow endpoint: the message waits for its lease to end
	}
	it := &item{msg: *m, deadline: deadline}
	e.held[m.ID] = it
	q.items = append(q.items, it)
	if q.active < e.cfg.Concurrency {
		q.active++
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.work(m.Endpoint, q)
		}()
	}
}

// fits reports whether a message at position pos of q's queue would be
// sent before its lease ends (deadline), at the pace the endpoint's
// requests take. A fast receiver so holds many, a slow one few: the rest
// wait in the store for their lease to end, leaving room for others.
// Until its first answer an endpoint may hold up to MaxInFlight; what it
// then cannot send in time is let go (paced).
func (e *Engine) fits(q *epQueue, pos int, deadline, now time.Time) bool {
	if q.latency <= 0 {
		return pos < e.cfg.MaxInFlight
	}
	wait := time.Duration(pos/e.cfg.Concurrency+1) * q.latency
	return now.Add(wait + e.cfg.Timeout).Before(deadline)
}

// finishUnsent ends a message that will not be sent.
func (e *Engine) finishUnsent(m *store.WebhookMessage, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := store.WebhookAttempt{Message: m.ID, Endpoint: m.Endpoint, Time: e.cfg.Now().UTC(), Error: reason}
	if err := e.cfg.Store.FinishWebhookAttempt(ctx, m.ID, a, store.WebhookFailed, time.Time{}); err != nil {
		e.log.Error("webhook finish failed", "message", m.ID, "err", err)
		return
	}
	e.metrics.attempts.WithLabelValues(outcomeFailed).Inc()
}

// work sends one endpoint's messages, one at a time, until its queue is
// empty or the engine stops. Each attempt is recorded on a goroutine of
// its own, so the store's group commit takes many at once and the next
// request need not wait for the disk.
func (e *Engine) work(endpointID string, q *epQueue) {
	for {
		e.mu.Lock()
		if len(q.items) == 0 || e.runCtx.Err() != nil {
			q.active--
			if e.runCtx.Err() != nil {
				// Left to their leases.
				for _, it := range q.items {
					delete(e.held, it.msg.ID)
				}
				q.items = nil
			}
			e.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		ep := e.eps[endpointID]
		late := e.cfg.Now().Add(e.cfg.Timeout).After(it.deadline)
		e.mu.Unlock()
		var record func()
		if !late {
			var sent bool
			var lat time.Duration
			record, sent, lat = e.deliver(ep, it)
			if sent {
				e.paced(q, lat)
			}
		}
		if record == nil {
			e.release(it)
			continue
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			record()
			e.release(it)
		}()
	}
}

// paced notes a request's latency and lets go of the messages the
// endpoint cannot send within their lease at that pace.
func (e *Engine) paced(q *epQueue, lat time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if q.latency == 0 {
		q.latency = max(lat, time.Microsecond)
	} else {
		q.latency = max((q.latency*7+lat)/8, time.Microsecond)
	}
	now, c := e.cfg.Now(), len(q.items)
	for c > 0 && !e.fits(q, c-1, q.items[c-1].deadline, now) {
		c--
	}
	for _, it := range q.items[c:] {
		delete(e.held, it.msg.ID)
	}
	clear(q.items[c:])
	q.items = q.items[:c]
}

// release forgets a finished (or dropped) message, and wakes the
// dispatcher if it waits for room.
func (e *Engine) release(it *item) {
	e.mu.Lock()
	full := len(e.held) >= e.cfg.MaxInFlight
	delete(e.held, it.msg.ID)
	e.mu.Unlock()
	if full {
		e.Kick()
	}
}
