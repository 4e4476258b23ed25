package fill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// A fill of an empty database drops every secondary index of the tables
// that have one whose keys arrive in random order, before the rows go in,
// and builds them again at the end, each table's in one ALTER TABLE: the
// usual bulk load. While the rows go in, such a table is then only its
// clustered index, which grows at its end (ids in order), instead of that
// plus indexes that, once they outgrow the buffer pool, cost a page read
// per row and index. InnoDB builds the indexes of one ALTER TABLE in one
// scan of the table, each sorted, written page after page; since the scan
// is paid for the random ones, the table's others are built in it too.
//
// The tables whose indexes all grow at their end, as the ids do (keysInOrder),
// keep them: maintaining them costs little, and building them afterwards
// would cost a scan of the table (the PDFs' 1.8 GB at a million orders) for
// nothing.
//
// The definitions are read from the database itself (information_schema),
// so that what is built again is what the migrations made, in the same
// order; and the tables' SHOW CREATE TABLE is compared before and after, so
// that a fill that would leave the schema otherwise fails saying so. The
// primary keys stay.

// keysInOrder are the filled tables whose every secondary index takes its
// keys in about the order of the ids: the order number (the order's id in
// ten digits) or a time that grows with it, or a column with a handful of
// values (a handful of places that grow at their end), or one value for
// all (the PDFs' sha256).
var keysInOrder = map[string]bool{"order_events": true, "outbound_calls": true, "guarantee_files": true,
	"deliveries": true}

// buildsAtOnce is how many tables have their indexes built at once, each on
// a connection of its own: the orders' take longest, the others' are built
// meanwhile (a build is mostly one thread of the server's).
const buildsAtOnce = 2

// indexDef is one index as information_schema describes it.
type indexDef struct {
	table, name string
	unique      bool
	cols        []string // `col`, `col`(n), `col` DESC
}

func (d indexDef) add() string {
	kind := "KEY"
	if d.unique {
		kind = "UNIQUE KEY"
	}
	return fmt.Sprintf("ADD %s `%s` (%s)", kind, d.name, strings.Join(d.cols, ", "))
}

// deferIndexes drops the secondary indexes of the filled tables and returns
// the function that builds them again and checks that the tables are back
// as they were.
func deferIndexes(ctx context.Context, db *sql.DB, progress io.Writer) (func(context.Context) error, error) {
	type tableState struct {
		name   string
		create string // SHOW CREATE TABLE before, AUTO_INCREMENT left out
		defs   []indexDef
	}
	var states []tableState
	for _, t := range tables {
		if keysInOrder[t.name] {
			continue
		}
		create, err := showCreate(ctx, db, t.name)
		if err != nil {
			return nil, err
		}
		defs, err := readIndexes(ctx, db, t.name)
		if err != nil {
			return nil, err
		}
		states = append(states, tableState{name: t.name, create: create, defs: defs})
	}
	var dropped []*tableState
	restore := func(ctx context.Context) error {
		var (
			mu   sync.Mutex
			errs []error
			wg   sync.WaitGroup
			sem  = make(chan struct{}, buildsAtOnce)
		)
		fail := func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		for _, st := range dropped {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				var adds []string
				for _, d := range st.defs {
					adds = append(adds, d.add())
				}
				start := time.Now()
				if _, err := db.ExecContext(ctx, "ALTER TABLE `"+st.name+"` "+strings.Join(adds, ", ")); err != nil {
					fail(fmt.Errorf("fill: build the indexes of %s again (%s): %w", st.name, strings.Join(adds, ", "), err))
					return
				}
				if progress != nil {
					mu.Lock()
					fmt.Fprintf(progress, "fill: %d indexes of %s built in %v\n", len(adds), st.name, time.Since(start).Round(time.Millisecond))
					mu.Unlock()
				}
				after, err := showCreate(ctx, db, st.name)
				if err != nil {
					fail(err)
				} else if after != st.create {
					fail(fmt.Errorf("fill: %s is not as migrated after its indexes were built again:\nbefore:\n%s\nafter:\n%s", st.name, st.create, after))
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	for i := range states {
		st := &states[i]
		if len(st.defs) == 0 {
			continue
		}
		var drops []string
		for _, d := range st.defs {
			drops = append(drops, "DROP KEY `"+d.name+"`")
		}
		if _, err := db.ExecContext(ctx, "ALTER TABLE `"+st.name+"` "+strings.Join(drops, ", ")); err != nil {
			return nil, errors.Join(fmt.Errorf("fill: drop the indexes of %s for the load: %w", st.name, err), restore(context.WithoutCancel(ctx)))
		}
		dropped = append(dropped, st)
	}
	return restore, nil
}

// readIndexes reads the secondary indexes of table, in the table's order
// (information_schema lists them so; the order is SHOW CREATE TABLE's, which
// building them again in it keeps).
func readIndexes(ctx context.Context, db *sql.DB, table string) ([]indexDef, error) {
	rows, err := db.QueryContext(ctx, `SELECT index_name, seq_in_index, non_unique, column_name, sub_part, collation,
		index_type, index_comment FROM information_schema.statistics
		WHERE table_schema = DATABASE() AND table_name = ? AND index_name <> 'PRIMARY'`, table)
	if err != nil {
		return nil, fmt.Errorf("fill: indexes of %s: %w", table, err)
	}
	defer rows.Close()
	var defs []indexDef
	for rows.Next() {
		var name, col string
		var seq, nonUnique int
		var sub sql.NullInt64
		var coll sql.NullString
		var typ, comment string
		if err := rows.Scan(&name, &seq, &nonUnique, &col, &sub, &coll, &typ, &comment); err != nil {
			return nil, fmt.Errorf("fill: indexes of %s: %w", table, err)
		}
		if typ != "BTREE" || comment != "" {
			// Not a plain index: leave the table's indexes alone rather
			// than build something else.
			return nil, fmt.Errorf("fill: index %s.%s is %s (comment %q): only plain BTREE indexes are deferred; fill with KeepIndexes", table, name, typ, comment)
		}
		if len(defs) == 0 || defs[len(defs)-1].name != name {
			defs = append(defs, indexDef{table: table, name: name, unique: nonUnique == 0})
		}
		c := "`" + col + "`"
		if sub.Valid {
			c += fmt.Sprintf("(%d)", sub.Int64)
		}
		if coll.String == "D" {
			c += " DESC"
		}
		d := &defs[len(defs)-1]
		if seq != len(d.cols)+1 {
			return nil, fmt.Errorf("fill: index %s.%s: column %d listed after %d", table, name, seq, len(d.cols))
		}
		d.cols = append(d.cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fill: indexes of %s: %w", table, err)
	}
	return defs, nil
}

// autoIncrement is the table option that a fill changes on purpose.
var autoIncrement = regexp.MustCompile(` AUTO_INCREMENT=\d+`)

// showCreate is table's SHOW CREATE TABLE without its AUTO_INCREMENT.
func showCreate(ctx context.Context, db *sql.DB, table string) (string, error) {
	var name, create string
	if err := db.QueryRowContext(ctx, "SHOW CREATE TABLE `"+table+"`").Scan(&name, &create); err != nil {
		return "", fmt.Errorf("fill: show create table %s: %w", table, err)
	}
	return autoIncrement.ReplaceAllString(create, ""), nil
}
