package model

import (
	"fmt"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/shopspring/decimal"
)

// The statements of this file take many rows at once, so that a batch of
// callbacks costs a handful of statements instead of a handful each. They
// decide nothing a unique index would not: a duplicate fails the statement,
// and the caller rolls the batch back and takes its rows one by one.

// LockOrders returns the orders with those ordernos, by orderno, and holds
// their rows until the transaction ends, like LockOrder. The rows are
// locked in index order, so two batches over the same orders queue instead
// of deadlocking. An orderno that does not exist is absent from the map.
func (t Tx) LockOrders(orderNos []string) (map[string]*Order, error) {
	var rows []Order
	err := t.db.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).
		Where("order_no IN ?", orderNos).Order("order_no").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("lock %d orders: %w", len(orderNos), err)
	}
	out := make(map[string]*Order, len(rows))
	for i := range rows {
		out[rows[i].OrderNo] = &rows[i]
	}
	return out, nil
}

// TakenCallbackKeys returns which of the dedup keys a stored callback holds.
func (t Tx) TakenCallbackKeys(keys []string) (map[string]bool, error) {
	var taken []string
	if err := t.db.Model(&Callback{}).Where("dedup_key IN ?", keys).Pluck("dedup_key", &taken).Error; err != nil {
		return nil, fmt.Errorf("callback keys: %w", err)
	}
	out := make(map[string]bool, len(taken))
	for _, k := range taken {
		out[k] = true
	}
	return out, nil
}

// InsertCallbacks records callbacks that all carry a dedup key, in one
// statement, and sets their IDs. ErrDuplicate when a key was taken. The IDs
// are read back by key rather than counted from the last insert ID: TiDB
// and MySQL's interleaved auto-increment do not promise consecutive ones.
func (t Tx) InsertCallbacks(cbs []*Callback) error {
	keys := make([]string, len(cbs))
	for i, c := range cbs {
		if c.DedupKey == nil {
			return fmt.Errorf("insert callbacks: callback %d has no dedup key", i)
		}
		if c.ReceivedAt.IsZero() {
			c.ReceivedAt = now()
		}
		keys[i] = *c.DedupKey
	}
	err := t.db.Create(cbs).Error
	if isDuplicate(err) {
		return fmt.Errorf("insert %d callbacks: %w", len(cbs), ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("insert %d callbacks: %w", len(cbs), err)
	}
	var ids []struct {
		ID       int64
		DedupKey string
	}
	if err := t.db.Model(&Callback{}).Select("id", "dedup_key").Where("dedup_key IN ?", keys).Find(&ids).Error; err != nil {
		return fmt.Errorf("callback ids: %w", err)
	}
	byKey := make(map[string]int64, len(ids))
	for _, r := range ids {
		byKey[r.DedupKey] = r.ID
	}
	for _, c := range cbs {
		id, ok := byKey[*c.DedupKey]
		if !ok {
			return fmt.Errorf("callback %s: inserted but not found", *c.DedupKey)
		}
		c.ID = id
	}
	return nil
}

// InsertPayments stores payments in one statement; ErrDuplicate when a
// dedup key exists.
func (t Tx) InsertPayments(pays []*Payment) error {
	err := t.db.Create(pays).Error
	if isDuplicate(err) {
		return fmt.Errorf("insert %d payments: %w", len(pays), ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("insert %d payments: %w", len(pays), err)
	}
	return nil
}

// AddEvents appends events to orders' histories in one statement.
func (t Tx) AddEvents(events []*Event) error {
	at := now()
	for _, e := range events {
		if e.CreatedAt.IsZero() {
			e.CreatedAt = at
		}
	}
	if err := t.db.Create(events).Error; err != nil {
		return fmt.Errorf("insert %d events: %w", len(events), err)
	}
	return nil
}

// Amounts are an order's paid and refunded amounts.
type Amounts struct {
	Paid, Refunded decimal.Decimal
}

// SetAmounts sets the paid and refunded amounts of several orders in one
// statement. The caller holds their rows (LockOrders) and derived the
// amounts from them.
func (t Tx) SetAmounts(amounts map[string]Amounts) error {
	if len(amounts) == 0 {
		return nil
	}
	nos := make([]string, 0, len(amounts))
	for no := range amounts {
		nos = append(nos, no)
	}
	var paid, refunded strings.Builder
	paidArgs := make([]any, 0, 2*len(nos))
	refundedArgs := make([]any, 0, 2*len(nos))
	paid.WriteString("CASE order_no")
	refunded.WriteString("CASE order_no")
	for _, no := range nos {
		paid.WriteString(" WHEN ? THEN ?")
		refunded.WriteString(" WHEN ? THEN ?")
		paidArgs = append(paidArgs, no, amounts[no].Paid)
		refundedArgs = append(refundedArgs, no, amounts[no].Refunded)
	}
	paid.WriteString(" END")
	refunded.WriteString(" END")
	res := t.db.Model(&Order{}).Where("order_no IN ?", nos).Updates(map[string]any{
		"paid_amount":     gorm.Expr(paid.String(), paidArgs...),
		"refunded_amount": gorm.Expr(refunded.String(), refundedArgs...),
		"updated_at":      now(),
	})
	if res.Error != nil {
		return fmt.Errorf("set amounts of %d orders: %w", len(nos), res.Error)
	}
	return nil
}
