package model

import (
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ErrActiveOrder is returned by CreateOrder when the bidder already holds an
// active order for the lot.
var ErrActiveOrder = errors.New("an active order exists for this bidder and lot")

func activeSlot(s Status) *int {
	if s.Active() {
		one := 1
		return &one
	}
	return nil
}

// CreateOrder inserts a new order. Returns ErrDuplicate when the orderno
// exists and ErrActiveOrder when the bidder holds an active order for the
// lot: both decided by unique indexes.
func (t Tx) CreateOrder(o *Order) error {
	o.ActiveSlot = activeSlot(o.Status)
	err := t.db.Create(o).Error
	switch {
	case err == nil:
		return nil
	case duplicateOn(err, "uk_orders_active", "orders.applicant_code"):
		return ErrActiveOrder
	case isDuplicate(err):
		return fmt.Errorf("create order %s: %w", o.OrderNo, ErrDuplicate)
	default:
		return fmt.Errorf("create order %s: %w", o.OrderNo, err)
	}
}

// Order returns the order with that orderno, or ErrNotFound.
func (t Tx) Order(orderNo string) (*Order, error) {
	var o Order
	err := t.db.Where("order_no = ?", orderNo).Take(&o).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("order %s: %w", orderNo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("order %s: %w", orderNo, err)
	}
	return &o, nil
}

// LockOrder returns the order like Order and holds its row until the
// transaction ends (SELECT ... FOR UPDATE on MySQL; SQLite has one writer at
// a time already), so that what the caller derives from it, such as the
// paid amount, starts from its latest committed state and no other
// transaction changes it meanwhile.
func (t Tx) LockOrder(orderNo string) (*Order, error) {
	var o Order
	err := t.db.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Where("order_no = ?", orderNo).Take(&o).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("order %s: %w", orderNo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("lock order %s: %w", orderNo, err)
	}
	return &o, nil
}

// OrderByGuarantee returns the order of that institution with that bhno.
func (t Tx) OrderByGuarantee(orgCode, bhno string) (*Order, error) {
	var o Order
	err := t.db.Where("org_code = ? AND guarantee_no = ?", orgCode, bhno).Take(&o).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("guarantee %s: %w", bhno, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("guarantee %s: %w", bhno, err)
	}
	return &o, nil
}

// ActiveOrder returns the bidder's active order for the lot, or ErrNotFound.
func (t Tx) ActiveOrder(applicantCode, projectCode, lotCode string) (*Order, error) {
	var o Order
	err := t.db.Where("applicant_code = ? AND project_code = ? AND lot_code = ? AND active_slot = 1",
		applicantCode, projectCode, lotCode).Take(&o).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	return &o, err
}

// Changes are the columns a transition or an update sets, by column name.
type Changes map[string]any

// MoveOrder moves the order to status `to` only if it is now in one of
// `from`, setting the changes in the same statement. It reports whether the
// order moved: false means another writer got there first or the order is
// elsewhere in its lifecycle.
func (t Tx) MoveOrder(orderNo string, from []Status, to Status, set Changes) (bool, error) {
	cols := map[string]any{"status": to, "active_slot": activeSlot(to), "updated_at": now()}
	for k, v := range set {
		cols[k] = utc(v)
	}
	res := t.db.Model(&Order{}).Where("order_no = ? AND status IN ?", orderNo, from).Updates(cols)
	if res.Error != nil {
		if duplicateOn(res.Error, "uk_orders_guarantee", "orders.org_code") {
			return false, fmt.Errorf("move order %s to %s: guarantee number: %w", orderNo, to, ErrDuplicate)
		}
		return false, fmt.Errorf("move order %s to %s: %w", orderNo, to, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// UpdateOrder sets columns of an order without moving it; where adds a
// condition (column = value) that must hold, as in a compare-and-set.
func (t Tx) UpdateOrder(orderNo string, set Changes, where Changes) (bool, error) {
	cols := map[string]any{"updated_at": now()}
	for k, v := range set {
		cols[k] = utc(v)
	}
	q := t.db.Model(&Order{}).Where("order_no = ?", orderNo)
	res := whereAll(q, where).Updates(cols)
	if isDuplicate(res.Error) {
		return false, fmt.Errorf("update order %s: %w", orderNo, ErrDuplicate)
	}
	if res.Error != nil {
		return false, fmt.Errorf("update order %s: %w", orderNo, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// OrderFilter narrows ListOrders; empty fields do not filter.
type OrderFilter struct {
	ProjectCode   string
	LotCode       string
	Status        Status
	OrgCode       string
	ApplicantCode string
	Flag          string
	BeforeID      int64 // the cursor: only orders older than this one
	Limit         int
}

// ListOrders returns orders newest first. Paging by id (a keyset cursor)
// stays correct while new orders arrive: they get higher ids and never shift
// a page that was already read.
func (t Tx) ListOrders(f OrderFilter) ([]Order, error) {
	q := t.db.Model(&Order{})
	for col, v := range map[string]string{"project_code": f.ProjectCode, "lot_code": f.LotCode,
		"status": string(f.Status), "org_code": f.OrgCode, "applicant_code": f.ApplicantCode, "flag": f.Flag} {
		if v != "" {
			q = q.Where(col+" = ?", v)
		}
	}
	if f.BeforeID > 0 {
		q = q.Where("id < ?", f.BeforeID)
	}
	var out []Order
	if err := q.Order("id DESC").Limit(f.Limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return out, nil
}

// InstitutionsForLot returns the orgcodes that hold an order of the lot.
func (t Tx) InstitutionsForLot(projectCode, lotCode string) ([]string, error) {
	var orgs []string
	err := t.db.Model(&Order{}).Where("project_code = ? AND lot_code = ?", projectCode, lotCode).
		Distinct().Order("org_code").Pluck("org_code", &orgs).Error
	if err != nil {
		return nil, fmt.Errorf("institutions for lot %s/%s: %w", projectCode, lotCode, err)
	}
	return orgs, nil
}

// CountByStatus counts orders per status, for metrics.
func (t Tx) CountByStatus() (map[string]int64, error) { return t.countBy(&Order{}, "status", "") }

// CountFlagged counts orders per operator flag, for metrics.
func (t Tx) CountFlagged() (map[string]int64, error) {
	return t.countBy(&Order{}, "flag", "flag <> ''")
}

// countBy counts a table's rows per value of one column (where, if given,
// narrows the rows).
func (t Tx) countBy(table any, column, where string) (map[string]int64, error) {
	var rows []struct {
		K string
		N int64
	}
	q := t.db.Model(table).Select(column + " AS k, COUNT(*) AS n")
	if where != "" {
		q = q.Where(where)
	}
	if err := q.Group(column).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("count by %s: %w", column, err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.K] = r.N
	}
	return out, nil
}

// AddEvent appends to an order's history.
func (t Tx) AddEvent(e *Event) error {
	if e.CreatedAt.IsZero() {
		e.CreatedAt = now()
	}
	if err := t.db.Create(e).Error; err != nil {
		return fmt.Errorf("event %s %s: %w", e.OrderNo, e.Name, err)
	}
	return nil
}

// Events returns an order's history, oldest first.
func (t Tx) Events(orderNo string) ([]Event, error) {
	var out []Event
	if err := t.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("events %s: %w", orderNo, err)
	}
	return out, nil
}

// InsertPayment stores a pay or refund; ErrDuplicate when its dedup key exists.
func (t Tx) InsertPayment(p *Payment) error {
	err := t.db.Create(p).Error
	if isDuplicate(err) {
		return fmt.Errorf("payment %s: %w", p.OrderNo, ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("payment %s: %w", p.OrderNo, err)
	}
	return nil
}

// Payments returns an order's payments in the order received.
func (t Tx) Payments(orderNo string) ([]Payment, error) {
	var out []Payment
	if err := t.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("payments %s: %w", orderNo, err)
	}
	return out, nil
}

// RecomputePaid derives the order's paid and refunded amounts from its
// payments. The sum is taken in Go with decimals, so SQLite (which would sum
// in floating point) and MySQL agree to the cent.
func (t Tx) RecomputePaid(orderNo string) error {
	pays, err := t.Payments(orderNo)
	if err != nil {
		return err
	}
	sum := SumPayments(pays)
	_, err = t.UpdateOrder(orderNo, Changes{"paid_amount": sum.Paid, "refunded_amount": sum.Refunded}, nil)
	return err
}

// whereAll adds column = value conditions; a nil value means IS NULL.
func whereAll(q *gorm.DB, where Changes) *gorm.DB {
	for k, v := range where {
		if v == nil {
			q = q.Where(k + " IS NULL")
		} else {
			q = q.Where(k+" = ?", v)
		}
	}
	return q
}

func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
