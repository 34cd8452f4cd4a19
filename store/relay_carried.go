package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Which links reached how many readers: the delivered copies gathered in
// a DeliveryTally are written here once a second, for each recorded link
// of their message, per day and dimension.
//
//	"link-carried" account \x00 dim \x00 day(4) link(12) -> n (uvarint)
//	"link-msgs"    account \x00 link(12) message(8)     -> nil, every message that carried it
func init() {
	registerRelayBuckets(bucketLinkCarried)
}

const bucketLinkCarried = "link-carried"

// carriedLoop writes the gathered deliveries every carriedFlushEvery until
// stop closes, then once more.
func (r *Relay) carriedLoop() {
	defer close(r.carriedDone)
	t := time.NewTicker(TallyFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			r.flushCarried()
			return
		case <-t.C:
			r.flushCarried()
		}
	}
}

// flushCarried writes what carried gathered: for each message, its
// recorded links each get the message's delivered copies.
func (r *Relay) flushCarried() {
	p := r.carried.Take()
	if len(p) == 0 {
		return
	}
	err := r.commitNow(func(tx *bolt.Tx) error {
		ml := tx.Bucket([]byte(bucketMsgLinks))
		lc := tx.Bucket([]byte(bucketLinkCarried))
		lm := tx.Bucket([]byte(bucketLinkMsgs))
		sums := map[string]int64{}
		for k, v := range p {
			if v.N == 0 {
				continue
			}
			prefix := idKey(k.Message)
			seen := map[string]bool{}
			c := ml.Cursor()
			for mk, url := c.Seek(prefix); mk != nil && bytes.HasPrefix(mk, prefix); mk, url = c.Next() {
				id := string(linkIDBytes(string(url)))
				if seen[id] {
					continue // one URL at several positions counts once
				}
				seen[id] = true
				for _, d := range v.Dims() {
					sums[string(linkDayKey(v.Account, d, k.Day, []byte(id)))] += v.N
				}
				sums[string(linkDayKey(AllAccounts, "", k.Day, []byte(id)))] += v.N
				for _, acct := range [...]string{v.Account, AllAccounts} {
					mk := append(append([]byte(acct+"\x00"), id...), idKey(k.Message)...)
					if lm.Get(mk) == nil {
						if err := lm.Put(mk, nil); err != nil {
							return err
						}
					}
				}
			}
		}
		for k, d := range sums {
			var n int64
			if v := lc.Get([]byte(k)); v != nil {
				x, _ := binary.Uvarint(v)
				n = int64(x)
			}
			if n += d; n < 0 {
				n = 0
			}
			if err := lc.Put([]byte(k), binary.AppendUvarint(nil, uint64(n))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("store: recording the links' delivered copies failed; trying again", "err", err)
		r.carried.Return(p)
	}
}

// commitNow runs fn in its own write transaction, also while closing
// (the final flush).
func (r *Relay) commitNow(fn func(*bolt.Tx) error) error {
	return r.db.Update(fn)
}

// linkCarried sums a link's delivered copies in [d0, d1) for dim.
func linkCarried(tx *bolt.Tx, account, dim string, d0, d1 uint32, id []byte) uint64 {
	b := tx.Bucket([]byte(bucketLinkCarried))
	var sum uint64
	for d := d0; d < d1; d++ {
		if v := b.Get(linkDayKey(account, dim, d, id)); v != nil {
			x, _ := binary.Uvarint(v)
			sum += x
		}
	}
	return sum
}

// FlushLinkDeliveries writes the delivered copies gathered for the link
// figures now (tests; Close does it too).
func (r *Relay) FlushLinkDeliveries(context.Context) { r.flushCarried() }
