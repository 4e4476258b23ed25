package model_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// dueOrder is an order of status st whose next check is at next.
func dueOrder(no string, st model.Status, next time.Time) *model.Order {
	o := newOrder(no, "Q"+no)
	o.Status, o.NextCheckAt = st, &next
	return o
}

func createAll(t *testing.T, s *model.Store, orders ...*model.Order) {
	t.Helper()
	for _, o := range orders {
		if err := s.CreateOrder(o); err != nil {
			t.Fatal(err)
		}
	}
}

func TestClaimOrdersIsDisjointAcrossClaimers(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC()
		past := now.Add(-time.Minute)
		want := map[string]bool{}
		var orders []*model.Order
		for i := range 60 {
			o := dueOrder(fmt.Sprintf("D%03d", i), model.StatusProcessing, past)
			orders = append(orders, o)
			want[o.OrderNo] = true
		}
		for i := range 5 { // not due yet
			orders = append(orders, dueOrder(fmt.Sprintf("N%03d", i), model.StatusProcessing, now.Add(time.Hour)))
		}
		for i := range 3 { // held by a live lease of another instance
			o := dueOrder(fmt.Sprintf("L%03d", i), model.StatusProcessing, past)
			until := now.Add(time.Hour)
			o.LeaseOwner, o.LeaseUntil = "other/poll/1", &until
			orders = append(orders, o)
		}
		for i := range 2 { // its instance died: the lease ran out
			o := dueOrder(fmt.Sprintf("E%03d", i), model.StatusProcessing, past)
			until := now.Add(-time.Second)
			o.LeaseOwner, o.LeaseUntil = "dead/poll/1", &until
			orders = append(orders, o)
			want[o.OrderNo] = true
		}
		createAll(t, s, orders...)

		const claimers = 4
		got := make([][]string, claimers)
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for c := range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				token := fmt.Sprintf("inst%d/poll/%d", c, c)
				for {
					batch, err := s.ClaimOrders(model.QueuePoll, token, now, now, now.Add(time.Minute), 7)
					if err != nil {
						errs <- err
						return
					}
					if len(batch) == 0 {
						return
					}
					for _, o := range batch {
						if o.LeaseOwner != token {
							errs <- fmt.Errorf("claimed %s carries lease %q, want %q", o.OrderNo, o.LeaseOwner, token)
						}
						got[c] = append(got[c], o.OrderNo)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for c := range got {
			for _, no := range got[c] {
				seen[no]++
			}
		}
		for no, n := range seen {
			if n != 1 {
				t.Errorf("%s claimed %d times", no, n)
			}
			if !want[no] {
				t.Errorf("%s claimed but it was not due or its lease was live", no)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("claimed %d distinct orders, want %d", len(seen), len(want))
		}
	})
}

func TestClaimOrdersQueues(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC()
		past := now.Add(-time.Minute)
		bh := func(o *model.Order, no string) *model.Order {
			o.GuaranteeNo = sql.NullString{String: no, Valid: true}
			return o
		}
		pull := func(o *model.Order) *model.Order { o.FilePending, o.PullURL = true, "http://127.0.0.1/pull"; return o }
		flag := func(o *model.Order, f model.Flag) *model.Order { o.Flag = f; return o }
		createAll(t, s,
			dueOrder("P1", model.StatusProcessing, past),
			dueOrder("P2", model.StatusProcessing, now.Add(time.Minute)),
			dueOrder("P3", model.StatusIssued, past),
			dueOrder("A1", model.StatusApplying, past),
			flag(dueOrder("A2", model.StatusApplying, past), model.FlagApplyUnconfirmed),
			dueOrder("A3", model.StatusApplying, now.Add(time.Minute)),
			pull(bh(dueOrder("F1", model.StatusIssued, past), "BH-F1")),
			pull(dueOrder("F2", model.StatusIssued, past)),        // no bhno yet
			bh(dueOrder("F3", model.StatusIssued, past), "BH-F3"), // file stored
			pull(bh(dueOrder("F4", model.StatusCancelled, past), "BH-F4")),
			pull(bh(dueOrder("F5", model.StatusIssued, now.Add(time.Minute)), "BH-F5")),
		)
		tests := []struct {
			name  string
			queue model.OrderQueue
			want  []string
		}{
			{"poll takes processing orders that are due", model.QueuePoll, []string{"P1"}},
			{"apply takes due applying orders not given up on", model.QueueApply, []string{"A1"}},
			{"pull takes due issued orders with a bhno and no file", model.QueuePull, []string{"F1"}},
		}
		for _, tc := range tests {
			got, err := s.ClaimOrders(tc.queue, "me/"+tc.queue.String(), now, now, now.Add(time.Minute), 100)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var nos []string
			for _, o := range got {
				nos = append(nos, o.OrderNo)
			}
			if fmt.Sprint(nos) != fmt.Sprint(tc.want) {
				t.Errorf("%s: claimed %v, want %v", tc.name, nos, tc.want)
			}
		}
		// Claimed and live: nobody else gets them, even when due.
		again, err := s.ClaimOrders(model.QueuePoll, "other/poll", now, now, now.Add(time.Minute), 100)
		if err != nil || len(again) != 0 {
			t.Errorf("second claim of a leased order: %v %v", len(again), err)
		}
	})
}

func TestReleaseLeases(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC()
		until := now.Add(time.Hour)
		owners := map[string]string{"R1": "gw_1", "R2": "gw_1/poll/ab", "R3": "gw_11/poll/cd", "R4": "gwx1/poll/ef", "R5": "other"}
		for no, owner := range owners {
			o := dueOrder(no, model.StatusProcessing, now)
			o.LeaseOwner, o.LeaseUntil = owner, &until
			createAll(t, s, o)
		}
		var ids []int64
		err := s.InTx(context.Background(), func(tx model.Queries) error {
			ds, err := tx.InsertPush(&model.ProjectStatePush{ProjectName: "p", ProjectCode: "XM", LotName: "l", LotCode: "BD",
				OpeningAt: now, State: "1"}, []string{"A", "B"})
			for _, d := range ds {
				ids = append(ids, d.ID)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		modeltest.Exec(t, s, "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ?", "gw_1/deliver", until, ids[0])
		modeltest.Exec(t, s, "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ?", "gw_12/deliver", until, ids[1])

		// Only one claim's rows: the others keep theirs.
		n, err := s.ReleaseLeases("gw_1/poll/ab", 1, 2, 3, 4, 5)
		if err != nil || n != 1 {
			t.Fatalf("release by token: %d %v, want 1", n, err)
		}
		orders, deliveries, err := s.ReleaseInstance("gw_1")
		if err != nil {
			t.Fatal(err)
		}
		if orders != 1 || deliveries != 1 {
			t.Errorf("released %d orders and %d deliveries, want 1 and 1 (owner itself; its token released before)", orders, deliveries)
		}
		for no, owner := range owners {
			o, err := s.Order(no)
			if err != nil {
				t.Fatal(err)
			}
			mine := owner == "gw_1" || owner == "gw_1/poll/ab"
			if mine && (o.LeaseOwner != "" || o.LeaseUntil != nil) {
				t.Errorf("%s (%s) still leased: %q %v", no, owner, o.LeaseOwner, o.LeaseUntil)
			}
			if !mine && o.LeaseOwner != owner {
				t.Errorf("%s lost the lease of %s (now %q): another owner's lease was released", no, owner, o.LeaseOwner)
			}
		}
		d, err := s.Delivery(ids[1])
		if err != nil || d.LeaseOwner != "gw_12/deliver" {
			t.Errorf("delivery of another owner released: %+v %v", d, err)
		}
	})
}

func TestJobLease(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC()
		steps := []struct {
			name  string
			do    func() (bool, error)
			want  bool
			owner string
		}{
			{"first taker gets it", func() (bool, error) { return s.AcquireJobLease("reconcile", "a/1", now, now.Add(time.Minute)) }, true, "a/1"},
			{"second is refused while it lives", func() (bool, error) { return s.AcquireJobLease("reconcile", "b/1", now, now.Add(time.Minute)) }, false, "a/1"},
			{"the same owner is refused too", func() (bool, error) { return s.AcquireJobLease("reconcile", "a/1", now, now.Add(time.Minute)) }, false, "a/1"},
			{"after it ran out, another gets it", func() (bool, error) {
				return s.AcquireJobLease("reconcile", "b/2", now.Add(2*time.Minute), now.Add(3*time.Minute))
			}, true, "b/2"},
			{"the old owner cannot move it", func() (bool, error) { return s.SetJobLease("reconcile", "a/1", now) }, false, "b/2"},
			{"the owner releases it", func() (bool, error) { return s.SetJobLease("reconcile", "b/2", now) }, true, "b/2"},
			{"released: free again", func() (bool, error) {
				return s.AcquireJobLease("reconcile", "c/1", now.Add(time.Second), now.Add(time.Minute))
			}, true, "c/1"},
			{"another job has its own lease", func() (bool, error) { return s.AcquireJobLease("other", "a/3", now, now.Add(time.Minute)) }, true, "c/1"},
		}
		for _, st := range steps {
			got, err := st.do()
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if got != st.want {
				t.Errorf("%s: got %v, want %v", st.name, got, st.want)
			}
			l, err := s.JobLeaseOf("reconcile")
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if l.Owner != st.owner {
				t.Errorf("%s: lease owner %q, want %q", st.name, l.Owner, st.owner)
			}
		}
	})
}

func TestJobLeaseConcurrentAcquire(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC()
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners := 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.AcquireJobLease("reconcile", fmt.Sprintf("i%d/x", i), now, now.Add(time.Minute))
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					winners++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if winners != 1 {
			t.Errorf("%d instances got the job lease, want 1", winners)
		}
	})
}

func TestDueDeliveries(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC()
		var ds []model.Delivery
		err := s.InTx(context.Background(), func(tx model.Queries) (err error) {
			ds, err = tx.InsertPush(&model.ProjectStatePush{ProjectName: "p", ProjectCode: "XM", LotName: "l", LotCode: "BD",
				OpeningAt: now, State: "1"}, []string{"A", "B", "C", "D", "E"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		// A: due
		modeltest.Exec(t, s, "UPDATE deliveries SET status = ?, next_attempt_at = NULL WHERE id = ?", model.DeliveryDelivered, ds[1].ID)
		modeltest.Exec(t, s, "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", now.Add(time.Minute), ds[2].ID)                                       // C: not due
		modeltest.Exec(t, s, "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ?", "x/1", now.Add(time.Minute), ds[3].ID)                   // D: leased
		modeltest.Exec(t, s, "UPDATE deliveries SET lease_owner = ?, lease_until = ?, attempts = 3 WHERE id = ?", "dead/1", now.Add(-time.Second), ds[4].ID) // E: lease ran out
		// InsertPush made them due at its own clock reading, after now.
		at := now.Add(time.Second)
		got, err := s.DueDeliveries(at, at, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var orgs []string
		for _, d := range got {
			orgs = append(orgs, d.OrgCode)
		}
		sort.Strings(orgs)
		if fmt.Sprint(orgs) != "[A E]" {
			t.Fatalf("due deliveries %v, want [A E]", orgs)
		}
		after, err := s.DueDeliveries(at, at, got[0].ID, 10)
		if err != nil || len(after) != 1 || after[0].OrgCode != "E" {
			t.Errorf("keyset walk after the first: %+v %v", after, err)
		}
		ok, err := s.ClaimDelivery(ds[4].ID, "me/1", at, at.Add(time.Minute))
		if err != nil || !ok {
			t.Errorf("delivery whose lease ran out not claimable: %v %v", ok, err)
		}
	})
}

func TestReconcileQueries(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		createAll(t, s, newOrder("C1", "Q1"), newOrder("C2", "Q2"))
		pays := []model.Payment{
			{DedupKey: "k1", OrderNo: "C1", OrgCode: "BANK01", Kind: "1", Amount: decimal.RequireFromString("0.10")},
			{DedupKey: "k2", OrderNo: "C1", OrgCode: "BANK01", Kind: "1", Amount: decimal.RequireFromString("0.20")},
			{DedupKey: "k3", OrderNo: "C1", OrgCode: "BANK01", Kind: "2", Amount: decimal.RequireFromString("0.05")},
			{DedupKey: "k4", OrderNo: "GONE", OrgCode: "BANK01", Kind: "1", Amount: decimal.RequireFromString("5.00")},
		}
		for i := range pays {
			pays[i].PaidAt = time.Now()
			if err := s.InsertPayment(&pays[i]); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.PaymentsOfOrders([]string{"C1", "C2"})
		if err != nil {
			t.Fatal(err)
		}
		tot := model.SumPayments(got)
		// 0.1 + 0.2 is 0.30000000000000004 in floating point.
		if tot.Paid.String() != "0.3" || tot.Refunded.String() != "0.05" || tot.Pays != 2 || tot.Refunds != 1 {
			t.Errorf("totals %+v", tot)
		}
		orphans, err := s.OrphanPayments(0, 10)
		if err != nil || len(orphans) != 1 || orphans[0].OrderNo != "GONE" {
			t.Errorf("orphans %+v %v", orphans, err)
		}
		page, err := s.OrdersAfter(0, 1)
		if err != nil || len(page) != 1 || page[0].OrderNo != "C1" {
			t.Fatalf("first page %+v %v", page, err)
		}
		page, err = s.OrdersAfter(page[0].ID, 10)
		if err != nil || len(page) != 1 || page[0].OrderNo != "C2" {
			t.Errorf("second page %+v %v", page, err)
		}
		f := model.Finding{RunDate: "2026-01-02", Kind: "k", OrderNo: "C1", Detail: "d"}
		for i, want := range []bool{true, false} {
			g := f
			ins, err := s.InsertFinding(&g)
			if err != nil || ins != want {
				t.Errorf("insert finding #%d: %v %v, want %v", i+1, ins, err, want)
			}
		}
	})
}
