package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// LoadStats counts what Load copied.
type LoadStats struct {
	Records, Messages, Copies, Events, Hits, Aggregates, Addresses, Webhooks int
}

// Load copies a dump (store.Relay.Dump) into the database in one
// transaction: all of it or nothing. The database must hold no messages,
// events or aggregates yet (records, such as those a node synced from its
// config file, are replaced by the dump's). Messages of no node become
// this node's: run the copy with the configuration of the node that
// takes over the old spool folder.
func (d *DB) Load(ctx context.Context, dump func(fn func(item any) error) error) (LoadStats, error) {
	var st LoadStats
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		st = LoadStats{}
		var busy bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM agg)
			OR EXISTS (SELECT 1 FROM hit_ids)`).Scan(&busy); err != nil {
			return err
		}
		if busy {
			return errors.New("the database holds messages, events or hits already: copy into a new one")
		}
		l := &loader{tx: tx, d: d, st: &st, parts: map[int64]bool{}, days: map[[3]string]int64{}, rows: map[string][][]any{}}
		if err := dump(func(it any) error { return l.item(ctx, it) }); err != nil {
			return err
		}
		return l.finish(ctx)
	})
	if err != nil {
		return LoadStats{}, fmt.Errorf("postgres: load: %w", err)
	}
	d.forgetPartitions()
	return st, nil
}

type loader struct {
	tx    pgx.Tx
	d     *DB
	st    *LoadStats
	parts map[int64]bool
	days  map[[3]string]int64
	rows  map[string][][]any // table -> rows waiting for COPY
}

var loadCols = map[string][]string{
	"records":        {"kind", "key", "account", "value"},
	"messages":       {"id", "account", "node", "spool", "remaining", "subject", "sender", "header_from", "tags", "recipients", "data"},
	"copies":         {"id", "message", "account", "recipient", "queued", "data"},
	"events":         {"t", "account", "log", "id", "recipient", "rcpt", "tags", "fields", "key"},
	"event_keys":     {"account", "log", "key", "t"},
	"hit_ids":        {"id", "t", "account", "log", "orphan"},
	"hit_uniq":       {"copy", "k"},
	"agg":            append([]string{"account", "dim", "hour", "shard"}, store.MetricNames[:]...),
	"totals":         append([]string{"account", "shard"}, store.MetricNames[:]...),
	"msg_stats":      append([]string{"message"}, store.MetricNames[:]...),
	"link_days":      {"account", "dim", "day", "link", "shard", "clicks", "uniq", "machine", "first", "last"},
	"msg_link_stats": {"message", "position", "clicks", "uniq", "machine", "first", "last"},
	"link_names":     {"account", "link", "url"},
	"link_msgs":      {"account", "link", "message"},
	"link_carried":   {"account", "dim", "day", "link", "n"},
	"msg_links":      {"message", "position", "url"},
	"addr_lists":     {"list", "account", "address", "data"},
	"wh_msgs":        {"id", "endpoint", "account", "type", "payload", "created", "attempts", "next_attempt", "state", "last_status", "last_error", "recipient"},
	"wh_attempts":    {"message", "n", "data"},
	"counters":       {"name", "shard", "n"},
	"event_days":     {"account", "day", "log", "shard", "n"},
}

// loadOrder is the order tables are written in at the end.
var loadOrder = []string{"messages", "copies", "events", "event_keys", "hit_ids", "hit_uniq", "agg", "totals", "msg_stats", "link_days",
	"msg_link_stats", "link_names", "link_msgs", "link_carried", "msg_links", "addr_lists", "wh_msgs", "wh_attempts", "counters", "event_days"}

func (l *loader) add(table string, row ...any) {
	l.rows[table] = append(l.rows[table], row)
}

func counterRow(pre []any, c store.Counters) []any {
	for _, v := range c {
		pre = append(pre, int64(v))
	}
	return pre
}

func (l *loader) item(ctx context.Context, it any) error {
	switch v := it.(type) {
	case store.RawRecord:
		if _, err := l.tx.Exec(ctx, `INSERT INTO records (kind, key, account, value) VALUES ($1, $2, $3, $4)
			ON CONFLICT (kind, key) DO UPDATE SET account = excluded.account, value = excluded.value`, string(v.Kind), v.Key, v.Account, v.Value); err != nil {
			return err
		}
		l.st.Records++
	case store.Message:
		if v.Node == "" {
			v.Node = l.d.node
		}
		args, err := messageArgs(&v)
		if err != nil {
			return err
		}
		l.add("messages", args...)
		l.st.Messages++
	case store.DumpCopy:
		args, err := copyArgs(&v.Copy, v.Queued)
		if err != nil {
			return err
		}
		l.add("copies", args...)
		l.st.Copies++
	case store.DumpEvent:
		evs, err := store.PrepareEvents([]store.Event{v.Event})
		if err != nil {
			return err
		}
		e := &evs[0]
		day := e.Time.UnixNano() / (86400 * 1e9)
		if !l.parts[day] {
			if _, err := l.tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF events FOR VALUES FROM (%d) TO (%d)`,
				partName(day), day*86400*1e9, (day+1)*86400*1e9)); err != nil {
				return err
			}
			l.parts[day] = true
		}
		f, err := encodeFields(e.Fields)
		if err != nil {
			return err
		}
		if f == nil {
			f = []byte{}
		}
		var key []byte
		if e.Key != "" {
			key = []byte(e.Key)
			if v.Hit {
				l.add("hit_ids", key, e.Time.UnixNano(), e.Account, e.Log, nil)
			} else {
				l.add("event_keys", e.Account, e.Log, key, e.Time.UnixNano())
			}
		}
		tags := e.Tags
		if tags == nil {
			tags = []string{}
		}
		l.add("events", e.Time.UnixNano(), e.Account, e.Log, i64(e.ID), e.Recipient, strings.ToLower(e.Recipient), tags, f, key)
		l.days[[3]string{e.Account, e.Time.UTC().Format(time.DateOnly), e.Log}]++
		l.st.Events++
	case store.DumpOrphan:
		raw, err := json.Marshal(&v.Hit)
		if err != nil {
			return err
		}
		t := v.Hit.Time.UnixNano()
		if ht, ok := store.HitIDTime(v.Hit.ID); ok {
			t = ht.UnixNano()
		}
		l.add("hit_ids", []byte(v.Hit.ID), t, nil, nil, raw)
		l.st.Hits++
	case store.DumpOrphanCount:
		l.add("counters", "orphans", int16(0), int64(v.N))
	case store.DumpUniq:
		l.add("hit_uniq", i64(v.Copy), v.Key)
	case store.DumpCounters:
		switch v.Table {
		case "agg":
			l.add("agg", counterRow([]any{v.Account, v.Dim, int32(v.Hour), int16(0)}, v.Counters)...)
		case "totals":
			l.add("totals", counterRow([]any{v.Account, int16(0)}, v.Counters)...)
		case "msg":
			l.add("msg_stats", counterRow([]any{i64(v.Message)}, v.Counters)...)
		}
		l.st.Aggregates++
	case store.DumpLinkCounts:
		switch v.Table {
		case "link-carried":
			l.add("link_carried", v.Account, v.Dim, int32(v.Day), v.Link, int64(v.Carried))
		case "link-days":
			l.add("link_days", v.Account, v.Dim, int32(v.Day), v.Link, int16(0), int64(v.Clicks), int64(v.Unique), int64(v.Machine), nullNS(v.First), nullNS(v.Last))
		default:
			l.add("msg_link_stats", i64(v.Message), int32(v.Position), int64(v.Clicks), int64(v.Unique), int64(v.Machine), nullNS(v.First), nullNS(v.Last))
		}
		l.st.Aggregates++
	case store.DumpLinkName:
		l.add("link_names", v.Account, v.Link, clean(v.URL))
	case store.DumpLinkMessage:
		l.add("link_msgs", v.Account, v.Link, i64(v.Message))
	case store.DumpMessageLink:
		l.add("msg_links", i64(v.Message), int32(v.Position), clean(v.URL))
	case store.AddressEntry:
		raw, err := json.Marshal(&v)
		if err != nil {
			return err
		}
		l.add("addr_lists", v.List, v.Account, clean(v.Address), raw)
		l.st.Addresses++
	case store.WebhookMessage:
		l.add("wh_msgs", whArgs(&v)...)
		l.st.Webhooks++
	case store.DumpAttempt:
		raw, err := json.Marshal(&v.Attempt)
		if err != nil {
			return err
		}
		l.add("wh_attempts", v.Attempt.Message, v.N, raw)
	default:
		return fmt.Errorf("unknown dump item %T", it)
	}
	for table, rows := range l.rows {
		if len(rows) >= 10000 && table != "events" || len(rows) >= 50000 {
			if err := l.flush(ctx, table); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *loader) flush(ctx context.Context, table string) error {
	rows := l.rows[table]
	if len(rows) == 0 {
		return nil
	}
	// Rows wait until the tables they point to are written (copies
	// after messages, and so on): flush those first.
	for _, t := range loadOrder {
		if t == table {
			break
		}
		if len(l.rows[t]) > 0 {
			if err := l.flush(ctx, t); err != nil {
				return err
			}
		}
	}
	if _, err := l.tx.CopyFrom(ctx, pgx.Identifier{table}, loadCols[table], pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("%s: %w", table, err)
	}
	l.rows[table] = nil
	return nil
}

func (l *loader) finish(ctx context.Context) error {
	for k, n := range l.days {
		l.add("event_days", k[0], k[1], k[2], int16(0), n)
	}
	for _, t := range loadOrder {
		if err := l.flush(ctx, t); err != nil {
			return err
		}
	}
	_, err := l.tx.Exec(ctx, `UPDATE meta SET n = n + 1 WHERE name = 'records_version'`)
	return err
}
