package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// The counters of one key are the sum of its shards; a sum below zero (a
// bounce taking back a delivery the same shard never saw) reads as the
// true figure once clamped at zero per key, as the bbolt backend clamps
// each record.

var sqlSumMetrics = func() string {
	parts := make([]string, store.NumMetrics)
	for i, m := range store.MetricNames {
		parts[i] = "COALESCE(sum(" + m + "), 0)::bigint"
	}
	return strings.Join(parts, ", ")
}()

func scanCounters(scan func(dst ...any) error, pre ...any) (store.Counters, error) {
	var raw [store.NumMetrics]int64
	dst := append([]any{}, pre...)
	for i := range raw {
		dst = append(dst, &raw[i])
	}
	var c store.Counters
	if err := scan(dst...); err != nil {
		return c, err
	}
	for i, v := range raw {
		if v > 0 {
			c[i] = uint64(v)
		}
	}
	return c, nil
}

// Series implements store.DB.
func (d *DB) Series(ctx context.Context, account, dim string, from, to time.Time, step time.Duration) ([]store.SeriesPoint, store.Counters, error) {
	var total store.Counters
	pts, from, to, err := store.SeriesPoints(from, to, step)
	if err != nil || len(pts) == 0 {
		return nil, total, err
	}
	n := len(pts)
	rows, err := d.pool.Query(ctx, `SELECT hour, `+sqlSumMetrics+` FROM agg WHERE account = $1 AND dim = $2 AND hour >= $3 AND hour < $4
		GROUP BY hour`, account, dim, hourOf(from), hourOf(to))
	if err != nil {
		return nil, total, fmt.Errorf("postgres: series: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h int32
		c, err := scanCounters(rows.Scan, &h)
		if err != nil {
			return nil, total, fmt.Errorf("postgres: series: %w", err)
		}
		i := int(time.Unix(int64(h)*3600, 0).Sub(from) / step)
		if i < 0 || i >= n {
			continue
		}
		pts[i].Counters.Add(&c)
		total.Add(&c)
	}
	if err := rows.Err(); err != nil {
		return nil, total, fmt.Errorf("postgres: series: %w", err)
	}
	return pts, total, nil
}

// Totals implements store.DB.
func (d *DB) Totals(ctx context.Context, account string) (store.Counters, error) {
	c, err := scanCounters(d.pool.QueryRow(ctx, `SELECT `+sqlSumMetrics+` FROM totals WHERE account = $1`, account).Scan)
	if err != nil {
		return c, fmt.Errorf("postgres: totals: %w", err)
	}
	return c, nil
}

// MessageCounters implements store.DB.
func (d *DB) MessageCounters(ctx context.Context, message uint64) (store.Counters, error) {
	c, err := scanCounters(d.pool.QueryRow(ctx, `SELECT `+sqlSumMetrics+` FROM msg_stats WHERE message = $1`, i64(message)).Scan)
	if err != nil {
		return c, fmt.Errorf("postgres: message counters: %w", err)
	}
	return c, nil
}

func linkDays(from, to time.Time) (int32, int32) {
	return dayOf(from.UTC()), dayOf(to.UTC().Add(24*time.Hour - time.Nanosecond))
}

func statOf(clicks, uniq, machine int64, first, last *int64) store.LinkStat {
	s := store.LinkStat{Clicks: uint64(max(clicks, 0)), UniqueClicks: uint64(max(uniq, 0)), MachineClicks: uint64(max(machine, 0))}
	if first != nil && *first != 0 {
		s.First = time.Unix(0, *first).UTC()
	}
	if last != nil && *last != 0 {
		s.Last = time.Unix(0, *last).UTC()
	}
	return s
}

// TopLinks implements store.DB: one query sums the days' shards per link,
// orders and limits them, and adds up the delivered copies that carried
// each on those days (carried.go).
func (d *DB) TopLinks(ctx context.Context, account, dim string, from, to time.Time, limit int) ([]store.LinkStat, error) {
	d0, d1 := linkDays(from, to)
	lim := "ALL"
	if limit > 0 {
		lim = fmt.Sprint(limit)
	}
	d.flushCarried(ctx) // the deliveries gathered in memory count too
	rows, err := d.pool.Query(ctx, topLinksSQL(lim), account, dim, d0, d1)
	if err != nil {
		return nil, fmt.Errorf("postgres: top links: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.LinkStat, error) {
		var id, url string
		var clicks, uniq, machine, delivered int64
		var first, last *int64
		if err := row.Scan(&id, &url, &clicks, &uniq, &machine, &first, &last, &delivered); err != nil {
			return store.LinkStat{}, err
		}
		st := statOf(clicks, uniq, machine, first, last)
		st.ID, st.URL, st.Delivered = id, url, uint64(delivered)
		return st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: top links: %w", err)
	}
	return nilIfEmpty(out), nil
}

// LinkMessages implements store.DB.
func (d *DB) LinkMessages(ctx context.Context, account, linkID string, limit int) ([]uint64, error) {
	if err := store.ParseLinkID(linkID); err != nil {
		return nil, err
	}
	lim := "ALL"
	if limit > 0 {
		lim = fmt.Sprint(limit)
	}
	d.flushCarried(ctx)
	rows, err := d.pool.Query(ctx, `SELECT message FROM link_msgs WHERE account = $1 AND link = $2 ORDER BY message DESC LIMIT `+lim, account, linkID)
	if err != nil {
		return nil, fmt.Errorf("postgres: link messages: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("postgres: link messages: %w", err)
	}
	var out []uint64
	for _, id := range ids {
		out = append(out, uint64(id))
	}
	return out, nil
}

// LinkSeries implements store.DB.
func (d *DB) LinkSeries(ctx context.Context, account, dim, linkID string, from, to time.Time) (string, []store.LinkDay, error) {
	if err := store.ParseLinkID(linkID); err != nil {
		return "", nil, err
	}
	var url string
	err := d.pool.QueryRow(ctx, `SELECT url FROM link_names WHERE account = $1 AND link = $2`, account, linkID).Scan(&url)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", nil, fmt.Errorf("postgres: link series: %w", err)
	}
	d0, d1 := linkDays(from, to)
	if d1-d0 > 100000 {
		return "", nil, errors.New("store: period too long")
	}
	rows, err := d.pool.Query(ctx, `SELECT day, sum(clicks)::bigint, sum(uniq)::bigint, sum(machine)::bigint FROM link_days
		WHERE account = $1 AND dim = $2 AND link = $3 AND day >= $4 AND day < $5 GROUP BY day`, account, dim, linkID, d0, d1)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: link series: %w", err)
	}
	by := map[int32][3]int64{}
	for rows.Next() {
		var day int32
		var v [3]int64
		if err := rows.Scan(&day, &v[0], &v[1], &v[2]); err != nil {
			rows.Close()
			return "", nil, err
		}
		by[day] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", nil, fmt.Errorf("postgres: link series: %w", err)
	}
	var days []store.LinkDay
	for day := d0; day < d1; day++ {
		v := by[day]
		st := statOf(v[0], v[1], v[2], nil, nil)
		days = append(days, store.LinkDay{Day: time.Unix(int64(day)*86400, 0).UTC(), Clicks: st.Clicks, UniqueClicks: st.UniqueClicks, MachineClicks: st.MachineClicks})
	}
	return url, days, nil
}

// MessageLinks implements store.DB.
func (d *DB) MessageLinks(ctx context.Context, message uint64) ([]store.LinkStat, error) {
	c, err := d.MessageCounters(ctx, message)
	if err != nil {
		return nil, err
	}
	rows, err := d.pool.Query(ctx, `SELECT l.position, l.url, COALESCE(s.clicks, 0), COALESCE(s.uniq, 0), COALESCE(s.machine, 0), s.first, s.last
		FROM msg_links l LEFT JOIN msg_link_stats s ON s.message = l.message AND s.position = l.position
		WHERE l.message = $1 ORDER BY l.position`, i64(message))
	if err != nil {
		return nil, fmt.Errorf("postgres: message links: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.LinkStat, error) {
		var pos int32
		var url string
		var clicks, uniq, machine int64
		var first, last *int64
		if err := row.Scan(&pos, &url, &clicks, &uniq, &machine, &first, &last); err != nil {
			return store.LinkStat{}, err
		}
		st := statOf(clicks, uniq, machine, first, last)
		p := int(uint32(pos))
		st.URL, st.ID, st.Position, st.Delivered = url, store.LinkID(url), &p, c[store.Delivered]
		return st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: message links: %w", err)
	}
	return nilIfEmpty(out), nil
}

// topLinksSQL is TopLinks' query for a LIMIT (a number or ALL).
func topLinksSQL(lim string) string {
	return `WITH s AS (
			SELECT link, sum(clicks)::bigint AS clicks, sum(uniq)::bigint AS uniq, sum(machine)::bigint AS machine,
				min(first) AS first, max(last) AS last
			FROM link_days WHERE account = $1 AND dim = $2 AND day >= $3 AND day < $4 GROUP BY link
			ORDER BY uniq DESC, clicks DESC, machine DESC, link LIMIT ` + lim + `),
		dl AS MATERIALIZED (
			SELECT link, sum(GREATEST(n, 0))::bigint AS delivered FROM link_carried
			WHERE account = $1 AND dim = $2 AND day >= $3 AND day < $4 AND link IN (SELECT link FROM s) GROUP BY link)
		SELECT s.link, COALESCE(n.url, ''), s.clicks, s.uniq, s.machine, s.first, s.last, COALESCE(dl.delivered, 0)
		FROM s LEFT JOIN link_names n ON n.account = $1 AND n.link = s.link LEFT JOIN dl ON dl.link = s.link
		ORDER BY s.uniq DESC, s.clicks DESC, s.machine DESC, s.link`
}
