package service

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/procurement/gateway/model"
)

// A job's run moves its rows through three steps:
//
//	claim ──rows──> call ──finish──> store
//
// One claimer takes the rows in batches (a queue); as many callers as the
// job's concurrency each call on one row at a time, holding one of the
// row's institution's call slots meanwhile; a few finishers store what
// follows from each answer, so that a call slot is free for the next row as
// soon as the answer is in. The claimer takes the next batch as soon as the
// callers have taken the last, so they never wait for a batch's tail. The
// run's counts are kept in one place, its tally.

// rowResult is what became of one claimed row.
type rowResult int

const (
	rowDone     rowResult = iota // worked, and what followed is stored
	rowFailed                    // the call or the store failed; its back-off advanced
	rowFlagged                   // flagged for operators instead of worked (stale)
	rowReleased                  // handed back unworked (shutdown, lease ran short)
	rowLost                      // another instance took it first (a delivery, claimed alone)
)

// finish is the part of a row's work left after its call: storing what
// follows from the answer.
type finish func() rowResult

// queue is where a job's rows come from.
type queue[T any] interface {
	// next claims the next batch; an empty one ends the run.
	next(ctx context.Context) ([]T, error)
	// org names the institution a row calls: its call slots bound the row.
	org(row T) string
	// release hands a row back unworked.
	release(row T)
	// renew keeps what the run holds while its rows wait for a call slot.
	renew(ctx context.Context)
}

// tally counts a run's rows.
type tally struct {
	mu sync.Mutex
	st JobStats
}

func (t *tally) claimed(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.Claimed += n
}

func (t *tally) add(r rowResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch r {
	case rowDone:
		t.st.Done++
	case rowFailed:
		t.st.Failed++
	case rowFlagged:
		t.st.Flagged++
	case rowReleased:
		t.st.Released++
	case rowLost:
		t.st.Claimed--
	}
}

func (t *tally) stats() JobStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// runner runs one job's rows from q through work.
type runner[T any] struct {
	j     *Scheduler
	q     queue[T]
	work  func(context.Context, T) (rowResult, finish)
	tally tally
}

// run returns what the run did, and the claim's error that ended it early.
func run[T any](ctx context.Context, j *Scheduler, q queue[T], work func(context.Context, T) (rowResult, finish)) (JobStats, error) {
	r := &runner[T]{j: j, q: q, work: work}
	conc := j.s.set.Concurrency
	rows := make(chan T)
	// The buffer lets a caller hand over without waiting; when the
	// finishers fall behind it fills and the callers wait (back-pressure),
	// so the leases are never outrun.
	finishes := make(chan finish, conc)

	var claimErr error
	claimed := make(chan struct{})
	go func() {
		defer close(claimed)
		claimErr = r.claim(ctx, rows)
	}()
	stopRenew := r.renewing(ctx)
	callers := spawn(conc, func() { r.call(ctx, rows, finishes) })
	// A few finishers suffice: a write takes milliseconds where a call
	// takes tens or hundreds.
	finishers := spawn(max(2, conc/4), func() {
		for f := range finishes {
			r.tally.add(r.safely(f))
		}
	})
	callers.Wait()
	close(finishes)
	finishers.Wait()
	stopRenew()
	<-claimed
	return r.tally.stats(), claimErr
}

// claim feeds rows until the queue is empty, the run is cancelled or the
// scheduler stops; rows claimed but not handed out are given back.
func (r *runner[T]) claim(ctx context.Context, rows chan<- T) error {
	defer close(rows)
	for !r.j.stopping.Load() && ctx.Err() == nil {
		batch, err := r.q.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // a cancelled run just ends
			}
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		r.tally.claimed(len(batch))
		for i, row := range batch {
			select {
			case rows <- row:
			case <-ctx.Done():
				for _, rest := range batch[i:] {
					r.q.release(rest)
					r.tally.add(rowReleased)
				}
				return nil
			}
		}
	}
	return nil
}

// call works the rows one at a time, each under a call slot of its
// institution, and hands what is left to store to the finishers.
func (r *runner[T]) call(ctx context.Context, rows <-chan T, finishes chan<- finish) {
	for row := range rows {
		if r.j.stopping.Load() || ctx.Err() != nil {
			r.q.release(row)
			r.tally.add(rowReleased)
			continue
		}
		done, ok := r.j.acquire(ctx, r.q.org(row))
		if !ok {
			r.q.release(row)
			r.tally.add(rowReleased)
			continue
		}
		var f finish
		res := r.safely(func() (res rowResult) { res, f = r.work(ctx, row); return res })
		done()
		if f != nil {
			finishes <- f
			continue
		}
		r.tally.add(res)
	}
}

// renewing renews the queue's leases every third of a lease until the
// returned function is called.
func (r *runner[T]) renewing(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.j.s.set.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				r.q.renew(ctx)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// safely runs one piece of a row's work; a panic there is logged and
// counted as a failure of that row instead of taking the process down (the
// row's lease runs out and another run retries it).
func (r *runner[T]) safely(f func() rowResult) (res rowResult) {
	defer func() {
		if p := recover(); p != nil {
			r.j.log.WithField("panic", fmt.Sprint(p)).Error("job work panicked")
			res = rowFailed
		}
	}()
	return f()
}

// spawn starts n goroutines running f.
func spawn(n int, f func()) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	return &wg
}

// claim is one batch of orders taken under one lease token.
type claim struct {
	token string
	until atomic.Int64 // unix nanoseconds; moved on by each renewal
}

func (c *claim) expires() time.Time { return time.Unix(0, c.until.Load()).UTC() }

// claimedOrder is an order whose lease this instance holds under its claim.
type claimedOrder struct {
	o *model.Order
	c *claim
}

// orderQueue claims the due orders of one model.OrderQueue in batches.
// Only orders due when the run started are taken, so a run ends even when
// the institution answers faster than orders fall due.
type orderQueue struct {
	j     *Scheduler
	job   string
	which model.OrderQueue
	dueBy time.Time

	mu     sync.Mutex
	claims []*claim // renewed until they hold nothing
}

func (j *Scheduler) orders(job string, which model.OrderQueue) *orderQueue {
	return &orderQueue{j: j, job: job, which: which, dueBy: j.s.now()}
}

func (q *orderQueue) next(ctx context.Context) ([]claimedOrder, error) {
	s := q.j.s
	now := s.now()
	c := &claim{token: s.claimToken(q.job)}
	c.until.Store(now.Add(s.set.Lease).UnixNano())
	var orders []model.Order
	err := s.store.Do(model.WithOp(ctx, "claim"), func(st model.Queries) (err error) {
		orders, err = st.ClaimOrders(q.which, c.token, now, q.dueBy, c.expires(), s.set.BatchSize)
		return err
	})
	if err != nil || len(orders) == 0 {
		return nil, err
	}
	q.mu.Lock()
	q.claims = append(q.claims, c)
	q.mu.Unlock()
	out := make([]claimedOrder, len(orders))
	for i := range orders {
		out[i] = claimedOrder{o: &orders[i], c: c}
	}
	return out, nil
}

func (q *orderQueue) org(c claimedOrder) string { return c.o.OrgCode }

func (q *orderQueue) release(c claimedOrder) { q.j.releaseOrder(c) }

// renew extends the leases of every claim that still holds orders; a claim
// whose orders are all worked (each gave its lease up) is dropped.
func (q *orderQueue) renew(ctx context.Context) {
	q.mu.Lock()
	claims := q.claims
	q.mu.Unlock()
	s := q.j.s
	var live []*claim
	for _, c := range claims {
		until := s.now().Add(s.set.Lease)
		var n int64
		err := s.store.Do(model.WithOp(ctx, "renew"), func(st model.Queries) (err error) {
			n, err = st.RenewLeases(c.token, until)
			return err
		})
		if err != nil {
			q.j.log.WithError(err).WithField("job", q.job).Warn("leases not renewed; rows may be handed back")
			live = append(live, c)
			continue
		}
		if n > 0 {
			c.until.Store(until.UnixNano())
			live = append(live, c)
		}
	}
	q.mu.Lock()
	// Claims taken while renewing are kept.
	q.claims = append(live, q.claims[len(claims):]...)
	q.mu.Unlock()
}

// releaseOrder hands an order back unworked: due as it was, free at once.
func (j *Scheduler) releaseOrder(c claimedOrder) {
	ctx, cancel := storeContext(j.ctx)
	defer cancel()
	err := j.s.store.Do(model.WithOp(ctx, "release_lease"), func(q model.Queries) error {
		_, err := q.ReleaseLeases(c.c.token, c.o.ID)
		return err
	})
	if err != nil {
		j.log.WithError(err).WithField("orderno", c.o.OrderNo).Warn("lease not released; it runs out by itself")
	}
}

// callContext bounds a call by the order's lease, keeping a margin to store
// the answer while the lease still holds. It reports false when too little
// of the lease is left for one attempt: the order is then handed back
// rather than called on a lease that another instance may take over
// mid-call.
func (j *Scheduler) callContext(ctx context.Context, c claimedOrder, inst *Institution) (context.Context, context.CancelFunc, bool) {
	lease := j.s.set.Lease
	deadline := c.c.expires().Add(-min(lease/10, 5*time.Second))
	if time.Until(deadline) < min(inst.Timeout, lease/2) {
		return nil, nil, false
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	return cctx, cancel, true
}

// storeContext bounds the writes that follow a call: they are made even
// when shutdown has cancelled the run, so that an answer received is kept.
func storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// whole adapts a row's work that stores its own result before it returns,
// leaving nothing to finish.
func whole[T any](work func(context.Context, T) rowResult) func(context.Context, T) (rowResult, finish) {
	return func(ctx context.Context, row T) (rowResult, finish) { return work(ctx, row), nil }
}
