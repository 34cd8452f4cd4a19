package api

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// DefaultPeriod is the period of a query without start.
const DefaultPeriod = 30 * 24 * time.Hour

// period reads the start and end query parameters: a UTC date
// (YYYY-MM-DD; end includes that whole day) or an RFC 3339 time. Without
// end, the period ends with today; without start, it is DefaultPeriod
// long.
func (s *server) period(q url.Values) (start, end time.Time, err error) {
	parse := func(name string, isEnd bool) (time.Time, bool, error) {
		v := q.Get(name)
		if v == "" {
			return time.Time{}, false, nil
		}
		if d, ok := parseDay(v); ok {
			if isEnd {
				d = d.AddDate(0, 0, 1)
			}
			return d, true, nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, false, badRequest("%s: want a date (YYYY-MM-DD) or an RFC 3339 time, not %q", name, clip(v))
		}
		return t.UTC(), true, nil
	}
	end, set, err := parse("end", true)
	if err != nil {
		return start, end, err
	}
	if !set {
		end = s.cfg.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, 1)
	}
	start, set, err = parse("start", false)
	if err != nil {
		return start, end, err
	}
	if !set {
		start = end.Add(-DefaultPeriod)
	}
	switch {
	case !start.Before(end):
		return start, end, badRequest("start: must be before end")
	case end.Sub(start) > s.cfg.MaxSpan:
		return start, end, badRequest("end: the period is longer than %d days", int(s.cfg.MaxSpan/(24*time.Hour)))
	}
	return start, end, nil
}

func (s *server) eventsByID(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		return badRequest("id: want 16 hex digits, as /v1/send answers")
	}
	return streamJSON(w, p, s.cfg.Store.EventsByMessage(r.Context(), p.Account, id), nil, appendEvent)
}

func (s *server) eventsByEmail(w http.ResponseWriter, r *http.Request, p *Principal) error {
	addr := r.PathValue("address")
	if err := checkAddr(addr); err != nil {
		return badRequest("address: %v", err)
	}
	start, end, err := s.period(r.URL.Query())
	if err != nil {
		return err
	}
	return streamJSON(w, p, s.cfg.Store.EventsByRecipient(r.Context(), p.Account, addr, start, end), nil, appendEvent)
}

func (s *server) eventsByTags(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var tags []string
	for t := range strings.SplitSeq(r.PathValue("tags"), ";") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if err := checkTag(t); err != nil {
			return badRequest("tags: %v", err)
		}
		tags = append(tags, t)
	}
	if len(tags) == 0 || len(tags) > MaxTags {
		return badRequest("tags: want 1 to %d tags separated by ;", MaxTags)
	}
	start, end, err := s.period(r.URL.Query())
	if err != nil {
		return err
	}
	// The index finds the first tag; the others filter.
	events := s.cfg.Store.EventsByTag(r.Context(), p.Account, tags[0], start, end)
	return streamJSON(w, p, events, func(e *store.Event) bool { return hasTags(e.Tags, tags[1:]) }, appendEvent)
}

// hasTags reports whether have holds every tag in want.
func hasTags(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
