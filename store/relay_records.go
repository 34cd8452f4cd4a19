package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Records in bbolt:
//
//	"records"            kind \x00 key -> uvarint(len account) account json
//	"records-by-account" kind \x00 account \x00 key -> nil
//	"meta"               "records-version" -> n(8)
func init() {
	registerRelayBuckets(bucketRecords, bucketRecordsByAccount, bucketMeta)
}

const (
	bucketRecords          = "records"
	bucketRecordsByAccount = "records-by-account"
	bucketMeta             = "meta"
)

var metaRecordsVersion = []byte("records-version")

var _ RecordStore = (*Relay)(nil)

func recordKey(kind RecordKind, key string) []byte {
	return []byte(string(kind) + "\x00" + key)
}

func encodeRaw(r *RawRecord) []byte {
	b := binary.AppendUvarint(make([]byte, 0, len(r.Account)+len(r.Value)+2), uint64(len(r.Account)))
	b = append(b, r.Account...)
	return append(b, r.Value...)
}

func decodeRaw(kind RecordKind, key string, v []byte) (*RawRecord, error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n {
		return nil, fmt.Errorf("store: %s %q: damaged record", kind, key)
	}
	return &RawRecord{Kind: kind, Key: key, Account: string(v[k : k+int(n)]), Value: bytes.Clone(v[k+int(n):])}, nil
}

// GetRecord implements RecordStore.
func (r *Relay) GetRecord(_ context.Context, kind RecordKind, key string) (*RawRecord, error) {
	var raw *RawRecord
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketRecords)).Get(recordKey(kind, key))
		if v == nil {
			return fmt.Errorf("%w: %s %q", ErrNotFound, kind, key)
		}
		var err error
		raw, err = decodeRaw(kind, key, v)
		return err
	})
	return raw, err
}

// ListRecords implements RecordStore.
func (r *Relay) ListRecords(_ context.Context, kind RecordKind, account string) ([]RawRecord, error) {
	var out []RawRecord
	err := r.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket([]byte(bucketRecords))
		if account == "" {
			prefix := []byte(string(kind) + "\x00")
			c := rb.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				raw, err := decodeRaw(kind, string(k[len(prefix):]), v)
				if err != nil {
					return err
				}
				out = append(out, *raw)
			}
			return nil
		}
		prefix := []byte(string(kind) + "\x00" + account + "\x00")
		c := tx.Bucket([]byte(bucketRecordsByAccount)).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			key := string(k[len(prefix):])
			v := rb.Get(recordKey(kind, key))
			if v == nil {
				continue
			}
			raw, err := decodeRaw(kind, key, v)
			if err != nil {
				return err
			}
			out = append(out, *raw)
		}
		return nil
	})
	return out, err
}

// UpdateRecord implements RecordStore. It commits on its own (not in a
// shared group): record changes are rare, and fn's error must reach the
// caller whatever others in a group did.
func (r *Relay) UpdateRecord(ctx context.Context, kind RecordKind, key string, fn func(cur *RawRecord) (*RawRecord, error)) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	err := r.db.Update(func(tx *bolt.Tx) error {
		rb := tx.Bucket([]byte(bucketRecords))
		ab := tx.Bucket([]byte(bucketRecordsByAccount))
		rk := recordKey(kind, key)
		var cur *RawRecord
		if v := rb.Get(rk); v != nil {
			var err error
			if cur, err = decodeRaw(kind, key, v); err != nil {
				return err
			}
		}
		next, err := fn(cur)
		if err != nil {
			fnErr = err
			return err
		}
		if next == cur {
			return nil // unchanged
		}
		if cur != nil {
			if err := ab.Delete([]byte(string(kind) + "\x00" + cur.Account + "\x00" + key)); err != nil {
				return err
			}
		}
		if next == nil {
			if cur == nil {
				return nil
			}
			if err := rb.Delete(rk); err != nil {
				return err
			}
		} else {
			if next.Kind != kind || next.Key != key {
				return fmt.Errorf("store: %s %q: record names %s %q", kind, key, next.Kind, next.Key)
			}
			if err := rb.Put(rk, encodeRaw(next)); err != nil {
				return err
			}
			if err := ab.Put([]byte(string(kind)+"\x00"+next.Account+"\x00"+key), nil); err != nil {
				return err
			}
		}
		return addCounter(tx.Bucket([]byte(bucketMeta)), metaRecordsVersion, 1)
	})
	if fnErr != nil && errors.Is(err, fnErr) {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", kind, key, err)
	}
	return nil
}

// RecordsVersion implements RecordStore.
func (r *Relay) RecordsVersion(context.Context) (uint64, error) {
	var n uint64
	err := r.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(bucketMeta)).Get(metaRecordsVersion); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return n, err
}

// writable returns ErrClosed once Close has begun.
func (r *Relay) writable() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	return nil
}
