package api

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// Counts are one period's numbers in GET /v1/stats. Opens and clicks are
// human ones; machine hits (scanners, image proxies, HEAD requests) are
// counted apart. Unique opens (clicks) are the copies opened (clicked) by
// a person for the first time in the period.
type Counts struct {
	Date          string `json:"date,omitempty"` // UTC day, or hour in RFC 3339; absent in the total
	Sent          int    `json:"sent"`           // copies accepted (attempts)
	Delivered     int    `json:"delivered"`      // less those that then bounced
	Failed        int    `json:"failed"`         // copies that failed for good
	Deferred      int    `json:"deferred"`       // tries that will be retried
	Bounced       int    `json:"bounced"`        // hard and soft bounces
	HardBounced   int    `json:"hard_bounced"`
	Complaints    int    `json:"complaints"`
	Suppressed    int    `json:"suppressed"` // recipients refused: on the suppression list
	Opens         int    `json:"opens"`
	UniqueOpens   int    `json:"unique_opens"`
	MachineOpens  int    `json:"machine_opens"`
	Clicks        int    `json:"clicks"`
	UniqueClicks  int    `json:"unique_clicks"`
	MachineClicks int    `json:"machine_clicks"`
}

// countsOf turns store counters into the answer's numbers.
func countsOf(c *store.Counters) Counts {
	return Counts{
		Sent: int(c[store.Accepted]), Delivered: int(c[store.Delivered]), Failed: int(c[store.Failed]),
		Deferred: int(c[store.Deferred]), Bounced: int(c[store.BouncedHard] + c[store.BouncedSoft]),
		HardBounced: int(c[store.BouncedHard]), Complaints: int(c[store.Complained]), Suppressed: int(c[store.Suppressed]),
		Opens: int(c[store.Opens]), UniqueOpens: int(c[store.UniqueOpens]), MachineOpens: int(c[store.MachineOpens]),
		Clicks: int(c[store.Clicks]), UniqueClicks: int(c[store.UniqueClicks]), MachineClicks: int(c[store.MachineClicks]),
	}
}

type statsAnswer struct {
	Start string   `json:"start"`
	End   string   `json:"end"`
	Days  []Counts `json:"days"`
	Total Counts   `json:"total"`
}

// dimension reads the tag and credential filters of stats and links.
func dimension(qv url.Values) (string, error) {
	tag, cred := qv.Get("tag"), qv.Get("credential")
	switch {
	case tag != "" && cred != "":
		return "", badRequest("tag, credential: filter by one of them")
	case tag != "":
		if err := checkTag(tag); err != nil {
			return "", badRequest("tag: %v", err)
		}
		return store.DimTag(tag), nil
	case cred != "":
		if len(cred) > 256 {
			return "", badRequest("credential: too long")
		}
		return store.DimCredential(cred), nil
	}
	return "", nil
}

// stats answers GET /v1/stats from the aggregates: one row per day (or
// per hour with step=hour) of the period, and the total.
func (s *server) stats(w http.ResponseWriter, r *http.Request, p *Principal) error {
	qv := r.URL.Query()
	start, end, err := s.period(qv)
	if err != nil {
		return err
	}
	dim, err := dimension(qv)
	if err != nil {
		return err
	}
	step := 24 * time.Hour
	switch qv.Get("step") {
	case "", "day":
	case "hour":
		step = time.Hour
		if end.Sub(start) > 31*24*time.Hour {
			return badRequest("step: hours for at most 31 days")
		}
	default:
		return badRequest("step: want day or hour")
	}
	pts, total, err := s.cfg.Store.Series(r.Context(), p.Account, dim, start, end, step)
	if err != nil {
		return err
	}
	days := make([]Counts, len(pts))
	for i := range pts {
		days[i] = countsOf(&pts[i].Counters)
		if step == time.Hour {
			days[i].Date = pts[i].Start.Format(time.RFC3339)
		} else {
			days[i].Date = pts[i].Start.Format(time.DateOnly)
		}
	}
	writeJSON(w, http.StatusOK, statsAnswer{
		Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339), Days: days, Total: countsOf(&total),
	})
	return nil
}

// Link is one row of GET /v1/links.
type Link struct {
	ID            string `json:"id"`
	URL           string `json:"url"`
	Clicks        int    `json:"clicks"`         // human clicks
	UniqueClicks  int    `json:"unique_clicks"`  // copies with a human click on it
	MachineClicks int    `json:"machine_clicks"` // clicks by scanners and proxies
	// Delivered counts the delivered copies of the messages that carried
	// the link; Share is UniqueClicks / Delivered.
	Delivered int     `json:"delivered"`
	Share     float64 `json:"share"`
	First     string  `json:"first,omitempty"` // first and last human click, RFC 3339
	Last      string  `json:"last,omitempty"`
}

func linkOf(l *store.LinkStat) Link {
	out := Link{ID: l.ID, URL: l.URL, Clicks: int(l.Clicks), UniqueClicks: int(l.UniqueClicks),
		MachineClicks: int(l.MachineClicks), Delivered: int(l.Delivered)}
	if l.Delivered > 0 {
		out.Share = float64(l.UniqueClicks) / float64(l.Delivered)
	}
	if !l.First.IsZero() {
		out.First = l.First.Format(time.RFC3339)
		out.Last = l.Last.Format(time.RFC3339)
	}
	return out
}

// MaxLinks bounds GET /v1/links' limit parameter.
const MaxLinks = 1000

// links answers GET /v1/links: the best-performing links of a period (by
// whole UTC days), most unique clicks first. Clicks count for the URL
// recorded when the message was rewritten, whatever a reader's browser
// asked for.
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
	dim, err := dimension(qv)
	if err != nil {
		return err
	}
	stats, err := s.cfg.Store.TopLinks(r.Context(), p.Account, dim, start, end, limit)
	if err != nil {
		return err
	}
	rows := make([]Link, len(stats))
	for i := range stats {
		rows[i] = linkOf(&stats[i])
	}
	writeJSON(w, http.StatusOK, struct {
		Start string `json:"start"`
		End   string `json:"end"`
		Links []Link `json:"links"`
	}{start.Format(time.RFC3339), end.Format(time.RFC3339), rows})
	return nil
}
