package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Aggregates are the figures behind /v1/stats, /v1/links and the dashboard,
// kept up to date as events are stored (in the same transaction), so that
// a page over months of events reads a few hundred small records instead
// of every event. Machine hits (scanners, image proxies, HEAD requests) are
// counted apart and never mixed into the human figures.
//
// Unique opens and clicks are counted once per copy, at the time of the
// copy's first human open (or click): "unique opens in a period" are the
// copies first opened in it. That makes them additive over hours and days
// (a period's figure is the sum of its buckets), at the price of not
// counting, in a later period, a copy that was opened before it.
// Unique clicks on a link count each copy once per link position.

// Metric names one counter of the aggregates.
type Metric int

// The counters. New ones are added at the end: stored records shorter than
// NumMetrics read the missing ones as 0.
const (
	Accepted      Metric = iota // copies accepted (attempts)
	Delivered                   // copies the upstream took, less those that then bounced
	Deferred                    // delivery tries that will be retried
	Failed                      // copies that failed for good (hard failure, expired)
	BouncedHard                 // hard bounces (the address will not work)
	BouncedSoft                 // soft bounces
	Delayed                     // delayed-delivery notices
	Complained                  // spam complaints
	Responded                   // replies and auto-replies
	Opens                       // human opens
	UniqueOpens                 // copies opened (first human open)
	MachineOpens                // opens by machines
	Clicks                      // human clicks
	UniqueClicks                // copies clicked (first human click on any link)
	MachineClicks               // clicks by machines
	Suppressed                  // recipients refused because the address is suppressed
	NumMetrics
)

// MetricNames are the counters' names in JSON and in the dashboard.
var MetricNames = [NumMetrics]string{
	"accepted", "delivered", "deferred", "failed", "bounced_hard", "bounced_soft", "delayed",
	"complained", "responded", "opens", "unique_opens", "machine_opens", "clicks", "unique_clicks",
	"machine_clicks", "suppressed",
}

// Counters holds one value per Metric.
type Counters [NumMetrics]uint64

// Add adds o to c.
func (c *Counters) Add(o *Counters) {
	for i := range c {
		c[i] += o[i]
	}
}

// Map returns c by metric name, for JSON.
func (c *Counters) Map() map[string]uint64 {
	m := make(map[string]uint64, NumMetrics)
	for i, n := range MetricNames {
		m[n] = c[i]
	}
	return m
}

// Dimensions of the aggregates: every event counts for its account as a
// whole (dimension ""), for each of its tags, and for its credential; and
// again under the account AllAccounts, which operators see.
const (
	AllAccounts   = "" // the account of the totals over every account
	dimTagPrefix  = "t:"
	dimCredPrefix = "c:"
)

// DimTag is the dimension of the events of messages tagged tag.
func DimTag(tag string) string { return dimTagPrefix + tag }

// DimCredential is the dimension of the events of copies sent with a
// credential.
func DimCredential(username string) string { return dimCredPrefix + username }

// hourOf is a time's hour bucket: hours since 1970, UTC.
func hourOf(t time.Time) uint32 { return uint32(t.Unix() / 3600) }

// dayOfUnix is a time's day bucket: days since 1970, UTC.
func dayOfUnix(t time.Time) uint32 { return uint32(t.Unix() / 86400) }

// LinkID names a link (by its original URL) in the link aggregates: 24
// hex digits of its SHA-256.
func LinkID(url string) string {
	s := sha256.Sum256([]byte(url))
	return hex.EncodeToString(s[:12])
}

func linkIDBytes(url string) []byte {
	s := sha256.Sum256([]byte(url))
	return s[:12]
}

// LinkStat is one link's clicks: over a period (TopLinks), or in one
// message (MessageLinks).
type LinkStat struct {
	ID            string    `json:"id"`
	URL           string    `json:"url"`
	Position      *int      `json:"position,omitempty"` // in MessageLinks
	Clicks        uint64    `json:"clicks"`             // human clicks
	UniqueClicks  uint64    `json:"unique_clicks"`      // copies that clicked it (first human click on it)
	MachineClicks uint64    `json:"machine_clicks"`
	First         time.Time `json:"first"` // first and last human click
	Last          time.Time `json:"last"`
	// Delivered is the delivered copies that carried the link in the
	// period and dimension (TopLinks; in MessageLinks, the message's):
	// UniqueClicks / Delivered is the share of recipients who clicked it.
	Delivered uint64 `json:"delivered"`
}

// linkCounts is what a link aggregate record holds.
type linkCounts struct {
	clicks, unique, machine uint64
	first, last             int64 // Unix ns of the first and last human click; 0 none
}

func (l *linkCounts) add(o *linkCounts) {
	l.clicks += o.clicks
	l.unique += o.unique
	l.machine += o.machine
	if o.first != 0 && (l.first == 0 || o.first < l.first) {
		l.first = o.first
	}
	if o.last > l.last {
		l.last = o.last
	}
}

func (l *linkCounts) encode() []byte {
	b := make([]byte, 0, 32)
	b = binary.AppendUvarint(b, l.clicks)
	b = binary.AppendUvarint(b, l.unique)
	b = binary.AppendUvarint(b, l.machine)
	b = binary.AppendVarint(b, l.first)
	return binary.AppendVarint(b, l.last)
}

func decodeLinkCounts(v []byte) linkCounts {
	var l linkCounts
	var n int
	if l.clicks, n = binary.Uvarint(v); n <= 0 {
		return linkCounts{}
	}
	v = v[n:]
	if l.unique, n = binary.Uvarint(v); n <= 0 {
		return linkCounts{}
	}
	v = v[n:]
	if l.machine, n = binary.Uvarint(v); n <= 0 {
		return linkCounts{}
	}
	v = v[n:]
	if l.first, n = binary.Varint(v); n <= 0 {
		return linkCounts{}
	}
	v = v[n:]
	l.last, _ = binary.Varint(v)
	return l
}

func (l *linkCounts) stat() LinkStat {
	s := LinkStat{Clicks: l.clicks, UniqueClicks: l.unique, MachineClicks: l.machine}
	if l.first != 0 {
		s.First = time.Unix(0, l.first).UTC()
	}
	if l.last != 0 {
		s.Last = time.Unix(0, l.last).UTC()
	}
	return s
}

// encodeCounters packs deltas onto stored counters (absent: zero),
// clamping at zero (a late bounce may take back a delivery).
func encodeCounters(old []byte, d *[NumMetrics]int64) []byte {
	cur := decodeCounters(old)
	b := binary.AppendUvarint(make([]byte, 0, 2*NumMetrics+1), uint64(NumMetrics))
	for i := range cur {
		v := int64(cur[i]) + d[i]
		if v < 0 {
			v = 0
		}
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b
}

func decodeCounters(v []byte) Counters {
	var c Counters
	n, k := binary.Uvarint(v)
	if k <= 0 {
		return c
	}
	v = v[k:]
	for i := 0; i < int(n) && len(v) > 0; i++ {
		x, k := binary.Uvarint(v)
		if k <= 0 {
			return c
		}
		v = v[k:]
		if i < int(NumMetrics) {
			c[i] = x
		}
	}
	return c
}

// eventMetrics says which counters an event adds to, apart from the
// unique ones (which need the store's state: see aggregator). It is the
// one place that maps logs to figures.
func eventMetrics(e *Event) (m Metric, ok bool) {
	switch e.Log {
	case LogAttempts:
		return Accepted, true
	case LogDeliveries:
		return Delivered, true
	case LogFailures:
		switch e.Fields["type"] {
		case "soft", "temporary":
			return Deferred, true
		case "suppressed":
			return Suppressed, true
		}
		return Failed, true
	case LogBounces:
		switch e.Fields["type"] {
		case "hard":
			return BouncedHard, true
		case "delayed":
			return Delayed, true
		}
		return BouncedSoft, true
	case LogComplaints:
		return Complained, true
	case LogResponses:
		return Responded, true
	case LogOpens:
		if IsMachine(e) {
			return MachineOpens, true
		}
		return Opens, true
	case LogClicks:
		if IsMachine(e) {
			return MachineClicks, true
		}
		return Clicks, true
	}
	return 0, false
}

// IsMachine reports whether a hit event was made by a machine (a link
// scanner, an image proxy, a HEAD request).
func IsMachine(e *Event) bool { return e.Fields["machine"] == "true" }

func aggKey(account, dim string, hour uint32) []byte {
	k := make([]byte, 0, len(account)+len(dim)+6)
	k = append(k, account...)
	k = append(k, 0)
	k = append(k, dim...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, hour)
}

func linkDayKey(account, dim string, day uint32, link []byte) []byte {
	k := make([]byte, 0, len(account)+len(dim)+6+len(link))
	k = append(k, account...)
	k = append(k, 0)
	k = append(k, dim...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint32(k, day)
	return append(k, link...)
}

func msgPosKey(msg uint64, pos uint32) []byte {
	return binary.BigEndian.AppendUint32(idKey(msg), pos)
}

var (
	errSpan   = errors.New("store: period too long")
	errLinkID = errors.New("store: link id: want 24 hex digits")
)

// formatBool writes the machine and altered fields.
func formatBool(b bool) string { return strconv.FormatBool(b) }

// parseBucket checks a series step.
func parseStep(step time.Duration) (time.Duration, error) {
	switch step {
	case time.Hour, 24 * time.Hour:
		return step, nil
	}
	return 0, fmt.Errorf("store: series step %v: want an hour or a day", step)
}
