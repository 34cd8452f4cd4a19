package api

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// The reports behind the dashboard's message and link pages, shared with
// GET /v1/messages, /v1/messages/{id} and /v1/links/{id}.

// MessageSummary is one message in a search.
type MessageSummary struct {
	ID         string    `json:"id"`
	Account    string    `json:"account"`
	Credential string    `json:"credential,omitempty"`
	Created    time.Time `json:"created"`
	Envelope   string    `json:"envelope"` // MAIL FROM
	From       string    `json:"from,omitempty"`
	Subject    string    `json:"subject,omitempty"`
	Tags       []string  `json:"tags"`
	Recipients []string  `json:"recipients"`
	Remaining  int       `json:"remaining"` // copies not yet delivered or failed
	Size       int64     `json:"size"`
}

// MaxSearchRecipients bounds the recipients a search answer lists per
// message (the message page lists them all).
const MaxSearchRecipients = 5

func summarize(m *store.Message, allRecipients bool) MessageSummary {
	s := MessageSummary{ID: store.FormatID(m.ID), Account: m.Account, Credential: m.Credential, Created: m.Created,
		Envelope: m.From, From: m.HeaderFrom, Subject: m.Subject, Tags: m.Tags, Recipients: m.Recipients,
		Remaining: m.Remaining, Size: m.Size}
	if s.Tags == nil {
		s.Tags = []string{}
	}
	if !allRecipients && len(s.Recipients) > MaxSearchRecipients {
		s.Recipients = s.Recipients[:MaxSearchRecipients]
	}
	if s.Recipients == nil {
		s.Recipients = []string{}
	}
	return s
}

// SearchMessages finds the principal's messages, newest first.
func (o *Ops) SearchMessages(ctx context.Context, p *Principal, q store.MessageQuery) ([]MessageSummary, error) {
	q.Account = p.Account
	ms, err := o.Store.SearchMessages(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]MessageSummary, 0, len(ms))
	for i := range ms {
		if sees(p, ms[i].Account) { // defence in depth
			out = append(out, summarize(&ms[i], false))
		}
	}
	return out, nil
}

// CopyView is one recipient's copy of a message.
type CopyView struct {
	ID          string    `json:"id"`
	Recipient   string    `json:"recipient"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	LastReply   string    `json:"last_reply,omitempty"`
	NextAttempt time.Time `json:"next_attempt"`
	Delivered   time.Time `json:"delivered"`
	Clicks      bool      `json:"trackclicks"`
	Opens       bool      `json:"trackopens"`
	PreventScam bool      `json:"preventscam"`
	ClickDomain string    `json:"click_domain"`
}

// HistoryEvent is one event of a message's history: its log's fields by
// name (store.LogFields), as in the log files.
type HistoryEvent struct {
	Event     string            `json:"event"` // attempt, delivery, failure, click, open, bounce, ...
	Log       string            `json:"log"`
	Time      time.Time         `json:"time"`
	Copy      string            `json:"copy"`
	Recipient string            `json:"recipient"`
	Machine   bool              `json:"machine"`
	Fields    map[string]string `json:"fields"`
}

// PositionLink is one link position of a message with its clicks.
type PositionLink struct {
	Position int `json:"position"`
	Link
}

// History is a message with everything that happened to it.
type History struct {
	Message MessageSummary `json:"message"`
	Copies  []CopyView     `json:"copies"`
	Counts  Counts         `json:"counts"`
	Links   []PositionLink `json:"links"`
	Events  []HistoryEvent `json:"events"`
	// Truncated says the history holds only the first MaxHistoryEvents
	// events (or copies).
	Truncated bool `json:"truncated"`
}

// History bounds.
const (
	MaxHistoryEvents = 2000
	MaxHistoryCopies = 500
)

// MessageHistory returns a message (by its id or one of its copies') with
// its copies, figures, links and events in time order. A message of
// another account is not found.
func (o *Ops) MessageHistory(ctx context.Context, p *Principal, id uint64) (*History, error) {
	ms, err := o.Store.SearchMessages(ctx, store.MessageQuery{Account: p.Account, ID: id, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 || !sees(p, ms[0].Account) {
		return nil, errorf(http.StatusNotFound, "message not found")
	}
	m := &ms[0]
	h := &History{Message: summarize(m, true), Copies: []CopyView{}, Events: []HistoryEvent{}, Links: []PositionLink{}}
	counters, err := o.Store.MessageCounters(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	h.Counts = countsOf(&counters)
	links, err := o.Store.MessageLinks(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	for i := range links {
		pl := PositionLink{Link: linkOf(&links[i])}
		if links[i].Position != nil {
			pl.Position = *links[i].Position
		}
		h.Links = append(h.Links, pl)
	}
	copyIDs := m.CopyIDs
	if len(copyIDs) > MaxHistoryCopies {
		copyIDs, h.Truncated = copyIDs[:MaxHistoryCopies], true
	}
	for _, cid := range copyIDs {
		c, err := o.Store.Copy(ctx, cid)
		if errors.Is(err, store.ErrNotFound) {
			continue // pruned
		} else if err != nil {
			return nil, err
		}
		// The spool records the credential and tags on each copy; a
		// message record without them (older ones) takes the first copy's.
		if h.Message.Credential == "" {
			h.Message.Credential = c.Credential
		}
		if len(h.Message.Tags) == 0 && len(c.Tags) > 0 {
			h.Message.Tags = c.Tags
		}
		h.Copies = append(h.Copies, CopyView{ID: store.FormatID(c.ID), Recipient: c.Recipient, State: string(c.State),
			Attempts: c.Attempts, LastReply: c.LastReply, NextAttempt: c.NextAttempt, Delivered: c.Delivered,
			Clicks: c.Clicks, Opens: c.Opens, PreventScam: c.PreventScam, ClickDomain: c.ClickDomain})
		for e, err := range o.Store.EventsByMessage(ctx, m.Account, cid) {
			if err != nil {
				return nil, err
			}
			if e.Account != m.Account {
				continue
			}
			if len(h.Events) >= MaxHistoryEvents {
				h.Truncated = true
				break
			}
			f := make(map[string]string, len(store.LogFields[e.Log]))
			for _, n := range store.LogFields[e.Log] {
				f[n] = e.Value(n)
			}
			h.Events = append(h.Events, HistoryEvent{Event: eventNames[e.Log], Log: e.Log, Time: e.Time, Copy: store.FormatID(e.ID),
				Recipient: e.Recipient, Machine: store.IsMachine(&e), Fields: f})
		}
	}
	slices.SortStableFunc(h.Events, func(a, b HistoryEvent) int { return a.Time.Compare(b.Time) })
	return h, nil
}

// LinkMessage is one message that carried a link, with the link's clicks
// in it (over all its positions).
type LinkMessage struct {
	MessageSummary
	Delivered     uint64    `json:"delivered"`
	Clicks        uint64    `json:"clicks"`
	UniqueClicks  uint64    `json:"unique_clicks"`
	MachineClicks uint64    `json:"machine_clicks"`
	Positions     []int     `json:"positions"`
	First         time.Time `json:"first"`
	Last          time.Time `json:"last"`
}

// LinkReport is one link over a period: its clicks per day and the
// messages that carried it.
type LinkReport struct {
	ID            string        `json:"id"`
	URL           string        `json:"url"`
	Start         time.Time     `json:"start"`
	End           time.Time     `json:"end"`
	Days          []LinkDayView `json:"days"`
	Clicks        uint64        `json:"clicks"`
	UniqueClicks  uint64        `json:"unique_clicks"`
	MachineClicks uint64        `json:"machine_clicks"`
	// First and Last are the first and last human click over the
	// messages listed; Delivered their delivered copies.
	First     time.Time     `json:"first"`
	Last      time.Time     `json:"last"`
	Delivered uint64        `json:"delivered"`
	Messages  []LinkMessage `json:"messages"`
}

// LinkDayView is one UTC day of a link's clicks.
type LinkDayView struct {
	Day           string `json:"date"`
	Clicks        uint64 `json:"clicks"`
	UniqueClicks  uint64 `json:"unique_clicks"`
	MachineClicks uint64 `json:"machine_clicks"`
}

// MaxLinkReportMessages bounds the messages a link report lists.
const MaxLinkReportMessages = 100

// LinkReport returns one link's clicks in [from, to) (whole UTC days), in
// dimension dim ("" or DimTag), and the messages that carried it.
func (o *Ops) LinkReport(ctx context.Context, p *Principal, linkID, dim string, from, to time.Time) (*LinkReport, error) {
	if len(linkID) != 24 {
		return nil, errorf(http.StatusNotFound, "link not found")
	}
	url, days, err := o.Store.LinkSeries(ctx, p.Account, dim, linkID, from, to)
	if err != nil {
		return nil, errorf(http.StatusNotFound, "link not found")
	}
	if url == "" {
		return nil, errorf(http.StatusNotFound, "link not found")
	}
	r := &LinkReport{ID: linkID, URL: url, Start: from, End: to, Days: []LinkDayView{}, Messages: []LinkMessage{}}
	for _, d := range days {
		r.Days = append(r.Days, LinkDayView{Day: d.Day.Format(time.DateOnly), Clicks: d.Clicks, UniqueClicks: d.UniqueClicks, MachineClicks: d.MachineClicks})
		r.Clicks += d.Clicks
		r.UniqueClicks += d.UniqueClicks
		r.MachineClicks += d.MachineClicks
	}
	ids, err := o.Store.LinkMessages(ctx, p.Account, linkID, MaxLinkReportMessages)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		m, err := o.Store.Message(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		if !sees(p, m.Account) {
			continue
		}
		lm := LinkMessage{MessageSummary: summarize(m, false), Positions: []int{}}
		stats, err := o.Store.MessageLinks(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, s := range stats {
			if s.ID != linkID {
				continue
			}
			lm.Delivered = s.Delivered
			lm.Clicks += s.Clicks
			lm.UniqueClicks += s.UniqueClicks
			lm.MachineClicks += s.MachineClicks
			if s.Position != nil {
				lm.Positions = append(lm.Positions, *s.Position)
			}
			if !s.First.IsZero() && (lm.First.IsZero() || s.First.Before(lm.First)) {
				lm.First = s.First
			}
			lm.Last = maxTime(lm.Last, s.Last)
		}
		if lm.Delivered == 0 {
			c, err := o.Store.MessageCounters(ctx, id)
			if err != nil {
				return nil, err
			}
			lm.Delivered = c[store.Delivered]
		}
		r.Delivered += lm.Delivered
		if !lm.First.IsZero() && (r.First.IsZero() || lm.First.Before(r.First)) {
			r.First = lm.First
		}
		r.Last = maxTime(r.Last, lm.Last)
		r.Messages = append(r.Messages, lm)
	}
	slices.SortStableFunc(r.Messages, func(a, b LinkMessage) int {
		return cmp.Or(cmp.Compare(b.UniqueClicks, a.UniqueClicks), cmp.Compare(b.Clicks, a.Clicks))
	})
	return r, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
