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

// GetRecord implements store.RecordStore.
func (d *DB) GetRecord(ctx context.Context, kind store.RecordKind, key string) (*store.RawRecord, error) {
	r := &store.RawRecord{Kind: kind, Key: key}
	err := d.pool.QueryRow(ctx, `SELECT account, value FROM records WHERE kind = $1 AND key = $2`, string(kind), key).Scan(&r.Account, &r.Value)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s %q", store.ErrNotFound, kind, key)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: %s %q: %w", kind, key, err)
	}
	return r, nil
}

// ListRecords implements store.RecordStore.
func (d *DB) ListRecords(ctx context.Context, kind store.RecordKind, account string) ([]store.RawRecord, error) {
	q := `SELECT key, account, value FROM records WHERE kind = $1 ORDER BY key`
	args := []any{string(kind)}
	if account != "" {
		q = `SELECT key, account, value FROM records WHERE kind = $1 AND account = $2 ORDER BY key`
		args = append(args, account)
	}
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list %s: %w", kind, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.RawRecord, error) {
		r := store.RawRecord{Kind: kind}
		err := row.Scan(&r.Key, &r.Account, &r.Value)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list %s: %w", kind, err)
	}
	return nilIfEmpty(out), nil
}

// UpdateRecord implements store.RecordStore: the record's row is locked
// (an advisory lock on its name when it does not exist yet) while fn
// decides.
func (d *DB) UpdateRecord(ctx context.Context, kind store.RecordKind, key string, fn func(cur *store.RawRecord) (*store.RawRecord, error)) error {
	if strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("postgres: %s: bad key", kind)
	}
	var fnErr error
	err := d.write(ctx, func(tx pgx.Tx) error {
		fnErr = nil
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, string(kind)+"\x01"+key); err != nil {
			return err
		}
		var cur *store.RawRecord
		r := store.RawRecord{Kind: kind, Key: key}
		err := tx.QueryRow(ctx, `SELECT account, value FROM records WHERE kind = $1 AND key = $2 FOR UPDATE`, string(kind), key).Scan(&r.Account, &r.Value)
		switch {
		case err == nil:
			cur = &r
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		next, err := fn(cur)
		if err != nil {
			fnErr = err
			return err
		}
		if next == cur {
			return nil
		}
		if next == nil {
			if cur == nil {
				return nil
			}
			if _, err := tx.Exec(ctx, `DELETE FROM records WHERE kind = $1 AND key = $2`, string(kind), key); err != nil {
				return err
			}
		} else {
			if next.Kind != kind || next.Key != key {
				return fmt.Errorf("postgres: %s %q: record names %s %q", kind, key, next.Kind, next.Key)
			}
			if strings.IndexByte(next.Account, 0) >= 0 {
				return fmt.Errorf("postgres: %s %q: bad account", kind, key)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO records (kind, key, account, value) VALUES ($1, $2, $3, $4)
				ON CONFLICT (kind, key) DO UPDATE SET account = excluded.account, value = excluded.value`,
				string(kind), key, next.Account, next.Value); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE meta SET n = n + 1 WHERE name = 'records_version'`)
		return err
	})
	if fnErr != nil && errors.Is(err, fnErr) {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("postgres: %s %q: %w", kind, key, err)
	}
	return nil
}

// RecordsVersion implements store.RecordStore.
func (d *DB) RecordsVersion(ctx context.Context) (uint64, error) {
	var n int64
	if err := d.pool.QueryRow(ctx, `SELECT n FROM meta WHERE name = 'records_version'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: records version: %w", err)
	}
	return uint64(n), nil
}

// account reads an account record in tx; nil when there is none.
func account(ctx context.Context, tx pgx.Tx, name string) (*store.Account, error) {
	var v []byte
	err := tx.QueryRow(ctx, `SELECT value FROM records WHERE kind = 'account' AND key = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var a store.Account
	if json.Unmarshal(v, &a) != nil {
		return nil, nil
	}
	return &a, nil
}

// Address lists.

func noNUL(s ...string) error {
	for _, x := range s {
		if strings.IndexByte(x, 0) >= 0 {
			return errors.New("postgres: text with a NUL byte")
		}
	}
	return nil
}

// AddAddress implements store.DB.
func (d *DB) AddAddress(ctx context.Context, e store.AddressEntry) (added bool, err error) {
	if err := store.CheckAddressEntry(&e); err != nil {
		return false, err
	}
	if err := noNUL(e.Account, e.Address); err != nil {
		return false, err
	}
	if e.Created.IsZero() {
		e.Created = time.Now().UTC()
	}
	v, err := json.Marshal(&e)
	if err != nil {
		return false, err
	}
	err = d.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO addr_lists (list, account, address, data) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			e.List, e.Account, e.Address, v)
		added = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: add address: %w", err)
	}
	return added, nil
}

// RemoveAddress implements store.DB.
func (d *DB) RemoveAddress(ctx context.Context, list, account, address string) (removed bool, err error) {
	if err := store.CheckList(list); err != nil {
		return false, err
	}
	err = d.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM addr_lists WHERE list = $1 AND account = $2 AND address = $3`, list, account, store.NormalAddress(address))
		removed = err == nil && tag.RowsAffected() > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: remove address: %w", err)
	}
	return removed, nil
}

// LookupAddresses implements store.DB.
func (d *DB) LookupAddresses(ctx context.Context, list, account string, addresses []string) (map[string]*store.AddressEntry, error) {
	if err := store.CheckList(list); err != nil {
		return nil, err
	}
	norm := make([]string, 0, len(addresses))
	for _, a := range addresses {
		if n := store.NormalAddress(a); noNUL(n) == nil {
			norm = append(norm, n)
		}
	}
	out := map[string]*store.AddressEntry{}
	rows, err := d.pool.Query(ctx, `SELECT data FROM addr_lists WHERE list = $1 AND account = $2 AND address = ANY($3)`, list, account, norm)
	if err != nil {
		return nil, fmt.Errorf("postgres: lookup addresses: %w", err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("postgres: lookup addresses: %w", err)
	}
	for _, v := range vs {
		var e store.AddressEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("postgres: address entry: %w", err)
		}
		out[e.Address] = &e
	}
	return out, nil
}

// ListAddresses implements store.DB.
func (d *DB) ListAddresses(ctx context.Context, list, account, contains, after string, limit int) ([]store.AddressEntry, error) {
	if err := store.CheckList(list); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := d.pool.Query(ctx, `SELECT data FROM addr_lists WHERE list = $1 AND account = $2 AND address > $3
		AND ($4 = '' OR strpos(address, $4) > 0) ORDER BY address LIMIT $5`,
		list, account, store.NormalAddress(after), strings.ToLower(contains), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list addresses: %w", err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("postgres: list addresses: %w", err)
	}
	var out []store.AddressEntry
	for _, v := range vs {
		var e store.AddressEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("postgres: address entry: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}
