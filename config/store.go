package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Store chooses where the relay keeps its records, logs and aggregates:
// bbolt in relay.data_dir (one machine), or a PostgreSQL database shared
// by several relay nodes, each with its own spool in its own data_dir.
// Redirectors never use it.
type Store struct {
	Backend string `toml:"backend"` // StoreBolt (default) or StorePostgres
	// DSN is a libpq connection string or URL: "postgres://user@host/db",
	// "host=/run/postgresql dbname=trackrelay" (a Unix socket). Keep the
	// password out of it with libpq's passfile or PGPASSWORD.
	DSN string `toml:"dsn"`
	// Node names this relay node among those sharing the database; its
	// messages are delivered from its own spool. Default relay.hostname.
	Node string `toml:"node"`
	// MaxConns bounds the node's connections; 0 is 20.
	MaxConns int `toml:"max_conns"`
}

// Store backends.
const (
	StoreBolt     = "bbolt"
	StorePostgres = "postgres"
)

// SetDefaults fills the store section; hostname is relay.hostname.
func (s *Store) SetDefaults(hostname string) {
	if s.Backend == "" {
		s.Backend = StoreBolt
	}
	if s.Node == "" {
		s.Node = hostname
	}
}

// Validate checks the store section, every problem named by its dotted
// key. It never shows the DSN, which may hold a password.
func (s *Store) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("store.%s: "+format, append([]any{key}, a...)...))
	}
	switch s.Backend {
	case StoreBolt:
		if s.DSN != "" {
			bad("dsn", "only with backend = %q", StorePostgres)
		}
	case StorePostgres:
		if err := checkDSN(s.DSN); err != nil {
			bad("dsn", "%v", err)
		}
	default:
		bad("backend", "want %q or %q, got %q", StoreBolt, StorePostgres, s.Backend)
	}
	if s.Node == "" || len(s.Node) > 200 || strings.ContainsAny(s.Node, "\x00\r\n") {
		bad("node", "must be a name of at most 200 characters")
	}
	if s.MaxConns < 0 || s.MaxConns > 10000 {
		bad("max_conns", "must be between 0 and 10000")
	}
	return errors.Join(errs...)
}

// checkDSN looks at a connection string's shape (the driver checks the
// rest when it connects).
func checkDSN(dsn string) error {
	switch {
	case dsn == "":
		return errors.New("must be set for the postgres backend")
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return errors.New("not a valid URL")
		}
	case !strings.Contains(dsn, "="):
		return errors.New(`want a postgres:// URL or key=value pairs ("host=/run/postgresql dbname=trackrelay")`)
	}
	return nil
}
