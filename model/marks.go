package model

import (
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// JobMark is where a job that works through history by time stopped last
// (the incremental reconciliation, the retention job): its next run starts
// there instead of at the beginning of time.
type JobMark struct {
	Name      string `gorm:"primaryKey"`
	MarkAt    time.Time
	UpdatedAt time.Time
}

// TableName keeps the table named as the migration does.
func (JobMark) TableName() string { return "job_marks" }

// Mark returns job name's mark; ok is false when it has none yet (the job
// never finished a run).
func (q Queries) Mark(name string) (at time.Time, ok bool, err error) {
	var m JobMark
	err = q.db.Where("name = ?", name).Take(&m).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("mark %s: %w", name, err)
	}
	return m.MarkAt.UTC(), true, nil
}

// SetMark stores job name's mark. Marks only move forward: a run that
// finishes after a later one (two instances, a slow store) leaves the
// later mark in place.
func (q Queries) SetMark(name string, at time.Time) error {
	at = at.UTC().Truncate(time.Millisecond)
	res := q.db.Model(&JobMark{}).Where("name = ? AND mark_at < ?", name, at).
		Updates(map[string]any{"mark_at": at, "updated_at": now()})
	if res.Error != nil {
		return fmt.Errorf("mark %s: %w", name, res.Error)
	}
	if res.RowsAffected == 1 {
		return nil
	}
	err := q.db.Create(&JobMark{Name: name, MarkAt: at, UpdatedAt: now()}).Error
	if err != nil && !isDuplicate(err) { // a mark at or past `at` is there already
		return fmt.Errorf("mark %s: %w", name, err)
	}
	return nil
}
