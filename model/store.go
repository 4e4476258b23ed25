package model

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

//go:embed migrations
var migrations embed.FS

// Errors the store returns; callers test them with errors.Is.
var (
	ErrNotFound  = errors.New("not found")
	ErrDuplicate = errors.New("duplicate") // a unique index refused the row
)

// Pool sizes the connection pool.
type Pool struct {
	MaxOpen     int
	MaxIdle     int
	MaxLifetime time.Duration
}

// Store is the database. Its query methods come from the embedded Tx, so the
// same method runs inside or outside a transaction.
type Store struct {
	Queries
	sqlDB  *sql.DB
	driver string
	// galera: the server is a node of a Galera cluster (wsrep_on), whose
	// readiness is more than answering.
	galera bool
	retry  Retry
}

// Tx is a handle for queries: the store itself or one transaction.
type Queries struct {
	db *gorm.DB
}

// Open connects to driver ("sqlite" or "mysql") and checks the connection.
// For MySQL the DSN is normalised so that times are read and written in UTC
// and text is utf8mb4, whatever the operator wrote.
func Open(ctx context.Context, driver, dsn string, pool Pool) (*Store, error) {
	var dialector gorm.Dialector
	galera := false
	switch driver {
	case "mysql":
		cfg, err := mysqldrv.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("open mysql: parse dsn: %w", err)
		}
		cfg.ParseTime = true
		cfg.Loc = time.UTC
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params["time_zone"] = "'+00:00'"
		cfg.Collation = "utf8mb4_bin"
		// Arguments are escaped into the statement by the driver: one round
		// trip per statement, no server-side prepare (a statement too big
		// for max_allowed_packet, a large PDF, falls back to one).
		cfg.InterpolateParams = true
		// Times go out with milliseconds, the precision of every DATETIME(3)
		// column: a bound written with nanoseconds makes MariaDB 10.11 read
		// the whole table instead of the index's range (a claim's
		// next_check_at <= ?, say), and a stored time is then truncated,
		// never rounded up into the next millisecond.
		if err := cfg.Apply(mysqldrv.TimeTruncate(time.Millisecond)); err != nil {
			return nil, fmt.Errorf("open mysql: %w", err)
		}
		// A database that stops answering without closing its connections
		// must not hold a callback forever: bound each read and write on
		// the wire unless the operator chose other limits.
		if cfg.Timeout == 0 {
			cfg.Timeout = 5 * time.Second
		}
		if cfg.ReadTimeout == 0 {
			cfg.ReadTimeout = 30 * time.Second
		}
		if cfg.WriteTimeout == 0 {
			cfg.WriteTimeout = 30 * time.Second
		}
		if galera, err = isGalera(ctx, cfg); err != nil {
			return nil, fmt.Errorf("open mysql: %w", err)
		}
		// On a Galera cluster a read sees what another node committed
		// only once this node has applied it, a moment later: a callback
		// arriving through this node about an order created through
		// another would find no order and be refused for good (200001).
		// Causal reads (wsrep_sync_wait=1: a SELECT or BEGIN first waits
		// until this node has applied everything committed anywhere
		// before it) close that gap for one group round trip per read.
		// The DSN may say otherwise.
		if _, set := cfg.Params["wsrep_sync_wait"]; galera && !set {
			cfg.Params["wsrep_sync_wait"] = "1"
		}
		dialector = mysql.New(mysql.Config{DSNConfig: cfg, DefaultStringSize: 256})
	case "sqlite":
		path := dsn
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if dir := filepath.Dir(path); dir != "." && path != ":memory:" {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("open sqlite: %w", err)
			}
		}
		// WAL lets readers run beside the writer; busy_timeout makes a second
		// writer wait instead of failing; synchronous FULL makes each commit
		// durable before the callback is answered.
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dialector = sqlite.Open(dsn + sep + "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)")
	default:
		return nil, fmt.Errorf("open: unknown driver %q", driver)
	}
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:                 logger.Discard,
		NowFunc:                func() time.Time { return time.Now().UTC().Truncate(time.Millisecond) },
		SkipDefaultTransaction: true,
		// No GORM statement cache. Outside a transaction it prepares a new
		// statement holding its global lock while it waits for a pool
		// connection; a transaction, which holds a connection, waits for
		// that lock before each statement: with the pool full of
		// transactions nothing moves again (go-gorm/gorm#7465; the load
		// test froze a gateway with more callbacks at once than
		// connections). Statements first seen inside a transaction were
		// also prepared and closed again on every use.
		PrepareStmt: false,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", driver, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", driver, err)
	}
	if driver == "sqlite" {
		// One connection: SQLite has one writer, and a second pooled
		// connection would only meet SQLITE_BUSY.
		sqlDB.SetMaxOpenConns(1)
	} else {
		sqlDB.SetMaxOpenConns(pool.MaxOpen)
		sqlDB.SetMaxIdleConns(pool.MaxIdle)
		sqlDB.SetConnMaxLifetime(pool.MaxLifetime)
	}
	s := &Store{Queries: Queries{db: db}, sqlDB: sqlDB, driver: driver, galera: galera}
	if err := s.Ping(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	return s, nil
}

// Driver is "sqlite" or "mysql".
func (s *Store) Driver() string { return s.driver }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", s.driver, err)
	}
	return nil
}

// isGalera reports whether the server at cfg is a node of a Galera
// cluster with replication on (MariaDB Galera Cluster, Percona XtraDB
// Cluster). MySQL has no such variable and answers no row.
func isGalera(ctx context.Context, cfg *mysqldrv.Config) (bool, error) {
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return false, err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	var name, value string
	err = db.QueryRowContext(ctx, "SHOW VARIABLES LIKE 'wsrep_on'").Scan(&name, &value)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ping mysql: %w", err)
	}
	return strings.EqualFold(value, "ON"), nil
}

// Galera reports whether the store is on a node of a Galera cluster.
func (s *Store) Galera() bool { return s.galera }

// Ready checks that the database takes work, not only that it answers: it
// reads a table (goose's, there once migrated). A Galera node that has left
// the primary component still accepts connections, pings and SETs but
// refuses every read and write of a table (1047), so a ping alone would
// keep a load balancer sending it callbacks it cannot store; on Galera
// wsrep_ready must also be ON, which it is not on such a node even where
// wsrep_dirty_reads lets reads through. A MySQL server in read-only mode (a
// replica, a Group Replication secondary, a server under maintenance) reads
// but refuses every write: not ready either.
func (s *Store) Ready(ctx context.Context) error {
	if s.driver == "mysql" {
		// No row where the variable does not exist (TiDB before 5.2).
		var name, value string
		err := s.sqlDB.QueryRowContext(ctx, "SHOW GLOBAL VARIABLES LIKE 'read_only'").Scan(&name, &value)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("ready: read_only: %w", err)
		}
		if strings.EqualFold(value, "ON") || value == "1" {
			return errors.New("ready: the server is read-only")
		}
	}
	if s.galera {
		var name, value string
		if err := s.sqlDB.QueryRowContext(ctx, "SHOW STATUS LIKE 'wsrep_ready'").Scan(&name, &value); err != nil {
			return fmt.Errorf("ready: wsrep_ready: %w", err)
		}
		if !strings.EqualFold(value, "ON") {
			return fmt.Errorf("ready: wsrep_ready is %s: this node is not in the cluster's primary component", value)
		}
	}
	var version int64
	if err := s.sqlDB.QueryRowContext(ctx, "SELECT version_id FROM goose_db_version ORDER BY id DESC LIMIT 1").Scan(&version); err != nil {
		return fmt.Errorf("ready: read a table: %w", err)
	}
	return nil
}

// DB is the store's pool, for the tools and tests that read or fill the
// tables directly: the load test's fill, the EXPLAIN test of the list
// queries. The gateway itself goes through Queries.
func (s *Store) DB() *sql.DB { return s.sqlDB }

// Close closes the pool.
func (s *Store) Close() error { return s.sqlDB.Close() }

// Migrate applies the pending migrations of this dialect. On MySQL a lock
// row in goose's table goose_lock serialises instances that start
// together, so that two replicas never run the same migration at once: a
// row, because a named lock (GET_LOCK) holds on one server only, and the
// instances of a Galera cluster each migrate through their own node. Of
// several taking the row at once, on one server or through several nodes,
// one gets it (a duplicate key, or a certification failure at COMMIT); the
// others wait for it, and then find the migrations applied. The holder
// renews it while it migrates; one that dies leaves it to run out (30 s).
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	ctx = WithOp(ctx, "migrate")
	dialect, dir := goose.DialectSQLite3, "migrations/sqlite"
	if s.driver == "mysql" {
		dialect, dir = goose.DialectMySQL, "migrations/mysql"
	}
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var results []*goose.MigrationResult
	err = s.retrying(ctx, func() (err error) {
		// A provider per attempt: one makes sure of its version table
		// only once, even when that failed, and would then take an empty
		// table for a database that has none of its rows.
		p, err := goose.NewProvider(dialect, s.sqlDB, fsys)
		if err != nil {
			return err
		}
		if s.driver == "mysql" {
			// The lock is held around the whole of Up, not given to
			// the provider: Up first asks HasPending, which creates the
			// version table without the provider's lock, and two
			// instances creating it at once may each leave it without
			// its first row for the other. A migration adding an index
			// to a large table may take minutes; the instances starting
			// meanwhile wait as long.
			locker, err := lock.NewMySQLTableLocker(lock.WithTableLockTimeout(500*time.Millisecond, 600))
			if err != nil {
				return err
			}
			if err := locker.Lock(ctx, s.sqlDB); err != nil {
				return err
			}
			defer func() { err = errors.Join(err, locker.Unlock(ctx, s.sqlDB)) }()
		}
		results, err = p.Up(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	applied := make([]string, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Path)
	}
	return applied, nil
}

// InTx runs fn in one transaction: committed when fn returns nil, rolled
// back otherwise. A transaction the database refused over a conflict (a
// deadlock; on Galera a certification failure, at any statement or at
// COMMIT) is run again from its start, as the store's Retry says: fn must
// be safe to run again, setting afresh whatever it hands out (a row's ID
// from the failed attempt must not be reused), and must return every error
// of a statement, since after a refusal the transaction is gone and a
// COMMIT would do nothing.
func (s *Store) InTx(ctx context.Context, fn func(q Queries) error) error {
	return s.retrying(ctx, func() error {
		return s.db.WithContext(ctx).Transaction(func(db *gorm.DB) error {
			return fn(Queries{db: db})
		})
	})
}

// With returns a handle bound to ctx.
func (q Queries) With(ctx context.Context) Queries { return Queries{db: q.db.WithContext(ctx)} }

// isDuplicate reports whether err is a unique-index violation, on MySQL
// (1062) or SQLite (SQLITE_CONSTRAINT_UNIQUE / PRIMARYKEY).
func isDuplicate(err error) bool {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// duplicateOn tells which unique index refused a row: the MySQL key name or
// the SQLite column list contains the given marker.
func duplicateOn(err error, mysqlKey, sqliteColumn string) bool {
	if !isDuplicate(err) {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, mysqlKey) || strings.Contains(msg, sqliteColumn)
}

// MaxPacket returns MySQL's max_allowed_packet, the largest statement the
// server takes; 0 on SQLite, which has no such limit.
func (s *Store) MaxPacket(ctx context.Context) (int64, error) {
	if s.driver != "mysql" {
		return 0, nil
	}
	var n int64
	if err := s.sqlDB.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&n); err != nil {
		return 0, fmt.Errorf("max_allowed_packet: %w", err)
	}
	return n, nil
}
