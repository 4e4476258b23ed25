package fill_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/tools/fill"
)

var now = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

// TestFill fills a fresh MariaDB database with 5,000 orders and holds the
// result to what the gateway's own writes keep true, then runs the
// gateway's claims on it.
func TestFill(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("fill writes MySQL/MariaDB only: %s is not set", modeltest.EnvDSN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := modeltest.Open(t, "mysql", os.Getenv)
	db := s.DB()
	const n = 5000
	rep, err := fill.Run(ctx, db, fill.Options{Orders: n, Seed: 7, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	count := func(q string, args ...any) int64 {
		t.Helper()
		var c int64
		if err := db.QueryRowContext(ctx, q, args...).Scan(&c); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return c
	}

	// Rows per order, within the ranges the fill aims at, and as reported.
	ranges := map[string][2]float64{"orders": {1, 1}, "order_events": {3.5, 4.5}, "outbound_calls": {2.2, 3.0},
		"callbacks": {1.0, 1.5}, "payments": {0.85, 0.95}, "guarantee_files": {0.8, 0.9},
		"project_states": {0.05, 0.15}, "deliveries": {0.15, 0.35}}
	for table, r := range ranges {
		got := count("SELECT COUNT(*) FROM " + table)
		if got != rep.Rows[table] {
			t.Errorf("%s: %d rows, report says %d", table, got, rep.Rows[table])
		}
		if per := float64(got) / n; per < r[0] || per > r[1] {
			t.Errorf("%s: %.2f rows per order, want %.2f..%.2f", table, per, r[0], r[1])
		}
	}

	// The schema is the migrated one: every index dropped for the load is
	// back, as it was, in the same order.
	want, got := modeltest.CreateTables(t, ctx, modeltest.Open(t, "mysql", os.Getenv).DB()), modeltest.CreateTables(t, ctx, db)
	if !maps.Equal(got, want) {
		t.Errorf("the schema after the fill is not the migrated one:\nmigrated:\n%v\nfilled:\n%v", want, got)
	}

	// Each row holds to what the gateway keeps true.
	checks := map[string]string{
		"active_slot set exactly for applying, processing, issued": `SELECT COUNT(*) FROM orders WHERE
			(active_slot <=> 1) <> (status IN ('applying', 'processing', 'issued')) OR active_slot = 0`,
		"next_check_at set exactly while a job is due": `SELECT COUNT(*) FROM orders WHERE (next_check_at IS NOT NULL) <>
			((status = 'processing' AND flag <> 'stale') OR (status = 'applying' AND flag <> 'apply_unconfirmed')
			OR (status = 'issued' AND file_pending = 1 AND guarantee_no IS NOT NULL AND pull_url <> ''))`,
		"paid and refunded amounts are the sums of the payments": `SELECT COUNT(*) FROM orders o LEFT JOIN
			(SELECT order_no, SUM(IF(kind = '1', amount, 0)) paid, SUM(IF(kind = '2', amount, 0)) refunded
			 FROM payments GROUP BY order_no) p ON p.order_no = o.order_no
			WHERE o.paid_amount <> COALESCE(p.paid, 0) OR o.refunded_amount <> COALESCE(p.refunded, 0)`,
		"a file's sha256 and size are its content's": `SELECT COUNT(*) FROM guarantee_files
			WHERE sha256 <> SHA2(content, 256) OR size <> LENGTH(content)`,
		"a callback's body digest and size are its body's": `SELECT COUNT(*) FROM callbacks
			WHERE body_sha256 <> SHA2(body, 256) OR body_size <> LENGTH(body)`,
		"a payment's callback is its accepted paystate": `SELECT COUNT(*) FROM payments p LEFT JOIN callbacks c
			ON c.id = p.callback_id AND c.kind = 'paystate' AND c.result = 'accepted' AND c.dedup_key = p.dedup_key
			AND c.order_no = p.order_no WHERE c.id IS NULL`,
		"an event's callback exists": `SELECT COUNT(*) FROM order_events e LEFT JOIN callbacks c ON c.id = e.ref_id
			WHERE e.ref_id IS NOT NULL AND (c.id IS NULL OR c.order_no <> e.order_no)`,
		"a delivery's push exists": `SELECT COUNT(*) FROM deliveries d LEFT JOIN project_states p ON p.id = d.push_id
			WHERE p.id IS NULL`,
		"an issued order has its bhno, the others none": `SELECT COUNT(*) FROM orders
			WHERE (guarantee_no IS NOT NULL) <> (status IN ('issued', 'cancelling', 'cancelled', 'surrendered'))`,
		"a stored file is not pending, an issued order without one is": `SELECT COUNT(*) FROM orders o
			LEFT JOIN guarantee_files f ON f.order_no = o.order_no
			WHERE o.status IN ('issued', 'cancelling', 'cancelled', 'surrendered') AND (f.id IS NULL) <> (o.file_pending = 1)`,
		"events are in time order within an order": `SELECT COUNT(*) FROM order_events a JOIN order_events b
			ON a.order_no = b.order_no AND a.id < b.id AND a.created_at > b.created_at`,
		"nothing after now": `SELECT COUNT(*) FROM orders WHERE created_at > ? OR updated_at > ?`,
	}
	for what, q := range checks {
		var args []any
		if strings.Contains(q, "?") {
			args = []any{now, now}
		}
		if bad := count(q, args...); bad != 0 {
			t.Errorf("%s: %d rows do not", what, bad)
		}
	}

	// The reconciliation's rules (service/reconcile.go), in SQL: what they
	// find is what was planted, nothing else.
	planted := map[string]string{}
	for _, p := range rep.Planted {
		planted[p.Finding+" "+p.OrderNo] = p.Kind
	}
	if len(rep.Planted) != 6 {
		t.Errorf("planted %d discrepancies, want 6: %+v", len(rep.Planted), rep.Planted)
	}
	found := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT o.order_no, o.status, o.opening_at < ?, o.premium,
		COALESCE(p.pays, 0), COALESCE(p.paid, 0), COALESCE(p.refunds, 0), COALESCE(p.refunded, 0)
		FROM orders o LEFT JOIN (SELECT order_no, SUM(kind = '1') pays, SUM(IF(kind = '1', amount, 0)) paid,
			SUM(kind = '2') refunds, SUM(IF(kind = '2', amount, 0)) refunded FROM payments GROUP BY order_no) p
		ON p.order_no = o.order_no`, now)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var no, status string
		var opened bool
		var premium decimal.NullDecimal
		var pays, refunds int
		var paid, refunded decimal.Decimal
		if err := rows.Scan(&no, &status, &opened, &premium, &pays, &paid, &refunds, &refunded); err != nil {
			t.Fatal(err)
		}
		issued := status == "issued" || status == "cancelling" || status == "cancelled" || status == "surrendered"
		if issued && pays == 0 {
			found["issued_unpaid "+no] = true
		} else if issued && premium.Valid && !premium.Decimal.Equal(paid) {
			found["premium_mismatch "+no] = true
		}
		if status == "issued" && refunds > 0 {
			found["refund_while_issued "+no] = true
		}
		if refunded.GreaterThan(paid) {
			found["refund_exceeds_paid "+no] = true
		}
		if !issued && pays > 0 && paid.GreaterThan(refunded) && (status == "failed" || status == "apply_rejected" || opened) {
			found["paid_not_issued "+no] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	orphans, err := db.QueryContext(ctx, `SELECT DISTINCT order_no FROM payments p
		WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_no = p.order_no)`)
	if err != nil {
		t.Fatal(err)
	}
	for orphans.Next() {
		var no string
		orphans.Scan(&no)
		found["paid_not_issued "+no] = true
	}
	orphans.Close()
	for f := range found {
		if planted[f] == "" {
			t.Errorf("reconciliation would find %s, which was not planted", f)
		}
	}
	for f := range planted {
		if !found[f] {
			t.Errorf("planted %s (%s) would not be found", f, planted[f])
		}
	}

	// The gateway's claims find the due orders, and only those.
	for _, q := range []struct {
		queue  model.OrderQueue
		status model.Status
	}{{model.QueuePoll, model.StatusProcessing}, {model.QueueApply, model.StatusApplying}, {model.QueuePull, model.StatusIssued}} {
		var got []model.Order
		err := s.Do(ctx, func(tx model.Queries) (err error) {
			got, err = tx.ClaimOrders(q.queue, "filltest/"+q.queue.String(), now, now, now.Add(time.Minute), 1000)
			return err
		})
		if err != nil {
			t.Fatalf("claim %s: %v", q.queue, err)
		}
		if len(got) == 0 {
			t.Errorf("claim %s: nothing due in %d orders", q.queue, n)
		}
		for _, o := range got {
			if o.Status != q.status || o.NextCheckAt == nil || o.NextCheckAt.After(now) {
				t.Errorf("claim %s: %s is %s, next check %v", q.queue, o.OrderNo, o.Status, o.NextCheckAt)
			}
		}
	}

	// A second fill without Append is refused; with it, it goes on after
	// the last ids.
	if _, err := fill.Run(ctx, db, fill.Options{Orders: 10, Now: now}); err == nil {
		t.Error("a fill of a database with orders: no error")
	}
	more, err := fill.Run(ctx, db, fill.Options{Orders: 200, Seed: 8, Now: now, Append: true})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if more.FirstID != n+1 || count("SELECT COUNT(*) FROM orders") != n+200 {
		t.Errorf("append: first id %d, %d orders", more.FirstID, count("SELECT COUNT(*) FROM orders"))
	}
}

// TestFillReproducible: the same seed and now give the same rows, whatever
// the number of workers.
func TestFillReproducible(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("fill writes MySQL/MariaDB only: %s is not set", modeltest.EnvDSN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sums []string
	for _, workers := range []int{1, 4} {
		s := modeltest.Open(t, "mysql", os.Getenv)
		if _, err := fill.Run(ctx, s.DB(), fill.Options{Orders: 1500, Seed: 3, Now: now, Workers: workers, Chunk: 100}); err != nil {
			t.Fatal(err)
		}
		var sum strings.Builder
		for _, table := range []string{"orders", "order_events", "outbound_calls", "callbacks", "payments",
			"guarantee_files", "project_states", "deliveries"} {
			var name string
			var c int64
			if err := s.DB().QueryRowContext(ctx, "CHECKSUM TABLE "+table).Scan(&name, &c); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&sum, "%s=%d ", table, c)
		}
		sums = append(sums, sum.String())
	}
	if sums[0] != sums[1] {
		t.Errorf("one worker and four differ:\n%s\n%s", sums[0], sums[1])
	}
}
