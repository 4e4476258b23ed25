package service

import (
	"context"
	"sync"
	"time"

	"github.com/procurement/gateway/model"
)

// deliverOutbox attempts the project-state deliveries that are due. Each is
// claimed on its own by deliver (ClaimDelivery), which also stores the
// result: delivered, the next attempt on the redelivery back-off (or the
// institution's Retry-After when longer), or dead after the last. A
// delivery whose instance died mid-attempt is due again once its lease ran
// out.
func (j *Scheduler) deliverOutbox(ctx context.Context) (JobStats, error) {
	return run(ctx, j, &deliveryQueue{j: j, dueBy: j.s.now(), pushes: map[int64]*model.ProjectStatePush{}}, whole(j.deliverOne))
}

func (j *Scheduler) deliverOne(ctx context.Context, dd dueDelivery) rowResult {
	before := dd.d.Attempts
	if j.s.deliver(ctx, dd.push, &dd.d) {
		return rowDone
	}
	if dd.d.Attempts != before {
		return rowFailed // deliver counts an attempt it made
	}
	return rowLost
}

// dueDelivery is a delivery that was due when read, with its announcement.
type dueDelivery struct {
	d    model.Delivery
	push *model.ProjectStatePush
}

// deliveryQueue reads the due deliveries by id, a keyset walk that sees
// each once per run. They are candidates: each is claimed as it is worked.
type deliveryQueue struct {
	j     *Scheduler
	dueBy time.Time
	after int64

	mu     sync.Mutex
	pushes map[int64]*model.ProjectStatePush // read once per run
}

func (q *deliveryQueue) next(ctx context.Context) ([]dueDelivery, error) {
	s := q.j.s
	st := s.store.With(ctx)
	ds, err := st.DueDeliveries(s.now(), q.dueBy, q.after, s.set.BatchSize)
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	q.after = ds[len(ds)-1].ID
	out := make([]dueDelivery, 0, len(ds))
	for _, d := range ds {
		p, err := q.push(st, d.PushID)
		if err != nil {
			return nil, err
		}
		out = append(out, dueDelivery{d: d, push: p})
	}
	return out, nil
}

func (q *deliveryQueue) push(st model.Queries, id int64) (*model.ProjectStatePush, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p := q.pushes[id]; p != nil {
		return p, nil
	}
	p, _, err := st.Push(id)
	if err != nil {
		return nil, err
	}
	q.pushes[id] = p
	return p, nil
}

func (q *deliveryQueue) org(dd dueDelivery) string { return dd.d.OrgCode }

// release: a delivery is claimed only when worked, so there is nothing to
// hand back; renew likewise: each attempt takes its own lease.
func (q *deliveryQueue) release(dueDelivery)   {}
func (q *deliveryQueue) renew(context.Context) {}
