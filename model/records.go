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
func (q Queries) InsertFile(f *GuaranteeFile) error {
	if f.CreatedAt.IsZero() {
		f.CreatedAt = now()
	}
	var err error
	if conn, ok := q.db.Statement.ConnPool.(interface {
		PrepareContext(context.Context, string) (*sql.Stmt, error)
	}); ok && q.db.Dialector.Name() == "mysql" {
		err = q.insertFilePrepared(conn, f)
	} else {
		err = q.db.Create(f).Error
	}
	if isDuplicate(err) {
		return fmt.Errorf("file %s: %w", f.OrderNo, ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("file %s: %w", f.OrderNo, err)
	}
	return nil
}

func (q Queries) insertFilePrepared(conn interface {
	PrepareContext(context.Context, string) (*sql.Stmt, error)
}, f *GuaranteeFile) error {
	ctx := q.db.Statement.Context
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
func (q Queries) File(orderNo string) (*GuaranteeFile, error) {
	return q.file(orderNo, "*")
}

// FileInfo returns an order's PDF without its bytes, or ErrNotFound.
func (q Queries) FileInfo(orderNo string) (*GuaranteeFile, error) {
	return q.file(orderNo, fileMeta)
}

// FileInfos returns the PDFs (without bytes) of those orders that have one,
// by orderno: one statement for a page of orders, not one per order.
func (q Queries) FileInfos(orderNos []string) (map[string]*GuaranteeFile, error) {
	out := make(map[string]*GuaranteeFile, len(orderNos))
	if len(orderNos) == 0 {
		return out, nil
	}
	var files []GuaranteeFile
	if err := q.db.Select(fileMeta).Where("order_no IN ?", orderNos).Find(&files).Error; err != nil {
		return nil, fmt.Errorf("files of %d orders: %w", len(orderNos), err)
	}
	for i := range files {
		out[files[i].OrderNo] = &files[i]
	}
	return out, nil
}

func (q Queries) file(orderNo, cols string) (*GuaranteeFile, error) {
	var f GuaranteeFile
	err := q.db.Select(cols).Where("order_no = ?", orderNo).Take(&f).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("file %s: %w", orderNo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", orderNo, err)
	}
	return &f, nil
}

// FilesBySha256 returns the files (without bytes) with that digest: 验真.
func (q Queries) FilesBySha256(sum string) ([]GuaranteeFile, error) {
	var out []GuaranteeFile
	if err := q.db.Select(fileMeta).Where("sha256 = ?", sum).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("files by sha256: %w", err)
	}
	return out, nil
}

// InsertCallback records a received callback. A callback carrying a dedup
// key that was accepted before returns ErrDuplicate: the unique index, not a
// read, decides which of two identical callbacks takes effect.
func (q Queries) InsertCallback(c *Callback) error {
	if c.ReceivedAt.IsZero() {
		c.ReceivedAt = now()
	}
	err := q.db.Create(c).Error
	if isDuplicate(err) {
		return fmt.Errorf("callback %s: %w", c.Kind, ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("callback %s: %w", c.Kind, err)
	}
	return nil
}

// SetCallbackResult corrects the result of a callback row written in the
// same transaction (an accepted callback found to be late).
func (q Queries) SetCallbackResult(id int64, result, msg string) error {
	err := q.db.Model(&Callback{}).Where("id = ?", id).Updates(map[string]any{"result": result, "msg": msg}).Error
	if err != nil {
		return fmt.Errorf("callback %d result: %w", id, err)
	}
	return nil
}

// CallbackFilter narrows ListCallbacks; empty fields do not filter.
type CallbackFilter struct {
	OrgCode string
	Kind    string
	Result  string // Callback*
	Errcode string
	OrderNo string
	// From and To bound received_at: [from, to); zero is open.
	From, To time.Time
	BeforeID int64 // the cursor: only callbacks older than this one
	Limit    int
}

// ListCallbacks returns the audit records of callbacks, newest first,
// without their bodies.
func (q Queries) ListCallbacks(f CallbackFilter) ([]Callback, error) {
	db := q.db.Model(&Callback{}).Omit("body")
	// In a fixed order: the same filters make the same statement (one
	// digest in performance_schema, one plan to EXPLAIN).
	for _, c := range []struct{ col, v string }{{"org_code", f.OrgCode}, {"kind", f.Kind}, {"result", f.Result},
		{"errcode", f.Errcode}, {"order_no", f.OrderNo}} {
		if c.v != "" {
			db = db.Where(c.col+" = ?", c.v)
		}
	}
	// Milliseconds, as the column: a bound with nanoseconds is no DATETIME
	// constant to MariaDB, which then reads every callback (dbTime).
	if !f.From.IsZero() {
		db = db.Where("received_at >= ?", dbTime(f.From))
	}
	if !f.To.IsZero() {
		db = db.Where("received_at < ?", dbTime(f.To))
	}
	if f.BeforeID > 0 {
		db = db.Where("id < ?", f.BeforeID)
	}
	var out []Callback
	if err := db.Order("id DESC").Limit(f.Limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list callbacks: %w", err)
	}
	return out, nil
}

// Callback returns one callback's audit record with its body (still
// encrypted, as received), or ErrNotFound.
func (q Queries) Callback(id int64) (*Callback, error) {
	var c Callback
	err := q.db.Take(&c, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("callback %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("callback %d: %w", id, err)
	}
	return &c, nil
}

// Callbacks returns the audit records of an order's callbacks, oldest first.
func (q Queries) Callbacks(orderNo string) ([]Callback, error) {
	var out []Callback
	err := q.db.Omit("body").Where("order_no = ?", orderNo).Order("id").Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("callbacks %s: %w", orderNo, err)
	}
	return out, nil
}

// InsertCall records an outbound call.
func (q Queries) InsertCall(c *Call) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now()
	}
	if err := q.db.Create(c).Error; err != nil {
		return fmt.Errorf("call %s %s: %w", c.OrgCode, c.Endpoint, err)
	}
	return nil
}

// Calls returns the outbound calls made for an order, oldest first.
func (q Queries) Calls(orderNo string) ([]Call, error) {
	var out []Call
	if err := q.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("calls %s: %w", orderNo, err)
	}
	return out, nil
}

// Findings returns a day's reconciliation findings.
func (q Queries) Findings(date string) ([]Finding, error) {
	out := []Finding{}
	if err := q.db.Where("run_date = ?", date).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("findings %s: %w", date, err)
	}
	return out, nil
}
