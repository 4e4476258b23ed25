package scale

import (
	"bytes"
	"context"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// TestRun runs the whole benchmark on two tiny databases and checks that
// every row of the table is there with a sane value on both; the targets
// themselves are not asserted (a loaded machine may miss a time).
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale run starts four gateways on MariaDB")
	}
	small := filled(t, 200)
	large := filled(t, 2000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, progress bytes.Buffer
	r, err := Run(ctx, Config{SmallDSN: small, LargeDSN: large, BatchSize: 20, Callbacks: 1500, Out: &out, Progress: &progress})
	t.Logf("%s", out.String())
	if r == nil {
		t.Fatalf("no report: %v\n%s", err, progress.String())
	}
	if r.Small.Orders != 200 || r.Large.Orders != 2000 {
		t.Errorf("orders %d and %d, want 200 and 2000", r.Small.Orders, r.Large.Orders)
	}
	want := []string{"GET /metrics: time", "GET /metrics: gateway_database_up",
		"claim poll: rows examined", "claim apply: rows examined", "claim pull: rows examined", "due deliveries: rows examined",
		"shutdown release: time", "shutdown release: rows examined", "shutdown release: leases freed of given",
		"paystate callback: time", "rolling restart: slowest callback during it", "rolling restart: callbacks failed",
		"rolling restart: A's leases left", "reconcile full: time", "reconcile incremental (1,000 touched): time",
		"list flag (no match): statements", "list status=issued, 50: time", "list org, 50: rows examined",
		"list search orderno: time", "list created range (1 day), 50: time", "list page of 500: statements",
		"order by number: time", "order's events: time", "bytes per order: orders", "bytes per order: all tables"}
	rows := map[string]Row{}
	for _, row := range r.Rows {
		rows[row.Name] = row
		if !strings.Contains(out.String(), "| "+row.Name+" |") {
			t.Errorf("row %q is not in the printed table", row.Name)
		}
	}
	if len(r.Rows) != len(r.Small.List) || len(r.Rows) != len(r.Large.List) {
		t.Errorf("%d rows of %d and %d figures: the databases' figures do not line up", len(r.Rows), len(r.Small.List), len(r.Large.List))
	}
	for _, name := range want {
		row, ok := rows[name]
		if !ok {
			t.Errorf("no row %q", name)
			continue
		}
		for _, v := range []float64{row.Small, row.Large} {
			if math.IsNaN(v) || v < 0 || math.IsInf(v, 0) {
				t.Errorf("%s: %v", name, v)
			}
		}
	}
	for _, row := range r.Rows {
		switch {
		case row.Unit == UnitMs && (row.Large <= 0 || row.Large > 30_000):
			t.Errorf("%s: %v ms", row.Name, row.Large)
		case row.Unit == UnitBytes && strings.HasSuffix(row.Name, "orders") && row.Large < 100:
			t.Errorf("%s: %v bytes, an order takes more", row.Name, row.Large)
		}
	}
	// What must hold whatever the machine's load.
	for _, name := range []string{"GET /metrics: gateway_database_up", "shutdown release: leases freed of given",
		"rolling restart: callbacks failed", "rolling restart: A's leases left"} {
		if row := rows[name]; !row.OK {
			t.Errorf("%s: %v and %v, target %s", name, row.Small, row.Large, row.Target)
		}
	}
	if rows["list search orderno: statements"].Large < 1 {
		t.Errorf("the search ran no statement: the session counters count nothing")
	}
	if err != nil && !strings.Contains(err.Error(), "target(s) missed") {
		t.Errorf("run: %v", err)
	}
	// The run leaves no order of its own behind.
	for _, dsn := range []string{small, large} {
		s, oerr := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 1, MaxIdle: 1})
		if oerr != nil {
			t.Fatal(oerr)
		}
		var n int
		if err := s.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM orders WHERE org_code = ?", OrgCode).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d orders of the run left (%v)", n, err)
		}
		s.Close()
	}
}

// filled makes a MariaDB database of n orders (package fill) and returns
// its DSN.
func filled(t *testing.T, n int) string {
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Prepare(ctx, dsn, n, nil); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// TestJoin lines two databases' figures up and judges both against the
// target, without a database.
func TestJoin(t *testing.T) {
	small, large := &Figures{}, &Figures{}
	small.add("flat", UnitRows, 10, atMost(20, UnitRows, ""))
	large.add("flat", UnitRows, 10, atMost(20, UnitRows, ""))
	small.add("grows", UnitRows, 10, atMost(20, UnitRows, ""))
	large.add("grows", UnitRows, 1000, atMost(20, UnitRows, ""))
	small.add("from zero", UnitCount, 0, Target{})
	large.add("from zero", UnitCount, 3, Target{})
	small.add("up", UnitCount, 1, exactly(1))
	large.add("up", UnitCount, 0, exactly(1))
	small.add("only small", UnitCount, 1, Target{})
	rows := join(small, large)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4 (a figure of one database alone is left out)", len(rows))
	}
	for i, want := range []struct {
		growth float64
		ok     bool
	}{{1, true}, {100, false}, {math.NaN(), true}, {0, false}} {
		r := rows[i]
		if r.OK != want.ok || !(r.Growth == want.growth || math.IsNaN(want.growth) && math.IsNaN(r.Growth)) {
			t.Errorf("%s: growth %v ok %v, want %v %v", r.Name, r.Growth, r.OK, want.growth, want.ok)
		}
	}
	rep := &Report{Small: small, Large: large, Rows: rows}
	var out bytes.Buffer
	rep.Print(&out)
	for _, s := range []string{"| grows | 10 rows | 1000 rows | ×100 | ≤ 20 rows | **FAIL** |", "| from zero | 0 | 3 | – |  |  |",
		"FAIL: 2 of 4 targets missed"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}
