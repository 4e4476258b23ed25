package service_test

import (
	"context"
	"github.com/procurement/gateway/config"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
)

// BenchmarkPollCycle measures one poll cycle of 10,000 due orders against an
// institution that answers each query in 100 ms (real envelope, real
// cipher, real HTTP on loopback), at concurrency 32, against the ideal
// 10,000 × 0.1 s / 32 = 31.25 s. Its baseline, measured in the same run, is
// the same 10,000 queries through the same client at the same concurrency
// with no storage at all: what this machine allows before any SQL. It
// takes over a minute, so it runs only when GATEWAY_BENCH_POLL=1 (never in
// CI's plain `go test`):
//
//	GATEWAY_BENCH_POLL=1 GATEWAY_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' \
//	  go test ./service -run '^$' -bench BenchmarkPollCycle -benchtime 1x
//
// On MariaDB when GATEWAY_TEST_MYSQL_DSN is set, else on SQLite.
func BenchmarkPollCycle(b *testing.B) {
	if os.Getenv("GATEWAY_BENCH_POLL") != "1" {
		b.Skip("set GATEWAY_BENCH_POLL=1 to run the 10,000-order poll cycle (over 30 s)")
	}
	const (
		orders      = 10000
		latency     = 100 * time.Millisecond
		concurrency = 32
	)
	driver := "sqlite"
	if os.Getenv(modeltest.EnvDSN) != "" {
		driver = "mysql"
	}
	// The pool as an operator would size it for 32 calls at once: every
	// worker, finisher and claimer keeps its connection (and its prepared
	// statements) instead of reopening one past max_idle_conns.
	drv, dsn := modeltest.DSN(b, driver, os.Getenv)
	ctx := context.Background()
	store, err := model.Open(ctx, drv, dsn, model.Pool{MaxOpen: 64, MaxIdle: 64, MaxLifetime: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	bk := newBank(b)
	bk.set("ok", latency)
	g := newGateway(b, store, bk, gwOptions{owner: "bench", level: logrus.WarnLevel, maxConcurrent: concurrency,
		timeout: 10 * time.Second, configure: func(c *config.Config) {
			c.Jobs.Concurrency, c.Jobs.BatchSize, c.Jobs.Lease = concurrency, 100, 2*time.Minute
		}})
	nos := seed(b, store, bk, "B", orders, model.StatusProcessing, nil)
	ideal := time.Duration(orders) * latency / concurrency
	report := func(b *testing.B, what string, total time.Duration) {
		mean := total / time.Duration(b.N)
		b.ReportMetric(mean.Seconds(), "s/cycle")
		b.ReportMetric(mean.Seconds()/ideal.Seconds(), "x-ideal")
		b.ReportMetric(float64(orders)/mean.Seconds(), "orders/s")
		b.Logf("%s on %s: %d orders in %.2f s, ideal %.2f s, ratio %.3f", what, driver, orders, mean.Seconds(),
			ideal.Seconds(), mean.Seconds()/ideal.Seconds())
	}

	b.Run("baseline-calls-only", func(b *testing.B) {
		c, err := crypto.New(crypto.Options{}, secret)
		if err != nil {
			b.Fatal(err)
		}
		cl := client.New(client.Config{OrgCode: orgCode, BaseURL: bk.srv.URL + "/eg", AppKey: "key-" + orgCode, Cipher: c,
			Timeout: 10 * time.Second}, client.NewHTTPClient(), noRecorder{})
		var total time.Duration
		for range b.N {
			work := make(chan string)
			var wg sync.WaitGroup
			var failed atomic.Int64
			start := time.Now()
			for range concurrency {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for no := range work {
						if _, err := cl.Query(context.Background(), bk.srv.URL+"/query", no); err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			for _, no := range nos {
				work <- no
			}
			close(work)
			wg.Wait()
			total += time.Since(start)
			if failed.Load() > 0 {
				b.Fatalf("%d queries failed", failed.Load())
			}
		}
		report(b, "baseline (calls only)", total)
	})

	b.Run("poll-cycle", func(b *testing.B) {
		var total time.Duration
		for i := range b.N {
			b.StopTimer()
			makeDue(b, store, nos)
			b.StartTimer()
			start := time.Now()
			st, err := g.jobs.RunOnce(context.Background(), service.JobPollPending)
			total += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if st.Done != orders || st.Failed != 0 {
				b.Fatalf("cycle %d: %+v, want %d done", i, st, orders)
			}
		}
		report(b, "poll cycle", total)
	})
}

type noRecorder struct{}

func (noRecorder) RecordCall(context.Context, client.Record) {}
