package model

import (
	"errors"
	"fmt"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
)

// Leases share the jobs' work between gateway instances that use one
// database. A row is taken by a conditional UPDATE of its lease columns
// (lease_owner, lease_until) that only succeeds while the lease is free or
// ran out, and the rows-affected count (or a read of the rows now carrying
// the claimer's token) tells who got what. There is no SELECT ... FOR UPDATE
// SKIP LOCKED: TiDB accepts it without locking, SQLite has no such thing,
// and a conditional UPDATE means the same on MySQL, MariaDB, TiDB and SQLite.
//
// A token names one claim (instance, job, random part), so that an instance
// finishing late never releases or overwrites a lease that another claim
// took after its own ran out: every later write is conditioned on the token.
//
// Lease writes use UpdateColumns, which leaves updated_at alone: a lease
// is bookkeeping, not a change of the order, and updated_at is what the
// incremental reconciliation reads as "changed since the last run".

// OrderQueue is the work a job claims orders for.
type OrderQueue int

const (
	// QueuePoll: orders in processing whose next query is due.
	QueuePoll OrderQueue = iota + 1
	// QueueApply: orders left in applying (outcome unknown) whose re-send is
	// due and that have not been given up on (flag apply_unconfirmed).
	QueueApply
	// QueuePull: issued orders with a bhno and a pullurl whose PDF is not
	// stored yet and whose next pull is due.
	QueuePull
)

func (q OrderQueue) String() string {
	switch q {
	case QueuePoll:
		return "poll"
	case QueueApply:
		return "apply"
	case QueuePull:
		return "pull"
	}
	return fmt.Sprintf("queue(%d)", int(q))
}

// due narrows a query to the orders of the queue that are due by dueBy. Every
// condition leads with status and next_check_at, for ix_orders_due.
func (oq OrderQueue) due(db *gorm.DB, dueBy time.Time) (*gorm.DB, error) {
	switch oq {
	case QueuePoll:
		return db.Where("status = ? AND next_check_at <= ?", StatusProcessing, dueBy), nil
	case QueueApply:
		return db.Where("status = ? AND next_check_at <= ? AND flag <> ?", StatusApplying, dueBy, FlagApplyUnconfirmed), nil
	case QueuePull:
		return db.Where("status = ? AND next_check_at <= ? AND file_pending = 1 AND guarantee_no IS NOT NULL AND pull_url <> ''",
			StatusIssued, dueBy), nil
	}
	return nil, fmt.Errorf("claim: unknown queue %d", int(oq))
}

// leaseFree is the condition that a row's lease is free or ran out at ?.
const leaseFree = "(lease_until IS NULL OR lease_until < ?)"

// claimTries bounds the rounds of a claim that found candidates but lost all
// of them to other instances between its read and its update.
const claimTries = 5

// ClaimOrders takes up to limit orders of queue oq that are due by dueBy and
// whose lease is free at now, for token until `until`, and returns them as
// they are now (oldest due first). Of several instances claiming at once,
// each order goes to exactly one. An empty result means nothing was due and
// free, or other instances took everything in the meantime.
func (q Queries) ClaimOrders(oq OrderQueue, token string, now, dueBy, until time.Time, limit int) ([]Order, error) {
	if token == "" || limit < 1 {
		return nil, fmt.Errorf("claim %s: token and a positive limit are required", oq)
	}
	now, dueBy, until = now.UTC(), dueBy.UTC(), until.UTC()
	for try := 0; try < claimTries; try++ {
		sel, err := oq.due(q.db.Model(&Order{}), dueBy)
		if err != nil {
			return nil, err
		}
		var ids []int64
		if err := sel.Where(leaseFree, now).Order("next_check_at, id").Limit(limit).Pluck("id", &ids).Error; err != nil {
			return nil, fmt.Errorf("claim %s: candidates: %w", oq, err)
		}
		if len(ids) == 0 {
			return nil, nil
		}
		// The candidates were read without a lock: the UPDATE repeats every
		// condition, so a row another instance took (or a callback moved)
		// in between is simply not ours.
		upd, _ := oq.due(q.db.Model(&Order{}), dueBy)
		res := upd.Where("id IN ?", ids).Where(leaseFree, now).
			UpdateColumns(map[string]any{"lease_owner": token, "lease_until": until})
		if Transient(res.Error) {
			continue // lost a lock race with another claimer: read again
		}
		if res.Error != nil {
			return nil, fmt.Errorf("claim %s: %w", oq, res.Error)
		}
		if res.RowsAffected == 0 {
			continue
		}
		var out []Order
		if err := q.db.Where("id IN ? AND lease_owner = ?", ids, token).Order("next_check_at, id").Find(&out).Error; err != nil {
			return nil, fmt.Errorf("claim %s: read claimed: %w", oq, err)
		}
		return out, nil
	}
	return nil, nil
}

// RenewLeases moves the end of every lease that the claim token still
// holds, on orders and deliveries, to until, and returns how many it
// renewed: a claim whose rows wait for a free call slot keeps them while
// they wait.
func (q Queries) RenewLeases(token string, until time.Time) (int64, error) {
	var n int64
	for _, table := range []any{&Order{}, &Delivery{}} {
		res := q.db.Model(table).Where("lease_owner = ?", token).UpdateColumn("lease_until", until.UTC())
		if res.Error != nil {
			return n, fmt.Errorf("renew leases of %s: %w", token, res.Error)
		}
		n += res.RowsAffected
	}
	return n, nil
}

// Transient reports whether err is a lock conflict that the database
// resolved by refusing one statement (InnoDB deadlock 1213 or lock wait
// timeout 1205, TiDB write conflict 9007, SQLite busy): the same statement
// may simply be tried again.
func Transient(err error) bool {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205 || me.Number == 9007
	}
	return err != nil && (strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "database is locked"))
}

// ReleaseLeases frees the leases that token still holds on the orders ids
// (claimed but not worked on); it returns how many it freed.
func (q Queries) ReleaseLeases(token string, ids ...int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res := q.db.Model(&Order{}).Where("id IN ? AND lease_owner = ?", ids, token).
		UpdateColumns(map[string]any{"lease_owner": "", "lease_until": nil})
	if res.Error != nil {
		return 0, fmt.Errorf("release orders: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// ReleaseInstance frees every lease on orders and deliveries held by the
// instance itself or by one of its claim tokens ("instance/..."), when it
// shuts down, so that the others need not wait for the leases to run out.
// The tokens are found as a range of the lease_owner index, so that the
// UPDATE reads and locks only this instance's rows, never the others' (a
// scan would hold every callback at each rolling restart).
func (q Queries) ReleaseInstance(instance string) (orders, deliveries int64, err error) {
	if instance == "" {
		return 0, 0, errors.New("release leases: empty instance")
	}
	// "0" sorts right after "/": [instance/, instance0) is every token.
	cond := "lease_owner = ? OR (lease_owner >= ? AND lease_owner < ?)"
	args := []any{instance, instance + "/", instance + "0"}
	free := map[string]any{"lease_owner": "", "lease_until": nil}
	res := q.db.Model(&Order{}).Where(cond, args...).UpdateColumns(free)
	if res.Error != nil {
		return 0, 0, fmt.Errorf("release leases of %s: orders: %w", instance, res.Error)
	}
	orders = res.RowsAffected
	res = q.db.Model(&Delivery{}).Where(cond, args...).UpdateColumns(free)
	if res.Error != nil {
		return orders, 0, fmt.Errorf("release leases of %s: deliveries: %w", instance, res.Error)
	}
	return orders, res.RowsAffected, nil
}

// DueDeliveries returns pending deliveries due by dueBy whose lease is free
// at now, with an id above afterID, by id: a keyset walk, so that one run
// sees each due delivery once. They are candidates only; each attempt
// claims its delivery with ClaimDelivery.
func (q Queries) DueDeliveries(now, dueBy time.Time, afterID int64, limit int) ([]Delivery, error) {
	var out []Delivery
	db := q.db
	if q.db.Dialector.Name() == "mysql" {
		// The pending deliveries in id order (ix_deliveries_status): left to
		// itself, MySQL may sort every due one (ix_deliveries_due) or walk
		// the primary key through every delivery ever made.
		db = db.Table("`deliveries` FORCE INDEX (ix_deliveries_status)")
	}
	err := db.Where("status = ? AND next_attempt_at <= ? AND id > ?", DeliveryPending, dueBy.UTC(), afterID).
		Where(leaseFree, now.UTC()).Order("id").Limit(limit).Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("due deliveries: %w", err)
	}
	return out, nil
}

// JobLease is the row of job_leases that lets one instance at a time run a
// job that works on everything at once (the daily reconciliation).
type JobLease struct {
	Name       string `gorm:"primaryKey"`
	Owner      string
	LeaseUntil time.Time
}

// TableName keeps the table named as the migration does.
func (JobLease) TableName() string { return "job_leases" }

// AcquireJobLease takes the lease of job name for owner until `until` if it
// is free at now (never taken, or ran out). It reports whether owner got
// it; of instances trying at once, one does. Owner should be unique per
// attempt (a claim token), so that an attempt never mistakes another's
// lease for its own.
func (q Queries) AcquireJobLease(name, owner string, now, until time.Time) (bool, error) {
	res := q.db.Model(&JobLease{}).Where("name = ? AND lease_until < ?", name, now.UTC()).
		Updates(map[string]any{"owner": owner, "lease_until": until.UTC()})
	if res.Error != nil {
		return false, fmt.Errorf("job lease %s: %w", name, res.Error)
	}
	if res.RowsAffected == 1 {
		return true, nil
	}
	// No row, or a live one: inserting decides which, through the primary key.
	err := q.db.Create(&JobLease{Name: name, Owner: owner, LeaseUntil: until.UTC()}).Error
	if isDuplicate(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("job lease %s: %w", name, err)
	}
	return true, nil
}

// SetJobLease moves the end of owner's lease of job name to until: now to
// release it, later to keep other instances off for a while. It reports
// whether owner still held it.
func (q Queries) SetJobLease(name, owner string, until time.Time) (bool, error) {
	res := q.db.Model(&JobLease{}).Where("name = ? AND owner = ?", name, owner).
		Update("lease_until", until.UTC())
	if res.Error != nil {
		return false, fmt.Errorf("job lease %s: %w", name, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// JobLeaseOf returns the lease row of job name, or ErrNotFound.
func (q Queries) JobLeaseOf(name string) (*JobLease, error) {
	var l JobLease
	err := q.db.Where("name = ?", name).Take(&l).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("job lease %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("job lease %s: %w", name, err)
	}
	return &l, nil
}
