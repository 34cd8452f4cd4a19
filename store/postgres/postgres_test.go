package postgres

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/store/postgres/pgtest"
	"github.com/trackrelay/trackrelay/store/storetest"
)

// server is the test binary's PostgreSQL, started by TestMain; nil (and
// noServer says why) when PostgreSQL is not installed.
var (
	server   *pgtest.Server
	noServer error
)

func TestMain(m *testing.M) {
	server, noServer = pgtest.Start(pgtest.Options{})
	if noServer != nil && noServer != pgtest.ErrNoPostgres {
		fmt.Fprintln(os.Stderr, noServer)
		os.Exit(1)
	}
	code := m.Run()
	if server != nil {
		server.Stop()
	}
	closeLinks1M()
	stopDurable()
	os.Exit(code)
}

// newDSN makes a fresh database, or skips the test when PostgreSQL's
// binaries are missing.
func newDSN(t testing.TB) string {
	t.Helper()
	if server == nil {
		t.Skip(noServer)
	}
	dsn, err := server.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

var nodeN atomic.Int64

func openNode(t testing.TB, dsn, node string) *DB {
	t.Helper()
	d, err := Open(context.Background(), Options{DSN: dsn, Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestContract holds the PostgreSQL backend to the store contract.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.DB {
		return openNode(t, newDSN(t), fmt.Sprintf("node-%d", nodeN.Add(1)))
	})
}

// TestLoadFromBolt copies a bbolt database with a little of everything
// into PostgreSQL and compares every answer of the two.
func TestLoadFromBolt(t *testing.T) {
	rel, err := store.OpenRelay(t.TempDir()+"/relay.db", store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Close()
	storetest.Populate(t, rel)
	d := openNode(t, newDSN(t), "copy")
	st, err := d.Load(context.Background(), func(fn func(any) error) error { return rel.Dump(context.Background(), fn) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 2 || st.Copies != 5 || st.Events == 0 || st.Hits != 1 || st.Webhooks == 0 || st.Addresses != 2 {
		t.Errorf("load stats %+v", st)
	}
	storetest.Compare(t, rel, d)
	// Copying again into a database that holds data is refused.
	if _, err := d.Load(context.Background(), func(fn func(any) error) error { return rel.Dump(context.Background(), fn) }); err == nil {
		t.Error("a second copy into the same database was accepted")
	}
	// The copied data keeps working: a hit shipped again is still a duplicate.
	var queued []*store.Copy
	_ = d.QueuedCopies(context.Background(), func(c *store.Copy) error { queued = append(queued, c); return nil })
	if len(queued) != 1 {
		t.Fatalf("queued after the copy: %d", len(queued))
	}
	before, _ := d.Totals(context.Background(), "shop")
	if err := d.IngestHits(context.Background(), []store.Hit{{ID: "p1", Kind: "pixel", MessageID: 1, Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if after, _ := d.Totals(context.Background(), "shop"); after != before {
		t.Errorf("a copied hit id was taken again: %v -> %v", before.Map(), after.Map())
	}
}
