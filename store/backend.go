package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// What every backend shares beyond the DB interface: the checks and the
// mappings that must not differ between bbolt and PostgreSQL. The bbolt
// backend uses them too, so there is one definition of each.

// PrepareEvents returns events as a backend stores them: text made valid
// UTF-8, every event checked (unknown log or field, no account or time,
// bad tags or recipient). The caller's events are not changed.
func PrepareEvents(events []Event) ([]Event, error) {
	out := make([]Event, len(events))
	for i := range events {
		out[i] = sanitize(events[i])
		if err := validEvent(&out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// JoinEvents sets the aggregates' dimensions (message, credential) of the
// events about copies that the caller left unset, as AddMessage and
// UpdateCopy do. events is changed in place.
func JoinEvents(events []Event, copies ...*Copy) { joinEvents(events, copies...) }

// EventMetric says which counter an event adds one to, apart from the
// unique ones, and false for events that feed none.
func EventMetric(e *Event) (Metric, bool) { return eventMetrics(e) }

// EventDims returns the dimensions an event counts in for its account:
// "" (all of it), DimTag of each tag, DimCredential of its credential.
func EventDims(e *Event) []string { return dims(e.Tags, e.Credential) }

// dims are the dimensions of an account that something with tags and a
// credential counts in.
func dims(tags []string, credential string) []string {
	d := make([]string, 0, 2+len(tags))
	d = append(d, "")
	for _, t := range tags {
		d = append(d, dimTagPrefix+t)
	}
	if credential != "" {
		d = append(d, dimCredPrefix+credential)
	}
	return d
}

// HitEvent makes the clicks or opens event (SPEC §9) for hit h on copy c,
// keeping of the reader's request what account a allows (nil: keep it
// all). linkURL is the URL recorded for the click's link position
// (PutMessageLinks) and recorded says there is one; a click is reported by
// it, with the URL the reader was sent to as its destination, "altered"
// when the two differ beyond what browsers change.
func HitEvent(h *Hit, c *Copy, a *Account, linkURL string, recorded bool) (Event, error) {
	ip, ua := h.IP, h.UserAgent
	if a != nil {
		ip = KeepIP(ip, a.IP)
		if a.UserAgent == KeepClass {
			ua = UserAgentClass(ua, h.Machine)
		}
	}
	// The same JSON as a map of the two headers would give (keys sorted,
	// absent ones left out), without building and sorting a map.
	hj, err := json.Marshal(struct {
		Referer   string `json:"Referer,omitempty"`
		UserAgent string `json:"User-Agent,omitempty"`
	}{h.Referer, ua})
	if err != nil {
		return Event{}, fmt.Errorf("store: hit: %w", err)
	}
	ev := Event{
		Account:    c.Account,
		ID:         h.MessageID,
		Time:       h.Time.UTC(),
		Recipient:  c.Recipient,
		Tags:       c.Tags,
		Key:        h.ID,
		Fields:     map[string]string{"headers": string(hj), "ip": ip, "machine": formatBool(h.Machine || h.Head)},
		Message:    c.MessageID,
		Credential: c.Credential,
	}
	if h.Open() {
		ev.Log = LogOpens
		ev.Fields["protocol"] = h.Protocol
		return ev, nil
	}
	ev.Log = LogClicks
	orig := linkURL
	if !recorded {
		orig = h.URL // a message rewritten before links were recorded
	}
	ev.Fields["url"] = orig
	ev.Fields["destination"] = h.URL
	ev.Fields["altered"] = formatBool(recorded && Altered(orig, h.URL))
	ev.Link = &EventLink{Position: h.Position, URL: orig}
	return ev, nil
}

// CheckHits refuses a batch with a hit without a usable id.
func CheckHits(hits []Hit) error {
	for i := range hits {
		if hits[i].ID == "" || len(hits[i].ID) > 255 {
			return fmt.Errorf("store: hit %d: no id", i)
		}
	}
	return nil
}

// CheckAddressEntry checks an address-list entry and normalises its
// address, as AddAddress and RecordReturned do.
func CheckAddressEntry(e *AddressEntry) error {
	if err := validList(e.List); err != nil {
		return err
	}
	e.Address = NormalAddress(e.Address)
	if e.Account == "" || e.Address == "" || len(e.Address) > 320 {
		return fmt.Errorf("store: address entry needs an account and an address")
	}
	return nil
}

// CheckList refuses an unknown address list name.
func CheckList(list string) error { return validList(list) }

// SeriesPoints rounds a Series request's range to whole steps (from down,
// to up) and returns its points, empty but for their Start (none when
// the range is empty); an error for a step that is not an hour or a day,
// errSpan when there are too many points. Both backends' Series use it.
func SeriesPoints(from, to time.Time, step time.Duration) ([]SeriesPoint, time.Time, time.Time, error) {
	from, to, n, err := seriesRange(from, to, step)
	if err != nil || n == 0 {
		return nil, from, to, err
	}
	pts := make([]SeriesPoint, n)
	for i := range pts {
		pts[i].Start = from.Add(time.Duration(i) * step)
	}
	return pts, from, to, nil
}

func seriesRange(from, to time.Time, step time.Duration) (time.Time, time.Time, int, error) {
	step, err := parseStep(step)
	if err != nil {
		return from, to, 0, err
	}
	from = from.UTC().Truncate(step)
	if t := to.UTC().Truncate(step); t.Before(to) {
		to = t.Add(step)
	} else {
		to = t
	}
	if !from.Before(to) {
		return from, to, 0, nil
	}
	n := int(to.Sub(from) / step)
	if n > 100000 {
		return from, to, 0, errSpan
	}
	return from, to, n, nil
}

// ParseLinkID checks a link id (24 hex digits).
func ParseLinkID(s string) error {
	_, err := parseLinkID(s)
	return err
}

// IDRange turns a time range into the range [lo, hi) of ids made in it.
func IDRange(from, to time.Time) (lo, hi uint64) { return idRange(from, to) }

// IDBefore returns the smallest id made at or after t: ids below it were
// made before t.
func IDBefore(t time.Time) uint64 {
	if t.UnixMilli() < idEpochMs {
		return 0
	}
	return uint64(t.UnixMilli()-idEpochMs) << idCounterBit
}

// HitIDTime returns the time in a hit id made by a redirector, and false
// for any other id.
func HitIDTime(id string) (time.Time, bool) { return hitIDTime([]byte(id)) }

// SortedUnique returns ids sorted, each once.
func SortedUnique(ids []uint64) []uint64 { return slices.Compact(slices.Sorted(slices.Values(ids))) }
