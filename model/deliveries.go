package model

import (
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Project-state announcements (xmstate) and their deliveries, one per
// institution, kept until each is taken.

// InsertPush stores a project-state announcement and one pending delivery per
// institution, in the caller's transaction, and returns the deliveries by
// orgcode. Their IDs are read back: after a multi-row insert GORM takes
// them from INSERT … RETURNING on MariaDB, but on MySQL and TiDB counts
// them from the first by one, which they are not where
// auto_increment_increment is more than one (Group Replication's
// multi-primary mode, a MySQL cluster of several writers) or ids come in
// per-server ranges (TiDB).
func (q Queries) InsertPush(p *ProjectStatePush, orgCodes []string) ([]Delivery, error) {
	if err := q.db.Create(p).Error; err != nil {
		return nil, fmt.Errorf("project state %s/%s: %w", p.ProjectCode, p.LotCode, err)
	}
	ds := make([]Delivery, len(orgCodes))
	ts := now()
	for i, org := range orgCodes {
		ds[i] = Delivery{PushID: p.ID, OrgCode: org, Status: DeliveryPending, NextAttemptAt: &ts}
	}
	if len(ds) > 0 {
		if err := q.db.Create(&ds).Error; err != nil {
			return nil, fmt.Errorf("deliveries of %d: %w", p.ID, err)
		}
		ds = nil
		if err := q.db.Where("push_id = ?", p.ID).Order("org_code").Find(&ds).Error; err != nil {
			return nil, fmt.Errorf("deliveries of %d: %w", p.ID, err)
		}
	}
	return ds, nil
}

// Push returns a project-state announcement and its deliveries.
func (q Queries) Push(id int64) (*ProjectStatePush, []Delivery, error) {
	var p ProjectStatePush
	err := q.db.Take(&p, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, nil, fmt.Errorf("project state %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("project state %d: %w", id, err)
	}
	var ds []Delivery
	if err := q.db.Where("push_id = ?", id).Order("org_code").Find(&ds).Error; err != nil {
		return nil, nil, fmt.Errorf("deliveries of %d: %w", id, err)
	}
	return &p, ds, nil
}

// Delivery returns one delivery, or ErrNotFound.
func (q Queries) Delivery(id int64) (*Delivery, error) {
	var d Delivery
	err := q.db.Take(&d, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("delivery %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("delivery %d: %w", id, err)
	}
	return &d, nil
}

// DeliveryAttempt is what one attempt of a delivery leaves.
type DeliveryAttempt struct {
	// Attempts made so far; a try the circuit breaker refused is not one.
	Attempts int
	// Status after it: DeliveryDelivered, DeliveryPending (due again at
	// NextAt) or DeliveryDead (no attempt left).
	Status    string
	NextAt    time.Time
	LastError string
	At        time.Time // when it was delivered
}

// RecordDeliveryAttempt stores an attempt's result and gives the claim's
// lease up, if token still holds it; it reports whether it did.
func (q Queries) RecordDeliveryAttempt(id int64, token string, a DeliveryAttempt) (bool, error) {
	cols := map[string]any{"attempts": a.Attempts, "status": a.Status, "last_error": a.LastError,
		"lease_owner": "", "lease_until": nil, "next_attempt_at": nil, "updated_at": now()}
	switch a.Status {
	case DeliveryPending:
		cols["next_attempt_at"] = a.NextAt.UTC()
	case DeliveryDelivered:
		cols["delivered_at"] = a.At.UTC()
	}
	res := q.db.Model(&Delivery{}).Where("id = ? AND lease_owner = ?", id, token).Updates(cols)
	if res.Error != nil {
		return false, fmt.Errorf("delivery %d attempt: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// RearmDelivery makes a dead delivery pending again, due at `at`, its
// attempts kept; it reports false when the delivery was not dead.
func (q Queries) RearmDelivery(id int64, at time.Time) (bool, error) {
	res := q.db.Model(&Delivery{}).Where("id = ? AND status = ?", id, DeliveryDead).
		Updates(map[string]any{"status": DeliveryPending, "next_attempt_at": at.UTC(), "last_error": "", "updated_at": now()})
	if res.Error != nil {
		return false, fmt.Errorf("re-arm delivery %d: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// CountDeliveries counts deliveries per status, for metrics.
func (q Queries) CountDeliveries() (map[string]int64, error) {
	return q.countBy(&Delivery{}, "status", "")
}

// ClaimDelivery takes the lease of a pending, due delivery whose lease is
// free or ran out: a conditional UPDATE, so that of several instances
// exactly one gets it. It reports whether this caller did.
func (q Queries) ClaimDelivery(id int64, owner string, now, until time.Time) (bool, error) {
	res := q.db.Model(&Delivery{}).
		Where("id = ? AND status = ? AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)", id, DeliveryPending, now.UTC(), now.UTC()).
		UpdateColumns(map[string]any{"lease_owner": owner, "lease_until": until.UTC()})
	if res.Error != nil {
		return false, fmt.Errorf("claim delivery %d: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}
