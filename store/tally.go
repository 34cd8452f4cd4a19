package store

import (
	"sync"
	"time"
)

// DeliveryTally gathers delivered copies per message and day for the link
// figures (LinkStat.Delivered): every delivered copy counts once for each
// distinct link of its message, on the day it was delivered, in every
// dimension it counts in. Writing each copy's links in its own commit
// would cost a delivery dozens of writes (a newsletter has 80 links), so
// the backends gather copies here and write them about once a second (and
// before the figures are read, and at Close): a crash forgets at most that
// second, which only makes the shares of its links read slightly high.
// The zero DeliveryTally is ready to use; it is safe for concurrent use.
type DeliveryTally struct {
	mu      sync.Mutex
	pending map[TallyKey]*TallyCount
}

// TallyFlushEvery is how often the backends write a DeliveryTally.
const TallyFlushEvery = time.Second

// TallyKey is one message on one UTC day (days since 1970).
type TallyKey struct {
	Message uint64
	Day     uint32
}

// TallyCount is a message's gathered copies on a day, with what says
// where they count.
type TallyCount struct {
	Account, Credential string
	Tags                []string
	N                   int64
}

// Dims returns the dimensions of the account the copies count in, as
// EventDims: all (""), each tag, the credential. They count in
// AllAccounts' "" too.
func (v *TallyCount) Dims() []string { return dims(v.Tags, v.Credential) }

// Add counts n delivered copies (n < 0: copies that bounced hard after
// all) of c's message on the day c was delivered.
func (t *DeliveryTally) Add(c *Copy, n int64) {
	at := c.Delivered
	if at.IsZero() {
		at = c.Created
	}
	k := TallyKey{c.MessageID, dayOfUnix(at.UTC())}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[TallyKey]*TallyCount{}
	}
	v := t.pending[k]
	if v == nil {
		v = &TallyCount{Account: c.Account, Credential: c.Credential, Tags: c.Tags}
		t.pending[k] = v
	}
	v.N += n
}

// Take returns what was gathered and starts afresh.
func (t *DeliveryTally) Take() map[TallyKey]*TallyCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending
	t.pending = nil
	return p
}

// Return puts back what a failed write took, so the next one tries again.
func (t *DeliveryTally) Return(p map[TallyKey]*TallyCount) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[TallyKey]*TallyCount{}
	}
	for k, v := range p {
		if cur := t.pending[k]; cur != nil {
			cur.N += v.N
		} else {
			t.pending[k] = v
		}
	}
}
