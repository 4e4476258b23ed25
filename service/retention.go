package service

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
)

// RetentionStats is what one run of the retention job did.
type RetentionStats struct {
	Bodies         int64 // callback bodies emptied
	BodiesExamined int   // callbacks read from the time index
	Calls          int64 // outbound call records deleted
	CallsExamined  int
	Batches        int // statements pairs (read ids, write rows) run
	// More: the run stopped at its bound (retention.max_per_run, its
	// lease, a shutdown) with old rows left for the next run.
	More bool
}

// retention empties the bodies of the callbacks older than RetainBodies
// and deletes the outbound call records older than RetainCalls, batch by
// batch, until nothing older is left or the run's bound is reached: at
// most RetentionMaxPerRun rows of each, and half its lease's time. Orders,
// payments, events, files and the callbacks' rows are never touched
// (docs/decisions.md §42).
//
// One instance at a time runs it, under the job lease, as reconcile does;
// the lease is released at the end, since a second run right after finds
// nothing and reads almost nothing: the bodies' purge starts from the
// mark where the last one stopped, and deleted calls are gone.
func (j *Scheduler) retention(ctx context.Context) (JobStats, error) {
	s := j.s
	set := s.set
	if set.RetainBodies <= 0 && set.RetainCalls <= 0 {
		return JobStats{}, nil
	}
	if set.RetentionBatch < 1 || set.RetentionMaxPerRun < 1 {
		return JobStats{}, errf(EInternal, "", "retention: batch size and per-run bound must be set")
	}
	now := s.now()
	hold := max(set.Lease, 30*time.Minute)
	keep, got, err := j.jobLease(ctx, JobRetention, now, now.Add(hold))
	if err != nil {
		return JobStats{}, err
	}
	if !got {
		j.log.Debug("retention is running in another instance")
		return JobStats{Skipped: true}, nil
	}
	defer func() { keep(s.now()) }()

	// Stop well within the lease, so that no other instance starts while
	// this one still works.
	deadline := time.Now().Add(hold / 2)
	var rs RetentionStats
	if set.RetainBodies > 0 {
		err = j.purgeBodies(ctx, now.Add(-set.RetainBodies), deadline, &rs)
	}
	if err == nil && set.RetainCalls > 0 {
		err = j.purgeCalls(ctx, now.Add(-set.RetainCalls), deadline, &rs)
	}
	e := j.log.WithFields(logrus.Fields{"job": JobRetention, "bodies": rs.Bodies, "bodies_examined": rs.BodiesExamined,
		"calls": rs.Calls, "calls_examined": rs.CallsExamined, "batches": rs.Batches, "more": rs.More})
	switch {
	case err != nil:
		e.WithError(err).Error("retention stopped")
	case rs.Bodies > 0 || rs.Calls > 0:
		e.Info("retention done")
	default:
		e.Debug("retention done")
	}
	return JobStats{Claimed: rs.BodiesExamined + rs.CallsExamined, Done: int(rs.Bodies + rs.Calls)}, err
}

// purgeBodies empties the bodies of the callbacks received before cutoff,
// from the mark of the last run on, moving the mark forward after every
// batch: a run cut short resumes where it stopped, and no run reads again
// the callbacks emptied before it (but for the mark's own millisecond).
func (j *Scheduler) purgeBodies(ctx context.Context, cutoff, deadline time.Time, rs *RetentionStats) error {
	s := j.s
	var mark time.Time
	err := s.store.Do(model.WithOp(ctx, "retention"), func(q model.Queries) (err error) {
		mark, _, err = q.Mark(model.MarkRetentionBodies)
		return err
	})
	if err != nil {
		return storeErr("retention mark", err)
	}
	if !mark.Before(cutoff) {
		return nil
	}
	cur := model.RetentionCursor{At: mark}
	for n := 0; ; {
		if j.retentionBound(ctx, n, deadline, rs) {
			return nil
		}
		size := min(s.set.RetentionBatch, s.set.RetentionMaxPerRun-n)
		var b model.RetentionBatch
		err := s.store.Do(model.WithOp(ctx, "retention"), func(q model.Queries) (err error) {
			b, err = q.PurgeCallbackBodies(cur, cutoff, size)
			return err
		})
		if err != nil {
			return storeErr("retention of callback bodies", err)
		}
		n += b.Examined
		rs.BodiesExamined += b.Examined
		rs.Bodies += b.Purged
		if b.Examined > 0 {
			rs.Batches++
		}
		cur = b.Next
		done := b.Examined < size
		// Done: every callback before the cutoff is emptied, and those
		// received from now on are newer than it.
		next := cur.At
		if done {
			next = cutoff
		}
		if next.After(mark) {
			err = s.store.Do(model.WithOp(ctx, "retention"), func(q model.Queries) error {
				return q.SetMark(model.MarkRetentionBodies, next)
			})
			if err != nil {
				return storeErr("retention mark", err)
			}
			mark = next
		}
		if done {
			return nil
		}
		retentionPause(ctx, s.set.RetentionPause)
	}
}

// purgeCalls deletes the outbound call records made before cutoff. What
// is deleted is gone from the index, so each batch reads what it deletes.
func (j *Scheduler) purgeCalls(ctx context.Context, cutoff, deadline time.Time, rs *RetentionStats) error {
	s := j.s
	for n := 0; ; {
		if j.retentionBound(ctx, n, deadline, rs) {
			return nil
		}
		size := min(s.set.RetentionBatch, s.set.RetentionMaxPerRun-n)
		var b model.RetentionBatch
		err := s.store.Do(model.WithOp(ctx, "retention"), func(q model.Queries) (err error) {
			b, err = q.PurgeCalls(cutoff, size)
			return err
		})
		if err != nil {
			return storeErr("retention of calls", err)
		}
		n += b.Examined
		rs.CallsExamined += b.Examined
		rs.Calls += b.Purged
		if b.Examined > 0 {
			rs.Batches++
		}
		if b.Examined < size {
			return nil
		}
		retentionPause(ctx, s.set.RetentionPause)
	}
}

// retentionBound reports whether the run must stop before its next batch,
// with old rows possibly left (rs.More): n rows done already, its time
// up, a shutdown.
func (j *Scheduler) retentionBound(ctx context.Context, n int, deadline time.Time, rs *RetentionStats) bool {
	if n >= j.s.set.RetentionMaxPerRun || time.Now().After(deadline) || ctx.Err() != nil || j.stopping.Load() {
		rs.More = true
		return true
	}
	return false
}

// retentionPause lets other writers in between two batches.
func retentionPause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
