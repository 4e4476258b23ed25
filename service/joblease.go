package service

import (
	"context"
	"time"

	"github.com/procurement/gateway/model"
)

// jobLease takes the lease of job (table job_leases) until `until`, so that
// of the instances whose schedules fire together one does a job that works
// on everything at once (the reconciliation, the retention). got false:
// another instance holds it. keep moves the end of the lease, to now to
// release it or later to keep the others off a while; a failure there is
// only logged, as the lease runs out by itself.
func (j *Scheduler) jobLease(ctx context.Context, job string, now, until time.Time) (keep func(until time.Time), got bool, err error) {
	s := j.s
	token := s.claimToken(job)
	err = s.store.Do(model.WithOp(ctx, "job_lease"), func(q model.Queries) (err error) {
		got, err = q.AcquireJobLease(job, token, now, until)
		return err
	})
	if err != nil {
		return nil, false, storeErr(job+" lease", err)
	}
	if !got {
		return nil, false, nil
	}
	keep = func(until time.Time) {
		sctx, cancel := storeContext(ctx)
		defer cancel()
		lerr := s.store.Do(model.WithOp(sctx, "job_lease"), func(q model.Queries) error {
			_, err := q.SetJobLease(job, token, until)
			return err
		})
		if lerr != nil {
			j.log.WithError(lerr).WithField("job", job).Warn("job lease not updated; it runs out by itself")
		}
	}
	return keep, true, nil
}
