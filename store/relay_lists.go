package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Address lists of an account: the suppression list (mail to these
// addresses is not sent) and the no-tracking list (mail to these is sent
// untracked). In bbolt:
//
//	"addr-lists" list \x00 account \x00 address -> AddressEntry (JSON)
func init() {
	registerRelayBuckets(bucketAddrLists)
}

const bucketAddrLists = "addr-lists"

// Address lists.
const (
	ListSuppressed = "suppressed"
	ListNoTrack    = "notrack"
)

// Reasons an address is suppressed.
const (
	ReasonHardBounce  = "hard-bounce"
	ReasonSoftBounces = "soft-bounces"
	ReasonComplaint   = "complaint"
	ReasonManual      = "manual"
	ReasonUnsubscribe = "unsubscribe"
)

// AddressEntry is one address on one of an account's lists.
type AddressEntry struct {
	List    string    `json:"list"`
	Account string    `json:"account"`
	Address string    `json:"address"` // lower case
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail,omitempty"` // e.g. the bounce's status and diagnostic
	Copy    uint64    `json:"copy,omitempty"`   // the copy that caused it
	Created time.Time `json:"created"`
}

// NormalAddress is the form addresses are listed under: lower case, no
// surrounding space.
func NormalAddress(a string) string { return strings.ToLower(strings.TrimSpace(a)) }

func addrKey(list, account, address string) []byte {
	return []byte(list + "\x00" + account + "\x00" + NormalAddress(address))
}

func validList(list string) error {
	if list != ListSuppressed && list != ListNoTrack {
		return fmt.Errorf("store: unknown address list %q", list)
	}
	return nil
}

// AddAddress puts e on its list. An address already listed keeps its
// first entry (added is false).
func (r *Relay) AddAddress(ctx context.Context, e AddressEntry) (added bool, err error) {
	if err := validList(e.List); err != nil {
		return false, err
	}
	e.Address = NormalAddress(e.Address)
	if e.Account == "" || e.Address == "" || len(e.Address) > 320 {
		return false, fmt.Errorf("store: address entry needs an account and an address")
	}
	if e.Created.IsZero() {
		e.Created = time.Now().UTC()
	}
	v, err := json.Marshal(&e)
	if err != nil {
		return false, err
	}
	err = r.update(ctx, func(tx *bolt.Tx) error {
		added = false
		b := tx.Bucket([]byte(bucketAddrLists))
		k := addrKey(e.List, e.Account, e.Address)
		if b.Get(k) != nil {
			return nil
		}
		added = true
		return b.Put(k, v)
	})
	return added, err
}

// RemoveAddress takes an address off a list, and says whether it was on.
func (r *Relay) RemoveAddress(ctx context.Context, list, account, address string) (removed bool, err error) {
	if err := validList(list); err != nil {
		return false, err
	}
	err = r.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketAddrLists))
		k := addrKey(list, account, address)
		removed = b.Get(k) != nil
		if !removed {
			return nil
		}
		return b.Delete(k)
	})
	return removed, err
}

// LookupAddresses returns the entries of the addresses that are on list,
// by normal address.
func (r *Relay) LookupAddresses(_ context.Context, list, account string, addresses []string) (map[string]*AddressEntry, error) {
	if err := validList(list); err != nil {
		return nil, err
	}
	out := map[string]*AddressEntry{}
	err := r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketAddrLists))
		for _, a := range addresses {
			v := b.Get(addrKey(list, account, a))
			if v == nil {
				continue
			}
			var e AddressEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: address entry: %w", err)
			}
			out[NormalAddress(a)] = &e
		}
		return nil
	})
	return out, err
}

// ListAddresses returns the entries of an account's list whose address
// contains the text contains (all when empty), in address order after the
// address after, at most limit.
func (r *Relay) ListAddresses(ctx context.Context, list, account, contains, after string, limit int) ([]AddressEntry, error) {
	if err := validList(list); err != nil {
		return nil, err
	}
	contains = strings.ToLower(contains)
	var out []AddressEntry
	err := r.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(list + "\x00" + account + "\x00")
		c := tx.Bucket([]byte(bucketAddrLists)).Cursor()
		start := prefix
		if after != "" {
			start = append(bytes.Clone(prefix), NormalAddress(after)+"\x00"...)
		}
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if contains != "" && !strings.Contains(string(k[len(prefix):]), contains) {
				continue
			}
			var e AddressEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: address entry: %w", err)
			}
			out = append(out, e)
			if limit > 0 && len(out) >= limit {
				return nil
			}
		}
		return nil
	})
	return out, err
}
