package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/store"
)

func testStore(t *testing.T) *store.Relay {
	t.Helper()
	st, err := store.OpenRelay(filepath.Join(t.TempDir(), "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// The config file's accounts, credentials and API keys reach the store as
// declared records; API keys speak for their account's first credential
// (file order), or as "api:ACCOUNT" for an account without one; a record
// made at run time with a declared key is replaced; declared records the
// file no longer has are removed.
func TestDeclaredRecordsAndKeys(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("the-key"), bcrypt.MinCost)
	hash := string(h)
	parse := func(extra string) *config.Config {
		cfg, err := config.Parse(strings.NewReader(`
[[accounts]]
name = "shop"
[[accounts]]
name = "bare"
[[upstreams]]
name = "main"
folder = "out"
[[credentials]]
username = "shop-1"
password_hash = "` + hash + `"
account = "shop"
clicks = true
click_domain = "t.shop.example"
[[credentials]]
username = "shop-2"
password_hash = "` + hash + `"
account = "shop"
[api]
[[api.keys]]
account = "shop"
key_hash = "` + hash + `"
` + extra))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := parse(`
[[api.keys]]
account = "bare"
key_hash = "` + hash + `"
`)
	st := testStore(t)
	ctx := context.Background()
	// A run-time credential with a name the config file then declares.
	if err := store.Create(ctx, st, &store.Credential{Username: "shop-2", Account: "bare", PasswordHash: hash}); err != nil {
		t.Fatal(err)
	}
	if err := syncDeclared(ctx, st, cfg); err != nil {
		t.Fatal(err)
	}
	c2, err := store.Get[store.Credential](ctx, st, store.KindCredential, "shop-2")
	if err != nil || !c2.Declared || c2.Account != "shop" {
		t.Fatalf("declared credential did not replace the run-time one: %+v %v", c2, err)
	}
	d := newDirectory(st, cfg, slog.New(slog.DiscardHandler))
	snap, err := d.firstSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.users) != 2 || len(snap.keys) != 2 {
		t.Fatalf("%d users, %d keys", len(snap.users), len(snap.keys))
	}
	byAcct := map[string]api.Key{}
	for _, k := range snap.keys {
		byAcct[k.Cred.Account] = k
	}
	if c := byAcct["shop"].Cred; c.Username != "shop-1" || !c.Clicks || c.ClickDomain != "t.shop.example" || c.Upstream != "main" {
		t.Fatalf("shop's key: %+v", c)
	}
	if c := byAcct["bare"].Cred; c.Username != "api:bare" || c.Clicks || c.Upstream != "main" {
		t.Fatalf("bare's key: %+v", c)
	}
	kr, err := api.NewKeyring(snap.keys)
	if err != nil {
		t.Fatal(err)
	}
	// Two keys with the same secret: the first (in record order) wins,
	// always the same one.
	first := ""
	for range 3 {
		p, err := kr.CheckKey(ctx, "the-key")
		if err != nil || (first != "" && p.Account != first) {
			t.Fatalf("CheckKey: %+v, %v", p, err)
		}
		first = p.Account
	}
	// Declared records are read-only at run time.
	err = store.Update[store.Credential](ctx, st, store.KindCredential, "shop-1", false, func(c *store.Credential) (*store.Credential, error) {
		c.Clicks = false
		return c, nil
	})
	if !errors.Is(err, store.ErrDeclared) {
		t.Fatalf("changing a declared credential: %v", err)
	}
	if err := store.Delete(ctx, st, store.KindAPIKey, byAcct["shop"].ID); !errors.Is(err, store.ErrDeclared) {
		t.Fatalf("deleting a declared key: %v", err)
	}
	// The file loses the second key: its record goes.
	if err := syncDeclared(ctx, st, parse("")); err != nil {
		t.Fatal(err)
	}
	keys, err := store.List[store.APIKey](ctx, st, store.KindAPIKey, "")
	if err != nil || len(keys) != 1 || keys[0].Account != "shop" {
		t.Fatalf("keys after the second key left the file: %+v %v", keys, err)
	}

}
