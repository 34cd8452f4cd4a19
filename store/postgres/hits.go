package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// IngestHits implements store.DB: in one transaction, every hit id is
// inserted into hit_ids (ON CONFLICT DO NOTHING), so a hit shipped twice,
// to this node or another, is stored once: a second transaction with the
// same id waits for the first and then skips it. The new hits become
// clicks and opens events with their aggregates; those of unknown copies
// are kept raw as orphans.
func (d *DB) IngestHits(ctx context.Context, hits []store.Hit) error {
	if err := store.CheckHits(hits); err != nil {
		return err
	}
	if len(hits) == 0 {
		return nil
	}
	// Each hit once, by id; in id order, so that transactions on several
	// nodes lock the same ids in the same order.
	seen := map[string]bool{}
	var hs []*store.Hit
	for i := range hits {
		if !seen[hits[i].ID] {
			seen[hits[i].ID] = true
			hs = append(hs, &hits[i])
		}
	}
	slices.SortFunc(hs, func(a, b *store.Hit) int { return cmp.Compare(a.ID, b.ID) })
	days := map[int64]bool{}
	for _, h := range hs {
		days[h.Time.UnixNano()/(86400*1e9)] = true
	}
	for day := range days {
		if day >= 0 {
			if err := d.ensurePartition(ctx, day); err != nil {
				return err
			}
		}
	}
	return d.write(ctx, func(tx pgx.Tx) error {
		// The copies, their accounts' privacy settings and their messages'
		// recorded links, read once per batch.
		var cids []int64
		for _, h := range hs {
			cids = append(cids, i64(h.MessageID))
		}
		copies := map[uint64]*store.Copy{}
		rows, err := tx.Query(ctx, `SELECT data FROM copies WHERE id = ANY($1)`, cids)
		if err != nil {
			return err
		}
		vs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		for _, v := range vs {
			var c store.Copy
			if json.Unmarshal(v, &c) == nil && c.Account != "" {
				copies[c.ID] = &c
			}
		}
		ids, ts := make([][]byte, len(hs)), make([]int64, len(hs))
		accts, logs := make([]*string, len(hs)), make([]*string, len(hs))
		orphan := make([][]byte, len(hs))
		var linkMsgs []int64
		var linkPos []int32
		for i, h := range hs {
			// A joined hit's id goes with its event (same time); an
			// orphan's is kept for as long as its id's time says.
			ids[i], ts[i] = []byte(h.ID), h.Time.UnixNano()
			c := copies[h.MessageID]
			if c == nil {
				if t, ok := store.HitIDTime(h.ID); ok {
					ts[i] = t.UnixNano()
				}
				if orphan[i], err = json.Marshal(h); err != nil {
					return err
				}
				continue
			}
			log := store.LogClicks
			if h.Open() {
				log = store.LogOpens
			} else {
				linkMsgs, linkPos = append(linkMsgs, i64(c.MessageID)), append(linkPos, int32(h.Position))
			}
			accts[i], logs[i] = &c.Account, &log
		}
		rows, err = tx.Query(ctx, `INSERT INTO hit_ids (id, t, account, log, orphan)
			SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::text[], $4::text[], $5::bytea[]) ORDER BY 1
			ON CONFLICT DO NOTHING RETURNING id`, ids, ts, accts, logs, orphan)
		if err != nil {
			return err
		}
		fresh := map[string]bool{}
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			fresh[string(id)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		links := map[msgPos]string{}
		if len(linkMsgs) > 0 {
			rows, err := tx.Query(ctx, `SELECT l.message, l.position, l.url FROM msg_links l
				JOIN unnest($1::bigint[], $2::int[]) AS q(m, p) ON l.message = q.m AND l.position = q.p`, linkMsgs, linkPos)
			if err != nil {
				return err
			}
			for rows.Next() {
				var m int64
				var p int32
				var u string
				if err := rows.Scan(&m, &p, &u); err != nil {
					rows.Close()
					return err
				}
				links[msgPos{uint64(m), uint32(p)}] = u
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		privacy := map[string]*store.Account{}
		var events []store.Event
		var orphans int64
		for i, h := range hs {
			if !fresh[h.ID] {
				continue // shipped twice
			}
			c := copies[h.MessageID]
			if c == nil {
				_ = i
				orphans++
				continue
			}
			a, ok := privacy[c.Account]
			if !ok {
				if a, err = account(ctx, tx, c.Account); err != nil {
					return err
				}
				privacy[c.Account] = a
			}
			u, recorded := links[msgPos{c.MessageID, h.Position}]
			ev, err := store.HitEvent(h, c, a, u, recorded && !h.Open())
			if err != nil {
				return err
			}
			events = append(events, ev)
		}
		b := d.newBatch()
		if len(events) > 0 {
			evs, err := store.PrepareEvents(events)
			if err != nil {
				return err
			}
			if err := b.putEvents(ctx, tx, evs, true); err != nil {
				return err
			}
		}
		if err := b.flush(ctx, tx); err != nil {
			return err
		}
		if orphans > 0 {
			_, err := tx.Exec(ctx, `INSERT INTO counters (name, shard, n) VALUES ('orphans', $1, $2)
				ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + excluded.n`, b.shard, orphans)
			return err
		}
		return nil
	})
}

// HitCounts implements store.DB.
func (d *DB) HitCounts(ctx context.Context, account string) (store.HitCounts, error) {
	var hc store.HitCounts
	if account == "" {
		var n int64
		err := d.pool.QueryRow(ctx, `SELECT COALESCE(sum(n), 0)::bigint FROM counters WHERE name = 'orphans'`).Scan(&n)
		hc.Orphans = uint64(n)
		return hc, err
	}
	c, err := d.Totals(ctx, account)
	if err != nil {
		return hc, err
	}
	return store.HitCounts{
		Opens: c[store.Opens], UniqueOpens: c[store.UniqueOpens], MachineOpens: c[store.MachineOpens],
		Clicks: c[store.Clicks], UniqueClicks: c[store.UniqueClicks], MachineClicks: c[store.MachineClicks],
	}, nil
}

// PutMessageLinks implements store.DB.
func (d *DB) PutMessageLinks(ctx context.Context, message uint64, links []store.MessageLink) error {
	if len(links) == 0 {
		return nil
	}
	ms, ps, us := make([]int64, len(links)), make([]int32, len(links)), make([]string, len(links))
	for i, l := range links {
		ms[i], ps[i], us[i] = i64(message), int32(l.Position), clean(l.URL)
	}
	err := d.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO msg_links (message, position, url) SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[])
			ORDER BY 2 ON CONFLICT DO NOTHING`, ms, ps, us)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: message links: %w", err)
	}
	return nil
}

// HasMessageLinks implements store.DB.
func (d *DB) HasMessageLinks(ctx context.Context, message uint64) (bool, error) {
	var ok bool
	err := d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM msg_links WHERE message = $1)`, i64(message)).Scan(&ok)
	return ok, err
}
