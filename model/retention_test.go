package model_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// count returns the rows of table matching where.
func count(t *testing.T, s *model.Store, table, where string, args ...any) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM "+table+" WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// TestPurgeCallbackBodies: bodies older than the cutoff are emptied in
// batches of n in (received_at, id) order, newer ones and the rows stay,
// rows of one millisecond are not taken twice or skipped, and a cursor
// past everything finds nothing.
func TestPurgeCallbackBodies(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		cutoff := time.Now().UTC().Add(-180 * 24 * time.Hour).Truncate(time.Millisecond)
		old := cutoff.Add(-time.Hour)
		// 35 old callbacks with a body, in 7 milliseconds of 5 each (a
		// group commit stores many in one millisecond); 3 old without a
		// body (a PDF notice over the audit limit); 4 newer ones.
		for i := 0; i < 35; i++ {
			cb := &model.Callback{Kind: "paystate", OrderNo: "A-1", Body: []byte(fmt.Sprintf("body-%d", i)),
				BodySha256: "s", BodySize: 6, Result: model.CallbackAccepted, ReceivedAt: old.Add(time.Duration(i/5) * time.Millisecond)}
			if err := s.InsertCallback(cb); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 3; i++ {
			if err := s.InsertCallback(&model.Callback{Kind: "applynotify", OrderNo: "A-1", BodySha256: "big", BodySize: 2 << 20,
				Result: model.CallbackAccepted, ReceivedAt: old.Add(10 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, at := range []time.Time{cutoff, cutoff.Add(time.Millisecond), cutoff.Add(time.Hour), time.Now()} {
			if err := s.InsertCallback(&model.Callback{Kind: "paystate", OrderNo: "A-1", Body: []byte("new"),
				BodySha256: "s", BodySize: 3, Result: model.CallbackAccepted, ReceivedAt: at}); err != nil {
				t.Fatal(err)
			}
		}

		var cur model.RetentionCursor
		var batches, examined int
		var purged int64
		for {
			b, err := s.PurgeCallbackBodies(cur, cutoff, 10)
			if err != nil {
				t.Fatal(err)
			}
			if b.Examined > 10 {
				t.Fatalf("a batch of 10 examined %d", b.Examined)
			}
			examined += b.Examined
			purged += b.Purged
			if b.Examined > 0 {
				batches++
				if !b.Next.At.After(cur.At) && b.Next.ID <= cur.ID {
					t.Fatalf("cursor went back: %+v after %+v", b.Next, cur)
				}
			}
			cur = b.Next
			if b.Examined < 10 {
				break
			}
		}
		if batches != 4 || examined != 38 {
			t.Errorf("%d batches examined %d rows, want 4 and 38", batches, examined)
		}
		// SQLite stores a nil body as an empty one, which counts as emptied.
		if purged != 35 && !(s.Driver() == "sqlite" && purged == 38) {
			t.Errorf("purged %d bodies, want 35", purged)
		}
		if !cur.At.Equal(old.Add(10 * time.Millisecond)) {
			t.Errorf("cursor at %s, want the last old callback's %s", cur.At, old.Add(10*time.Millisecond))
		}
		if n := count(t, s, "callbacks", "body IS NOT NULL AND received_at < ?", cutoff); n != 0 {
			t.Errorf("%d old bodies left", n)
		}
		if n := count(t, s, "callbacks", "body IS NOT NULL AND received_at >= ?", cutoff); n != 4 {
			t.Errorf("%d newer bodies left, want 4", n)
		}
		if n := count(t, s, "callbacks", "1=1"); n != 42 {
			t.Errorf("%d callback rows, want all 42 kept", n)
		}
		cb, err := s.Callback(1)
		if err != nil || cb.Body != nil || cb.BodySha256 != "s" || cb.BodySize != 6 || cb.Result != model.CallbackAccepted {
			t.Errorf("an emptied callback: %+v %v", cb, err)
		}

		// From the cursor, or from a mark at its time, nothing more.
		if b, err := s.PurgeCallbackBodies(cur, cutoff, 10); err != nil || b.Examined != 0 || b.Next != cur {
			t.Errorf("again from the cursor: %+v %v", b, err)
		}
		if b, err := s.PurgeCallbackBodies(model.RetentionCursor{At: cur.At}, cutoff, 10); err != nil || b.Examined != 3 || b.Purged != 0 {
			t.Errorf("again from the mark: %+v %v, want only its millisecond's 3 examined", b, err)
		}
		// A later cutoff takes the next ones, and no more.
		if b, err := s.PurgeCallbackBodies(cur, cutoff.Add(2*time.Millisecond), 10); err != nil || b.Examined != 2 || b.Purged != 2 {
			t.Errorf("a later cutoff: %+v %v, want 2", b, err)
		}
	})
}

// TestPurgeCalls: call records older than the cutoff are deleted in
// batches of n, newer ones stay, and nothing else is touched.
func TestPurgeCalls(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		cutoff := time.Now().UTC().Add(-180 * 24 * time.Hour).Truncate(time.Millisecond)
		o := newOrder("R-1", "Q1")
		if err := s.CreateOrder(o); err != nil {
			t.Fatal(err)
		}
		if err := s.AddEvent(&model.Event{OrderNo: "R-1", Kind: "status", Name: "x", CreatedAt: cutoff.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.InsertPayment(&model.Payment{DedupKey: "d1", OrderNo: "R-1", OrgCode: "BANK01", Kind: "1",
			Amount: decimal.RequireFromString("1.00"), PaidAt: cutoff.Add(-time.Hour), CreatedAt: cutoff.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 35; i++ {
			if err := s.InsertCall(&model.Call{OrgCode: "BANK01", OrderNo: "R-1", Endpoint: "query", Result: "ok",
				CreatedAt: cutoff.Add(-time.Duration(i+1) * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, at := range []time.Time{cutoff, time.Now()} {
			if err := s.InsertCall(&model.Call{OrgCode: "BANK01", OrderNo: "R-1", Endpoint: "query", Result: "ok", CreatedAt: at}); err != nil {
				t.Fatal(err)
			}
		}
		var batches int
		var deleted int64
		for {
			b, err := s.PurgeCalls(cutoff, 10)
			if err != nil {
				t.Fatal(err)
			}
			if b.Examined > 10 || b.Purged != int64(b.Examined) {
				t.Fatalf("batch %+v", b)
			}
			if b.Examined > 0 {
				batches++
			}
			deleted += b.Purged
			if b.Examined < 10 {
				break
			}
		}
		if batches != 4 || deleted != 35 {
			t.Errorf("%d batches deleted %d, want 4 and 35", batches, deleted)
		}
		if n := count(t, s, "outbound_calls", "1=1"); n != 2 {
			t.Errorf("%d calls left, want the 2 newer", n)
		}
		if count(t, s, "orders", "1=1") != 1 || count(t, s, "order_events", "1=1") != 1 || count(t, s, "payments", "1=1") != 1 {
			t.Error("orders, events or payments touched")
		}
	})
}

// oldRows stores n callbacks with a body and n calls, one a minute up to
// a minute before cutoff, and a newer one of each (a live gateway's).
func oldRows(t *testing.T, s *model.Store, n int, cutoff time.Time) {
	t.Helper()
	for start := 0; start < n; start += 500 {
		var cbs, calls []string
		var cbArgs, callArgs []any
		for i := start; i < min(n, start+500); i++ {
			at := cutoff.Add(-time.Duration(n-i) * time.Minute).UTC()
			cbs = append(cbs, "('paystate', 'A-1', 'old body', 's', 8, 'accepted', '', ?)")
			cbArgs = append(cbArgs, at)
			calls = append(calls, "('B1', 'A-1', 'query', '', 'ok', 1, 1, 1, ?)")
			callArgs = append(callArgs, at)
		}
		modeltest.Exec(t, s, "INSERT INTO callbacks (kind, order_no, body, body_sha256, body_size, result, errcode, received_at) VALUES "+strings.Join(cbs, ","), cbArgs...)
		modeltest.Exec(t, s, "INSERT INTO outbound_calls (org_code, order_no, endpoint, url, result, latency_ms, request_bytes, response_bytes, created_at) VALUES "+strings.Join(calls, ","), callArgs...)
	}
	if err := s.InsertCallback(&model.Callback{Kind: "paystate", OrderNo: "A-1", Body: []byte("new"), BodySha256: "s", Result: model.CallbackAccepted}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertCall(&model.Call{OrgCode: "B1", OrderNo: "A-1", Endpoint: "query", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
}

// promptly runs write on its own connection and fails the test unless it
// is done within a second.
func promptly(t *testing.T, ctx context.Context, name string, write func(ctx context.Context) error) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := write(wctx); err != nil {
		t.Errorf("%s: %v", name, err)
	} else if d := time.Since(start); d > time.Second {
		t.Errorf("%s took %s", name, d)
	}
}

// TestPurgeLocksOnlyItsRows: on MySQL, the purge's writes and the
// callbacks and calls being recorded do not wait for each other. A batch
// held open (far longer than a real one) keeps no callback or call from
// being recorded; and a group commit in flight, its new rows not yet
// committed, keeps no batch from being done.
func TestPurgeLocksOnlyItsRows(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL only: %s is not set", modeltest.EnvDSN)
	}
	s := modeltest.Open(t, "mysql", os.Getenv)
	cutoff := time.Now().UTC().Add(-180 * 24 * time.Hour).Truncate(time.Millisecond)
	oldRows(t, s, 3000, cutoff)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A batch of 500 held open, written as PurgeCallbackBodies and
	// PurgeCalls write it: by primary key, at the default isolation level.
	ids := make([]string, 500)
	for i := range ids {
		ids[i] = fmt.Sprint(i + 1)
	}
	in := strings.Join(ids, ",")
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"UPDATE callbacks FORCE INDEX (PRIMARY) SET body = NULL WHERE id IN (" + in + ") AND body IS NOT NULL",
		"DELETE c FROM outbound_calls AS c FORCE INDEX (PRIMARY) WHERE c.id IN (" + in + ")"} {
		if res, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		} else if n, _ := res.RowsAffected(); n != 500 {
			t.Fatalf("%d rows, want 500: %s", n, q[:30])
		}
	}
	promptly(t, ctx, "insert a callback while a batch holds its locks", func(ctx context.Context) error {
		return s.With(ctx).InsertCallback(&model.Callback{Kind: "paystate", OrderNo: "A-2", Body: []byte("new"), BodySha256: "s", Result: model.CallbackAccepted})
	})
	promptly(t, ctx, "insert a call while a batch holds its locks", func(ctx context.Context) error {
		return s.With(ctx).InsertCall(&model.Call{OrgCode: "B1", OrderNo: "A-2", Endpoint: "query", Result: "ok"})
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}

	// A transaction recording a callback and a call, not yet committed:
	// the batches go on past its rows.
	err = s.InTx(ctx, func(q model.Queries) error {
		if err := q.InsertCallback(&model.Callback{Kind: "paystate", OrderNo: "A-3", Body: []byte("new"), BodySha256: "s", Result: model.CallbackAccepted}); err != nil {
			return err
		}
		if err := q.InsertCall(&model.Call{OrgCode: "B1", OrderNo: "A-3", Endpoint: "query", Result: "ok"}); err != nil {
			return err
		}
		var cur model.RetentionCursor
		for i := 0; i < 7; i++ {
			promptly(t, ctx, "a batch of bodies beside a group commit", func(ctx context.Context) error {
				b, err := s.With(ctx).PurgeCallbackBodies(cur, cutoff, 500)
				cur = b.Next
				return err
			})
			promptly(t, ctx, "a batch of calls beside a group commit", func(ctx context.Context) error {
				_, err := s.With(ctx).PurgeCalls(cutoff, 500)
				return err
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "callbacks", "body IS NOT NULL"); n != 3 {
		t.Errorf("%d bodies left, want the 3 new", n)
	}
	if n := count(t, s, "outbound_calls", "1=1"); n != 3 {
		t.Errorf("%d calls left, want the 3 new", n)
	}
}
