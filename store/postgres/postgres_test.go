package postgres

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

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
