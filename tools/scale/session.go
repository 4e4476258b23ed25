package scale

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// counters are what MariaDB counted on one session: rows and index entries
// its engine read (the sum of Handler_read_*: first, key, last, next, prev,
// rnd, rnd_next...) and statements run (Com_select + Com_insert +
// Com_update + Com_delete).
type counters struct {
	rows, stmts int64
}

func (c counters) minus(o counters) counters {
	return counters{rows: c.rows - o.rows, stmts: c.stmts - o.stmts}
}

// session reads the counters of the one connection of a store opened with
// a pool of one, so that they count the store's queries and nothing else.
type session struct {
	db *sql.DB
	// overhead is what reading the counters itself adds between two reads
	// (MariaDB answers SHOW STATUS from a temporary table it reads).
	overhead counters
}

const statusQuery = "SHOW SESSION STATUS WHERE Variable_name LIKE 'Handler\\_read\\_%' " +
	"OR Variable_name IN ('Com_select', 'Com_insert', 'Com_update', 'Com_delete')"

func newSession(ctx context.Context, db *sql.DB) (*session, error) {
	if db.Stats().MaxOpenConnections != 1 {
		return nil, fmt.Errorf("session counters need a pool of one connection, not %d", db.Stats().MaxOpenConnections)
	}
	s := &session{db: db}
	// The least of a few empty deltas: what one read costs.
	prev, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < 3; i++ {
		next, err := s.read(ctx)
		if err != nil {
			return nil, err
		}
		d := next.minus(prev)
		if i == 0 || d.rows < s.overhead.rows {
			s.overhead.rows = d.rows
		}
		if i == 0 || d.stmts < s.overhead.stmts {
			s.overhead.stmts = d.stmts
		}
		prev = next
	}
	return s, nil
}

func (s *session) read(ctx context.Context) (counters, error) {
	rows, err := s.db.QueryContext(ctx, statusQuery)
	if err != nil {
		return counters{}, fmt.Errorf("session status: %w", err)
	}
	defer rows.Close()
	var c counters
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return counters{}, fmt.Errorf("session status: %w", err)
		}
		if strings.HasPrefix(strings.ToLower(name), "handler_read_") {
			c.rows += v
		} else {
			c.stmts += v
		}
	}
	if err := rows.Err(); err != nil {
		return counters{}, fmt.Errorf("session status: %w", err)
	}
	return c, nil
}

// cost is one piece of work as the database and the clock saw it.
type cost struct {
	took time.Duration
	counters
}

// measure runs fn and returns its wall time and what the session counted
// for it. A connection replaced in between (the counters start again)
// shows as a negative delta and is an error.
func (s *session) measure(ctx context.Context, fn func() error) (cost, error) {
	before, err := s.read(ctx)
	if err != nil {
		return cost{}, err
	}
	start := time.Now()
	ferr := fn()
	took := time.Since(start)
	if ferr != nil {
		return cost{}, ferr
	}
	after, err := s.read(ctx)
	if err != nil {
		return cost{}, err
	}
	d := after.minus(before).minus(s.overhead)
	if d.rows < 0 || d.stmts < 0 {
		return cost{}, fmt.Errorf("session counters went back (%+v): the connection was replaced", d)
	}
	return cost{took: took, counters: d}, nil
}

// median runs fn n times under measure and returns the run of median time
// (its counters with it): one slow outlier on a busy machine does not
// make a flat figure look grown.
func (s *session) median(ctx context.Context, n int, fn func() error) (cost, error) {
	runs := make([]cost, 0, n)
	for range n {
		c, err := s.measure(ctx, fn)
		if err != nil {
			return cost{}, err
		}
		runs = append(runs, c)
	}
	slices.SortFunc(runs, func(a, b cost) int { return cmp.Compare(a.took, b.took) })
	return runs[len(runs)/2], nil
}
