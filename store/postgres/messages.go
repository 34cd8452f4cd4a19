package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// clean makes text fit a text column (no NUL bytes); the JSON value keeps
// the original.
func clean(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "")
}

func cleanAll(ss []string, norm bool) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		if norm {
			s = store.NormalAddress(s)
		}
		out[i] = clean(s)
	}
	return out
}

func messageArgs(m *store.Message) ([]any, error) {
	v, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("postgres: message: %w", err)
	}
	tags := m.Tags
	if tags == nil {
		tags = []string{}
	}
	return []any{i64(m.ID), clean(m.Account), clean(m.Node), clean(m.SpoolPath), m.Remaining, clean(m.Subject), clean(m.From),
		clean(m.HeaderFrom), cleanAll(tags, false), cleanAll(m.Recipients, true), v}, nil
}

const sqlPutMessage = `INSERT INTO messages (id, account, node, spool, remaining, subject, sender, header_from, tags, recipients, data)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
	ON CONFLICT (id) DO UPDATE SET account = excluded.account, node = excluded.node, spool = excluded.spool,
	remaining = excluded.remaining, subject = excluded.subject, sender = excluded.sender, header_from = excluded.header_from,
	tags = excluded.tags, recipients = excluded.recipients, data = excluded.data`

const sqlPutCopy = `INSERT INTO copies (id, message, account, recipient, queued, data) VALUES ($1, $2, $3, $4, $5, $6)
	ON CONFLICT (id) DO UPDATE SET message = excluded.message, account = excluded.account, recipient = excluded.recipient,
	queued = excluded.queued, data = excluded.data`

func copyArgs(c *store.Copy, queued bool) ([]any, error) {
	v, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("postgres: copy: %w", err)
	}
	return []any{i64(c.ID), i64(c.MessageID), clean(c.Account), clean(store.NormalAddress(c.Recipient)), queued, v}, nil
}

// AddMessage implements store.DB: the message is this node's (its Node is
// set when empty), committed after the before-commit hook has run.
func (d *DB) AddMessage(ctx context.Context, m *store.Message, copies []*store.Copy, events []store.Event) error {
	if m.Account == "" && len(copies) > 0 {
		m.Account = copies[0].Account
	}
	if m.Node == "" {
		m.Node = d.node
	}
	if len(m.CopyIDs) == 0 {
		for _, c := range copies {
			m.CopyIDs = append(m.CopyIDs, c.ID)
		}
	}
	margs, err := messageArgs(m)
	if err != nil {
		return err
	}
	events = slices.Clone(events)
	store.JoinEvents(events, copies...)
	cargs := make([][]any, len(copies))
	for i, c := range copies {
		if c.MessageID != m.ID || c.State != store.CopyQueued {
			return fmt.Errorf("store: copy %s: must be queued and belong to message %s", store.FormatID(c.ID), store.FormatID(m.ID))
		}
		if cargs[i], err = copyArgs(c, true); err != nil {
			return err
		}
	}
	evs, err := store.PrepareEvents(events)
	if err != nil {
		return err
	}
	if err := d.ensurePartitions(ctx, evs); err != nil {
		return err
	}
	if err := d.runHook(); err != nil {
		return fmt.Errorf("store: before commit: %w", err)
	}
	return d.write(ctx, func(tx pgx.Tx) error {
		var pb pgx.Batch
		pb.Queue(sqlPutMessage, margs...)
		for _, a := range cargs {
			pb.Queue(sqlPutCopy, a...)
		}
		if err := tx.SendBatch(ctx, &pb).Close(); err != nil {
			return fmt.Errorf("postgres: message: %w", err)
		}
		b := d.newBatch()
		if err := b.putEvents(ctx, tx, evs, false); err != nil {
			return err
		}
		return b.flush(ctx, tx)
	})
}

// UpdateCopy implements store.DB.
func (d *DB) UpdateCopy(ctx context.Context, c *store.Copy, events []store.Event) (last bool, err error) {
	if c.State == store.CopyDelivered && c.Delivered.IsZero() {
		c.Delivered = time.Now().UTC()
	}
	events = slices.Clone(events)
	store.JoinEvents(events, c)
	cargs, err := copyArgs(c, !c.Final())
	if err != nil {
		return false, err
	}
	evs, err := store.PrepareEvents(events)
	if err != nil {
		return false, err
	}
	if err := d.ensurePartitions(ctx, evs); err != nil {
		return false, err
	}
	delivered := false
	err = d.write(ctx, func(tx pgx.Tx) error {
		last, delivered = false, false
		// Only a copy still queued changes: a final one (or an unknown
		// one) is left as it was, so a retried commit is harmless.
		tag, err := tx.Exec(ctx, `UPDATE copies SET message = $2, account = $3, recipient = $4, queued = $5, data = $6 WHERE id = $1 AND queued`, cargs...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		b := d.newBatch()
		if err := b.putEvents(ctx, tx, evs, false); err != nil {
			return err
		}
		if err := b.flush(ctx, tx); err != nil {
			return err
		}
		if !c.Final() {
			return nil
		}
		delivered = c.State == store.CopyDelivered
		// The message's remaining count lives in its column (its JSON's
		// copy is not read back).
		var remaining int
		err = tx.QueryRow(ctx, `UPDATE messages SET remaining = GREATEST(remaining - 1, 0) WHERE id = $1 RETURNING remaining`,
			i64(c.MessageID)).Scan(&remaining)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		last = remaining == 0
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("postgres: update copy: %w", err)
	}
	if delivered {
		d.carried.Add(c, 1)
	}
	return last, nil
}

// Message implements store.DB.
func (d *DB) Message(ctx context.Context, id uint64) (*store.Message, error) {
	var v []byte
	var remaining int
	err := d.pool.QueryRow(ctx, `SELECT remaining, data FROM messages WHERE id = $1`, i64(id)).Scan(&remaining, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: message %s", store.ErrNotFound, store.FormatID(id))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: message: %w", err)
	}
	var m store.Message
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("postgres: message %s: %w", store.FormatID(id), err)
	}
	m.Remaining = remaining
	return &m, nil
}

// Copy implements store.DB.
func (d *DB) Copy(ctx context.Context, id uint64) (*store.Copy, error) {
	var v []byte
	err := d.pool.QueryRow(ctx, `SELECT data FROM copies WHERE id = $1`, i64(id)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: copy %s", store.ErrNotFound, store.FormatID(id))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: copy: %w", err)
	}
	var c store.Copy
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("postgres: copy %s: %w", store.FormatID(id), err)
	}
	return &c, nil
}

// QueuedCopies implements store.DB: the copies not yet final of this
// node's messages, in id order.
func (d *DB) QueuedCopies(ctx context.Context, fn func(*store.Copy) error) error {
	last := int64(-1 << 63)
	for {
		rows, err := d.pool.Query(ctx, `SELECT c.id, c.data FROM copies c JOIN messages m ON m.id = c.message
			WHERE c.queued AND m.node = $1 AND c.id > $2 ORDER BY c.id LIMIT 1000`, d.node, last)
		if err != nil {
			return fmt.Errorf("postgres: queued copies: %w", err)
		}
		var cs []*store.Copy
		for rows.Next() {
			var v []byte
			if err := rows.Scan(&last, &v); err != nil {
				rows.Close()
				return err
			}
			var c store.Copy
			if err := json.Unmarshal(v, &c); err != nil {
				rows.Close()
				return fmt.Errorf("postgres: copy %s: %w", store.FormatID(uint64(last)), err)
			}
			cs = append(cs, &c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres: queued copies: %w", err)
		}
		for _, c := range cs {
			if err := fn(c); err != nil {
				return err
			}
		}
		if len(cs) < 1000 {
			return nil
		}
	}
}

// SpoolFiles implements store.DB: this node's messages with copies left.
func (d *DB) SpoolFiles(ctx context.Context, fn func(name string)) error {
	rows, err := d.pool.Query(ctx, `SELECT spool FROM messages WHERE node = $1 AND remaining > 0`, d.node)
	if err != nil {
		return fmt.Errorf("postgres: spool files: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("postgres: spool files: %w", err)
	}
	for _, n := range names {
		fn(n)
	}
	return nil
}

// SearchMessages implements store.DB.
func (d *DB) SearchMessages(ctx context.Context, q store.MessageQuery) ([]store.Message, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 100
	}
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if q.ID != 0 {
		conds = append(conds, "(id = "+arg(i64(q.ID))+" OR id = (SELECT message FROM copies WHERE id = $1))")
	} else {
		lo, hi := store.IDRange(q.From, q.To)
		conds = append(conds, "id >= "+arg(i64(lo)))
		if hi != ^uint64(0) {
			conds = append(conds, "id < "+arg(i64(hi)))
		}
		if q.Tag != "" {
			conds = append(conds, arg(q.Tag)+" = ANY(tags)")
		}
		if q.Subject != "" {
			conds = append(conds, "strpos(lower(subject), "+arg(strings.ToLower(q.Subject))+") > 0")
		}
		if q.Sender != "" {
			s := arg(strings.ToLower(q.Sender))
			conds = append(conds, "(strpos(lower(sender), "+s+") > 0 OR strpos(lower(header_from), "+s+") > 0)")
		}
		if q.Recipient != "" {
			conds = append(conds, arg(clean(store.NormalAddress(q.Recipient)))+" = ANY(recipients)")
		}
	}
	if q.Account != store.AllAccounts {
		conds = append(conds, "account = "+arg(q.Account))
	}
	rows, err := d.pool.Query(ctx, `SELECT remaining, data FROM messages WHERE `+strings.Join(conds, " AND ")+
		` ORDER BY id DESC LIMIT `+arg(q.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: search: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Message, error) {
		var m store.Message
		var v []byte
		if err := row.Scan(&m.Remaining, &v); err != nil {
			return m, err
		}
		r := m.Remaining
		err := json.Unmarshal(v, &m)
		m.Remaining = r
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: search: %w", err)
	}
	return nilIfEmpty(out), nil
}
