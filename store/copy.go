package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

func init() {
	registerRelayBuckets(bucketMessages, bucketCopies, bucketQueued, bucketAccountMsgs)
}

const (
	bucketMessages    = "messages"     // message id -> Message (JSON)
	bucketCopies      = "copies"       // copy id -> Copy (JSON)
	bucketQueued      = "queued"       // copy id -> nil, for every copy not yet final
	bucketAccountMsgs = "account-msgs" // account \x00 message id -> nil, for search
)

// ErrNotFound is returned for an unknown message or copy.
var ErrNotFound = errors.New("store: not found")

// Message is a spooled original: one file in the spool, shared by the
// copies made of it (one per recipient).
type Message struct {
	ID         uint64    `json:"id"`
	SpoolPath  string    `json:"spool_path"` // file name inside the spool folder
	Size       int64     `json:"size"`
	From       string    `json:"from"` // envelope MAIL FROM
	Recipients []string  `json:"recipients"`
	SMTPUTF8   bool      `json:"smtputf8,omitempty"`
	Body8Bit   bool      `json:"body8bit,omitempty"`
	Created    time.Time `json:"created"`
	Remaining  int       `json:"remaining"` // copies not yet delivered or failed

	// What the dashboard shows and searches; set by the spool.
	Account    string   `json:"account,omitempty"`
	Credential string   `json:"credential,omitempty"`
	Subject    string   `json:"subject,omitempty"`     // decoded, bounded
	HeaderFrom string   `json:"header_from,omitempty"` // the From: header, decoded, bounded
	Tags       []string `json:"tags,omitempty"`
	CopyIDs    []uint64 `json:"copy_ids,omitempty"` // in Recipients order
	// Node names the relay node whose spool holds the message's bytes
	// (several nodes share one PostgreSQL); "" on a single node.
	Node string `json:"node,omitempty"`
}

// CopyState is where a copy stands in delivery.
type CopyState string

// Copy states. Delivered and failed are final.
const (
	CopyQueued    CopyState = "queued"
	CopyDelivered CopyState = "delivered"
	CopyFailed    CopyState = "failed"
	// CopyBounced: delivered, then a bounce (hard or soft) came back for it.
	CopyBounced CopyState = "bounced"
)

// Copy is one recipient's copy of a message, with the effective tracking
// settings (SPEC §4 precedence already applied) it is rewritten with. The
// rewrite is a pure function of these, so a retry sends the same bytes.
type Copy struct {
	ID          uint64    `json:"id"`
	MessageID   uint64    `json:"message_id"`
	Credential  string    `json:"credential"`
	Account     string    `json:"account"`
	Upstream    string    `json:"upstream"`
	Clicks      bool      `json:"clicks"`
	Opens       bool      `json:"opens"`
	PreventScam bool      `json:"preventscam"`
	Text        bool      `json:"text"`
	TrackSigned bool      `json:"track_signed,omitempty"` // track it even if DKIM-signed
	ClickDomain string    `json:"click_domain"`
	Scheme      string    `json:"scheme"`
	Tags        []string  `json:"tags,omitempty"`
	From        string    `json:"from"`
	Recipient   string    `json:"recipient"`
	SMTPUTF8    bool      `json:"smtputf8,omitempty"`
	Body8Bit    bool      `json:"body8bit,omitempty"`
	Created     time.Time `json:"created"`
	State       CopyState `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastReply   string    `json:"last_reply,omitempty"`
	// Delivered is when the upstream took the copy.
	Delivered time.Time `json:"delivered"`
}

// Final reports whether c will not be tried again.
func (c *Copy) Final() bool {
	return c.State == CopyDelivered || c.State == CopyFailed || c.State == CopyBounced
}

// joinEvents sets the aggregates' dimensions (message, credential) of the
// events about copies that the caller left unset.
func joinEvents(events []Event, copies ...*Copy) {
	for i := range events {
		e := &events[i]
		for _, c := range copies {
			if c.ID == e.ID {
				if e.Message == 0 {
					e.Message = c.MessageID
				}
				if e.Credential == "" {
					e.Credential = c.Credential
				}
			}
		}
	}
}

func idKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
}

// AddMessage records a spooled message, its copies (all queued) and any
// events (typically one attempts event per copy) in one durable commit,
// after the before-commit hook (SetBeforeCommit) has run.
func (r *Relay) AddMessage(ctx context.Context, m *Message, copies []*Copy, events []Event) error {
	if m.Account == "" && len(copies) > 0 {
		m.Account = copies[0].Account
	}
	if len(m.CopyIDs) == 0 {
		for _, c := range copies {
			m.CopyIDs = append(m.CopyIDs, c.ID)
		}
	}
	mv, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("store: message: %w", err)
	}
	events = slices.Clone(events)
	joinEvents(events, copies...)
	cvs := make([][]byte, len(copies))
	for i, c := range copies {
		if c.MessageID != m.ID || c.State != CopyQueued {
			return fmt.Errorf("store: copy %s: must be queued and belong to message %s", FormatID(c.ID), FormatID(m.ID))
		}
		if cvs[i], err = json.Marshal(c); err != nil {
			return fmt.Errorf("store: copy: %w", err)
		}
	}
	evs, err := encodeEvents(events)
	if err != nil {
		return err
	}
	return r.updateHook(ctx, func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(bucketMessages))
		mb.FillPercent = appendFill
		if err := mb.Put(idKey(m.ID), mv); err != nil {
			return err
		}
		if m.Account != "" {
			if err := tx.Bucket([]byte(bucketAccountMsgs)).Put(append([]byte(m.Account+"\x00"), idKey(m.ID)...), nil); err != nil {
				return err
			}
		}
		cb, qb := tx.Bucket([]byte(bucketCopies)), tx.Bucket([]byte(bucketQueued))
		for i, c := range copies {
			k := idKey(c.ID)
			if err := cb.Put(k, cvs[i]); err != nil {
				return err
			}
			if err := qb.Put(k, nil); err != nil {
				return err
			}
		}
		return putEvents(tx, evs)
	}, true)
}

// UpdateCopy records c after a delivery try, with its events, in one
// durable commit. When c becomes final the message's remaining count goes
// down; last reports that it reached zero, so the spool file can go. A
// copy that was already final is left as it was (last is false).
func (r *Relay) UpdateCopy(ctx context.Context, c *Copy, events []Event) (last bool, err error) {
	if c.State == CopyDelivered && c.Delivered.IsZero() {
		c.Delivered = time.Now().UTC()
	}
	events = slices.Clone(events)
	joinEvents(events, c)
	cv, err := json.Marshal(c)
	if err != nil {
		return false, fmt.Errorf("store: copy: %w", err)
	}
	evs, err := encodeEvents(events)
	if err != nil {
		return false, err
	}
	delivered := false
	err = r.update(ctx, func(tx *bolt.Tx) error {
		last, delivered = false, false
		cb, qb := tx.Bucket([]byte(bucketCopies)), tx.Bucket([]byte(bucketQueued))
		k := idKey(c.ID)
		if qb.Get(k) == nil {
			return nil // final already (or unknown): idempotent
		}
		if err := cb.Put(k, cv); err != nil {
			return err
		}
		if err := putEvents(tx, evs); err != nil {
			return err
		}
		if !c.Final() {
			return nil
		}
		delivered = c.State == CopyDelivered
		if err := qb.Delete(k); err != nil {
			return err
		}
		mb := tx.Bucket([]byte(bucketMessages))
		mk := idKey(c.MessageID)
		raw := mb.Get(mk)
		if raw == nil {
			return nil
		}
		var m Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("store: message %s: %w", FormatID(c.MessageID), err)
		}
		if m.Remaining > 0 {
			m.Remaining--
		}
		last = m.Remaining == 0
		mv, err := json.Marshal(&m)
		if err != nil {
			return err
		}
		return mb.Put(mk, mv)
	})
	if err == nil && delivered {
		r.carried.Add(c, 1)
	}
	return last, err
}

// Message returns the message with id.
func (r *Relay) Message(_ context.Context, id uint64) (*Message, error) {
	var m Message
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketMessages)).Get(idKey(id))
		if v == nil {
			return fmt.Errorf("%w: message %s", ErrNotFound, FormatID(id))
		}
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// Copy returns the copy with id.
func (r *Relay) Copy(_ context.Context, id uint64) (*Copy, error) {
	var c Copy
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketCopies)).Get(idKey(id))
		if v == nil {
			return fmt.Errorf("%w: copy %s", ErrNotFound, FormatID(id))
		}
		return json.Unmarshal(v, &c)
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// QueuedCopies calls fn for every copy that is not final, in id order. It
// is how delivery recovers after a restart.
func (r *Relay) QueuedCopies(_ context.Context, fn func(*Copy) error) error {
	return r.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket([]byte(bucketCopies))
		return tx.Bucket([]byte(bucketQueued)).ForEach(func(k, _ []byte) error {
			v := cb.Get(k)
			if v == nil {
				return nil
			}
			var c Copy
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("store: copy %x: %w", k, err)
			}
			return fn(&c)
		})
	})
}

// SpoolFiles calls fn with the spool file name of every message that has
// copies left. The spool uses it to remove files no record points to.
func (r *Relay) SpoolFiles(_ context.Context, fn func(name string)) error {
	return r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketMessages)).ForEach(func(_, v []byte) error {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return nil
			}
			if m.Remaining > 0 {
				fn(m.SpoolPath)
			}
			return nil
		})
	})
}
