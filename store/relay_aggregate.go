package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The aggregates in bbolt (see aggregate.go for what they mean):
//
//	"agg"            account \x00 dim \x00 hour(4)        -> counters
//	"totals"         account                              -> counters, all time
//	"msg-stats"      message(8)                           -> counters
//	"link-days"      account \x00 dim \x00 day(4) link(12) -> link counts
//	"link-names"     account \x00 link(12)                -> URL
//	"link-msgs"      account \x00 link(12) message(8)     -> nil
//	"msg-links"      message(8) position(4)               -> URL (recorded at rewrite)
//	"msg-link-stats" message(8) position(4)               -> link counts
//	"hit-uniq"       'o' copy(8) | 'k' copy(8) | 'c' copy(8) position(4) | 'u' copy(8) link(12) -> ""
//	                 a copy's first human open, first human click, first
//	                 human click on one link (by position, or by URL when
//	                 the position is not known)
func init() {
	registerRelayBuckets(bucketAgg, bucketTotals, bucketMsgStats, bucketLinkDays, bucketLinkNames, bucketLinkMsgs, bucketMsgLinks, bucketMsgLinkStats)
}

const (
	bucketAgg          = "agg"
	bucketTotals       = "totals"
	bucketMsgStats     = "msg-stats"
	bucketLinkDays     = "link-days"
	bucketLinkNames    = "link-names"
	bucketLinkMsgs     = "link-msgs"
	bucketMsgLinks     = "msg-links"
	bucketMsgLinkStats = "msg-link-stats"
)

// aggregator gathers one transaction's changes to the aggregates, so each
// record is read and written once per batch. Its maps are keyed by
// structs, not by the records' byte keys: a hit must not cost a dozen
// string concatenations.
type aggregator struct {
	counts   map[aggK]*[NumMetrics]int64
	totals   map[string]*[NumMetrics]int64
	msgs     map[uint64]*[NumMetrics]int64
	linkDays map[linkDayK]*linkCounts
	msgLinks map[msgPosK]*linkCounts
	names    map[linkNameK]string // account, link -> URL
	linkMsgs map[linkMsgK]struct{}
	ids      map[string][12]byte // URL -> link id, computed once a batch
}

type aggK struct {
	account, dim string
	hour         uint32
}

type linkDayK struct {
	account, dim string
	day          uint32
	link         [12]byte
}

type msgPosK struct {
	message uint64
	pos     uint32
}

type linkNameK struct {
	account string
	link    [12]byte
}

type linkMsgK struct {
	account string
	link    [12]byte
	message uint64
}

func newAggregator() *aggregator {
	return &aggregator{
		counts: map[aggK]*[NumMetrics]int64{}, totals: map[string]*[NumMetrics]int64{}, msgs: map[uint64]*[NumMetrics]int64{},
		linkDays: map[linkDayK]*linkCounts{}, msgLinks: map[msgPosK]*linkCounts{},
		names: map[linkNameK]string{}, linkMsgs: map[linkMsgK]struct{}{}, ids: map[string][12]byte{},
	}
}

func (a *aggregator) add(account, dim string, hour uint32, m Metric, d int64) {
	k := aggK{account, dim, hour}
	c := a.counts[k]
	if c == nil {
		c = new([NumMetrics]int64)
		a.counts[k] = c
	}
	c[m] += d
}

// addAll adds d to metric m in every dimension of e, for its account and
// for all accounts, and for its message.
func (a *aggregator) addAll(e *Event, m Metric, d int64) {
	h := hourOf(e.Time)
	a.add(e.Account, "", h, m, d)
	for _, t := range e.Tags {
		a.add(e.Account, dimTagPrefix+t, h, m, d)
	}
	if e.Credential != "" {
		a.add(e.Account, dimCredPrefix+e.Credential, h, m, d)
	}
	a.add(AllAccounts, "", h, m, d)
	for _, acct := range [...]string{e.Account, AllAccounts} {
		t := a.totals[acct]
		if t == nil {
			t = new([NumMetrics]int64)
			a.totals[acct] = t
		}
		t[m] += d
	}
	if e.Message != 0 {
		c := a.msgs[e.Message]
		if c == nil {
			c = new([NumMetrics]int64)
			a.msgs[e.Message] = c
		}
		c[m] += d
	}
}

// linkID returns url's link id, computing it once a batch.
func (a *aggregator) linkID(url string) [12]byte {
	id, ok := a.ids[url]
	if !ok {
		copy(id[:], linkIDBytes(url))
		a.ids[url] = id
	}
	return id
}

// event counts one stored event, reading and setting the copy's first-hit
// marks in uniq.
func (a *aggregator) event(uniq *bolt.Bucket, e *Event) error {
	m, ok := eventMetrics(e)
	if !ok {
		return nil
	}
	a.addAll(e, m, 1)
	link, posKnown := e.Link, e.Link != nil
	if link == nil && e.Log == LogClicks && e.Fields["url"] != "" {
		// A click stored without its link's position (appended by hand,
		// or from before links were recorded): counted by its URL.
		link = &EventLink{URL: e.Fields["url"]}
	}
	if m != Opens && m != Clicks || e.ID == 0 {
		if m == MachineClicks && link != nil {
			a.link(e, link, posKnown, linkCounts{machine: 1})
		}
		return nil
	}
	first := func(key []byte) (bool, error) {
		if uniq.Get(key) != nil {
			return false, nil
		}
		return true, uniq.Put(key, []byte{})
	}
	if m == Opens {
		if ok, err := first(append([]byte{'o'}, idKey(e.ID)...)); err != nil || !ok {
			return err
		}
		a.addAll(e, UniqueOpens, 1)
		return nil
	}
	if ok, err := first(append([]byte{'k'}, idKey(e.ID)...)); err != nil {
		return err
	} else if ok {
		a.addAll(e, UniqueClicks, 1)
	}
	if link == nil {
		return nil
	}
	ns := e.Time.UnixNano()
	lc := linkCounts{clicks: 1, first: ns, last: ns}
	uk := binary.BigEndian.AppendUint32(append([]byte{'c'}, idKey(e.ID)...), link.Position)
	if !posKnown {
		uk = append(append([]byte{'u'}, idKey(e.ID)...), linkIDBytes(link.URL)...)
	}
	ok, err := first(uk)
	if err != nil {
		return err
	}
	if ok {
		lc.unique = 1
	}
	a.link(e, link, posKnown, lc)
	return nil
}

// link adds lc to the link aggregates of link (e's), and to the message's
// own link figures when its position is known.
func (a *aggregator) link(e *Event, link *EventLink, posKnown bool, lc linkCounts) {
	id := a.linkID(link.URL)
	day := dayOfUnix(e.Time)
	addTo := func(k linkDayK) {
		c := a.linkDays[k]
		if c == nil {
			c = new(linkCounts)
			a.linkDays[k] = c
		}
		c.add(&lc)
	}
	addTo(linkDayK{e.Account, "", day, id})
	for _, t := range e.Tags {
		addTo(linkDayK{e.Account, dimTagPrefix + t, day, id})
	}
	if e.Credential != "" {
		addTo(linkDayK{e.Account, dimCredPrefix + e.Credential, day, id})
	}
	addTo(linkDayK{AllAccounts, "", day, id})
	if _, ok := a.names[linkNameK{e.Account, id}]; !ok {
		a.names[linkNameK{e.Account, id}] = link.URL
		a.names[linkNameK{AllAccounts, id}] = link.URL
	}
	if e.Message != 0 {
		if posKnown {
			k := msgPosK{e.Message, link.Position}
			c := a.msgLinks[k]
			if c == nil {
				c = new(linkCounts)
				a.msgLinks[k] = c
			}
			c.add(&lc)
		}
		a.linkMsgs[linkMsgK{e.Account, id, e.Message}] = struct{}{}
		a.linkMsgs[linkMsgK{AllAccounts, id, e.Message}] = struct{}{}
	}
}

// flush writes the gathered changes.
func (a *aggregator) flush(tx *bolt.Tx) error {
	ab := tx.Bucket([]byte(bucketAgg))
	for k, d := range a.counts {
		key := aggKey(k.account, k.dim, k.hour)
		if err := ab.Put(key, encodeCounters(ab.Get(key), d)); err != nil {
			return err
		}
	}
	tb := tx.Bucket([]byte(bucketTotals))
	for acct, d := range a.totals {
		if err := tb.Put(totalsKey(acct), encodeCounters(tb.Get(totalsKey(acct)), d)); err != nil {
			return err
		}
	}
	mb := tx.Bucket([]byte(bucketMsgStats))
	mb.FillPercent = appendFill
	for id, d := range a.msgs {
		k := idKey(id)
		if err := mb.Put(k, encodeCounters(mb.Get(k), d)); err != nil {
			return err
		}
	}
	put := func(b *bolt.Bucket, k []byte, d *linkCounts) error {
		cur := decodeLinkCounts(b.Get(k))
		cur.add(d)
		return b.Put(k, cur.encode())
	}
	ld := tx.Bucket([]byte(bucketLinkDays))
	for k, d := range a.linkDays {
		if err := put(ld, linkDayKey(k.account, k.dim, k.day, k.link[:]), d); err != nil {
			return err
		}
	}
	ml := tx.Bucket([]byte(bucketMsgLinkStats))
	for k, d := range a.msgLinks {
		if err := put(ml, msgPosKey(k.message, k.pos), d); err != nil {
			return err
		}
	}
	nb := tx.Bucket([]byte(bucketLinkNames))
	for k, url := range a.names {
		key := append([]byte(k.account+"\x00"), k.link[:]...)
		if nb.Get(key) == nil {
			if err := nb.Put(key, []byte(url)); err != nil {
				return err
			}
		}
	}
	lb := tx.Bucket([]byte(bucketLinkMsgs))
	for k := range a.linkMsgs {
		key := append(append([]byte(k.account+"\x00"), k.link[:]...), idKey(k.message)...)
		if lb.Get(key) == nil {
			if err := lb.Put(key, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// MessageLink is one link position of a message as it was rewritten.
type MessageLink struct {
	Position uint32
	URL      string
}

// PutMessageLinks records the original URL of every link position of a
// message, once per message (delivery records it before the first copy
// goes out); clicks are reported by these URLs, whatever path a reader's
// browser asked for. Recording it again changes nothing.
func (r *Relay) PutMessageLinks(ctx context.Context, message uint64, links []MessageLink) error {
	if len(links) == 0 {
		return nil
	}
	return r.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketMsgLinks))
		b.FillPercent = appendFill
		for _, l := range links {
			k := msgPosKey(message, l.Position)
			if b.Get(k) != nil {
				continue
			}
			if err := b.Put(k, []byte(l.URL)); err != nil {
				return err
			}
		}
		return nil
	})
}

// HasMessageLinks reports whether PutMessageLinks has recorded message.
func (r *Relay) HasMessageLinks(_ context.Context, message uint64) (bool, error) {
	var ok bool
	err := r.db.View(func(tx *bolt.Tx) error {
		p := idKey(message)
		k, _ := tx.Bucket([]byte(bucketMsgLinks)).Cursor().Seek(p)
		ok = k != nil && bytes.HasPrefix(k, p)
		return nil
	})
	return ok, err
}

// messageLinkURL returns the URL recorded for a message's link position.
func messageLinkURL(tx *bolt.Tx, message uint64, pos uint32) (string, bool) {
	v := tx.Bucket([]byte(bucketMsgLinks)).Get(msgPosKey(message, pos))
	if v == nil {
		return "", false
	}
	return string(v), true
}

// SeriesPoint is one bucket of a series.
type SeriesPoint struct {
	Start time.Time
	Counters
}

// Series returns account's counters (AllAccounts for every account) in
// dimension dim ("" for all of it, DimTag, DimCredential) for [from, to)
// in steps of an hour or a day (UTC), and their total. from is rounded
// down and to up to whole steps.
func (r *Relay) Series(ctx context.Context, account, dim string, from, to time.Time, step time.Duration) ([]SeriesPoint, Counters, error) {
	var total Counters
	pts, from, to, err := SeriesPoints(from, to, step)
	if err != nil || len(pts) == 0 {
		return nil, total, err
	}
	n := len(pts)
	err = r.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucketAgg)).Cursor()
		start, end := aggKey(account, dim, hourOf(from)), aggKey(account, dim, hourOf(to))
		for k, v := c.Seek(start); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			h := binary.BigEndian.Uint32(k[len(k)-4:])
			i := int(time.Unix(int64(h)*3600, 0).Sub(from) / step)
			if i < 0 || i >= n {
				continue
			}
			cs := decodeCounters(v)
			pts[i].Counters.Add(&cs)
			total.Add(&cs)
		}
		return nil
	})
	return pts, total, err
}

// Totals returns account's counters over all time (AllAccounts: every
// account's).
func (r *Relay) Totals(_ context.Context, account string) (Counters, error) {
	var c Counters
	err := r.db.View(func(tx *bolt.Tx) error {
		c = decodeCounters(tx.Bucket([]byte(bucketTotals)).Get(totalsKey(account)))
		return nil
	})
	return c, err
}

// totalsKey is an account's key in "totals" ("\x00" for AllAccounts:
// bbolt keys are never empty).
func totalsKey(account string) []byte {
	if account == AllAccounts {
		return []byte{0}
	}
	return []byte(account)
}

// MessageCounters returns the counters of one message (all its copies).
func (r *Relay) MessageCounters(_ context.Context, message uint64) (Counters, error) {
	var c Counters
	err := r.db.View(func(tx *bolt.Tx) error {
		c = decodeCounters(tx.Bucket([]byte(bucketMsgStats)).Get(idKey(message)))
		return nil
	})
	return c, err
}

// TopLinks returns account's most clicked links in [from, to) (whole UTC
// days), in dimension "", DimTag or DimCredential, ordered by unique clicks, then
// clicks, at most limit of them.
func (r *Relay) TopLinks(ctx context.Context, account, dim string, from, to time.Time, limit int) ([]LinkStat, error) {
	r.flushCarried() // the deliveries gathered in memory count too
	var out []LinkStat
	err := r.db.View(func(tx *bolt.Tx) error {
		sums := map[string]*linkCounts{}
		c := tx.Bucket([]byte(bucketLinkDays)).Cursor()
		d0 := dayOfUnix(from.UTC())
		d1 := dayOfUnix(to.UTC().Add(24*time.Hour - time.Nanosecond))
		start, end := linkDayKey(account, dim, d0, nil), linkDayKey(account, dim, d1, nil)
		for k, v := c.Seek(start); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			id := string(k[len(k)-12:])
			s := sums[id]
			if s == nil {
				s = new(linkCounts)
				sums[id] = s
			}
			lc := decodeLinkCounts(v)
			s.add(&lc)
		}
		ids := make([]string, 0, len(sums))
		for id := range sums {
			ids = append(ids, id)
		}
		slices.SortFunc(ids, func(a, b string) int {
			sa, sb := sums[a], sums[b]
			return cmp.Or(cmp.Compare(sb.unique, sa.unique), cmp.Compare(sb.clicks, sa.clicks), cmp.Compare(sb.machine, sa.machine), cmp.Compare(a, b))
		})
		if limit > 0 && len(ids) > limit {
			ids = ids[:limit]
		}
		names := tx.Bucket([]byte(bucketLinkNames))
		for _, id := range ids {
			st := sums[id].stat()
			st.ID = hexID(id)
			st.URL = string(names.Get([]byte(account + "\x00" + id)))
			st.Delivered = linkCarried(tx, account, dim, d0, d1, []byte(id))
			out = append(out, st)
		}
		return nil
	})
	return out, err
}

func hexID(b string) string {
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for i := 0; i < len(b); i++ {
		out = append(out, hexd[b[i]>>4], hexd[b[i]&0xf])
	}
	return string(out)
}

// LinkMessages returns the ids of the messages that carried a link (with
// a delivered copy or a click), newest first, at most limit.
func (r *Relay) LinkMessages(ctx context.Context, account, linkID string, limit int) ([]uint64, error) {
	id, err := parseLinkID(linkID)
	if err != nil {
		return nil, err
	}
	r.flushCarried()
	var out []uint64
	err = r.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(account+"\x00"), id...)
		c := tx.Bucket([]byte(bucketLinkMsgs)).Cursor()
		k, _ := c.Seek(prefixEnd(prefix))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && (limit <= 0 || len(out) < limit); k, _ = c.Prev() {
			if len(k) == len(prefix)+8 {
				out = append(out, binary.BigEndian.Uint64(k[len(prefix):]))
			}
		}
		return ctx.Err()
	})
	return out, err
}

// LinkSeries returns one link's clicks per UTC day of [from, to), in
// dimension "" or DimTag(tag), and its URL.
func (r *Relay) LinkSeries(ctx context.Context, account, dim, linkID string, from, to time.Time) (url string, days []LinkDay, err error) {
	id, err := parseLinkID(linkID)
	if err != nil {
		return "", nil, err
	}
	err = r.db.View(func(tx *bolt.Tx) error {
		url = string(tx.Bucket([]byte(bucketLinkNames)).Get([]byte(account + "\x00" + string(id))))
		b := tx.Bucket([]byte(bucketLinkDays))
		for d := dayOfUnix(from.UTC()); d < dayOfUnix(to.UTC().Add(24*time.Hour-time.Nanosecond)); d++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			lc := decodeLinkCounts(b.Get(linkDayKey(account, dim, d, id)))
			st := lc.stat()
			days = append(days, LinkDay{Day: time.Unix(int64(d)*86400, 0).UTC(), Clicks: st.Clicks, UniqueClicks: st.UniqueClicks, MachineClicks: st.MachineClicks})
		}
		return nil
	})
	return url, days, err
}

// LinkDay is one day of a link's clicks.
type LinkDay struct {
	Day                                 time.Time
	Clicks, UniqueClicks, MachineClicks uint64
}

// MessageLinks returns the links of one message with their clicks, in
// position order: every recorded position, clicked or not.
func (r *Relay) MessageLinks(ctx context.Context, message uint64) ([]LinkStat, error) {
	var out []LinkStat
	err := r.db.View(func(tx *bolt.Tx) error {
		delivered := decodeCounters(tx.Bucket([]byte(bucketMsgStats)).Get(idKey(message)))[Delivered]
		stats := tx.Bucket([]byte(bucketMsgLinkStats))
		p := idKey(message)
		c := tx.Bucket([]byte(bucketMsgLinks)).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if len(k) != 12 {
				continue
			}
			pos := int(binary.BigEndian.Uint32(k[8:]))
			lc := decodeLinkCounts(stats.Get(k))
			st := lc.stat()
			st.URL, st.ID, st.Position, st.Delivered = string(v), LinkID(string(v)), &pos, delivered
			out = append(out, st)
		}
		return ctx.Err()
	})
	return out, err
}

func parseLinkID(s string) ([]byte, error) {
	if len(s) != 24 {
		return nil, errLinkID
	}
	b := make([]byte, 12)
	for i := range b {
		hi, lo := unhex(s[2*i]), unhex(s[2*i+1])
		if hi < 0 || lo < 0 {
			return nil, errLinkID
		}
		b[i] = byte(hi<<4 | lo)
	}
	return b, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// DeleteAggregatesBefore removes the hourly and daily aggregates of
// hours and days wholly before cutoff (the all-time totals and the
// per-message figures stay), for retention. It returns how many records
// went.
func (r *Relay) DeleteAggregatesBefore(ctx context.Context, cutoff time.Time) (int, error) {
	hour, day := hourOf(cutoff), dayOfUnix(cutoff)
	total := 0
	for _, b := range []struct {
		name string
		old  func(k []byte) bool
	}{
		{bucketAgg, func(k []byte) bool { return len(k) >= 4 && binary.BigEndian.Uint32(k[len(k)-4:]) < hour }},
		{bucketLinkDays, func(k []byte) bool { return len(k) >= 16 && binary.BigEndian.Uint32(k[len(k)-16:len(k)-12]) < day }},
		{bucketLinkCarried, func(k []byte) bool { return len(k) >= 16 && binary.BigEndian.Uint32(k[len(k)-16:len(k)-12]) < day }},
	} {
		var doomed [][]byte
		err := r.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(b.name)).ForEach(func(k, _ []byte) error {
				if b.old(k) {
					doomed = append(doomed, bytes.Clone(k))
				}
				return ctx.Err()
			})
		})
		if err != nil {
			return total, err
		}
		for len(doomed) > 0 {
			n := min(len(doomed), 10000)
			chunk := doomed[:n]
			doomed = doomed[n:]
			err := r.update(ctx, func(tx *bolt.Tx) error {
				bk := tx.Bucket([]byte(b.name))
				for _, k := range chunk {
					if err := bk.Delete(k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return total, err
			}
			total += n
		}
	}
	return total, nil
}
