package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

const whCols = `id, endpoint, account, type, payload, created, attempts, next_attempt, state, last_status, last_error, recipient`

const sqlPutWebhook = `INSERT INTO wh_msgs (` + whCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

func whArgs(m *store.WebhookMessage) []any {
	payload := m.Payload
	if payload == nil {
		payload = []byte{}
	}
	return []any{m.ID, m.Endpoint, m.Account, m.Type, payload, nsOf(m.Created), m.Attempts, nsOf(m.NextAttempt),
		m.State, m.LastStatus, clean(m.LastError), m.Recipient}
}

func queueWebhooks(pb *pgx.Batch, ms []store.WebhookMessage) {
	for i := range ms {
		pb.Queue(sqlPutWebhook, whArgs(&ms[i])...)
	}
}

func scanWebhook(row pgx.CollectableRow) (store.WebhookMessage, error) {
	var m store.WebhookMessage
	var created, next int64
	err := row.Scan(&m.ID, &m.Endpoint, &m.Account, &m.Type, &m.Payload, &created, &m.Attempts, &next, &m.State, &m.LastStatus, &m.LastError, &m.Recipient)
	m.Created, m.NextAttempt = timeOf(created), timeOf(next)
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	return m, err
}

// ClaimWebhooks implements store.DB: the due messages are locked with
// FOR UPDATE SKIP LOCKED, so workers on several nodes claim different
// ones without waiting for each other, and leased until now+lease.
func (d *DB) ClaimWebhooks(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.WebhookMessage, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []store.WebhookMessage
	err := d.write(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH c AS (
				SELECT id, next_attempt AS due FROM wh_msgs WHERE state = 'pending' AND next_attempt <= $1
				ORDER BY next_attempt, id LIMIT $3 FOR UPDATE SKIP LOCKED)
			UPDATE wh_msgs w SET next_attempt = $2 FROM c WHERE w.id = c.id
			RETURNING c.due, `+prefixed("w.", whCols), nsOf(now), nsOf(now.Add(lease)), limit)
		if err != nil {
			return err
		}
		type claimed struct {
			due int64
			m   store.WebhookMessage
		}
		cs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (claimed, error) {
			var c claimed
			var created, next int64
			m := &c.m
			err := row.Scan(&c.due, &m.ID, &m.Endpoint, &m.Account, &m.Type, &m.Payload, &created, &m.Attempts, &next, &m.State, &m.LastStatus, &m.LastError, &m.Recipient)
			m.Created, m.NextAttempt = timeOf(created), timeOf(next)
			return c, err
		})
		if err != nil {
			return err
		}
		slices.SortFunc(cs, func(a, b claimed) int { return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.m.ID, b.m.ID)) })
		out = out[:0]
		for _, c := range cs {
			out = append(out, c.m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: claim webhooks: %w", err)
	}
	return out, nil
}

func prefixed(p, cols string) string {
	out := ""
	for i, c := range splitCols(cols) {
		if i > 0 {
			out += ", "
		}
		out += p + c
	}
	return out
}

func splitCols(cols string) []string {
	var out []string
	cur := ""
	for _, r := range cols {
		switch r {
		case ',':
			out = append(out, cur)
			cur = ""
		case ' ':
		default:
			cur += string(r)
		}
	}
	return append(out, cur)
}

// NextWebhookDue implements store.DB.
func (d *DB) NextWebhookDue(ctx context.Context) (time.Time, bool, error) {
	var ns *int64
	if err := d.pool.QueryRow(ctx, `SELECT min(next_attempt) FROM wh_msgs WHERE state = 'pending'`).Scan(&ns); err != nil {
		return time.Time{}, false, fmt.Errorf("postgres: next webhook: %w", err)
	}
	if ns == nil {
		return time.Time{}, false, nil
	}
	return timeOf(*ns), true, nil
}

// FinishWebhookAttempt implements store.DB.
func (d *DB) FinishWebhookAttempt(ctx context.Context, id string, a store.WebhookAttempt, state string, next time.Time) error {
	av, err := json.Marshal(&a)
	if err != nil {
		return err
	}
	err = d.write(ctx, func(tx pgx.Tx) error {
		var n int
		err := tx.QueryRow(ctx, `UPDATE wh_msgs SET attempts = attempts + 1, state = $2, next_attempt = $3, last_status = $4, last_error = $5
			WHERE id = $1 RETURNING attempts`, id, state, nsOf(next), a.Status, clean(a.Error)).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: webhook message %s", store.ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO wh_attempts (message, n, data) VALUES ($1, $2, $3)
			ON CONFLICT (message, n) DO UPDATE SET data = excluded.data`, id, n, av)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("postgres: webhook attempt: %w", err)
	}
	return err
}

// QueueWebhook implements store.DB.
func (d *DB) QueueWebhook(ctx context.Context, m store.WebhookMessage) error {
	if m.ID == "" {
		m.ID = d.newWebhookID()
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	m.State, m.NextAttempt = store.WebhookPending, m.Created
	err := d.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, sqlPutWebhook, whArgs(&m)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: queue webhook: %w", err)
	}
	return nil
}

// ResendWebhook implements store.DB.
func (d *DB) ResendWebhook(ctx context.Context, account, id string) error {
	err := d.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE wh_msgs SET state = 'pending', next_attempt = $3 WHERE id = $1 AND account = $2`,
			id, account, time.Now().UnixNano())
		if err == nil && tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: webhook message %s", store.ErrNotFound, id)
		}
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("postgres: resend webhook: %w", err)
	}
	return err
}

// WebhookMessage implements store.DB.
func (d *DB) WebhookMessage(ctx context.Context, id string) (*store.WebhookMessage, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+whCols+` FROM wh_msgs WHERE id = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook message: %w", err)
	}
	ms, err := pgx.CollectRows(rows, scanWebhook)
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook message: %w", err)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("%w: webhook message %s", store.ErrNotFound, id)
	}
	return &ms[0], nil
}

// WebhookMessages implements store.DB.
func (d *DB) WebhookMessages(ctx context.Context, endpoint, state, before string, limit int) ([]store.WebhookMessage, error) {
	lim := "ALL"
	if limit > 0 {
		lim = fmt.Sprint(limit)
	}
	q := `SELECT ` + whCols + ` FROM wh_msgs WHERE endpoint = $1 AND ($2 = '' OR state = $2) AND ($3 = '' OR id < $3)
		ORDER BY id DESC LIMIT ` + lim
	rows, err := d.pool.Query(ctx, q, endpoint, state, before)
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook messages: %w", err)
	}
	ms, err := pgx.CollectRows(rows, scanWebhook)
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook messages: %w", err)
	}
	return nilIfEmpty(ms), nil
}

// WebhookAttempts implements store.DB.
func (d *DB) WebhookAttempts(ctx context.Context, id string) ([]store.WebhookAttempt, error) {
	rows, err := d.pool.Query(ctx, `SELECT data FROM wh_attempts WHERE message = $1 ORDER BY n`, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook attempts: %w", err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook attempts: %w", err)
	}
	var out []store.WebhookAttempt
	for _, v := range vs {
		var a store.WebhookAttempt
		if err := json.Unmarshal(v, &a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// WebhookQueue implements store.DB.
func (d *DB) WebhookQueue(ctx context.Context) ([]store.WebhookQueueStat, error) {
	rows, err := d.pool.Query(ctx, `SELECT endpoint, min(account), count(*), min(created), min(next_attempt) AS due FROM wh_msgs
		WHERE state = 'pending' GROUP BY endpoint ORDER BY due, endpoint`)
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook queue: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.WebhookQueueStat, error) {
		var s store.WebhookQueueStat
		var oldest, due int64
		err := row.Scan(&s.Endpoint, &s.Account, &s.Depth, &oldest, &due)
		s.Oldest = timeOf(oldest)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook queue: %w", err)
	}
	return out, nil
}

// nsOf and timeOf keep a time as Unix nanoseconds, the zero time as the
// smallest bigint (its UnixNano is not defined).
func nsOf(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

func timeOf(ns int64) time.Time {
	if ns == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
