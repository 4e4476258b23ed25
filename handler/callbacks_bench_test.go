package handler_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/shopspring/decimal"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// The callback benchmarks compare the real gateway taking paystate
// callbacks on MariaDB with the least a handler could do: a bare gin
// handler that stores the raw body with one GORM insert into the same
// database. Both are driven by the same client over loopback HTTP with the
// same parallelism and the same bodies, and both report ops/s and latency
// percentiles. Run them together to get the ratio, which the later one
// reports as "x-baseline":
//
//	GATEWAY_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' \
//	  go test -run '^$' -bench 'BaselineInsert|Callbacks' -benchtime 20000x ./handler/
//
// BenchmarkBaselineInsert comes first in this file, so it runs first.

// benchClients is the number of concurrent clients per GOMAXPROCS.
const benchClients = 8

// benchPool is the pool of both sides: the gateway's default (config).
var benchPool = model.Pool{MaxOpen: 32, MaxIdle: 16, MaxLifetime: time.Minute}

// benchOps keeps the ops/s of the last run of each benchmark of this
// process, so that the second of the pair can report the ratio.
var benchOps = struct {
	sync.Mutex
	m map[string]float64
}{m: map[string]float64{}}

// benchDB opens a fresh MariaDB database: the gateway's migrated store, and
// a GORM handle of the same options and pool on the same database for the
// baseline and for bulk set-up.
func benchDB(b *testing.B) (*model.Store, *gorm.DB) {
	b.Helper()
	if os.Getenv(modeltest.EnvDSN) == "" {
		b.Skipf("callback benchmarks need MariaDB: %s is not set", modeltest.EnvDSN)
	}
	_, dsn := modeltest.DSN(b, "mysql", os.Getenv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := model.Open(ctx, "mysql", dsn, benchPool)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	// What model.Open does to a DSN and to GORM, so that the baseline pays
	// the same per-statement costs (arguments interpolated by the driver, no
	// GORM statement cache, UTC, utf8mb4).
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		b.Fatal(err)
	}
	cfg.ParseTime, cfg.Loc, cfg.Collation, cfg.InterpolateParams = true, time.UTC, "utf8mb4_bin", true
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	db, err := gorm.Open(mysql.New(mysql.Config{DSNConfig: cfg}), &gorm.Config{
		Logger: logger.Discard, SkipDefaultTransaction: true})
	if err != nil {
		b.Fatal(err)
	}
	sqlDB, _ := db.DB()
	sqlDB.SetMaxOpenConns(benchPool.MaxOpen)
	sqlDB.SetMaxIdleConns(benchPool.MaxIdle)
	sqlDB.SetConnMaxLifetime(benchPool.MaxLifetime)
	b.Cleanup(func() { sqlDB.Close() })
	return store, db
}

// benchOrders is how many processing orders the payments are spread over:
// a handful of payments each, as in life.
const benchOrders = 1000

// benchBodies makes n paystate callbacks of distinct payments, encrypted by
// the institution, spread over the orders; the encryption is the sender's
// work and is done before the clock starts.
func benchBodies(b *testing.B, f *fixture, n int) [][]byte {
	b.Helper()
	c := f.Cipher(orgECB)
	base := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	bodies := make([][]byte, n)
	for i := range bodies {
		orderNo := fmt.Sprintf("BENCH%06d", i%benchOrders)
		bodies[i] = envelope(b, c, payParams(orderNo, wire.PayKindPay, "100.00", base.Add(time.Duration(i)*time.Millisecond)))
	}
	return bodies
}

// createBenchOrders inserts the processing orders in batches.
func createBenchOrders(b *testing.B, db *gorm.DB) {
	b.Helper()
	one := 1
	now := time.Now().UTC()
	orders := make([]model.Order, benchOrders)
	for i := range orders {
		orders[i] = model.Order{OrderNo: fmt.Sprintf("BENCH%06d", i), OrgCode: orgECB, Status: model.StatusProcessing,
			ActiveSlot: &one, RequestHash: fmt.Sprintf("%064d", i), ApplicantName: "某某建设有限公司",
			ApplicantCode: fmt.Sprintf("91330000MA%08d", i), DepositAmount: decimal.NewFromInt(10000),
			ProjectName: "办公设备采购", ProjectCode: "XM-BENCH", LotName: "第一标段", LotCode: "BD1",
			OpeningAt: now.Add(72 * time.Hour), TendererName: "某某采购中心", TendererCode: "12330000MB0000000X",
			DeadlineAt: now.Add(48 * time.Hour), AccountBank: "中国银行", AccountName: "某某建设有限公司",
			AccountNo: "6217000000001234", ContactName: "张三", ContactPhone: "13800001234", ContactEmail: "a@example.com"}
	}
	if err := db.CreateInBatches(orders, 200).Error; err != nil {
		b.Fatal(err)
	}
}

// drive posts bodies[i] for i in 0..b.N to url from parallel clients and
// reports ops/s and latency percentiles. Every answer must be HTTP 200 with
// stat 1.
func drive(b *testing.B, name, url, appKey string, bodies [][]byte) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	var firstErr atomic.Value
	b.SetParallelism(benchClients)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mine := make([]time.Duration, 0, b.N/4+1)
		for pb.Next() {
			i := next.Add(1) - 1
			t0 := time.Now()
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i]))
			req.Header.Set("Content-Type", "application/json;charset=utf-8")
			req.Header.Set("appKey", appKey)
			resp, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				continue
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mine = append(mine, time.Since(t0))
			if resp.StatusCode != http.StatusOK || !bytes.Contains(raw, []byte(`"stat":1`)) {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("HTTP %d %s", resp.StatusCode, raw))
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d callbacks failed, first: %v", n, b.N, firstErr.Load())
	}
	ops := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(ops, "ops/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
	}
	benchOps.Lock()
	benchOps.m[name] = ops
	base, haveBase := benchOps.m["baseline"]
	benchOps.Unlock()
	if name != "baseline" && haveBase {
		b.ReportMetric(ops/base, "x-baseline")
	}
}

// rawCallback is the baseline's row: the body as received.
type rawCallback struct {
	ID         int64
	Body       []byte
	ReceivedAt time.Time
}

// BenchmarkBaselineInsert: a bare gin handler that reads the body and
// stores it with one GORM insert, nothing else.
func BenchmarkBaselineInsert(b *testing.B) {
	store, db := benchDB(b)
	if err := db.Exec(`CREATE TABLE raw_callbacks (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
		body LONGBLOB NOT NULL, received_at DATETIME(3) NOT NULL) ENGINE=InnoDB`).Error; err != nil {
		b.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.POST("/api/guarantee/paystate", func(c *gin.Context) {
		body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, 64<<10))
		if err != nil {
			c.JSON(http.StatusBadRequest, wire.Response{Stat: 0, Errcode: wire.CodeBadParam})
			return
		}
		row := rawCallback{Body: body, ReceivedAt: time.Now().UTC()}
		if err := db.WithContext(c.Request.Context()).Create(&row).Error; err != nil {
			c.JSON(http.StatusServiceUnavailable, wire.Response{Stat: 0, Errcode: wire.CodeUnavailable})
			return
		}
		c.JSON(http.StatusOK, wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "成功"})
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	// The same bodies as the gateway's run, made the same way.
	f := start(b, "mysql", func(o *handlertest.Options) { o.Store = store })
	bodies := benchBodies(b, f, b.N)
	drive(b, "baseline", srv.URL+"/api/guarantee/paystate", f.specs[orgECB].AppKey, bodies)
}

// BenchmarkCallbacks: the real gateway (handlertest: real store, cipher,
// service, gin server) taking paystate callbacks of distinct payments.
func BenchmarkCallbacks(b *testing.B) {
	store, db := benchDB(b)
	createBenchOrders(b, db)
	f := start(b, "mysql", func(o *handlertest.Options) { o.Store = store })
	bodies := benchBodies(b, f, b.N)
	drive(b, "gateway", f.URL+"/api/guarantee/paystate", f.specs[orgECB].AppKey, bodies)
	// Every callback took effect once.
	var n int64
	if err := db.Model(&model.Payment{}).Count(&n).Error; err != nil || n != int64(b.N) {
		b.Fatalf("payments: %d (%v), want %d", n, err, b.N)
	}
}
