package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

func init() {
	registerRelayBuckets(bucketMessages, bucketCopies, bucketQueued)
}

const (
	bucketMessages = "messages" // message id -> Message (JSON)
	bucketCopies   = "copies"   // copy id -> Copy (JSON)
	bucketQueued   = "queued"   // copy id -> nil, for every copy not yet final
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
}

// CopyState is where a copy stands in delivery.
type CopyState string

// Copy states. Delivered and failed are final.
const (
	CopyQueued    CopyState = "queued"
	CopyDelivered CopyState = "delivered"
	CopyFailed    CopyState = "failed"
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
}

// Final reports whether c will not be tried again.
func (c *Copy) Final() bool { return c.State == CopyDelivered || c.State == CopyFailed }

func idKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
}

// AddMessage records a spooled message, its copies (all queued) and any
// events (typically one attempts event per copy) in one durable commit,
// after the before-commit hook (SetBeforeCommit) has run.
func (r *Relay) AddMessage(ctx context.Context, m *Message, copies []*Copy, events []Event) error {
	mv, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("store: message: %w", err)
	}
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
		if err := tx.Bucket([]byte(bucketMessages)).Put(idKey(m.ID), mv); err != nil {
			return err
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
	cv, err := json.Marshal(c)
	if err != nil {
		return false, fmt.Errorf("store: copy: %w", err)
	}
	evs, err := encodeEvents(events)
	if err != nil {
		return false, err
	}
	err = r.update(ctx, func(tx *bolt.Tx) error {
		last = false
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
	return last, err
}

// Message returns the message with id.
func (r *Relay) Message(id uint64) (*Message, error) {
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
func (r *Relay) Copy(id uint64) (*Copy, error) {
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
func (r *Relay) QueuedCopies(fn func(*Copy) error) error {
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
func (r *Relay) SpoolFiles(fn func(name string)) error {
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
