package model_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// observed records what a store's Retry.Observe was told.
type observed struct {
	mu   sync.Mutex
	runs []run
}

type run struct {
	op        string
	retries   int
	exhausted bool
}

func (o *observed) observe(op string, retries int, exhausted bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.runs = append(o.runs, run{op, retries, exhausted})
}

func (o *observed) all() []run {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]run(nil), o.runs...)
}

// TestInTxRunsADeadlockedTransactionAgain makes two transactions lock two
// orders in opposite order, so that InnoDB refuses one of them (1213)
// while the other waits; each adds 1.00 to both orders' paid amounts.
// Without retries the refused one is lost to its caller; with them it runs
// again whole after the other committed, and each order ends with 2.00,
// not more: the refused attempt left nothing behind.
func TestInTxRunsADeadlockedTransactionAgain(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	for _, c := range []struct {
		name     string
		attempts int
		wantErrs int
		wantPaid string
	}{
		{"no retries", 0, 1, "1.00"},
		{"retries", 3, 0, "2.00"},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := modeltest.Open(t, "mysql", os.Getenv)
			obs := &observed{}
			s := base.Retrying(model.Retry{Attempts: c.attempts, Wait: time.Millisecond, Observe: obs.observe})
			createAll(t, s, newOrder("DL-A", "QA"), newOrder("DL-B", "QB"))

			locked := map[string]chan struct{}{"DL-A": make(chan struct{}), "DL-B": make(chan struct{})}
			tx := func(first, second string) error {
				attempt := 0
				return s.InTx(model.WithOp(context.Background(), "tx "+first), func(tx model.Queries) error {
					attempt++
					for i, no := range []string{first, second} {
						o, err := tx.LockOrder(no)
						if err != nil {
							return err
						}
						if attempt == 1 && i == 0 {
							// Each holds its first order until the other
							// holds its own: then each wants the other's.
							close(locked[first])
							<-locked[second]
						}
						ch := model.OrderChange{}.Amounts(model.Amounts{Paid: o.PaidAmount.Add(decimal.RequireFromString("1.00")),
							Refunded: o.RefundedAmount})
						if _, err := tx.UpdateOrder(no, ch, model.OrderGuard{}); err != nil {
							return err
						}
					}
					return nil
				})
			}
			errs := make([]error, 2)
			var wg sync.WaitGroup
			wg.Go(func() { errs[0] = tx("DL-A", "DL-B") })
			wg.Go(func() { errs[1] = tx("DL-B", "DL-A") })
			wg.Wait()

			failed := 0
			for _, err := range errs {
				if err != nil {
					failed++
					if !model.Transient(err) {
						t.Errorf("a transaction failed with %v; want a deadlock", err)
					}
				}
			}
			if failed != c.wantErrs {
				t.Errorf("%d transactions failed (%v); want %d", failed, errs, c.wantErrs)
			}
			for _, no := range []string{"DL-A", "DL-B"} {
				o, err := s.Order(no)
				if err != nil {
					t.Fatal(err)
				}
				if o.PaidAmount.StringFixed(2) != c.wantPaid {
					t.Errorf("%s paid %s; want %s", no, o.PaidAmount.StringFixed(2), c.wantPaid)
				}
			}
			var retried, exhausted int
			for _, r := range obs.all() {
				if r.op == "tx DL-A" || r.op == "tx DL-B" {
					retried += r.retries
					if r.exhausted {
						exhausted++
					}
				}
			}
			if retried != min(c.attempts, 1) || exhausted != c.wantErrs {
				t.Errorf("observed %d retries and %d runs out of attempts (%+v); want %d and %d", retried, exhausted,
					obs.all(), min(c.attempts, 1), c.wantErrs)
			}
		})
	}
}

// TestRetryBound: work refused on every attempt runs 1 + Attempts times,
// after pauses, then returns the database's error (still a conflict, for
// errors.As), and the observer hears that the attempts ran out; any other
// error, or none, ends at once; a cancelled context ends the pauses.
func TestRetryBound(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, base *model.Store) {
		conflict := &mysqldrv.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock; try restarting transaction"}
		obs := &observed{}
		s := base.Retrying(model.Retry{Attempts: 4, Wait: time.Millisecond, Observe: obs.observe})
		ctx := model.WithOp(context.Background(), "bound")
		for _, c := range []struct {
			name     string
			fail     func(n int) error
			runs     int
			want     error
			observed run
		}{
			{"refused every time", func(int) error { return conflict }, 5, conflict, run{"bound", 4, true}},
			{"refused twice", func(n int) error {
				if n <= 2 {
					return conflict
				}
				return nil
			}, 3, nil, run{"bound", 2, false}},
			{"another error", func(int) error { return model.ErrNotFound }, 1, model.ErrNotFound, run{"bound", 0, false}},
		} {
			for _, via := range []string{"InTx", "Do"} {
				n := 0
				work := func(model.Queries) error { n++; return c.fail(n) }
				var err error
				if via == "InTx" {
					err = s.InTx(ctx, work)
				} else {
					err = s.Do(ctx, work)
				}
				if n != c.runs {
					t.Errorf("%s, %s: ran %d times; want %d", c.name, via, n, c.runs)
				}
				if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
					t.Errorf("%s, %s: %v; want %v", c.name, via, err, c.want)
				}
				runs := obs.all()
				if got := runs[len(runs)-1]; got != c.observed {
					t.Errorf("%s, %s: observed %+v; want %+v", c.name, via, got, c.observed)
				}
			}
		}

		// A caller that gives up ends the pauses.
		slow := base.Retrying(model.Retry{Attempts: 30, Wait: time.Second})
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := slow.Do(cctx, func(model.Queries) error { return conflict })
		if !errors.Is(err, conflict) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Errorf("cancelled after %v: %v; want the conflict and the deadline, at once", time.Since(start), err)
		}

		// The zero policy never runs work again.
		n := 0
		if err := base.Retrying(model.Retry{}).InTx(ctx, func(model.Queries) error { n++; return conflict }); !errors.Is(err, conflict) || n != 1 {
			t.Errorf("zero policy: ran %d times, %v", n, err)
		}
	})
}

// TestReady: a migrated store is ready; one whose tables are not there is
// not, though it answers a ping. A standalone server is no Galera node.
func TestReady(t *testing.T) {
	for _, driver := range modeltest.Drivers(os.Getenv) {
		t.Run(driver, func(t *testing.T) {
			d, dsn := modeltest.DSN(t, driver, os.Getenv)
			ctx := context.Background()
			s, err := model.Open(ctx, d, dsn, model.Pool{MaxOpen: 2, MaxIdle: 1, MaxLifetime: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Galera() {
				t.Errorf("a standalone %s is taken for a Galera node", driver)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Ready(ctx); err == nil {
				t.Error("Ready before the migrations: no error; want one (no table to read)")
			}
			if _, err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Ready(ctx); err != nil {
				t.Errorf("Ready after the migrations: %v", err)
			}
		})
	}
}

// TestMigrateAtOnce migrates fresh databases from six stores at the same
// moment, as replicas starting together do: they take turns through
// goose's lock row, and the one that comes first makes goose's version
// table under it (goose makes it before its own lock, and two making it at
// once could each find it without its first row). Every store succeeds,
// each migration is recorded once.
func TestMigrateAtOnce(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	for round := range 5 {
		_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
		const n = 6
		errs := make([]error, n)
		applied := make([]int, n)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				s, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 2, MaxIdle: 1, MaxLifetime: time.Minute})
				if err != nil {
					errs[i] = err
					return
				}
				defer s.Close()
				<-gate
				got, err := s.Migrate(ctx)
				applied[i], errs[i] = len(got), err
			})
		}
		time.Sleep(100 * time.Millisecond)
		close(gate)
		wg.Wait()
		total := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d, store %d: %v", round+1, i, err)
			}
			total += applied[i]
		}
		var versions int
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		err = db.QueryRow("SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0").Scan(&versions)
		db.Close()
		if err != nil || versions != total || total == 0 {
			t.Errorf("round %d: %d migrations applied by the stores, %d recorded (%v)", round+1, total, versions, err)
		}
	}
}
