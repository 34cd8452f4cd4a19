package postgres

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/trackrelay/trackrelay/store"
)

// The links' delivered copies (LinkStat.Delivered): each node gathers
// what it delivered in a store.DeliveryTally and writes it about once a
// second, before TopLinks or LinkMessages read, and at Close, as the
// bbolt backend does. The rows are added to (n = n + excluded.n), so the
// nodes' writes never conflict in meaning; they lock rows in key order,
// so two nodes writing the same links cannot deadlock.

// carriedLoop writes the tally every store.TallyFlushEvery until stop
// closes.
func (d *DB) carriedLoop() {
	defer close(d.carriedDone)
	t := time.NewTicker(store.TallyFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.flushCarried(context.Background())
		}
	}
}

type carriedKey struct {
	account, dim string
	day          int32
	link         string
}

// flushCarried writes what the tally gathered: for each message, its
// recorded links each get the message's delivered copies in every
// dimension they count in. A failed write puts the tally back.
func (d *DB) flushCarried(ctx context.Context) {
	p := d.carried.Take()
	if len(p) == 0 {
		return
	}
	if err := d.writeCarried(ctx, p); err != nil {
		d.log.Warn("postgres: recording the links' delivered copies failed; trying again", "err", err)
		d.carried.Return(p)
	}
}

func (d *DB) writeCarried(ctx context.Context, p map[store.TallyKey]*store.TallyCount) error {
	var msgs []int64
	for k, v := range p {
		if v.N != 0 {
			msgs = append(msgs, i64(k.Message))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	return d.write(ctx, func(tx pgx.Tx) error {
		// Each message's distinct links.
		rows, err := tx.Query(ctx, `SELECT DISTINCT message, url FROM msg_links WHERE message = ANY($1)`, msgs)
		if err != nil {
			return err
		}
		links := map[uint64][]string{}
		var m int64
		var url string
		_, err = pgx.ForEachRow(rows, []any{&m, &url}, func() error {
			id := store.LinkID(url)
			if !slices.Contains(links[uint64(m)], id) {
				links[uint64(m)] = append(links[uint64(m)], id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		sums := map[carriedKey]int64{}
		type lm struct {
			account, link string
			message       int64
		}
		seen := map[lm]bool{}
		for k, v := range p {
			if v.N == 0 {
				continue
			}
			for _, link := range links[k.Message] {
				for _, dim := range v.Dims() {
					sums[carriedKey{v.Account, dim, int32(k.Day), link}] += v.N
				}
				sums[carriedKey{store.AllAccounts, "", int32(k.Day), link}] += v.N
				for _, acct := range [...]string{v.Account, store.AllAccounts} {
					seen[lm{acct, link, i64(k.Message)}] = true
				}
			}
		}
		if len(sums) == 0 {
			return nil
		}
		keys := make([]carriedKey, 0, len(sums))
		for k := range sums {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b carriedKey) int {
			return cmp.Or(cmp.Compare(a.account, b.account), cmp.Compare(a.dim, b.dim), cmp.Compare(a.day, b.day), cmp.Compare(a.link, b.link))
		})
		n := len(keys)
		accts, dims, days, ls, ns := make([]string, n), make([]string, n), make([]int32, n), make([]string, n), make([]int64, n)
		for i, k := range keys {
			accts[i], dims[i], days[i], ls[i], ns[i] = k.account, k.dim, k.day, k.link, sums[k]
		}
		// A bounce's -1 is stored as it is when it finds no row (the
		// readers count a row below 0 as 0).
		if _, err := tx.Exec(ctx, `INSERT INTO link_carried (account, dim, day, link, n)
			SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[]) ORDER BY 1, 2, 3, 4
			ON CONFLICT (account, dim, day, link) DO UPDATE SET n = GREATEST(link_carried.n + excluded.n, 0)`,
			accts, dims, days, ls, ns); err != nil {
			return err
		}
		// Every message that carried a link, for LinkMessages.
		lms := make([]lm, 0, len(seen))
		for k := range seen {
			lms = append(lms, k)
		}
		slices.SortFunc(lms, func(a, b lm) int {
			return cmp.Or(cmp.Compare(a.account, b.account), cmp.Compare(a.link, b.link), cmp.Compare(a.message, b.message))
		})
		la, ll, lmsg := make([]string, len(lms)), make([]string, len(lms)), make([]int64, len(lms))
		for i, k := range lms {
			la[i], ll[i], lmsg[i] = k.account, k.link, k.message
		}
		if _, err := tx.Exec(ctx, `INSERT INTO link_msgs (account, link, message) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
			ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING`, la, ll, lmsg); err != nil {
			return err
		}
		return nil
	})
}
