package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// DeleteBefore implements store.DB. The event logs are partitioned by day:
// a partition wholly older than every account's every period (now less
// rt.Longest()) is dropped whole, with no row-by-row delete; within the
// partitions left, the rows older than their account's and log's period
// are deleted (per log for the accounts with no period of their own, then
// per account that has one), the planner visiting only the partitions
// below each cutoff. The idempotency keys, hit ids and day counts of the
// removed events go with them. Then the finished messages and copies and
// the orphan hits older than rt.Default, and the hourly and daily
// aggregates older than rt.Longest(), as the bbolt backend does.
func (d *DB) DeleteBefore(ctx context.Context, now time.Time, rt store.Retention) (store.Pruned, error) {
	var p store.Pruned
	var errEv, errHits, errAgg error
	p.Events, errEv = d.deleteEvents(ctx, now, rt)
	if errEv == nil {
		errEv = d.deleteFinal(ctx, now.Add(-rt.Default))
	}
	p.Hits, errHits = d.deleteOrphans(ctx, now.Add(-rt.Default))
	p.Aggregates, errAgg = d.deleteAggregates(ctx, now.Add(-rt.Longest()))
	return p, errors.Join(errEv, errHits, errAgg)
}

// partitions lists the event partitions with their lower and upper bounds
// (Unix ns).
func (d *DB) partitions(ctx context.Context) ([]partition, error) {
	rows, err := d.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'events'::regclass ORDER BY c.relname`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out []partition
	for _, n := range names {
		day, err := time.Parse("20060102", strings.TrimPrefix(n, "events_p"))
		if err != nil {
			continue
		}
		out = append(out, partition{n, day.UnixNano(), day.Add(24 * time.Hour).UnixNano()})
	}
	return out, nil
}

type partition struct {
	name   string
	lo, hi int64
}

func (d *DB) deleteEvents(ctx context.Context, now time.Time, rt store.Retention) (int, error) {
	total := 0
	floor := now.Add(-rt.Longest()).UnixNano()
	parts, err := d.partitions(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: retention: %w", err)
	}
	dropped := false
	for _, pt := range parts {
		if pt.hi > floor {
			continue
		}
		gone := 0
		err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockPartition); err != nil {
				return err
			}
			var n int
			err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pt.name).Scan(&n)
			var pe interface{ SQLState() string }
			if errors.As(err, &pe) && pe.SQLState() == "42P01" {
				return nil // dropped by another node meanwhile
			}
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pt.name); err != nil {
				return err
			}
			for _, q := range []string{`DELETE FROM event_keys WHERE t >= $1 AND t < $2`, `DELETE FROM hit_ids WHERE orphan IS NULL AND t >= $1 AND t < $2`} {
				if _, err := tx.Exec(ctx, q, pt.lo, pt.hi); err != nil {
					return err
				}
			}
			dropped = true
			gone = n
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("postgres: retention: drop %s: %w", pt.name, err)
		}
		total += gone
	}
	if dropped {
		d.forgetPartitions()
		today := now.UTC().Unix() / 86400
		for day := today - 1; day <= today+7; day++ {
			if err := d.ensurePartition(ctx, day); err != nil {
				return total, err
			}
		}
	}
	// Row by row, what the partitions left hold beyond each period.
	var own []string // accounts with periods of their own
	for a := range rt.Accounts {
		own = append(own, a)
	}
	slices.Sort(own)
	type cut struct {
		cond string
		args []any
	}
	var cuts []cut
	for _, log := range store.Logs {
		others := []string{} // never NULL: account <> ALL(NULL) matches nothing
		for _, a := range own {
			if d, ok := rt.Accounts[a][log]; ok && d > 0 {
				cuts = append(cuts, cut{"account = $1 AND log = $2 AND t < $3", []any{a, log, now.Add(-d).UnixNano()}})
				others = append(others, a)
			}
		}
		cuts = append(cuts, cut{"log = $1 AND t < $2 AND account <> ALL($3)", []any{log, now.Add(-rt.For("\x00", log)).UnixNano(), others}})
	}
	for _, c := range cuts {
		n := 0
		err := d.write(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM events WHERE `+c.cond, c.args...)
			if err != nil {
				return err
			}
			n = int(tag.RowsAffected())
			if _, err := tx.Exec(ctx, `DELETE FROM event_keys WHERE `+c.cond, c.args...); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM hit_ids WHERE orphan IS NULL AND `+c.cond, c.args...); err != nil {
				return err
			}
			// Day counts of days wholly before the cutoff's day.
			cond := strings.Replace(c.cond, "t < ", "day < ", 1)
			args := slices.Clone(c.args)
			for i, a := range args {
				if ns, ok := a.(int64); ok {
					args[i] = time.Unix(0, ns).UTC().Format(time.DateOnly)
				}
			}
			_, err = tx.Exec(ctx, `DELETE FROM event_days WHERE `+cond, args...)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("postgres: retention: %w", err)
		}
		total += n
	}
	return total, nil
}

// deleteFinal removes final copies and finished messages made before
// cutoff.
func (d *DB) deleteFinal(ctx context.Context, cutoff time.Time) error {
	end := i64(store.IDBefore(cutoff))
	if end == 0 {
		return nil
	}
	err := d.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM copies WHERE id < $1 AND NOT queued`, end); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM messages WHERE id < $1 AND remaining <= 0`, end)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: retention: %w", err)
	}
	return nil
}

func (d *DB) deleteOrphans(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	err := d.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM hit_ids WHERE orphan IS NOT NULL AND t < $1`, cutoff.UnixNano())
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: retention: hits: %w", err)
	}
	return n, nil
}

// deleteAggregates removes the hourly and daily aggregates of hours and
// days wholly before cutoff, counting each key once (not each shard).
func (d *DB) deleteAggregates(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	err := d.write(ctx, func(tx pgx.Tx) error {
		n = 0
		for _, q := range []struct {
			sql string
			arg int32
		}{
			{`WITH x AS (DELETE FROM agg WHERE hour < $1 RETURNING account, dim, hour) SELECT count(*) FROM (SELECT DISTINCT * FROM x) k`, hourOf(cutoff)},
			{`WITH x AS (DELETE FROM link_days WHERE day < $1 RETURNING account, dim, day, link) SELECT count(*) FROM (SELECT DISTINCT * FROM x) k`, dayOf(cutoff)},
			{`WITH x AS (DELETE FROM link_carried WHERE day < $1 RETURNING 1) SELECT count(*) FROM x`, dayOf(cutoff)},
		} {
			var c int
			if err := tx.QueryRow(ctx, q.sql, q.arg).Scan(&c); err != nil {
				return err
			}
			n += c
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: retention: aggregates: %w", err)
	}
	return n, nil
}
