package api

import (
	"context"
	"encoding/csv"
	"iter"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// logDays answers GET /v1/logfiles: the UTC dates with events.
func (s *server) logDays(w http.ResponseWriter, r *http.Request, p *Principal) error {
	days, err := s.cfg.Store.EventDays(r.Context(), p.Account)
	if err != nil {
		return err
	}
	out := []string{}
	for _, d := range days {
		if len(out) == 0 || out[len(out)-1] != d.Day {
			out = append(out, d.Day)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// logFile answers GET /v1/logfiles/{file}: for a date, the names of the
// logs with events that day; for a log name, the log as CSV.
func (s *server) logFile(w http.ResponseWriter, r *http.Request, p *Principal) error {
	file := r.PathValue("file")
	if day, ok := parseDay(file); ok {
		return s.logNames(r.Context(), w, p, day)
	}
	if len(file) == len(time.DateOnly) && looksDated(file) {
		return badRequest("file: %q is not a valid date (YYYY-MM-DD)", clip(file))
	}
	return s.streamCSV(w, r, p, false)
}

func (s *server) logFileHeader(w http.ResponseWriter, r *http.Request, p *Principal) error {
	return s.streamCSV(w, r, p, true)
}

// logNames lists the log files of one day, in store.Logs order.
func (s *server) logNames(ctx context.Context, w http.ResponseWriter, p *Principal, day time.Time) error {
	days, err := s.cfg.Store.EventDays(ctx, p.Account)
	if err != nil {
		return err
	}
	want := day.Format(time.DateOnly)
	has := map[string]bool{}
	for _, d := range days {
		if d.Day == want && d.Count > 0 {
			has[d.Log] = true
		}
	}
	names := []string{}
	for _, log := range store.Logs {
		if has[log] {
			names = append(names, logName(log, day))
		}
	}
	writeJSON(w, http.StatusOK, names)
	return nil
}

// logEvents parses the {file} path value as a log name and returns that
// day's events.
func (s *server) logEvents(r *http.Request, p *Principal) (string, time.Time, iter.Seq2[store.Event, error], error) {
	file := r.PathValue("file")
	log, day, ok := parseLogName(file)
	if !ok {
		if prefix, _, _ := strings.Cut(file, "."); store.LogFields[prefix] != nil && looksDated(file) {
			return "", day, nil, badRequest("file: %q has no valid date (YYYY-MM-DD)", clip(file))
		}
		return "", day, nil, errorf(http.StatusNotFound,
			"log file %q: want one of %s, then .YYYY-MM-DD.log with a valid date", clip(file), strings.Join(store.Logs, ", "))
	}
	return log, day, s.cfg.Store.Events(r.Context(), p.Account, log, day, day.AddDate(0, 0, 1)), nil
}

// streamCSV writes one day's log as CSV (RFC 4180), one record per event,
// flushing as it goes.
func (s *server) streamCSV(w http.ResponseWriter, r *http.Request, p *Principal, header bool) error {
	log, day, events, err := s.logEvents(r, p)
	if err != nil {
		return err
	}
	var cw *csv.Writer
	rec := make([]string, 0, len(store.LogFields[log]))
	// The answer starts with the first event (or at the end), so that an
	// error before it still gets a proper status.
	start := func() error {
		h := w.Header()
		h.Set("Content-Type", "text/csv; charset=utf-8")
		if header {
			h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
		}
		h.Set("Content-Disposition", `inline; filename="`+logName(log, day)+`"`)
		w.WriteHeader(http.StatusOK)
		cw = csv.NewWriter(w)
		if header {
			return cw.Write(store.LogFields[log])
		}
		return nil
	}
	for e, err := range events {
		if err != nil {
			return err
		}
		if e.Account != p.Account || e.Log != log {
			continue // defence in depth: never another account's event
		}
		if cw == nil {
			if err := start(); err != nil {
				return err
			}
		}
		if err := cw.Write(csvRecord(rec, &e)); err != nil {
			return err
		}
	}
	if cw == nil {
		if err := start(); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// logFileJSON writes one day's log as a JSON array of objects.
func (s *server) logFileJSON(w http.ResponseWriter, r *http.Request, p *Principal) error {
	_, _, events, err := s.logEvents(r, p)
	if err != nil {
		return err
	}
	return streamJSON(w, p, events, nil, appendJSON)
}

// streamJSON writes events that keep passes as a JSON array, one element
// per line, each made by enc. The answer starts with the first element
// (or at the end), so an error before it still gets a proper status.
func streamJSON(w http.ResponseWriter, p *Principal, events iter.Seq2[store.Event, error], keep func(*store.Event) bool, enc func([]byte, *store.Event) []byte) error {
	var buf []byte
	for e, err := range events {
		if err != nil {
			return err
		}
		if e.Account != p.Account || (keep != nil && !keep(&e)) {
			continue // defence in depth: never another account's event
		}
		if _, known := store.LogFields[e.Log]; !known {
			continue // a log this API does not know yet
		}
		if buf == nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			buf = make([]byte, 0, 32<<10)
			buf = append(buf, '[')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, '\n')
		buf = enc(buf, &e)
		if len(buf) >= 16<<10 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if buf == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		buf = append(buf, '[')
	}
	buf = append(buf, "\n]\n"...)
	_, err := w.Write(buf)
	return err
}

// looksDated reports whether s holds something shaped like a date
// (NNNN-NN-NN), so that an impossible date is a 400, not a 404.
func looksDated(s string) bool {
	for i := 0; i+10 <= len(s); i++ {
		ok := true
		for j := 0; j < 10 && ok; j++ {
			c := s[i+j]
			if j == 4 || j == 7 {
				ok = c == '-'
			} else {
				ok = c >= '0' && c <= '9'
			}
		}
		if ok {
			return true
		}
	}
	return false
}
