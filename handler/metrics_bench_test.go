package handler_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// BenchmarkMetrics measures a scrape of /metrics over loopback HTTP on a
// database of GATEWAY_BENCH_ORDERS orders (comma-separated sizes; default
// 10000), on MariaDB when GATEWAY_TEST_MYSQL_DSN is set, else SQLite:
// "served" is a scrape now (the gauges from memory, the readiness check
// at scrape time); "counted" is what a scrape did before, the count
// (Service.State) and then the same serving. A million orders:
//
//	GATEWAY_TEST_MYSQL_DSN=... GATEWAY_BENCH_ORDERS=1000000 go test ./handler -run '^$' -bench Metrics -benchtime 10x
func BenchmarkMetrics(b *testing.B) {
	sizes := []int{10000}
	if v := os.Getenv("GATEWAY_BENCH_ORDERS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
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
			store := modeltest.Open(b, driver, os.Getenv)
			start := time.Now()
			fillOrders(b, store.DB(), n)
			b.Logf("filled %d orders in %s", n, time.Since(start).Round(time.Millisecond))
			g := handlertest.Start(b, handlertest.Options{Store: store,
				Institutions: []handlertest.Institution{handlertest.DefaultInstitution("BANK01")}})
			for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
				if st, ok := g.Service.LastState(); ok {
					b.Logf("the background count took %s", st.Took.Round(time.Millisecond))
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("no count within 5 minutes")
				}
			}
			b.Run("served", func(b *testing.B) {
				for b.Loop() {
					benchScrape(b, g.URL)
				}
			})
			b.Run("counted", func(b *testing.B) {
				for b.Loop() {
					if _, err := g.Service.State(context.Background()); err != nil {
						b.Fatal(err)
					}
					benchScrape(b, g.URL)
				}
			})
		})
	}
}

func benchScrape(b *testing.B, base string) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("/metrics: HTTP %d", resp.StatusCode)
	}
}

// fillOrders inserts n orders in the proportions of statuses of a
// platform's years (mostly issued, a few stale), 1000 a statement.
func fillOrders(tb testing.TB, db *sql.DB, n int) {
	tb.Helper()
	statuses := []model.Status{model.StatusIssued, model.StatusIssued, model.StatusIssued, model.StatusIssued, model.StatusIssued,
		model.StatusIssued, model.StatusIssued, model.StatusCancelled, model.StatusProcessing, model.StatusFailed,
		model.StatusSurrendered, model.StatusIssued, model.StatusApplying, model.StatusIssued, model.StatusCancelling,
		model.StatusIssued, model.StatusIssued, model.StatusApplyRejected, model.StatusIssued, model.StatusIssued}
	const cols = "order_no, org_code, status, request_hash, applicant_name, applicant_code, deposit_amount, project_name, " +
		"project_code, lot_name, lot_code, opening_at, tenderer_name, tenderer_code, deadline_at, account_bank, account_name, " +
		"account_no, contact_name, contact_phone, contact_email, flag, created_at, updated_at"
	const per = 24
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", per), ",") + ")"
	at := time.Now().UTC().Truncate(time.Millisecond)
	for from := 0; from < n; from += 1000 {
		to := min(from+1000, n)
		args := make([]any, 0, (to-from)*per)
		for i := from; i < to; i++ {
			st := statuses[i%len(statuses)]
			flag := ""
			if st == model.StatusProcessing && i%3 == 0 {
				flag = string(model.FlagStale)
			}
			args = append(args, fmt.Sprintf("M%09d", i), "BANK01", string(st), "h", "某某建设有限公司", fmt.Sprintf("9111%014d", i),
				"100000.00", "某市政道路工程", fmt.Sprintf("XM-%06d", i/4), "第一标段", fmt.Sprintf("BD-%d", i%4), at, "某市交通局",
				"11110000000000000X", at, "某银行", "某某建设有限公司", "6222020200112233445", "张三", "13800005678",
				"zhangsan@example.cn", flag, at, at)
		}
		q := "INSERT INTO orders (" + cols + ") VALUES " + strings.TrimSuffix(strings.Repeat(row+",", to-from), ",")
		if _, err := db.Exec(q, args...); err != nil {
			tb.Fatalf("fill orders: %v", err)
		}
	}
}
