package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/mime/dkim"
	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
	"github.com/trackrelay/trackrelay/store"
)

// TestDKIMKeeper: keys changed in the store by someone else (another node
// sharing it, say) reach the signer within a poll; the keeper's own
// checks activate a key once its record is published and reload the
// signer at once; it stops with its context.
func TestDKIMKeeper(t *testing.T) {
	st := testStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := dkimtest.StartDNS(t)
	cfg := config.DKIM{Resolver: d.Addr}
	cfg.SetDefaults()
	cfg.CheckInterval = time.Second
	k, err := newDKIMKeeper(ctx, st, cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		k.maintain(ctx)
	}()
	go func() {
		defer wg.Done()
		watchRecords(ctx, st, 10*time.Millisecond, slog.New(slog.DiscardHandler), k.Reload)
	}()
	waitSigning := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := k.signer.Signing("shop", "shop.example"); !slices.Equal(got, want); got = k.signer.Signing("shop", "shop.example") {
			if time.Now().After(deadline) {
				t.Fatalf("signing with %v, want %v", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	add := func(sel, state string) string {
		t.Helper()
		signer, err := dkim.GenerateKey(dkim.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		pem, _ := dkim.MarshalPrivateKey(signer)
		rec, _ := dkim.Record(signer)
		if err := store.Create(ctx, st, &store.DKIMKey{Account: "shop", Domain: "shop.example", Selector: sel, Algorithm: "ed25519",
			Private: string(pem), Record: rec, State: state, Created: time.Now(), Checked: time.Now()}); err != nil {
			t.Fatal(err)
		}
		line, _ := dkim.ZoneLine("shop.example", sel, signer)
		return line
	}
	add("a", store.DKIMActive)
	waitSigning("a")
	line := add("b", store.DKIMPending)
	waitSigning("a")
	d.SetZoneLine(t, line) // the keeper's next check makes b active, a retiring
	waitSigning("b")
	if a, err := store.Get[store.DKIMKey](ctx, st, store.KindDKIMKey, store.DKIMKeyID("shop.example", "a")); err != nil || a.State != store.DKIMRetiring {
		t.Fatalf("old key: %+v %v", a, err)
	}
	if err := store.Delete(ctx, st, store.KindDKIMKey, store.DKIMKeyID("shop.example", "b")); err != nil {
		t.Fatal(err)
	}
	waitSigning()
	cancel()
	wg.Wait()
}
