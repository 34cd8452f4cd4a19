package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/gob"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Day rollups let the API's stats and links read one small record per day
// instead of every event of a long period. A rollup is computed from the
// day's events on first use and kept in bucket "rollups" together with the
// day's event count per log (from the "days" index); when those counts
// change (a late hit, retention) it is computed again. Rollups of days not
// yet over are computed each time and never kept.
func init() {
	registerRelayBuckets(bucketRollups)
}

const bucketRollups = "rollups"

// rollupVersion changes when DayRollup's meaning changes, so that old
// records are recomputed.
const rollupVersion = 1

// DayRollup sums one UTC day of an account's events, optionally only those
// of messages with one tag.
type DayRollup struct {
	Version int
	Day     string // YYYY-MM-DD
	Tag     string // "" for all messages
	// Seen are the day's event counts per log (in Logs order) when the
	// rollup was made: a rollup is current while they are unchanged.
	Seen [5]uint64

	Sent      uint64 // attempts
	Delivered uint64
	Failed    uint64 // failures that ended their copy (FinalFailure)
	Deferred  uint64 // failures that will be retried
	Opens     uint64
	Clicks    uint64
	Opened    []uint64 // distinct copies opened that day, ascending
	Clicked   []uint64 // distinct copies clicked that day, ascending
	Links     []LinkRollup
}

// LinkRollup is one link's clicks in a DayRollup.
type LinkRollup struct {
	URL      string
	Position int // link position, or -1 when the clicks log does not say
	Clicks   uint64
	Copies   []uint64 // distinct copies that clicked it, ascending
}

// FinalFailure reports whether a failures event ended its copy (a hard
// failure or an expired copy) rather than being retried (type "soft").
func FinalFailure(e *Event) bool {
	switch e.Value("type") {
	case "soft", "temporary":
		return false
	}
	return true
}

// DayRollups returns one rollup per UTC day of [from, to) (both truncated
// to days), in day order, for account and, if tag is not empty, only
// events of messages tagged tag.
func (r *Relay) DayRollups(ctx context.Context, account, tag string, from, to time.Time) ([]*DayRollup, error) {
	from, to = from.UTC().Truncate(24*time.Hour), to.UTC()
	days, err := r.EventDays(account)
	if err != nil {
		return nil, err
	}
	seen := map[string]*[5]uint64{}
	for _, d := range days {
		i := slices.Index(Logs, d.Log)
		if i < 0 {
			continue
		}
		s := seen[d.Day]
		if s == nil {
			s = new([5]uint64)
			seen[d.Day] = s
		}
		s[i] = d.Count
	}
	now := time.Now().UTC()
	var out, fresh []*DayRollup
	for day := from; day.Before(to); day = day.AddDate(0, 0, 1) {
		ds := day.Format(time.DateOnly)
		var want [5]uint64
		if s := seen[ds]; s != nil {
			want = *s
		}
		if want == ([5]uint64{}) {
			out = append(out, &DayRollup{Version: rollupVersion, Day: ds, Tag: tag})
			continue
		}
		ru, err := r.storedRollup(account, tag, ds)
		if err != nil {
			return nil, err
		}
		if ru == nil || ru.Seen != want || ru.Version != rollupVersion {
			if ru, err = r.computeRollup(ctx, account, tag, day); err != nil {
				return nil, err
			}
			ru.Seen = want
			// Keep rollups of days that are over and of something: a
			// query for a tag nobody uses must not fill the bucket.
			if !day.AddDate(0, 0, 1).After(now) && !ru.empty() {
				fresh = append(fresh, ru)
			}
		}
		out = append(out, ru)
	}
	if len(fresh) > 0 {
		if err := r.keepRollups(ctx, account, fresh); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (ru *DayRollup) empty() bool {
	return ru.Sent == 0 && ru.Delivered == 0 && ru.Failed == 0 && ru.Deferred == 0 && ru.Opens == 0 && ru.Clicks == 0
}

// DeleteRollupsBefore removes the kept rollups of days before cutoff's
// day, for log retention. It returns how many it removed.
func (r *Relay) DeleteRollupsBefore(ctx context.Context, cutoff time.Time) (int, error) {
	cut := cutoff.UTC().Format(time.DateOnly)
	var old [][]byte
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketRollups)).ForEach(func(k, _ []byte) error {
			if i := bytes.LastIndexByte(k, 0); i >= 0 && string(k[i+1:]) < cut {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
	})
	if err != nil || len(old) == 0 {
		return 0, err
	}
	err = r.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketRollups))
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(old), nil
}

func rollupKey(account, tag, day string) []byte {
	return []byte(account + "\x00" + tag + "\x00" + day)
}

func (r *Relay) storedRollup(account, tag, day string) (*DayRollup, error) {
	var ru *DayRollup
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketRollups)).Get(rollupKey(account, tag, day))
		if v == nil {
			return nil
		}
		ru = new(DayRollup)
		if err := gob.NewDecoder(bytes.NewReader(v)).Decode(ru); err != nil {
			ru = nil // unreadable: compute it again
		}
		return nil
	})
	return ru, err
}

func (r *Relay) keepRollups(ctx context.Context, account string, rus []*DayRollup) error {
	vals := make([][]byte, len(rus))
	for i, ru := range rus {
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(ru); err != nil {
			return fmt.Errorf("store: rollup: %w", err)
		}
		vals[i] = b.Bytes()
	}
	return r.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketRollups))
		for i, ru := range rus {
			if err := b.Put(rollupKey(account, ru.Tag, ru.Day), vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// computeRollup reads one day's events of every log.
func (r *Relay) computeRollup(ctx context.Context, account, tag string, day time.Time) (*DayRollup, error) {
	ru := &DayRollup{Version: rollupVersion, Day: day.Format(time.DateOnly), Tag: tag}
	end := day.AddDate(0, 0, 1)
	type linkKey struct {
		url string
		pos int
	}
	links := map[linkKey]*LinkRollup{}
	type click struct {
		id       uint64
		url, key string
	}
	var clicks []click
	opened, clicked := map[uint64]bool{}, map[uint64]bool{}
	linkCopies := map[linkKey]map[uint64]bool{}
	add := func(e *Event) {
		if e.Account != account || (tag != "" && !slices.Contains(e.Tags, tag)) {
			return
		}
		switch e.Log {
		case LogAttempts:
			ru.Sent++
		case LogDeliveries:
			ru.Delivered++
		case LogFailures:
			if FinalFailure(e) {
				ru.Failed++
			} else {
				ru.Deferred++
			}
		case LogOpens:
			ru.Opens++
			opened[e.ID] = true
		case LogClicks:
			ru.Clicks++
			clicked[e.ID] = true
			clicks = append(clicks, click{e.ID, e.Value("url"), e.Key})
		}
	}
	scan := func(seq func(func(Event, error) bool)) error {
		for e, err := range seq {
			if err != nil {
				return err
			}
			add(&e)
		}
		return nil
	}
	if tag != "" {
		if err := scan(r.EventsByTag(ctx, account, tag, day, end)); err != nil {
			return nil, err
		}
	} else {
		for _, log := range Logs {
			if err := scan(r.Events(ctx, account, log, day, end)); err != nil {
				return nil, err
			}
		}
	}
	keys := make([]string, len(clicks))
	for i, c := range clicks {
		keys[i] = c.key
	}
	pos, err := r.LinkPositions(keys)
	if err != nil {
		return nil, err
	}
	for i, c := range clicks {
		k := linkKey{c.url, pos[i]}
		l := links[k]
		if l == nil {
			l = &LinkRollup{URL: k.url, Position: k.pos}
			links[k] = l
			linkCopies[k] = map[uint64]bool{}
		}
		l.Clicks++
		linkCopies[k][c.id] = true
	}
	ru.Opened, ru.Clicked = sortedIDs(opened), sortedIDs(clicked)
	for k, l := range links {
		l.Copies = sortedIDs(linkCopies[k])
		ru.Links = append(ru.Links, *l)
	}
	slices.SortFunc(ru.Links, func(a, b LinkRollup) int {
		return cmp.Or(cmp.Compare(a.URL, b.URL), cmp.Compare(a.Position, b.Position))
	})
	return ru, nil
}

// LinkPositions returns the link position of each click event's hit, by
// the events' Key (the hit id, see IngestHits), in one read transaction:
// the clicks log does not carry the position (SPEC §9), the hit does. A
// click without a stored hit gets -1.
func (r *Relay) LinkPositions(keys []string) ([]int, error) {
	pos := make([]int, len(keys))
	err := r.db.View(func(tx *bolt.Tx) error {
		hb := tx.Bucket([]byte(bucketHits))
		for i, k := range keys {
			pos[i] = -1
			if k == "" {
				continue
			}
			v := hb.Get([]byte(k))
			if v == nil {
				continue
			}
			var h Hit
			if decodeHitRecord(v, &h) == nil && h.Kind == "click" {
				pos[i] = int(h.Position)
			}
		}
		return nil
	})
	return pos, err
}

func sortedIDs(m map[uint64]bool) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
