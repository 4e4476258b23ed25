package model

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/shopspring/decimal"
)

// The daily reconciliation reads orders page by page with their payments and
// judges them in Go: the sums are taken with decimals, never by SQL SUM,
// which SQLite would compute in floating point on its TEXT money.

// OrdersAfter returns up to limit orders with an id above afterID, by id: a
// keyset walk over every order that new orders never disturb.
func (q Queries) OrdersAfter(afterID int64, limit int) ([]Order, error) {
	var out []Order
	if err := q.db.Where("id > ?", afterID).Order("id").Limit(limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("orders after %d: %w", afterID, err)
	}
	return out, nil
}

// ChangedOrderIDs returns, in ascending order, the ids of the orders that
// the incremental reconciliation looks at: those updated since `since`
// (ix_orders_updated; a payment moves its order's updated_at in the same
// transaction), those whose bid opened in [since, until) (ix_orders_opening:
// an unissued paid order becomes a finding then, with no row changing),
// and those of payments stored since (ix_payments_created, for a payment
// stored by another path). Three index ranges, each as long as the changes
// since the last run, never the history.
func (q Queries) ChangedOrderIDs(since, until time.Time) ([]int64, error) {
	since, until = since.UTC(), until.UTC()
	var updated, opened, paid []int64
	if err := q.db.Model(&Order{}).Where("updated_at >= ?", since).Pluck("id", &updated).Error; err != nil {
		return nil, fmt.Errorf("changed orders: updated: %w", err)
	}
	if err := q.db.Model(&Order{}).Where("opening_at >= ? AND opening_at < ?", since, until).Pluck("id", &opened).Error; err != nil {
		return nil, fmt.Errorf("changed orders: opened: %w", err)
	}
	err := q.db.Model(&Order{}).Where("order_no IN (?)",
		q.db.Model(&Payment{}).Select("order_no").Where("created_at >= ?", since)).Pluck("id", &paid).Error
	if err != nil {
		return nil, fmt.Errorf("changed orders: paid: %w", err)
	}
	ids := slices.Concat(updated, opened, paid)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// OrdersByIDs returns the orders with those ids, by id.
func (q Queries) OrdersByIDs(ids []int64) ([]Order, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Order
	if err := q.db.Where("id IN ?", ids).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("orders by id: %w", err)
	}
	return out, nil
}

// OrphanPaymentsSince returns the payments stored since `since` whose
// orderno names no order, by id: the incremental reconciliation's share of
// OrphanPayments, read through ix_payments_created.
func (q Queries) OrphanPaymentsSince(since time.Time) ([]Payment, error) {
	var out []Payment
	err := q.db.Where("created_at >= ? AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_no = payments.order_no)", since.UTC()).
		Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("orphan payments since %s: %w", since.Format(time.RFC3339), err)
	}
	slices.SortFunc(out, func(a, b Payment) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// PaymentsOfOrders returns the payments (pays and refunds) of the given
// orders, by id.
func (q Queries) PaymentsOfOrders(orderNos []string) ([]Payment, error) {
	if len(orderNos) == 0 {
		return nil, nil
	}
	var out []Payment
	if err := q.db.Where("order_no IN ?", orderNos).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("payments of %d orders: %w", len(orderNos), err)
	}
	return out, nil
}

// OrphanPayments returns up to limit payments, by id above afterID, whose
// orderno names no order.
func (q Queries) OrphanPayments(afterID int64, limit int) ([]Payment, error) {
	var out []Payment
	err := q.db.Where("id > ? AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_no = payments.order_no)", afterID).
		Order("id").Limit(limit).Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("orphan payments: %w", err)
	}
	return out, nil
}

// PaymentTotals are an order's payments summed.
type PaymentTotals struct {
	Paid     decimal.Decimal // sum of pays (type 1)
	Refunded decimal.Decimal // sum of refunds (type 2)
	Pays     int             // number of pay records
	Refunds  int             // number of refund records
}

// SumPayments adds up payments with decimals.
func SumPayments(pays []Payment) PaymentTotals {
	t := PaymentTotals{Paid: decimal.Zero, Refunded: decimal.Zero}
	for _, p := range pays {
		if p.Kind == "2" {
			t.Refunded = t.Refunded.Add(p.Amount)
			t.Refunds++
		} else {
			t.Paid = t.Paid.Add(p.Amount)
			t.Pays++
		}
	}
	return t
}

// InsertFinding stores a finding of a reconciliation run. It reports false,
// without error, when the same finding (run date, kind, orderno) is stored
// already: the unique index decides that a finding is recorded, and so
// logged, once.
func (q Queries) InsertFinding(f *Finding) (bool, error) {
	if f.CreatedAt.IsZero() {
		f.CreatedAt = now()
	}
	err := q.db.Create(f).Error
	if isDuplicate(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("finding %s %s %s: %w", f.RunDate, f.Kind, f.OrderNo, err)
	}
	return true, nil
}
