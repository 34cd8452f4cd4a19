package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// RecordReturned implements store.DB: in one transaction, the events, the
// delivered copies that bounced hard (each becomes bounced and leaves the
// Delivered figures at the hour it was delivered), and the address-list
// entries (an address already listed keeps its entry).
func (d *DB) RecordReturned(ctx context.Context, events []store.Event, bounced []uint64, lists []store.AddressEntry) error {
	evs, err := store.PrepareEvents(events)
	if err != nil {
		return err
	}
	entries := make([][]byte, len(lists))
	for i := range lists {
		e := &lists[i]
		if err := store.CheckAddressEntry(e); err != nil {
			return err
		}
		if err := noNUL(e.Account, e.Address); err != nil {
			return err
		}
		if entries[i], err = json.Marshal(e); err != nil {
			return err
		}
	}
	if err := d.ensurePartitions(ctx, evs); err != nil {
		return err
	}
	ids := store.SortedUnique(bounced)
	var undelivered []store.Copy
	err = d.write(ctx, func(tx pgx.Tx) error {
		undelivered = undelivered[:0]
		b := d.newBatch()
		for _, id := range ids {
			var v []byte
			err := tx.QueryRow(ctx, `SELECT data FROM copies WHERE id = $1 FOR UPDATE`, i64(id)).Scan(&v)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			var c store.Copy
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("store: copy %s: %w", store.FormatID(id), err)
			}
			if c.State != store.CopyDelivered {
				continue
			}
			c.State = store.CopyBounced
			args, err := copyArgs(&c, false)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, sqlPutCopy, args...); err != nil {
				return err
			}
			at := c.Delivered
			if at.IsZero() {
				at = c.Created
			}
			b.addAll(&store.Event{Account: c.Account, Tags: c.Tags, Credential: c.Credential, Message: c.MessageID, Time: at}, store.Delivered, -1)
			undelivered = append(undelivered, c)
		}
		if err := b.putEvents(ctx, tx, evs, false); err != nil {
			return err
		}
		if err := b.flush(ctx, tx); err != nil {
			return err
		}
		for i, e := range lists {
			if _, err := tx.Exec(ctx, `INSERT INTO addr_lists (list, account, address, data) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
				e.List, e.Account, e.Address, entries[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: record returned: %w", err)
	}
	for i := range undelivered {
		d.carried.Add(&undelivered[i], -1)
	}
	return nil
}
