package model

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"
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
func (q Queries) CreateOrder(o *Order) error {
	o.ActiveSlot = activeSlot(o.Status)
	err := q.db.Create(o).Error
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
func (q Queries) Order(orderNo string) (*Order, error) {
	return q.takeOrder(q.db, "order "+orderNo, "order_no = ?", orderNo)
}

// LockOrder returns the order like Order and holds its row until the
// transaction ends (SELECT ... FOR UPDATE on MySQL; SQLite has one writer at
// a time already), so that what the caller derives from it, such as the
// paid amount, starts from its latest committed state and no other
// transaction changes it meanwhile.
func (q Queries) LockOrder(orderNo string) (*Order, error) {
	return q.takeOrder(q.db.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}), "lock order "+orderNo,
		"order_no = ?", orderNo)
}

// OrderByGuarantee returns the order of that institution with that bhno.
func (q Queries) OrderByGuarantee(orgCode, guaranteeNo string) (*Order, error) {
	return q.takeOrder(q.db, "guarantee "+guaranteeNo, "org_code = ? AND guarantee_no = ?", orgCode, guaranteeNo)
}

// ActiveOrder returns the bidder's active order for the lot, or ErrNotFound.
func (q Queries) ActiveOrder(applicantCode, projectCode, lotCode string) (*Order, error) {
	return q.takeOrder(q.db, "active order", "applicant_code = ? AND project_code = ? AND lot_code = ? AND active_slot = 1",
		applicantCode, projectCode, lotCode)
}

func (q Queries) takeOrder(db *gorm.DB, what string, where string, args ...any) (*Order, error) {
	var o Order
	err := db.Where(where, args...).Take(&o).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &o, nil
}

// OrderChange is what one UPDATE writes to an order. Each method names a
// column (or a few that go together), so that a misspelt column does not
// compile; every method returns a changed copy. The zero value writes
// nothing but updated_at.
type OrderChange struct{ cols map[string]any }

func (c OrderChange) with(kv ...any) OrderChange {
	m := make(map[string]any, len(c.cols)+len(kv)/2)
	maps.Copy(m, c.cols)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = utc(kv[i+1])
	}
	return OrderChange{cols: m}
}

// DueAt makes the order due to its job (poll, pull, re-apply) at t.
func (c OrderChange) DueAt(t time.Time) OrderChange { return c.with("next_check_at", t) }

// NotDue takes the order off every job's queue: nothing is due. An order
// that waits for nothing must say so, or each claim would read past it.
func (c OrderChange) NotDue() OrderChange { return c.with("next_check_at", nil) }

// Attempts sets how many tries the order's current step has taken.
func (c OrderChange) Attempts(n int) OrderChange { return c.with("check_attempts", n) }

// Flag raises a flag for operators; FlagNone lowers it.
func (c OrderChange) Flag(f Flag) OrderChange { return c.with("flag", f) }

// FreeLease gives the order's lease up.
func (c OrderChange) FreeLease() OrderChange { return c.with("lease_owner", "", "lease_until", nil) }

// Links keeps the URLs the institution's answer to the apply handed out.
func (c OrderChange) Links(l Links) OrderChange {
	return c.with("continue_url", l.ContinueURL, "query_url", l.QueryURL, "pull_url", l.PullURL, "cancel_url", l.CancelURL)
}

// Remark keeps the institution's remark (info, describe) or why the apply was refused.
func (c OrderChange) Remark(s string) OrderChange { return c.with("remark", s) }

// FilePending says whether the guarantee's PDF is still to be fetched.
func (c OrderChange) FilePending(b bool) OrderChange { return c.with("file_pending", b) }

// IssuedAt sets the guarantee's issuance time (bhcretime).
func (c OrderChange) IssuedAt(t time.Time) OrderChange { return c.with("issued_at", t) }

// GuaranteeNo sets the bhno.
func (c OrderChange) GuaranteeNo(s string) OrderChange { return c.with("guarantee_no", s) }

// Issuer sets what an applynotify says of the premium and the issuer.
func (c OrderChange) Issuer(d IssuerDetails) OrderChange {
	return c.with("premium_rate", d.Rate, "premium", d.Premium, "issuer_name", d.Name,
		"issuer_address", d.Address, "issuer_phone", d.Phone)
}

// Amounts sets the paid and refunded amounts, derived from the payments.
func (c OrderChange) Amounts(a Amounts) OrderChange {
	return c.with("paid_amount", a.Paid, "refunded_amount", a.Refunded)
}

// Links are the per-order URLs of the institution's answer to the apply.
type Links struct{ ContinueURL, QueryURL, PullURL, CancelURL string }

// IssuerDetails are what an applynotify says of the premium and the issuer.
type IssuerDetails struct {
	Rate, Premium        decimal.Decimal
	Name, Address, Phone string
}

// Amounts are an order's paid and refunded amounts.
type Amounts struct {
	Paid, Refunded decimal.Decimal
}

// OrderGuard is what must hold for an update to happen, so that it is a
// compare-and-set: the rows-affected count tells whether it did. The zero
// value asks nothing.
type OrderGuard struct {
	Status        []Status // the order is in one of these
	Token         string   // the order's lease is held by this claim
	NoGuaranteeNo bool     // the bhno is still unknown
	FilePending   bool     // the PDF is still to be fetched
}

func (g OrderGuard) apply(db *gorm.DB) *gorm.DB {
	if len(g.Status) > 0 {
		db = db.Where("status IN ?", g.Status)
	}
	if g.Token != "" {
		db = db.Where("lease_owner = ?", g.Token)
	}
	if g.NoGuaranteeNo {
		db = db.Where("guarantee_no IS NULL")
	}
	if g.FilePending {
		db = db.Where("file_pending = ?", true)
	}
	return db
}

// UpdateOrder writes c to the order if g holds, and reports whether it did.
// A change to a bhno that another order of the institution holds returns
// ErrDuplicate.
func (q Queries) UpdateOrder(orderNo string, c OrderChange, g OrderGuard) (bool, error) {
	cols := make(map[string]any, len(c.cols)+1)
	maps.Copy(cols, c.cols)
	cols["updated_at"] = now()
	res := g.apply(q.db.Model(&Order{}).Where("order_no = ?", orderNo)).Updates(cols)
	if isDuplicate(res.Error) {
		return false, fmt.Errorf("update order %s: %w", orderNo, ErrDuplicate)
	}
	if res.Error != nil {
		return false, fmt.Errorf("update order %s: %w", orderNo, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// MoveOrder moves the order to status `to` only if it is now in one of
// `from`, writing c in the same statement. It reports whether the order
// moved: false means another writer got there first or the order is
// elsewhere in its lifecycle. ErrDuplicate: the change gives it a bhno that
// another order of the institution holds.
func (q Queries) MoveOrder(orderNo string, from []Status, to Status, c OrderChange) (bool, error) {
	moved, err := q.UpdateOrder(orderNo, c.with("status", to, "active_slot", activeSlot(to)), OrderGuard{Status: from})
	if err != nil {
		return false, fmt.Errorf("move to %s: %w", to, err)
	}
	return moved, nil
}

// AdvancePoll stores what a query of an order in processing leaves: the
// attempts so far and when the next query is due, with the claim's lease
// given up in the same UPDATE, so that no other instance can take the
// order between the two. It reports false when the order is no longer
// processing under that claim (the answer, or a callback meanwhile, moved
// it on).
func (q Queries) AdvancePoll(orderNo, token string, attempts int, next time.Time) (bool, error) {
	return q.UpdateOrder(orderNo, OrderChange{}.Attempts(attempts).DueAt(next).FreeLease(),
		OrderGuard{Token: token, Status: []Status{StatusProcessing}})
}

// Issuance is what an institution said of an issued guarantee, by
// applynotify or by queryurl.
type Issuance struct {
	GuaranteeNo string         // "" when not told (a query answer has none)
	Remark      string         // "" keeps the stored one
	Issuer      *IssuerDetails // applynotify only
	IssuedAt    time.Time      // zero when not told
	// FileStored: the order's PDF is stored (this notice brought it, or an
	// earlier one did). Otherwise the pull job is due at once (at Now), if
	// it can pull (see pullDue).
	FileStored bool
	Now        time.Time
}

// change is the columns an issuance writes.
func (i Issuance) change() OrderChange {
	c := OrderChange{}.Attempts(0).Flag(FlagNone).FilePending(!i.FileStored)
	if i.FileStored {
		c = c.NotDue()
	} else {
		c = c.with("next_check_at", i.pullDue())
	}
	if i.GuaranteeNo != "" {
		c = c.GuaranteeNo(i.GuaranteeNo)
	}
	if i.Remark != "" {
		c = c.Remark(i.Remark)
	}
	if i.Issuer != nil {
		c = c.Issuer(*i.Issuer)
	}
	if !i.IssuedAt.IsZero() {
		c = c.IssuedAt(i.IssuedAt)
	}
	return c
}

// pullDue is next_check_at of an issued order whose PDF is still to come:
// Now when the pull job can fetch it (a pullurl and a bhno, known before or
// told now), NULL when it cannot, so that the order waits for an
// applynotify with the file instead of being read past by every claim.
// A CASE in SQL, because only the row knows its pullurl; it reads the
// row's values as they were before the UPDATE (guarantee_no is taken from
// the notice when it brings one), as MySQL and SQLite would not agree on
// the order of assignments.
func (i Issuance) pullDue() clause.Expr {
	return gorm.Expr("CASE WHEN pull_url <> '' AND (guarantee_no IS NOT NULL OR ? <> '') THEN ? ELSE NULL END",
		i.GuaranteeNo, i.Now.UTC().Truncate(time.Millisecond))
}

// RecordIssuance moves an order in status from to issued with what the
// institution said (see MoveOrder).
func (q Queries) RecordIssuance(orderNo string, from Status, i Issuance) (bool, error) {
	return q.MoveOrder(orderNo, []Status{from}, StatusIssued, i.change())
}

// LearnGuaranteeNo stores the bhno of an order issued by a query (which
// carries none), if it is still unknown; it reports whether it did.
// ErrDuplicate: another order of the institution holds that bhno.
func (q Queries) LearnGuaranteeNo(orderNo string, i Issuance, ended bool) (bool, error) {
	c := i.change()
	if ended {
		c = c.NotDue() // nothing to pull for a guarantee that ended
	}
	return q.UpdateOrder(orderNo, c, OrderGuard{NoGuaranteeNo: true})
}

// OrderFilter narrows ListOrders; empty fields do not filter.
type OrderFilter struct {
	ProjectCode   string
	LotCode       string
	Status        Status
	OrgCode       string
	ApplicantCode string
	Flag          Flag
	// Search finds an order by what an operator has at hand: its orderno,
	// bhno, qycode or xmcode exactly, or the start of its qyname.
	Search string
	// CreatedFrom and CreatedTo bound created_at: [from, to); zero is open.
	CreatedFrom, CreatedTo time.Time
	BeforeID               int64 // the cursor: only orders older than this one
	Limit                  int
}

// ListOrders returns orders newest first. Paging by id (a keyset cursor)
// stays correct while new orders arrive: they get higher ids and never shift
// a page that was already read.
//
// Every filter is served by an index whose entries are in id order within
// a value (InnoDB appends the primary key to a secondary index), so a page
// reads about as many rows as it returns, however many orders there are
// (docs/operations.md, "At size"; model/explain_test.go checks the plans).
// A search is one such query per column it may match, merged here: an OR
// across columns would read the whole table.
func (q Queries) ListOrders(f OrderFilter) ([]Order, error) {
	db, err := q.filtered(f)
	if err != nil {
		return nil, err
	}
	if f.Search == "" {
		var out []Order
		if err := db.Order("id DESC").Limit(f.Limit).Find(&out).Error; err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		return out, nil
	}
	byID := map[int64]Order{}
	for _, col := range []string{"order_no = ?", "guarantee_no = ?", "applicant_code = ?", "project_code = ?", "applicant_name LIKE ? ESCAPE '!'"} {
		arg := f.Search
		if strings.HasPrefix(col, "applicant_name") {
			arg = likePrefix(f.Search)
		}
		var part []Order
		if err := db.Session(&gorm.Session{}).Where(col, arg).Order("id DESC").Limit(f.Limit).Find(&part).Error; err != nil {
			return nil, fmt.Errorf("list orders: search: %w", err)
		}
		for _, o := range part {
			byID[o.ID] = o
		}
	}
	out := slices.SortedFunc(maps.Values(byID), func(a, b Order) int { return cmp.Compare(b.ID, a.ID) })
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// createdMargin widens the id range that stands for a creation-time range:
// ids follow created_at only as closely as the instances' clocks agree.
const createdMargin = time.Minute

// filtered is the orders that f's filters other than Search select.
func (q Queries) filtered(f OrderFilter) (*gorm.DB, error) {
	db := q.db.Model(&Order{})
	filters := []struct {
		col, v  string
		indexes []string // the indexes that serve it in id order
	}{{"project_code", f.ProjectCode, []string{"ix_orders_lot"}}, {"lot_code", f.LotCode, []string{"ix_orders_lot"}},
		{"status", string(f.Status), []string{"ix_orders_status", "ix_orders_org_status"}},
		{"org_code", f.OrgCode, []string{"ix_orders_org", "ix_orders_org_status"}},
		{"applicant_code", f.ApplicantCode, []string{"uk_orders_active"}}, {"flag", string(f.Flag), []string{"ix_orders_flag"}}}
	var use []string
	for _, c := range filters {
		if c.v != "" {
			use = append(use, c.indexes...)
		}
	}
	// On MySQL the filters' own indexes, and no other: for a value common
	// in the history but rare among the newest orders (an institution that
	// has gone quiet), the optimizer would walk the primary key backwards
	// and read every newer order on the way. FORCE, not USE: with USE the
	// optimizer may still take that walk for a value it thinks frequent.
	// Not with a search (its columns have their own indexes) nor a
	// creation range (an id range).
	if len(use) > 0 && f.Search == "" && f.CreatedFrom.IsZero() && f.CreatedTo.IsZero() && q.db.Dialector.Name() == "mysql" {
		slices.Sort(use)
		db = db.Table("`orders` FORCE INDEX (" + strings.Join(slices.Compact(use), ", ") + ")")
	}
	for _, c := range filters {
		if c.v != "" {
			db = db.Where(c.col+" = ?", c.v)
		}
	}
	// A creation-time range becomes an id range as well (two lookups in
	// ix_orders_created), so that a page walks the primary key backwards
	// from the range's end instead of sorting every order of the range.
	if !f.CreatedFrom.IsZero() {
		db = db.Where("created_at >= ?", f.CreatedFrom.UTC())
		if id, ok, err := q.firstCreated(f.CreatedFrom.Add(-createdMargin)); err != nil {
			return nil, err
		} else if ok {
			db = db.Where("id >= ?", id)
		} else {
			db = db.Where("1 = 0") // no order was created since
		}
	}
	if !f.CreatedTo.IsZero() {
		db = db.Where("created_at < ?", f.CreatedTo.UTC())
		if id, ok, err := q.firstCreated(f.CreatedTo.Add(createdMargin)); err != nil {
			return nil, err
		} else if ok {
			db = db.Where("id < ?", id)
		}
	}
	if f.BeforeID > 0 {
		db = db.Where("id < ?", f.BeforeID)
	}
	return db, nil
}

// firstCreated returns the id of the first order created at or after t.
func (q Queries) firstCreated(t time.Time) (int64, bool, error) {
	var ids []int64
	err := q.db.Model(&Order{}).Where("created_at >= ?", t.UTC()).Order("created_at, id").Limit(1).Pluck("id", &ids).Error
	if err != nil {
		return 0, false, fmt.Errorf("list orders: created range: %w", err)
	}
	if len(ids) == 0 {
		return 0, false, nil
	}
	return ids[0], true, nil
}

// likePrefix is the LIKE pattern (ESCAPE '!') of the strings that start
// with s, its own wildcards escaped. '!' rather than a backslash, which
// MySQL and SQLite would each read differently in the ESCAPE clause.
func likePrefix(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s) + "%"
}

// InstitutionsForLot returns the orgcodes that hold an order of the lot.
func (q Queries) InstitutionsForLot(projectCode, lotCode string) ([]string, error) {
	var orgs []string
	err := q.db.Model(&Order{}).Where("project_code = ? AND lot_code = ?", projectCode, lotCode).
		Distinct().Order("org_code").Pluck("org_code", &orgs).Error
	if err != nil {
		return nil, fmt.Errorf("institutions for lot %s/%s: %w", projectCode, lotCode, err)
	}
	return orgs, nil
}

// CountByStatus counts orders per status, for metrics.
func (q Queries) CountByStatus() (map[string]int64, error) { return q.countBy(&Order{}, "status", "") }

// CountFlagged counts orders per operator flag, for metrics.
func (q Queries) CountFlagged() (map[string]int64, error) {
	return q.countBy(&Order{}, "flag", "flag <> ''")
}

// countBy counts a table's rows per value of one column (where, if given,
// narrows the rows).
func (q Queries) countBy(table any, column, where string) (map[string]int64, error) {
	var rows []struct {
		K string
		N int64
	}
	db := q.db.Model(table).Select(column + " AS k, COUNT(*) AS n")
	if where != "" {
		db = db.Where(where)
	}
	if err := db.Group(column).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("count by %s: %w", column, err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.K] = r.N
	}
	return out, nil
}

// AddEvent appends to an order's history.
func (q Queries) AddEvent(e *Event) error {
	if e.CreatedAt.IsZero() {
		e.CreatedAt = now()
	}
	if err := q.db.Create(e).Error; err != nil {
		return fmt.Errorf("event %s %s: %w", e.OrderNo, e.Name, err)
	}
	return nil
}

// Events returns an order's history, oldest first.
func (q Queries) Events(orderNo string) ([]Event, error) {
	var out []Event
	if err := q.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("events %s: %w", orderNo, err)
	}
	return out, nil
}

// InsertPayment stores a pay or refund; ErrDuplicate when its dedup key exists.
func (q Queries) InsertPayment(p *Payment) error {
	err := q.db.Create(p).Error
	if isDuplicate(err) {
		return fmt.Errorf("payment %s: %w", p.OrderNo, ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("payment %s: %w", p.OrderNo, err)
	}
	return nil
}

// Payments returns an order's payments in the order received.
func (q Queries) Payments(orderNo string) ([]Payment, error) {
	var out []Payment
	if err := q.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("payments %s: %w", orderNo, err)
	}
	return out, nil
}

// RecomputePaid derives the order's paid and refunded amounts from its
// payments. The sum is taken in Go with decimals, so SQLite (which would sum
// in floating point) and MySQL agree to the cent.
func (q Queries) RecomputePaid(orderNo string) error {
	pays, err := q.Payments(orderNo)
	if err != nil {
		return err
	}
	sum := SumPayments(pays)
	_, err = q.UpdateOrder(orderNo, OrderChange{}.Amounts(Amounts{Paid: sum.Paid, Refunded: sum.Refunded}), OrderGuard{})
	return err
}

func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
