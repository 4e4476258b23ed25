// Package scale measures what the gateway's work costs on a database of
// years of data against one of a few days: the same measurements on a
// small database (10,000 orders) and a large one (1,000,000), side by side
// with their growth factor (large / small), each against its target. Work
// that reads rows in proportion to its own size stays flat however many
// orders there are; work that reads the table grows a hundredfold.
//
// SQL work is measured where the database counts it: the gateway's queries
// run on a store of one connection, and the delta of MariaDB's session
// counters on that connection (Handler_read_*: rows and index entries the
// engine read; Com_select, Com_insert, Com_update, Com_delete: statements)
// is what the work cost, whatever the plan. HTTP work (GET /metrics, a
// paystate callback, the rolling restart) runs against gateways started on
// loopback on the same database, built by gateway.New as in production.
//
// The run writes to the databases: it claims and releases leases, files
// the reconciliation's findings of the day, touches updated_at of 1,000
// orders, and stores callbacks for orders it creates (deleted again at the
// end). Loopback only, MariaDB or MySQL only (the counters are theirs).
package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime/debug"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/tools/loadtest"
)

// Config is one scale run.
type Config struct {
	// SmallDSN and LargeDSN name two filled MySQL/MariaDB databases on
	// this machine (go-sql-driver DSNs), migrated.
	SmallDSN, LargeDSN string
	// BatchSize is the scheduler's batch (default: jobs.batch_size's
	// default): the claims are made with it and their target is a multiple
	// of it.
	BatchSize int
	// Callbacks is how many paystate callbacks the rolling restart may
	// send, one per order created for it (default 3000).
	Callbacks int
	// Timeout bounds the measurements of one database (default 10 min).
	Timeout time.Duration
	// Out receives the table; Log the gateways' logs (nil: discarded) and
	// Progress a line per step (nil: none).
	Out, Log, Progress io.Writer
}

// DefaultCallbacks is how many callbacks the rolling restart may send.
const DefaultCallbacks = 3000

func (c *Config) defaults() {
	if c.BatchSize == 0 {
		var d config.Config
		d.ApplyDefaults()
		c.BatchSize = d.Jobs.BatchSize
	}
	if c.Callbacks == 0 {
		c.Callbacks = DefaultCallbacks
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

func (c *Config) check() error {
	var errs []error
	for name, dsn := range map[string]string{"small": c.SmallDSN, "large": c.LargeDSN} {
		if dsn == "" {
			errs = append(errs, fmt.Errorf("%s database: a MySQL DSN is required", name))
			continue
		}
		if err := LoopbackDSN(dsn); err != nil {
			errs = append(errs, fmt.Errorf("%s database: %w", name, err))
		}
	}
	if c.SmallDSN != "" && c.SmallDSN == c.LargeDSN {
		errs = append(errs, errors.New("the small and the large database are the same"))
	}
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		errs = append(errs, fmt.Errorf("batch size %d: want 1..10000", c.BatchSize))
	}
	if c.Callbacks < 100 || c.Callbacks > 100_000 {
		errs = append(errs, fmt.Errorf("callbacks %d: want 100..100000", c.Callbacks))
	}
	return errors.Join(errs...)
}

// LoopbackDSN insists that a MySQL DSN names a database on this machine: a
// benchmark never loads a shared server.
func LoopbackDSN(dsn string) error {
	if err := loadtest.LoopbackDSN(dsn); err != nil {
		return err
	}
	if cfg, _ := mysqldrv.ParseDSN(dsn); cfg == nil || cfg.DBName == "" {
		return errors.New("mysql dsn: names no database")
	}
	return nil
}

// Report is the two databases' figures.
type Report struct {
	Small, Large *Figures
	Rows         []Row // in table order
}

// Row is one line of the table.
type Row struct {
	Name         string
	Unit         string
	Small, Large float64
	Growth       float64 // Large / Small; NaN when Small is 0
	Target       Target
	OK           bool // both figures meet the target (true without one)
}

// Failed lists the rows that missed their target.
func (r *Report) Failed() []Row {
	var out []Row
	for _, row := range r.Rows {
		if !row.OK {
			out = append(out, row)
		}
	}
	return out
}

// Run measures the small database, then the large one, writes the table to
// cfg.Out and returns the report. The error says when the run could not be
// made, or names the targets missed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("scale: %w", err)
	}
	r := &Report{}
	var err error
	for _, db := range []struct {
		name string
		dsn  string
		into **Figures
	}{{"small", cfg.SmallDSN, &r.Small}, {"large", cfg.LargeDSN, &r.Large}} {
		mctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		*db.into, err = measure(mctx, cfg, db.name, db.dsn)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("scale: %s database: %w", db.name, err)
		}
	}
	r.Rows = join(r.Small, r.Large)
	if cfg.Out != nil {
		r.Print(cfg.Out)
	}
	if failed := r.Failed(); len(failed) > 0 {
		names := make([]string, len(failed))
		for i, row := range failed {
			names[i] = row.Name
		}
		return r, fmt.Errorf("scale: %d target(s) missed: %s", len(failed), strings.Join(names, "; "))
	}
	return r, nil
}

// join lines the two databases' figures up by name.
func join(small, large *Figures) []Row {
	rows := make([]Row, 0, len(small.List))
	for _, s := range small.List {
		l, ok := large.get(s.Name)
		if !ok {
			continue
		}
		row := Row{Name: s.Name, Unit: s.Unit, Small: s.Value, Large: l.Value, Target: s.Target, Growth: math.NaN()}
		if s.Value != 0 {
			row.Growth = l.Value / s.Value
		} else if l.Value == 0 {
			row.Growth = 1
		}
		row.OK = s.Target.Met(s.Value) && s.Target.Met(l.Value)
		rows = append(rows, row)
	}
	return rows
}

// Print writes the report as a markdown table, headed by the databases'
// sizes and the build's commit.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "scale: small %s (%d orders), large %s (%d orders), batch %d, built from %s\n\n",
		r.Small.Database, r.Small.Orders, r.Large.Database, r.Large.Orders, r.Small.Batch, revision())
	small, large := "small", "large"
	if r.Small.Orders > 0 {
		small = count(r.Small.Orders)
	}
	if r.Large.Orders > 0 {
		large = count(r.Large.Orders)
	}
	fmt.Fprintf(w, "| measurement | %s | %s | growth | target | ok |\n", small, large)
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | --- | --- |")
	for _, row := range r.Rows {
		ok := "ok"
		switch {
		case !row.OK:
			ok = "**FAIL**"
		case row.Target.Kind == NoTarget:
			ok = ""
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", row.Name, format(row.Small, row.Unit),
			format(row.Large, row.Unit), growth(row.Growth), row.Target, ok)
	}
	if failed := r.Failed(); len(failed) > 0 {
		fmt.Fprintf(w, "\nFAIL: %d of %d targets missed\n", len(failed), len(r.Rows))
	} else {
		fmt.Fprintf(w, "\nPASS: every target met\n")
	}
}

// count writes 10000 as 10k and 1000000 as 1M when round.
func count(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func growth(g float64) string {
	switch {
	case math.IsNaN(g):
		return "–"
	case g >= 10:
		return fmt.Sprintf("×%.0f", g)
	}
	return fmt.Sprintf("×%.2g", g)
}

// revision is the commit the binary was built from, when Go recorded it.
func revision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "an unstamped build"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	if rev == "" {
		return "an unstamped build (-buildvcs=false, or go test)"
	}
	return rev[:min(len(rev), 10)] + dirty
}
