package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/web"
)

// localKeyName is the file in the data folder that holds this node's local
// operator key: the relay makes a new one at every start, and
// "trackrelay user" uses it to reach the running relay's REST API (bbolt
// lets one process at a time open the store). Whoever can read the data
// folder can read the whole store anyway.
const localKeyName = "admin-key"

// reload is the hook Ops calls after a change: the directory applies it
// to this node at once, once the servers are up.
func (a *relayApp) reloadRecords(ctx context.Context) error {
	if !a.ready.Load() {
		return nil // starting: the directory reads everything before serving
	}
	return a.dir.Reload(ctx)
}

// dashboard builds the dashboard (package web) over the REST API's handler.
func (a *relayApp) dashboard(apiH http.Handler) (http.Handler, error) {
	c := a.cfg.SMTP
	return web.New(web.Config{
		Store:     a.store,
		Ops:       &api.Ops{Store: a.store, Reload: a.reloadRecords, Log: a.log.With("component", "dashboard")},
		API:       apiH,
		Limiter:   smtpd.NewAuthLimiter(c.AuthFailuresSlow, c.AuthFailuresBlock, 0, c.AuthBlockFor),
		Log:       a.log.With("component", "dashboard"),
		PublicURL: a.cfg.API.DashboardURL,
	})
}

// localKeyID names this node's local operator key record: one per data
// folder and host, so nodes sharing a store each keep theirs.
func localKeyID(dataDir string) string {
	host, _ := os.Hostname()
	s := sha256.Sum256([]byte(host + "\x00" + dataDir))
	return "local" + hex.EncodeToString(s[:6])
}

// writeLocalKey makes a new local operator key, stores its hash and
// writes it to the data folder (mode 0600), with the internal listener's
// address on the second line.
func writeLocalKey(ctx context.Context, st store.DB, dataDir, apiAddr string) error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	id := localKeyID(dataDir)
	key := api.KeyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(raw)
	h, err := bcrypt.GenerateFromPassword([]byte(key), bcrypt.MinCost) // 256 random bits: the cost adds nothing
	if err != nil {
		return err
	}
	rec := &store.APIKey{ID: id, Name: "local operator key (trackrelay user)", Hash: string(h), Created: time.Now().UTC()}
	err = store.Update(ctx, st, store.KindAPIKey, id, false, func(k *store.APIKey) (*store.APIKey, error) {
		k.Hash, k.Disabled, k.Account = rec.Hash, false, ""
		return k, nil
	})
	if errors.Is(err, store.ErrNotFound) {
		err = store.Create(ctx, st, rec)
	}
	if err != nil {
		return fmt.Errorf("local operator key: %w", err)
	}
	path := filepath.Join(dataDir, localKeyName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"+apiAddr+"\n"), 0o600); err != nil {
		return fmt.Errorf("local operator key: %w", err)
	}
	return os.Rename(tmp, path)
}

// ensureDevOperator makes the development operator "dev" (password "dev")
// unless a user of that name exists.
func ensureDevOperator(ctx context.Context, st store.DB) error {
	h, err := bcrypt.GenerateFromPassword([]byte("dev"), bcrypt.MinCost)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	err = store.Create(ctx, st, &store.User{Login: "dev", Operator: true, PasswordHash: string(h), Created: now, PasswordChanged: now})
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	return err
}
