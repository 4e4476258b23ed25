package service_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
)

// bulkHistory stores n callbacks with a body of bodySize bytes and n
// calls, all from before cutoff, in multi-row statements.
func bulkHistory(t testing.TB, store *model.Store, n, bodySize int, cutoff time.Time) {
	t.Helper()
	body := bytes.Repeat([]byte("x"), bodySize)
	const per = 200
	for start := 0; start < n; start += per {
		m := min(per, n-start)
		var cbs, calls []string
		var cbArgs, callArgs []any
		for i := start; i < start+m; i++ {
			at := cutoff.Add(-time.Duration(n-i) * time.Second).UTC()
			cbs = append(cbs, "(?, 'paystate', ?, ?, ?, ?, 'accepted', '000000', ?)")
			cbArgs = append(cbArgs, orgCode, fmt.Sprintf("H%07d", i), body, fmt.Sprintf("%064d", i), bodySize, at)
			calls = append(calls, "(?, ?, 'query', 'http://x', 'ok', 10, 100, 100, ?)")
			callArgs = append(callArgs, orgCode, fmt.Sprintf("H%07d", i), at)
		}
		if _, err := store.DB().Exec("INSERT INTO callbacks (org_code, kind, order_no, body, body_sha256, body_size, result, errcode, received_at) VALUES "+
			strings.Join(cbs, ","), cbArgs...); err != nil {
			t.Fatalf("seed callbacks: %v", err)
		}
		if _, err := store.DB().Exec("INSERT INTO outbound_calls (org_code, order_no, endpoint, url, result, latency_ms, request_bytes, response_bytes, created_at) VALUES "+
			strings.Join(calls, ","), callArgs...); err != nil {
			t.Fatalf("seed calls: %v", err)
		}
	}
}

// latencies records how long each insert took, from several writers.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d)
	l.mu.Unlock()
}

// quantile q (0..1) of what was recorded, and how many.
func (l *latencies) quantile(q float64) (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), l.all...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))], len(s)
}

// insertWhile inserts new callbacks with writers goroutines on store until
// done is closed, recording each insert's latency.
func insertWhile(t testing.TB, store *model.Store, writers int, done <-chan struct{}) (*latencies, *sync.WaitGroup) {
	l := &latencies{}
	var wg sync.WaitGroup
	body := bytes.Repeat([]byte("y"), 2048)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				start := time.Now()
				err := store.InsertCallback(&model.Callback{OrgCode: orgCode, Kind: "paystate", OrderNo: fmt.Sprintf("N%d-%d", w, i),
					Body: body, BodySha256: "n", BodySize: int64(len(body)), Result: model.CallbackAccepted})
				if err != nil {
					t.Errorf("insert during the purge: %v", err)
					return
				}
				l.add(time.Since(start))
			}
		}()
	}
	return l, &wg
}

// TestRetentionDoesNotHoldUpCallbacks: while the job purges thousands of
// bodies and calls in full batches without pauses, callbacks are still
// stored promptly: each batch locks only its own old rows, for one short
// statement, and on SQLite holds the one writer for one batch at most.
func TestRetentionDoesNotHoldUpCallbacks(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		g := newGateway(t, store, newBank(t), gwOptions{level: 4, configure: func(c *config.Config) {
			c.Retention.BatchSize, c.Retention.Pause = 500, time.Nanosecond
		}})
		const n = 4000
		bulkHistory(t, store, n, 2048, time.Now().Add(-181*24*time.Hour))

		done := make(chan struct{})
		lat, wg := insertWhile(t, store, 4, done)
		time.Sleep(50 * time.Millisecond) // the writers under way
		start := time.Now()
		st := g.run(t, service.JobRetention)
		took := time.Since(start)
		close(done)
		wg.Wait()
		if st.Done != 2*n {
			t.Errorf("purged %+v, want %d bodies and %d calls", st, n, n)
		}
		maxLat, count := lat.quantile(1)
		p99, _ := lat.quantile(0.99)
		t.Logf("%s: purged %d rows in %s; %d inserts meanwhile, p99 %s, max %s", store.Driver(), st.Done, took.Round(time.Millisecond), count, p99, maxLat)
		if count == 0 {
			t.Error("no insert completed during the purge")
		}
		if maxLat > time.Second {
			t.Errorf("an insert waited %s during the purge, want well under a second", maxLat)
		}
	})
}

// TestRetentionLoad measures a purge of GATEWAY_RETENTION_LOAD bodies
// ("100000") and twice as many calls on MySQL, with writers inserting
// callbacks meanwhile: time, rows read by the purge's session, the
// inserts' latency. Run by hand:
//
//	GATEWAY_RETENTION_LOAD=100000 GATEWAY_TEST_MYSQL_DSN=... go test ./service -run TestRetentionLoad -v -timeout 30m
func TestRetentionLoad(t *testing.T) {
	var n int
	if _, err := fmt.Sscan(os.Getenv("GATEWAY_RETENTION_LOAD"), &n); err != nil || n <= 0 {
		t.Skip("set GATEWAY_RETENTION_LOAD=100000 (and GATEWAY_TEST_MYSQL_DSN) to measure a large purge")
	}
	driver, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	ctx := context.Background()
	// One connection: the session's status counts the purge's reads alone.
	purger, err := model.Open(ctx, driver, dsn, model.Pool{MaxOpen: 1, MaxIdle: 1, MaxLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer purger.Close()
	if _, err := purger.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	writer, err := model.Open(ctx, driver, dsn, model.Pool{MaxOpen: 8, MaxIdle: 8, MaxLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	batch := 500
	if b := os.Getenv("GATEWAY_RETENTION_BATCH"); b != "" {
		fmt.Sscan(b, &batch)
	}
	pause := 100 * time.Millisecond
	if p := os.Getenv("GATEWAY_RETENTION_PAUSE"); p != "" {
		if pause, err = time.ParseDuration(p); err != nil {
			t.Fatal(err)
		}
	}
	g := newGateway(t, purger, newBank(t), gwOptions{level: 4, configure: func(c *config.Config) {
		c.Retention.Pause, c.Retention.BatchSize = pause, batch
		c.Retention.MaxPerRun = 2 * n
	}})
	cutoff := time.Now().Add(-181 * 24 * time.Hour).UTC()
	seedStart := time.Now()
	// Bodies of 2 KiB (a paystate is 1-2 KiB encrypted); the calls twice
	// as many, from the sequence engine of MariaDB.
	modeltest.Exec(t, writer, `INSERT INTO callbacks (org_code, kind, order_no, body, body_sha256, body_size, result, errcode, received_at)
		SELECT ?, 'paystate', CONCAT('L', seq), REPEAT('x', 2048), LPAD(seq, 64, '0'), 2048, 'accepted', '000000',
		       ? - INTERVAL (? - seq) SECOND FROM seq_1_to_`+fmt.Sprint(n), orgCode, cutoff, n)
	modeltest.Exec(t, writer, `INSERT INTO outbound_calls (org_code, order_no, endpoint, url, result, latency_ms, request_bytes, response_bytes, created_at)
		SELECT ?, CONCAT('L', seq DIV 2), 'query', 'https://bank.example/eg/guarantee/query?orderno=L1', 'ok', 10, 300, 300,
		       ? - INTERVAL (? - seq DIV 2) SECOND FROM seq_1_to_`+fmt.Sprint(2*n), orgCode, cutoff, n)
	modeltest.Exec(t, writer, "ANALYZE TABLE callbacks, outbound_calls")
	size := func() string {
		var out []string
		for _, table := range []string{"callbacks", "outbound_calls"} {
			var used, free int64
			writer.DB().QueryRow(`SELECT data_length + index_length, data_free FROM information_schema.tables
				WHERE table_schema = DATABASE() AND table_name = ?`, table).Scan(&used, &free)
			out = append(out, fmt.Sprintf("%s %d MiB (%d MiB free inside)", table, used>>20, free>>20))
		}
		return strings.Join(out, ", ")
	}
	t.Logf("seeded %d callbacks and %d calls in %s: %s", n, 2*n, time.Since(seedStart).Round(time.Millisecond), size())
	for _, q := range []string{
		"EXPLAIN SELECT id, received_at FROM callbacks WHERE received_at >= '2000-01-01' AND received_at < NOW() - INTERVAL 180 DAY AND (received_at > '2000-01-01' OR id > 0) ORDER BY received_at, id LIMIT 500",
		"EXPLAIN SELECT id FROM outbound_calls WHERE created_at < NOW() - INTERVAL 180 DAY ORDER BY created_at, id LIMIT 500",
	} {
		var id, sel, table, typ, keys, key, keyLen, ref, rows, extra any
		var part any
		r := writer.DB().QueryRow(q)
		if err := r.Scan(&id, &sel, &table, &typ, &keys, &key, &keyLen, &ref, &rows, &extra); err != nil {
			if err := writer.DB().QueryRow(q).Scan(&id, &sel, &table, &part, &typ, &keys, &key, &keyLen, &ref, &rows, &extra); err != nil {
				t.Logf("explain: %v", err)
				continue
			}
		}
		t.Logf("EXPLAIN %s: type %s key %s extra %s", table, typ, key, extra)
	}

	status := func() map[string]int64 {
		rs, err := purger.DB().Query(`SHOW SESSION STATUS WHERE Variable_name IN
			('Handler_read_key','Handler_read_next','Handler_read_rnd_next','Rows_read','Handler_update','Handler_delete')`)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		out := map[string]int64{}
		for rs.Next() {
			var k string
			var v int64
			rs.Scan(&k, &v)
			out[k] = v
		}
		return out
	}
	diff := func(a, b map[string]int64) string {
		var parts []string
		for _, k := range []string{"Rows_read", "Handler_read_key", "Handler_read_next", "Handler_read_rnd_next", "Handler_update", "Handler_delete"} {
			parts = append(parts, fmt.Sprintf("%s %d", k, b[k]-a[k]))
		}
		return strings.Join(parts, ", ")
	}

	// The same writers without a purge, for comparison.
	done := make(chan struct{})
	lat, wg := insertWhile(t, writer, 4, done)
	time.Sleep(20 * time.Second)
	close(done)
	wg.Wait()
	maxLat, count := lat.quantile(1)
	p99, _ := lat.quantile(0.99)
	p50, _ := lat.quantile(0.5)
	t.Logf("baseline, no purge: %d callback inserts in 20s (4 writers): p50 %s, p99 %s, max %s", count, p50, p99, maxLat)

	// Row lock waits, server-wide: any the writers met waiting on the purge.
	locks := func() (waits, maxMs int64) {
		rs, err := writer.DB().Query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_row_lock_waits', 'Innodb_row_lock_time_max')")
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		for rs.Next() {
			var k string
			var v int64
			rs.Scan(&k, &v)
			if k == "Innodb_row_lock_waits" {
				waits = v
			} else {
				maxMs = v
			}
		}
		return waits, maxMs
	}
	waits0, _ := locks()

	done = make(chan struct{})
	lat, wg = insertWhile(t, writer, 4, done)
	time.Sleep(200 * time.Millisecond)
	s0 := status()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	st, err := g.jobs.RunOnce(rctx, service.JobRetention)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	s1 := status()
	close(done)
	wg.Wait()
	maxLat, count = lat.quantile(1)
	p99, _ = lat.quantile(0.99)
	p50, _ = lat.quantile(0.5)
	waits1, lockMax := locks()
	t.Logf("first run (batch %d, pause %s): %+v in %s", batch, pause, st, took.Round(time.Millisecond))
	t.Logf("  row lock waits on the server meanwhile: %d (longest ever on the server: %d ms)", waits1-waits0, lockMax)
	t.Logf("  purge session: %s", diff(s0, s1))
	t.Logf("  %d callback inserts meanwhile (4 writers): p50 %s, p99 %s, max %s", count, p50, p99, maxLat)
	t.Logf("  after: %s (InnoDB reuses the freed pages; the files shrink only with OPTIMIZE TABLE)", size())
	if st.Done != 3*n {
		t.Errorf("purged %d, want %d", st.Done, 3*n)
	}

	// A later run: nothing is older, and the mark keeps it from reading
	// the emptied callbacks again.
	s0 = status()
	start = time.Now()
	st = g.run(t, service.JobRetention)
	t.Logf("second run: %+v in %s; purge session: %s", st, time.Since(start).Round(time.Millisecond), diff(s0, status()))

	// What an emptied callback row and a call row cost, rebuilt: the
	// writers' callbacks out, the tables optimized.
	modeltest.Exec(t, writer, "DELETE FROM callbacks WHERE order_no LIKE 'N%'")
	modeltest.Exec(t, writer, "OPTIMIZE TABLE callbacks, outbound_calls")
	t.Logf("after OPTIMIZE, %d emptied callbacks and no call: %s", n, size())
}
