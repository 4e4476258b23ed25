package fill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// The indexes whose keys arrive in random order: with the buffer pool
// smaller than they grow, each row inserted reads a page of each from disk.
// The dedup indexes lead with the orderno now (docs/decisions.md §44), so
// that three workers' chunks insert at three places, not at random; they
// are built at the end all the same, which is no slower.
// A fill of an empty database drops them first and builds them at the end,
// sorted, in one pass per table: the usual bulk load. Their definitions are
// read from the database itself, so that what is built again is what the
// migrations made.
var deferred = []struct{ table, index string }{
	{"orders", "uk_orders_active"},
	{"orders", "ix_orders_applicant_name"},
	{"callbacks", "uk_callbacks_dedup"},
	{"payments", "uk_payments_dedup"},
}

// indexDef is one index as information_schema describes it.
type indexDef struct {
	table, name string
	unique      bool
	cols        []string // `col` or `col`(n)
}

func (d indexDef) add() string {
	kind := "KEY"
	if d.unique {
		kind = "UNIQUE KEY"
	}
	return fmt.Sprintf("ADD %s `%s` (%s)", kind, d.name, strings.Join(d.cols, ", "))
}

// deferIndexes drops the deferred indexes and returns the function that
// builds them again.
func deferIndexes(ctx context.Context, db *sql.DB, progress io.Writer) (func(context.Context) error, error) {
	var defs []indexDef
	for _, d := range deferred {
		def, err := readIndex(ctx, db, d.table, d.index)
		if err != nil {
			return nil, err
		}
		defs = append(defs, def)
	}
	byTable := map[string][]indexDef{}
	var order []string
	for _, d := range defs {
		if byTable[d.table] == nil {
			order = append(order, d.table)
		}
		byTable[d.table] = append(byTable[d.table], d)
	}
	var dropped []string
	restore := func(ctx context.Context) error {
		var errs []error
		for _, t := range dropped {
			var adds []string
			for _, d := range byTable[t] {
				adds = append(adds, d.add())
			}
			start := time.Now()
			if _, err := db.ExecContext(ctx, "ALTER TABLE "+t+" "+strings.Join(adds, ", ")); err != nil {
				errs = append(errs, fmt.Errorf("fill: build the indexes of %s again (%s): %w", t, strings.Join(adds, ", "), err))
				continue
			}
			if progress != nil {
				fmt.Fprintf(progress, "fill: indexes of %s built in %v\n", t, time.Since(start).Round(time.Millisecond))
			}
		}
		return errors.Join(errs...)
	}
	for _, t := range order {
		var drops []string
		for _, d := range byTable[t] {
			drops = append(drops, "DROP KEY `"+d.name+"`")
		}
		if _, err := db.ExecContext(ctx, "ALTER TABLE "+t+" "+strings.Join(drops, ", ")); err != nil {
			return nil, errors.Join(fmt.Errorf("fill: drop the indexes of %s for the load: %w", t, err), restore(context.WithoutCancel(ctx)))
		}
		dropped = append(dropped, t)
	}
	return restore, nil
}

func readIndex(ctx context.Context, db *sql.DB, table, index string) (indexDef, error) {
	rows, err := db.QueryContext(ctx, `SELECT non_unique, column_name, sub_part FROM information_schema.statistics
		WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? ORDER BY seq_in_index`, table, index)
	if err != nil {
		return indexDef{}, fmt.Errorf("fill: index %s.%s: %w", table, index, err)
	}
	defer rows.Close()
	d := indexDef{table: table, name: index}
	for rows.Next() {
		var nonUnique int
		var col string
		var sub sql.NullInt64
		if err := rows.Scan(&nonUnique, &col, &sub); err != nil {
			return indexDef{}, fmt.Errorf("fill: index %s.%s: %w", table, index, err)
		}
		d.unique = nonUnique == 0
		c := "`" + col + "`"
		if sub.Valid {
			c += fmt.Sprintf("(%d)", sub.Int64)
		}
		d.cols = append(d.cols, c)
	}
	if err := rows.Err(); err != nil {
		return indexDef{}, fmt.Errorf("fill: index %s.%s: %w", table, index, err)
	}
	if len(d.cols) == 0 {
		return indexDef{}, fmt.Errorf("fill: index %s.%s not found: is the database migrated to the current version?", table, index)
	}
	return d, nil
}
