package scale

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"regexp"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/tools/fill"
)

// Sizes of the two databases that the targets speak of.
const (
	SmallOrders = 10_000
	LargeOrders = 1_000_000
)

// dbName is what Prepare creates: no quoting needed, nothing to inject.
var dbName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// Prepare makes the database of dsn ready to measure: it creates it when
// it does not exist, migrates it and, when it has no order, fills it with
// orders orders (package fill, seed 1). A database that has orders is left
// as it is, so that a second run measures the same data without filling
// again. Loopback only.
func Prepare(ctx context.Context, dsn string, orders int, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	if err := LoopbackDSN(dsn); err != nil {
		return err
	}
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return err
	}
	if !dbName.MatchString(cfg.DBName) {
		return fmt.Errorf("database name %q: want letters, digits and _", cfg.DBName)
	}
	admin := cfg.Clone()
	admin.DBName = ""
	db, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.DBName+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
	db.Close()
	if err != nil {
		return fmt.Errorf("create database %s: %w", cfg.DBName, err)
	}
	// A fill of a million orders builds an index of a million callbacks
	// in one statement: more than the 30 s a gateway's store waits for an
	// answer by default, on a busy machine.
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Minute
	}
	store, err := model.Open(ctx, "mysql", cfg.FormatDSN(), model.Pool{MaxOpen: 8, MaxIdle: 8, MaxLifetime: time.Hour})
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", cfg.DBName, err)
	}
	var n int64
	if err := store.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM orders").Scan(&n); err != nil {
		return fmt.Errorf("count orders of %s: %w", cfg.DBName, err)
	}
	if n > 0 {
		fmt.Fprintf(progress, "scale: %s has %d orders already: measured as it is\n", cfg.DBName, n)
		return nil
	}
	fmt.Fprintf(progress, "scale: filling %s with %d orders\n", cfg.DBName, orders)
	rep, err := fill.Run(ctx, store.DB(), fill.Options{Orders: orders, Seed: 1, Progress: progress})
	if err != nil {
		return fmt.Errorf("fill %s: %w", cfg.DBName, err)
	}
	fmt.Fprintf(progress, "scale: filled %s: %d orders in %s\n", cfg.DBName, rep.Orders, rep.Took.Round(time.Second))
	return nil
}
