package model

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// InsertFile stores a guarantee PDF; ErrDuplicate when the order has one.
//
// On MySQL the row goes through a server-side prepared statement: the
// store otherwise interpolates arguments into the query text, which for a
// PDF of tens of MiB means an escaped copy in the query and another in the
// packet buffer; prepared, the bytes are sent as they are.
func (t Tx) InsertFile(f *GuaranteeFile) error {
	if f.CreatedAt.IsZero() {
		f.CreatedAt = now()
	}
	var err error
	if conn, ok := t.db.Statement.ConnPool.(interface {
		PrepareContext(context.Context, string) (*sql.Stmt, error)
	}); ok && t.db.Dialector.Name() == "mysql" {
		err = t.insertFilePrepared(conn, f)
	} else {
		err = t.db.Create(f).Error
	}
	if isDuplicate(err) {
		return fmt.Errorf("file %s: %w", f.OrderNo, ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("file %s: %w", f.OrderNo, err)
	}
	return nil
}

func (t Tx) insertFilePrepared(conn interface {
	PrepareContext(context.Context, string) (*sql.Stmt, error)
}, f *GuaranteeFile) error {
	ctx := t.db.Statement.Context
	stmt, err := conn.PrepareContext(ctx, "INSERT INTO guarantee_files "+
		"(order_no, guarantee_no, sha256, size, source, content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
	if err != nil {
		return err
	}
	defer stmt.Close()
	res, err := stmt.ExecContext(ctx, f.OrderNo, f.GuaranteeNo, f.Sha256, f.Size, f.Source, f.Content, f.CreatedAt.UTC())
	if err != nil {
		return err
	}
	f.ID, err = res.LastInsertId()
	return err
}

// fileMeta is every column of a file but its bytes.
const fileMeta = "id, order_no, guarantee_no, sha256, size, source, created_at"

// File returns an order's PDF with its bytes, or ErrNotFound.
func (t Tx) File(orderNo string) (*GuaranteeFile, error) {
	return t.file(orderNo, "*")
}

// FileInfo returns an order's PDF without its bytes, or ErrNotFound.
func (t Tx) FileInfo(orderNo string) (*GuaranteeFile, error) {
	return t.file(orderNo, fileMeta)
}

func (t Tx) file(orderNo, cols string) (*GuaranteeFile, error) {
	var f GuaranteeFile
	err := t.db.Select(cols).Where("order_no = ?", orderNo).Take(&f).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("file %s: %w", orderNo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", orderNo, err)
	}
	return &f, nil
}

// FilesBySha256 returns the files (without bytes) with that digest: 验真.
func (t Tx) FilesBySha256(sum string) ([]GuaranteeFile, error) {
	var out []GuaranteeFile
	if err := t.db.Select(fileMeta).Where("sha256 = ?", sum).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("files by sha256: %w", err)
	}
	return out, nil
}

// InsertCallback records a received callback. A callback carrying a dedup
// key that was accepted before returns ErrDuplicate: the unique index, not a
// read, decides which of two identical callbacks takes effect.
func (t Tx) InsertCallback(c *Callback) error {
	if c.ReceivedAt.IsZero() {
		c.ReceivedAt = now()
	}
	err := t.db.Create(c).Error
	if isDuplicate(err) {
		return fmt.Errorf("callback %s: %w", c.Kind, ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("callback %s: %w", c.Kind, err)
	}
	return nil
}

// Callbacks returns the audit records of an order's callbacks, oldest first.
func (t Tx) Callbacks(orderNo string) ([]Callback, error) {
	var out []Callback
	err := t.db.Omit("body").Where("order_no = ?", orderNo).Order("id").Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("callbacks %s: %w", orderNo, err)
	}
	return out, nil
}

// InsertCall records an outbound call.
func (t Tx) InsertCall(c *Call) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now()
	}
	if err := t.db.Create(c).Error; err != nil {
		return fmt.Errorf("call %s %s: %w", c.OrgCode, c.Endpoint, err)
	}
	return nil
}

// Calls returns the outbound calls made for an order, oldest first.
func (t Tx) Calls(orderNo string) ([]Call, error) {
	var out []Call
	if err := t.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("calls %s: %w", orderNo, err)
	}
	return out, nil
}

// InsertPush stores a project-state announcement and one pending delivery per
// institution, in the caller's transaction.
func (t Tx) InsertPush(p *ProjectStatePush, orgCodes []string) ([]Delivery, error) {
	if err := t.db.Create(p).Error; err != nil {
		return nil, fmt.Errorf("project state %s/%s: %w", p.ProjectCode, p.LotCode, err)
	}
	ds := make([]Delivery, len(orgCodes))
	ts := now()
	for i, org := range orgCodes {
		ds[i] = Delivery{PushID: p.ID, OrgCode: org, Status: DeliveryPending, NextAttemptAt: &ts}
	}
	if len(ds) > 0 {
		if err := t.db.Create(&ds).Error; err != nil {
			return nil, fmt.Errorf("deliveries of %d: %w", p.ID, err)
		}
	}
	return ds, nil
}

// Push returns a project-state announcement and its deliveries.
func (t Tx) Push(id int64) (*ProjectStatePush, []Delivery, error) {
	var p ProjectStatePush
	err := t.db.Take(&p, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, nil, fmt.Errorf("project state %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("project state %d: %w", id, err)
	}
	var ds []Delivery
	if err := t.db.Where("push_id = ?", id).Order("org_code").Find(&ds).Error; err != nil {
		return nil, nil, fmt.Errorf("deliveries of %d: %w", id, err)
	}
	return &p, ds, nil
}

// Delivery returns one delivery, or ErrNotFound.
func (t Tx) Delivery(id int64) (*Delivery, error) {
	var d Delivery
	err := t.db.Take(&d, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("delivery %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("delivery %d: %w", id, err)
	}
	return &d, nil
}

// UpdateDelivery sets columns of a delivery if it still satisfies where
// (column = value, nil for IS NULL); it reports whether it did.
func (t Tx) UpdateDelivery(id int64, set Changes, where Changes) (bool, error) {
	cols := map[string]any{"updated_at": now()}
	for k, v := range set {
		cols[k] = utc(v)
	}
	q := t.db.Model(&Delivery{}).Where("id = ?", id)
	res := whereAll(q, where).Updates(cols)
	if res.Error != nil {
		return false, fmt.Errorf("update delivery %d: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// CountDeliveries counts deliveries per status, for metrics.
func (t Tx) CountDeliveries() (map[string]int64, error) { return t.countBy(&Delivery{}, "status", "") }

// SetCallbackOutcome corrects the outcome of a callback row written in the
// same transaction (an accepted callback found to be late).
func (t Tx) SetCallbackOutcome(id int64, outcome, msg string) error {
	err := t.db.Model(&Callback{}).Where("id = ?", id).Updates(map[string]any{"outcome": outcome, "msg": msg}).Error
	if err != nil {
		return fmt.Errorf("callback %d outcome: %w", id, err)
	}
	return nil
}

// ClaimDelivery takes the lease of a pending, due delivery whose lease is
// free or ran out: a conditional UPDATE, so that of several instances
// exactly one gets it. It reports whether this caller did.
func (t Tx) ClaimDelivery(id int64, owner string, now, until time.Time) (bool, error) {
	res := t.db.Model(&Delivery{}).
		Where("id = ? AND status = ? AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)", id, DeliveryPending, now.UTC(), now.UTC()).
		Updates(map[string]any{"lease_owner": owner, "lease_until": until.UTC()})
	if res.Error != nil {
		return false, fmt.Errorf("claim delivery %d: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// Findings returns a day's reconciliation findings.
func (t Tx) Findings(date string) ([]Finding, error) {
	out := []Finding{}
	if err := t.db.Where("run_date = ?", date).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("findings %s: %w", date, err)
	}
	return out, nil
}
