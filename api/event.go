package api

import (
	"context"
	"iter"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// EventReader reads the event logs (SPEC §9). *store.Relay implements it.
// Every method is scoped to one account and yields events in time order,
// stopping at the first error, which it yields; none holds a lock while
// the consumer runs (the API writes to slow clients between events).
type EventReader interface {
	// EventDays lists the days and logs the account has events in.
	EventDays(account string) ([]store.DayLog, error)
	// Events yields one log's events with from <= time < to.
	Events(ctx context.Context, account, log string, from, to time.Time) iter.Seq2[store.Event, error]
	// EventsByMessage yields every event about one message copy.
	EventsByMessage(ctx context.Context, account string, id uint64) iter.Seq2[store.Event, error]
	// EventsByRecipient yields a recipient's events (case-insensitive).
	EventsByRecipient(ctx context.Context, account, recipient string, from, to time.Time) iter.Seq2[store.Event, error]
	// EventsByTag yields the events of messages tagged tag.
	EventsByTag(ctx context.Context, account, tag string, from, to time.Time) iter.Seq2[store.Event, error]
}

// CopyReader looks up a message copy, for the credential filter of
// /v1/stats. *store.Relay implements it. It may be nil in Config: then
// stats cannot filter by credential.
type CopyReader interface {
	Copy(id uint64) (*store.Copy, error)
}
