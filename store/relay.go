package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// relayBuckets are the top-level buckets of the relay database, created at
// open. Other files of this package append theirs from init() with
// registerRelayBuckets.
var relayBuckets [][]byte

// registerRelayBuckets adds top-level buckets that OpenRelay creates. Call
// it only from init().
func registerRelayBuckets(names ...string) {
	for _, n := range names {
		relayBuckets = append(relayBuckets, []byte(n))
	}
}

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// RelayOptions tune OpenRelay. The zero value is the safe default.
type RelayOptions struct {
	// LockTimeout bounds the wait for another process holding the file;
	// 0 means 5 seconds.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for tests and benchmarks.
	NoSync bool
	Logger *slog.Logger
}

// Relay is the relay's database: spooled messages, their copies and the
// event logs. Its methods are safe for concurrent use. Writes from
// concurrent callers share one commit (group commit), so each caller pays
// for one fsync shared with every writer that arrived meanwhile.
type Relay struct {
	db  *bolt.DB
	log *slog.Logger
	ids IDGen

	reqs chan *commitReq
	stop chan struct{}
	done chan struct{}

	beforeCommit atomic.Pointer[func() error]

	carried     DeliveryTally // delivered copies for the link figures (relay_carried.go)
	carriedDone chan struct{}

	closeOnce sync.Once
	mu        sync.RWMutex // guards closed against writes racing Close
	closed    bool
}

type commitReq struct {
	fn   func(*bolt.Tx) error
	err  chan error
	hook bool // run the before-commit hook first (see SetBeforeCommit)
}

// OpenRelay opens (creating if needed) the relay database at path.
func OpenRelay(path string, opts RelayOptions) (*Relay, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType, NoFreelistSync: true, InitialMmapSize: 128 << 20})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range relayBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("store: bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	r := &Relay{
		db:   db,
		log:  opts.Logger,
		reqs: make(chan *commitReq, 1024),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	r.carriedDone = make(chan struct{})
	go r.commitLoop()
	go r.carriedLoop()
	return r, nil
}

// Close waits for pending commits and closes the database. It is safe to
// call twice.
func (r *Relay) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.stop)
		<-r.done
		<-r.carriedDone
		err = r.db.Close()
	})
	return err
}

// NextID returns a new unique, time-ordered id for a message or copy.
func (r *Relay) NextID() uint64 { return r.ids.Next() }

// update runs fn in a write transaction shared with concurrent callers and
// returns once it is committed (and fsynced). fn may run more than once
// (when another function in its group fails, the group is retried without
// it), so it must be idempotent and must not keep state between runs.
func (r *Relay) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	return r.updateHook(ctx, fn, false)
}

// SetBeforeCommit sets fn to run once before each group commit that holds
// a new message (AddMessage): the spool passes the fsync of its folder, so
// one folder fsync covers every spool file whose record is in the group,
// and no record is committed before the file it points to is durable.
func (r *Relay) SetBeforeCommit(fn func() error) {
	r.beforeCommit.Store(&fn)
}

func (r *Relay) updateHook(ctx context.Context, fn func(*bolt.Tx) error, hook bool) error {
	req := &commitReq{fn: fn, err: make(chan error, 1), hook: hook}
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return ErrClosed
	}
	select {
	case r.reqs <- req:
	case <-ctx.Done():
		r.mu.RUnlock()
		return ctx.Err()
	}
	r.mu.RUnlock()
	// Once queued, the request is committed even if ctx ends: a caller
	// must not be told "failed" about a write that then lands.
	return <-req.err
}

const maxGroup = 512

// commitLoop commits queued functions in groups: everything that queued
// while the previous commit ran goes into the next one.
func (r *Relay) commitLoop() {
	defer close(r.done)
	group := make([]*commitReq, 0, maxGroup)
	for {
		group = group[:0]
		select {
		case req := <-r.reqs:
			group = append(group, req)
		case <-r.stop:
			// Writers are fenced off by closed; drain what got in.
			for {
				select {
				case req := <-r.reqs:
					r.commitGroup([]*commitReq{req})
				default:
					return
				}
			}
		}
	fill:
		for len(group) < maxGroup {
			select {
			case req := <-r.reqs:
				group = append(group, req)
			default:
				break fill
			}
		}
		r.commitGroup(group)
	}
}

// commitGroup runs every function of group in one transaction. If one
// fails, it is answered with its error and the rest are retried.
func (r *Relay) commitGroup(group []*commitReq) {
	if hp := r.beforeCommit.Load(); hp != nil && *hp != nil {
		hooked := false
		for _, req := range group {
			hooked = hooked || req.hook
		}
		if hooked {
			if err := (*hp)(); err != nil {
				kept := group[:0:0]
				for _, req := range group {
					if req.hook {
						req.err <- fmt.Errorf("store: before commit: %w", err)
					} else {
						kept = append(kept, req)
					}
				}
				group = kept
			}
		}
	}
	for len(group) > 0 {
		failed := -1
		var ferr error
		err := r.db.Update(func(tx *bolt.Tx) error {
			for i, req := range group {
				if err := safeCall(req.fn, tx); err != nil {
					failed, ferr = i, err
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, req := range group {
				req.err <- err
			}
			return
		}
		group[failed].err <- ferr
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}

func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: panic in update: %v", p)
		}
	}()
	return fn(tx)
}
