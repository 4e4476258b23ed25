package model

import (
	"context"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Statements records the SQL that a Queries runs, with its arguments
// written in, for the tools that show what a query costs: the plan test
// (model/explain_test.go) runs EXPLAIN on each, and the scale benchmark
// prints them beside the rows they examined. Never used when serving:
// the text holds the values, personal data included.
type Statements struct {
	mu   sync.Mutex
	list []string
}

// Recording returns q writing every statement it runs into rec as well.
func (q Queries) Recording(rec *Statements) Queries {
	return Queries{db: q.db.Session(&gorm.Session{Logger: recorder{rec}})}
}

// Take returns the statements recorded since the last Take and forgets them.
func (r *Statements) Take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.list
	r.list = nil
	return out
}

// recorder is a GORM logger that keeps the statements and logs nothing.
type recorder struct{ rec *Statements }

func (r recorder) LogMode(logger.LogLevel) logger.Interface { return r }
func (recorder) Info(context.Context, string, ...any)       {}
func (recorder) Warn(context.Context, string, ...any)       {}
func (recorder) Error(context.Context, string, ...any)      {}
func (r recorder) Trace(_ context.Context, _ time.Time, fc func() (string, int64), _ error) {
	sql, _ := fc()
	r.rec.mu.Lock()
	r.rec.list = append(r.rec.list, sql)
	r.rec.mu.Unlock()
}
