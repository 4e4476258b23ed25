package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
	"github.com/procurement/gateway/tools/fill"
	"github.com/procurement/gateway/wire"
)

// EnvBenchDSN names a MariaDB database already filled (gateway loadtest
// --fill) for BenchmarkConsolePages to measure on as it is, so that a
// million orders need not be filled for every run.
const EnvBenchDSN = "GATEWAY_BENCH_DSN"

// benchOrder is the order the benchmark puts through the real flow.
const benchOrder = "BENCH-ORDER-1"

// BenchmarkConsolePages measures the server-side time of every console
// page (the Server-Timing the console sends: queries, decryption and
// rendering) on a filled MariaDB database: a fresh one per size of
// GATEWAY_BENCH_ORDERS (comma-separated; default 1000,10000), filled by
// tools/fill, when GATEWAY_TEST_MYSQL_DSN is set; or the database named by
// GATEWAY_BENCH_DSN, filled before, to which it adds only the rows below
// (once: a later run finds them). The figures of two sizes side by side
// show whether a page costs in proportion to itself or to the history:
//
//	GATEWAY_TEST_MYSQL_DSN=... go test ./console -run '^$' -bench ConsolePages -benchtime 20x
//	GATEWAY_BENCH_DSN='root@tcp(127.0.0.1:3306)/scale_1m?parseTime=true' go test ./console -run '^$' -bench ConsolePages -benchtime 20x
//
// Besides the filled orders there are the benchmark's own: one order
// through the real flow (callbacks with bodies to decrypt, a PDF, calls)
// and three callbacks refused for a wrong key; on a database without
// findings, those of a full reconciliation (the discrepancies the fill
// plants).
func BenchmarkConsolePages(b *testing.B) {
	if dsn := os.Getenv(EnvBenchDSN); dsn != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 32, MaxIdle: 16, MaxLifetime: time.Minute})
		if err != nil {
			b.Fatalf("%s: %v", EnvBenchDSN, err)
		}
		b.Cleanup(func() { s.Close() })
		var n int
		if err := s.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM orders").Scan(&n); err != nil {
			b.Fatalf("%s: is it a filled gateway database? %v", EnvBenchDSN, err)
		}
		b.Run(fmt.Sprintf("mysql/orders=%d", n), func(b *testing.B) { benchPages(b, s) })
		return
	}
	if os.Getenv(modeltest.EnvDSN) == "" {
		b.Skipf("tools/fill writes MySQL/MariaDB only: set %s, or %s to a filled database", modeltest.EnvDSN, EnvBenchDSN)
	}
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
	for _, n := range sizes {
		b.Run(fmt.Sprintf("mysql/orders=%d", n), func(b *testing.B) {
			s := modeltest.Open(b, "mysql", os.Getenv)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			rep, err := fill.Run(ctx, s.DB(), fill.Options{Orders: n, Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("filled %d orders in %s", n, rep.Took.Round(time.Millisecond))
			benchPages(b, s)
		})
	}
}

// benchPages starts a gateway on the filled store s, with the fill's
// institutions, adds the benchmark's rows and measures each page.
func benchPages(b *testing.B, s *model.Store) {
	var others []handlertest.Institution
	for _, in := range fill.DefaultInstitutions() {
		if in.OrgCode != "SIM" {
			others = append(others, handlertest.Institution{OrgCode: in.OrgCode, Name: in.Name, AppKey: "key-" + in.OrgCode,
				AppSecret: in.Secret})
		}
	}
	e := startEnvWith(b, envOptions{Driver: "mysql", Store: s, SimSecret: config.ShippedSimSecret, Others: others,
		Configure: func(c *config.Config) {
			// One count of the orders, before the pages are measured: a
			// count of a million orders running beside them would be
			// measured too.
			c.Metrics.StateInterval = time.Hour
		}})
	benchRows(b, e)
	deadline := time.Now().Add(5 * time.Minute)
	for _, ok := e.Service.LastState(); !ok; _, ok = e.Service.LastState() {
		if time.Now().After(deadline) {
			b.Fatal("no count of the orders after 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A filled order of SIM's, issued, from the middle of the history: its
	// callbacks decrypt with the shipped key.
	ctx := context.Background()
	var sample, name string
	var cb int64
	db := s.DB()
	if err := db.QueryRowContext(ctx, `SELECT order_no, applicant_name FROM orders WHERE org_code = 'SIM' AND status = 'issued'
		AND id >= (SELECT MAX(id) DIV 2 FROM orders) ORDER BY id LIMIT 1`).Scan(&sample, &name); err != nil {
		b.Fatalf("an issued order of SIM's: %v", err)
	}
	if err := db.QueryRowContext(ctx, "SELECT MAX(id) FROM callbacks WHERE order_no = ?", sample).Scan(&cb); err != nil {
		b.Fatalf("a callback of %s: %v", sample, err)
	}
	// The filled bodies must decrypt, or the order's and the callback's
	// pages would be measured without their heaviest part.
	if d, err := service.NewConsole(e.Service, service.ConsoleSettings{}).CallbackDetail(ctx, cb); err != nil ||
		d.Body.State != service.BodyShown {
		b.Fatalf("callback %d of %s: %+v %v, want its body shown (SIM's key is the fill's?)", cb, sample, d, err)
	}
	prefix := []rune(name)
	tz, _ := time.LoadLocation("Asia/Shanghai")
	today := time.Now().In(tz).Format(time.DateOnly)
	br := newBrowser(b, e.URL)
	br.signIn(opUser, opPassword)
	for _, p := range []struct{ name, path string }{
		{"overview", "/console/"},
		{"orders", "/console/orders"},
		{"orders_search_orderno", "/console/orders?q=" + sample},
		{"orders_search_qyname", "/console/orders?q=" + url.QueryEscape(name)},
		{"orders_search_qyname_start", "/console/orders?q=" + url.QueryEscape(string(prefix[:min(4, len(prefix))]))},
		{"orders_status_issued", "/console/orders?status=issued"},
		{"orders_flag_stale", "/console/orders?flag=stale"},
		{"orders_org_dates", "/console/orders?orgcode=SIM&from=2025-01-01&to=" + today},
		{"order", "/console/orders/" + benchOrder},
		{"order_filled", "/console/orders/" + sample},
		{"deliveries_dead", "/console/deliveries"},
		{"deliveries_delivered", "/console/deliveries?status=delivered"},
		{"callbacks", "/console/callbacks"},
		{"callbacks_org_today", "/console/callbacks?orgcode=SIM&from=" + today},
		{"callbacks_rejected_org", "/console/callbacks?result=rejected&orgcode=SIM"},
		{"callback", "/console/callbacks/" + strconv.FormatInt(cb, 10)},
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
}

// benchRows adds the benchmark's own rows, unless an earlier run on the
// same database did: the order through the real flow and three refused
// callbacks (wrong key: 100002); and, on a database without findings,
// today's full reconciliation, which files the fill's planted
// discrepancies for the reconciliation page.
func benchRows(b *testing.B, e *env) {
	b.Helper()
	switch st, body := e.API(b, http.MethodGet, "/v1/guarantees/"+benchOrder, nil); st {
	case http.StatusOK:
		var o struct {
			Status string `json:"status"`
		}
		json.Unmarshal(body, &o)
		if o.Status != "issued" {
			b.Fatalf("%s left %s by an earlier run: %s", benchOrder, o.Status, body)
		}
	case http.StatusNotFound:
		e.issuedOrder(b, benchOrder, "XM-BENCH", "BD-1")
		refused, _ := json.Marshal(wire.Request{Data: "bm90IHNlYWxlZCB3aXRoIHRoZSBrZXk="})
		for range 3 {
			e.RawCallback(b, "paystate", "key-SIM", refused)
		}
	default:
		b.Fatalf("%s: %d %s", benchOrder, st, body)
	}
	var findings int
	if err := e.Store.DB().QueryRow("SELECT COUNT(*) FROM (SELECT 1 FROM findings LIMIT 1) f").Scan(&findings); err != nil {
		b.Fatal(err)
	}
	if findings == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if _, err := e.Service.Reconcile(ctx, time.Now().UTC().Format(time.DateOnly), true); err != nil {
			b.Fatal(err)
		}
	}
}
