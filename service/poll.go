package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
)

// pollPending queries the orders in processing whose next check is due and
// applies the answers (docs/decisions.md §6). Exactly one query per due
// time: an order's lease is given up in the same UPDATE that moves its next
// check on, so no other instance can take it between the two.
func (j *Scheduler) pollPending(ctx context.Context) (JobStats, error) {
	return run(ctx, j, j.orders(JobPollPending, model.QueuePoll), j.pollOne)
}

// pollOne is what polling does to one order: an order still processing
// long after its bid opening is flagged stale instead; otherwise its
// queryurl is asked, the answer applied (query), and its next check moved
// on (advancePoll).
func (j *Scheduler) pollOne(ctx context.Context, c claimedOrder) (rowResult, finish) {
	s, o := j.s, c.o
	if s.now().After(o.OpeningAt.Add(s.set.StaleAfterOpening)) {
		return j.markStale(ctx, c), nil
	}
	inst, err := j.institution(o.OrgCode)
	if err == nil && o.QueryURL == "" {
		err = errors.New("the order has no queryurl")
	}
	if err == nil {
		cctx, cancel, ok := j.callContext(ctx, c, inst)
		if !ok {
			j.releaseOrder(c)
			return rowReleased, nil
		}
		err = s.query(cctx, inst, o)
		cancel()
		if err != nil && ctx.Err() != nil {
			// Shutdown cut the call short: no attempt to count against the
			// institution; the order stays due for whoever comes next.
			j.releaseOrder(c)
			return rowReleased, nil
		}
	}
	return 0, func() rowResult { return j.advancePoll(ctx, c, err) }
}

// advancePoll moves an order's next check on after its query (answered or
// failed, err) and gives its lease up, in one UPDATE conditioned on the
// lease: no other instance can take the order between the two.
func (j *Scheduler) advancePoll(ctx context.Context, c claimedOrder, err error) rowResult {
	s, o := j.s, c.o
	// The wait after the n-th query is the (n+1)-th step: the first step
	// was waited between the apply and the first query.
	attempts := o.CheckAttempts + 1
	next := s.now().Add(backoff(s.set.PollBackoff, attempts+1))
	sctx, cancel := storeContext(ctx)
	defer cancel()
	var advanced bool
	uerr := s.store.Do(model.WithOp(sctx, "poll"), func(q model.Queries) (err error) {
		advanced, err = q.AdvancePoll(o.OrderNo, c.c.token, attempts, next)
		return err
	})
	if uerr != nil {
		// The lease runs out and the order is queried again then.
		j.log.WithError(uerr).WithField("orderno", o.OrderNo).Error("poll back-off not stored")
		return rowFailed
	}
	if !advanced {
		// The answer (or a callback meanwhile) moved the order on, which
		// set its own next check; only the lease is left to give back.
		j.releaseOrder(c)
	}
	if err != nil {
		j.logFailure(JobPollPending, o.OrderNo, err)
		return rowFailed
	}
	return rowDone
}

// markStale stops polling an order still processing long after its bid
// opening and flags it for operators; a later notice still moves it.
func (j *Scheduler) markStale(ctx context.Context, c claimedOrder) rowResult {
	s, o := j.s, c.o
	sctx, cancel := storeContext(ctx)
	defer cancel()
	flagged := false
	err := s.store.InTx(model.WithOp(sctx, "stale"), func(tx model.Queries) error {
		ok, err := tx.UpdateOrder(o.OrderNo, model.OrderChange{}.Flag(model.FlagStale).NotDue().FreeLease(),
			model.OrderGuard{Token: c.c.token, Status: []model.Status{model.StatusProcessing}})
		if flagged = ok; err != nil || !ok {
			return err
		}
		return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "stale",
			Detail: fmt.Sprintf("still processing %s after the bid opening; polling stopped, flagged for operators",
				s.set.StaleAfterOpening)})
	})
	if err != nil {
		j.log.WithError(err).WithField("orderno", o.OrderNo).Error("stale flag not stored")
		return rowFailed
	}
	if !flagged {
		j.releaseOrder(c)
		return rowReleased
	}
	j.log.WithFields(logrus.Fields{"orderno": o.OrderNo, "institution": o.OrgCode, "kbttime": o.OpeningAt}).
		Warn("order stale: still processing after the bid opening; polling stopped")
	return rowFlagged
}

// institution returns the enabled institution of an order, or why there is none.
func (j *Scheduler) institution(org string) (*Institution, error) {
	inst, ok := j.s.insts.ByOrgCode(org)
	if !ok || inst.Disabled {
		return nil, fmt.Errorf("institution %s is not configured or is disabled", org)
	}
	return inst, nil
}

// logFailure logs a row's failure. A failed call was logged already, with
// its kind, when it was recorded (RecordCall), so it is only noted here at
// debug level; anything else (storage, a conflicting answer) is a warning.
func (j *Scheduler) logFailure(job, orderNo string, err error) {
	e := j.log.WithFields(logrus.Fields{"job": job, "orderno": orderNo}).WithError(err)
	if ErrorCode(err) == EUpstream {
		e.Debug("job call failed; back-off advanced")
		return
	}
	e.Warn("job work failed; back-off advanced")
}
