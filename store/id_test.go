package store

import (
	"sync"
	"testing"
	"time"
)

func TestIDsUniqueAndOrdered(t *testing.T) {
	var g IDGen
	const workers, each = 8, 5000
	ids := make(chan uint64, workers*each)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := uint64(0)
			for i := 0; i < each; i++ {
				id := g.Next()
				if id <= prev {
					t.Errorf("id %d not above the previous %d", id, prev)
				}
				prev = id
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("duplicate id %x", id)
		}
		seen[id] = true
	}
}

func TestIDClockBack(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	g := IDGen{now: func() time.Time { return now }}
	a := g.Next()
	now = now.Add(-time.Hour)
	if b := g.Next(); b <= a {
		t.Fatalf("clock went back: %x after %x", b, a)
	}
	if got := IDTime(a); !got.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("IDTime = %v", got)
	}
}

func TestFormatParseID(t *testing.T) {
	for _, id := range []uint64{0, 1, 1<<64 - 1, 0x0123456789abcdef} {
		s := FormatID(id)
		got, err := ParseID(s)
		if err != nil || got != id || len(s) != 16 {
			t.Fatalf("FormatID(%x) = %q, ParseID = %x, %v", id, s, got, err)
		}
	}
	for _, bad := range []string{"", "123", "0123456789abcdeg", "0123456789abcdef0", "+123456789abcdef"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func TestIDNodes(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	var gens [3]IDGen
	for i := range gens {
		gens[i].now = func() time.Time { return now }
		if err := gens[i].SetNode(i + 1); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]bool{}
	// More ids than one millisecond's counter holds: they borrow the
	// next millisecond and stay unique, ordered and on their node.
	for i := range gens {
		prev := uint64(0)
		for range 3 * (idNodeMax + 1) {
			id := gens[i].Next()
			if id <= prev || seen[id] || IDNode(id) != i+1 {
				t.Fatalf("node %d: id %x (prev %x, node %d, seen %v)", i+1, id, prev, IDNode(id), seen[id])
			}
			seen[id], prev = true, id
		}
	}
	var g IDGen
	for _, bad := range []int{0, -1, MaxIDNode + 1} {
		if g.SetNode(bad) == nil {
			t.Errorf("SetNode(%d) accepted", bad)
		}
	}
	if got := IDTime(gens[0].Next()); got.Before(now) {
		t.Errorf("IDTime %v before %v", got, now)
	}
}
