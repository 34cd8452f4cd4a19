package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/store/postgres"
)

func init() {
	commands["migrate"] = command{cmdMigrate, "apply the PostgreSQL store's schema migrations ([store] backend = \"postgres\")"}
	commands["store"] = command{cmdStore, "store tools: \"store copy --from-bbolt PATH --config FILE\" copies a bbolt install into PostgreSQL"}
}

// openPostgres opens the shared store of [store] as this node.
func openPostgres(ctx context.Context, cfg *config.Config, log *slog.Logger) (store.DB, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	db, err := postgres.Open(ctx, postgres.Options{DSN: cfg.Store.DSN, Node: cfg.Store.Node, MaxConns: int32(cfg.Store.MaxConns), Logger: log.With("component", "store")})
	if err != nil {
		return nil, err
	}
	_, num := db.Node()
	log.Info("store open", "backend", "postgres", "node", cfg.Store.Node, "node_number", num)
	return db, nil
}

// storeConfig reads --config for the store commands: it must name the
// postgres backend.
func storeConfig(name string, args []string, io stdio, extra func(fs *flag.FlagSet)) (*config.Config, error) {
	fs := newFlags(name, io)
	path := fs.String("config", "", "config file (TOML) with [store] backend = \"postgres\"")
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if *path == "" || fs.NArg() != 0 {
		fmt.Fprintf(io.err, "trackrelay %s: give --config FILE\n", name)
		return nil, errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Backend != config.StorePostgres {
		return nil, fmt.Errorf("%s: store.backend is %q: this command is for %q", *path, cfg.Store.Backend, config.StorePostgres)
	}
	return cfg, nil
}

func cmdMigrate(ctx context.Context, args []string, io stdio) error {
	cfg, err := storeConfig("migrate", args, io, nil)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	applied, err := postgres.Migrate(ctx, cfg.Store.DSN, log)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(io.out, "schema is up to date")
		return nil
	}
	for _, v := range applied {
		fmt.Fprintf(io.out, "applied migration %d\n", v)
	}
	return nil
}

func cmdStore(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || args[0] != "copy" {
		fmt.Fprintln(io.err, "usage: trackrelay store copy --from-bbolt PATH --config FILE")
		return errUsage
	}
	var from string
	cfg, err := storeConfig("store copy", args[1:], io, func(fs *flag.FlagSet) {
		fs.StringVar(&from, "from-bbolt", "", "the bbolt relay database to copy (relay.db in the old data_dir; the relay must be stopped)")
	})
	if err != nil {
		return err
	}
	if from == "" {
		fmt.Fprintln(io.err, "trackrelay store copy: give --from-bbolt PATH")
		return errUsage
	}
	src, err := store.OpenRelay(from, store.RelayOptions{LockTimeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("%w (is the relay still running?)", err)
	}
	defer src.Close()
	log := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dst, err := openPostgres(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer dst.Close()
	pg, ok := dst.(*postgres.DB)
	if !ok {
		return errors.New("store copy: not a postgres store")
	}
	st, err := pg.Load(ctx, func(fn func(any) error) error { return src.Dump(ctx, fn) })
	if err != nil {
		return err
	}
	fmt.Fprintf(io.out, "copied %d records, %d messages, %d copies, %d events, %d orphan hits, %d aggregate records, %d address entries, %d webhook messages; messages of the old install belong to node %q\n",
		st.Records, st.Messages, st.Copies, st.Events, st.Hits, st.Aggregates, st.Addresses, st.Webhooks, cfg.Store.Node)
	return nil
}
