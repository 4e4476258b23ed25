package service

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/model"
)

// pullFlagAfter: after this many failed pulls an order is flagged
// pull_failed for operators; the pull job keeps trying, hourly at most.
const pullFlagAfter = 10

// pullFiles fetches the PDFs of issued orders whose file is not stored yet,
// through pullurl with baohanno = bhno; the client checks that the answer is
// a readable PDF and pull stores it once with its sha256.
func (j *Scheduler) pullFiles(ctx context.Context) (JobStats, error) {
	return run(ctx, j, j.orders(JobPullFiles, model.QueuePull), whole(j.pullOne))
}

// pullOne is what the pull job does to one order: pull its PDF; stored, the
// order is due for nothing more; failed, the next pull waits on the poll
// back-off, and after pullFlagAfter failures the order is flagged for
// operators and pulled hourly.
func (j *Scheduler) pullOne(ctx context.Context, c claimedOrder) rowResult {
	s, o := j.s, c.o
	inst, err := j.institution(o.OrgCode)
	if err == nil {
		cctx, cancel, ok := j.callContext(ctx, c, inst)
		if !ok {
			j.releaseOrder(c)
			return rowReleased
		}
		err = s.pull(cctx, inst, o)
		cancel()
		if err != nil && ctx.Err() != nil {
			j.releaseOrder(c)
			return rowReleased
		}
	}
	sctx, cancel := storeContext(ctx)
	defer cancel()
	if err == nil {
		// pull stored the file and took the order off the queue; the lease
		// is left to give back.
		j.releaseOrder(c)
		return rowDone
	}
	attempts := o.CheckAttempts + 1
	wait := backoff(s.set.PollBackoff, attempts)
	// A pullurl off the institution's origins is flagged url_refused
	// already: pull_failed would hide why it is never called.
	escalate := attempts >= pullFlagAfter && client.KindOf(err) != client.KindURLRefused
	flagNow := escalate && o.Flag != model.FlagPullFailed
	change := model.OrderChange{}.Attempts(attempts).FreeLease()
	if escalate {
		change = change.Flag(model.FlagPullFailed)
		wait = max(wait, time.Hour)
	}
	change = change.DueAt(s.now().Add(wait))
	uerr := s.store.InTx(model.WithOp(sctx, "pull"), func(tx model.Queries) error {
		ok, err := tx.UpdateOrder(o.OrderNo, change, model.OrderGuard{Token: c.c.token, FilePending: true})
		if err != nil || !ok || !flagNow {
			return err
		}
		return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "pull_failed",
			Detail: fmt.Sprintf("the guarantee PDF could not be pulled in %d attempts; still tried hourly", attempts)})
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
	return rowFailed
}
