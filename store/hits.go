package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The relay's side of hit ingest. Storage:
//
//	"hits"        hit id -> Hit (JSON)            every hit once: the dedup set and the raw record
//	"hit-uniq"    'o' copy(8)        -> hit id    first open of a copy
//	              'c' copy(8) pos(4) -> hit id    first click on a link of a copy
//	"hit-counts"  account \x00 counter -> n(8)    running totals (HitCounts)
func init() {
	registerRelayBuckets(bucketHits, bucketHitUniq, bucketHitCounts)
}

const (
	bucketHits      = "hits"
	bucketHitUniq   = "hit-uniq"
	bucketHitCounts = "hit-counts"
)

// HitCounts are an account's running hit totals. Unique opens count the
// first open of each message copy; unique clicks the first click on each
// link position of each copy. Machine counts hits from known scanners and
// image proxies (and HEAD requests); they are included in the totals.
type HitCounts struct {
	Opens, UniqueOpens, MachineOpens    uint64
	Clicks, UniqueClicks, MachineClicks uint64
	// Orphans are hits for copies this relay has no record of (counted
	// under the empty account).
	Orphans uint64
}

var hitCounterNames = []string{"opens", "unique_opens", "machine_opens", "clicks", "unique_clicks", "machine_clicks", "orphans"}

func (c *HitCounts) ptr(name string) *uint64 {
	switch name {
	case "opens":
		return &c.Opens
	case "unique_opens":
		return &c.UniqueOpens
	case "machine_opens":
		return &c.MachineOpens
	case "clicks":
		return &c.Clicks
	case "unique_clicks":
		return &c.UniqueClicks
	case "machine_clicks":
		return &c.MachineClicks
	case "orphans":
		return &c.Orphans
	}
	return nil
}

// IngestHits stores hits shipped by a redirector in one durable commit:
// each hit once (a hit id already stored is skipped, so a batch can be sent
// again), joined to its message copy (account, recipient, tags) as an event
// in the clicks or opens log, with the unique counts kept up to date. A hit
// whose copy is unknown is kept raw and counted as an orphan. It returns
// only once everything is fsynced; it is a redirector.Sink's Ingest.
func (r *Relay) IngestHits(ctx context.Context, hits []Hit) error {
	vals := make([][]byte, len(hits))
	for i := range hits {
		if hits[i].ID == "" {
			return fmt.Errorf("store: hit %d: no id", i)
		}
		vals[i] = appendHitRecord(nil, &hits[i])
	}
	return r.update(ctx, func(tx *bolt.Tx) error {
		// Hits come in bursts per message: read each copy once, and
		// write each counter once per batch.
		copies := map[uint64]*Copy{}
		counts := hitCounters{}
		var events []Event
		hb := tx.Bucket([]byte(bucketHits))
		hb.FillPercent = appendFill
		ub := tx.Bucket([]byte(bucketHitUniq))
		nb := tx.Bucket([]byte(bucketHitCounts))
		cb := tx.Bucket([]byte(bucketCopies))
		for i := range hits {
			h := &hits[i]
			id := []byte(h.ID)
			if hb.Get(id) != nil {
				continue // shipped twice
			}
			if err := hb.Put(id, vals[i]); err != nil {
				return err
			}
			c, seen := copies[h.MessageID]
			if !seen {
				var cc Copy
				if v := cb.Get(idKey(h.MessageID)); v != nil && json.Unmarshal(v, &cc) == nil && cc.Account != "" {
					c = &cc
				}
				copies[h.MessageID] = c
			}
			if c == nil {
				counts.add("", "orphans")
				continue
			}
			ev, err := hitEvent(h, c)
			if err != nil {
				return err
			}
			events = append(events, ev)
			if err := countHit(ub, counts, h, c.Account); err != nil {
				return err
			}
		}
		if len(events) > 0 {
			evs, err := encodeEvents(events)
			if err != nil {
				return err
			}
			if err := putEvents(tx, evs); err != nil {
				return err
			}
		}
		return counts.write(nb)
	})
}

func countHit(ub *bolt.Bucket, counts hitCounters, h *Hit, account string) error {
	kind := "clicks"
	key := append([]byte{'c'}, idKey(h.MessageID)...)
	key = binary.BigEndian.AppendUint32(key, h.Position)
	if h.Open() {
		kind = "opens"
		key = append([]byte{'o'}, idKey(h.MessageID)...)
	}
	counts.add(account, kind)
	if h.Machine || h.Head {
		counts.add(account, "machine_"+kind)
	}
	if ub.Get(key) == nil {
		if err := ub.Put(key, []byte(h.ID)); err != nil {
			return err
		}
		counts.add(account, "unique_"+kind)
	}
	return nil
}

// hitCounters gathers a batch's counter increments, keyed as the counts
// bucket is ("account\x00name"), so each counter is read and written once.
type hitCounters map[string]uint64

func (c hitCounters) add(account, name string) { c[account+"\x00"+name]++ }

func (c hitCounters) write(nb *bolt.Bucket) error {
	for k, d := range c {
		if err := addCounter(nb, []byte(k), d); err != nil {
			return err
		}
	}
	return nil
}

// addCounter adds d to the 8-byte big-endian counter at key in b (absent
// counts as 0).
func addCounter(b *bolt.Bucket, key []byte, d uint64) error {
	var n uint64
	if v := b.Get(key); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	return b.Put(key, binary.BigEndian.AppendUint64(nil, n+d))
}

// hitEvent makes the clicks or opens event (SPEC §9) for h on copy c.
func hitEvent(h *Hit, c *Copy) (Event, error) {
	// The same JSON as a map of the two headers would give (keys sorted,
	// absent ones left out), without building and sorting a map.
	hj, err := json.Marshal(struct {
		Referer   string `json:"Referer,omitempty"`
		UserAgent string `json:"User-Agent,omitempty"`
	}{h.Referer, h.UserAgent})
	if err != nil {
		return Event{}, fmt.Errorf("store: hit: %w", err)
	}
	ev := Event{
		Account:   c.Account,
		ID:        h.MessageID,
		Time:      h.Time.UTC(),
		Recipient: c.Recipient,
		Tags:      c.Tags,
		Key:       h.ID,
		Fields:    map[string]string{"headers": string(hj), "ip": h.IP},
	}
	if h.Open() {
		ev.Log = LogOpens
		ev.Fields["protocol"] = h.Protocol
	} else {
		ev.Log = LogClicks
		ev.Fields["url"] = h.URL
		ev.Fields["destination"] = h.URL
	}
	return ev, nil
}

// HitCounts returns account's running hit totals. The empty account holds
// only Orphans.
func (r *Relay) HitCounts(account string) (HitCounts, error) {
	var c HitCounts
	err := r.db.View(func(tx *bolt.Tx) error {
		nb := tx.Bucket([]byte(bucketHitCounts))
		for _, name := range hitCounterNames {
			if v := nb.Get([]byte(account + "\x00" + name)); len(v) == 8 {
				*c.ptr(name) = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	return c, err
}

// Hit returns the stored hit with id, and whether there is one.
func (r *Relay) Hit(id string) (Hit, bool, error) {
	var h Hit
	var ok bool
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketHits)).Get([]byte(id))
		if v == nil {
			return nil
		}
		ok = true
		return decodeHitRecord(v, &h)
	})
	if err != nil {
		return Hit{}, false, fmt.Errorf("store: hit %s: %w", strings.ToValidUTF8(id, "?"), err)
	}
	return h, ok, nil
}

// HitIDs calls fn with the id of every stored hit, in id (time) order.
func (r *Relay) HitIDs(fn func(id string)) error {
	return r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketHits)).ForEach(func(k, _ []byte) error {
			fn(string(k))
			return nil
		})
	})
}

// hitsPruneBatch bounds how many raw hits one retention transaction reads.
const hitsPruneBatch = 10000

// DeleteHitsBefore deletes the raw hits older than cutoff, so retention
// covers them like the events made from them (a hit holds an IP, a user
// agent and a URL chosen by whoever made the request). A hit's time comes
// from its id when that is a redirector's time-ordered id, else from the
// record. Unique counts stay: they are numbers, not personal data. Hits are
// also the de-duplication set for shipping, which is at least once within
// seconds or minutes, far inside any retention period.
func (r *Relay) DeleteHitsBefore(ctx context.Context, cutoff time.Time) (int, error) {
	total := 0
	var from []byte // resume after this key
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var last []byte
		n := 0
		err := r.db.Update(func(tx *bolt.Tx) error {
			hb := tx.Bucket([]byte(bucketHits))
			c := hb.Cursor()
			k, v := c.First()
			if from != nil {
				if k, v = c.Seek(from); k != nil && bytes.Equal(k, from) {
					k, v = c.Next()
				}
			}
			var doomed [][]byte
			for read := 0; k != nil && read < hitsPruneBatch; k, v = c.Next() {
				read++
				last = append(last[:0], k...)
				if hitTime(k, v).Before(cutoff) {
					doomed = append(doomed, append([]byte(nil), k...))
				}
			}
			if k == nil {
				last = nil // read to the end
			}
			for _, d := range doomed {
				if err := hb.Delete(d); err != nil {
					return err
				}
			}
			n = len(doomed)
			return nil
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("store: delete hits: %w", err)
		}
		if last == nil {
			return total, nil
		}
		from = append(from[:0], last...)
	}
}

// hitIDTime returns the time in a hit id made by a redirector (NewHitID:
// a FormatID, then the node), and false for any other id.
func hitIDTime(id []byte) (time.Time, bool) {
	if len(id) < 16 {
		return time.Time{}, false
	}
	n, err := ParseID(string(id[:16]))
	if err != nil {
		return time.Time{}, false
	}
	return IDTime(n), true
}

// hitTime returns when a stored hit was made.
func hitTime(k, v []byte) time.Time {
	if t, ok := hitIDTime(k); ok {
		return t
	}
	var h Hit
	if decodeHitRecord(v, &h) == nil {
		return h.Time
	}
	return time.Time{} // unreadable: as old as can be
}
