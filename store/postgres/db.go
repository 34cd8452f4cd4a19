// Package postgres is the store.DB of trackrelay on PostgreSQL, shared by
// several relay nodes (SPEC §14): records, message and copy records, the
// event logs (partitioned by day), the aggregates, the address lists and
// the webhook queue live in one database; each node keeps the bytes of the
// messages it accepted in its own spool, and its copies are delivered by
// it alone (store.Message.Node).
//
// It speaks to PostgreSQL through pgx's pool (github.com/jackc/pgx/v5).
// The schema is versioned and embedded (migrations/), applied by Open or
// Migrate under an advisory lock, so nodes starting at once are safe. See
// DESIGN.md for how it is laid out and how it would grow.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackrelay/trackrelay/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Advisory lock keys (two int4 halves: the class, then the object).
const (
	lockClass     = 0x74726b72 // "trkr"
	lockMigrate   = 1
	lockNodes     = 2
	lockPartition = 3
	lockNodeBase  = 1000 // + node number: held by the running node
)

// DefaultMaxConns is a node's pool size unless Options say otherwise:
// enough for its SMTP sessions, delivery workers and hit ingest to wait
// on PostgreSQL's commits side by side (PostgreSQL flushes concurrent
// commits together), few enough for several nodes on one server's
// default max_connections (100).
const DefaultMaxConns = 20

// shards is how many rows each hot counter is split over.
const shards = 16

// Options configure Open.
type Options struct {
	// DSN is a libpq connection string or URL ("postgres://...",
	// "host=/run/postgresql dbname=trackrelay").
	DSN string
	// Node names this relay node: its messages and spool are its own.
	// Nodes with the same name are the same node: only one may run.
	Node string
	// MaxConns bounds the pool; 0 is DefaultMaxConns.
	MaxConns int32
	Logger   *slog.Logger
}

// DB is the PostgreSQL store. It implements store.DB.
type DB struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	node    string
	nodeNum int
	ids     store.IDGen
	lock    *pgxpool.Conn // holds the node's advisory lock

	beforeCommit atomic.Pointer[func() error]
	hook         hookGroup

	partMu sync.Mutex
	parts  map[int64]bool // days (since 1970) whose partition exists

	carried     store.DeliveryTally // the links' delivered copies (carried.go)
	stop        chan struct{}
	carriedDone chan struct{}

	closeOnce sync.Once
	closed    atomic.Bool
}

var _ store.DB = (*DB)(nil)

// Open connects, applies the schema's migrations, takes this node's
// number (and its lock) and makes the coming days' partitions.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Node == "" {
		return nil, errors.New("postgres: a node name is needed")
	}
	if len(opts.Node) > 200 || strings.ContainsRune(opts.Node, 0) {
		return nil, fmt.Errorf("postgres: bad node name %q", opts.Node)
	}
	pool, err := newPool(ctx, opts)
	if err != nil {
		return nil, err
	}
	d := &DB{pool: pool, log: opts.Logger, node: opts.Node, parts: map[int64]bool{}, stop: make(chan struct{}), carriedDone: make(chan struct{})}
	if err := migrate(ctx, pool, opts.Logger); err != nil {
		pool.Close()
		return nil, err
	}
	if err := d.takeNode(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	today := time.Now().UTC().Unix() / 86400
	for day := today - 1; day <= today+7; day++ {
		if err := d.ensurePartition(ctx, day); err != nil {
			close(d.carriedDone)
			d.Close()
			return nil, err
		}
	}
	go d.carriedLoop()
	return d, nil
}

func newPool(ctx context.Context, opts Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx's message may hold the password: say only what failed.
		return nil, errors.New("postgres: store.dsn: not a valid connection string")
	}
	cfg.MaxConns = DefaultMaxConns
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "trackrelay"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	return pool, nil
}

// Migrate applies the embedded migrations the database lacks and returns
// the versions it applied (the `trackrelay migrate` command).
func Migrate(ctx context.Context, dsn string, log *slog.Logger) (applied []int, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pool, err := newPool(ctx, Options{DSN: dsn})
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	var before []int
	log = log.With()
	err = withMigrations(ctx, pool, func(have map[int]bool) { before = mapKeys(have) })
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, pool, log); err != nil {
		return nil, err
	}
	for _, m := range mustMigrations() {
		if !slices.Contains(before, m.version) {
			applied = append(applied, m.version)
		}
	}
	return applied, nil
}

func mapKeys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

type migration struct {
	version int
	name    string
	sql     string
}

// mustMigrations returns the embedded migrations in version order; their
// names are NNNN_what.sql.
func mustMigrations() []migration {
	ents, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, e := range ents {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			panic("postgres: migration " + e.Name() + ": no version")
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, migration{v, e.Name(), string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	return out
}

// withMigrations reads the applied versions (none before the first).
func withMigrations(ctx context.Context, pool *pgxpool.Pool, fn func(map[int]bool)) error {
	have := map[int]bool{}
	rows, err := pool.Query(ctx, `SELECT version FROM schema_migrations`)
	if err == nil {
		vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err == nil {
			for _, v := range vs {
				have[v] = true
			}
		}
	}
	fn(have)
	return nil
}

// migrate applies the missing migrations, each in its own transaction,
// while holding the migration advisory lock: a second node starting at
// the same moment waits, then finds nothing left to do.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, lockClass, lockMigrate); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, lockClass, lockMigrate)
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	all := mustMigrations()
	if len(vs) > 0 && slices.Max(vs) > all[len(all)-1].version {
		return fmt.Errorf("postgres: the database's schema (version %d) is newer than this binary's (%d): upgrade trackrelay", slices.Max(vs), all[len(all)-1].version)
	}
	for _, m := range all {
		if slices.Contains(vs, m.version) {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.name, err)
		}
		log.Info("schema migration applied", "migration", m.name)
	}
	return nil
}

// takeNode finds (or gives) this node's number and holds its lock for as
// long as the store is open: a second process with the same node name is
// refused, and a killed node's lock goes with its connection.
func (d *DB) takeNode(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockNodes); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `UPDATE nodes SET last_started = now() WHERE name = $1 RETURNING num`, d.node).Scan(&d.nodeNum)
		if err == nil {
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO nodes (num, name)
			SELECT n, $1 FROM generate_series(1, 255) n WHERE n NOT IN (SELECT num FROM nodes) ORDER BY n LIMIT 1
			RETURNING num`, d.node).Scan(&d.nodeNum)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("all %d node numbers are taken (remove old rows from the nodes table)", store.MaxIDNode)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: node %q: %w", d.node, err)
	}
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: node lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, lockClass, lockNodeBase+d.nodeNum).Scan(&ok); err != nil {
		conn.Release()
		return fmt.Errorf("postgres: node lock: %w", err)
	}
	if !ok {
		conn.Release()
		return fmt.Errorf("postgres: node %q is running already (another process holds its lock): give each relay its own store.node", d.node)
	}
	d.lock = conn
	return d.ids.SetNode(d.nodeNum)
}

// Node returns this node's name and number.
func (d *DB) Node() (string, int) { return d.node, d.nodeNum }

// Close releases the node's lock and closes the pool. It is safe to call
// twice.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.carriedDone
		d.flushCarried(context.Background())
		d.closed.Store(true)
		if d.lock != nil {
			_, _ = d.lock.Exec(context.Background(), `SELECT pg_advisory_unlock($1, $2)`, lockClass, lockNodeBase+d.nodeNum)
			d.lock.Release()
		}
		d.pool.Close()
	})
	return nil
}

// FlushLinkDeliveries writes the delivered copies gathered for the link
// figures now (tests; Close does it too).
func (d *DB) FlushLinkDeliveries(ctx context.Context) { d.flushCarried(ctx) }

// NextID implements store.DB: ids carry this node's number.
func (d *DB) NextID() uint64 { return d.ids.Next() }

// SetBeforeCommit implements store.DB.
func (d *DB) SetBeforeCommit(fn func() error) { d.beforeCommit.Store(&fn) }

// runHook runs the before-commit hook, shared by the callers that arrive
// while one run is going on (one folder fsync covers them all).
func (d *DB) runHook() error {
	hp := d.beforeCommit.Load()
	if hp == nil || *hp == nil {
		return nil
	}
	return d.hook.do(*hp)
}

// hookGroup runs fn for callers so that each caller's run starts after
// its call: callers that arrive during a run share the next one.
type hookGroup struct {
	mu      sync.Mutex
	running bool
	pending *hookRun
}

type hookRun struct {
	done chan struct{}
	err  error
}

func (g *hookGroup) do(fn func() error) error {
	g.mu.Lock()
	if g.pending == nil {
		g.pending = &hookRun{done: make(chan struct{})}
	}
	mine := g.pending
	if !g.running {
		g.running = true
		for g.pending != nil {
			run := g.pending
			g.pending = nil
			g.mu.Unlock()
			run.err = fn()
			close(run.done)
			g.mu.Lock()
		}
		g.running = false
	}
	g.mu.Unlock()
	<-mine.done
	return mine.err
}

// errClosed is store.ErrClosed.
var errClosed = store.ErrClosed

// writeTimeout bounds one write transaction. A write is not cut short by
// its caller's context once begun: a caller must not hear "failed" about
// a write that then lands.
const writeTimeout = 2 * time.Minute

// write runs fn in a transaction, again when PostgreSQL reports a
// deadlock or a serialization failure (fn must be idempotent).
func (d *DB) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if d.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(wctx, d.pool, fn)
		if err == nil || attempt >= 20 || !retryable(err) {
			return err
		}
		time.Sleep(time.Duration(1+rand.IntN(5*(attempt+1))) * time.Millisecond)
	}
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40P01" || pe.Code == "40001"
	}
	return false
}

// shard picks the counter shard of one transaction.
func shard() int16 { return int16(rand.IntN(shards)) }

// Partitions: events_pYYYYMMDD holds t in [day, day+1) (Unix ns).

func partName(day int64) string {
	return "events_p" + time.Unix(day*86400, 0).UTC().Format("20060102")
}

// ensurePartition makes the partition of day (days since 1970) unless it
// exists, under an advisory lock so that nodes do not race.
func (d *DB) ensurePartition(ctx context.Context, day int64) error {
	d.partMu.Lock()
	ok := d.parts[day]
	d.partMu.Unlock()
	if ok {
		return nil
	}
	lo, hi := day*86400*1e9, (day+1)*86400*1e9
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockPartition); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF events FOR VALUES FROM (%d) TO (%d)`, partName(day), lo, hi))
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: partition %s: %w", partName(day), err)
	}
	d.partMu.Lock()
	d.parts[day] = true
	d.partMu.Unlock()
	return nil
}

// ensurePartitions makes the partitions events need.
func (d *DB) ensurePartitions(ctx context.Context, events []store.Event) error {
	var last int64 = -1
	for i := range events {
		day := events[i].Time.UnixNano() / (86400 * 1e9)
		if day == last {
			continue
		}
		last = day
		if err := d.ensurePartition(ctx, day); err != nil {
			return err
		}
	}
	return nil
}

// forgetPartitions drops the cache of partitions (after retention dropped
// some).
func (d *DB) forgetPartitions() {
	d.partMu.Lock()
	d.parts = map[int64]bool{}
	d.partMu.Unlock()
}

func i64(u uint64) int64 { return int64(u) }

// nilIfEmpty returns nil for an empty list, as the bbolt backend does
// (JSON shows null, not []).
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
