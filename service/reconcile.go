package service

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
)

// Kinds of reconciliation findings.
const (
	// FindingIssuedUnpaid: a guarantee was issued but no pay record exists.
	FindingIssuedUnpaid = "issued_unpaid"
	// FindingPaidNotIssued: money was paid (and not all refunded) for an
	// order that was never issued and no longer can be: failed, rejected,
	// still pending after its bid opening, or no such order at all.
	FindingPaidNotIssued = "paid_not_issued"
	// FindingRefundWhileIssued: a refund of an order that is still issued
	// (neither cancelled nor surrendered).
	FindingRefundWhileIssued = "refund_while_issued"
	// FindingPremiumMismatch: bhcost differs from the sum of the pays.
	FindingPremiumMismatch = "premium_mismatch"
	// FindingRefundExceedsPaid: the refunds of an order add up to more
	// than its payments; stored before such refunds were refused
	// (docs/decisions.md §36).
	FindingRefundExceedsPaid = "refund_exceeds_paid"
)

// reconcilePage is how many orders the reconciliation reads at a time.
const reconcilePage = 500

// ReconcileStats is what a reconciliation run looked at and found.
type ReconcileStats struct {
	Date     string    // the run date (UTC) its findings are filed under
	Full     bool      // every order was read, not only what changed
	Since    time.Time // incremental: the changes read are those since this time
	Examined int       // orders and orphan payments looked at
	Findings int       // discrepancies found
	New      int       // of which not found before under this date (logged)
}

// MarkReconcile names the reconciliation's mark (model.JobMark): when its
// last run began, so that the next looks only at what changed since.
const MarkReconcile = "reconcile"

// reconcileOverlap is how far before its mark an incremental run starts:
// updated_at is written by the clocks of several instances, and a
// transaction that began before the mark may commit after the last run
// read. Looking at a few minutes twice is harmless: findings are filed once.
const reconcileOverlap = 5 * time.Minute

// Reconcile compares orders with their payments and files what does not
// agree under date (YYYY-MM-DD, the UTC day of the run), where GET
// /v1/reconciliation?date= finds it. A full run reads every order and
// every payment; an incremental one (full false) reads only what changed
// since the last run began (the mark): orders updated, orders whose bid
// opened, payments stored. The first run, with no mark yet, is full.
// Idempotency key: date, kind, orderno: running it again the same day
// files and logs nothing twice. Returns EInvalid (date), EUnavailable.
func (s *Service) Reconcile(ctx context.Context, date string, full bool) (*ReconcileStats, error) {
	if d, err := time.Parse(time.DateOnly, date); err != nil || d.Format(time.DateOnly) != date {
		return nil, errf(EInvalid, "date", "date must be a day as YYYY-MM-DD")
	}
	st := s.store.With(ctx)
	began := s.now()
	rs := &ReconcileStats{Date: date, Full: full}
	mark, ok, err := st.Mark(MarkReconcile)
	if err != nil {
		return rs, storeErr("reconcile", err)
	}
	if !ok {
		rs.Full = true
	}
	if rs.Full {
		err = s.reconcileAll(ctx, rs, began)
	} else {
		rs.Since = mark.Add(-reconcileOverlap)
		err = s.reconcileSince(ctx, rs, began)
	}
	if err != nil {
		return rs, err
	}
	if err := st.SetMark(MarkReconcile, began); err != nil {
		return rs, storeErr("reconcile", err)
	}
	fields := logrus.Fields{"date": date, "full": rs.Full, "examined": rs.Examined, "findings": rs.Findings, "new": rs.New}
	if !rs.Full {
		fields["since"] = rs.Since.Format(time.RFC3339)
	}
	s.log.WithFields(fields).Info("reconciliation done")
	return rs, nil
}

// reconcileAll judges every order, page by page, then every orphan payment.
func (s *Service) reconcileAll(ctx context.Context, rs *ReconcileStats, now time.Time) error {
	st := s.store.With(ctx)
	var after int64
	for {
		orders, err := st.OrdersAfter(after, reconcilePage)
		if err != nil {
			return storeErr("reconcile", err)
		}
		if len(orders) == 0 {
			break
		}
		after = orders[len(orders)-1].ID
		if err := s.judge(ctx, rs, orders, now); err != nil {
			return err
		}
	}
	var afterPay int64
	for {
		orphans, err := st.OrphanPayments(afterPay, reconcilePage)
		if err != nil {
			return storeErr("reconcile", err)
		}
		if len(orphans) == 0 {
			return nil
		}
		afterPay = orphans[len(orphans)-1].ID
		if err := s.fileOrphans(ctx, rs, orphans); err != nil {
			return err
		}
	}
}

// reconcileSince judges the orders that changed since rs.Since, then the
// orphans among the payments stored since.
func (s *Service) reconcileSince(ctx context.Context, rs *ReconcileStats, now time.Time) error {
	st := s.store.With(ctx)
	ids, err := st.ChangedOrderIDs(rs.Since, now)
	if err != nil {
		return storeErr("reconcile", err)
	}
	for chunk := range slices.Chunk(ids, reconcilePage) {
		orders, err := st.OrdersByIDs(chunk)
		if err != nil {
			return storeErr("reconcile", err)
		}
		if err := s.judge(ctx, rs, orders, now); err != nil {
			return err
		}
	}
	orphans, err := st.OrphanPaymentsSince(rs.Since)
	if err != nil {
		return storeErr("reconcile", err)
	}
	return s.fileOrphans(ctx, rs, orphans)
}

// judge reads the payments of a page of orders and files what each order's
// comparison finds.
func (s *Service) judge(ctx context.Context, rs *ReconcileStats, orders []model.Order, now time.Time) error {
	nos := make([]string, len(orders))
	for i := range orders {
		nos[i] = orders[i].OrderNo
	}
	pays, err := s.store.With(ctx).PaymentsOfOrders(nos)
	if err != nil {
		return storeErr("reconcile", err)
	}
	byOrder := make(map[string][]model.Payment, len(orders))
	for _, p := range pays {
		byOrder[p.OrderNo] = append(byOrder[p.OrderNo], p)
	}
	for i := range orders {
		rs.Examined++
		for _, f := range findingsOf(&orders[i], byOrder[orders[i].OrderNo], now) {
			if err := s.file(ctx, rs, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// fileOrphans files the payments of ordernos the gateway does not know,
// summed per orderno, when more was paid than refunded.
func (s *Service) fileOrphans(ctx context.Context, rs *ReconcileStats, orphans []model.Payment) error {
	byOrder := map[string][]model.Payment{}
	var order []string
	for _, p := range orphans {
		if byOrder[p.OrderNo] == nil {
			order = append(order, p.OrderNo)
		}
		byOrder[p.OrderNo] = append(byOrder[p.OrderNo], p)
	}
	for _, no := range order {
		rs.Examined++
		t := model.SumPayments(byOrder[no])
		if t.Paid.GreaterThan(t.Refunded) {
			if err := s.file(ctx, rs, model.Finding{Kind: FindingPaidNotIssued, OrderNo: no,
				Detail: fmt.Sprintf("paid %s (refunded %s) for an orderno the gateway does not know",
					t.Paid.StringFixed(2), t.Refunded.StringFixed(2))}); err != nil {
				return err
			}
		}
	}
	return nil
}

// file stores a finding under the run's date and logs it the first time.
func (s *Service) file(ctx context.Context, rs *ReconcileStats, f model.Finding) error {
	f.RunDate, f.Detail = rs.Date, truncate(f.Detail, 512)
	rs.Findings++
	var inserted bool
	err := s.store.Do(model.WithOp(ctx, "reconcile"), func(q model.Queries) (err error) {
		inserted, err = q.InsertFinding(&f)
		return err
	})
	if err != nil {
		return storeErr("reconcile", err)
	}
	if inserted {
		rs.New++
		s.log.WithFields(logrus.Fields{"date": f.RunDate, "kind": f.Kind, "orderno": f.OrderNo, "detail": f.Detail}).
			Warn("reconciliation finding")
	}
	return nil
}

// findingsOf judges one order against its payments. Amounts are compared
// as decimals; details carry amounts and statuses, never personal data.
func findingsOf(o *model.Order, pays []model.Payment, now time.Time) []model.Finding {
	t := model.SumPayments(pays)
	var out []model.Finding
	add := func(kind, format string, args ...any) {
		out = append(out, model.Finding{Kind: kind, OrderNo: o.OrderNo, Detail: fmt.Sprintf(format, args...)})
	}
	issued := issuedOrLater(o.Status)
	switch {
	case issued && t.Pays == 0:
		add(FindingIssuedUnpaid, "order is %s (bhno %s) and has no pay record", o.Status, o.GuaranteeNo.String)
	case issued && o.Premium.Valid && !t.Paid.Equal(o.Premium.Decimal):
		add(FindingPremiumMismatch, "bhcost %s but paid %s in %d pay record(s)",
			o.Premium.Decimal.StringFixed(2), t.Paid.StringFixed(2), t.Pays)
	}
	if o.Status == model.StatusIssued && t.Refunds > 0 {
		add(FindingRefundWhileIssued, "refunded %s while the order is still issued", t.Refunded.StringFixed(2))
	}
	if t.Refunded.GreaterThan(t.Paid) {
		add(FindingRefundExceedsPaid, "refunded %s in %d refund record(s) but paid only %s in %d pay record(s)",
			t.Refunded.StringFixed(2), t.Refunds, t.Paid.StringFixed(2), t.Pays)
	}
	if !issued && t.Pays > 0 && t.Paid.GreaterThan(t.Refunded) {
		// Paying before issuance is the normal flow; it is a finding only
		// once the order can no longer be issued usefully.
		terminal := o.Status == model.StatusFailed || o.Status == model.StatusApplyRejected
		if terminal || now.After(o.OpeningAt) {
			add(FindingPaidNotIssued, "paid %s (refunded %s) but the order is %s, never issued",
				t.Paid.StringFixed(2), t.Refunded.StringFixed(2), o.Status)
		}
	}
	return out
}

// reconcile runs the daily reconciliation under the job lease, so that of
// the instances whose schedules fire together one does the work. On success
// the lease is kept for half the schedule's period (at most an hour), so an
// instance whose clock is a little behind does not run it again.
func (j *Scheduler) reconcile(ctx context.Context) (JobStats, error) {
	s := j.s
	now := s.now()
	keep, got, err := j.jobLease(ctx, JobReconcile, now, now.Add(max(s.set.Lease, 30*time.Minute)))
	if err != nil {
		return JobStats{}, err
	}
	if !got {
		j.log.Debug("reconciliation is running or ran in another instance")
		return JobStats{Skipped: true}, nil
	}
	rs, err := s.Reconcile(ctx, now.Format(time.DateOnly), false)
	until := s.now()
	if err == nil {
		until = until.Add(j.reconcileHold(now))
	}
	keep(until)
	st := JobStats{}
	if rs != nil {
		st.Claimed, st.Done, st.Flagged = rs.Examined, rs.Examined, rs.Findings
	}
	return st, err
}

// reconcileHold is how long a finished reconciliation keeps its lease.
func (j *Scheduler) reconcileHold(now time.Time) time.Duration {
	sc := j.specs[JobReconcile]
	if sc == nil {
		return 0
	}
	n1 := sc.Next(now)
	return min(sc.Next(n1).Sub(n1)/2, time.Hour)
}
