package model

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The statements of this file take many rows at once, so that a batch of
// callbacks costs a handful of statements instead of a handful each. They
// decide nothing a unique index would not: a duplicate fails the statement,
// and the caller rolls the batch back and takes its rows one by one.

// lockedColumns are what a batch reads of the orders it locks.
var lockedColumns = []string{"id", "order_no", "org_code", "status", "guarantee_no", "paid_amount", "refunded_amount"}

// LockOrders returns the orders with those ordernos, by orderno, and holds
// their rows until the transaction ends, like LockOrder. Only the columns
// a batch decides by are read: identity, institution, status, guarantee
// number and amounts. The rows are locked in index order, so two batches
// over the same orders queue instead of deadlocking. An orderno that does
// not exist is absent from the map.
func (q Queries) LockOrders(orderNos []string) (map[string]*Order, error) {
	var rows []Order
	err := q.db.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Select(lockedColumns).
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

// insertAll stores n rows (a slice) in one statement. A unique index that
// refuses one fails them all with ErrDuplicate. The IDs GORM then sets on
// the rows come from INSERT … RETURNING on MariaDB, but on MySQL and TiDB
// are counted from the first by one: wrong where auto_increment_increment
// is more than one or ids come in per-server ranges. A caller that needs
// them reads them back (InsertCallbacks, InsertPush).
func (q Queries) insertAll(rows any, n int, what string) error {
	err := q.db.Create(rows).Error
	if isDuplicate(err) {
		return fmt.Errorf("insert %d %s: %w: %w", n, what, ErrDuplicate, err)
	}
	if err != nil {
		return fmt.Errorf("insert %d %s: %w", n, what, err)
	}
	return nil
}

// DedupRef is a dedup key with the order its row names. The unique indexes
// lead with the order (uk_callbacks_dedup, uk_payments_dedup: order_no,
// dedup_key; docs/decisions.md §44), so a key is looked up with its order:
// by the key alone, the lookup would read the whole index.
type DedupRef struct{ OrderNo, Key string }

// whereDedup is the condition "one of these (order, key) pairs", as
// (order_no = ? AND dedup_key = ?) OR …: MariaDB, MySQL, TiDB and SQLite
// each descend the unique index once per pair. A row constructor IN would
// be shorter, but SQLite scans the table for it; order_no IN ? AND
// dedup_key IN ? descends once per order and key combined.
func whereDedup(db *gorm.DB, refs []DedupRef) *gorm.DB {
	var b strings.Builder
	args := make([]any, 0, 2*len(refs))
	for i, r := range refs {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(order_no = ? AND dedup_key = ?)")
		args = append(args, r.OrderNo, r.Key)
	}
	return db.Where("("+b.String()+")", args...)
}

// TakenCallbackKeys returns which of the dedup keys a stored callback holds.
func (q Queries) TakenCallbackKeys(refs []DedupRef) (map[string]bool, error) {
	out := make(map[string]bool, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	var taken []string
	if err := whereDedup(q.db.Model(&Callback{}), refs).Pluck("dedup_key", &taken).Error; err != nil {
		return nil, fmt.Errorf("callback keys: %w", err)
	}
	for _, k := range taken {
		out[k] = true
	}
	return out, nil
}

// InsertCallbacks records callbacks in one statement and sets their IDs.
// ErrDuplicate when a dedup key was taken. The IDs of the rows with a dedup
// key are read back by key rather than counted from the last insert ID:
// TiDB and MySQL's interleaved auto-increment do not promise consecutive
// ones. Rows without a key (audit rows of refusals and repeats) keep ID 0:
// nothing refers to them.
func (q Queries) InsertCallbacks(cbs []*Callback) error {
	refs := make([]DedupRef, 0, len(cbs))
	at := now()
	for _, c := range cbs {
		if c.ReceivedAt.IsZero() {
			c.ReceivedAt = at
		}
		if c.DedupKey != nil {
			refs = append(refs, DedupRef{OrderNo: c.OrderNo, Key: *c.DedupKey})
		}
	}
	if err := q.insertAll(cbs, len(cbs), "callbacks"); err != nil {
		return err
	}
	for _, c := range cbs {
		c.ID = 0
	}
	if len(refs) == 0 {
		return nil
	}
	var ids []struct {
		ID       int64
		DedupKey string
	}
	if err := whereDedup(q.db.Model(&Callback{}).Select("id", "dedup_key"), refs).Find(&ids).Error; err != nil {
		return fmt.Errorf("callback ids: %w", err)
	}
	byKey := make(map[string]int64, len(ids))
	for _, r := range ids {
		byKey[r.DedupKey] = r.ID
	}
	for _, c := range cbs {
		if c.DedupKey == nil {
			continue
		}
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
func (q Queries) InsertPayments(pays []*Payment) error {
	return q.insertAll(pays, len(pays), "payments")
}

// AddEvents appends events to orders' histories in one statement.
func (q Queries) AddEvents(events []*Event) error {
	at := now()
	for _, e := range events {
		if e.CreatedAt.IsZero() {
			e.CreatedAt = at
		}
	}
	return q.insertAll(events, len(events), "events")
}

// SetAmounts sets the paid and refunded amounts of several orders in one
// statement. The caller holds their rows (LockOrders) and derived the
// amounts from them.
func (q Queries) SetAmounts(amounts map[string]Amounts) error {
	rows := make(map[string]OrderChange, len(amounts))
	for no, a := range amounts {
		rows[no] = OrderChange{}.Amounts(a)
	}
	if _, err := q.updateEach(rows, OrderChange{}, OrderGuard{}); err != nil {
		return fmt.Errorf("set amounts of %d orders: %w", len(rows), err)
	}
	return nil
}

// RecordIssuances moves several orders, each now in status from, to issued
// with what the institution said of each, in one statement, like as many
// RecordIssuance. It returns how many moved; a unique index that refuses a
// change (a guarantee number another order holds) fails the statement with
// ErrDuplicate.
func (q Queries) RecordIssuances(from Status, issuances map[string]Issuance) (int64, error) {
	rows := make(map[string]OrderChange, len(issuances))
	for no, i := range issuances {
		rows[no] = i.change()
	}
	to := StatusIssued
	n, err := q.updateEach(rows, OrderChange{}.with("status", to, "active_slot", activeSlot(to)), OrderGuard{Status: []Status{from}})
	if isDuplicate(err) {
		return 0, fmt.Errorf("move %d orders to %s: %w", len(rows), to, ErrDuplicate)
	}
	if err != nil {
		return 0, fmt.Errorf("move %d orders to %s: %w", len(rows), to, err)
	}
	return n, nil
}

// updateEach updates the orders named by rows in one statement, if g holds
// for each: each column that some row changes becomes CASE order_no WHEN
// ... THEN ... ELSE column END, so that a row that does not change it keeps
// its value; common sets the same value on all. It returns the rows updated.
func (q Queries) updateEach(rows map[string]OrderChange, common OrderChange, g OrderGuard) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	nos := make([]string, 0, len(rows))
	cols := map[string]bool{}
	for no, ch := range rows {
		nos = append(nos, no)
		for c := range ch.cols {
			cols[c] = true
		}
	}
	sort.Strings(nos) // one statement text for one set of orders
	set := make(map[string]any, len(cols)+len(common.cols)+1)
	for c := range cols {
		var sql strings.Builder
		args := make([]any, 0, 2*len(nos))
		sql.WriteString("CASE order_no")
		for _, no := range nos {
			if v, ok := rows[no].cols[c]; ok {
				sql.WriteString(" WHEN ? THEN ?")
				args = append(args, no, v)
			}
		}
		sql.WriteString(" ELSE " + c + " END")
		set[c] = gorm.Expr(sql.String(), args...)
	}
	maps.Copy(set, common.cols)
	set["updated_at"] = now()
	res := g.apply(q.db.Model(&Order{}).Where("order_no IN ?", nos)).Updates(set)
	return res.RowsAffected, res.Error
}

// InsertFiles stores guarantee PDFs in one statement; ErrDuplicate when an
// order has one. The bytes are interpolated into the statement: for small
// files only (InsertFile sends a big one as it is).
func (q Queries) InsertFiles(files []*GuaranteeFile) error {
	at := now()
	for _, f := range files {
		if f.CreatedAt.IsZero() {
			f.CreatedAt = at
		}
	}
	return q.insertAll(files, len(files), "files")
}
