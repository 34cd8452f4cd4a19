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
//	"hit-ids"     hit id -> account \x00 log \x00 eventKey   every joined hit once: the dedup set, and where its event is
//	"hits"        hit id -> Hit record                      hits whose copy this relay does not know (orphans), raw
//	"hit-counts"  "\x00orphans" -> n(8)
//
// A joined hit is stored as its clicks or opens event (SPEC §9), which
// holds everything the hit said (IP, user agent and referer as the
// account's privacy settings allow), and counted in the aggregates.
func init() {
	registerRelayBuckets(bucketHits, bucketHitIDs, bucketHitUniq, bucketHitCounts)
}

const (
	bucketHits      = "hits"
	bucketHitIDs    = "hit-ids"
	bucketHitUniq   = "hit-uniq"
	bucketHitCounts = "hit-counts"
)

var orphansKey = []byte("\x00orphans")

// HitCounts are an account's hit totals. Opens and Clicks are human hits;
// Machine* count hits from known scanners and image proxies, and HEAD
// requests, apart. Unique opens count the copies opened by a person,
// unique clicks the copies in which a person clicked a link.
type HitCounts struct {
	Opens, UniqueOpens, MachineOpens    uint64
	Clicks, UniqueClicks, MachineClicks uint64
	// Orphans are hits for copies this relay has no record of (counted
	// under the empty account).
	Orphans uint64
}

// IngestHits stores hits shipped by a redirector in one durable commit:
// each hit once (a hit id already stored is skipped, so a batch can be sent
// again), joined to its message copy (account, recipient, tags) as an event
// in the clicks or opens log, with the aggregates kept up to date. A click
// is reported by the URL recorded for its link position when the message
// was rewritten (PutMessageLinks), with the URL the reader was sent to as
// its destination, flagged "altered" when the two differ beyond what
// browsers change. A hit whose copy is unknown is kept raw and counted as
// an orphan. It returns only once everything is fsynced; it is a
// redirector.Sink's Ingest.
func (r *Relay) IngestHits(ctx context.Context, hits []Hit) error {
	for i := range hits {
		if hits[i].ID == "" || len(hits[i].ID) > 255 {
			return fmt.Errorf("store: hit %d: no id", i)
		}
	}
	return r.update(ctx, func(tx *bolt.Tx) error {
		// Hits come in bursts per message: read each copy and account
		// once per batch.
		copies := map[uint64]*Copy{}
		privacy := map[string]*Account{}
		var orphans uint64
		var events []Event
		hb := tx.Bucket([]byte(bucketHits))
		ib := tx.Bucket([]byte(bucketHitIDs))
		cb := tx.Bucket([]byte(bucketCopies))
		seen := map[string]bool{}
		for i := range hits {
			h := &hits[i]
			if seen[h.ID] || ib.Get([]byte(h.ID)) != nil || hb.Get([]byte(h.ID)) != nil {
				continue // shipped twice
			}
			seen[h.ID] = true
			c, known := copies[h.MessageID]
			if !known {
				var cc Copy
				if v := cb.Get(idKey(h.MessageID)); v != nil && json.Unmarshal(v, &cc) == nil && cc.Account != "" {
					c = &cc
				}
				copies[h.MessageID] = c
			}
			if c == nil {
				hb.FillPercent = appendFill
				if err := hb.Put([]byte(h.ID), appendHitRecord(nil, h)); err != nil {
					return err
				}
				orphans++
				continue
			}
			acct, ok := privacy[c.Account]
			if !ok {
				acct = accountInTx(tx, c.Account)
				privacy[c.Account] = acct
			}
			ev, err := hitEvent(tx, h, c, acct)
			if err != nil {
				return err
			}
			events = append(events, ev)
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
		if orphans > 0 {
			return addCounter(tx.Bucket([]byte(bucketHitCounts)), orphansKey, orphans)
		}
		return nil
	})
}

// accountInTx reads an account record inside a transaction; nil when
// there is none (the defaults apply).
func accountInTx(tx *bolt.Tx, name string) *Account {
	v := tx.Bucket([]byte(bucketRecords)).Get(recordKey(KindAccount, name))
	if v == nil {
		return nil
	}
	raw, err := decodeRaw(KindAccount, name, v)
	if err != nil {
		return nil
	}
	var a Account
	if json.Unmarshal(raw.Value, &a) != nil {
		return nil
	}
	return &a
}

// hitEvent makes the clicks or opens event for h on copy c (HitEvent),
// with the URL recorded for its link position.
func hitEvent(tx *bolt.Tx, h *Hit, c *Copy, a *Account) (Event, error) {
	orig, recorded := "", false
	if !h.Open() {
		orig, recorded = messageLinkURL(tx, c.MessageID, h.Position)
	}
	ev, err := HitEvent(h, c, a, orig, recorded)
	ev.hit = true
	return ev, err
}

// HitCounts returns account's hit totals. The empty account holds only
// Orphans.
func (r *Relay) HitCounts(ctx context.Context, account string) (HitCounts, error) {
	var hc HitCounts
	if account == "" {
		err := r.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket([]byte(bucketHitCounts)).Get(orphansKey); len(v) == 8 {
				hc.Orphans = binary.BigEndian.Uint64(v)
			}
			return nil
		})
		return hc, err
	}
	c, err := r.Totals(ctx, account)
	if err != nil {
		return hc, err
	}
	return HitCounts{
		Opens: c[Opens], UniqueOpens: c[UniqueOpens], MachineOpens: c[MachineOpens],
		Clicks: c[Clicks], UniqueClicks: c[UniqueClicks], MachineClicks: c[MachineClicks],
	}, nil
}

// Hit returns the stored hit with id, and whether there is one: an
// orphan as it came, a joined hit as its event holds it (its Kind is
// "click", or "open" for either kind of open; the URL is the one the
// reader was sent to).
func (r *Relay) Hit(id string) (Hit, bool, error) {
	var h Hit
	var ok bool
	err := r.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(bucketHits)).Get([]byte(id)); v != nil {
			ok = true
			return decodeHitRecord(v, &h)
		}
		loc := tx.Bucket([]byte(bucketHitIDs)).Get([]byte(id))
		if loc == nil {
			return nil
		}
		e, found, err := eventAt(tx, loc)
		if err != nil || !found {
			return err
		}
		ok = true
		var hdr struct {
			Referer   string `json:"Referer"`
			UserAgent string `json:"User-Agent"`
		}
		_ = json.Unmarshal([]byte(e.Fields["headers"]), &hdr)
		h = Hit{Time: e.Time, MessageID: e.ID, URL: e.Value("destination"), IP: e.Fields["ip"],
			UserAgent: hdr.UserAgent, Referer: hdr.Referer, Protocol: e.Fields["protocol"], Machine: IsMachine(&e), Kind: "click"}
		if e.Log == LogOpens {
			h.Kind = "open"
		}
		return nil
	})
	if err != nil {
		return Hit{}, false, fmt.Errorf("store: hit %s: %w", strings.ToValidUTF8(id, "?"), err)
	}
	h.ID = id
	return h, ok, nil
}

// eventAt reads the event a "hit-ids" value points to.
func eventAt(tx *bolt.Tx, loc []byte) (Event, bool, error) {
	parts := bytes.SplitN(loc, []byte{0}, 3)
	if len(parts) != 3 || len(parts[2]) != eventKeyLen {
		return Event{}, false, nil
	}
	ab := tx.Bucket([]byte(bucketEvents)).Bucket(parts[0])
	if ab == nil {
		return Event{}, false, nil
	}
	lb := ab.Bucket([]byte("log:" + string(parts[1])))
	if lb == nil {
		return Event{}, false, nil
	}
	v := lb.Get(parts[2])
	if v == nil {
		return Event{}, false, nil
	}
	e, err := decodeEvent(string(parts[0]), string(parts[1]), v)
	return e, err == nil, err
}

// HitIDs calls fn with the id of every stored hit: orphans, then joined
// hits, each in id (time) order.
func (r *Relay) HitIDs(fn func(id string)) error {
	return r.db.View(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketHits, bucketHitIDs} {
			if err := tx.Bucket([]byte(b)).ForEach(func(k, _ []byte) error {
				fn(string(k))
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
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
