package service

import (
	"context"

	"github.com/procurement/gateway/model"
)

// recoverApplying re-sends the applies that got no definite answer, with
// the same orderno, on the apply back-off; sendApply stores the answer,
// counts the attempt and flags the order apply_unconfirmed after the last
// one, after which it is no longer claimed.
func (j *Scheduler) recoverApplying(ctx context.Context) (JobStats, error) {
	return run(ctx, j, j.orders(JobRecoverApplying, model.QueueApply), whole(j.recoverOne))
}

func (j *Scheduler) recoverOne(ctx context.Context, c claimedOrder) rowResult {
	s, o := j.s, c.o
	inst, err := j.institution(o.OrgCode)
	if err != nil {
		// Nobody to send it to: an attempt without an answer like any other.
		sctx, cancel := storeContext(ctx)
		defer cancel()
		s.applyAttemptFailed(sctx, o, model.OrderGuard{Token: c.c.token})
		j.logFailure(JobRecoverApplying, o.OrderNo, err)
		return rowFailed
	}
	cctx, cancel, ok := j.callContext(ctx, c, inst)
	if !ok {
		j.releaseOrder(c)
		return rowReleased
	}
	st, err := s.sendApply(cctx, inst, o)
	cancel()
	// sendApply gives the lease up with what it stores; when storing failed
	// it is still ours to give back.
	j.releaseOrder(c)
	switch {
	case err == nil && st == ApplyAccepted:
		return rowDone
	case ErrorCode(err) == EUpstream:
		return rowDone // refused: a definite answer, the order is apply_rejected
	case err == nil:
		return rowFailed // no definite answer again; sendApply advanced the back-off
	default:
		j.logFailure(JobRecoverApplying, o.OrderNo, err)
		return rowFailed
	}
}
