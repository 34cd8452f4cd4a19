package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// The event logs (SPEC §9). Every event belongs to one account and one log.
//
// Storage: bucket "events" holds one bucket per account; in it,
//
//	"log:<name>"  eventKey -> event            the log itself, in time order
//	"days"        "YYYY-MM-DD\x00<log>" -> n   which days have events
//	"by-msg"      id(8) eventKey log -> nil     index by message copy id
//	"by-rcpt"     rcpt \x00 eventKey log -> nil index by recipient (lower case)
//	"by-tag"      tag \x00 eventKey log -> nil  index by tag
//
// eventKey is the event's time (Unix nanoseconds, 8 bytes big-endian)
// followed by a sequence number (8 bytes), so keys sort by time and a
// cursor seeks straight to a day. Bucket "event-keys" maps
// "account\x00log\x00key" to eventKey for events appended with a Key, so
// appending one twice stores it once.
func init() {
	registerRelayBuckets(bucketEvents, bucketEventKeys)
}

const (
	bucketEvents    = "events"
	bucketEventKeys = "event-keys"
	eventKeyLen     = 16
	scanChunk       = 512 // events read per read transaction while iterating
)

// Log names.
const (
	LogAttempts   = "attempts"   // a copy was accepted
	LogDeliveries = "deliveries" // a copy was delivered
	LogFailures   = "failures"   // a delivery try failed (temporarily or for good)
	LogClicks     = "clicks"     // a tracked link was followed
	LogOpens      = "opens"      // a tracked image or the pixel was loaded
	LogBounces    = "bounces"    // a copy bounced after the upstream took it (hard, soft or delayed)
	LogResponses  = "responses"  // mail came back that is not a bounce: auto-replies, replies, unparsed
	LogComplaints = "complaints" // a recipient reported a copy as spam (ARF)
	LogDMARC      = "dmarc"      // one row of a DMARC aggregate report
)

// LogFields lists each log's fields in SMTPeter's order; it is the column
// order of a CSV download. "id", "time", "recipient" and "tags" come from
// the Event's own fields, the rest from Event.Fields. Fields after
// SMTPeter's own come last, so scripts written for SMTPeter's files keep
// their columns: "machine" (a hit from a scanner, an image proxy or a HEAD
// request, kept out of every human figure) and "altered" (the reader asked
// for a path or query other than the link's); a bounce's "reason" (the
// classifier's: userunknown, mailboxfull, ...) and a DMARC row's "report"
// (aggregate, or failure for a failure report).
var LogFields = map[string][]string{
	LogAttempts:   {"id", "time", "envelope", "recipient", "properties", "tags"},
	LogDeliveries: {"id", "time", "envelope", "recipient", "from", "to", "attempt", "tags"},
	LogFailures:   {"id", "time", "envelope", "recipient", "attempt", "from", "to", "type", "code", "status", "description", "state", "tags"},
	LogClicks:     {"id", "time", "headers", "ip", "url", "destination", "tags", "recipient", "machine", "altered"},
	LogOpens:      {"id", "time", "headers", "ip", "protocol", "tags", "recipient", "machine"},
	LogBounces:    {"id", "time", "recipient", "type", "status", "code", "diagnostic", "mta", "tags", "reason"},
	LogResponses:  {"id", "time", "from", "to", "subject", "kind", "tags", "reason"},
	LogComplaints: {"id", "time", "recipient", "feedbacktype", "reporter", "tags"},
	LogDMARC:      {"time", "reporter", "reportid", "range", "domain", "ip", "count", "disposition", "dkim", "spf", "headerfrom", "report"},
}

// Logs lists the log names in a fixed order.
var Logs = []string{LogAttempts, LogDeliveries, LogFailures, LogClicks, LogOpens, LogBounces, LogResponses, LogComplaints, LogDMARC}

// Event is one record of one log.
type Event struct {
	Log       string    // one of the Log* names
	Account   string    // the account it belongs to; never shown across accounts
	ID        uint64    // the message copy id (field "id"); 0 when none (dmarc, unjoined mail)
	Time      time.Time // field "time"; stored at nanosecond precision, UTC
	Recipient string    // field "recipient"
	Tags      []string  // field "tags"
	// Fields holds the log's other fields by their SPEC §9 names
	// ("envelope", "from", "code", ...) as text. Names not in the log's
	// LogFields are refused.
	// Text is stored as UTF-8: invalid bytes read back as U+FFFD.
	Fields map[string]string
	// Key, when set, makes the append idempotent: an event with the same
	// account, log and key as a stored one is dropped. Hits use their hit id.
	Key string

	// What follows is not stored with the event: it places the event in
	// the aggregates behind stats and the dashboard (see aggregate.go).
	// Callers that know them set them; zero values leave the event out of
	// the figures they feed.

	// Message is the id of the message (the spooled original) the copy
	// belongs to.
	Message uint64
	// Credential is the credential the copy was sent with.
	Credential string
	// Link is the link a click followed, when known.
	Link *EventLink

	// hit marks a clicks or opens event made from a redirector's hit:
	// its Key is the hit id, kept in "hit-ids" (with where the event is)
	// rather than in "event-keys".
	hit bool
}

// EventLink names the link of a click: its position in the message and
// the URL recorded for that position when the message was rewritten.
type EventLink struct {
	Position uint32
	URL      string
}

// Value returns field name of e as text: ids as 16 hex digits, time as
// RFC 3339 with nanoseconds in UTC, tags joined with ",".
func (e *Event) Value(name string) string {
	switch name {
	case "id":
		return FormatID(e.ID)
	case "time":
		return e.Time.UTC().Format(time.RFC3339Nano)
	case "recipient":
		return e.Recipient
	case "tags":
		return strings.Join(e.Tags, ",")
	case "machine", "altered":
		if v, ok := e.Fields[name]; ok {
			return v
		}
		return "false"
	}
	return e.Fields[name]
}

// Record returns e's values in LogFields order, for one CSV line.
func (e *Event) Record() []string {
	names := LogFields[e.Log]
	rec := make([]string, len(names))
	for i, n := range names {
		rec[i] = e.Value(n)
	}
	return rec
}

// Data returns e's fields as a map for JSON: like Value, except tags is a
// list.
func (e *Event) Data() map[string]any {
	names := LogFields[e.Log]
	m := make(map[string]any, len(names))
	for _, n := range names {
		if n == "tags" {
			t := e.Tags
			if t == nil {
				t = []string{}
			}
			m[n] = t
			continue
		}
		m[n] = e.Value(n)
	}
	return m
}

// storedEvent is an Event as it is kept (account and log are in the path).
type storedEvent struct {
	ID        uint64            `json:"i"`
	Time      int64             `json:"t"`
	Recipient string            `json:"r,omitempty"`
	Tags      []string          `json:"g,omitempty"`
	Fields    map[string]string `json:"f,omitempty"`
	Key       string            `json:"k,omitempty"`
}

type encodedEvent struct {
	ev  *Event
	val []byte
}

func validEvent(e *Event) error {
	names, ok := LogFields[e.Log]
	if !ok {
		return fmt.Errorf("store: event: unknown log %q", e.Log)
	}
	if e.Account == "" || strings.IndexByte(e.Account, 0) >= 0 {
		return errors.New("store: event: account must be set")
	}
	if e.Time.IsZero() || e.Time.Before(time.Unix(0, 0)) {
		return errors.New("store: event: time must be set")
	}
	for k := range e.Fields {
		if !slices.Contains(names, k) || k == "id" || k == "time" || k == "recipient" || k == "tags" {
			return fmt.Errorf("store: event: log %s has no field %q", e.Log, k)
		}
	}
	for _, t := range e.Tags {
		if t == "" || strings.IndexByte(t, 0) >= 0 || len(t) > 256 {
			return fmt.Errorf("store: event: bad tag %q", t)
		}
	}
	if len(e.Recipient) > 1024 || strings.IndexByte(e.Recipient, 0) >= 0 {
		return errors.New("store: event: bad recipient")
	}
	return nil
}

// sanitize returns e with every text made valid UTF-8 (invalid bytes
// become U+FFFD), as JSON, CSV and the indexes need one spelling.
func sanitize(e Event) Event {
	v := func(s string) string {
		if utf8.ValidString(s) {
			return s
		}
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	e.Account, e.Recipient, e.Key = v(e.Account), v(e.Recipient), v(e.Key)
	// Tags and Fields are copied only when one needs mending: the caller's
	// slice and map are never changed.
	for _, t := range e.Tags {
		if !utf8.ValidString(t) {
			tags := make([]string, len(e.Tags))
			for i, t := range e.Tags {
				tags[i] = v(t)
			}
			e.Tags = tags
			break
		}
	}
	for _, x := range e.Fields {
		if !utf8.ValidString(x) {
			f := make(map[string]string, len(e.Fields))
			for k, x := range e.Fields {
				f[k] = v(x)
			}
			e.Fields = f
			break
		}
	}
	return e
}

func encodeEvents(events []Event) ([]encodedEvent, error) {
	out := make([]encodedEvent, len(events))
	for i := range events {
		se := sanitize(events[i])
		e := &se
		if err := validEvent(e); err != nil {
			return nil, err
		}
		fields := e.Fields
		if e.Log == LogClicks && fields["destination"] == fields["url"] {
			// Stored once: a click's destination is nearly always its URL
			// (decodeEvent puts it back).
			fields = make(map[string]string, len(e.Fields))
			for k, v := range e.Fields {
				if k != "destination" {
					fields[k] = v
				}
			}
		}
		v := appendStoredEvent(nil, &storedEvent{ID: e.ID, Time: e.Time.UnixNano(), Recipient: e.Recipient, Tags: e.Tags, Fields: fields, Key: e.Key})
		out[i] = encodedEvent{e, v}
	}
	return out, nil
}

// AppendEvents adds events to their logs in one durable commit shared with
// concurrent writers. Events with a Key already stored are skipped, so a
// batch can be retried safely.
func (r *Relay) AppendEvents(ctx context.Context, events []Event) error {
	evs, err := encodeEvents(events)
	if err != nil {
		return err
	}
	return r.update(ctx, func(tx *bolt.Tx) error { return putEvents(tx, evs) })
}

func timeKey(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, eventKeyLen), uint64(t.UnixNano()))
}

func dayOf(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// appendFill is how full bbolt packs a page it splits in buckets whose
// keys arrive in (nearly) ascending order: hits by id, events by time, and
// the events' dedup keys (account, log, then an id that grows: a hit's).
// bbolt's default, half, suits random keys; with ascending ones it leaves
// every page half empty, so the file and each commit's writes double.
// Slightly under full leaves room for the few keys that come late.
const appendFill = 0.9

func putEvents(tx *bolt.Tx, evs []encodedEvent) error {
	root := tx.Bucket([]byte(bucketEvents))
	keys := tx.Bucket([]byte(bucketEventKeys))
	keys.FillPercent = appendFill
	hitIDs := tx.Bucket([]byte(bucketHitIDs))
	hitIDs.FillPercent = appendFill // hit ids ascend (time first)
	// Each day's count is written once per batch. (Bucket lookups need no
	// such care: in a write transaction bbolt keeps the child buckets it
	// has opened and hands the same ones back.)
	days := map[string]uint64{} // account "\x00" day "\x00" log
	agg := newAggregator()
	uniq := tx.Bucket([]byte(bucketHitUniq))
	wh := webhookQueuer{tx: tx}
	for _, ee := range evs {
		e := ee.ev
		var dedup []byte
		if e.Key != "" && !e.hit {
			dedup = []byte(e.Account + "\x00" + e.Log + "\x00" + e.Key)
			if keys.Get(dedup) != nil {
				continue
			}
		}
		ab, err := root.CreateBucketIfNotExists([]byte(e.Account))
		if err != nil {
			return err
		}
		lb, err := ab.CreateBucketIfNotExists([]byte("log:" + e.Log))
		if err != nil {
			return err
		}
		lb.FillPercent = appendFill
		seq, err := ab.NextSequence()
		if err != nil {
			return err
		}
		ek := binary.BigEndian.AppendUint64(timeKey(e.Time), seq)
		if err := lb.Put(ek, ee.val); err != nil {
			return err
		}
		if dedup != nil {
			if err := keys.Put(dedup, ek); err != nil {
				return err
			}
		}
		if e.hit {
			loc := make([]byte, 0, len(e.Account)+len(e.Log)+2+len(ek))
			loc = append(append(append(append(append(loc, e.Account...), 0), e.Log...), 0), ek...)
			if err := hitIDs.Put([]byte(e.Key), loc); err != nil {
				return err
			}
		}
		if err := eachIndexKey(e, ek, func(index string, k []byte) error {
			ib, err := ab.CreateBucketIfNotExists([]byte(index))
			if err != nil {
				return err
			}
			if index == "by-tag" {
				ib.FillPercent = appendFill // a tag's keys ascend (time first)
			}
			return ib.Put(k, nil)
		}); err != nil {
			return err
		}
		days[e.Account+"\x00"+dayOf(e.Time)+"\x00"+e.Log]++
		if err := agg.event(uniq, e); err != nil {
			return err
		}
		if err := wh.event(e); err != nil {
			return err
		}
	}
	if err := agg.flush(tx); err != nil {
		return err
	}
	for k, d := range days {
		account, dk, _ := strings.Cut(k, "\x00")
		db, err := root.Bucket([]byte(account)).CreateBucketIfNotExists([]byte("days"))
		if err != nil {
			return err
		}
		if err := addCounter(db, []byte(dk), d); err != nil {
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

// eachIndexKey calls fn with e's key in each index: by-msg, by-rcpt (when
// e has a recipient) and by-tag (one per tag).
func eachIndexKey(e *Event, ek []byte, fn func(index string, key []byte) error) error {
	suffix := append(append(make([]byte, 0, len(ek)+len(e.Log)), ek...), e.Log...)
	if e.ID != 0 {
		if err := fn("by-msg", append(idKey(e.ID), suffix...)); err != nil {
			return err
		}
	}
	if e.Recipient != "" {
		if err := fn("by-rcpt", append([]byte(strings.ToLower(e.Recipient)+"\x00"), suffix...)); err != nil {
			return err
		}
	}
	for _, t := range e.Tags {
		if err := fn("by-tag", append([]byte(t+"\x00"), suffix...)); err != nil {
			return err
		}
	}
	return nil
}

func decodeEvent(account, log string, v []byte) (Event, error) {
	var s storedEvent
	if err := json.Unmarshal(v, &s); err != nil {
		return Event{}, fmt.Errorf("store: event: %w", err)
	}
	if log == LogClicks {
		if _, ok := s.Fields["destination"]; !ok {
			if u, ok := s.Fields["url"]; ok {
				s.Fields["destination"] = u
			}
		}
	}
	return Event{Log: log, Account: account, ID: s.ID, Time: time.Unix(0, s.Time).UTC(), Recipient: s.Recipient, Tags: s.Tags, Fields: s.Fields, Key: s.Key}, nil
}

// DayLog is one log file: a day (UTC) that has events in one log.
type DayLog struct {
	Day   string // YYYY-MM-DD
	Log   string
	Count uint64
}

// EventDays lists, in date order, the days and logs that account has
// events in.
func (r *Relay) EventDays(_ context.Context, account string) ([]DayLog, error) {
	var out []DayLog
	err := r.db.View(func(tx *bolt.Tx) error {
		ab := tx.Bucket([]byte(bucketEvents)).Bucket([]byte(account))
		if ab == nil || account == "" {
			return nil
		}
		days := ab.Bucket([]byte("days"))
		if days == nil {
			return nil
		}
		return days.ForEach(func(k, v []byte) error {
			day, log, _ := strings.Cut(string(k), "\x00")
			if len(v) == 8 && binary.BigEndian.Uint64(v) > 0 {
				out = append(out, DayLog{Day: day, Log: log, Count: binary.BigEndian.Uint64(v)})
			}
			return nil
		})
	})
	return out, err
}

// Events yields account's events of one log with from <= time < to, in time
// order (ties in append order). A zero to means no end. It reads in small
// transactions, so a slow consumer holds no lock and memory stays flat
// however many events match. Stop early by breaking out of the loop.
func (r *Relay) Events(ctx context.Context, account, log string, from, to time.Time) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if _, ok := LogFields[log]; !ok {
			yield(Event{}, fmt.Errorf("store: unknown log %q", log))
			return
		}
		start := timeKey(from)
		if from.IsZero() || from.Before(time.Unix(0, 0)) {
			start = nil
		}
		var end []byte
		if !to.IsZero() {
			end = timeKey(to)
		}
		r.scan(ctx, func(tx *bolt.Tx) *bolt.Bucket {
			ab := tx.Bucket([]byte(bucketEvents)).Bucket([]byte(account))
			if ab == nil || account == "" {
				return nil
			}
			return ab.Bucket([]byte("log:" + log))
		}, start, end, func(_ *bolt.Tx, k, v []byte) (Event, bool, error) {
			e, err := decodeEvent(account, log, v)
			return e, true, err
		}, yield)
	}
}

// EventsDay yields one UTC day (YYYY-MM-DD) of one log, in time order.
func (r *Relay) EventsDay(ctx context.Context, account, log, day string) iter.Seq2[Event, error] {
	d, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return func(yield func(Event, error) bool) {
			yield(Event{}, fmt.Errorf("store: day %q: want YYYY-MM-DD", day))
		}
	}
	return r.Events(ctx, account, log, d, d.AddDate(0, 0, 1))
}

// EventsByMessage yields every event of account about message copy id, in
// time order, across all logs.
func (r *Relay) EventsByMessage(ctx context.Context, account string, id uint64) iter.Seq2[Event, error] {
	return r.byIndex(ctx, account, "by-msg", idKey(id), time.Time{}, time.Time{})
}

// EventsByRecipient yields every event of account for recipient (case
// insensitive) with from <= time < to (zero: unbounded), in time order.
func (r *Relay) EventsByRecipient(ctx context.Context, account, recipient string, from, to time.Time) iter.Seq2[Event, error] {
	return r.byIndex(ctx, account, "by-rcpt", []byte(strings.ToLower(recipient)+"\x00"), from, to)
}

// EventsByTag yields every event of account tagged tag with from <= time <
// to (zero: unbounded), in time order.
func (r *Relay) EventsByTag(ctx context.Context, account, tag string, from, to time.Time) iter.Seq2[Event, error] {
	return r.byIndex(ctx, account, "by-tag", []byte(tag+"\x00"), from, to)
}

func (r *Relay) byIndex(ctx context.Context, account, index string, prefix []byte, from, to time.Time) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		start := append([]byte(nil), prefix...)
		if !from.IsZero() && !from.Before(time.Unix(0, 0)) {
			start = append(start, timeKey(from)...)
		}
		// end: the prefix's upper bound, or prefix+to.
		var end []byte
		if !to.IsZero() {
			end = append(append([]byte(nil), prefix...), timeKey(to)...)
		} else {
			end = prefixEnd(prefix)
		}
		r.scan(ctx, func(tx *bolt.Tx) *bolt.Bucket {
			ab := tx.Bucket([]byte(bucketEvents)).Bucket([]byte(account))
			if ab == nil || account == "" {
				return nil
			}
			return ab.Bucket([]byte(index))
		}, start, end, func(tx *bolt.Tx, k, _ []byte) (Event, bool, error) {
			rest := k[len(prefix):]
			if len(rest) <= eventKeyLen {
				return Event{}, false, nil
			}
			ek, log := rest[:eventKeyLen], string(rest[eventKeyLen:])
			lb := tx.Bucket([]byte(bucketEvents)).Bucket([]byte(account)).Bucket([]byte("log:" + log))
			if lb == nil {
				return Event{}, false, nil
			}
			v := lb.Get(ek)
			if v == nil {
				return Event{}, false, nil // removed by retention
			}
			e, err := decodeEvent(account, log, v)
			return e, true, err
		}, yield)
	}
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil if there is none.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// scan walks bucket keys in [start, end) (nil: unbounded) in chunks of
// scanChunk, one read transaction per chunk, yielding what decode keeps.
func (r *Relay) scan(ctx context.Context, bucket func(*bolt.Tx) *bolt.Bucket, start, end []byte,
	decode func(tx *bolt.Tx, k, v []byte) (Event, bool, error), yield func(Event, error) bool) {
	next := start
	buf := make([]Event, 0, scanChunk)
	for {
		if err := ctx.Err(); err != nil {
			yield(Event{}, err)
			return
		}
		buf = buf[:0]
		var more bool
		err := r.db.View(func(tx *bolt.Tx) error {
			b := bucket(tx)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			var k, v []byte
			if next == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(next)
			}
			for ; k != nil; k, v = c.Next() {
				if end != nil && bytes.Compare(k, end) >= 0 {
					return nil
				}
				if len(buf) == scanChunk {
					next = append(next[:0:0], k...)
					more = true
					return nil
				}
				e, ok, err := decode(tx, k, v)
				if err != nil {
					return err
				}
				if ok {
					buf = append(buf, e)
				}
			}
			return nil
		})
		if err != nil {
			yield(Event{}, err)
			return
		}
		for _, e := range buf {
			if !yield(e, nil) {
				return
			}
		}
		if !more {
			return
		}
	}
}

// DeleteEventsBefore removes from every account and log the events older
// than cutoff(account, log), with their index entries and idempotency
// keys. It works in bounded transactions and returns how many events it
// removed.
func (r *Relay) DeleteEventsBefore(ctx context.Context, cutoff func(account, log string) time.Time) (int, error) {
	total := 0
	var accounts [][]byte
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketEvents)).ForEachBucket(func(k []byte) error {
			accounts = append(accounts, append([]byte(nil), k...))
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	for _, acct := range accounts {
		for _, log := range Logs {
			end := timeKey(cutoff(string(acct), log))
			for {
				if err := ctx.Err(); err != nil {
					return total, err
				}
				n := 0
				err := r.db.Update(func(tx *bolt.Tx) error {
					ab := tx.Bucket([]byte(bucketEvents)).Bucket(acct)
					lb := ab.Bucket([]byte("log:" + log))
					if lb == nil {
						return nil
					}
					keys := tx.Bucket([]byte(bucketEventKeys))
					c := lb.Cursor()
					var doomed [][2][]byte
					for k, v := c.First(); k != nil && bytes.Compare(k, end) < 0 && len(doomed) < 10000; k, v = c.Next() {
						doomed = append(doomed, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
					}
					for _, kv := range doomed {
						e, err := decodeEvent(string(acct), log, kv[1])
						if err == nil {
							if err := eachIndexKey(&e, kv[0], func(index string, k []byte) error {
								if ib := ab.Bucket([]byte(index)); ib != nil {
									return ib.Delete(k)
								}
								return nil
							}); err != nil {
								return err
							}
							if e.Key != "" {
								if err := keys.Delete([]byte(string(acct) + "\x00" + log + "\x00" + e.Key)); err != nil {
									return err
								}
								if log == LogClicks || log == LogOpens {
									if err := tx.Bucket([]byte(bucketHitIDs)).Delete([]byte(e.Key)); err != nil {
										return err
									}
								}
							}
						}
						if err := lb.Delete(kv[0]); err != nil {
							return err
						}
					}
					n = len(doomed)
					return nil
				})
				if err != nil {
					return total, err
				}
				total += n
				if n < 10000 {
					break
				}
			}
		}
		// Day entries of each log wholly before its cutoff's day.
		err := r.db.Update(func(tx *bolt.Tx) error {
			days := tx.Bucket([]byte(bucketEvents)).Bucket(acct).Bucket([]byte("days"))
			if days == nil {
				return nil
			}
			var doomed [][]byte
			c := days.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				day, log, _ := strings.Cut(string(k), "\x00")
				if day < dayOf(cutoff(string(acct), log)) {
					doomed = append(doomed, append([]byte(nil), k...))
				}
			}
			for _, k := range doomed {
				if err := days.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// deleteFinalBefore removes final copies and finished messages whose ids
// (which sort by creation time) are older than cutoff.
func (r *Relay) deleteFinalBefore(ctx context.Context, cutoff time.Time) error {
	ms := uint64(cutoff.UnixMilli() - idEpochMs)
	if cutoff.UnixMilli() < idEpochMs {
		return nil
	}
	endID := idKey(ms << idCounterBit)
	for _, bucket := range []string{bucketCopies, bucketMessages} {
		var last []byte
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := 0
			err := r.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte(bucket))
				qb := tx.Bucket([]byte(bucketQueued))
				var doomed [][]byte
				var index [][]byte // account-msgs entries of doomed messages
				c := b.Cursor()
				k, v := c.First()
				if last != nil {
					k, v = c.Seek(last)
				}
				for ; k != nil && bytes.Compare(k, endID) < 0 && n < 10000; k, v = c.Next() {
					n++
					last = append(last[:0:0], k...)
					if bucket == bucketCopies && qb.Get(k) != nil {
						continue
					}
					if bucket == bucketMessages {
						var m Message
						if json.Unmarshal(v, &m) == nil && m.Remaining > 0 {
							continue
						}
						if m.Account != "" {
							index = append(index, append([]byte(m.Account+"\x00"), k...))
						}
					}
					doomed = append(doomed, append([]byte(nil), k...))
				}
				for _, k := range doomed {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				for _, k := range index {
					if err := tx.Bucket([]byte(bucketAccountMsgs)).Delete(k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if n < 10000 {
				break
			}
		}
	}
	return nil
}
