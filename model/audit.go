package model

import (
	"fmt"
	"strings"
)

// OrderTrail is what the callbacks of one order left in the store: the
// load test reads it to check that every acknowledged callback took effect
// exactly once. Read-only; nothing in the gateway's own path uses it.
type OrderTrail struct {
	OrderNo     string
	Status      Status
	GuaranteeNo string
	// Payments counts the payments rows; PaymentKeys their distinct dedup
	// keys; PaymentsUnlinked those whose callback_id does not lead to the
	// accepted callback row with the same dedup key.
	Payments, PaymentKeys, PaymentsUnlinked int64
	// Files counts the guarantee_files rows (at most one, by a unique index).
	Files int64
	// Callbacks counts the audit rows by kind and result
	// ("paystate/accepted", "applynotify/duplicate", ...).
	Callbacks map[string]int64
}

// OrderTrails returns the trail of every order whose orderno starts with
// prefix (a load test's run), by orderno. prefix must not contain the LIKE
// wildcards % or _, which would widen the match.
func (q Queries) OrderTrails(prefix string) (map[string]*OrderTrail, error) {
	if prefix == "" || strings.ContainsAny(prefix, `%_\`) {
		return nil, fmt.Errorf("order trails: prefix %q must be non-empty and free of %%, _ and \\", prefix)
	}
	like := prefix + "%"
	out := map[string]*OrderTrail{}
	trail := func(orderNo string) *OrderTrail {
		tr := out[orderNo]
		if tr == nil {
			tr = &OrderTrail{OrderNo: orderNo, Callbacks: map[string]int64{}}
			out[orderNo] = tr
		}
		return tr
	}

	var orders []struct {
		OrderNo     string
		Status      Status
		GuaranteeNo *string
	}
	if err := q.db.Model(&Order{}).Select("order_no, status, guarantee_no").Where("order_no LIKE ?", like).
		Scan(&orders).Error; err != nil {
		return nil, fmt.Errorf("order trails: orders: %w", err)
	}
	for _, o := range orders {
		tr := trail(o.OrderNo)
		tr.Status = o.Status
		if o.GuaranteeNo != nil {
			tr.GuaranteeNo = *o.GuaranteeNo
		}
	}

	var pays []struct {
		OrderNo  string
		N, NKeys int64
		Unlinked int64
	}
	// A payment is linked when its callback row is the accepted one that
	// carries the same dedup key: the row whose unique index decided it.
	if err := q.db.Table("payments AS p").
		Select("p.order_no AS order_no, COUNT(*) AS n, COUNT(DISTINCT p.dedup_key) AS n_keys, "+
			"SUM(CASE WHEN c.id IS NULL THEN 1 ELSE 0 END) AS unlinked").
		Joins("LEFT JOIN callbacks AS c ON c.id = p.callback_id AND c.dedup_key = p.dedup_key AND c.result = ?", CallbackAccepted).
		Where("p.order_no LIKE ?", like).Group("p.order_no").Scan(&pays).Error; err != nil {
		return nil, fmt.Errorf("order trails: payments: %w", err)
	}
	for _, p := range pays {
		tr := trail(p.OrderNo)
		tr.Payments, tr.PaymentKeys, tr.PaymentsUnlinked = p.N, p.NKeys, p.Unlinked
	}

	var files []struct {
		OrderNo string
		N       int64
	}
	if err := q.db.Model(&GuaranteeFile{}).Select("order_no, COUNT(*) AS n").Where("order_no LIKE ?", like).
		Group("order_no").Scan(&files).Error; err != nil {
		return nil, fmt.Errorf("order trails: files: %w", err)
	}
	for _, f := range files {
		trail(f.OrderNo).Files = f.N
	}

	var cbs []struct {
		OrderNo, Kind, Result string
		N                     int64
	}
	if err := q.db.Model(&Callback{}).Select("order_no, kind, result, COUNT(*) AS n").Where("order_no LIKE ?", like).
		Group("order_no, kind, result").Scan(&cbs).Error; err != nil {
		return nil, fmt.Errorf("order trails: callbacks: %w", err)
	}
	for _, c := range cbs {
		trail(c.OrderNo).Callbacks[c.Kind+"/"+c.Result] += c.N
	}
	return out, nil
}
