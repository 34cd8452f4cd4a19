package store

import (
	"context"
	"iter"
	"time"
)

// DB is everything the relay keeps, whichever backend keeps it: bbolt on
// one machine (*Relay), PostgreSQL shared by several relay nodes (package
// store/postgres). The rest of the code talks to this interface, or to a
// narrower one of its own; the contract tests (package store/storetest)
// hold both backends to the same behaviour.
//
// Writes are durable when they return. Methods are safe for concurrent
// use. Iterators read in small chunks, so a slow consumer holds nothing.
type DB interface {
	RecordStore

	// NextID returns a new unique, time-ordered id for a message or copy.
	NextID() uint64
	// SetBeforeCommit sets fn to run before each commit that records a new
	// message (the spool's folder fsync): no record is committed before
	// the file it points to is durable.
	SetBeforeCommit(fn func() error)

	// The spool index and delivery.
	AddMessage(ctx context.Context, m *Message, copies []*Copy, events []Event) error
	UpdateCopy(ctx context.Context, c *Copy, events []Event) (last bool, err error)
	Message(ctx context.Context, id uint64) (*Message, error)
	Copy(ctx context.Context, id uint64) (*Copy, error)
	// QueuedCopies calls fn for every copy not yet final whose message
	// this node's spool holds.
	QueuedCopies(ctx context.Context, fn func(*Copy) error) error
	// SpoolFiles calls fn with the spool file of every message of this
	// node that has copies left.
	SpoolFiles(ctx context.Context, fn func(name string)) error
	SearchMessages(ctx context.Context, q MessageQuery) ([]Message, error)

	// The event logs.
	AppendEvents(ctx context.Context, events []Event) error
	EventDays(ctx context.Context, account string) ([]DayLog, error)
	Events(ctx context.Context, account, log string, from, to time.Time) iter.Seq2[Event, error]
	EventsByMessage(ctx context.Context, account string, id uint64) iter.Seq2[Event, error]
	EventsByRecipient(ctx context.Context, account, recipient string, from, to time.Time) iter.Seq2[Event, error]
	EventsByTag(ctx context.Context, account, tag string, from, to time.Time) iter.Seq2[Event, error]
	// RecordReturned stores what came back (see *Relay.RecordReturned).
	RecordReturned(ctx context.Context, events []Event, bounced []uint64, lists []AddressEntry) error

	// Hits and links.
	IngestHits(ctx context.Context, hits []Hit) error
	HitCounts(ctx context.Context, account string) (HitCounts, error)
	PutMessageLinks(ctx context.Context, message uint64, links []MessageLink) error
	HasMessageLinks(ctx context.Context, message uint64) (bool, error)

	// The aggregates.
	Series(ctx context.Context, account, dim string, from, to time.Time, step time.Duration) ([]SeriesPoint, Counters, error)
	Totals(ctx context.Context, account string) (Counters, error)
	MessageCounters(ctx context.Context, message uint64) (Counters, error)
	TopLinks(ctx context.Context, account, dim string, from, to time.Time, limit int) ([]LinkStat, error)
	LinkSeries(ctx context.Context, account, dim, linkID string, from, to time.Time) (url string, days []LinkDay, err error)
	LinkMessages(ctx context.Context, account, linkID string, limit int) ([]uint64, error)
	MessageLinks(ctx context.Context, message uint64) ([]LinkStat, error)

	// Address lists (suppression, no tracking).
	AddAddress(ctx context.Context, e AddressEntry) (added bool, err error)
	RemoveAddress(ctx context.Context, list, account, address string) (removed bool, err error)
	LookupAddresses(ctx context.Context, list, account string, addresses []string) (map[string]*AddressEntry, error)
	ListAddresses(ctx context.Context, list, account, contains, after string, limit int) ([]AddressEntry, error)

	// The webhook queue (messages are queued with their events).
	ClaimWebhooks(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]WebhookMessage, error)
	NextWebhookDue(ctx context.Context) (time.Time, bool, error)
	FinishWebhookAttempt(ctx context.Context, id string, a WebhookAttempt, state string, next time.Time) error
	QueueWebhook(ctx context.Context, m WebhookMessage) error
	ResendWebhook(ctx context.Context, account, id string) error
	WebhookMessage(ctx context.Context, id string) (*WebhookMessage, error)
	WebhookMessages(ctx context.Context, endpoint, state, before string, limit int) ([]WebhookMessage, error)
	WebhookAttempts(ctx context.Context, id string) ([]WebhookAttempt, error)
	WebhookQueue(ctx context.Context) ([]WebhookQueueStat, error)

	// Privacy and retention.
	EraseAddress(ctx context.Context, account, address string, suppression bool) (Erased, error)
	DeleteBefore(ctx context.Context, now time.Time, rt Retention) (Pruned, error)

	Close() error
}

var _ DB = (*Relay)(nil)
