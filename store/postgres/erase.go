package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// EraseAddress implements store.DB, in one transaction: the address's
// events (with their keys and day counts), the recipient of its final
// copies and of their messages, its webhook messages, and with
// suppression its suppression entry. Copies still queued are left and
// counted as Pending. The aggregates do not change.
func (d *DB) EraseAddress(ctx context.Context, account, address string, suppression bool) (store.Erased, error) {
	var out store.Erased
	addr := store.NormalAddress(address)
	if account == "" || addr == "" {
		return out, nil
	}
	err := d.write(ctx, func(tx pgx.Tx) error {
		out = store.Erased{}
		rows, err := tx.Query(ctx, `DELETE FROM events WHERE account = $1 AND rcpt = $2 RETURNING t, log, id, key`, account, strings.ToLower(addr))
		if err != nil {
			return err
		}
		type gone struct {
			t   int64
			log string
			id  int64
			key []byte
		}
		var evs []gone
		for rows.Next() {
			var g gone
			if err := rows.Scan(&g.t, &g.log, &g.id, &g.key); err != nil {
				rows.Close()
				return err
			}
			evs = append(evs, g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		out.Events = len(evs)
		copies := map[int64]bool{}
		days := map[[2]string]int64{}
		var keyLogs []string
		var keys, hitKeys [][]byte
		for _, g := range evs {
			if g.id != 0 {
				copies[g.id] = true
			}
			days[[2]string{time.Unix(0, g.t).UTC().Format(time.DateOnly), g.log}]--
			if len(g.key) > 0 {
				keyLogs, keys = append(keyLogs, g.log), append(keys, g.key)
				if g.log == store.LogClicks || g.log == store.LogOpens {
					hitKeys = append(hitKeys, g.key)
				}
			}
		}
		if len(keys) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM event_keys k USING unnest($2::text[], $3::bytea[]) AS q(log, key)
				WHERE k.account = $1 AND k.log = q.log AND k.key = q.key`, account, keyLogs, keys); err != nil {
				return err
			}
		}
		if len(hitKeys) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM hit_ids WHERE id = ANY($1)`, hitKeys); err != nil {
				return err
			}
		}
		if len(days) > 0 {
			sh := shard()
			for _, k := range sortedKeys(days, func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) }) {
				if _, err := tx.Exec(ctx, `INSERT INTO event_days (account, day, log, shard, n) VALUES ($1, $2, $3, $4, $5)
					ON CONFLICT (account, day, log, shard) DO UPDATE SET n = event_days.n + excluded.n`, account, k[0], k[1], sh, days[k]); err != nil {
					return err
				}
			}
		}
		ids := make([]int64, 0, len(copies))
		for id := range copies {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		msgs := map[uint64]bool{} // message -> a copy of the address still waits
		for _, id := range ids {
			var v []byte
			var queued bool
			err := tx.QueryRow(ctx, `SELECT data, queued FROM copies WHERE id = $1 FOR UPDATE`, id).Scan(&v, &queued)
			if err != nil {
				if err == pgx.ErrNoRows {
					continue
				}
				return err
			}
			var c store.Copy
			if json.Unmarshal(v, &c) != nil || c.Account != account || store.NormalAddress(c.Recipient) != addr {
				continue
			}
			if queued {
				msgs[c.MessageID] = true
				out.Pending++
				continue
			}
			msgs[c.MessageID] = msgs[c.MessageID] || false
			c.Recipient = ""
			args, err := copyArgs(&c, false)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, sqlPutCopy, args...); err != nil {
				return err
			}
			out.Copies++
		}
		for _, id := range sortedKeys(msgs, func(a, b uint64) int { return cmp.Compare(i64(a), i64(b)) }) {
			if msgs[id] {
				continue
			}
			var v []byte
			var remaining int
			if err := tx.QueryRow(ctx, `SELECT data, remaining FROM messages WHERE id = $1 FOR UPDATE`, i64(id)).Scan(&v, &remaining); err != nil {
				if err == pgx.ErrNoRows {
					continue
				}
				return err
			}
			var m store.Message
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			m.Remaining = remaining
			changed := false
			for i, a := range m.Recipients {
				if store.NormalAddress(a) == addr {
					m.Recipients[i] = ""
					changed = true
				}
			}
			if !changed {
				continue
			}
			args, err := messageArgs(&m)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, sqlPutMessage, args...); err != nil {
				return err
			}
			out.Messages++
		}
		if suppression {
			tag, err := tx.Exec(ctx, `DELETE FROM addr_lists WHERE list = $1 AND account = $2 AND address = $3`, store.ListSuppressed, account, addr)
			if err != nil {
				return err
			}
			out.Suppression = int(tag.RowsAffected())
		}
		rows, err = tx.Query(ctx, `DELETE FROM wh_msgs WHERE account = $1 AND recipient = $2 RETURNING id`, account, addr)
		if err != nil {
			return err
		}
		wids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		out.Webhooks = len(wids)
		if len(wids) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM wh_attempts WHERE message = ANY($1)`, wids); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return store.Erased{}, fmt.Errorf("postgres: erase: %w", err)
	}
	return out, nil
}
