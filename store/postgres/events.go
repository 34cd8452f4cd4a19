package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/store"
)

// scanChunk is how many events one read of an iterator fetches.
const scanChunk = 512

// batch gathers one transaction's writes beyond the events themselves:
// the aggregates, the day counts and the webhook messages, written at the
// end in one round trip, each table's rows in key order (so transactions
// on several nodes lock rows in the same order and do not deadlock).
type batch struct {
	d         *DB
	shard     int16
	counts    map[aggKey]*[store.NumMetrics]int64
	totals    map[string]*[store.NumMetrics]int64
	msgs      map[uint64]*[store.NumMetrics]int64
	linkDays  map[linkDayKey]*linkCounts
	msgLinks  map[msgPos]*linkCounts
	names     map[[2]string]string // account, link -> URL
	linkMsgs  map[linkMsg]struct{}
	days      map[[3]string]int64 // account, day, log
	webhooks  []store.WebhookMessage
	endpoints map[string][]store.Webhook
}

type aggKey struct {
	account, dim string
	hour         int32
}

type linkDayKey struct {
	account, dim string
	day          int32
	link         string
}

type msgPos struct {
	message uint64
	pos     uint32
}

type linkMsg struct {
	account, link string
	message       uint64
}

type linkCounts struct {
	clicks, unique, machine int64
	first, last             int64 // Unix ns; 0 none
}

func (l *linkCounts) add(o *linkCounts) {
	l.clicks += o.clicks
	l.unique += o.unique
	l.machine += o.machine
	if o.first != 0 && (l.first == 0 || o.first < l.first) {
		l.first = o.first
	}
	if o.last > l.last {
		l.last = o.last
	}
}

func (d *DB) newBatch() *batch {
	return &batch{
		d: d, shard: shard(),
		counts: map[aggKey]*[store.NumMetrics]int64{}, totals: map[string]*[store.NumMetrics]int64{},
		msgs: map[uint64]*[store.NumMetrics]int64{}, linkDays: map[linkDayKey]*linkCounts{},
		msgLinks: map[msgPos]*linkCounts{}, names: map[[2]string]string{}, linkMsgs: map[linkMsg]struct{}{},
		days: map[[3]string]int64{}, endpoints: map[string][]store.Webhook{},
	}
}

func hourOf(t time.Time) int32 { return int32(t.Unix() / 3600) }
func dayOf(t time.Time) int32  { return int32(t.Unix() / 86400) }

// addAll adds n to metric m in every dimension of e, for its account and
// all accounts, and for its message.
func (b *batch) addAll(e *store.Event, m store.Metric, n int64) {
	h := hourOf(e.Time)
	add := func(k aggKey) {
		c := b.counts[k]
		if c == nil {
			c = new([store.NumMetrics]int64)
			b.counts[k] = c
		}
		c[m] += n
	}
	for _, dim := range store.EventDims(e) {
		add(aggKey{e.Account, dim, h})
	}
	add(aggKey{store.AllAccounts, "", h})
	for _, a := range [...]string{e.Account, store.AllAccounts} {
		t := b.totals[a]
		if t == nil {
			t = new([store.NumMetrics]int64)
			b.totals[a] = t
		}
		t[m] += n
	}
	if e.Message != 0 {
		c := b.msgs[e.Message]
		if c == nil {
			c = new([store.NumMetrics]int64)
			b.msgs[e.Message] = c
		}
		c[m] += n
	}
}

// link adds lc to the link aggregates of e's link.
func (b *batch) link(e *store.Event, link *store.EventLink, posKnown bool, lc linkCounts) {
	id := store.LinkID(link.URL)
	day := dayOf(e.Time)
	addTo := func(k linkDayKey) {
		c := b.linkDays[k]
		if c == nil {
			c = new(linkCounts)
			b.linkDays[k] = c
		}
		c.add(&lc)
	}
	addTo(linkDayKey{e.Account, "", day, id})
	for _, t := range e.Tags {
		addTo(linkDayKey{e.Account, store.DimTag(t), day, id})
	}
	if e.Credential != "" {
		addTo(linkDayKey{e.Account, store.DimCredential(e.Credential), day, id})
	}
	addTo(linkDayKey{store.AllAccounts, "", day, id})
	b.names[[2]string{e.Account, id}] = link.URL
	b.names[[2]string{store.AllAccounts, id}] = link.URL
	if e.Message != 0 {
		if posKnown {
			k := msgPos{e.Message, link.Position}
			c := b.msgLinks[k]
			if c == nil {
				c = new(linkCounts)
				b.msgLinks[k] = c
			}
			c.add(&lc)
		}
		b.linkMsgs[linkMsg{e.Account, id, e.Message}] = struct{}{}
		b.linkMsgs[linkMsg{store.AllAccounts, id, e.Message}] = struct{}{}
	}
}

// eventLink is the link an event counts for, and whether its position is
// known (a click appended without one is counted by its URL).
func eventLink(e *store.Event) (*store.EventLink, bool) {
	if e.Link != nil {
		return e.Link, true
	}
	if e.Log == store.LogClicks && e.Fields["url"] != "" {
		return &store.EventLink{URL: e.Fields["url"]}, false
	}
	return nil, false
}

// uniqKeys are the first-hit marks a human open or click may set, in the
// order the aggregator asks for them.
func uniqKeys(e *store.Event) []string {
	m, ok := store.EventMetric(e)
	if !ok || e.ID == 0 || (m != store.Opens && m != store.Clicks) {
		return nil
	}
	if m == store.Opens {
		return []string{"o"}
	}
	link, posKnown := eventLink(e)
	if link == nil {
		return []string{"k"}
	}
	if posKnown {
		return []string{"k", "c" + strconv.FormatUint(uint64(link.Position), 10)}
	}
	return []string{"k", "u" + store.LinkID(link.URL)}
}

type uniqKey struct {
	copy uint64
	k    string
}

// claimUniq inserts the first-hit marks of events and returns those that
// were new (another transaction, on any node, that set one first wins).
func claimUniq(ctx context.Context, tx pgx.Tx, events []store.Event) (map[uniqKey]bool, error) {
	set := map[uniqKey]bool{}
	for i := range events {
		for _, k := range uniqKeys(&events[i]) {
			set[uniqKey{events[i].ID, k}] = false
		}
	}
	if len(set) == 0 {
		return set, nil
	}
	keys := make([]uniqKey, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b uniqKey) int { return cmp.Or(cmp.Compare(i64(a.copy), i64(b.copy)), cmp.Compare(a.k, b.k)) })
	copies, ks := make([]int64, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		copies[i], ks[i] = i64(k.copy), k.k
	}
	rows, err := tx.Query(ctx, `INSERT INTO hit_uniq (copy, k) SELECT * FROM unnest($1::bigint[], $2::text[])
		ON CONFLICT DO NOTHING RETURNING copy, k`, copies, ks)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c int64
		var k string
		if err := rows.Scan(&c, &k); err != nil {
			rows.Close()
			return nil, err
		}
		set[uniqKey{uint64(c), k}] = true
	}
	rows.Close()
	return set, rows.Err()
}

// event counts one stored event; fresh holds the first-hit marks this
// transaction set (each is used by the first event asking for it).
func (b *batch) event(e *store.Event, fresh map[uniqKey]bool) {
	m, ok := store.EventMetric(e)
	if !ok {
		return
	}
	b.addAll(e, m, 1)
	link, posKnown := eventLink(e)
	if m != store.Opens && m != store.Clicks || e.ID == 0 {
		if m == store.MachineClicks && link != nil {
			b.link(e, link, posKnown, linkCounts{machine: 1})
		}
		return
	}
	first := func(k string) bool {
		uk := uniqKey{e.ID, k}
		if fresh[uk] {
			fresh[uk] = false
			return true
		}
		return false
	}
	if m == store.Opens {
		if first("o") {
			b.addAll(e, store.UniqueOpens, 1)
		}
		return
	}
	if first("k") {
		b.addAll(e, store.UniqueClicks, 1)
	}
	if link == nil {
		return
	}
	ns := e.Time.UnixNano()
	lc := linkCounts{clicks: 1, first: ns, last: ns}
	ks := uniqKeys(e)
	if first(ks[1]) {
		lc.unique = 1
	}
	b.link(e, link, posKnown, lc)
}

// sqlEndpoints reads the webhook endpoints of some accounts.
const sqlEndpoints = `SELECT account, value FROM records WHERE kind = 'webhook' AND account = ANY($1) ORDER BY key`

// missingEndpoints lists the accounts of events whose endpoints are not
// loaded yet.
func (b *batch) missingEndpoints(events []store.Event) []string {
	var out []string
	for i := range events {
		a := events[i].Account
		if _, ok := b.endpoints[a]; !ok && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// readEndpoints keeps the endpoints rows read for accounts.
func (b *batch) readEndpoints(rows pgx.Rows, accounts []string) error {
	for _, a := range accounts {
		b.endpoints[a] = nil
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		var v []byte
		if err := rows.Scan(&a, &v); err != nil {
			return err
		}
		var w store.Webhook
		if err := json.Unmarshal(v, &w); err != nil {
			return fmt.Errorf("postgres: webhook: %w", err)
		}
		b.endpoints[a] = append(b.endpoints[a], w)
	}
	return rows.Err()
}

// webhook queues e's webhook messages for the account's endpoints that
// want it (loaded with the events' insert).
func (b *batch) webhook(e *store.Event) error {
	b.webhooks = store.AppendWebhookMessages(b.webhooks, e, b.endpoints[e.Account], b.d.newWebhookID)
	return nil
}

// newWebhookID makes a webhook message id unique across nodes.
func (d *DB) newWebhookID() string { return "msg_" + store.FormatID(d.ids.Next()) }

// encodeFields writes an event's fields as stored.
func encodeFields(f map[string]string) ([]byte, error) {
	if len(f) == 0 {
		return nil, nil
	}
	return json.Marshal(f)
}

// putEvents stores prepared events in tx with everything they feed.
// Events with a Key already stored (or twice in events) are skipped,
// unless hits is set: then the caller has de-duplicated them by hit id.
func (b *batch) putEvents(ctx context.Context, tx pgx.Tx, events []store.Event, hits bool) error {
	if len(events) == 0 {
		return nil
	}
	if !hits {
		var err error
		if events, err = dedupKeys(ctx, tx, events); err != nil {
			return err
		}
		if len(events) == 0 {
			return nil
		}
	}
	rows := make([][]any, len(events))
	for i := range events {
		e := &events[i]
		f, err := encodeFields(e.Fields)
		if err != nil {
			return fmt.Errorf("postgres: event: %w", err)
		}
		if f == nil {
			f = []byte{}
		}
		var key []byte
		if e.Key != "" {
			key = []byte(e.Key)
		}
		tags := e.Tags
		if tags == nil {
			tags = []string{}
		}
		rows[i] = []any{e.Time.UnixNano(), e.Account, e.Log, i64(e.ID), e.Recipient, strings.ToLower(e.Recipient), tags, f, key}
		b.days[[3]string{e.Account, e.Time.UTC().Format(time.DateOnly), e.Log}]++
	}
	cols := []string{"t", "account", "log", "id", "recipient", "rcpt", "tags", "fields", "key"}
	missing := b.missingEndpoints(events)
	if len(rows) >= 32 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events"}, cols, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("postgres: events: %w", err)
		}
		if len(missing) > 0 {
			rs, err := tx.Query(ctx, sqlEndpoints, missing)
			if err != nil {
				return err
			}
			if err := b.readEndpoints(rs, missing); err != nil {
				return err
			}
		}
	} else {
		var sb strings.Builder
		sb.WriteString(`INSERT INTO events (t, account, log, id, recipient, rcpt, tags, fields, key) VALUES `)
		args := make([]any, 0, 9*len(rows))
		for i, r := range rows {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('(')
			for j := range r {
				if j > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprintf(&sb, "$%d", len(args)+j+1)
			}
			sb.WriteByte(')')
			args = append(args, r...)
		}
		// One round trip: the insert and the endpoints it may need.
		var pb pgx.Batch
		pb.Queue(sb.String(), args...)
		if len(missing) > 0 {
			pb.Queue(sqlEndpoints, missing)
		}
		br := tx.SendBatch(ctx, &pb)
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("postgres: events: %w", err)
		}
		if len(missing) > 0 {
			rs, err := br.Query()
			if err == nil {
				err = b.readEndpoints(rs, missing)
			}
			if err != nil {
				br.Close()
				return err
			}
		}
		if err := br.Close(); err != nil {
			return fmt.Errorf("postgres: events: %w", err)
		}
	}
	fresh, err := claimUniq(ctx, tx, events)
	if err != nil {
		return fmt.Errorf("postgres: unique hits: %w", err)
	}
	for i := range events {
		b.event(&events[i], fresh)
		if err := b.webhook(&events[i]); err != nil {
			return err
		}
	}
	return nil
}

// dedupKeys drops the events whose Key is stored already (or came
// earlier in events), storing the new keys.
func dedupKeys(ctx context.Context, tx pgx.Tx, events []store.Event) ([]store.Event, error) {
	type k3 struct{ account, log, key string }
	first := map[k3]int{}
	var accts, logs []string
	var keys [][]byte
	var ts []int64
	for i := range events {
		e := &events[i]
		if e.Key == "" {
			continue
		}
		k := k3{e.Account, e.Log, e.Key}
		if _, ok := first[k]; ok {
			continue
		}
		first[k] = i
		accts, logs, keys, ts = append(accts, e.Account), append(logs, e.Log), append(keys, []byte(e.Key)), append(ts, e.Time.UnixNano())
	}
	if len(first) == 0 {
		return events, nil
	}
	rows, err := tx.Query(ctx, `INSERT INTO event_keys (account, log, key, t)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[]) ORDER BY 1, 2, 3
		ON CONFLICT DO NOTHING RETURNING account, log, key`, accts, logs, keys, ts)
	if err != nil {
		return nil, fmt.Errorf("postgres: event keys: %w", err)
	}
	fresh := map[k3]bool{}
	for rows.Next() {
		var a, l string
		var key []byte
		if err := rows.Scan(&a, &l, &key); err != nil {
			rows.Close()
			return nil, err
		}
		fresh[k3{a, l, string(key)}] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := events[:0:0]
	for i := range events {
		e := &events[i]
		if e.Key != "" {
			k := k3{e.Account, e.Log, e.Key}
			if !fresh[k] || first[k] != i {
				continue
			}
		}
		out = append(out, *e)
	}
	return out, nil
}

var metricCols = func() string {
	return strings.Join(store.MetricNames[:], ", ")
}()

// counterUpsert is the statement that adds counter rows to table, keyed
// by keyCols (whose array types are keyTypes).
func counterUpsert(table string, keyCols, keyTypes []string, clamp bool) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s (%s, %s) SELECT * FROM unnest(", table, strings.Join(keyCols, ", "), metricCols)
	n := 0
	for _, t := range keyTypes {
		n++
		fmt.Fprintf(&sb, "$%d::%s[], ", n, t)
	}
	for i := range store.NumMetrics {
		n++
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "$%d::bigint[]", n)
	}
	pk := strings.Join(keyCols, ", ")
	pos := make([]string, len(keyCols))
	for i := range pos {
		pos[i] = strconv.Itoa(i + 1)
	}
	fmt.Fprintf(&sb, ") ORDER BY %s ON CONFLICT (%s) DO UPDATE SET ", strings.Join(pos, ", "), pk)
	for i, m := range store.MetricNames {
		if i > 0 {
			sb.WriteString(", ")
		}
		if clamp {
			fmt.Fprintf(&sb, "%s = GREATEST(0, %s.%s + excluded.%s)", m, table, m, m)
		} else {
			fmt.Fprintf(&sb, "%s = %s.%s + excluded.%s", m, table, m, m)
		}
	}
	return sb.String()
}

var (
	sqlAggUpsert    = counterUpsert("agg", []string{"account", "dim", "hour", "shard"}, []string{"text", "text", "int", "smallint"}, false)
	sqlTotalsUpsert = counterUpsert("totals", []string{"account", "shard"}, []string{"text", "smallint"}, false)
	sqlMsgUpsert    = counterUpsert("msg_stats", []string{"message"}, []string{"bigint"}, true)
)

const sqlLinkDaysUpsert = `INSERT INTO link_days (account, dim, day, link, shard, clicks, uniq, machine, first, last)
	SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::smallint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
	ORDER BY 1, 2, 3, 4, 5
	ON CONFLICT (account, dim, day, link, shard) DO UPDATE SET clicks = link_days.clicks + excluded.clicks,
	uniq = link_days.uniq + excluded.uniq, machine = link_days.machine + excluded.machine,
	first = LEAST(link_days.first, excluded.first), last = GREATEST(link_days.last, excluded.last)`

const sqlMsgLinkUpsert = `INSERT INTO msg_link_stats (message, position, clicks, uniq, machine, first, last)
	SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
	ORDER BY 1, 2
	ON CONFLICT (message, position) DO UPDATE SET clicks = msg_link_stats.clicks + excluded.clicks,
	uniq = msg_link_stats.uniq + excluded.uniq, machine = msg_link_stats.machine + excluded.machine,
	first = LEAST(msg_link_stats.first, excluded.first), last = GREATEST(msg_link_stats.last, excluded.last)`

func nullNS(ns int64) *int64 {
	if ns == 0 {
		return nil
	}
	return &ns
}

// metricArgs turns counter rows into one array per metric.
func metricArgs(rows []*[store.NumMetrics]int64) []any {
	out := make([]any, store.NumMetrics)
	for m := range store.NumMetrics {
		col := make([]int64, len(rows))
		for i, r := range rows {
			col[i] = r[m]
		}
		out[m] = col
	}
	return out
}

// flush writes the gathered aggregates, day counts and webhook messages
// in one round trip.
func (b *batch) flush(ctx context.Context, tx pgx.Tx) error {
	var pb pgx.Batch
	if len(b.counts) > 0 {
		keys := sortedKeys(b.counts, func(a, c aggKey) int {
			return cmp.Or(cmp.Compare(a.account, c.account), cmp.Compare(a.dim, c.dim), cmp.Compare(a.hour, c.hour))
		})
		accts, dims, hours, shs := make([]string, len(keys)), make([]string, len(keys)), make([]int32, len(keys)), make([]int16, len(keys))
		rows := make([]*[store.NumMetrics]int64, len(keys))
		for i, k := range keys {
			accts[i], dims[i], hours[i], shs[i], rows[i] = k.account, k.dim, k.hour, b.shard, b.counts[k]
		}
		pb.Queue(sqlAggUpsert, append([]any{accts, dims, hours, shs}, metricArgs(rows)...)...)
	}
	if len(b.totals) > 0 {
		keys := sortedKeys(b.totals, strings.Compare)
		shs := make([]int16, len(keys))
		rows := make([]*[store.NumMetrics]int64, len(keys))
		for i, k := range keys {
			shs[i], rows[i] = b.shard, b.totals[k]
		}
		pb.Queue(sqlTotalsUpsert, append([]any{keys, shs}, metricArgs(rows)...)...)
	}
	if len(b.msgs) > 0 {
		keys := sortedKeys(b.msgs, func(a, c uint64) int { return cmp.Compare(i64(a), i64(c)) })
		ids := make([]int64, len(keys))
		rows := make([]*[store.NumMetrics]int64, len(keys))
		for i, k := range keys {
			ids[i], rows[i] = i64(k), b.msgs[k]
		}
		pb.Queue(sqlMsgUpsert, append([]any{ids}, metricArgs(rows)...)...)
	}
	if len(b.linkDays) > 0 {
		keys := sortedKeys(b.linkDays, func(a, c linkDayKey) int {
			return cmp.Or(cmp.Compare(a.account, c.account), cmp.Compare(a.dim, c.dim), cmp.Compare(a.day, c.day), cmp.Compare(a.link, c.link))
		})
		n := len(keys)
		accts, dims, days, links, shs := make([]string, n), make([]string, n), make([]int32, n), make([]string, n), make([]int16, n)
		cl, un, ma, fi, la := make([]int64, n), make([]int64, n), make([]int64, n), make([]*int64, n), make([]*int64, n)
		for i, k := range keys {
			c := b.linkDays[k]
			accts[i], dims[i], days[i], links[i], shs[i] = k.account, k.dim, k.day, k.link, b.shard
			cl[i], un[i], ma[i], fi[i], la[i] = c.clicks, c.unique, c.machine, nullNS(c.first), nullNS(c.last)
		}
		pb.Queue(sqlLinkDaysUpsert, accts, dims, days, links, shs, cl, un, ma, fi, la)
	}
	if len(b.msgLinks) > 0 {
		keys := sortedKeys(b.msgLinks, func(a, c msgPos) int {
			return cmp.Or(cmp.Compare(i64(a.message), i64(c.message)), cmp.Compare(a.pos, c.pos))
		})
		n := len(keys)
		ms, ps := make([]int64, n), make([]int32, n)
		cl, un, ma, fi, la := make([]int64, n), make([]int64, n), make([]int64, n), make([]*int64, n), make([]*int64, n)
		for i, k := range keys {
			c := b.msgLinks[k]
			ms[i], ps[i] = i64(k.message), int32(k.pos)
			cl[i], un[i], ma[i], fi[i], la[i] = c.clicks, c.unique, c.machine, nullNS(c.first), nullNS(c.last)
		}
		pb.Queue(sqlMsgLinkUpsert, ms, ps, cl, un, ma, fi, la)
	}
	if len(b.names) > 0 {
		keys := sortedKeys(b.names, func(a, c [2]string) int { return cmp.Or(cmp.Compare(a[0], c[0]), cmp.Compare(a[1], c[1])) })
		accts, links, urls := make([]string, len(keys)), make([]string, len(keys)), make([]string, len(keys))
		for i, k := range keys {
			accts[i], links[i], urls[i] = k[0], k[1], b.names[k]
		}
		pb.Queue(`INSERT INTO link_names (account, link, url) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
			ORDER BY 1, 2 ON CONFLICT DO NOTHING`, accts, links, urls)
	}
	if len(b.linkMsgs) > 0 {
		keys := sortedKeys(b.linkMsgs, func(a, c linkMsg) int {
			return cmp.Or(cmp.Compare(a.account, c.account), cmp.Compare(a.link, c.link), cmp.Compare(i64(a.message), i64(c.message)))
		})
		accts, links, ms := make([]string, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
		for i, k := range keys {
			accts[i], links[i], ms[i] = k.account, k.link, i64(k.message)
		}
		pb.Queue(`INSERT INTO link_msgs (account, link, message) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
			ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING`, accts, links, ms)
	}
	if len(b.days) > 0 {
		keys := sortedKeys(b.days, func(a, c [3]string) int {
			return cmp.Or(cmp.Compare(a[0], c[0]), cmp.Compare(a[1], c[1]), cmp.Compare(a[2], c[2]))
		})
		n := len(keys)
		accts, days, logs, shs, ns := make([]string, n), make([]string, n), make([]string, n), make([]int16, n), make([]int64, n)
		for i, k := range keys {
			accts[i], days[i], logs[i], shs[i], ns[i] = k[0], k[1], k[2], b.shard, b.days[k]
		}
		pb.Queue(`INSERT INTO event_days (account, day, log, shard, n)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::bigint[]) ORDER BY 1, 2, 3, 4
			ON CONFLICT (account, day, log, shard) DO UPDATE SET n = event_days.n + excluded.n`, accts, days, logs, shs, ns)
	}
	if len(b.webhooks) > 0 {
		queueWebhooks(&pb, b.webhooks)
	}
	if pb.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &pb).Close(); err != nil {
		return fmt.Errorf("postgres: aggregates: %w", err)
	}
	return nil
}

func sortedKeys[K comparable, V any](m map[K]V, cmpf func(a, b K) int) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpf)
	return keys
}

// AppendEvents implements store.DB.
func (d *DB) AppendEvents(ctx context.Context, events []store.Event) error {
	evs, err := store.PrepareEvents(events)
	if err != nil {
		return err
	}
	if err := d.ensurePartitions(ctx, evs); err != nil {
		return err
	}
	return d.write(ctx, func(tx pgx.Tx) error {
		b := d.newBatch()
		if err := b.putEvents(ctx, tx, evs, false); err != nil {
			return err
		}
		return b.flush(ctx, tx)
	})
}

// EventDays implements store.DB.
func (d *DB) EventDays(ctx context.Context, account string) ([]store.DayLog, error) {
	if account == "" {
		return nil, nil
	}
	rows, err := d.pool.Query(ctx, `SELECT day, log, sum(n)::bigint FROM event_days WHERE account = $1
		GROUP BY day, log HAVING sum(n) > 0 ORDER BY day, log`, account)
	if err != nil {
		return nil, fmt.Errorf("postgres: event days: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.DayLog, error) {
		var dl store.DayLog
		var n int64
		err := row.Scan(&dl.Day, &dl.Log, &n)
		dl.Count = uint64(n)
		return dl, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: event days: %w", err)
	}
	return nilIfEmpty(out), nil
}

func timeNS(t time.Time, zero int64) int64 {
	if t.IsZero() || t.Before(time.Unix(0, 0)) {
		return zero
	}
	return t.UnixNano()
}

const maxNS = int64(^uint64(0) >> 1)

// Events implements store.DB.
func (d *DB) Events(ctx context.Context, account, log string, from, to time.Time) iter.Seq2[store.Event, error] {
	if _, ok := store.LogFields[log]; !ok {
		return func(yield func(store.Event, error) bool) {
			yield(store.Event{}, fmt.Errorf("store: unknown log %q", log))
		}
	}
	return d.scan(ctx, account, "log = $2", log, from, to)
}

// EventsByMessage implements store.DB.
func (d *DB) EventsByMessage(ctx context.Context, account string, id uint64) iter.Seq2[store.Event, error] {
	return d.scan(ctx, account, "id = $2", i64(id), time.Time{}, time.Time{})
}

// EventsByRecipient implements store.DB.
func (d *DB) EventsByRecipient(ctx context.Context, account, recipient string, from, to time.Time) iter.Seq2[store.Event, error] {
	return d.scan(ctx, account, "rcpt = $2", strings.ToLower(recipient), from, to)
}

// EventsByTag implements store.DB.
func (d *DB) EventsByTag(ctx context.Context, account, tag string, from, to time.Time) iter.Seq2[store.Event, error] {
	return d.scan(ctx, account, "tags @> ARRAY[$2::text]", tag, from, to)
}

// scan yields account's events matching cond (on $2 = arg) with from <=
// t < to, in time order, reading scanChunk at a time (keyset paging on
// (t, seq)), so a slow consumer holds no connection.
func (d *DB) scan(ctx context.Context, account, cond string, arg any, from, to time.Time) iter.Seq2[store.Event, error] {
	q := `SELECT t, seq, log, id, recipient, tags, fields, key FROM events WHERE account = $1 AND ` + cond +
		` AND t >= $3 AND t < $4 AND (t, seq) > ($5, $6) ORDER BY t, seq LIMIT ` + strconv.Itoa(scanChunk)
	return func(yield func(store.Event, error) bool) {
		if account == "" {
			return
		}
		lo, hi := timeNS(from, 0), timeNS(to, maxNS)
		lastT, lastSeq := int64(-1), int64(-1)
		for {
			rows, err := d.pool.Query(ctx, q, account, arg, lo, hi, lastT, lastSeq)
			if err != nil {
				yield(store.Event{}, fmt.Errorf("postgres: events: %w", err))
				return
			}
			var buf []store.Event
			for rows.Next() {
				var t, seq, id int64
				var e store.Event
				var fields, key []byte
				if err := rows.Scan(&t, &seq, &e.Log, &id, &e.Recipient, &e.Tags, &fields, &key); err != nil {
					rows.Close()
					yield(store.Event{}, fmt.Errorf("postgres: events: %w", err))
					return
				}
				lastT, lastSeq = t, seq
				e.Account, e.ID, e.Time, e.Key = account, uint64(id), time.Unix(0, t).UTC(), string(key)
				if len(e.Tags) == 0 {
					e.Tags = nil
				}
				if len(fields) > 0 {
					if err := json.Unmarshal(fields, &e.Fields); err != nil {
						rows.Close()
						yield(store.Event{}, fmt.Errorf("postgres: event: %w", err))
						return
					}
				}
				if e.Log == store.LogClicks && e.Fields != nil {
					if _, ok := e.Fields["destination"]; !ok {
						if u, ok := e.Fields["url"]; ok {
							e.Fields["destination"] = u
						}
					}
				}
				buf = append(buf, e)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				yield(store.Event{}, fmt.Errorf("postgres: events: %w", err))
				return
			}
			for _, e := range buf {
				if !yield(e, nil) {
					return
				}
			}
			if len(buf) < scanChunk {
				return
			}
		}
	}
}
