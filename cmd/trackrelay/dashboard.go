package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/web"
)

// reloadRecords is the hook Ops calls after a change: it applies it to
// this node at once, once the servers are up.
func (a *relayApp) reloadRecords(ctx context.Context) error {
	if !a.ready.Load() {
		return nil // starting: the directory reads everything before serving
	}
	return a.reloadAll(ctx)
}

// reloadAll applies the records to everything built from them: logins
// (the directory) and the DKIM signer.
func (a *relayApp) reloadAll(ctx context.Context) error {
	return errors.Join(a.dir.Reload(ctx), a.dkim.Reload(ctx))
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
