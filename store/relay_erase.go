package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"

	bolt "go.etcd.io/bbolt"
)

// Erased counts what EraseAddress removed.
type Erased struct {
	Events      int `json:"events"`      // log records about the address
	Copies      int `json:"copies"`      // copies whose recipient was blanked
	Messages    int `json:"messages"`    // messages whose recipient list was blanked
	Webhooks    int `json:"webhooks"`    // queued webhook messages about the address
	Suppression int `json:"suppression"` // 1 when its suppression entry went
	Pending     int `json:"pending"`     // copies still queued for delivery, left as they are
}

// EraseAddress deletes everything account holds about one recipient
// address: its events in every log (with their index entries), the
// recipient of its delivered or failed copies and of their messages, the
// webhook messages about it, and (when suppression is true) its
// suppression entry. Copies still waiting for delivery are left, and
// counted as Pending. The aggregates do not change: they hold numbers,
// not addresses, and the mail was sent. The no-tracking entry stays: it
// is the person's own wish.
func (r *Relay) EraseAddress(ctx context.Context, account, address string, suppression bool) (Erased, error) {
	var out Erased
	addr := NormalAddress(address)
	if account == "" || addr == "" {
		return out, nil
	}
	prefix := []byte(addr + "\x00")
	copies := map[uint64]bool{}
	for {
		n := 0
		err := r.update(ctx, func(tx *bolt.Tx) error {
			n = 0
			ab := tx.Bucket([]byte(bucketEvents)).Bucket([]byte(account))
			if ab == nil {
				return nil
			}
			ib := ab.Bucket([]byte("by-rcpt"))
			if ib == nil {
				return nil
			}
			var doomed [][]byte
			c := ib.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(doomed) < 5000; k, _ = c.Next() {
				doomed = append(doomed, bytes.Clone(k))
			}
			days := ab.Bucket([]byte("days"))
			keys := tx.Bucket([]byte(bucketEventKeys))
			hitIDs := tx.Bucket([]byte(bucketHitIDs))
			for _, k := range doomed {
				rest := k[len(prefix):]
				if len(rest) <= eventKeyLen {
					if err := ib.Delete(k); err != nil {
						return err
					}
					continue
				}
				ek, log := rest[:eventKeyLen], string(rest[eventKeyLen:])
				lb := ab.Bucket([]byte("log:" + log))
				var v []byte
				if lb != nil {
					v = lb.Get(ek)
				}
				if v == nil {
					if err := ib.Delete(k); err != nil { // its event went by retention
						return err
					}
					continue
				}
				e, err := decodeEvent(account, log, v)
				if err != nil {
					return err
				}
				if e.ID != 0 {
					copies[e.ID] = true
				}
				if err := eachIndexKey(&e, ek, func(index string, key []byte) error {
					if b := ab.Bucket([]byte(index)); b != nil {
						return b.Delete(key)
					}
					return nil
				}); err != nil {
					return err
				}
				if e.Key != "" {
					if err := keys.Delete([]byte(account + "\x00" + log + "\x00" + e.Key)); err != nil {
						return err
					}
					if log == LogClicks || log == LogOpens {
						if err := hitIDs.Delete([]byte(e.Key)); err != nil {
							return err
						}
					}
				}
				if err := lb.Delete(ek); err != nil {
					return err
				}
				if days != nil {
					dk := []byte(dayOf(e.Time) + "\x00" + log)
					if dv := days.Get(dk); len(dv) == 8 && binary.BigEndian.Uint64(dv) > 0 {
						if err := days.Put(dk, binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(dv)-1)); err != nil {
							return err
						}
					}
				}
				n++
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		out.Events += n
		if n == 0 {
			break
		}
	}
	err := r.update(ctx, func(tx *bolt.Tx) error {
		out.Copies, out.Messages, out.Pending, out.Suppression, out.Webhooks = 0, 0, 0, 0, 0
		cb, qb, mb := tx.Bucket([]byte(bucketCopies)), tx.Bucket([]byte(bucketQueued)), tx.Bucket([]byte(bucketMessages))
		msgs := map[uint64]bool{}
		for id := range copies {
			k := idKey(id)
			v := cb.Get(k)
			if v == nil {
				continue
			}
			var c Copy
			if json.Unmarshal(v, &c) != nil || c.Account != account || NormalAddress(c.Recipient) != addr {
				continue
			}
			if qb.Get(k) != nil {
				msgs[c.MessageID] = true // keeps its recipient list while a copy waits
				out.Pending++
				continue
			}
			msgs[c.MessageID] = msgs[c.MessageID] || false
			c.Recipient = ""
			nv, err := json.Marshal(&c)
			if err != nil {
				return err
			}
			if err := cb.Put(k, nv); err != nil {
				return err
			}
			out.Copies++
		}
		for id, pending := range msgs {
			if pending {
				continue
			}
			k := idKey(id)
			v := mb.Get(k)
			if v == nil {
				continue
			}
			var m Message
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			changed := false
			for i, a := range m.Recipients {
				if NormalAddress(a) == addr {
					m.Recipients[i] = ""
					changed = true
				}
			}
			if !changed {
				continue
			}
			nv, err := json.Marshal(&m)
			if err != nil {
				return err
			}
			if err := mb.Put(k, nv); err != nil {
				return err
			}
			out.Messages++
		}
		if suppression {
			lb := tx.Bucket([]byte(bucketAddrLists))
			k := addrKey(ListSuppressed, account, addr)
			if lb.Get(k) != nil {
				if err := lb.Delete(k); err != nil {
					return err
				}
				out.Suppression = 1
			}
		}
		// Webhook messages about the address.
		wm := tx.Bucket([]byte(bucketWHMsgs))
		var doomed []*WebhookMessage
		if err := wm.ForEach(func(_, v []byte) error {
			var m WebhookMessage
			if json.Unmarshal(v, &m) == nil && m.Account == account && m.Recipient == addr {
				doomed = append(doomed, &m)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, m := range doomed {
			if err := deleteWebhookMessage(tx, m); err != nil {
				return err
			}
			out.Webhooks++
		}
		return nil
	})
	return out, err
}

// deleteWebhookMessage removes a message, its index entries and attempts.
func deleteWebhookMessage(tx *bolt.Tx, m *WebhookMessage) error {
	if err := tx.Bucket([]byte(bucketWHMsgs)).Delete([]byte(m.ID)); err != nil {
		return err
	}
	if m.State == WebhookPending {
		if err := tx.Bucket([]byte(bucketWHDue)).Delete(dueKey(m.NextAttempt, m.ID)); err != nil {
			return err
		}
	}
	if err := tx.Bucket([]byte(bucketWHByEndpoint)).Delete([]byte(m.Endpoint + "\x00" + m.ID)); err != nil {
		return err
	}
	ab := tx.Bucket([]byte(bucketWHAttempts))
	p := []byte(m.ID + "\x00")
	var keys [][]byte
	c := ab.Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := ab.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
