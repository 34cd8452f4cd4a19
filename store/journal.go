package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The journal's one bucket: hit id -> JSON-encoded Hit. Hit ids start with
// the time, so the cursor walks oldest first.
var journalBucket = []byte("hits")

// ErrJournalClosed is returned by Append after Close.
var ErrJournalClosed = errors.New("store: journal closed")

// maxCommit bounds how many hits one group commit writes, so one slow
// commit does not grow without limit under load.
const maxCommit = 4096

// Journal is the redirector's own hit journal: a bbolt file in which every
// hit is made durable (fsynced) before the redirector answers, and from
// which the shipper sends hits to the relay and then deletes them.
//
// Append shares commits: one goroutine collects every hit that is waiting,
// writes them in one transaction and wakes all their callers. A Journal is
// safe for concurrent use.
type Journal struct {
	db   *bolt.DB
	ids  IDGen
	node string // random per process, appended to hit ids

	mu     sync.RWMutex // guards closed and sends on reqs
	closed bool
	reqs   chan *journalReq
	done   chan struct{} // closed when the commit loop has stopped

	n       atomic.Int64 // hits in the journal
	commits atomic.Int64 // group commits done
	waiters sync.Pool
}

type journalReq struct {
	key, val []byte
	del      [][]byte // when set, a delete of these keys instead of a put
	deleted  int64    // set by the loop: how many of del were there
	done     chan error
}

// OpenJournal opens (creating if needed) the journal at path. It waits at
// most a second for another process's lock.
func OpenJournal(path string) (*Journal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// The freelist is rebuilt on open instead of written on every
		// commit: commits stay small, and this file is small.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open journal %s: %w", path, err)
	}
	var n int
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(journalBucket)
		if err != nil {
			return err
		}
		n = b.Stats().KeyN
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open journal %s: %w", path, err)
	}
	var node [4]byte
	if _, err := rand.Read(node[:]); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open journal: %w", err)
	}
	j := &Journal{
		db:   db,
		node: hex.EncodeToString(node[:]),
		reqs: make(chan *journalReq, maxCommit),
		done: make(chan struct{}),
	}
	j.waiters.New = func() any { return make(chan error, 1) }
	j.n.Store(int64(n))
	go j.loop()
	return j, nil
}

// NewHitID returns a new hit id: 16 hex digits of a time-ordered id
// (FormatID) and 8 of a random number chosen when the journal was opened, so
// that redirectors behind one load balancer, and restarts of one, never
// make the same id. Ids sort by time.
func (j *Journal) NewHitID() string {
	return FormatID(j.ids.Next()) + j.node
}

// Append makes h durable: it returns nil only once h is written and
// fsynced. h.ID must be set (NewHitID). If ctx ends first Append returns
// ctx's error, and h may or may not be in the journal.
func (j *Journal) Append(ctx context.Context, h Hit) error {
	if h.ID == "" {
		return errors.New("store: journal: hit without id")
	}
	val, err := json.Marshal(&h)
	if err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	done := j.waiters.Get().(chan error)
	r := &journalReq{key: []byte(h.ID), val: val, done: done}
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return ErrJournalClosed
	}
	select {
	case j.reqs <- r:
	case <-ctx.Done():
		j.mu.RUnlock()
		return ctx.Err()
	}
	j.mu.RUnlock()
	select {
	case err := <-done:
		j.waiters.Put(done)
		return err
	case <-ctx.Done():
		return ctx.Err() // done is dropped: the loop's send does not block
	}
}

// AppendBatch makes h durable through bbolt's own DB.Batch instead of the
// journal's commit loop. It exists to compare the two (BenchmarkJournal).
func (j *Journal) AppendBatch(h Hit) error {
	val, err := json.Marshal(&h)
	if err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	err = j.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(journalBucket).Put([]byte(h.ID), val)
	})
	if err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	j.n.Add(1)
	return nil
}

// loop is the group commit: it takes whatever is waiting, writes it in one
// transaction, and answers every caller with the result.
func (j *Journal) loop() {
	defer close(j.done)
	batch := make([]*journalReq, 0, 64)
	for {
		r, ok := <-j.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
	collect:
		for len(batch) < maxCommit {
			select {
			case r, ok := <-j.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect
			}
		}
		var added int64
		err := j.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(journalBucket)
			added = 0
			for _, r := range batch {
				if r.del == nil {
					if err := b.Put(r.key, r.val); err != nil {
						return err
					}
					added++
					continue
				}
				r.deleted = 0
				for _, k := range r.del {
					if b.Get(k) == nil {
						continue
					}
					if err := b.Delete(k); err != nil {
						return err
					}
					r.deleted++
				}
				added -= r.deleted
			}
			return nil
		})
		if err != nil {
			err = fmt.Errorf("store: journal commit: %w", err)
		} else {
			j.n.Add(added)
			j.commits.Add(1)
		}
		for i, r := range batch {
			r.done <- err // buffered: never blocks
			batch[i] = nil
		}
	}
}

// Pending returns up to max journaled hits, oldest first.
func (j *Journal) Pending(max int) ([]Hit, error) {
	var hits []Hit
	err := j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(journalBucket).Cursor()
		for k, v := c.First(); k != nil && len(hits) < max; k, v = c.Next() {
			var h Hit
			if err := json.Unmarshal(v, &h); err != nil {
				// A record this code cannot read would block shipping
				// forever; it is kept under its key and skipped.
				continue
			}
			h.ID = string(k)
			hits = append(hits, h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: journal: %w", err)
	}
	return hits, nil
}

// Delete removes the hits with the given ids (shipped and acknowledged).
// It goes through the group commit, so under load it shares the fsync of
// hits being appended instead of paying for its own.
func (j *Journal) Delete(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	r := &journalReq{del: make([][]byte, len(ids)), done: make(chan error, 1)}
	for i, id := range ids {
		r.del[i] = []byte(id)
	}
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return ErrJournalClosed
	}
	j.reqs <- r
	j.mu.RUnlock()
	return <-r.done
}

// Len returns how many hits are in the journal (not yet shipped).
func (j *Journal) Len() int { return int(j.n.Load()) }

// Commits returns how many group commits the journal has made.
func (j *Journal) Commits() int64 { return j.commits.Load() }

// Oldest returns the time of the oldest journaled hit, from its id, and
// false when the journal is empty.
func (j *Journal) Oldest() (time.Time, bool) {
	var t time.Time
	var ok bool
	_ = j.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(journalBucket).Cursor().First()
		if len(k) >= 16 {
			if id, err := ParseID(string(k[:16])); err == nil {
				t, ok = IDTime(id), true
			}
		}
		return nil
	})
	return t, ok
}

// Contains reports whether a hit with id is in the journal.
func (j *Journal) Contains(id string) (bool, error) {
	var found bool
	err := j.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(journalBucket).Get([]byte(id)) != nil
		return nil
	})
	return found, err
}

// Close stops accepting hits, commits every hit already handed to Append,
// and closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	close(j.reqs)
	j.mu.Unlock()
	<-j.done
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("store: close journal: %w", err)
	}
	return nil
}
