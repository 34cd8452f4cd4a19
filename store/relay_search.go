package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MessageQuery finds messages for the dashboard's search. Every set
// field must match; an empty query lists the newest messages.
type MessageQuery struct {
	Account string // AllAccounts: every account (operators)
	// ID is a message id or the id of one of its copies.
	ID        uint64
	Recipient string // exact address, case-insensitive
	Tag       string
	Subject   string // contained, case-insensitive
	Sender    string // contained in the envelope sender or the From header, case-insensitive
	From, To  time.Time
	Limit     int
}

// maxSearchScan bounds how many messages one search reads.
const maxSearchScan = 200000

// SearchMessages returns the messages matching q, newest first.
func (r *Relay) SearchMessages(ctx context.Context, q MessageQuery) ([]Message, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 100
	}
	if q.ID != 0 {
		m, err := r.messageOrCopy(ctx, q.ID)
		if err != nil || m == nil || (q.Account != AllAccounts && m.Account != q.Account) {
			return nil, err
		}
		return []Message{*m}, nil
	}
	if q.Recipient != "" && q.Account != AllAccounts {
		return r.searchByRecipient(ctx, q)
	}
	var out []Message
	subj, sender, rcpt := strings.ToLower(q.Subject), strings.ToLower(q.Sender), NormalAddress(q.Recipient)
	match := func(m *Message) bool {
		if q.Tag != "" && !slices.Contains(m.Tags, q.Tag) {
			return false
		}
		if subj != "" && !strings.Contains(strings.ToLower(m.Subject), subj) {
			return false
		}
		if sender != "" && !strings.Contains(strings.ToLower(m.From), sender) && !strings.Contains(strings.ToLower(m.HeaderFrom), sender) {
			return false
		}
		if rcpt != "" && !slices.ContainsFunc(m.Recipients, func(a string) bool { return NormalAddress(a) == rcpt }) {
			return false
		}
		return true
	}
	lo, hi := idRange(q.From, q.To)
	err := r.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(bucketMessages))
		var c *bolt.Cursor
		var prefix []byte
		if q.Account == AllAccounts {
			c = mb.Cursor()
		} else {
			prefix = []byte(q.Account + "\x00")
			c = tx.Bucket([]byte(bucketAccountMsgs)).Cursor()
		}
		k, _ := c.Seek(append(bytes.Clone(prefix), idKey(hi)...))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for scanned := 0; k != nil && bytes.HasPrefix(k, prefix) && scanned < maxSearchScan; k, _ = c.Prev() {
			scanned++
			if err := ctx.Err(); err != nil {
				return err
			}
			idb := k[len(prefix):]
			if len(idb) != 8 {
				continue
			}
			id := binary.BigEndian.Uint64(idb)
			if id < lo {
				break
			}
			v := mb.Get(idb)
			if v == nil {
				continue
			}
			var m Message
			if json.Unmarshal(v, &m) != nil || !match(&m) {
				continue
			}
			out = append(out, m)
			if len(out) >= q.Limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// idRange turns a time range into the range of ids made in it.
func idRange(from, to time.Time) (lo, hi uint64) {
	hi = ^uint64(0)
	if !from.IsZero() && from.UnixMilli() > idEpochMs {
		lo = uint64(from.UnixMilli()-idEpochMs) << idCounterBit
	}
	if !to.IsZero() && to.UnixMilli() > idEpochMs {
		hi = uint64(to.UnixMilli()-idEpochMs) << idCounterBit
	}
	return lo, hi
}

func (r *Relay) messageOrCopy(ctx context.Context, id uint64) (*Message, error) {
	m, err := r.Message(ctx, id)
	if err == nil {
		return m, nil
	}
	c, cerr := r.Copy(ctx, id)
	if cerr != nil {
		return nil, nil
	}
	if m, err = r.Message(ctx, c.MessageID); err != nil {
		return nil, nil
	}
	return m, nil
}

// searchByRecipient finds a recipient's messages through the events'
// recipient index (its attempts events name each copy).
func (r *Relay) searchByRecipient(ctx context.Context, q MessageQuery) ([]Message, error) {
	seen := map[uint64]bool{}
	var ids []uint64
	for e, err := range r.EventsByRecipient(ctx, q.Account, q.Recipient, q.From, q.To) {
		if err != nil {
			return nil, err
		}
		if e.Log != LogAttempts || e.ID == 0 {
			continue
		}
		c, err := r.Copy(ctx, e.ID)
		if err != nil || seen[c.MessageID] {
			continue
		}
		seen[c.MessageID] = true
		ids = append(ids, c.MessageID)
	}
	slices.Reverse(ids)
	sub := q
	sub.Recipient = ""
	var out []Message
	for _, id := range ids {
		m, err := r.Message(ctx, id)
		if err != nil || m.Account != q.Account {
			continue
		}
		if (sub.Tag != "" && !slices.Contains(m.Tags, sub.Tag)) ||
			(sub.Subject != "" && !strings.Contains(strings.ToLower(m.Subject), strings.ToLower(sub.Subject))) ||
			(sub.Sender != "" && !strings.Contains(strings.ToLower(m.From+" "+m.HeaderFrom), strings.ToLower(sub.Sender))) {
			continue
		}
		out = append(out, *m)
		if len(out) >= q.Limit {
			break
		}
	}
	return out, nil
}
