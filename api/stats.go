package api

import (
	"cmp"
	"context"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// Counts are one period's numbers in GET /v1/stats.
type Counts struct {
	Date         string `json:"date,omitempty"` // UTC day; absent in the total
	Sent         int    `json:"sent"`           // copies accepted (attempts)
	Delivered    int    `json:"delivered"`
	Failed       int    `json:"failed"`   // failures that ended a copy
	Deferred     int    `json:"deferred"` // failures that will be retried
	Opens        int    `json:"opens"`
	UniqueOpens  int    `json:"unique_opens"` // copies opened at least once
	Clicks       int    `json:"clicks"`
	UniqueClicks int    `json:"unique_clicks"` // copies with at least one click
}

// addTotals adds d's plain counts to c. Unique counts do not add up across
// days (a copy opened on two days is one unique open): the callers count
// those over the whole period.
func (c *Counts) addTotals(d Counts) {
	c.Sent += d.Sent
	c.Delivered += d.Delivered
	c.Failed += d.Failed
	c.Deferred += d.Deferred
	c.Opens += d.Opens
	c.Clicks += d.Clicks
}

type statsAnswer struct {
	Start string   `json:"start"`
	End   string   `json:"end"`
	Days  []Counts `json:"days"`
	Total Counts   `json:"total"`
}

// filter is the tag and credential filter of stats and links.
type filter struct {
	tag, credential string
	copies          CopyReader
	creds           map[uint64]bool // copy id -> sent with credential
}

func (s *server) parseFilter(qv url.Values) (*filter, error) {
	f := &filter{tag: qv.Get("tag"), credential: qv.Get("credential"), copies: s.cfg.Copies}
	if f.tag != "" {
		if err := checkTag(f.tag); err != nil {
			return nil, badRequest("tag: %v", err)
		}
	}
	if f.credential != "" {
		if f.copies == nil {
			return nil, badRequest("credential: this server cannot filter by credential")
		}
		f.creds = map[uint64]bool{}
	}
	return f, nil
}

// events yields account's events of logs in [start, end) that pass f,
// log by log. With a tag, the tag index does the work.
func (f *filter) events(ctx context.Context, er EventReader, account string, logs []string, start, end time.Time) iter.Seq2[store.Event, error] {
	return func(yield func(store.Event, error) bool) {
		each := func(seq iter.Seq2[store.Event, error]) bool {
			for e, err := range seq {
				if err != nil {
					yield(e, err)
					return false
				}
				if e.Account != account || !slices.Contains(logs, e.Log) || !f.keep(&e) {
					continue
				}
				if !yield(e, nil) {
					return false
				}
			}
			return true
		}
		if f.tag != "" {
			each(er.EventsByTag(ctx, account, f.tag, start, end))
			return
		}
		for _, log := range logs {
			if !each(er.Events(ctx, account, log, start, end)) {
				return
			}
		}
	}
}

func (f *filter) keep(e *store.Event) bool {
	if f.tag != "" && !slices.Contains(e.Tags, f.tag) {
		return false
	}
	if f.credential == "" {
		return true
	}
	ok, known := f.creds[e.ID]
	if !known {
		c, err := f.copies.Copy(e.ID)
		ok = err == nil && c != nil && c.Credential == f.credential && c.Account == e.Account
		f.creds[e.ID] = ok
	}
	return ok
}

// stats answers GET /v1/stats by streaming the period's events once.
// Memory grows with the number of distinct opened or clicked copies.
func (s *server) stats(w http.ResponseWriter, r *http.Request, p *Principal) error {
	qv := r.URL.Query()
	start, end, err := s.period(qv)
	if err != nil {
		return err
	}
	f, err := s.parseFilter(qv)
	if err != nil {
		return err
	}
	first := start.Truncate(24 * time.Hour)
	ndays := int((end.Sub(first) + 24*time.Hour - 1) / (24 * time.Hour))
	days := make([]Counts, ndays)
	for i := range days {
		days[i].Date = first.AddDate(0, 0, i).Format(time.DateOnly)
	}
	if ro, ok := s.cfg.Events.(Rollups); ok && f.credential == "" && dayAligned(start) && dayAligned(end) {
		total, err := statsFromRollups(r.Context(), ro, p.Account, f.tag, start, end, days)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, statsAnswer{
			Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339), Days: days, Total: total,
		})
		return nil
	}
	type dayKey struct {
		id  uint64
		day int
	}
	const opened, clicked = 1, 2
	var total Counts
	seenDay := map[dayKey]uint8{}
	seen := map[uint64]uint8{}
	for e, err := range f.events(r.Context(), s.cfg.Events, p.Account, store.Logs, start, end) {
		if err != nil {
			return err
		}
		i := int(e.Time.Sub(first) / (24 * time.Hour))
		if i < 0 || i >= len(days) {
			continue
		}
		d := &days[i]
		var bit uint8
		switch e.Log {
		case store.LogAttempts:
			d.Sent++
		case store.LogDeliveries:
			d.Delivered++
		case store.LogFailures:
			if store.FinalFailure(&e) {
				d.Failed++
			} else {
				d.Deferred++
			}
		case store.LogOpens:
			d.Opens++
			bit = opened
		case store.LogClicks:
			d.Clicks++
			bit = clicked
		}
		if bit == 0 {
			continue
		}
		if k := (dayKey{e.ID, i}); seenDay[k]&bit == 0 {
			seenDay[k] |= bit
			if bit == opened {
				d.UniqueOpens++
			} else {
				d.UniqueClicks++
			}
		}
		if seen[e.ID]&bit == 0 {
			seen[e.ID] |= bit
			if bit == opened {
				total.UniqueOpens++
			} else {
				total.UniqueClicks++
			}
		}
	}
	for _, d := range days {
		total.addTotals(d)
	}
	writeJSON(w, http.StatusOK, statsAnswer{
		Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339), Days: days, Total: total,
	})
	return nil
}

// Link is one row of GET /v1/links.
type Link struct {
	URL          string `json:"url"`
	Position     *int   `json:"position,omitempty"` // link position in the message, from 0, when the log has it
	Clicks       int    `json:"clicks"`
	UniqueClicks int    `json:"unique_clicks"` // copies with at least one click on it
}

// MaxLinks bounds GET /v1/links' limit parameter.
const MaxLinks = 1000

// links answers GET /v1/links: the most clicked links of a period, by URL
// and position, most clicked first.
func (s *server) links(w http.ResponseWriter, r *http.Request, p *Principal) error {
	qv := r.URL.Query()
	start, end, err := s.period(qv)
	if err != nil {
		return err
	}
	limit := 100
	if v := qv.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > MaxLinks {
			return badRequest("limit: want a number from 1 to %d", MaxLinks)
		}
	}
	f, err := s.parseFilter(qv)
	if err != nil {
		return err
	}
	var rows []Link
	if ro, ok := s.cfg.Events.(Rollups); ok && f.credential == "" && dayAligned(start) && dayAligned(end) {
		if rows, err = linksFromRollups(r.Context(), ro, p.Account, f.tag, start, end); err != nil {
			return err
		}
	} else if rows, err = s.streamLinks(r.Context(), f, p, start, end); err != nil {
		return err
	}
	slices.SortFunc(rows, func(a, b Link) int {
		return cmp.Or(cmp.Compare(b.Clicks, a.Clicks), cmp.Compare(b.UniqueClicks, a.UniqueClicks),
			cmp.Compare(a.URL, b.URL), cmp.Compare(pos(a), pos(b)))
	})
	if len(rows) > limit {
		rows = rows[:limit]
	}
	if rows == nil {
		rows = []Link{}
	}
	writeJSON(w, http.StatusOK, struct {
		Start string `json:"start"`
		End   string `json:"end"`
		Links []Link `json:"links"`
	}{start.Format(time.RFC3339), end.Format(time.RFC3339), rows})
	return nil
}

// linkRows collects the rows of /v1/links, one per URL and link position
// (-1: unknown), in the order they are first seen. Both ways of summing
// links (raw events, daily rollups) fill one, so their rows agree.
type linkRows struct {
	index map[linkKey]int
	rows  []Link
}

type linkKey struct {
	url string
	pos int
}

// row returns the index of the row for url and pos, adding it if new.
func (t *linkRows) row(url string, pos int) (i int, added bool) {
	k := linkKey{url, pos}
	if i, ok := t.index[k]; ok {
		return i, false
	}
	if t.index == nil {
		t.index = map[linkKey]int{}
	}
	t.index[k] = len(t.rows)
	l := Link{URL: url}
	if pos >= 0 {
		l.Position = &pos
	}
	t.rows = append(t.rows, l)
	return len(t.rows) - 1, true
}

// LinkPositions is implemented by *store.Relay: the link position of click
// events (by their Key), which the clicks log itself does not carry.
type LinkPositions interface {
	LinkPositions(keys []string) ([]int, error)
}

// streamLinks sums links by reading every click of the period, looking up
// positions a batch at a time.
func (s *server) streamLinks(ctx context.Context, f *filter, p *Principal, start, end time.Time) ([]Link, error) {
	type copyKey struct {
		link int
		id   uint64
	}
	type click struct {
		id       uint64
		url, key string
	}
	var lr linkRows
	seen := map[copyKey]struct{}{}
	lp, _ := s.cfg.Events.(LinkPositions)
	batch := make([]click, 0, 512)
	keys := make([]string, 0, 512)
	flush := func() error {
		positions := make([]int, len(batch))
		if lp != nil {
			keys = keys[:0]
			for _, c := range batch {
				keys = append(keys, c.key)
			}
			var err error
			if positions, err = lp.LinkPositions(keys); err != nil {
				return err
			}
		} else {
			for i := range positions {
				positions[i] = -1
			}
		}
		for j, c := range batch {
			i, _ := lr.row(c.url, positions[j])
			lr.rows[i].Clicks++
			if ck := (copyKey{i, c.id}); !has(seen, ck) {
				seen[ck] = struct{}{}
				lr.rows[i].UniqueClicks++
			}
		}
		batch = batch[:0]
		return nil
	}
	for e, err := range f.events(ctx, s.cfg.Events, p.Account, []string{store.LogClicks}, start, end) {
		if err != nil {
			return nil, err
		}
		batch = append(batch, click{e.ID, e.Value("url"), e.Key})
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return lr.rows, nil
}

func has[K comparable](m map[K]struct{}, k K) bool {
	_, ok := m[k]
	return ok
}

func pos(l Link) int {
	if l.Position == nil {
		return -1
	}
	return *l.Position
}

// Rollups is implemented by *store.Relay: per-day sums that spare stats
// and links reading every event of a long period. It is used when the
// period is whole days and there is no credential filter.
type Rollups interface {
	DayRollups(ctx context.Context, account, tag string, from, to time.Time) ([]*store.DayRollup, error)
}

func dayAligned(t time.Time) bool { return t.Equal(t.Truncate(24 * time.Hour)) }

// statsFromRollups fills days (one per day from start) and returns the
// total, with unique opens and clicks counted once over the period.
func statsFromRollups(ctx context.Context, ro Rollups, account, tag string, start, end time.Time, days []Counts) (Counts, error) {
	var total Counts
	rus, err := ro.DayRollups(ctx, account, tag, start, end)
	if err != nil {
		return total, err
	}
	var opened, clicked []uint64
	for _, ru := range rus {
		i := slices.IndexFunc(days, func(c Counts) bool { return c.Date == ru.Day })
		if i < 0 {
			continue
		}
		d := &days[i]
		d.Sent, d.Delivered, d.Failed, d.Deferred = int(ru.Sent), int(ru.Delivered), int(ru.Failed), int(ru.Deferred)
		d.Opens, d.Clicks = int(ru.Opens), int(ru.Clicks)
		d.UniqueOpens, d.UniqueClicks = len(ru.Opened), len(ru.Clicked)
		total.addTotals(*d)
		opened = append(opened, ru.Opened...)
		clicked = append(clicked, ru.Clicked...)
	}
	total.UniqueOpens, total.UniqueClicks = distinct(opened), distinct(clicked)
	return total, nil
}

// linksFromRollups sums the period's links, each copy counted once per
// link for unique clicks.
func linksFromRollups(ctx context.Context, ro Rollups, account, tag string, start, end time.Time) ([]Link, error) {
	rus, err := ro.DayRollups(ctx, account, tag, start, end)
	if err != nil {
		return nil, err
	}
	var lr linkRows
	var copies [][]uint64
	for _, ru := range rus {
		for _, l := range ru.Links {
			i, added := lr.row(l.URL, l.Position)
			if added {
				copies = append(copies, nil)
			}
			lr.rows[i].Clicks += int(l.Clicks)
			copies[i] = append(copies[i], l.Copies...)
		}
	}
	for i := range lr.rows {
		lr.rows[i].UniqueClicks = distinct(copies[i])
	}
	return lr.rows, nil
}

// distinct counts the different values in ids, sorting it.
func distinct(ids []uint64) int {
	slices.Sort(ids)
	return len(slices.Compact(ids))
}
