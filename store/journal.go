package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The journal's one bucket: hit id -> hit record (appendHitRecord). Hit ids start with
// the time, so the cursor walks oldest first.
var journalBucket = []byte("hits")

// ErrJournalClosed is returned by Append after Close.
var ErrJournalClosed = errors.New("store: journal closed")

var errTestSpill = errors.New("store: journal: spill failed (test)")

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

// Spilling: a logged hit that the shipper has not settled (shipped and
// deleted) within spillAfter is put into bbolt, and so is every unsettled
// hit of a log segment the writer needs again. The mover looks every
// moverTick, and writes the log's settled watermark at most every
// watermarkEvery.
const (
	maxSpillWait   = 5 * time.Second
	spillAfter     = time.Second
	moverTick      = 50 * time.Millisecond
	watermarkEvery = time.Second
)

// Durability says when Append returns, against which fault.
type Durability int

const (
	// DurabilityDisk: Append returns once the hit is written and
	// fdatasynced (one fdatasync shared by every hit waiting at that
	// moment). Nothing acknowledged is lost to a power cut or a kernel
	// crash. The zero value.
	DurabilityDisk Durability = iota
	// DurabilityProcess: Append returns once the hit is written into the
	// kernel (write(2) into the log); a background flusher fdatasyncs the
	// log at least every FlushInterval. A killed process loses nothing
	// acknowledged (the kernel holds the bytes); a power cut or kernel
	// crash loses at most the last interval: the guarantee of PostgreSQL's
	// synchronous_commit = off and of Kafka's default.
	DurabilityProcess
)

// String is the config's name for d.
func (d Durability) String() string {
	if d == DurabilityProcess {
		return "process"
	}
	return "disk"
}

// DefaultFlushInterval is how long, at most, a hit written in process
// durability waits for its fdatasync.
const DefaultFlushInterval = 10 * time.Millisecond

// JournalOptions tune a Journal; the zero value is disk durability with
// no free-space floor.
type JournalOptions struct {
	Durability Durability
	// FlushInterval bounds, in process durability, how long a written hit
	// waits for its fdatasync; 0 is DefaultFlushInterval.
	FlushInterval time.Duration
	// MinFree is the hits' floor: the journal grows its bbolt file (spills
	// hits into it, or preallocates ahead) only while the file system
	// holding it has at least this many bytes free, so hits never take the
	// last free space, which is mail's. Below it, hits are kept in the
	// hit log, which is preallocated at open and so needs no new space (the
	// hits' own reserve); once the log is full too, Append fails and Ready
	// says why. 0: no floor.
	MinFree int64
}

// ErrHitsFull is what Append and Ready return when the hit log is full and
// its hits can be put nowhere else (bbolt refused: the disk is at the
// hits' floor, or failing), so a new hit cannot be kept.
var ErrHitsFull = errors.New("store: journal: hit log full and no room to spill it (disk low or failing)")

// Journal is the redirector's own hit journal, in which every hit is
// written (and, in disk durability, fdatasynced) before the redirector
// answers, and from which the shipper sends hits to the relay and then
// deletes them. It is a bbolt file with an append log in front (see
// hitlog.go): Append writes to the log with one write (and one fdatasync)
// shared by every hit waiting at that moment.
//
// A logged hit is kept in memory until the shipper has shipped it and
// deletes it, which in normal running is a fraction of a second later:
// then it never touches bbolt. Hits the shipper has not settled within
// spillAfter (the relay is down or slow), hits in a log segment that the
// writer needs again, and everything left at Close are spilled into bbolt
// by the mover; Next reads bbolt's backlog first, then memory.
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

	// Logged hits not yet settled; mmu guards these and mcond signals
	// changes.
	mmu       sync.Mutex
	mcond     *sync.Cond
	mq        []*logRec     // logged, unsettled, in log order
	unsafe    [2]int        // records of each segment still in mq
	spilling  uint64        // records with seq <= this are being spilled
	urgent    int           // a segment the writer waits for, or -1
	safe      [2]watermark  // per segment: every record up to here is settled
	safeDirty bool          // safe changed since it was last written
	mdel      []*journalReq // bbolt deletes waiting
	closing   bool          // Close has begun
	spillWait time.Duration // how long the writer waits for a spill (maxSpillWait)
	failSpill atomic.Bool   // tests: the mover's transactions fail
	spillErr  bool          // the last spill failed
	stop      bool          // the writer has stopped: spill all and exit
	moverDone chan struct{}

	filesz int64        // bytes of the bbolt file known to be written; mover only
	growMu sync.RWMutex // ensureRoom excludes AppendBatch's commits

	n        atomic.Int64 // hits in bbolt
	queued   atomic.Int64 // hits in mq
	syncer   *dataSyncer  // the log's fdatasync; the writer's (disk) or the flusher's (process)
	commits  atomic.Int64 // group commits (log writes) done
	commitNs atomic.Int64 // time spent in them
	waiters  sync.Pool

	opts       JournalOptions
	spillTries uint64       // spill attempts finished; mmu
	logFull    bool         // the writer found the log full and could not spill; mmu
	lowDisk    atomic.Bool  // the mover's last look found the disk below MinFree
	curRoom    atomic.Int64 // bytes left in the current segment (the writer's)
	curSeg     atomic.Int32 // the current segment (the writer's)

	// The log's position in bytes written since open, and how far of it
	// is known fdatasynced; fmu guards dirty and dirtySince, and orders
	// written with them.
	fmu        sync.Mutex
	written    atomic.Int64
	synced     atomic.Int64
	dirty      [2]bool   // segments written since their last fdatasync
	dirtySince time.Time // when the oldest unsynced write was made
	syncErr    atomic.Pointer[error]
	flushes    atomic.Int64
	flushKick  chan struct{} // the writer wakes the flusher (process)
	flushStop  chan struct{}
	flushDone  chan struct{}
}

type journalReq struct {
	key, val []byte
	del      [][]byte // Delete's keys (to the mover)
	done     chan error
}

// OpenJournal opens (creating if needed) the journal at path with disk
// durability (JournalOptions' zero value). It waits at most a second for
// another process's lock.
func OpenJournal(path string) (*Journal, error) {
	return OpenJournalWith(path, JournalOptions{})
}

// OpenJournalWith opens (creating if needed) the journal at path, and the
// folders on the way to it (mode 0700), with options o. It waits at most a
// second for another process's lock.
func OpenJournalWith(path string, o JournalOptions) (*Journal, error) {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open journal %s: %w", path, err)
	}
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
		opts:      o,
		flushKick: make(chan struct{}, 1),
		flushStop: make(chan struct{}),
		flushDone: make(chan struct{}),
	}
	j.mcond = sync.NewCond(&j.mmu)
	j.urgent = -1
	j.spillWait = maxSpillWait
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
	j.curRoom.Store(logSegSize - j.segs[j.cur].off)
	j.waiters.New = func() any { return make(chan error, 1) }
	j.syncer = newDataSyncer()
	go j.loop()
	go j.mover()
	if o.Durability == DurabilityProcess {
		go j.flusher()
	} else {
		close(j.flushDone)
	}
	return j, nil
}

// recover opens the log's segments, puts every logged hit past the
// watermark into bbolt (those that were held in memory at a crash, and
// perhaps some already shipped), and starts both segments on new
// generations.
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

// Append makes h durable: it returns nil only once h is written into the
// log, and in disk durability fdatasynced too (see Durability). h.ID must
// be set (NewHitID). If ctx ends first Append returns ctx's error, and h
// may or may not be in the journal. When the log is full and cannot be
// spilled it fails at once with ErrHitsFull.
func (j *Journal) Append(ctx context.Context, h Hit) error {
	if h.ID == "" || len(h.ID) > 255 {
		return errors.New("store: journal: hit without a valid id")
	}
	return j.submit(ctx, h.ID, appendHitRecord(make([]byte, 0, 64+len(h.URL)+len(h.UserAgent)+len(h.Referer)), &h))
}

// submit hands one record to the log writer and waits for its commit, or
// for ctx to end.
func (j *Journal) submit(ctx context.Context, id string, val []byte) error {
	if id == "" || len(id) > 255 || len(val) > maxLogBatch/2 {
		return errLogRecord
	}
	done := j.waiters.Get().(chan error)
	r := &journalReq{key: []byte(id), val: val, done: done}
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
	val := appendHitRecord(nil, &h)
	j.growMu.RLock()
	defer j.growMu.RUnlock()
	err := j.db.Batch(func(tx *bolt.Tx) error {
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
// holds the records in memory for the shipper.
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
		// An fdatasync costs about 45 µs of CPU here (on a VM the flush
		// is a trip through the hypervisor), and more in scheduling,
		// whether it carries one hit or fifty. Under load, letting the
		// goroutines that are ready run first lets them join this commit
		// (a third fewer commits at 64 connections); when nothing else
		// is ready it returns at once, so a lone hit is not delayed.
		runtime.Gosched()
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
// switching segments when it does not fit, and, in disk durability, makes
// it durable; in process durability the flusher does that.
func (j *Journal) writeLog(batch []*journalReq, size int) error {
	if p := j.syncErr.Load(); p != nil {
		// A failed flush may have lost what it covered: no new hit is
		// acknowledged until a flush works again (the flusher retries).
		return *p
	}
	seg := &j.segs[j.cur]
	if seg.off+int64(size) > logSegSize {
		// The other segment is reused once every hit it holds is
		// settled: the mover spills the unsettled ones into bbolt now.
		other := 1 - j.cur
		j.mmu.Lock()
		if err := j.waitSegment(other); err != nil {
			j.mmu.Unlock()
			return err
		}
		j.urgent = -1
		j.logFull = false
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
	now := time.Now()
	j.buf = buf
	if _, err := seg.f.WriteAt(buf, at); err != nil {
		return err
	}
	if j.opts.Durability == DurabilityDisk {
		// The file's size never changes (preallocated), so fdatasync
		// flushes only the data (through AIO on Linux: see
		// datasync_linux.go).
		if err := j.syncer.sync(seg.f); err != nil {
			return err
		}
		j.synced.Store(j.written.Add(int64(len(buf))))
		j.flushes.Add(1)
	} else {
		j.fmu.Lock()
		if !j.dirty[0] && !j.dirty[1] {
			j.dirtySince = now
		}
		j.dirty[j.cur] = true
		j.written.Add(int64(len(buf)))
		j.fmu.Unlock()
		select {
		case j.flushKick <- struct{}{}:
		default:
		}
	}
	seg.off = at + int64(len(buf))
	j.curRoom.Store(logSegSize - seg.off)
	j.curSeg.Store(int32(j.cur))
	j.mmu.Lock()
	for i := range recs {
		j.seq++
		recs[i].seq, recs[i].at = j.seq, now
		j.mq = append(j.mq, &recs[i])
	}
	j.unsafe[j.cur] += len(recs)
	j.queued.Add(int64(len(recs)))
	j.mmu.Unlock()
	return nil
}

// waitSegment waits until segment seg holds no unsettled hit, asking the
// mover to spill them. It gives up with ErrHitsFull when the mover cannot
// (bbolt failing or the disk at the hits' floor): at once when an attempt
// made during this wait failed, or when the log was already found full,
// or at close; else after spillWait. Requests are then answered at once
// instead of hanging. j.mmu is held.
func (j *Journal) waitSegment(seg int) error {
	since, tries := time.Now(), j.spillTries
	for j.unsafe[seg] > 0 {
		if j.spillErr && (j.logFull || j.closing || j.spillTries > tries) || time.Since(since) > j.spillWait {
			// urgent stays set: the mover keeps trying, and the next
			// batch goes on as soon as it succeeds.
			j.logFull = true
			return ErrHitsFull
		}
		j.urgent = seg
		j.mcond.Broadcast()
		j.mcond.Wait() // the mover's tick wakes this too
	}
	return nil
}

// flusher is process durability's background fdatasync: once the log has
// been written, it waits until the oldest unsynced write is FlushInterval
// old and flushes every segment written since (group commit: one flush
// covers every hit written meanwhile). At Close it flushes what is left.
func (j *Journal) flusher() {
	defer close(j.flushDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-j.flushKick:
		case <-j.flushStop:
			j.flush()
			return
		}
		j.fmu.Lock()
		wait := time.Until(j.dirtySince.Add(j.opts.FlushInterval))
		j.fmu.Unlock()
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-j.flushStop:
				timer.Stop()
				j.flush()
				return
			}
		}
		j.flush()
	}
}

// flush fdatasyncs the segments written since the last flush and moves
// the synced position up to what was written before it began.
func (j *Journal) flush() {
	j.fmu.Lock()
	dirty, upto := j.dirty, j.written.Load()
	j.dirty = [2]bool{}
	j.fmu.Unlock()
	if !dirty[0] && !dirty[1] {
		return
	}
	var err error
	for i, d := range dirty {
		if d {
			if e := j.syncer.sync(j.segs[i].f); e != nil && err == nil {
				err = e
			}
		}
	}
	if err != nil {
		j.fmu.Lock()
		for i, d := range dirty {
			j.dirty[i] = j.dirty[i] || d
		}
		j.dirtySince = time.Now() // retried after an interval
		j.fmu.Unlock()
		e := fmt.Errorf("store: journal: hit log fdatasync: %w", err)
		j.syncErr.Store(&e)
		select {
		case j.flushKick <- struct{}{}:
		default:
		}
		return
	}
	j.synced.Store(upto)
	j.flushes.Add(1)
	j.syncErr.Store(nil)
}

// watermark is a log position: generation and offset.
type watermark struct {
	gen uint64
	end int64
}

// advance moves m forward to (gen, end), never back (a newer generation
// of a segment is ahead of every position in an older one), and says
// whether it moved.
func (m *watermark) advance(gen uint64, end int64) bool {
	if gen < m.gen || gen == m.gen && end <= m.end {
		return false
	}
	*m = watermark{gen, end}
	return true
}

// mover spills unsettled hits into bbolt (see Journal), runs bbolt
// deletes, and records the log's settled watermark, until the writer has
// stopped; then it spills everything left, so that a clean Close leaves
// nothing for the next open to replay.
func (j *Journal) mover() {
	defer close(j.moverDone)
	tick := time.NewTicker(moverTick)
	defer tick.Stop()
	wake := make(chan struct{})
	go func() { // the cond has no timed wait: the ticker wakes it
		for {
			select {
			case <-tick.C:
				j.mmu.Lock()
				j.mcond.Broadcast()
				j.mmu.Unlock()
			case <-wake:
				return
			}
		}
	}()
	defer close(wake)
	backoff := time.Duration(0)
	var lastMark time.Time
	for {
		j.mmu.Lock()
		var spill []*logRec
		var markDue, refused bool
		for {
			now := time.Now()
			spill = j.toSpill(now)
			markDue = j.safeDirty && now.Sub(lastMark) >= watermarkEvery
			if len(spill) > 0 || len(j.mdel) > 0 || markDue || j.stop {
				break
			}
			j.mcond.Wait()
		}
		if len(spill) > 0 && j.opts.MinFree > 0 {
			// A spill grows the bbolt file: only above the hits' floor.
			// (Deletes and the watermark go on: they free space.)
			j.mmu.Unlock()
			room := j.roomToGrow()
			j.mmu.Lock()
			if spill = j.toSpill(time.Now()); !room && len(spill) > 0 {
				spill, refused = nil, true
			}
		}
		dels, stopping := j.mdel, j.stop
		j.mdel = nil
		if len(spill) > 0 {
			j.spilling = spill[len(spill)-1].seq
		}
		marks := j.safe
		j.safeDirty = false
		if stopping && !refused {
			// The writer has stopped and this spill takes every hit
			// still held: the whole log is settled or in bbolt. (Not
			// when the spill was refused: those hits stay in the log,
			// past the watermark, for the next open.)
			for i := range j.segs {
				if j.segs[i].gen != 0 {
					marks[i] = watermark{j.segs[i].gen, j.segs[i].off}
				}
			}
		}
		j.mmu.Unlock()

		var added int64
		deleted := make([]int64, len(dels))
		var err error
		if len(spill) > 0 || len(dels) > 0 || markDue || stopping {
			err = j.update(spill, dels, marks, &added, deleted)
		}
		if err != nil {
			err = fmt.Errorf("store: journal: %w", err)
		} else {
			j.n.Add(added)
			lastMark = time.Now()
		}
		for _, d := range dels {
			d.done <- err // the deletes went through, whether or not the spill was refused
		}
		failed := err != nil || refused
		j.mmu.Lock()
		j.spilling = 0
		j.spillErr = failed
		if len(spill) > 0 || refused {
			j.spillTries++
		}
		if failed {
			// The hits are safe in the log; try again. At shutdown they
			// stay there and go into bbolt on the next open.
			j.safeDirty = true
			j.mcond.Broadcast()
			if stopping {
				j.mmu.Unlock()
				return
			}
			// While the writer waits for a segment, retry every tick;
			// else back off, but start again at once when it begins to
			// wait.
			wasUrgent := j.urgent >= 0
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			if wasUrgent {
				backoff = moverTick
			}
			until := time.Now().Add(backoff)
			for time.Now().Before(until) && !j.stop && (wasUrgent || j.urgent < 0) {
				j.mcond.Wait() // the ticker wakes it
			}
			j.mmu.Unlock()
			continue
		}
		backoff = 0
		if len(spill) > 0 {
			j.removeSpilled(spill)
			for _, r := range spill {
				j.safe[r.seg].advance(r.gen, r.end)
			}
		}
		done := stopping && len(j.mq) == 0 && len(j.mdel) == 0
		j.mcond.Broadcast()
		j.mmu.Unlock()
		_ = j.ensureRoom()
		if done {
			return
		}
	}
}

// update is the mover's one bbolt transaction: it puts the spilled hits,
// records the watermarks, and runs the deletes, counting what it added
// and deleted.
func (j *Journal) update(spill []*logRec, dels []*journalReq, marks [2]watermark, addedp *int64, deleted []int64) error {
	return j.db.Update(func(tx *bolt.Tx) error {
		if j.failSpill.Load() {
			return errTestSpill
		}
		b := tx.Bucket(journalBucket)
		// Keys are time-ordered, so puts append: full leaves split
		// less and leave fewer dirty pages per commit.
		b.FillPercent = 1.0
		var added int64
		for _, r := range spill {
			if b.Get(r.key) == nil {
				added++
			}
			if err := b.Put(r.key, r.val); err != nil {
				return err
			}
			// A spill is a prefix of the unsettled hits: everything
			// up to r is now settled or in bbolt.
			marks[r.seg].advance(r.gen, r.end)
		}
		lb := tx.Bucket(logBucket)
		for i, m := range marks {
			if m.gen != 0 {
				if err := lb.Put(watermarkKey(i), encodeWatermark(m.gen, m.end)); err != nil {
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
		*addedp = added
		return nil
	})
}

// toSpill returns the hits the mover should put into bbolt now, a prefix
// of mq: all of them when stopping, every one up to the last of a segment
// the writer waits for, and those logged more than spillAfter ago.
// j.mmu is held.
func (j *Journal) toSpill(now time.Time) []*logRec {
	n := 0
	switch {
	case j.stop:
		n = len(j.mq)
	case j.urgent >= 0:
		for i, r := range j.mq {
			if r.seg == j.urgent {
				n = i + 1
			}
		}
	}
	for n < len(j.mq) && now.Sub(j.mq[n].at) >= spillAfter {
		n++
	}
	return append([]*logRec(nil), j.mq[:n]...) // mq's slots are cleared as hits leave
}

// removeSpilled takes the spilled hits, a prefix of what mq held when the
// spill began, out of mq; some may have been deleted meanwhile. j.mmu is
// held.
func (j *Journal) removeSpilled(spill []*logRec) {
	last := spill[len(spill)-1].seq
	i := 0
	for i < len(j.mq) && j.mq[i].seq <= last {
		j.left(j.mq[i])
		j.mq[i] = nil
		i++
	}
	j.mq = j.mq[i:]
	j.queued.Add(-int64(i))
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
	if !j.roomToGrow() {
		return nil // at the hits' floor: bbolt's own growth is refused too (see mover)
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("store: journal: preallocate: %w", err)
	}
	defer f.Close()
	end := (used + preallocChunk + preallocChunk - 1) / preallocChunk * preallocChunk
	// Never below used: bbolt may have grown past filesz itself (a commit
	// larger than the margin), and those pages are live.
	if err := zeroFill(f, max(j.filesz, used), end); err != nil {
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

// Next returns up to max journaled records, bbolt's backlog first (in id
// order), then the logged hits held in memory (in log order): the hits,
// and the ids of
// records this code cannot read (a damaged record, or one written by a
// newer version). The shipper deletes unreadable records with the hits it
// shipped, so one of them neither blocks shipping nor stays counted in Len
// forever. A hit being spilled may be returned twice; Delete takes it
// from both places.
func (j *Journal) Next(max int) (hits []Hit, unreadable []string, err error) {
	take := func(k, v []byte) {
		var h Hit
		if err := decodeHitRecord(v, &h); err != nil {
			unreadable = append(unreadable, string(k))
			return
		}
		h.ID = string(k)
		hits = append(hits, h)
	}
	if j.n.Load() > 0 {
		err = j.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(journalBucket).Cursor()
			for k, v := c.First(); k != nil && len(hits)+len(unreadable) < max; k, v = c.Next() {
				take(k, v)
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("store: journal: %w", err)
		}
	}
	j.mmu.Lock()
	for _, r := range j.mq {
		if len(hits)+len(unreadable) >= max {
			break
		}
		take(r.key, r.val)
	}
	j.mmu.Unlock()
	return hits, unreadable, nil
}

// PutRaw stores val under id as it is, through the log. It exists for
// tests of damaged records; Append is the way to journal a hit.
func (j *Journal) PutRaw(id string, val []byte) error {
	return j.submit(context.Background(), id, val)
}

// Delete removes the hits with the given ids (shipped and acknowledged).
// Hits held in memory go at once; those in bbolt go in the mover's next
// transaction, and Delete waits for it.
func (j *Journal) Delete(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return ErrJournalClosed
	}
	j.mmu.Lock()
	rest := j.deleteHeld(ids)
	// What was not held may be in bbolt (a spilled hit, or one from
	// before a restart); what is being spilled is about to be.
	var del [][]byte
	switch {
	case j.spilling != 0:
		for _, id := range ids {
			del = append(del, []byte(id))
		}
	case j.n.Load() > 0:
		for _, id := range rest {
			del = append(del, []byte(id))
		}
	}
	if len(del) == 0 {
		j.mmu.Unlock()
		j.mu.RUnlock()
		return nil
	}
	r := &journalReq{del: del, done: make(chan error, 1)}
	j.mdel = append(j.mdel, r)
	j.mcond.Broadcast()
	j.mmu.Unlock()
	j.mu.RUnlock()
	return <-r.done
}

// deleteHeld takes the hits named by ids out of mq, and returns the ids it
// did not find there. The shipper deletes what Next gave it, so the usual
// case is a prefix of mq in order. j.mmu is held.
func (j *Journal) deleteHeld(ids []string) (rest []string) {
	i := 0
	for i < len(ids) && i < len(j.mq) && string(j.mq[i].key) == ids[i] {
		i++
	}
	for _, r := range j.mq[:i] {
		j.settled(r)
	}
	clear(j.mq[:i])
	j.mq = j.mq[i:]
	j.queued.Add(-int64(i))
	if i == len(ids) {
		return nil
	}
	want := make(map[string]bool, len(ids)-i)
	for _, id := range ids[i:] {
		want[id] = true
	}
	kept := j.mq[:0]
	for _, r := range j.mq {
		if want[string(r.key)] {
			delete(want, string(r.key))
			j.left(r)
			j.queued.Add(-1)
			continue
		}
		kept = append(kept, r)
	}
	clear(j.mq[len(kept):])
	j.mq = kept
	for id := range want {
		rest = append(rest, id)
	}
	return rest
}

// settled notes that r, the first hit of mq, has left it.
func (j *Journal) settled(r *logRec) {
	if j.safe[r.seg].advance(r.gen, r.end) {
		j.safeDirty = true
	}
	j.left(r)
}

// left notes that r has left mq, settled or spilled. j.mmu is held.
func (j *Journal) left(r *logRec) {
	j.unsafe[r.seg]--
	if r.seg == j.urgent && j.unsafe[r.seg] == 0 {
		j.mcond.Broadcast() // the writer waits for this segment
	}
}

// roomToGrow says whether the bbolt file may grow: the file system holding
// it has at least MinFree bytes free (or no floor is set, or the free
// space cannot be read).
func (j *Journal) roomToGrow() bool {
	if j.opts.MinFree <= 0 {
		return true
	}
	free, err := FreeBytes(filepath.Dir(j.path))
	low := err == nil && free < j.opts.MinFree
	j.lowDisk.Store(low)
	return !low
}

// readyMargin: when less than this is left in the current log segment and
// the other cannot be reused, the journal is about to refuse hits.
const readyMargin = logSegSize / 4

// Ready says whether the journal can keep new hits: nil, or why not: the
// hit log is full (or nearly) and cannot be spilled (ErrHitsFull), or the
// last background flush failed.
func (j *Journal) Ready() error {
	if p := j.syncErr.Load(); p != nil {
		return *p
	}
	j.mmu.Lock()
	other := 1 - int(j.curSeg.Load())
	blocked := j.unsafe[other] > 0 && (j.logFull || j.curRoom.Load() < readyMargin)
	stuck := j.spillErr || j.lowDisk.Load()
	j.mmu.Unlock()
	if blocked && stuck {
		return ErrHitsFull
	}
	return nil
}

// LogPosition returns how many bytes have been written to the hit log
// since the journal was opened, and how many of them are known
// fdatasynced. In disk durability the two are equal whenever no commit is
// under way; in process durability synced follows within the flush
// interval.
func (j *Journal) LogPosition() (written, synced int64) {
	j.fmu.Lock()
	defer j.fmu.Unlock()
	return j.written.Load(), j.synced.Load()
}

// Flushes returns how many fdatasyncs of the hit log have completed.
func (j *Journal) Flushes() int64 { return j.flushes.Load() }

// Durability returns the journal's durability.
func (j *Journal) Durability() Durability { return j.opts.Durability }

// Len returns how many hits are in the journal (not yet shipped).
func (j *Journal) Len() int { return int(j.n.Load() + j.queued.Load()) }

// Commits returns how many group commits (log writes) the journal has
// made.
func (j *Journal) Commits() int64 { return j.commits.Load() }

// CommitTime returns the total time the journal has spent in group
// commits (writing, and in disk durability fdatasyncing).
func (j *Journal) CommitTime() time.Duration { return time.Duration(j.commitNs.Load()) }

// Oldest returns the time of the oldest journaled hit, from its id, and
// false when the journal is empty.
func (j *Journal) Oldest() (time.Time, bool) {
	var t time.Time
	var ok bool
	idTime := func(k []byte) {
		if tt, good := hitIDTime(k); good && (!ok || tt.Before(t)) {
			t, ok = tt, true
		}
	}
	if j.n.Load() > 0 {
		_ = j.db.View(func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(journalBucket).Cursor().First()
			idTime(k)
			return nil
		})
	}
	j.mmu.Lock()
	if len(j.mq) > 0 {
		idTime(j.mq[0].key)
	}
	j.mmu.Unlock()
	return t, ok
}

// Contains reports whether a hit with id is in the journal.
func (j *Journal) Contains(id string) (bool, error) {
	j.mmu.Lock()
	for _, r := range j.mq {
		if string(r.key) == id {
			j.mmu.Unlock()
			return true, nil
		}
	}
	j.mmu.Unlock()
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
	j.mmu.Lock()
	j.closing = true
	j.mcond.Broadcast()
	j.mmu.Unlock()
	close(j.reqs)
	j.mu.Unlock()
	<-j.done
	close(j.flushStop)
	<-j.flushDone // the last flush: everything written is durable
	<-j.moverDone
	j.closeFiles()
	serr := j.syncer.close()
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("store: close journal: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("store: close journal: %w", serr)
	}
	return nil
}
