package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The webhook queue in bbolt. A message is queued for every matching
// endpoint in the transaction that stores its event (putEvents), so a
// crash can neither lose it nor send one for an event that was not stored.
//
//	"wh-msgs"        message id -> WebhookMessage (JSON)
//	"wh-due"         next attempt(8, Unix ns) message id -> nil, pending ones
//	"wh-by-endpoint" endpoint \x00 message id -> nil
//	"wh-attempts"    message id \x00 n(4) -> WebhookAttempt (JSON)
func init() {
	registerRelayBuckets(bucketWHMsgs, bucketWHDue, bucketWHByEndpoint, bucketWHAttempts)
}

const (
	bucketWHMsgs       = "wh-msgs"
	bucketWHDue        = "wh-due"
	bucketWHByEndpoint = "wh-by-endpoint"
	bucketWHAttempts   = "wh-attempts"
)

// webhookIDs makes webhook message ids.
var webhookIDs IDGen

// NewWebhookMessageID returns a new, time-ordered webhook message id.
func NewWebhookMessageID() string { return "msg_" + FormatID(webhookIDs.Next()) }

func dueKey(t time.Time, id string) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(t.UnixNano())), id...)
}

// webhookEndpoints reads an account's endpoints inside a transaction.
func webhookEndpoints(tx *bolt.Tx, account string) ([]Webhook, error) {
	prefix := []byte(string(KindWebhook) + "\x00" + account + "\x00")
	rb := tx.Bucket([]byte(bucketRecords))
	c := tx.Bucket([]byte(bucketRecordsByAccount)).Cursor()
	var out []Webhook
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		key := string(k[len(prefix):])
		v := rb.Get(recordKey(KindWebhook, key))
		if v == nil {
			continue
		}
		raw, err := decodeRaw(KindWebhook, key, v)
		if err != nil {
			return nil, err
		}
		var w Webhook
		if err := json.Unmarshal(raw.Value, &w); err != nil {
			return nil, fmt.Errorf("store: webhook %s: %w", key, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// webhookQueuer queues the webhook messages of one transaction's events.
type webhookQueuer struct {
	tx        *bolt.Tx
	endpoints map[string][]Webhook
}

func (q *webhookQueuer) event(e *Event) error {
	eps, ok := q.endpoints[e.Account]
	if !ok {
		var err error
		if eps, err = webhookEndpoints(q.tx, e.Account); err != nil {
			return err
		}
		if q.endpoints == nil {
			q.endpoints = map[string][]Webhook{}
		}
		q.endpoints[e.Account] = eps
	}
	for _, m := range AppendWebhookMessages(nil, e, eps, NewWebhookMessageID) {
		if err := putWebhookMessage(q.tx, &m, nil); err != nil {
			return err
		}
	}
	return nil
}

// putWebhookMessage stores m and keeps the due index right (old is the
// stored version, nil for a new message).
func putWebhookMessage(tx *bolt.Tx, m *WebhookMessage, old *WebhookMessage) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	mb := tx.Bucket([]byte(bucketWHMsgs))
	mb.FillPercent = appendFill
	if err := mb.Put([]byte(m.ID), v); err != nil {
		return err
	}
	due := tx.Bucket([]byte(bucketWHDue))
	if old != nil && old.State == WebhookPending {
		if err := due.Delete(dueKey(old.NextAttempt, old.ID)); err != nil {
			return err
		}
	}
	if m.State == WebhookPending {
		if err := due.Put(dueKey(m.NextAttempt, m.ID), nil); err != nil {
			return err
		}
	}
	if old == nil {
		return tx.Bucket([]byte(bucketWHByEndpoint)).Put([]byte(m.Endpoint+"\x00"+m.ID), nil)
	}
	return nil
}

func getWebhookMessage(tx *bolt.Tx, id string) (*WebhookMessage, error) {
	v := tx.Bucket([]byte(bucketWHMsgs)).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%w: webhook message %s", ErrNotFound, id)
	}
	var m WebhookMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("store: webhook message %s: %w", id, err)
	}
	return &m, nil
}

// ClaimWebhooks takes up to limit pending messages due at now, oldest due
// first, and moves each one's next attempt to now+lease, so that no other
// worker (or node) takes it while it is being sent; a worker that dies
// holding it only delays it by lease.
func (r *Relay) ClaimWebhooks(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]WebhookMessage, error) {
	var out []WebhookMessage
	err := r.update(ctx, func(tx *bolt.Tx) error {
		out = out[:0]
		c := tx.Bucket([]byte(bucketWHDue)).Cursor()
		end := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())+1)
		var keys [][]byte
		for k, _ := c.First(); k != nil && bytes.Compare(k, end) < 0 && len(keys) < limit; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			m, err := getWebhookMessage(tx, string(k[8:]))
			if err != nil {
				return err
			}
			old := *m
			m.NextAttempt = now.Add(lease)
			if err := putWebhookMessage(tx, m, &old); err != nil {
				return err
			}
			out = append(out, *m)
		}
		return nil
	})
	return out, err
}

// NextWebhookDue returns when the next pending message is due, and false
// when none is pending.
func (r *Relay) NextWebhookDue(context.Context) (time.Time, bool, error) {
	var t time.Time
	var ok bool
	err := r.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket([]byte(bucketWHDue)).Cursor().First()
		if len(k) >= 8 {
			t, ok = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC(), true
		}
		return nil
	})
	return t, ok, err
}

// FinishWebhookAttempt records attempt a of message id and what comes
// next: state WebhookPending with the next try at next, or a final state.
func (r *Relay) FinishWebhookAttempt(ctx context.Context, id string, a WebhookAttempt, state string, next time.Time) error {
	av, err := json.Marshal(&a)
	if err != nil {
		return err
	}
	return r.update(ctx, func(tx *bolt.Tx) error {
		m, err := getWebhookMessage(tx, id)
		if err != nil {
			return err
		}
		old := *m
		m.Attempts++
		m.State, m.NextAttempt, m.LastStatus, m.LastError = state, next, a.Status, a.Error
		if err := putWebhookMessage(tx, m, &old); err != nil {
			return err
		}
		k := binary.BigEndian.AppendUint32([]byte(id+"\x00"), uint32(m.Attempts))
		return tx.Bucket([]byte(bucketWHAttempts)).Put(k, av)
	})
}

// QueueWebhook queues a message that no stored event made (a test event
// sent from the endpoint's page), due now.
func (r *Relay) QueueWebhook(ctx context.Context, m WebhookMessage) error {
	if m.ID == "" {
		m.ID = NewWebhookMessageID()
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	m.State, m.NextAttempt = WebhookPending, m.Created
	return r.update(ctx, func(tx *bolt.Tx) error { return putWebhookMessage(tx, &m, nil) })
}

// ResendWebhook queues message id of account again, due now (a failed
// event resent by hand). Its id stays, so receivers can de-duplicate.
func (r *Relay) ResendWebhook(ctx context.Context, account, id string) error {
	return r.update(ctx, func(tx *bolt.Tx) error {
		m, err := getWebhookMessage(tx, id)
		if err != nil {
			return err
		}
		if m.Account != account {
			return fmt.Errorf("%w: webhook message %s", ErrNotFound, id)
		}
		old := *m
		m.State, m.NextAttempt = WebhookPending, time.Now().UTC()
		return putWebhookMessage(tx, m, &old)
	})
}

// WebhookMessage returns one queued message.
func (r *Relay) WebhookMessage(_ context.Context, id string) (*WebhookMessage, error) {
	var m *WebhookMessage
	err := r.db.View(func(tx *bolt.Tx) error {
		var err error
		m, err = getWebhookMessage(tx, id)
		return err
	})
	return m, err
}

// WebhookMessages returns an endpoint's messages, newest first, in state
// (all when ""), at most limit, older than the message before ("" for the
// newest).
func (r *Relay) WebhookMessages(ctx context.Context, endpoint, state, before string, limit int) ([]WebhookMessage, error) {
	var out []WebhookMessage
	err := r.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(endpoint + "\x00")
		c := tx.Bucket([]byte(bucketWHByEndpoint)).Cursor()
		// Start just before the message before (or the endpoint's end).
		from := prefixEnd(prefix)
		if before != "" {
			from = append(bytes.Clone(prefix), before...)
		}
		k, _ := c.Seek(from)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && (limit <= 0 || len(out) < limit); k, _ = c.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := getWebhookMessage(tx, string(k[len(prefix):]))
			if err != nil {
				continue // removed by retention meanwhile
			}
			if state == "" || m.State == state {
				out = append(out, *m)
			}
		}
		return nil
	})
	return out, err
}

// WebhookAttempts returns the attempts made for one message, oldest first.
func (r *Relay) WebhookAttempts(_ context.Context, id string) ([]WebhookAttempt, error) {
	var out []WebhookAttempt
	err := r.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(id + "\x00")
		c := tx.Bucket([]byte(bucketWHAttempts)).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var a WebhookAttempt
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// WebhookQueue returns, per endpoint with pending messages, how many wait
// and the creation time of the oldest.
func (r *Relay) WebhookQueue(ctx context.Context) ([]WebhookQueueStat, error) {
	by := map[string]*WebhookQueueStat{}
	var order []string
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketWHDue)).ForEach(func(k, _ []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := getWebhookMessage(tx, string(k[8:]))
			if err != nil {
				return nil
			}
			s := by[m.Endpoint]
			if s == nil {
				s = &WebhookQueueStat{Endpoint: m.Endpoint, Account: m.Account, Oldest: m.Created}
				by[m.Endpoint] = s
				order = append(order, m.Endpoint)
			}
			s.Depth++
			if m.Created.Before(s.Oldest) {
				s.Oldest = m.Created
			}
			return nil
		})
	})
	out := make([]WebhookQueueStat, 0, len(order))
	for _, e := range order {
		out = append(out, *by[e])
	}
	return out, err
}
