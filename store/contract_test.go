package store_test

import (
	"path/filepath"
	"testing"

	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/store/storetest"
)

// TestContract holds the bbolt backend to the store contract.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.DB {
		r, err := store.OpenRelay(filepath.Join(t.TempDir(), "relay.db"), store.RelayOptions{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	})
}
