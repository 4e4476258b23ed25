package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
)

// pullFlagAfter: after this many failed pulls an order is flagged
// pull_failed for operators; the pull job keeps trying, hourly at most.
const pullFlagAfter = 10

// claimedOrder is an order whose lease this instance holds under token
// until `until`.
type claimedOrder struct {
	o     *model.Order
	token string
	until time.Time
}

// orderJob claims the due orders of queue q in batches and runs each
// through work. Only orders due when the run started are taken, so a run
// ends even when the institution answers faster than orders fall due.
func (j *Scheduler) orderJob(ctx context.Context, job string, q model.OrderQueue,
	work func(context.Context, claimedOrder) (rowOutcome, finish)) (JobStats, error) {
	dueBy := j.s.now()
	fetch := func(ctx context.Context) ([]claimedOrder, error) {
		now := j.s.now()
		token, until := j.token(job), now.Add(j.lease())
		orders, err := j.s.store.With(ctx).ClaimOrders(q, token, now, dueBy, until, j.batchSize())
		if err != nil {
			return nil, err
		}
		out := make([]claimedOrder, len(orders))
		for i := range orders {
			out[i] = claimedOrder{o: &orders[i], token: token, until: until}
		}
		return out, nil
	}
	org := func(c claimedOrder) string { return c.o.OrgCode }
	return pipeline(ctx, j, fetch, org, work, j.releaseOrder)
}

// releaseOrder hands an order back unworked: due as it was, free at once.
func (j *Scheduler) releaseOrder(c claimedOrder) {
	ctx, cancel := storeContext(j.ctx)
	defer cancel()
	if _, err := j.s.store.With(ctx).ReleaseOrders(c.token, []int64{c.o.ID}); err != nil {
		j.log.WithError(err).WithField("orderno", c.o.OrderNo).Warn("lease not released; it runs out by itself")
	}
}

// retryTransient runs a write again when the database refused it over a
// lock conflict (a deadlock with another instance's claim, say). Every such
// write is conditioned on the lease token, so repeating it is safe.
func retryTransient(write func() error) error {
	var err error
	for i := range 3 {
		if err = write(); !model.Transient(err) {
			return err
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	return err
}

// whole adapts a row's work that stores its own outcome before it returns
// (sendApply, pull, deliver do), leaving nothing to finish.
func whole[T any](work func(context.Context, T) rowOutcome) func(context.Context, T) (rowOutcome, finish) {
	return func(ctx context.Context, it T) (rowOutcome, finish) { return work(ctx, it), nil }
}

// storeContext bounds the writes that follow a call: they are made even
// when shutdown has cancelled the run, so that an answer received is kept.
func storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// callContext bounds a call by the order's lease, keeping a margin to store
// the answer while the lease still holds. It reports false when too little
// of the lease is left for one attempt (the order waited behind others):
// the order is then handed back rather than called on a lease that another
// instance may take over mid-call.
func (j *Scheduler) callContext(ctx context.Context, c claimedOrder, inst *Institution) (context.Context, context.CancelFunc, bool) {
	margin := min(j.lease()/10, 5*time.Second)
	deadline := c.until.Add(-margin)
	need := min(inst.Timeout, j.lease()/2)
	if time.Until(deadline) < need {
		return nil, nil, false
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	return cctx, cancel, true
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

// pollPending queries the orders in processing whose next check is due and
// applies the answers (DECISIONS.md §6). Exactly one query per due time: an
// order's lease is given up in the same UPDATE that moves its next check
// on, so no other instance can take it between the two.
func (j *Scheduler) pollPending(ctx context.Context) (JobStats, error) {
	return j.orderJob(ctx, JobPollPending, model.QueuePoll, j.pollOne)
}

func (j *Scheduler) pollOne(ctx context.Context, c claimedOrder) (rowOutcome, finish) {
	s, o := j.s, c.o
	if s.set.StaleAfterOpening > 0 && s.now().After(o.OpeningAt.Add(s.set.StaleAfterOpening)) {
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
			return outReleased, nil
		}
		err = s.query(cctx, inst, o)
		cancel()
		if err != nil && ctx.Err() != nil {
			// Shutdown cut the call short: no attempt to count against the
			// institution; the order stays due for whoever comes next.
			j.releaseOrder(c)
			return outReleased, nil
		}
	}
	return 0, func() rowOutcome { return j.advancePoll(ctx, c, err) }
}

// advancePoll moves an order's next check on after its query (answered or
// failed, err) and gives its lease up, in one UPDATE conditioned on the
// lease: no other instance can take the order between the two.
func (j *Scheduler) advancePoll(ctx context.Context, c claimedOrder, err error) rowOutcome {
	s, o := j.s, c.o
	// The wait after the n-th query is the (n+1)-th step: the first step
	// was waited between the apply and the first query.
	attempts := o.CheckAttempts + 1
	set := model.Changes{"check_attempts": attempts, "next_check_at": s.now().Add(backoff(s.set.PollBackoff, attempts+1)),
		"lease_owner": "", "lease_until": nil}
	sctx, cancel := storeContext(ctx)
	defer cancel()
	var advanced bool
	uerr := retryTransient(func() (err error) {
		advanced, err = s.store.With(sctx).UpdateOrder(o.OrderNo, set,
			model.Changes{"lease_owner": c.token, "status": string(model.StatusProcessing)})
		return err
	})
	if uerr != nil {
		// The lease runs out and the order is queried again then.
		j.log.WithError(uerr).WithField("orderno", o.OrderNo).Error("poll back-off not stored")
		return outFailed
	}
	if !advanced {
		// The answer (or a callback meanwhile) moved the order on, which
		// set its own next check; only the lease is left to give back.
		j.releaseOrder(c)
	}
	if err != nil {
		j.logFailure(JobPollPending, o.OrderNo, err)
		return outFailed
	}
	return outDone
}

// markStale stops polling an order still processing long after its bid
// opening and flags it for operators; a later notice still moves it.
func (j *Scheduler) markStale(ctx context.Context, c claimedOrder) rowOutcome {
	s, o := j.s, c.o
	sctx, cancel := storeContext(ctx)
	defer cancel()
	flagged := false
	err := retryTransient(func() error {
		return s.store.InTx(sctx, func(tx model.Tx) error {
			flagged = false
			ok, err := tx.UpdateOrder(o.OrderNo, model.Changes{"flag": model.FlagStale, "next_check_at": nil,
				"lease_owner": "", "lease_until": nil}, model.Changes{"lease_owner": c.token, "status": string(model.StatusProcessing)})
			if err != nil || !ok {
				return err
			}
			flagged = true
			return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "stale",
				Detail: fmt.Sprintf("still processing %s after the bid opening; polling stopped, flagged for operators",
					s.set.StaleAfterOpening)})
		})
	})
	if err != nil {
		j.log.WithError(err).WithField("orderno", o.OrderNo).Error("stale flag not stored")
		return outFailed
	}
	if !flagged {
		j.releaseOrder(c)
		return outReleased
	}
	j.log.WithFields(logrus.Fields{"orderno": o.OrderNo, "institution": o.OrgCode, "kbttime": o.OpeningAt}).
		Warn("order stale: still processing after the bid opening; polling stopped")
	return outFlagged
}

// recoverApplying re-sends the applies whose rowOutcome is unknown, with the
// same orderno, on the apply back-off; sendApply stores the answer, counts
// the attempt and flags the order apply_unconfirmed after the last one,
// after which it is no longer claimed.
func (j *Scheduler) recoverApplying(ctx context.Context) (JobStats, error) {
	return j.orderJob(ctx, JobRecoverApplying, model.QueueApply, whole(j.recoverOne))
}

func (j *Scheduler) recoverOne(ctx context.Context, c claimedOrder) rowOutcome {
	s, o := j.s, c.o
	inst, err := j.institution(o.OrgCode)
	if err != nil {
		// Nobody to send it to: an attempt without an answer like any other.
		sctx, cancel := storeContext(ctx)
		defer cancel()
		s.applyAttemptFailed(sctx, o, model.Changes{"lease_owner": c.token})
		j.logFailure(JobRecoverApplying, o.OrderNo, err)
		return outFailed
	}
	cctx, cancel, ok := j.callContext(ctx, c, inst)
	if !ok {
		j.releaseOrder(c)
		return outReleased
	}
	res, err := s.sendApply(cctx, inst, o)
	cancel()
	// sendApply gives the lease up with what it stores; when storing failed
	// it is still ours to give back.
	j.releaseOrder(c)
	switch {
	case err == nil && res == ApplyCreated:
		return outDone
	case ErrorCode(err) == EUpstream:
		return outDone // refused: a definite answer, the order is apply_rejected
	case err == nil:
		return outFailed // rowOutcome unknown again; sendApply advanced the back-off
	default:
		j.logFailure(JobRecoverApplying, o.OrderNo, err)
		return outFailed
	}
}

// pullFiles fetches the PDFs of issued orders whose file is not stored yet,
// through pullurl with baohanno = bhno; the client checks that the answer is
// a PDF and pull stores it once with its sha256.
func (j *Scheduler) pullFiles(ctx context.Context) (JobStats, error) {
	return j.orderJob(ctx, JobPullFiles, model.QueuePull, whole(j.pullOne))
}

func (j *Scheduler) pullOne(ctx context.Context, c claimedOrder) rowOutcome {
	s, o := j.s, c.o
	inst, err := j.institution(o.OrgCode)
	if err == nil {
		cctx, cancel, ok := j.callContext(ctx, c, inst)
		if !ok {
			j.releaseOrder(c)
			return outReleased
		}
		err = s.pull(cctx, inst, o)
		cancel()
		if err != nil && ctx.Err() != nil {
			j.releaseOrder(c)
			return outReleased
		}
	}
	sctx, cancel := storeContext(ctx)
	defer cancel()
	if err == nil {
		if ok, uerr := s.store.With(sctx).UpdateOrder(o.OrderNo, model.Changes{"check_attempts": 0, "next_check_at": nil,
			"lease_owner": "", "lease_until": nil}, model.Changes{"lease_owner": c.token}); uerr != nil || !ok {
			j.releaseOrder(c)
		}
		return outDone
	}
	attempts := o.CheckAttempts + 1
	wait := backoff(s.set.PollBackoff, attempts)
	set := model.Changes{"check_attempts": attempts, "lease_owner": "", "lease_until": nil}
	flagNow := attempts >= pullFlagAfter && o.Flag != model.FlagPullFailed
	if attempts >= pullFlagAfter {
		set["flag"] = model.FlagPullFailed
		wait = max(wait, time.Hour)
	}
	set["next_check_at"] = s.now().Add(wait)
	uerr := retryTransient(func() error {
		return s.store.InTx(sctx, func(tx model.Tx) error {
			ok, err := tx.UpdateOrder(o.OrderNo, set, model.Changes{"lease_owner": c.token, "file_pending": true})
			if err != nil || !ok || !flagNow {
				return err
			}
			return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "pull_failed",
				Detail: fmt.Sprintf("the guarantee PDF could not be pulled in %d attempts; still tried hourly", attempts)})
		})
	})
	if uerr != nil {
		j.log.WithError(uerr).WithField("orderno", o.OrderNo).Error("pull back-off not stored")
	}
	j.releaseOrder(c) // a no-op unless the update did not match
	if flagNow {
		j.log.WithFields(logrus.Fields{"orderno": o.OrderNo, "institution": o.OrgCode, "attempts": attempts}).
			Warn("guarantee PDF still not pulled; flagged pull_failed")
	}
	j.logFailure(JobPullFiles, o.OrderNo, err)
	return outFailed
}

// dueDelivery is a delivery that was due when read, with its announcement.
type dueDelivery struct {
	d    model.Delivery
	push *model.ProjectStatePush
}

// deliverOutbox attempts the project-state deliveries that are due. Each is
// claimed on its own by deliver (ClaimDelivery), which also stores the
// rowOutcome: delivered, the next attempt on the redelivery back-off (or the
// institution's Retry-After when longer), or dead after the last. A
// delivery whose instance died mid-attempt is due again once its lease ran
// out.
func (j *Scheduler) deliverOutbox(ctx context.Context) (JobStats, error) {
	dueBy := j.s.now()
	var after int64
	pushes := map[int64]*model.ProjectStatePush{}
	fetch := func(ctx context.Context) ([]dueDelivery, error) {
		st := j.s.store.With(ctx)
		ds, err := st.DueDeliveries(j.s.now(), dueBy, after, j.batchSize())
		if err != nil || len(ds) == 0 {
			return nil, err
		}
		after = ds[len(ds)-1].ID
		out := make([]dueDelivery, 0, len(ds))
		for _, d := range ds {
			p := pushes[d.PushID]
			if p == nil {
				if p, _, err = st.Push(d.PushID); err != nil {
					return nil, err
				}
				pushes[d.PushID] = p
			}
			out = append(out, dueDelivery{d: d, push: p})
		}
		return out, nil
	}
	work := func(ctx context.Context, dd dueDelivery) rowOutcome {
		before := dd.d.Attempts
		if j.s.deliver(ctx, dd.push, &dd.d) {
			return outDone
		}
		if dd.d.Attempts != before {
			return outFailed // deliver counts an attempt it made
		}
		return outNotTaken
	}
	org := func(dd dueDelivery) string { return dd.d.OrgCode }
	// Deliveries are claimed only when worked: nothing to hand back.
	return pipeline(ctx, j, fetch, org, whole(work), func(dueDelivery) {})
}

// reconcile runs the daily reconciliation under the job lease, so that of
// the instances whose schedules fire together one does the work. On success
// the lease is kept for half the schedule's period (at most an hour), so an
// instance whose clock is a little behind does not run it again.
func (j *Scheduler) reconcile(ctx context.Context) (JobStats, error) {
	s := j.s
	now := s.now()
	token := j.token(JobReconcile)
	got, err := s.store.With(ctx).AcquireJobLease(JobReconcile, token, now, now.Add(max(j.lease(), 30*time.Minute)))
	if err != nil {
		return JobStats{}, storeErr("reconcile lease", err)
	}
	if !got {
		j.log.Debug("reconciliation is running or ran in another instance")
		return JobStats{Skipped: true}, nil
	}
	rs, err := s.Reconcile(ctx, now.Format(time.DateOnly))
	until := s.now()
	if err == nil {
		until = until.Add(j.reconcileHold(now))
	}
	sctx, cancel := storeContext(ctx)
	defer cancel()
	if _, lerr := s.store.With(sctx).SetJobLease(JobReconcile, token, until); lerr != nil {
		j.log.WithError(lerr).Warn("reconcile lease not updated; it runs out by itself")
	}
	st := JobStats{}
	if rs != nil {
		st.Claimed, st.Done, st.Flagged = rs.Examined, rs.Examined, rs.Findings
	}
	return st, err
}

// reconcileHold is how long a finished reconciliation keeps its lease.
func (j *Scheduler) reconcileHold(now time.Time) time.Duration {
	sc := j.specs[JobReconcile]
	if sc == nil {
		return 0
	}
	n1 := sc.Next(now)
	return min(sc.Next(n1).Sub(n1)/2, time.Hour)
}
