package service

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// Group commit of callbacks.
//
// One paystate alone is seven statements: begin, lock the order, record the
// callback, add the payment, move the order's amounts, add the event,
// commit; an issuance notice about as many. Under load the database spends
// its time on statements, not on rows, so concurrent callbacks of one kind
// share one transaction of nine statements whatever their number: the
// orders locked together in index order, the taken dedup keys read, then
// one multi-row statement each for callbacks (and their IDs back), for
// payments or files, for the orders' changes and for events.
//
// The batch is only a shortcut, for the plain case: a new payment of a
// known order; an issuance, with its PDF, of an order in applying or
// processing, or a processing notice of an order in processing; and a
// repeat (its dedup key stored, or taken earlier in the batch), audited as
// a duplicate as the one-by-one path would. Whatever else arrives goes
// back to its request, which takes the one-by-one path that decides every
// case: an unknown or another institution's order, a notice that is late
// or conflicts; and so does every callback of a batch that fails in any
// statement (a duplicate the read missed, conflicts with other writers
// that outlast the store's retries of the whole batch, storage down). A
// request is answered only after the transaction that holds its callback
// committed, as on the one-by-one path.
//
// No goroutine runs in the background. A request queues its job and, when
// fewer than batchLeaders batches of its kind are running, leads: it takes
// up to Settings.CallbackBatch queued jobs, commits them, and goes on until its own job
// is done. A batch of one job the leader takes by the one-by-one path;
// while it does, the requests that arrive queue up and become the next
// batch. Two leaders measured best on two cores: more make smaller
// batches, one leaves the database idle between them.

const (
	defaultCallbackBatch = 64
	batchLeaders         = 2
	batchTimeout         = 10 * time.Second
	// A notice whose PDF is over batchFileBytes, or would take the batch's
	// PDFs over batchFilesBytes, goes alone: the batch's one statement of
	// files stays far below max_allowed_packet (16 MiB by default on
	// MariaDB), and a big PDF is sent as it is (InsertFile), not
	// interpolated.
	batchFileBytes  = 256 << 10
	batchFilesBytes = 4 << 20
)

// batchJob is one callback waiting for a batch: a paystate or an
// applynotify, already validated.
type batchJob struct {
	ctx    context.Context
	in     CallbackInput
	out    *receipt
	key    string
	pay    wire.PayState
	notice wire.ApplyNotify

	done chan struct{}
	// handled: a batch committed it, or ran it alone with err as its
	// answer; otherwise its request takes it alone. Written before done is
	// closed.
	handled bool
	err     error
}

// batcher groups the jobs of one kind.
type batcher struct {
	mu    sync.Mutex
	queue []*batchJob
	slots chan struct{}
	max   int
	run   func(jobs []*batchJob)
}

func newBatcher(leaders, max int, run func([]*batchJob)) *batcher {
	return &batcher{slots: make(chan struct{}, leaders), max: max, run: run}
}

// do queues the job and waits until a batch handled it (true, with its
// answer) or handed it back (false). It does not give up when the request
// ends: the job may be in a transaction that is committing, and its answer
// must say so. A nil batcher (group commit off) hands every job back.
func (b *batcher) do(j *batchJob) (bool, error) {
	if b == nil {
		return false, nil
	}
	j.done = make(chan struct{})
	b.mu.Lock()
	b.queue = append(b.queue, j)
	b.mu.Unlock()
	select {
	case <-j.done:
	case b.slots <- struct{}{}:
		// Leading ends when j is done or, the queue empty, another
		// leader holds j and will finish it. A panic while leading
		// frees the slot on its way up.
		func() {
			defer func() { <-b.slots }()
			b.lead(j)
		}()
		<-j.done
	}
	return j.handled, j.err
}

// lead runs batches from the head of the queue until mine is done or the
// queue is empty (another leader holds mine).
func (b *batcher) lead(mine *batchJob) {
	for {
		select {
		case <-mine.done:
			return
		default:
		}
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		if len(b.queue) == 0 {
			b.queue = nil
		}
		b.mu.Unlock()
		if n == 0 {
			return
		}
		b.run(batch)
	}
}

// runBatch runs one job alone, as its own request would, and commits what
// it can of several in one transaction, handing the rest back. A leader
// that runs even one job holds its slot meanwhile: that is what makes the
// requests arriving meanwhile queue up into the next batch.
func (s *Service) runBatch(kind string, jobs []*batchJob, alone func(*batchJob) error,
	commit func(context.Context, []*batchJob) ([]*batchJob, error)) {
	defer func() {
		// A panic must not leave the batch's other requests waiting
		// forever: they go one by one. Whatever the batch committed
		// before it, the one-by-one path finds stored and acknowledges.
		if r := recover(); r != nil {
			for _, j := range jobs {
				j.handled, j.err = false, nil
				close(j.done)
			}
			panic(r)
		}
	}()
	if len(jobs) == 1 {
		j := jobs[0]
		j.handled, j.err = true, alone(j)
		close(j.done)
		return
	}
	ctx, cancel := context.WithTimeout(model.WithOp(context.WithoutCancel(jobs[0].ctx), kind+"_batch"), batchTimeout)
	taken, err := commit(ctx, jobs)
	cancel()
	if err != nil {
		taken = nil
		s.metrics.CallbackBatch(kind, "rolled_back", len(jobs))
		s.log.WithError(err).WithFields(map[string]any{"kind": kind, "callbacks": len(jobs)}).
			Warn("callback batch rolled back; its callbacks go one by one")
	} else {
		s.metrics.CallbackBatch(kind, "committed", len(jobs))
	}
	for _, j := range taken {
		j.handled = true
	}
	for _, j := range jobs {
		close(j.done)
	}
}

func (s *Service) payBatch(jobs []*batchJob) {
	s.runBatch(KindPayState, jobs, func(j *batchJob) error { return s.payOne(j.ctx, j.in, j.out, j.pay, j.key) }, s.commitPays)
}

func (s *Service) noticeBatch(jobs []*batchJob) {
	s.runBatch(KindApplyNotify, jobs, func(j *batchJob) error { return s.notifyOne(j.ctx, j.in, j.out, j.notice, j.key) }, s.commitNotices)
}

// batchRows is what lockBatch found and recorded of a batch.
type batchRows struct {
	take    []*batchJob             // plain and new: their effects are the caller's
	cbs     []*model.Callback       // their callback rows, in order, with IDs
	orders  map[string]*model.Order // the locked orders
	repeats []*batchJob             // repeats of an accepted callback: audited, nothing else
}

// lockBatch locks the orders of the jobs, then records the callbacks of
// the jobs that are plain (plain(j, o) says so for j's own order o) and
// new: their dedup key neither stored nor taken by an earlier job of the
// batch. A repeat of a stored or batched callback, of its sender's own
// order, it records as a duplicate, as the one-by-one path would. The
// rest it leaves to that path.
func (s *Service) lockBatch(tx model.Queries, jobs []*batchJob, orderNo func(*batchJob) string,
	plain func(*batchJob, *model.Order) bool) (batchRows, error) {
	nos := make([]string, 0, len(jobs))
	seen := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		if no := orderNo(j); !seen[no] {
			seen[no] = true
			nos = append(nos, no)
		}
	}
	var r batchRows
	var err error
	if r.orders, err = tx.LockOrders(nos); err != nil {
		return r, err
	}
	// A stored key names its order (docs/decisions.md §44): only the keys
	// of the jobs whose order exists can be taken, under that order.
	refs := make([]model.DedupRef, 0, len(jobs))
	for _, j := range jobs {
		if o := r.orders[orderNo(j)]; o != nil {
			refs = append(refs, model.DedupRef{OrderNo: o.OrderNo, Key: j.key})
		}
	}
	stored, err := tx.TakenCallbackKeys(refs)
	if err != nil {
		return r, err
	}
	inBatch := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		o := r.orders[orderNo(j)]
		switch {
		case o == nil || o.OrgCode != j.out.inst.OrgCode:
			// the one-by-one path answers 200001
		case stored[j.key] || inBatch[j.key]:
			r.repeats = append(r.repeats, j)
		case plain(j, o):
			inBatch[j.key] = true
			r.take = append(r.take, j)
		}
	}
	rows := make([]*model.Callback, 0, len(r.take)+len(r.repeats))
	for _, j := range r.take {
		j.out.orderNo = orderNo(j)
		rows = append(rows, s.callbackRow(j.in, j.out, wire.Response{Errcode: wire.CodeOK}, &j.key))
	}
	for _, j := range r.repeats {
		// The job's receipt says duplicate only once the batch commits
		// (settle): rolled back, it goes one by one as it came.
		dup := *j.out
		dup.orderNo, dup.result = orderNo(j), model.CallbackDuplicate
		rows = append(rows, s.callbackRow(j.in, &dup, wire.Response{Errcode: wire.CodeOK}, nil))
	}
	if len(rows) > 0 {
		if err := tx.InsertCallbacks(rows); err != nil {
			return r, err
		}
	}
	r.cbs = rows[:len(r.take)]
	return r, nil
}

// settle returns the jobs a committed batch handled, and marks its repeats
// as duplicates.
func (r batchRows) settle() []*batchJob {
	for _, j := range r.repeats {
		j.out.result = model.CallbackDuplicate
	}
	return append(r.take, r.repeats...)
}

// commitPays takes the paystates that are new payments of known orders
// whose amounts stay sound (checkPay), and repeats, in one transaction,
// and returns them.
func (s *Service) commitPays(ctx context.Context, jobs []*batchJob) ([]*batchJob, error) {
	var r batchRows
	err := s.store.InTx(ctx, func(tx model.Queries) error {
		// A payment is plain when its order's amounts, with the batch's
		// earlier payments, still hold after it (checkPay); one that would
		// not goes one by one, after this batch, and is refused there.
		running := make(map[string]model.Amounts, len(jobs))
		plain := func(j *batchJob, o *model.Order) bool {
			a, ok := running[o.OrderNo]
			if !ok {
				a = model.Amounts{Paid: o.PaidAmount, Refunded: o.RefundedAmount}
			}
			if checkPay(o.OrderNo, a, j.pay) != nil {
				return false
			}
			running[o.OrderNo] = addPay(a, j.pay)
			return true
		}
		var err error
		r, err = s.lockBatch(tx, jobs, func(j *batchJob) string { return j.pay.OrderNo }, plain)
		if err != nil || len(r.take) == 0 {
			return err
		}
		pays := make([]*model.Payment, len(r.take))
		events := make([]*model.Event, len(r.take))
		sums := make(map[string]model.Amounts, len(r.take))
		for i, j := range r.take {
			o := r.orders[j.pay.OrderNo]
			a, ok := sums[o.OrderNo]
			if !ok {
				a = model.Amounts{Paid: o.PaidAmount, Refunded: o.RefundedAmount}
			}
			pays[i], events[i] = payEffect(o, r.cbs[i], j.pay, j.key, &a)
			sums[o.OrderNo] = a
		}
		if err := tx.InsertPayments(pays); err != nil {
			return err
		}
		if err := tx.SetAmounts(sums); err != nil {
			return err
		}
		return tx.AddEvents(events)
	})
	if err != nil {
		return nil, err
	}
	return r.settle(), nil
}

// commitNotices takes, in one transaction, the applynotify callbacks that
// the lifecycle table plainly decides: an issuance with its PDF (complete:
// nothing missing) that moves its order to issued, and a processing notice
// that the table keeps (the order is processing), which changes nothing but
// is recorded; and repeats. It returns them.
func (s *Service) commitNotices(ctx context.Context, jobs []*batchJob) ([]*batchJob, error) {
	var r batchRows
	err := s.store.InTx(ctx, func(tx model.Queries) error {
		bhnos := make(map[string]bool, len(jobs))
		fileBytes := 0
		plain := func(j *batchJob, o *model.Order) bool {
			n := j.notice
			ev := noticeEvent(n.State)
			switch r := next(o.Status, ev); {
			case ev == evProcessing && r.act == actKeep:
				return true // processing, still: the callback row is all
			case r.act == actMove && r.to == model.StatusIssued:
				// Two orders of the batch given one bhno would fail the
				// unique index; the second goes alone and gets 200002.
				ok := n.File != nil && len(n.File) <= batchFileBytes && fileBytes+len(n.File) <= batchFilesBytes &&
					len(n.Missing) == 0 && !bhnos[n.GuaranteeNo]
				if ok {
					bhnos[n.GuaranteeNo] = true
					fileBytes += len(n.File)
				}
				return ok
			}
			return false
		}
		var err error
		r, err = s.lockBatch(tx, jobs, func(j *batchJob) string { return j.notice.OrderNo }, plain)
		if err != nil || len(r.take) == 0 {
			return err
		}
		var files []*model.GuaranteeFile
		var events []*model.Event
		from := map[model.Status]map[string]model.Issuance{}
		for i, j := range r.take {
			if j.notice.State != wire.NotifyIssued {
				continue
			}
			o := r.orders[j.notice.OrderNo]
			p := noticeProgress(j.notice, &r.cbs[i].ID)
			files = append(files, fileRow(o.OrderNo, p.guaranteeNo, p.source, p.file))
			if from[o.Status] == nil {
				from[o.Status] = map[string]model.Issuance{}
			}
			from[o.Status][o.OrderNo] = s.issuance(p, true)
			events = append(events, moveEvent(o, model.StatusIssued, p))
		}
		if len(files) == 0 {
			return nil
		}
		if err := tx.InsertFiles(files); err != nil {
			return err
		}
		for st, rows := range from {
			moved, err := tx.RecordIssuances(st, rows)
			if err != nil {
				return err
			}
			if moved != int64(len(rows)) {
				return errMovedElsewhere
			}
		}
		return tx.AddEvents(events)
	})
	if err != nil {
		return nil, err
	}
	return r.settle(), nil
}

// errMovedElsewhere: an order the batch locked did not take the update;
// it cannot happen while the lock holds, and rolls the batch back if it
// does.
var errMovedElsewhere = errors.New("an order of the batch was not where it was locked")
