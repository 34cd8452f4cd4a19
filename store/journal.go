package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
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

// preallocChunk is how far ahead of bbolt's high-water mark the journal
// file is kept written with zeros. On ext4 (and most file systems) an
// fdatasync after writing into a hole or past the end of the file must
// also commit the block allocation through the file system's own journal,
// and waits behind every other process's metadata commits; an overwrite of
// blocks that already exist only flushes the data. bbolt writes new pages
// past its high-water mark and grows the file with ftruncate, which leaves
// a hole, so without this every commit that touches a new page paid for a
// metadata commit. Pages freed by the shipper's deletes are reused, so in
// steady state the file stops growing.
const preallocChunk = 4 << 20

// moverLinger spaces the mover's bbolt commits (see mover).
const moverLinger = 10 * time.Millisecond

// Journal is the redirector's own hit journal, in which every hit is made
// durable (fsynced) before the redirector answers, and from which the
// shipper sends hits to the relay and then deletes them. It is a bbolt
// file with an append log in front (see hitlog.go): Append writes to the
// log with one fdatasync shared by every hit waiting at that moment, and a
// mover puts logged hits into bbolt, where Next, Delete and the rest see
// them.
//
// A Journal is safe for concurrent use.
type Journal struct {
	db   *bolt.DB
	ids  IDGen
	node string // random per process, appended to hit ids
	path string

	mu     sync.RWMutex // guards closed and sends on reqs
	closed bool
	reqs   chan *journalReq
	done   chan struct{} // closed when the log writer has stopped

	// Owned by the writer goroutine.
	segs    [2]logSeg
	cur     int
	nextGen uint64
	seq     uint64
	buf     []byte

	// The mover's queue; mmu guards these and mcond signals changes.
	mmu       sync.Mutex
	mcond     *sync.Cond
	mq        []logRec      // logged, not yet in bbolt
	mdel      []*journalReq // deletes waiting
	written   uint64        // seq of the last record logged
	moved     uint64        // seq of the last record in bbolt
	moveFail  bool          // the last move failed (callers do not wait)
	stop      bool          // the writer has stopped: drain and exit
	moverDone chan struct{}

	filesz int64        // bytes of the bbolt file known to be written; mover only
	growMu sync.RWMutex // ensureRoom excludes AppendBatch's commits

	n        atomic.Int64 // hits in bbolt
	queued   atomic.Int64 // hits logged, not yet in bbolt
	commits  atomic.Int64 // group commits (log fsyncs) done
	commitNs atomic.Int64 // time spent in them
	waiters  sync.Pool
}

type journalReq struct {
	key, val []byte
	del      [][]byte // Delete's keys (to the mover)
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
		// Map ahead so that growth within the preallocated file never
		// remaps (a remap waits for every reader, the shipper's included).
		InitialMmapSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open journal %s: %w", path, err)
	}
	db.AllocSize = preallocChunk // should bbolt grow the file itself
	j := &Journal{
		db:        db,
		path:      path,
		reqs:      make(chan *journalReq, maxCommit),
		done:      make(chan struct{}),
		moverDone: make(chan struct{}),
	}
	j.mcond = sync.NewCond(&j.mmu)
	if err := j.recover(); err != nil {
		j.closeFiles()
		_ = db.Close()
		return nil, fmt.Errorf("store: open journal %s: %w", path, err)
	}
	var node [4]byte
	if _, err := rand.Read(node[:]); err != nil {
		j.closeFiles()
		_ = db.Close()
		return nil, fmt.Errorf("store: open journal: %w", err)
	}
	j.node = hex.EncodeToString(node[:])
	if err := j.ensureRoom(); err != nil {
		j.closeFiles()
		_ = db.Close()
		return nil, err
	}
	j.waiters.New = func() any { return make(chan error, 1) }
	go j.loop()
	go j.mover()
	return j, nil
}

// recover opens the log's segments, puts every logged hit that bbolt does
// not have into it (a crash between the log's fsync and the mover), and
// starts both segments on new generations.
func (j *Journal) recover() error {
	for i := range j.segs {
		f, err := openSeg(j.path, i)
		if err != nil {
			return err
		}
		j.segs[i].f = f
	}
	var maxGen uint64
	err := j.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(journalBucket)
		if err != nil {
			return err
		}
		lb, err := tx.CreateBucketIfNotExists(logBucket)
		if err != nil {
			return err
		}
		b.FillPercent = 1.0
		n := int64(b.Stats().KeyN) // before the puts: Stats reads committed pages
		for i := range j.segs {
			f := j.segs[i].f
			gen, err := segGen(f)
			if err != nil {
				return err
			}
			// The watermark applies only if it is this generation's.
			var from int64
			if wgen, wend, ok := decodeWatermark(lb.Get(watermarkKey(i))); ok {
				maxGen = max(maxGen, wgen)
				if wgen == gen {
					from = wend
				}
			}
			if err := readSeg(f, gen, from, func(k, v []byte) error {
				if b.Get(k) == nil {
					n++
				}
				return b.Put(k, v)
			}); err != nil {
				return err
			}
			maxGen = max(maxGen, gen)
		}
		j.n.Store(n)
		return nil
	})
	if err != nil {
		return err
	}
	// Only now that bbolt holds them: new generations make what the
	// segments hold unreadable.
	for i := range j.segs {
		maxGen++
		s := &j.segs[i]
		s.gen, s.off = maxGen, logHeader
		if _, err := s.f.WriteAt(segHeader(s.gen), 0); err != nil {
			return fmt.Errorf("store: hit log: %w", err)
		}
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("store: hit log: %w", err)
		}
	}
	j.nextGen = maxGen
	return nil
}

func (j *Journal) closeFiles() {
	for i := range j.segs {
		if j.segs[i].f != nil {
			_ = j.segs[i].f.Close()
		}
	}
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
	if h.ID == "" || len(h.ID) > 255 {
		return errors.New("store: journal: hit without a valid id")
	}
	val, err := json.Marshal(&h)
	if err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	if len(val) > maxLogBatch/2 {
		return errLogRecord
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
// journal's log. It exists to compare the two (BenchmarkJournal).
func (j *Journal) AppendBatch(h Hit) error {
	val, err := json.Marshal(&h)
	if err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	j.growMu.RLock()
	defer j.growMu.RUnlock()
	err = j.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(journalBucket).Put([]byte(h.ID), val)
	})
	if err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	j.n.Add(1)
	return nil
}

// loop is the group commit into the log: it takes whatever is waiting,
// writes it with one write and one fdatasync, answers every caller, and
// hands the records to the mover.
func (j *Journal) loop() {
	defer close(j.done)
	defer func() {
		j.mmu.Lock()
		j.stop = true
		j.mcond.Broadcast()
		j.mmu.Unlock()
	}()
	batch := make([]*journalReq, 0, 64)
	for {
		r, ok := <-j.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		size := len(r.key) + len(r.val) + logRecHeader
	collect:
		for len(batch) < maxCommit && size < maxLogBatch/2 {
			select {
			case r, ok := <-j.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
				size += len(r.key) + len(r.val) + logRecHeader
			default:
				break collect
			}
		}
		start := time.Now()
		err := j.writeLog(batch, size)
		if err != nil {
			err = fmt.Errorf("store: journal commit: %w", err)
		} else {
			j.commits.Add(1)
			j.commitNs.Add(int64(time.Since(start)))
		}
		for i, r := range batch {
			r.done <- err // buffered: never blocks
			batch[i] = nil
		}
	}
}

// writeLog appends batch (size bytes framed) to the current segment,
// switching segments when it does not fit, and makes it durable.
func (j *Journal) writeLog(batch []*journalReq, size int) error {
	seg := &j.segs[j.cur]
	if seg.off+int64(size) > logSegSize {
		// The other segment is reused once the mover has put everything
		// it holds into bbolt; it long has, unless bbolt is failing.
		other := 1 - j.cur
		j.mmu.Lock()
		for j.moved < j.segs[other].end {
			j.mcond.Wait()
		}
		j.mmu.Unlock()
		j.nextGen++
		j.cur, seg = other, &j.segs[other]
		seg.gen, seg.off = j.nextGen, 0
	}
	buf := j.buf[:0]
	at := seg.off
	if at == 0 {
		buf = append(buf, segHeader(seg.gen)...)
	}
	recs := make([]logRec, len(batch))
	for i, r := range batch {
		buf = appendRec(buf, seg.gen, r.key, r.val)
		recs[i] = logRec{key: r.key, val: r.val, seg: j.cur, gen: seg.gen, end: at + int64(len(buf))}
	}
	j.buf = buf
	if _, err := seg.f.WriteAt(buf, at); err != nil {
		return err
	}
	// The file's size never changes (preallocated), so fdatasync flushes
	// only the data.
	if err := syscall.Fdatasync(int(seg.f.Fd())); err != nil {
		return err
	}
	seg.off = at + int64(len(buf))
	for i := range recs {
		j.seq++
		recs[i].seq = j.seq
	}
	seg.end = j.seq
	j.queued.Add(int64(len(recs)))
	j.mmu.Lock()
	j.mq = append(j.mq, recs...)
	j.written = j.seq
	j.mcond.Broadcast()
	j.mmu.Unlock()
	return nil
}

// mover puts logged hits into bbolt and runs deletes, each round in one
// transaction, until the writer has stopped and nothing is left.
func (j *Journal) mover() {
	defer close(j.moverDone)
	backoff := time.Duration(0)
	var last time.Time
	for {
		// Each bbolt commit costs two fdatasyncs and CPU: gather
		// moverLinger's worth of log commits into one, unless the log is
		// stopping. Readers (catchUp) and Delete wait at most this long.
		if wait := moverLinger - time.Since(last); wait > 0 {
			j.mmu.Lock()
			stop := j.stop
			j.mmu.Unlock()
			if !stop {
				time.Sleep(wait)
			}
		}
		last = time.Now()
		j.mmu.Lock()
		for len(j.mq) == 0 && len(j.mdel) == 0 && !j.stop {
			j.mcond.Wait()
		}
		if len(j.mq) == 0 && len(j.mdel) == 0 {
			j.mmu.Unlock()
			return
		}
		recs, dels, stopping := j.mq, j.mdel, j.stop
		j.mq, j.mdel = nil, nil
		j.mmu.Unlock()

		var added int64
		deleted := make([]int64, len(dels))
		err := j.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(journalBucket)
			// Keys are time-ordered, so puts append: full leaves split
			// less and leave fewer dirty pages per commit.
			b.FillPercent = 1.0
			added = 0
			var last [2]*logRec
			for i := range recs {
				r := &recs[i]
				if b.Get(r.key) == nil {
					added++
				}
				if err := b.Put(r.key, r.val); err != nil {
					return err
				}
				last[r.seg] = r
			}
			lb := tx.Bucket(logBucket)
			for i, r := range last {
				if r != nil {
					if err := lb.Put(watermarkKey(i), encodeWatermark(r.gen, r.end)); err != nil {
						return err
					}
				}
			}
			for i, d := range dels {
				deleted[i] = 0
				for _, k := range d.del {
					if b.Get(k) == nil {
						continue
					}
					if err := b.Delete(k); err != nil {
						return err
					}
					deleted[i]++
				}
				added -= deleted[i]
			}
			return nil
		})
		if err != nil {
			err = fmt.Errorf("store: journal: %w", err)
		} else {
			j.n.Add(added)
			j.queued.Add(-int64(len(recs)))
		}
		for _, d := range dels {
			d.done <- err
		}
		j.mmu.Lock()
		if err != nil {
			// The hits are safe in the log; try again. At shutdown they
			// stay there and go into bbolt on the next open.
			j.moveFail = true
			if !stopping {
				j.mq = append(recs, j.mq...)
			}
			j.mcond.Broadcast()
			j.mmu.Unlock()
			if stopping {
				j.mmu.Lock()
				j.mq = nil
				j.mmu.Unlock()
				return
			}
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		j.moveFail = false
		if len(recs) > 0 {
			j.moved = recs[len(recs)-1].seq
		}
		j.mcond.Broadcast()
		j.mmu.Unlock()
		_ = j.ensureRoom()
	}
}

// catchUp waits until every hit logged so far is in bbolt (or moving it
// is failing), so that readers see every acknowledged hit.
func (j *Journal) catchUp() {
	j.mmu.Lock()
	target := j.written
	for j.moved < target && !j.moveFail && !(j.stop && len(j.mq) == 0) {
		j.mcond.Wait()
	}
	j.mmu.Unlock()
}

// ensureRoom keeps at least preallocChunk/2 bytes of written zeros past
// bbolt's high-water mark (see preallocChunk). It runs before the mover
// starts and then only on the mover's goroutine, between its commits (and
// excludes AppendBatch), so bbolt never writes the range it fills. A failure is not fatal: bbolt grows the
// file itself, only slower.
func (j *Journal) ensureRoom() error {
	j.growMu.Lock()
	defer j.growMu.Unlock()
	var used int64
	if err := j.db.View(func(tx *bolt.Tx) error {
		used = tx.Size() // committed high-water mark: no page above is in use
		return nil
	}); err != nil {
		return fmt.Errorf("store: journal: %w", err)
	}
	if j.filesz == 0 {
		fi, err := os.Stat(j.path)
		if err != nil {
			return fmt.Errorf("store: journal: %w", err)
		}
		// What bbolt grew with ftruncate may be a hole: start at its
		// high-water mark, below which every page was written.
		j.filesz = min(fi.Size(), used)
	}
	if used+preallocChunk/2 <= j.filesz {
		return nil
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("store: journal: preallocate: %w", err)
	}
	defer f.Close()
	end := (used + preallocChunk + preallocChunk - 1) / preallocChunk * preallocChunk
	zeros := make([]byte, 1<<20)
	// Never below used: bbolt may have grown past filesz itself (a commit
	// larger than the margin), and those pages are live.
	for off := max(j.filesz, used); off < end; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), end-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("store: journal: preallocate: %w", err)
		}
	}
	// fsync, not fdatasync: the size changed.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: journal: preallocate: %w", err)
	}
	j.filesz = end
	return nil
}

// Pending returns up to max journaled hits, oldest first. Records it
// cannot read are left out (see Next).
func (j *Journal) Pending(max int) ([]Hit, error) {
	hits, _, err := j.Next(max)
	return hits, err
}

// Next returns up to max journaled records, oldest first: the hits, and
// the ids of records this code cannot read (a damaged record, or one
// written by a newer version). The shipper deletes unreadable records
// with the hits it shipped, so one of them neither blocks shipping nor
// stays counted in Len forever.
func (j *Journal) Next(max int) (hits []Hit, unreadable []string, err error) {
	j.catchUp()
	err = j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(journalBucket).Cursor()
		for k, v := c.First(); k != nil && len(hits)+len(unreadable) < max; k, v = c.Next() {
			var h Hit
			if err := json.Unmarshal(v, &h); err != nil {
				unreadable = append(unreadable, string(k))
				continue
			}
			h.ID = string(k)
			hits = append(hits, h)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: journal: %w", err)
	}
	return hits, unreadable, nil
}

// PutRaw stores val under id as it is, through the log. It exists for
// tests of damaged records; Append is the way to journal a hit.
func (j *Journal) PutRaw(id string, val []byte) error {
	if id == "" || len(id) > 255 || len(val) > maxLogBatch/2 {
		return errLogRecord
	}
	r := &journalReq{key: []byte(id), val: val, done: make(chan error, 1)}
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return ErrJournalClosed
	}
	j.reqs <- r
	j.mu.RUnlock()
	return <-r.done
}

// Delete removes the hits with the given ids (shipped and acknowledged).
// It runs in the mover's next transaction, with the hits being moved.
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
	j.mmu.Lock()
	j.mdel = append(j.mdel, r)
	j.mcond.Broadcast()
	j.mmu.Unlock()
	j.mu.RUnlock()
	return <-r.done
}

// Len returns how many hits are in the journal (not yet shipped).
func (j *Journal) Len() int { return int(j.n.Load() + j.queued.Load()) }

// Commits returns how many group commits the journal has made.
func (j *Journal) Commits() int64 { return j.commits.Load() }

// CommitTime returns the total time the journal has spent in group
// commits (writing and fsyncing).
func (j *Journal) CommitTime() time.Duration { return time.Duration(j.commitNs.Load()) }

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
	j.catchUp()
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
	<-j.moverDone
	j.closeFiles()
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("store: close journal: %w", err)
	}
	return nil
}
