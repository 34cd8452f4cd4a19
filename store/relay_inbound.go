package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// RecordReturned stores what the mail that came back says, in one durable
// commit: its events (bounces, complaints, responses, DMARC rows), the
// copies that bounced (bounced: a report that delivery failed, hard or
// soft; each delivered one becomes CopyBounced and stops counting as
// delivered in the aggregates, at the hour it was delivered), and
// address-list entries (hard bounces and complaints suppress; an address
// already listed keeps its entry).
func (r *Relay) RecordReturned(ctx context.Context, events []Event, bounced []uint64, lists []AddressEntry) error {
	evs, err := encodeEvents(events)
	if err != nil {
		return err
	}
	entries := make([][]byte, len(lists))
	for i := range lists {
		e := &lists[i]
		if err := validList(e.List); err != nil {
			return err
		}
		e.Address = NormalAddress(e.Address)
		if e.Account == "" || e.Address == "" {
			return fmt.Errorf("store: address entry needs an account and an address")
		}
		if entries[i], err = json.Marshal(e); err != nil {
			return err
		}
	}
	var undelivered []Copy
	err = r.update(ctx, func(tx *bolt.Tx) error {
		undelivered = undelivered[:0]
		cb := tx.Bucket([]byte(bucketCopies))
		agg := newAggregator()
		for _, id := range slices.Compact(slices.Sorted(slices.Values(bounced))) {
			k := idKey(id)
			v := cb.Get(k)
			if v == nil {
				continue
			}
			var c Copy
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("store: copy %s: %w", FormatID(id), err)
			}
			if c.State != CopyDelivered {
				continue
			}
			c.State = CopyBounced
			nv, err := json.Marshal(&c)
			if err != nil {
				return err
			}
			if err := cb.Put(k, nv); err != nil {
				return err
			}
			at := c.Delivered
			if at.IsZero() {
				at = c.Created
			}
			agg.addAll(&Event{Account: c.Account, Tags: c.Tags, Credential: c.Credential, Message: c.MessageID, Time: at}, Delivered, -1)
			undelivered = append(undelivered, c)
		}
		if err := agg.flush(tx); err != nil {
			return err
		}
		if err := putEvents(tx, evs); err != nil {
			return err
		}
		lb := tx.Bucket([]byte(bucketAddrLists))
		for i, e := range lists {
			k := addrKey(e.List, e.Account, e.Address)
			if lb.Get(k) != nil {
				continue
			}
			if err := lb.Put(k, entries[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for i := range undelivered {
			r.carried.Add(&undelivered[i], -1)
		}
	}
	return err
}
