package model_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// The plans of the queries that must not grow with history: every list
// filter the API and the console offer, every job's claim and the
// shutdown's lease release. On MariaDB with a table of planOrders orders,
// mostly ended as they are after years, each query runs once on a
// one-connection store, and the test reads what it cost from the session's
// Handler_read_* counters (rows the storage engine handed over, the "rows
// examined"), then runs EXPLAIN on each statement it recorded and fails on
// a scan of orders, deliveries, callbacks or payments (type ALL, or a full
// index scan). The callbacks' dedup lookups are among them: the unique
// dedup indexes lead with order_no (docs/decisions.md §44), and a lookup
// by the key alone would read the whole index.

const planOrders = 20000

func TestQueryPlans(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	st, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 1, MaxIdle: 1, MaxLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	fillPlanOrders(t, st.DB(), now)

	// The detector itself: a filter on a column without an index is a scan.
	if scanOfOrders(t, st.DB(), "SELECT * FROM `orders` WHERE contact_email = 'x' ORDER BY id DESC LIMIT 51") == "" ||
		scanOfOrders(t, st.DB(), "SELECT * FROM `orders` WHERE tenderer_code = 'x'") == "" {
		t.Fatal("EXPLAIN of a filter on an unindexed column shows no scan: the check below would pass anything")
	}
	if scanOfOrders(t, st.DB(), "SELECT `id` FROM `callbacks` WHERE dedup_key = 'x'") == "" ||
		scanOfOrders(t, st.DB(), "SELECT `id` FROM `payments` WHERE dedup_key = 'x'") == "" {
		t.Fatal("EXPLAIN of a lookup by the dedup key alone shows no scan: it would not see a lookup that misses the order")
	}

	rec := &model.Statements{}
	q := st.With(ctx).Recording(rec)
	const page = 50
	lists := []struct {
		name string
		f    model.OrderFilter
	}{
		{"newest", model.OrderFilter{}},
		{"status issued", model.OrderFilter{Status: model.StatusIssued}},
		{"status processing", model.OrderFilter{Status: model.StatusProcessing}},
		{"institution", model.OrderFilter{OrgCode: "org-b"}},
		{"flag stale", model.OrderFilter{Flag: model.FlagStale}},
		{"flag no match", model.OrderFilter{Flag: model.FlagURLRefused}},
		{"lot", model.OrderFilter{ProjectCode: "XM-00007", LotCode: "BD-1"}},
		{"bidder", model.OrderFilter{ApplicantCode: "91110000QY00123"}},
		{"search orderno", model.OrderFilter{Search: "PO00012345"}},
		{"search bhno", model.OrderFilter{Search: "BH00012345"}},
		{"search qycode", model.OrderFilter{Search: "91110000QY00123"}},
		{"search xmcode", model.OrderFilter{Search: "XM-00007"}},
		{"search qyname", model.OrderFilter{Search: "企业0012"}},
		{"created last week", model.OrderFilter{CreatedFrom: now.Add(-7 * 24 * time.Hour)}},
		{"created a year ago", model.OrderFilter{CreatedFrom: now.Add(-400 * 24 * time.Hour), CreatedTo: now.Add(-390 * 24 * time.Hour)}},
		{"status and institution", model.OrderFilter{Status: model.StatusCancelled, OrgCode: "org-a"}},
		{"second page", model.OrderFilter{BeforeID: planOrders / 2}},
	}
	for _, c := range lists {
		c.f.Limit = page + 1
		checkCost(t, st.DB(), rec, c.name, 20*page, func() error {
			_, err := q.ListOrders(c.f)
			return err
		})
	}
	const batch = 20
	for _, oq := range []model.OrderQueue{model.QueuePoll, model.QueueApply, model.QueuePull} {
		checkCost(t, st.DB(), rec, "claim "+oq.String(), 20*batch, func() error {
			got, err := q.ClaimOrders(oq, "plan-test/"+oq.String()+"/1", now, now, now.Add(time.Minute), batch)
			if err == nil && len(got) == 0 {
				err = fmt.Errorf("claimed nothing: the fill has due orders of every queue")
			}
			return err
		})
	}
	checkCost(t, st.DB(), rec, "release instance", 20*3*batch, func() error {
		n, _, err := q.ReleaseInstance("plan-test")
		if err == nil && n != 3*batch {
			err = fmt.Errorf("released %d leases, want %d", n, 3*batch)
		}
		return err
	})
	checkCost(t, st.DB(), rec, "due deliveries", 20*batch, func() error {
		got, err := q.DueDeliveries(now, now, 0, batch)
		if err == nil && len(got) != batch {
			err = fmt.Errorf("%d due deliveries, want %d", len(got), batch)
		}
		return err
	})
	// The console's callbacks: the day's counts from the index alone, an
	// institution's refusals and its newest, the latest accepted one.
	// A count reads the day's callbacks (planOrders/50 here) and no more,
	// from the index alone (EXPLAIN's "Using index", checked below).
	dayAgo := now.Add(-24 * time.Hour)
	today := int64(planOrders / 50)
	counts := checkCost(t, st.DB(), rec, "callbacks counted today", 3*today, func() error {
		_, err := q.CountCallbacksSince(dayAgo)
		return err
	})
	counts = append(counts, checkCost(t, st.DB(), rec, "refusals counted today", 3*today, func() error {
		_, err := q.CountRefusalsSince(dayAgo)
		return err
	})...)
	for _, stmt := range counts {
		for _, row := range explain(t, st.DB(), stmt) {
			if !slices.Contains(strings.Split(row["Extra"], "; "), "Using index") { // not "Using index condition"
				t.Errorf("a count of the day's callbacks reads rows, not only an index: %v\n  %s", row, stmt)
			}
		}
	}
	checkCost(t, st.DB(), rec, "refusals of one", 20*page, func() error {
		_, err := q.ListCallbacks(model.CallbackFilter{OrgCode: "org-b", Result: model.CallbackRejected, Limit: page + 1})
		return err
	})
	checkCost(t, st.DB(), rec, "callbacks of one", 20*page, func() error {
		_, err := q.ListCallbacks(model.CallbackFilter{OrgCode: "org-b", Limit: page + 1})
		return err
	})
	checkCost(t, st.DB(), rec, "last accepted callback", 100, func() error {
		_, err := q.LastAcceptedCallback("org-b")
		return err
	})
	// A group commit's dedup lookups (model/batch.go): the stored keys of a
	// batch of callbacks, half of them taken; then the IDs of the rows it
	// inserted, read back by (order, key).
	const cbBatch = 64
	refs := make([]model.DedupRef, cbBatch)
	for i := range refs {
		no := fmt.Sprintf("PO%08d", planOrders-2*i)
		refs[i] = model.DedupRef{OrderNo: no, Key: planKey(no, "paystate")}
		if i%2 == 1 {
			refs[i].Key = planKey(no, "never sent")
		}
	}
	checkCost(t, st.DB(), rec, "taken callback keys", 2*cbBatch, func() error {
		taken, err := q.TakenCallbackKeys(refs)
		if err == nil && len(taken) != cbBatch/2 {
			err = fmt.Errorf("%d keys taken, want %d", len(taken), cbBatch/2)
		}
		return err
	})
	checkCost(t, st.DB(), rec, "callbacks of a batch", 2*cbBatch, func() error {
		cbs := make([]*model.Callback, cbBatch)
		for i := range cbs {
			no := fmt.Sprintf("PO%08d", planOrders-2*i-1)
			key := planKey(no, "applynotify")
			cbs[i] = &model.Callback{Kind: "applynotify", OrderNo: no, DedupKey: &key, BodySha256: key,
				Result: model.CallbackAccepted, Errcode: "0"}
		}
		if err := q.InsertCallbacks(cbs); err != nil {
			return err
		}
		for _, c := range cbs {
			if c.ID == 0 {
				return fmt.Errorf("callback of %s: no ID read back", c.OrderNo)
			}
		}
		return nil
	})
	checkCost(t, st.DB(), rec, "order trails", 20*page, func() error {
		trails, err := q.OrderTrails("PO000100")
		if err == nil && len(trails) != 100 {
			err = fmt.Errorf("%d trails, want 100", len(trails))
		}
		return err
	})
	checkCost(t, st.DB(), rec, "files of a page", 20*page, func() error {
		nos := make([]string, page)
		for i := range nos {
			nos[i] = fmt.Sprintf("PO%08d", planOrders-i)
		}
		_, err := q.FileInfos(nos)
		return err
	})
}

// checkCost runs fn and fails when it examined more than limit rows, or
// when a statement it ran scans orders, deliveries or callbacks; it
// returns the statements.
func checkCost(t *testing.T, db *sql.DB, rec *model.Statements, name string, limit int64, fn func() error) []string {
	t.Helper()
	rec.Take()
	before := handlerReads(t, db)
	if err := fn(); err != nil {
		t.Errorf("%s: %v", name, err)
		return nil
	}
	examined := handlerReads(t, db) - before - statusReadCost(t, db)
	stmts := rec.Take()
	t.Logf("%-24s %5d rows examined, %d statements", name, examined, len(stmts))
	if testing.Verbose() {
		for _, s := range stmts {
			t.Logf("    %s", s)
		}
	}
	if examined > limit {
		t.Errorf("%s examined %d rows, more than %d, in:\n  %s", name, examined, limit, strings.Join(stmts, "\n  "))
	}
	for _, s := range stmts {
		if scan := scanOfOrders(t, db, s); scan != "" {
			t.Errorf("%s: %s\n  %s", name, scan, s)
		}
	}
	return stmts
}

// handlerReads is the session's rows handed over by the storage engine.
func handlerReads(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	rows, err := db.Query("SHOW SESSION STATUS LIKE 'Handler_read%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var sum int64
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// statusReadCost is what one SHOW STATUS itself adds to the counters.
func statusReadCost(t *testing.T, db *sql.DB) int64 {
	a := handlerReads(t, db)
	return handlerReads(t, db) - a
}

// scanned are the tables that grow with history whose scans the test
// refuses.
var scanned = []string{"orders", "deliveries", "callbacks", "payments"}

// scanOfOrders explains a statement and says how it scans one of the
// scanned tables, if it does: type ALL, or type index (every entry of an
// index) unless it walks the primary key under a LIMIT with no condition
// (the newest orders): with a condition, the walk reads until enough rows
// match, all of them if none does.
func scanOfOrders(t *testing.T, db *sql.DB, stmt string) string {
	t.Helper()
	if !slices.ContainsFunc(scanned, func(table string) bool { return strings.Contains(stmt, "`"+table+"`") }) ||
		strings.HasPrefix(stmt, "INSERT ") {
		// An INSERT reads no rows; its EXPLAIN says type ALL all the same.
		return ""
	}
	for _, row := range explain(t, db, stmt) {
		table := row["table"]
		if !slices.Contains(scanned, table) {
			continue
		}
		switch {
		case row["type"] == "ALL":
			return fmt.Sprintf("reads every row of %s (type ALL)", table)
		case row["type"] == "index" && !(row["key"] == "PRIMARY" && !strings.Contains(stmt, " WHERE ") && strings.Contains(stmt, " LIMIT ")):
			return fmt.Sprintf("reads all of index %s of %s (type index)", row["key"], table)
		}
	}
	return ""
}

// explain returns the rows of MariaDB's EXPLAIN of stmt, by column name.
func explain(t testing.TB, db *sql.DB, stmt string) []map[string]string {
	t.Helper()
	rows, err := db.Query("EXPLAIN " + stmt)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", stmt, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []map[string]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := map[string]string{}
		for i, c := range cols {
			row[c] = vals[i].String
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fillPlanOrders writes planOrders orders as years leave them: most ended,
// a few of each queue due, some flagged, a PDF for most issued ones. Order
// i is PO%08d, created i minutes after a start two years ago.
func fillPlanOrders(t *testing.T, db *sql.DB, now time.Time) {
	t.Helper()
	start := now.Add(-time.Duration(planOrders) * 40 * time.Minute)
	const cols = `(order_no, org_code, status, active_slot, guarantee_no, request_hash, applicant_name, applicant_code,
		deposit_amount, project_name, project_code, lot_name, lot_code, opening_at, tenderer_name, tenderer_code,
		deadline_at, account_bank, account_name, account_no, contact_name, contact_phone, contact_email,
		pull_url, file_pending, next_check_at, flag, created_at, updated_at)`
	var b strings.Builder
	var args []any
	var files []string
	flush := func() {
		if len(args) == 0 {
			return
		}
		if _, err := db.Exec("INSERT INTO orders "+cols+" VALUES "+strings.TrimSuffix(b.String(), ","), args...); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		args = args[:0]
	}
	for i := 1; i <= planOrders; i++ {
		created := start.Add(time.Duration(i) * 40 * time.Minute)
		status, flag := model.StatusCancelled, model.FlagNone
		var slot, bhno, next any
		pull, pending := "", 0
		switch r := i % 100; {
		case r < 40:
			status = model.StatusSurrendered
		case r < 50:
			status = model.StatusFailed
		case r < 75:
			status, slot = model.StatusIssued, 1
		case r == 75:
			status, slot, next = model.StatusProcessing, 1, now.Add(-time.Minute)
		case r == 76:
			status, slot, next = model.StatusApplying, 1, now.Add(-time.Minute)
		case r == 77:
			status, slot, pull, pending, next = model.StatusIssued, 1, "https://bank.example/pull", 1, now.Add(-time.Minute)
		case r == 78:
			status, slot, flag = model.StatusProcessing, 1, model.FlagStale
		case r == 79:
			status, slot, flag = model.StatusApplying, 1, model.FlagApplyUnconfirmed
		}
		if status != model.StatusFailed && status != model.StatusApplying {
			bhno = fmt.Sprintf("BH%08d", i)
		}
		if status == model.StatusIssued && pending == 0 {
			files = append(files, fmt.Sprintf("PO%08d", i))
		}
		org := []string{"org-a", "org-b", "org-c"}[i%3]
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?),")
		args = append(args, fmt.Sprintf("PO%08d", i), org, status, slot, bhno, strings.Repeat("0", 64),
			fmt.Sprintf("企业%05d", i%5000), fmt.Sprintf("91110000QY%05d", i%5000), "1000.00",
			"项目", fmt.Sprintf("XM-%05d", i%2000), "标段", fmt.Sprintf("BD-%d", i%7), created.Add(30*24*time.Hour),
			"采购人", "12110000", created.Add(20*24*time.Hour), "银行", "户名", "6222", "联系人", "010", "a@b.c",
			pull, pending, next, flag, created, created)
		if len(args) >= 29*500 {
			flush()
		}
	}
	flush()
	for len(files) > 0 {
		n := min(len(files), 1000)
		var fb strings.Builder
		fargs := make([]any, 0, 2*n)
		for _, no := range files[:n] {
			fb.WriteString("(?, '', ?, 4, 'push', 'PDF-', ?),")
			fargs = append(fargs, no, strings.Repeat("a", 64), now)
		}
		if _, err := db.Exec("INSERT INTO guarantee_files (order_no, guarantee_no, sha256, size, source, content, created_at) VALUES "+
			strings.TrimSuffix(fb.String(), ","), fargs...); err != nil {
			t.Fatal(err)
		}
		files = files[n:]
	}
	// A callback per order, received a minute after it was created; one in
	// 50 refused. The newest 2% came within the last day.
	var cb strings.Builder
	cargs := make([]any, 0, 6*1000)
	flushCallbacks := func() {
		if len(cargs) == 0 {
			return
		}
		if _, err := db.Exec("INSERT INTO callbacks (org_code, kind, order_no, body_sha256, body_size, result, errcode, received_at) VALUES "+
			strings.TrimSuffix(cb.String(), ","), cargs...); err != nil {
			t.Fatal(err)
		}
		cb.Reset()
		cargs = cargs[:0]
	}
	for i := 1; i <= planOrders; i++ {
		at := start.Add(time.Duration(i)*40*time.Minute + time.Minute)
		if i > planOrders*98/100 {
			at = now.Add(-time.Duration(planOrders-i) * time.Second)
		}
		result, code := model.CallbackAccepted, "000000"
		if i%50 == 0 {
			result, code = model.CallbackRejected, "100002"
		}
		cb.WriteString("(?, 'paystate', ?, '', 0, ?, ?, ?),")
		cargs = append(cargs, []string{"org-a", "org-b", "org-c"}[i%3], fmt.Sprintf("PO%08d", i), result, code, at)
		if len(cargs) >= 5*1000 {
			flushCallbacks()
		}
	}
	flushCallbacks()

	// Deliveries of years of project states: nearly all delivered, a few
	// dead, the pending ones (one in 50) half due, half waiting.
	const deliveries = planOrders / 4
	var db2 strings.Builder
	dargs := make([]any, 0, 4*deliveries)
	for i := 1; i <= deliveries; i++ {
		status, next := model.DeliveryDelivered, any(nil)
		switch i % 100 {
		case 1:
			status, next = model.DeliveryPending, now.Add(-time.Minute)
		case 2:
			status, next = model.DeliveryPending, now.Add(time.Hour)
		case 3:
			status = model.DeliveryDead
		}
		db2.WriteString("(?, 'org-a', ?, ?, ?, ?),")
		dargs = append(dargs, i, status, next, now, now)
	}
	if _, err := db.Exec("INSERT INTO deliveries (push_id, org_code, status, next_attempt_at, created_at, updated_at) VALUES "+
		strings.TrimSuffix(db2.String(), ","), dargs...); err != nil {
		t.Fatal(err)
	}
	// Each order's callbacks and payments as the gateway leaves them: an
	// accepted paystate with its payment, received soon after the order was
	// created, the keys as random as SHA-256 makes them.
	for i := 1; i <= planOrders; i += 1000 {
		var cb, pb strings.Builder
		var cargs, pargs []any
		for j := i; j < i+1000 && j <= planOrders; j++ {
			no := fmt.Sprintf("PO%08d", j)
			key := planKey(no, "paystate")
			cb.WriteString("('org-a', 'paystate', ?, ?, ?, 10, 'accepted', '0', ?),")
			cargs = append(cargs, no, key, key, start.Add(time.Duration(j)*40*time.Minute+2*time.Minute))
			pb.WriteString("(?, ?, 'org-a', '1', '1000.00', ?, ?, ?),")
			pargs = append(pargs, key, no, now, j, now)
		}
		if _, err := db.Exec("INSERT INTO callbacks (org_code, kind, order_no, dedup_key, body_sha256, body_size, result, errcode, received_at) VALUES "+
			strings.TrimSuffix(cb.String(), ","), cargs...); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("INSERT INTO payments (dedup_key, order_no, org_code, kind, amount, paid_at, callback_id, created_at) VALUES "+
			strings.TrimSuffix(pb.String(), ","), pargs...); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"orders", "guarantee_files", "deliveries", "callbacks", "payments"} {
		if _, err := db.Exec("ANALYZE TABLE " + table); err != nil {
			t.Fatal(err)
		}
	}
}

// planKey is a dedup key of the plan's callbacks: random-looking, as the
// gateway's SHA-256 are.
func planKey(orderNo, what string) string {
	h := sha256.Sum256([]byte(what + "\x1f" + orderNo))
	return hex.EncodeToString(h[:])
}
