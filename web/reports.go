package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/store"
)

func init() {
	pages = append(pages,
		page{"GET /{$}", (*Handler).overview},
		page{"GET /links", (*Handler).links},
		page{"GET /links/{id}", (*Handler).link},
		page{"GET /messages", (*Handler).messages},
		page{"GET /messages/{id}", (*Handler).message},
		page{"GET /logs", (*Handler).logs},
		page{"GET /logs/{file}", (*Handler).logFile},
	)
}

// period is a report's range: from the range buttons (today, 7 or 30
// days) or custom dates, in UTC days, with its bucket step.
type period struct {
	Range    string // today, 7d, 30d, custom
	From, To time.Time
	Step     time.Duration
	FromDay  string // the form's values: first and last day
	ToDay    string
	Tag      string
	Dim      string
}

// StepName is "hour" or "day".
func (p *period) StepName() string {
	if p.Step < 24*time.Hour {
		return "hour"
	}
	return "day"
}

// Query is the period's part of a link's query string.
func (p *period) Query() string {
	v := url.Values{}
	v.Set("range", p.Range)
	if p.Range == "custom" {
		v.Set("from", p.FromDay)
		v.Set("to", p.ToDay)
	}
	if p.Tag != "" {
		v.Set("tag", p.Tag)
	}
	return v.Encode()
}

// Label describes the period for a heading.
func (p *period) Label() string {
	last := p.To.Add(-time.Nanosecond)
	if p.From.Format(time.DateOnly) == last.Format(time.DateOnly) {
		return p.From.Format("Mon 2 Jan 2006") + " (UTC)"
	}
	return p.From.Format("2 Jan 2006") + " – " + last.Format("2 Jan 2006") + " (UTC)"
}

func (h *Handler) period(r *http.Request, def string) (*period, error) {
	q := r.URL.Query()
	p := &period{Range: q.Get("range"), Tag: strings.TrimSpace(q.Get("tag"))}
	if p.Range == "" {
		p.Range = def
	}
	today := h.cfg.Now().UTC().Truncate(24 * time.Hour)
	switch p.Range {
	case "today":
		p.From, p.To = today, today.AddDate(0, 0, 1)
	case "7d":
		p.From, p.To = today.AddDate(0, 0, -6), today.AddDate(0, 0, 1)
	case "30d":
		p.From, p.To = today.AddDate(0, 0, -29), today.AddDate(0, 0, 1)
	case "custom":
		f, err1 := time.Parse(time.DateOnly, q.Get("from"))
		t, err2 := time.Parse(time.DateOnly, q.Get("to"))
		if err1 != nil || err2 != nil {
			return nil, badInput("Give the first and last day as dates (YYYY-MM-DD).")
		}
		if t.Before(f) {
			f, t = t, f
		}
		p.From, p.To = f, t.AddDate(0, 0, 1)
		if p.To.Sub(p.From) > h.cfg.MaxSpan {
			return nil, badInput("The period is longer than %d days.", int(h.cfg.MaxSpan/(24*time.Hour)))
		}
	default:
		return nil, badInput("Unknown range %q: pick today, 7 days, 30 days or custom dates.", clipText(p.Range, 20))
	}
	p.FromDay, p.ToDay = p.From.Format(time.DateOnly), p.To.AddDate(0, 0, -1).Format(time.DateOnly)
	p.Step = 24 * time.Hour
	switch q.Get("step") {
	case "hour":
		// Hours for at most a week: 168 points is what a chart can show.
		if p.To.Sub(p.From) <= 7*24*time.Hour {
			p.Step = time.Hour
		}
	case "day":
	default:
		if p.To.Sub(p.From) <= 2*24*time.Hour {
			p.Step = time.Hour
		}
	}
	if p.Tag != "" {
		if len(p.Tag) > 256 {
			return nil, badInput("The tag is too long.")
		}
		p.Dim = store.DimTag(p.Tag)
	}
	return p, nil
}

// figures are the overview's numbers.
type figures struct {
	Accepted, Delivered, Failed, Bounced, Deferred, Complained            uint64
	Opens, UniqueOpens, Clicks, UniqueClicks, MachineOpens, MachineClicks uint64
}

func figuresOf(c *store.Counters) figures {
	return figures{
		Accepted: c[store.Accepted], Delivered: c[store.Delivered], Failed: c[store.Failed],
		Bounced: c[store.BouncedHard] + c[store.BouncedSoft], Deferred: c[store.Deferred], Complained: c[store.Complained],
		Opens: c[store.Opens], UniqueOpens: c[store.UniqueOpens], Clicks: c[store.Clicks], UniqueClicks: c[store.UniqueClicks],
		MachineOpens: c[store.MachineOpens], MachineClicks: c[store.MachineClicks],
	}
}

// OpenRate and ClickRate are per delivered copy.
func (f figures) OpenRate() string  { return pct(f.UniqueOpens, f.Delivered) }
func (f figures) ClickRate() string { return pct(f.UniqueClicks, f.Delivered) }

// MachineOpenShare and MachineClickShare are the machines' part of all hits.
func (f figures) MachineOpenShare() string  { return pct(f.MachineOpens, f.MachineOpens+f.Opens) }
func (f figures) MachineClickShare() string { return pct(f.MachineClicks, f.MachineClicks+f.Clicks) }

func pct(n, d uint64) string {
	if d == 0 {
		return "–"
	}
	v := 100 * float64(n) / float64(d)
	switch {
	case v == 0:
		return "0%"
	case v < 10:
		return trimZero(v, 1) + "%"
	}
	return trimZero(v, 0) + "%"
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, s *session) error {
	p, err := h.period(r, "7d")
	if err != nil {
		return err
	}
	note := ""
	if p.Tag != "" && s.account == "" {
		note = "Tags are counted per account: pick an account to filter by tag."
		p.Dim, p.Tag = "", ""
	}
	pts, total, err := h.cfg.Store.Series(r.Context(), s.account, p.Dim, p.From, p.To, p.Step)
	if err != nil {
		return err
	}
	starts := make([]time.Time, len(pts))
	vals := func(ms ...store.Metric) []float64 {
		out := make([]float64, len(pts))
		for i := range pts {
			for _, m := range ms {
				out[i] += float64(pts[i].Counters[m])
			}
		}
		return out
	}
	for i := range pts {
		starts[i] = pts[i].Start
	}
	unit := "per " + p.StepName()
	charts := []*chart{
		{ID: "delivery", Title: "Delivery", Unit: "copies " + unit, Starts: starts, Step: p.Step, Series: []series{
			{"Accepted", vals(store.Accepted)}, {"Delivered", vals(store.Delivered)},
			{"Failed", vals(store.Failed)}, {"Bounced", vals(store.BouncedHard, store.BouncedSoft)}}},
		{ID: "engagement", Title: "Opens and clicks by people", Unit: "copies " + unit, Starts: starts, Step: p.Step, Series: []series{
			{"Unique opens", vals(store.UniqueOpens)}, {"Unique clicks", vals(store.UniqueClicks)},
			{"All opens", vals(store.Opens)}, {"All clicks", vals(store.Clicks)}}},
		{ID: "machine", Title: "Machine hits (scanners, image proxies, HEAD)", Unit: "hits " + unit, Starts: starts, Step: p.Step, Series: []series{
			{"Machine opens", vals(store.MachineOpens)}, {"Machine clicks", vals(store.MachineClicks)}}},
	}
	h.render(w, r, http.StatusOK, "overview", s, "Overview", map[string]any{
		"P": p, "F": figuresOf(&total), "Charts": charts, "Note": note, "Changed": r.URL.Query().Get("changed"),
	})
	return nil
}

// linkRow is a link in the links table.
type linkRow struct {
	api.Link
	Position *int
	Bar      int // share of the best link's unique clicks, 0-100, for the bar
}

// SharePct is the share of recipients who clicked.
func (l linkRow) SharePct() string { return pct(uint64(l.UniqueClicks), uint64(l.Delivered)) }

func (h *Handler) links(w http.ResponseWriter, r *http.Request, s *session) error {
	p, err := h.period(r, "30d")
	if err != nil {
		return err
	}
	ctx := r.Context()
	msgText := strings.TrimSpace(r.URL.Query().Get("message"))
	var rows []linkRow
	var msg *api.MessageSummary
	if msgText != "" {
		id, err := store.ParseID(msgText)
		if err != nil {
			return badInput("A message id is 16 hex digits.")
		}
		hist, err := h.cfg.Ops.MessageHistory(ctx, s.Principal(), id)
		if err != nil {
			return err
		}
		msg = &hist.Message
		for _, l := range hist.Links {
			pos := l.Position
			rows = append(rows, linkRow{Link: l.Link, Position: &pos})
		}
		slices.SortStableFunc(rows, func(a, b linkRow) int { return b.UniqueClicks - a.UniqueClicks })
	} else {
		if p.Tag != "" && s.account == "" {
			return badInput("Tags are counted per account: pick an account to filter by tag.")
		}
		stats, err := h.cfg.Store.TopLinks(ctx, s.account, p.Dim, p.From, p.To, 100)
		if err != nil {
			return err
		}
		for i := range stats {
			rows = append(rows, linkRow{Link: linkOf(&stats[i])})
		}
	}
	best := 0
	for _, l := range rows {
		best = max(best, l.UniqueClicks)
	}
	for i := range rows {
		if best > 0 {
			rows[i].Bar = rows[i].UniqueClicks * 100 / best
		}
	}
	h.render(w, r, http.StatusOK, "links", s, "Links", map[string]any{"P": p, "Rows": rows, "Message": msgText, "Msg": msg})
	return nil
}

// linkOf is api.Link's view of a link (the same share as /v1/links).
func linkOf(l *store.LinkStat) api.Link {
	out := api.Link{ID: l.ID, URL: l.URL, Clicks: int(l.Clicks), UniqueClicks: int(l.UniqueClicks),
		MachineClicks: int(l.MachineClicks), Delivered: int(l.Delivered)}
	if l.Delivered > 0 {
		out.Share = float64(l.UniqueClicks) / float64(l.Delivered)
	}
	if !l.First.IsZero() {
		out.First, out.Last = l.First.Format(time.RFC3339), l.Last.Format(time.RFC3339)
	}
	return out
}

var linkIDRe = regexp.MustCompile(`^[0-9a-f]{24}$`)

func (h *Handler) link(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	if !linkIDRe.MatchString(id) {
		return errNotFound
	}
	p, err := h.period(r, "30d")
	if err != nil {
		return err
	}
	if p.Tag != "" && s.account == "" {
		return badInput("Tags are counted per account: pick an account to filter by tag.")
	}
	rep, err := h.cfg.Ops.LinkReport(r.Context(), s.Principal(), id, p.Dim, p.From, p.To)
	if err != nil {
		return err
	}
	starts := make([]time.Time, len(rep.Days))
	uniq, all, mach := make([]float64, len(rep.Days)), make([]float64, len(rep.Days)), make([]float64, len(rep.Days))
	for i, d := range rep.Days {
		starts[i], _ = time.Parse(time.DateOnly, d.Day)
		uniq[i], all[i], mach[i] = float64(d.UniqueClicks), float64(d.Clicks), float64(d.MachineClicks)
	}
	ch := &chart{ID: "link", Title: "Clicks on this link", Unit: "clicks per day", Starts: starts, Step: 24 * time.Hour,
		Series: []series{{"Unique clicks", uniq}, {"All clicks by people", all}, {"Machine clicks", mach}}}
	h.render(w, r, http.StatusOK, "link", s, "Link", map[string]any{"P": p, "R": rep, "Chart": ch,
		"Share": pct(rep.UniqueClicks, rep.Delivered)})
	return nil
}

func (h *Handler) messages(w http.ResponseWriter, r *http.Request, s *session) error {
	qv := r.URL.Query()
	q, err := api.MessageQuery(qv)
	if err != nil {
		_, msg := api.ErrorStatus(err)
		return badInput("%s", msg)
	}
	var p *period
	if qv.Get("range") != "" && qv.Get("range") != "all" {
		if p, err = h.period(r, "30d"); err != nil {
			return err
		}
		q.From, q.To = p.From, p.To
	}
	q.Limit = 100
	ms, err := h.cfg.Ops.SearchMessages(r.Context(), s.Principal(), q)
	if err != nil {
		return err
	}
	if q.ID != 0 && len(ms) == 1 {
		redirect(w, r, "/messages/"+ms[0].ID)
		return nil
	}
	h.render(w, r, http.StatusOK, "messages", s, "Messages", map[string]any{"Q": qv, "Rows": ms, "Range": qv.Get("range"),
		"Searched": len(qv) > 0})
	return nil
}

// timelineItem is one event on a message's timeline, with what the page
// shows of it.
type timelineItem struct {
	api.HistoryEvent
	Kind      string // css class: ok, bad, warn, hit, info
	Summary   string
	Detail    string
	UserAgent string
	IP        string
	Props     []string // attempt: the tracking properties in force
	LogFile   string   // the day's log file the event is in
	Fields    [][2]string
}

func (h *Handler) message(w http.ResponseWriter, r *http.Request, s *session) error {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		return errNotFound
	}
	hist, err := h.cfg.Ops.MessageHistory(r.Context(), s.Principal(), id)
	if err != nil {
		return err
	}
	replies := map[string]string{}
	for _, c := range hist.Copies {
		replies[c.ID] = c.LastReply
	}
	items := make([]timelineItem, 0, len(hist.Events))
	for _, e := range hist.Events {
		it := timelineItem{HistoryEvent: e, Kind: "info", IP: e.Fields["ip"],
			LogFile: e.Log + "." + e.Time.UTC().Format(time.DateOnly) + ".log"}
		for _, n := range store.LogFields[e.Log] {
			it.Fields = append(it.Fields, [2]string{n, e.Fields[n]})
		}
		var hdr struct {
			UserAgent string `json:"User-Agent"`
		}
		_ = json.Unmarshal([]byte(e.Fields["headers"]), &hdr)
		it.UserAgent = hdr.UserAgent
		switch e.Log {
		case store.LogAttempts:
			it.Summary = "Accepted for " + e.Recipient
			it.Detail = "Envelope sender " + orDash(e.Fields["envelope"])
			var props map[string]any
			if json.Unmarshal([]byte(e.Fields["properties"]), &props) == nil {
				for _, k := range []string{"trackclicks", "trackopens", "preventscam"} {
					if v, ok := props[k].(bool); ok {
						it.Props = append(it.Props, k+" "+onOff(v))
					}
				}
				if c, ok := props["credential"].(string); ok && c != "" {
					it.Props = append(it.Props, "credential "+c)
				}
			}
		case store.LogDeliveries:
			it.Kind = "ok"
			it.Summary = "Delivered to " + e.Recipient + " (attempt " + e.Fields["attempt"] + ")"
			it.Detail = "Upstream reply: " + orDash(replies[e.Copy])
		case store.LogFailures:
			it.Kind = "warn"
			it.Summary = "Delivery attempt " + e.Fields["attempt"] + " to " + e.Recipient + " failed (" + e.Fields["type"] + ")"
			if t := e.Fields["type"]; t == "hard" || t == "expired" || t == "suppressed" {
				it.Kind = "bad"
				it.Summary = "Failed for good for " + e.Recipient + " (" + t + "), attempt " + e.Fields["attempt"]
			}
			it.Detail = "Upstream reply: " + strings.TrimSpace(e.Fields["code"]+" "+e.Fields["status"]+" "+e.Fields["description"])
			if st := e.Fields["state"]; st != "" {
				it.Detail += " (at " + st + ")"
			}
		case store.LogClicks:
			it.Kind = "hit"
			it.Summary = e.Recipient + " clicked " + e.Fields["url"]
			if e.Fields["altered"] == "true" {
				it.Detail = "The reader asked for " + e.Fields["destination"]
			}
		case store.LogOpens:
			it.Kind = "hit"
			it.Summary = e.Recipient + " opened it"
			if p := e.Fields["protocol"]; p != "" {
				it.Summary += " (" + p + ")"
			}
		case store.LogBounces:
			it.Kind = "bad"
			it.Summary = "Bounced for " + e.Recipient + " (" + e.Fields["type"] + ")"
			it.Detail = strings.TrimSpace(e.Fields["status"] + " " + e.Fields["diagnostic"])
		case store.LogComplaints:
			it.Kind = "bad"
			it.Summary = "Complaint (" + e.Fields["feedbacktype"] + ")"
		case store.LogResponses:
			it.Summary = "Reply received (" + e.Fields["kind"] + ")"
			it.Detail = e.Fields["subject"]
		default:
			it.Summary = e.Event
		}
		items = append(items, it)
	}
	h.render(w, r, http.StatusOK, "message", s, "Message "+hist.Message.ID, map[string]any{"H": hist, "Items": items})
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// dayLogs is one day of the log files.
type dayLogs struct {
	Day  string
	Logs []store.DayLog
}

func (h *Handler) logs(w http.ResponseWriter, r *http.Request, s *session) error {
	if s.account == "" {
		h.render(w, r, http.StatusOK, "logs", s, "Logs", map[string]any{"NeedAccount": true})
		return nil
	}
	days, err := h.cfg.Store.EventDays(r.Context(), s.account)
	if err != nil {
		return err
	}
	byDay := map[string]*dayLogs{}
	var order []string
	for _, d := range days {
		if d.Count == 0 {
			continue
		}
		dl := byDay[d.Day]
		if dl == nil {
			dl = &dayLogs{Day: d.Day}
			byDay[d.Day] = dl
			order = append(order, d.Day)
		}
		dl.Logs = append(dl.Logs, d)
	}
	slices.Sort(order)
	slices.Reverse(order)
	out := make([]*dayLogs, 0, len(order))
	for _, d := range order {
		dl := byDay[d]
		slices.SortFunc(dl.Logs, func(a, b store.DayLog) int { return slices.Index(store.Logs, a.Log) - slices.Index(store.Logs, b.Log) })
		out = append(out, dl)
	}
	if len(out) > 400 {
		out = out[:400]
	}
	h.render(w, r, http.StatusOK, "logs", s, "Logs", map[string]any{"Days": out})
	return nil
}

var logFileRe = regexp.MustCompile(`^[a-z]+\.\d{4}-\d{2}-\d{2}\.log$`)

// logFile serves a log file through the REST API's own handler, as the
// session's principal: the same bytes GET /v1/logfiles/... answers.
func (h *Handler) logFile(w http.ResponseWriter, r *http.Request, s *session) error {
	file := r.PathValue("file")
	if !logFileRe.MatchString(file) {
		return errNotFound
	}
	pr := s.Principal()
	if pr.Account == "" && pr.Operator {
		if a := r.URL.Query().Get("account"); a != "" {
			if _, err := h.cfg.Store.GetRecord(r.Context(), store.KindAccount, a); err != nil {
				return errNotFound
			}
			pr.Account = a
		}
	}
	if pr.Account == "" {
		return badInput("Pick an account first: log files are per account.")
	}
	path := "/v1/logfiles/" + file
	name := file
	switch r.URL.Query().Get("format") {
	case "", "csv":
	case "header":
		path += "/header"
	case "json":
		path += "/json"
		name += ".json"
	default:
		return badInput("Formats are csv, header and json.")
	}
	req := r.Clone(api.WithPrincipal(r.Context(), pr))
	req.URL = &url.URL{Path: path}
	req.RequestURI = path
	req.Header.Del("Authorization")
	aw := &attachment{ResponseWriter: w, name: name}
	h.cfg.API.ServeHTTP(aw, req)
	return nil
}

// attachment makes a download of an answer the API serves inline.
type attachment struct {
	http.ResponseWriter
	name string
	done bool
}

func (a *attachment) WriteHeader(code int) {
	if !a.done {
		a.done = true
		if code == http.StatusOK {
			a.Header().Set("Content-Disposition", `attachment; filename="`+a.name+`"`)
		}
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *attachment) Write(p []byte) (int, error) {
	if !a.done {
		a.WriteHeader(http.StatusOK)
	}
	return a.ResponseWriter.Write(p)
}

func (a *attachment) Unwrap() http.ResponseWriter { return a.ResponseWriter }
