package service

import (
	"context"
	"sync"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// Group commit of paystate callbacks.
//
// One paystate alone is seven statements: begin, lock the order, record the
// callback, add the payment, move the order's amounts, add the event,
// commit. Under load the database spends its time on statements, not on
// rows, so concurrent paystates share one transaction of nine statements
// whatever their number: the orders locked together in index order, the
// taken dedup keys read, then one multi-row statement each for callbacks
// (and their IDs back), payments, amounts and events.
//
// The batch is only a shortcut. Whatever it cannot take plainly goes back
// to its request, which takes the one-by-one path that decides everything
// the same way: an unknown or another institution's order, a dedup key
// already stored or twice in the batch, and the whole batch when any
// statement fails (a duplicate the read missed, a deadlock, storage down).
// A request is answered only after the transaction that holds its callback
// committed, as on the one-by-one path.
//
// No goroutine runs in the background. A request queues its job and, when
// fewer than payLeaders batches are running, leads: it takes up to
// payBatchMax queued jobs, commits them, and goes on until its own job is
// done. With one request at a time the batch is that one job, which the
// leader takes by the one-by-one path; while it does, the requests that
// arrive queue up and become the next batch. Two leaders measured best on
// two cores: more make smaller batches, one leaves the database idle
// between them.

const (
	payBatchMax     = 64
	payLeaders      = 2
	payBatchTimeout = 10 * time.Second
)

type payJob struct {
	ctx  context.Context
	in   CallbackInput
	out  *outcome
	p    wire.PayState
	key  string
	done chan struct{}
	// handled: a batch committed it, or ran it alone with err as its
	// answer; otherwise its request takes it alone. Written before done is
	// closed.
	handled bool
	err     error
}

type payBatcher struct {
	mu    sync.Mutex
	queue []*payJob
	slots chan struct{}
	max   int
	run   func(jobs []*payJob)
}

func newPayBatcher(leaders, max int, run func([]*payJob)) *payBatcher {
	return &payBatcher{slots: make(chan struct{}, leaders), max: max, run: run}
}

// do queues the job and waits until a batch handled it (true, with its
// answer) or handed it back (false). It does not give up when the request
// ends: the job may be in a transaction that is committing, and its answer
// must say so.
func (b *payBatcher) do(j *payJob) (bool, error) {
	j.done = make(chan struct{})
	b.mu.Lock()
	b.queue = append(b.queue, j)
	b.mu.Unlock()
	select {
	case <-j.done:
	case b.slots <- struct{}{}:
		// Leading ends when j is done or, the queue empty, another
		// leader holds j and will finish it.
		b.lead(j)
		<-b.slots
		<-j.done
	}
	return j.handled, j.err
}

// lead runs batches from the head of the queue until mine is done or the
// queue is empty (another leader holds mine).
func (b *payBatcher) lead(mine *payJob) {
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

// payBatch runs one job alone, as its own request would, and commits what
// it can of several in one transaction, handing the rest back. A leader
// that runs even one job holds its slot meanwhile: that is what makes the
// requests arriving meanwhile queue up into the next batch.
func (s *Service) payBatch(jobs []*payJob) {
	if len(jobs) == 1 {
		j := jobs[0]
		j.handled, j.err = true, s.payOne(j.ctx, j.in, j.out, j.p, j.key)
		close(j.done)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(jobs[0].ctx), payBatchTimeout)
	taken, err := s.commitPays(ctx, jobs)
	cancel()
	if err != nil {
		taken = nil
		s.metrics.CallbackBatch("rolled_back", len(jobs))
		s.log.WithError(err).WithField("callbacks", len(jobs)).Warn("paystate batch rolled back; its callbacks go one by one")
	} else {
		s.metrics.CallbackBatch("committed", len(jobs))
	}
	for _, j := range taken {
		j.handled = true
	}
	for _, j := range jobs {
		close(j.done)
	}
}

// commitPays takes the jobs that are plainly new payments of known orders
// in one transaction and returns them.
func (s *Service) commitPays(ctx context.Context, jobs []*payJob) ([]*payJob, error) {
	nos := make([]string, 0, len(jobs))
	keys := make([]string, 0, len(jobs))
	seenNo := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		if !seenNo[j.p.OrderNo] {
			seenNo[j.p.OrderNo] = true
			nos = append(nos, j.p.OrderNo)
		}
		keys = append(keys, j.key)
	}
	var take []*payJob
	err := s.store.InTx(ctx, func(tx model.Tx) error {
		take = take[:0]
		orders, err := tx.LockOrders(nos)
		if err != nil {
			return err
		}
		stored, err := tx.TakenCallbackKeys(keys)
		if err != nil {
			return err
		}
		inBatch := make(map[string]bool, len(jobs))
		for _, j := range jobs {
			o := orders[j.p.OrderNo]
			if o == nil || o.OrgCode != j.out.inst.OrgCode || stored[j.key] || inBatch[j.key] {
				continue // the one-by-one path answers it: 200001 or a duplicate
			}
			inBatch[j.key] = true
			take = append(take, j)
		}
		if len(take) == 0 {
			return nil
		}
		cbs := make([]*model.Callback, len(take))
		for i, j := range take {
			j.out.orderNo = j.p.OrderNo
			cbs[i] = s.callbackRow(j.in, j.out, wire.Response{Errcode: wire.CodeOK}, &j.key)
		}
		if err := tx.InsertCallbacks(cbs); err != nil {
			return err
		}
		pays := make([]*model.Payment, len(take))
		events := make([]*model.Event, len(take))
		sums := make(map[string]model.Amounts, len(nos))
		for i, j := range take {
			o := orders[j.p.OrderNo]
			a, ok := sums[o.OrderNo]
			if !ok {
				a = model.Amounts{Paid: o.PaidAmount, Refunded: o.RefundedAmount}
			}
			pays[i], events[i] = payEffect(o, cbs[i], j.p, j.key, &a)
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
	return take, nil
}
