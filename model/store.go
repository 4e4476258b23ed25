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
	s := &Store{Queries: Queries{db: db}, sqlDB: sqlDB, driver: driver}
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

// DB is the store's pool, for the tools and tests that read or fill the
// tables directly: the load test's fill, the EXPLAIN test of the list
// queries. The gateway itself goes through Queries.
func (s *Store) DB() *sql.DB { return s.sqlDB }

// Close closes the pool.
func (s *Store) Close() error { return s.sqlDB.Close() }

// Migrate applies the pending migrations of this dialect. On MySQL a named
// lock serialises instances that start together, so that two replicas never
// run the same migration at once.
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	dialect, dir := goose.DialectSQLite3, "migrations/sqlite"
	if s.driver == "mysql" {
		dialect, dir = goose.DialectMySQL, "migrations/mysql"
		conn, err := s.sqlDB.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		defer conn.Close()
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('gateway_migrate', 60)").Scan(&got); err != nil || got.Int64 != 1 {
			return nil, fmt.Errorf("migrate: lock not obtained (%v)", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK('gateway_migrate')")
	}
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(dialect, s.sqlDB, fsys)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	results, err := p.Up(ctx)
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
// back otherwise.
func (s *Store) InTx(ctx context.Context, fn func(q Queries) error) error {
	return s.db.WithContext(ctx).Transaction(func(db *gorm.DB) error {
		return fn(Queries{db: db})
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
