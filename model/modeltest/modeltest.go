// Package modeltest opens real stores for tests: an SQLite file in a
// temporary folder, and MariaDB/MySQL when GATEWAY_TEST_MYSQL_DSN names a
// server (CI always sets it). Each MySQL store is a database of its own,
// dropped when the test ends, so tests run in parallel without seeing each
// other's rows.
package modeltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/model"
)

// EnvDSN names the variable that points the tests at MySQL.
const EnvDSN = "GATEWAY_TEST_MYSQL_DSN"

// Drivers returns the stores a test should run on: "sqlite" always, and
// "mysql" when EnvDSN is set.
func Drivers(getenv func(string) string) []string {
	if getenv(EnvDSN) == "" {
		return []string{"sqlite"}
	}
	return []string{"sqlite", "mysql"}
}

// ForEach runs fn as a subtest on each driver with a fresh, migrated store.
// Without EnvDSN the MySQL subtest is skipped, saying why.
func ForEach(t *testing.T, getenv func(string) string, fn func(t *testing.T, s *model.Store)) {
	t.Helper()
	for _, d := range []string{"sqlite", "mysql"} {
		t.Run(d, func(t *testing.T) {
			if d == "mysql" && getenv(EnvDSN) == "" {
				t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", EnvDSN)
			}
			fn(t, Open(t, d, getenv))
		})
	}
}

// Open returns a fresh migrated store on driver, closed when the test ends.
func Open(t testing.TB, driver string, getenv func(string) string) *model.Store {
	t.Helper()
	driverName, dsn := DSN(t, driver, getenv)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := model.Open(ctx, driverName, dsn, model.Pool{MaxOpen: 32, MaxIdle: 16, MaxLifetime: time.Minute})
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate %s: %v", driver, err)
	}
	return s
}

// DSN creates an empty database for the test and returns its driver and
// DSN, for tests that start the real program against it.
func DSN(t testing.TB, driver string, getenv func(string) string) (string, string) {
	t.Helper()
	if driver == "sqlite" {
		return "sqlite", filepath.Join(t.TempDir(), "gateway.db")
	}
	base := getenv(EnvDSN)
	if base == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", EnvDSN)
	}
	cfg, err := mysqldrv.ParseDSN(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvDSN, err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "gwtest_" + hex.EncodeToString(b[:])
	admin := cfg.Clone()
	admin.DBName = ""
	db, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatalf("mysql: %v", err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", admin.FormatDSN())
		if err == nil {
			db.Exec("DROP DATABASE IF EXISTS " + name)
			db.Close()
		}
	})
	cfg.DBName = name
	cfg.ParseTime = true
	return "mysql", cfg.FormatDSN()
}

// Exec runs one statement on the store's pool, for a test that puts a row
// in a state no gateway path would (a lease of another instance, say).
// Times are written in UTC, as the store writes them.
func Exec(t testing.TB, s *model.Store, query string, args ...any) {
	t.Helper()
	for i, a := range args {
		if at, ok := a.(time.Time); ok {
			args[i] = at.UTC()
		}
	}
	if _, err := s.DB().Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// GooseTable is goose's bookkeeping: its rows differ by when they were
// written, and the migrations do not define it, goose does.
const GooseTable = "goose_db_version"

// GooseLockTable is goose's too: the row that serialises instances
// migrating at once (model.Store.Migrate), made by goose when first taken.
const GooseLockTable = "goose_lock"

// autoIncrement is the table option that says how many rows were inserted.
var autoIncrement = regexp.MustCompile(` AUTO_INCREMENT=\d+`)

// CreateTables returns SHOW CREATE TABLE of every table of the MySQL
// database db is connected to, but goose's two, normalised:
// AUTO_INCREMENT=n removed. Two databases with the same schema give equal
// maps, whatever rows they hold.
func CreateTables(t testing.TB, ctx context.Context, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.QueryContext(ctx, "SHOW TABLES")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	out := map[string]string{}
	for _, n := range names {
		if n == GooseTable || n == GooseLockTable {
			continue
		}
		var name, create string
		if err := db.QueryRowContext(ctx, "SHOW CREATE TABLE `"+n+"`").Scan(&name, &create); err != nil {
			t.Fatalf("show create table %s: %v", n, err)
		}
		out[n] = autoIncrement.ReplaceAllString(create, "")
	}
	return out
}
