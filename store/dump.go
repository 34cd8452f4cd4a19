package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// A dump is everything a bbolt relay database holds, as backend-neutral
// items, so that another backend can load it (`trackrelay store copy`).
// What can be derived again (indexes, de-duplication keys, day counts,
// the webhook due index) is left out; the aggregates are copied as they
// are, since the events alone cannot rebuild them (events do not keep
// the message, credential and link they were counted under, and
// retention removes events before their aggregates).

// DumpEvent is a stored event; Hit says its Key is a hit id.
type DumpEvent struct {
	Event
	Hit bool
}

// DumpOrphan is a stored hit of an unknown copy.
type DumpOrphan struct{ Hit Hit }

// DumpUniq is a first-hit mark: Key is "o" (first human open), "k" (first
// human click), "c"+position or "u"+link id (first human click on a link).
type DumpUniq struct {
	Copy uint64
	Key  string
}

// DumpCounters is one counter record: Table "agg" (Account, Dim, Hour),
// "totals" (Account) or "msg" (Message).
type DumpCounters struct {
	Table        string
	Account, Dim string
	Hour         uint32
	Message      uint64
	Counters     Counters
}

// DumpLinkCounts is one link counter record: Table "link-days" (Account,
// Dim, Day, Link) or "msg-link-stats" (Message, Position), or
// "link-carried" (Account, Dim, Day, Link and Carried only: the delivered
// copies that carried the link that day). First and Last are Unix
// nanoseconds (0: none).
type DumpLinkCounts struct {
	Table                   string
	Account, Dim, Link      string // Link: LinkID's 24 hex digits
	Day                     uint32
	Message                 uint64
	Position                uint32
	Clicks, Unique, Machine uint64
	First, Last             int64
	Carried                 uint64
}

// DumpLinkName is a link's URL; DumpLinkMessage a message that carried
// it; DumpMessageLink a message's recorded link position.
type (
	DumpLinkName struct {
		Account, Link, URL string
	}
	DumpLinkMessage struct {
		Account, Link string
		Message       uint64
	}
	DumpMessageLink struct {
		Message  uint64
		Position uint32
		URL      string
	}
)

// DumpCopy is a copy and whether it is still queued.
type DumpCopy struct {
	Copy   Copy
	Queued bool
}

// DumpAttempt is one webhook delivery attempt (N counts from 1).
type DumpAttempt struct {
	N       int
	Attempt WebhookAttempt
}

// DumpOrphanCount is the count of orphan hits.
type DumpOrphanCount struct{ N uint64 }

// Dump calls fn with every item of the database, in an order a loader
// can take: records, messages, copies, events (per account, in append
// order across logs), hits, aggregates, address lists, webhooks. Each is
// one of RawRecord, Message, DumpCopy, DumpEvent, DumpOrphan,
// DumpOrphanCount, DumpUniq, DumpCounters, DumpLinkCounts, DumpLinkName,
// DumpLinkMessage, DumpMessageLink, AddressEntry, WebhookMessage,
// DumpAttempt. It reads one consistent snapshot.
func (r *Relay) Dump(ctx context.Context, fn func(item any) error) error {
	r.flushCarried() // the deliveries gathered in memory go too
	return r.db.View(func(tx *bolt.Tx) error {
		each := func(bucket string, f func(k, v []byte) error) error {
			return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				return f(k, v)
			})
		}
		if err := each(bucketRecords, func(k, v []byte) error {
			kind, key, _ := bytes.Cut(k, []byte{0})
			raw, err := decodeRaw(RecordKind(kind), string(key), v)
			if err != nil {
				return err
			}
			return fn(*raw)
		}); err != nil {
			return err
		}
		if err := each(bucketMessages, func(k, v []byte) error {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("store: dump: message %x: %w", k, err)
			}
			return fn(m)
		}); err != nil {
			return err
		}
		qb := tx.Bucket([]byte(bucketQueued))
		if err := each(bucketCopies, func(k, v []byte) error {
			var c Copy
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("store: dump: copy %x: %w", k, err)
			}
			return fn(DumpCopy{c, qb.Get(k) != nil})
		}); err != nil {
			return err
		}
		hitIDs := tx.Bucket([]byte(bucketHitIDs))
		if err := tx.Bucket([]byte(bucketEvents)).ForEachBucket(func(acct []byte) error {
			return dumpAccountEvents(ctx, tx, hitIDs, string(acct), fn)
		}); err != nil {
			return err
		}
		if err := each(bucketHits, func(k, v []byte) error {
			h := Hit{ID: string(k)}
			if err := decodeHitRecord(v, &h); err != nil {
				return nil // unreadable: not worth a copy
			}
			h.ID = string(k)
			return fn(DumpOrphan{h})
		}); err != nil {
			return err
		}
		if v := tx.Bucket([]byte(bucketHitCounts)).Get(orphansKey); len(v) == 8 {
			if err := fn(DumpOrphanCount{binary.BigEndian.Uint64(v)}); err != nil {
				return err
			}
		}
		if err := each(bucketHitUniq, func(k, _ []byte) error {
			if len(k) < 9 {
				return nil
			}
			u := DumpUniq{Copy: binary.BigEndian.Uint64(k[1:9]), Key: string(k[0])}
			switch {
			case k[0] == 'c' && len(k) == 13:
				u.Key += strconv.FormatUint(uint64(binary.BigEndian.Uint32(k[9:])), 10)
			case k[0] == 'u' && len(k) == 21:
				u.Key += hexID(string(k[9:]))
			case len(k) != 9:
				return nil
			}
			return fn(u)
		}); err != nil {
			return err
		}
		if err := each(bucketAgg, func(k, v []byte) error {
			acct, rest, ok := bytes.Cut(k, []byte{0})
			dim, hour, ok2 := bytes.Cut(rest, []byte{0})
			if !ok || !ok2 || len(hour) != 4 {
				return nil
			}
			return fn(DumpCounters{Table: "agg", Account: string(acct), Dim: string(dim), Hour: binary.BigEndian.Uint32(hour), Counters: decodeCounters(v)})
		}); err != nil {
			return err
		}
		if err := each(bucketTotals, func(k, v []byte) error {
			acct := string(k)
			if acct == "\x00" {
				acct = AllAccounts
			}
			return fn(DumpCounters{Table: "totals", Account: acct, Counters: decodeCounters(v)})
		}); err != nil {
			return err
		}
		if err := each(bucketMsgStats, func(k, v []byte) error {
			if len(k) != 8 {
				return nil
			}
			return fn(DumpCounters{Table: "msg", Message: binary.BigEndian.Uint64(k), Counters: decodeCounters(v)})
		}); err != nil {
			return err
		}
		if err := each(bucketLinkDays, func(k, v []byte) error {
			d, ok := linkDayDump(k)
			if !ok {
				return nil
			}
			lc := decodeLinkCounts(v)
			d.Table, d.Clicks, d.Unique, d.Machine, d.First, d.Last = "link-days", lc.clicks, lc.unique, lc.machine, lc.first, lc.last
			return fn(d)
		}); err != nil {
			return err
		}
		if err := each(bucketLinkCarried, func(k, v []byte) error {
			d, ok := linkDayDump(k)
			if !ok {
				return nil
			}
			d.Table = "link-carried"
			d.Carried, _ = binary.Uvarint(v)
			return fn(d)
		}); err != nil {
			return err
		}
		if err := each(bucketMsgLinkStats, func(k, v []byte) error {
			if len(k) != 12 {
				return nil
			}
			lc := decodeLinkCounts(v)
			return fn(DumpLinkCounts{Table: "msg-link-stats", Message: binary.BigEndian.Uint64(k), Position: binary.BigEndian.Uint32(k[8:]),
				Clicks: lc.clicks, Unique: lc.unique, Machine: lc.machine, First: lc.first, Last: lc.last})
		}); err != nil {
			return err
		}
		if err := each(bucketLinkNames, func(k, v []byte) error {
			acct, id, ok := bytes.Cut(k, []byte{0})
			if !ok || len(id) != 12 {
				return nil
			}
			return fn(DumpLinkName{string(acct), hexID(string(id)), string(v)})
		}); err != nil {
			return err
		}
		if err := each(bucketLinkMsgs, func(k, _ []byte) error {
			i := bytes.IndexByte(k, 0)
			if i < 0 || len(k)-i-1 != 20 {
				return nil
			}
			rest := k[i+1:]
			return fn(DumpLinkMessage{string(k[:i]), hexID(string(rest[:12])), binary.BigEndian.Uint64(rest[12:])})
		}); err != nil {
			return err
		}
		if err := each(bucketMsgLinks, func(k, v []byte) error {
			if len(k) != 12 {
				return nil
			}
			return fn(DumpMessageLink{binary.BigEndian.Uint64(k), binary.BigEndian.Uint32(k[8:]), string(v)})
		}); err != nil {
			return err
		}
		if err := each(bucketAddrLists, func(_, v []byte) error {
			var e AddressEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: dump: address entry: %w", err)
			}
			return fn(e)
		}); err != nil {
			return err
		}
		if err := each(bucketWHMsgs, func(_, v []byte) error {
			var m WebhookMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("store: dump: webhook message: %w", err)
			}
			return fn(m)
		}); err != nil {
			return err
		}
		return each(bucketWHAttempts, func(k, v []byte) error {
			if len(k) < 5 {
				return nil
			}
			var a WebhookAttempt
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("store: dump: webhook attempt: %w", err)
			}
			a.Message = string(k[:len(k)-5])
			return fn(DumpAttempt{int(binary.BigEndian.Uint32(k[len(k)-4:])), a})
		})
	})
}

// dumpAccountEvents yields one account's events of every log merged in
// event-key order, which is the order they were appended in.
func dumpAccountEvents(ctx context.Context, tx *bolt.Tx, hitIDs *bolt.Bucket, acct string, fn func(any) error) error {
	ab := tx.Bucket([]byte(bucketEvents)).Bucket([]byte(acct))
	type head struct {
		log  string
		c    *bolt.Cursor
		k, v []byte
	}
	var heads []*head
	for _, log := range Logs {
		lb := ab.Bucket([]byte("log:" + log))
		if lb == nil {
			continue
		}
		h := &head{log: log, c: lb.Cursor()}
		h.k, h.v = h.c.First()
		heads = append(heads, h)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var best *head
		for _, h := range heads {
			if h.k != nil && (best == nil || bytes.Compare(h.k, best.k) < 0) {
				best = h
			}
		}
		if best == nil {
			return nil
		}
		e, err := decodeEvent(acct, best.log, best.v)
		if err != nil {
			return err
		}
		hit := e.Key != "" && (best.log == LogClicks || best.log == LogOpens) && hitIDs.Get([]byte(e.Key)) != nil
		if err := fn(DumpEvent{e, hit}); err != nil {
			return err
		}
		best.k, best.v = best.c.Next()
	}
}

// linkDayDump reads a key of "link-days" or "link-carried" (account \x00
// dim \x00 day(4) link(12)).
func linkDayDump(k []byte) (DumpLinkCounts, bool) {
	acct, rest, ok := bytes.Cut(k, []byte{0})
	i := bytes.IndexByte(rest, 0)
	if !ok || i < 0 || len(rest)-i-1 != 16 {
		return DumpLinkCounts{}, false
	}
	dim, tail := rest[:i], rest[i+1:]
	return DumpLinkCounts{Account: string(acct), Dim: string(dim), Day: binary.BigEndian.Uint32(tail[:4]), Link: hexID(string(tail[4:]))}, true
}
