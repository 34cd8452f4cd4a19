package store

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// IDs are 64-bit, sort by creation time and stay unique across restarts and
// across a lost database: the top 44 bits are milliseconds since 2020-01-01
// (good until the year 2577), the low 20 bits a per-process counter that
// starts at a random value each millisecond's first use. They are written
// as 16 lowercase hex digits.
//
// Several relay nodes sharing one database give their IDGen a node number
// (SetNode, 1 to MaxIDNode): it takes the top IDNodeBits of the counter,
// so nodes never make the same id, and each node keeps 12 bits (4096 ids
// a millisecond, borrowing from the next millisecond beyond that). Node 0,
// the single-node default, keeps the whole 20-bit counter as before.
const (
	idEpochMs    = 1577836800000 // 2020-01-01T00:00:00Z
	idCounterBit = 20
	idCounterMax = 1<<idCounterBit - 1

	// IDNodeBits is how many bits of the counter name the node.
	IDNodeBits = 8
	// MaxIDNode is the largest node number.
	MaxIDNode   = 1<<IDNodeBits - 1
	idNodeShift = idCounterBit - IDNodeBits
	idNodeMax   = 1<<idNodeShift - 1
)

// IDGen hands out unique, time-ordered ids. The zero value is ready; it is
// safe for concurrent use.
type IDGen struct {
	mu   sync.Mutex
	last uint64 // last id handed out
	now  func() time.Time
	node uint64 // 0: single node
}

// SetNode makes g's ids carry node n (1 to MaxIDNode). Call it before the
// first Next.
func (g *IDGen) SetNode(n int) error {
	if n < 1 || n > MaxIDNode {
		return fmt.Errorf("store: id node %d: want 1 to %d", n, MaxIDNode)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.node = uint64(n)
	return nil
}

// Next returns a new id, larger than every id this IDGen returned before.
func (g *IDGen) Next() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now
	if g.now != nil {
		now = g.now
	}
	ms := uint64(now().UnixMilli() - idEpochMs)
	id := ms << idCounterBit
	if g.node != 0 {
		return g.nextNode(id)
	}
	if id <= g.last {
		id = g.last + 1 // same millisecond, or the clock went back
	} else {
		// Random start within the lower half of the counter, so two
		// processes (or a restarted one) rarely collide in one millisecond.
		var b [4]byte
		_, _ = rand.Read(b[:])
		id |= uint64(binary.BigEndian.Uint32(b[:])) & (idCounterMax >> 1)
	}
	g.last = id
	return id
}

// nextNode is Next for a numbered node: ms | node | counter.
func (g *IDGen) nextNode(msID uint64) uint64 {
	id := msID | g.node<<idNodeShift
	if id <= g.last {
		id = g.last + 1
		if id&idNodeMax == 0 { // the counter ran over: borrow the next millisecond
			id = (g.last>>idCounterBit+1)<<idCounterBit | g.node<<idNodeShift
		}
	} else {
		var b [2]byte
		_, _ = rand.Read(b[:])
		id |= uint64(binary.BigEndian.Uint16(b[:])) & (idNodeMax >> 1)
	}
	g.last = id
	return id
}

// IDNode returns the node number an id was made on (0: a single node's,
// or one made before nodes were numbered).
func IDNode(id uint64) int { return int(id >> idNodeShift & MaxIDNode) }

// IDTime returns when an id was made, to the millisecond.
func IDTime(id uint64) time.Time {
	return time.UnixMilli(int64(id>>idCounterBit) + idEpochMs).UTC()
}

// FormatID writes an id as 16 lowercase hex digits.
func FormatID(id uint64) string {
	// By hand, not fmt: ids are written for every event of a log download.
	const hex = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// ParseID parses an id written by FormatID.
func ParseID(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("store: id %q: want 16 hex digits", s)
	}
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("store: id %q: want 16 hex digits", s)
	}
	return id, nil
}
