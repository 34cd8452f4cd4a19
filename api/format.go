package api

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// objectFields are written as JSON objects in JSON answers when their text
// is a JSON object (they hold one: the message's settings, the request's
// headers); every other field is a string, tags a list of strings.
var objectFields = map[string]bool{"properties": true, "headers": true}

// eventNames are the singular names events carry in /v1/events.
var eventNames = map[string]string{
	store.LogAttempts:   "attempt",
	store.LogDeliveries: "delivery",
	store.LogFailures:   "failure",
	store.LogClicks:     "click",
	store.LogOpens:      "open",
	store.LogBounces:    "bounce",
	store.LogResponses:  "response",
	store.LogComplaints: "complaint",
	store.LogDMARC:      "dmarc",
}

// boolFields are written as JSON booleans in JSON answers.
var boolFields = map[string]bool{"machine": true, "altered": true}

// csvRecord fills rec with e's fields in store.LogFields order.
func csvRecord(rec []string, e *store.Event) []string {
	rec = rec[:0]
	for _, n := range store.LogFields[e.Log] {
		rec = append(rec, e.Value(n))
	}
	return rec
}

// appendJSON appends e's fields as a JSON object, like store.Event.Data
// but without a map per event.
func appendJSON(b []byte, e *store.Event) []byte {
	b = append(b, '{')
	for i, n := range store.LogFields[e.Log] {
		if i > 0 {
			b = append(b, ',')
		}
		b = store.AppendJSONString(b, n)
		b = append(b, ':')
		switch {
		case n == "tags":
			b = append(b, '[')
			for j, t := range e.Tags {
				if j > 0 {
					b = append(b, ',')
				}
				b = store.AppendJSONString(b, t)
			}
			b = append(b, ']')
		case objectFields[n]:
			v := strings.TrimSpace(e.Value(n))
			if strings.HasPrefix(v, "{") && json.Valid([]byte(v)) {
				b = append(b, v...)
			} else if v == "" {
				b = append(b, "{}"...)
			} else {
				b = store.AppendJSONString(b, v)
			}
		case boolFields[n]:
			b = append(b, e.Value(n)...) // "true" or "false"
		default:
			b = store.AppendJSONString(b, e.Value(n))
		}
	}
	return append(b, '}')
}

// appendEvent writes an event as {"event": "click", "data": {...}}.
func appendEvent(b []byte, e *store.Event) []byte {
	b = append(b, `{"event":`...)
	b = store.AppendJSONString(b, eventNames[e.Log])
	b = append(b, `,"data":`...)
	b = appendJSON(b, e)
	return append(b, '}')
}

// parseDay parses a UTC date, YYYY-MM-DD.
func parseDay(s string) (time.Time, bool) {
	if len(s) != len(time.DateOnly) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.DateOnly, s)
	return t, err == nil
}

// parseLogName splits "clicks.2026-11-22.log" into its log and day.
func parseLogName(s string) (log string, day time.Time, ok bool) {
	rest, found := strings.CutSuffix(s, ".log")
	if !found {
		return "", time.Time{}, false
	}
	log, date, found := strings.Cut(rest, ".")
	if _, known := store.LogFields[log]; !found || !known {
		return "", time.Time{}, false
	}
	day, ok = parseDay(date)
	return log, day, ok
}

// logName is the file name of one log on one day.
func logName(log string, day time.Time) string {
	return log + "." + day.Format(time.DateOnly) + ".log"
}
