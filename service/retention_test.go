package service_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
)

// rows counts the rows of table matching where.
func rows(t testing.TB, store *model.Store, table, where string, args ...any) int {
	t.Helper()
	for i, a := range args {
		if at, ok := a.(time.Time); ok {
			args[i] = at.UTC()
		}
	}
	var n int
	if err := store.DB().QueryRow("SELECT COUNT(*) FROM "+table+" WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// seedHistory gives order no a payment, an event and a PDF from long ago,
// and old and new callbacks (with bodies) and calls: oldN of each received
// or made before cutoff, newN after it.
func seedHistory(t testing.TB, store *model.Store, no string, cutoff time.Time, oldN, newN int) {
	t.Helper()
	long := cutoff.Add(-30 * 24 * time.Hour)
	if err := store.InsertPayment(&model.Payment{DedupKey: "pay-" + no, OrderNo: no, OrgCode: orgCode, Kind: "1",
		Amount: decimal.RequireFromString("10.00"), PaidAt: long, CreatedAt: long}); err != nil {
		t.Fatal(err)
	}
	if err := store.AddEvent(&model.Event{OrderNo: no, Kind: model.EventCallback, Name: "paystate", CreatedAt: long}); err != nil {
		t.Fatal(err)
	}
	if err := store.InsertFile(&model.GuaranteeFile{OrderNo: no, GuaranteeNo: "BH-" + no, Sha256: "f", Size: int64(len(testPDF)),
		Source: "pull", Content: testPDF, CreatedAt: long}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < oldN+newN; i++ {
		at := cutoff.Add(-time.Duration(oldN-i) * time.Minute)
		if i >= oldN {
			at = cutoff.Add(time.Duration(i-oldN+1) * time.Hour)
		}
		body := []byte(fmt.Sprintf(`{"data":"body-%d"}`, i))
		if err := store.InsertCallback(&model.Callback{OrgCode: orgCode, Kind: "paystate", OrderNo: no, Body: body,
			BodySha256: fmt.Sprintf("%064d", i), BodySize: int64(len(body)), Result: model.CallbackAccepted,
			Errcode: "000000", ReceivedAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := store.InsertCall(&model.Call{OrgCode: orgCode, OrderNo: no, Endpoint: "query", URL: "http://x",
			Result: "ok", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
}

// retentionGateway is a gateway whose retention works in batches of 10,
// without pauses.
func retentionGateway(t testing.TB, store *model.Store, fn func(r *config.Retention)) *gateway {
	return newGateway(t, store, newBank(t), gwOptions{configure: func(c *config.Config) {
		c.Retention.BatchSize, c.Retention.Pause = 10, time.Millisecond
		if fn != nil {
			fn(&c.Retention)
		}
	}})
}

// TestRetention: callback bodies and call records older than 180 days are
// removed in batches of 10 (35 of each: 4 batches each); newer ones, the
// callbacks' rows, orders, payments, events and files stay; the console
// says the body was removed by retention; a second run does nothing and
// reads nothing.
func TestRetention(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		g := retentionGateway(t, store, nil)
		no := seed(t, store, newBank(t), "RT", 1, model.StatusIssued, nil)[0]
		cutoff := time.Now().UTC().Add(-180 * 24 * time.Hour)
		seedHistory(t, store, no, cutoff, 35, 5)
		others := func() string {
			return fmt.Sprint(rows(t, store, "orders", "1=1"), rows(t, store, "payments", "1=1"),
				rows(t, store, "order_events", "1=1"), rows(t, store, "guarantee_files", "content IS NOT NULL"))
		}
		before := others()

		st := g.run(t, service.JobRetention)
		if st.Skipped || st.Done != 70 || st.Claimed != 70 {
			t.Errorf("first run: %+v, want 70 examined and 70 removed", st)
		}
		if l := g.logs.lines("retention done"); len(l) != 1 || l[0]["bodies"] != 35.0 || l[0]["calls"] != 35.0 || l[0]["batches"] != 8.0 || l[0]["more"] != false {
			t.Errorf("logged %v, want 35 bodies, 35 calls in 8 batches", l)
		}
		if n := rows(t, store, "callbacks", "body IS NOT NULL AND received_at < ?", cutoff); n != 0 {
			t.Errorf("%d old bodies left", n)
		}
		if n := rows(t, store, "callbacks", "body IS NOT NULL"); n != 5 {
			t.Errorf("%d bodies left, want the 5 newer", n)
		}
		if n := rows(t, store, "callbacks", "1=1"); n != 40 {
			t.Errorf("%d callback rows, want all 40", n)
		}
		if n := rows(t, store, "outbound_calls", "1=1"); n != 5 {
			t.Errorf("%d calls left, want the 5 newer", n)
		}
		if after := others(); after != before {
			t.Errorf("orders, payments, events, files: %s, were %s", after, before)
		}
		if f, err := store.File(no); err != nil || len(f.Content) != len(testPDF) {
			t.Errorf("the PDF: %v", err)
		}

		// The console: the body was removed by retention, not lost.
		c := service.NewConsole(g.svc, service.ConsoleSettings{})
		ctx := context.Background()
		cb, err := c.CallbackDetail(ctx, 1)
		if err != nil || cb.Body == nil || cb.Body.State != service.BodyRemoved || cb.BodySha256 == "" {
			t.Errorf("callback 1 on the console: %+v %v, want its body removed", cb, err)
		}
		d, err := c.OrderDetail(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]int{}
		for _, e := range d.Timeline {
			if e.Body != nil {
				states[e.Body.State]++
			}
		}
		if states[service.BodyRemoved] == 0 || states[service.BodyNotKept] != 0 {
			t.Errorf("the timeline's bodies: %v", states)
		}

		// Again: nothing older is left, and the mark keeps the emptied
		// callbacks from being read again.
		if st := g.run(t, service.JobRetention); st.Claimed != 0 || st.Done != 0 {
			t.Errorf("second run: %+v, want nothing read", st)
		}
		if at, ok, err := store.Mark(model.MarkRetentionBodies); err != nil || !ok || at.Before(cutoff) {
			t.Errorf("mark %s %v %v, want at the cutoff", at, ok, err)
		}
	})
}

// TestRetentionBoundedRun: a run stops at retention.max_per_run rows of
// each kind and the next goes on from there.
func TestRetentionBoundedRun(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		g := retentionGateway(t, store, func(r *config.Retention) { r.MaxPerRun = 20 })
		no := seed(t, store, newBank(t), "RB", 1, model.StatusIssued, nil)[0]
		cutoff := time.Now().UTC().Add(-180 * 24 * time.Hour)
		seedHistory(t, store, no, cutoff, 35, 1)
		if st := g.run(t, service.JobRetention); st.Done != 40 {
			t.Errorf("first run: %+v, want 20 bodies and 20 calls", st)
		}
		if l := g.logs.lines("retention done"); len(l) != 1 || l[0]["more"] != true {
			t.Errorf("logged %v, want more left", l)
		}
		if n := rows(t, store, "callbacks", "body IS NOT NULL"); n != 16 {
			t.Errorf("%d bodies left, want 15 old and 1 new", n)
		}
		// The second run starts at the mark: it reads the 15 left, and the
		// few of the mark's own millisecond at most.
		st := g.run(t, service.JobRetention)
		if st.Done != 30 || st.Claimed > 31 {
			t.Errorf("second run: %+v, want 15 bodies and 15 calls", st)
		}
		if rows(t, store, "callbacks", "body IS NOT NULL") != 1 || rows(t, store, "outbound_calls", "1=1") != 1 {
			t.Error("old rows left after the second run")
		}
	})
}

// TestRetentionZeroKeepsForEver: 0 disables each kind of removal.
func TestRetentionZeroKeepsForEver(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		g := retentionGateway(t, store, func(r *config.Retention) { r.RawBodies, r.Calls = 0, 0 })
		no := seed(t, store, newBank(t), "RZ", 1, model.StatusIssued, nil)[0]
		cutoff := time.Now().UTC().Add(-180 * 24 * time.Hour)
		seedHistory(t, store, no, cutoff, 12, 1)
		if st := g.run(t, service.JobRetention); st.Done != 0 || st.Claimed != 0 {
			t.Errorf("run with both 0: %+v", st)
		}
		// Bodies only: the calls stay.
		g2 := retentionGateway(t, store, func(r *config.Retention) { r.Calls = 0 })
		if st := g2.run(t, service.JobRetention); st.Done != 12 {
			t.Errorf("run with calls 0: %+v, want the 12 bodies", st)
		}
		if rows(t, store, "callbacks", "body IS NOT NULL") != 1 || rows(t, store, "outbound_calls", "1=1") != 13 {
			t.Error("calls removed with retention.calls 0, or bodies kept")
		}
	})
}
