package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Which links reached how many readers: every delivered copy counts for
// each link of its message, per day and dimension, so that a link's share
// of recipients who clicked is its unique clicks over the delivered copies
// that carried it. Counting each copy's links in its own commit would cost
// a delivery dozens of writes (a newsletter has 80 links), so delivered
// copies are gathered in memory per message and written once a second
// (and at Close): a crash forgets at most that second, which only makes
// the shares of its links read slightly high.
//
//	"link-carried" account \x00 dim \x00 day(4) link(12) -> n (uvarint)
//	"link-msgs"    account \x00 link(12) message(8)     -> nil, every message that carried it
func init() {
	registerRelayBuckets(bucketLinkCarried)
}

const bucketLinkCarried = "link-carried"

// carriedFlushEvery is how often gathered deliveries are written.
const carriedFlushEvery = time.Second

type carriedKey struct {
	message uint64
	day     uint32
}

type carriedVal struct {
	account, credential string
	tags                []string
	n                   int64
}

// carried gathers delivered copies per message and day.
type carried struct {
	mu      sync.Mutex
	pending map[carriedKey]*carriedVal
}

// add counts n delivered copies (n < 0: a copy that bounced hard after
// all) of c's message on the day it was delivered.
func (cr *carried) add(c *Copy, n int64) {
	at := c.Delivered
	if at.IsZero() {
		at = c.Created
	}
	k := carriedKey{c.MessageID, dayOfUnix(at)}
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.pending == nil {
		cr.pending = map[carriedKey]*carriedVal{}
	}
	v := cr.pending[k]
	if v == nil {
		v = &carriedVal{account: c.Account, credential: c.Credential, tags: c.Tags}
		cr.pending[k] = v
	}
	v.n += n
}

func (cr *carried) take() map[carriedKey]*carriedVal {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	p := cr.pending
	cr.pending = nil
	return p
}

// carriedLoop writes the gathered deliveries every carriedFlushEvery until
// stop closes, then once more.
func (r *Relay) carriedLoop() {
	defer close(r.carriedDone)
	t := time.NewTicker(carriedFlushEvery)
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
	p := r.carried.take()
	if len(p) == 0 {
		return
	}
	err := r.commitNow(func(tx *bolt.Tx) error {
		ml := tx.Bucket([]byte(bucketMsgLinks))
		lc := tx.Bucket([]byte(bucketLinkCarried))
		lm := tx.Bucket([]byte(bucketLinkMsgs))
		sums := map[string]int64{}
		for k, v := range p {
			if v.n == 0 {
				continue
			}
			prefix := idKey(k.message)
			seen := map[string]bool{}
			c := ml.Cursor()
			for mk, url := c.Seek(prefix); mk != nil && bytes.HasPrefix(mk, prefix); mk, url = c.Next() {
				id := string(linkIDBytes(string(url)))
				if seen[id] {
					continue // one URL at several positions counts once
				}
				seen[id] = true
				dims := []string{""}
				for _, t := range v.tags {
					dims = append(dims, dimTagPrefix+t)
				}
				if v.credential != "" {
					dims = append(dims, dimCredPrefix+v.credential)
				}
				for _, d := range dims {
					sums[string(linkDayKey(v.account, d, k.day, []byte(id)))] += v.n
				}
				sums[string(linkDayKey(AllAccounts, "", k.day, []byte(id)))] += v.n
				for _, acct := range [...]string{v.account, AllAccounts} {
					mk := append(append([]byte(acct+"\x00"), id...), idKey(k.message)...)
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
		r.log.Warn("store: recording the links' delivered copies failed; their shares read high", "err", err)
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
