package console_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// BenchmarkConsolePages measures the server-side time of every console
// page (the Server-Timing the console sends: queries, decryption and
// rendering) on a database filled with GATEWAY_BENCH_ORDERS orders
// (comma-separated sizes; default 1000,10000) and their rows, on MariaDB
// when GATEWAY_TEST_MYSQL_DSN is set, else SQLite. The figures of two
// sizes side by side show whether a page costs in proportion to itself or
// to the history:
//
//	GATEWAY_TEST_MYSQL_DSN=... go test ./console -run '^$' -bench ConsolePages -benchtime 20x
func BenchmarkConsolePages(b *testing.B) {
	sizes := []int{1000, 10000}
	if v := os.Getenv("GATEWAY_BENCH_ORDERS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 10 {
				b.Fatalf("GATEWAY_BENCH_ORDERS: %q", v)
			}
			sizes = append(sizes, n)
		}
	}
	driver := "sqlite"
	if os.Getenv(modeltest.EnvDSN) != "" {
		driver = "mysql"
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("%s/orders=%d", driver, n), func(b *testing.B) {
			e := startEnv(b, driver, nil)
			start := time.Now()
			fill(b, e.Store.DB(), n)
			b.Logf("filled %d orders in %s", n, time.Since(start).Round(time.Millisecond))
			// One order through the real flow: callbacks with bodies to
			// decrypt, a PDF, calls.
			e.issuedOrder(b, "BENCH-ORDER-1", "XM-BENCH", "BD-1")
			br := newBrowser(b, e.URL)
			br.signIn(opUser, opPassword)
			today := time.Now().UTC().Format(time.DateOnly)
			for _, p := range []struct{ name, path string }{
				{"overview", "/console/"},
				{"orders", "/console/orders"},
				{"orders_search_orderno", "/console/orders?q=F00000042"},
				{"orders_search_qyname", "/console/orders?q=" + url.QueryEscape("某某建设有限公司4")},
				{"orders_status_issued", "/console/orders?status=issued"},
				{"orders_flag_stale", "/console/orders?flag=stale"},
				{"orders_org_dates", "/console/orders?orgcode=SIM&from=2025-01-01&to=" + today},
				{"order", "/console/orders/BENCH-ORDER-1"},
				{"order_filled", "/console/orders/F00000042"},
				{"deliveries_dead", "/console/deliveries"},
				{"deliveries_delivered", "/console/deliveries?status=delivered"},
				{"callbacks", "/console/callbacks"},
				{"callbacks_rejected_org", "/console/callbacks?result=rejected&orgcode=SIM"},
				{"callback", "/console/callbacks/1"},
				{"reconciliation", "/console/reconciliation"},
				{"institutions", "/console/institutions"},
			} {
				b.Run(p.name, func(b *testing.B) {
					var server []float64
					for b.Loop() {
						resp, _ := br.get(p.path)
						if resp.StatusCode != http.StatusOK {
							b.Fatalf("%s: %d", p.path, resp.StatusCode)
						}
						ms, err := strconv.ParseFloat(strings.TrimPrefix(resp.Header.Get("Server-Timing"), "page;dur="), 64)
						if err != nil {
							b.Fatalf("%s: Server-Timing %q", p.path, resp.Header.Get("Server-Timing"))
						}
						server = append(server, ms)
					}
					sort.Float64s(server)
					b.ReportMetric(server[len(server)/2], "server-ms-p50")
					b.ReportMetric(server[len(server)*9/10], "server-ms-p90")
				})
			}
		})
	}
}

// fill puts n orders of two institutions (SIM, DOWN) and their rows into
// the database, in proportions like those of a provincial platform's
// years (about 1 callback, 0.9 payments, 3 events, 2 outbound calls and
// 0.85 files per order; a delivery per 4 orders; a few findings a day),
// spread over the last year, oldest first.
func fill(tb testing.TB, db *sql.DB, n int) {
	tb.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	now := time.Now().UTC().Truncate(time.Millisecond)
	first := now.Add(-365 * 24 * time.Hour)
	step := 365 * 24 * time.Hour / time.Duration(n)
	statuses := []model.Status{model.StatusIssued, model.StatusIssued, model.StatusIssued, model.StatusIssued, model.StatusIssued,
		model.StatusIssued, model.StatusIssued, model.StatusCancelled, model.StatusProcessing, model.StatusFailed,
		model.StatusSurrendered, model.StatusIssued, model.StatusApplying, model.StatusIssued, model.StatusCancelling,
		model.StatusIssued, model.StatusIssued, model.StatusApplyRejected, model.StatusIssued, model.StatusIssued}
	pdf := []byte("%PDF-1.4\n" + strings.Repeat("x", 1000))

	var orders, callbacks, events, calls, payments, files, pushes, deliveries [][]any
	for i := range n {
		at := first.Add(time.Duration(i) * step)
		no := fmt.Sprintf("F%08d", i)
		org := "SIM"
		if i%10 == 9 {
			org = "DOWN"
		}
		st := statuses[i%len(statuses)]
		var slot, bhno, issuedAt any
		if st.Active() {
			slot = 1
		}
		issued := st == model.StatusIssued || st == model.StatusCancelled || st == model.StatusCancelling || st == model.StatusSurrendered
		if issued {
			bhno, issuedAt = fmt.Sprintf("FBH%08d", i), at.Add(3*time.Minute)
		}
		flag := ""
		if st == model.StatusProcessing && i%3 == 0 {
			flag = string(model.FlagStale)
		}
		orders = append(orders, []any{no, org, string(st), slot, bhno, "h", "某某建设有限公司" + strconv.Itoa(i%500),
			fmt.Sprintf("9111%014d", i), "100000.00", "某市政道路工程", fmt.Sprintf("XM-%05d", i/4), "第一标段",
			fmt.Sprintf("BD-%d", i%4), at.Add(30 * 24 * time.Hour), "某市交通局", "11110000000000000X", at.Add(29 * 24 * time.Hour),
			"某银行", "某某建设有限公司", "6222020200112233445", "张三", "13800005678", "zhangsan@example.cn",
			"http://b.example/q/" + no, "http://b.example/p/" + no, issuedAt, "200.00", flag, at, at.Add(5 * time.Minute)})
		callbacks = append(callbacks, []any{org, "paystate", no, "", model.CallbackAccepted, "000000", at.Add(time.Minute)})
		if i%50 == 0 {
			callbacks = append(callbacks, []any{org, "applynotify", "", "", model.CallbackRejected, "100002", at.Add(2 * time.Minute)})
		}
		for k, name := range []string{"apply", "pay", "applynotify"} {
			events = append(events, []any{no, model.EventStatus, name, "detail", at.Add(time.Duration(k) * time.Minute)})
		}
		result := "ok"
		if i%20 == 0 {
			result = "unreachable"
		}
		calls = append(calls, []any{org, no, "apply", "http://b.example/guarantee/apply", "ok", at},
			[]any{org, no, "query", "http://b.example/q/" + no, result, at.Add(2 * time.Minute)})
		if i%10 != 0 {
			payments = append(payments, []any{fmt.Sprintf("%064d", i), no, org, "1", "200.00", at.Add(time.Minute), int64(i + 1), at.Add(time.Minute)})
		}
		if issued && i%20 != 0 {
			files = append(files, []any{no, bhno, fmt.Sprintf("%064x", i), int64(len(pdf)), "notify", pdf, at.Add(3 * time.Minute)})
		}
		if i%4 == 0 {
			pushes = append(pushes, []any{"某市政道路工程", fmt.Sprintf("XM-%05d", i/4), "第一标段", "BD-0", at.Add(30 * 24 * time.Hour), "1", at.Add(31 * 24 * time.Hour)})
			status, next := model.DeliveryDelivered, any(nil)
			switch i % 80 {
			case 0:
				status = model.DeliveryDead
			case 40:
				status, next = model.DeliveryPending, now.Add(time.Hour)
			}
			deliveries = append(deliveries, []any{int64(len(pushes)), org, status, 3, next, at.Add(31 * 24 * time.Hour), at.Add(31 * 24 * time.Hour)})
		}
	}
	var findings [][]any
	for d := range 30 {
		day := now.AddDate(0, 0, -d).Format(time.DateOnly)
		for k := range 5 {
			findings = append(findings, []any{day, "issued_unpaid", fmt.Sprintf("F%08d", (d*5+k)*7%n), "order is issued and has no pay record", now})
		}
	}
	insert(tb, tx, "orders", "order_no, org_code, status, active_slot, guarantee_no, request_hash, applicant_name, applicant_code, "+
		"deposit_amount, project_name, project_code, lot_name, lot_code, opening_at, tenderer_name, tenderer_code, deadline_at, "+
		"account_bank, account_name, account_no, contact_name, contact_phone, contact_email, query_url, pull_url, issued_at, "+
		"premium, flag, created_at, updated_at", orders)
	insert(tb, tx, "callbacks", "org_code, kind, order_no, body_sha256, result, errcode, received_at", callbacks)
	insert(tb, tx, "order_events", "order_no, kind, name, detail, created_at", events)
	insert(tb, tx, "outbound_calls", "org_code, order_no, endpoint, url, result, created_at", calls)
	insert(tb, tx, "payments", "dedup_key, order_no, org_code, kind, amount, paid_at, callback_id, created_at", payments)
	insert(tb, tx, "guarantee_files", "order_no, guarantee_no, sha256, size, source, content, created_at", files)
	insert(tb, tx, "project_states", "project_name, project_code, lot_name, lot_code, opening_at, state, created_at", pushes)
	insert(tb, tx, "deliveries", "push_id, org_code, status, attempts, next_attempt_at, created_at, updated_at", deliveries)
	insert(tb, tx, "findings", "run_date, kind, order_no, detail, created_at", findings)
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// insert writes rows into table a few hundred at a time. The columns the
// statement leaves out take their defaults; latency_ms and the byte counts
// of a call, and a callback's body_size, are 0.
func insert(tb testing.TB, tx *sql.Tx, table, cols string, rows [][]any) {
	tb.Helper()
	switch table {
	case "outbound_calls":
		cols += ", latency_ms, request_bytes, response_bytes"
		for i := range rows {
			rows[i] = append(rows[i], 5, 100, 100)
		}
	case "callbacks":
		cols += ", body_size"
		for i := range rows {
			rows[i] = append(rows[i], 0)
		}
	}
	width := len(strings.Split(cols, ","))
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", width), ",") + ")"
	for len(rows) > 0 {
		batch := rows[:min(len(rows), 300)]
		rows = rows[len(batch):]
		args := make([]any, 0, len(batch)*width)
		for _, r := range batch {
			args = append(args, r...)
		}
		q := "INSERT INTO " + table + " (" + cols + ") VALUES " + strings.TrimSuffix(strings.Repeat(row+",", len(batch)), ",")
		if _, err := tx.Exec(q, args...); err != nil {
			tb.Fatalf("fill %s: %v", table, err)
		}
	}
}
