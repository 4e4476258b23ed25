package service

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// DeliveryView is where one institution's copy of a project state stands.
type DeliveryView struct {
	ID            int64        `json:"id"`
	OrgCode       string       `json:"orgcode"`
	Status        string       `json:"status"`
	Attempts      int          `json:"attempts"`
	NextAttemptAt *wire.Millis `json:"next_attempt_at,omitempty"`
	LastError     string       `json:"last_error,omitempty"`
}

// PushView is a project-state announcement and its deliveries.
type PushView struct {
	ID          int64          `json:"id"`
	ProjectCode string         `json:"xmcode"`
	LotCode     string         `json:"bdcode"`
	State       string         `json:"state"`
	Deliveries  []DeliveryView `json:"deliveries"`
}

func pushView(p *model.ProjectStatePush, ds []model.Delivery) *PushView {
	v := &PushView{ID: p.ID, ProjectCode: p.ProjectCode, LotCode: p.LotCode, State: p.State, Deliveries: make([]DeliveryView, 0, len(ds))}
	for _, d := range ds {
		dv := DeliveryView{ID: d.ID, OrgCode: d.OrgCode, Status: d.Status, Attempts: d.Attempts, LastError: d.LastError}
		if d.NextAttemptAt != nil && d.Status == model.DeliveryPending {
			dv.NextAttemptAt = &wire.Millis{Time: *d.NextAttemptAt}
		}
		v.Deliveries = append(v.Deliveries, dv)
	}
	return v
}

// PushProjectState stores the project's final state with one delivery per
// institution that holds an order of that xmcode+bdcode, then tries each at
// once; what fails is left to the redelivery job. Returns EInvalid (state
// outside 1–4, a field), EUnavailable.
func (s *Service) PushProjectState(ctx context.Context, body []byte) (*PushView, error) {
	ps, err := wire.ParseProjectState(body)
	if err != nil {
		return nil, invalid(err)
	}
	push := &model.ProjectStatePush{ProjectName: ps.ProjectName, ProjectCode: ps.ProjectCode, LotName: ps.LotName,
		LotCode: ps.LotCode, OpeningAt: ps.OpeningAt, State: ps.State}
	var ds []model.Delivery
	err = s.store.InTx(model.WithOp(ctx, "project_state"), func(tx model.Queries) error {
		push.ID = 0 // an attempt refused over a conflict may have set it
		orgs, err := tx.InstitutionsForLot(ps.ProjectCode, ps.LotCode)
		if err != nil {
			return err
		}
		ds, err = tx.InsertPush(push, orgs)
		return err
	})
	if err != nil {
		return nil, storeErr("project state", err)
	}
	// The first attempts run to their end and are recorded even if the
	// bidding module stops waiting: an attempt cut short would keep its
	// lease, and the redelivery job would wait for the lease to run out.
	ctx = context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for i := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.deliver(ctx, push, &ds[i])
		}()
	}
	wg.Wait()
	return s.ProjectStateStatus(ctx, push.ID)
}

// ProjectStateStatus returns a push and its deliveries. Returns ENotFound, EUnavailable.
func (s *Service) ProjectStateStatus(ctx context.Context, id int64) (*PushView, error) {
	p, ds, err := s.store.With(ctx).Push(id)
	if err != nil {
		return nil, storeErr("project state "+strconv.FormatInt(id, 10), err)
	}
	return pushView(p, ds), nil
}

// RetryDelivery re-arms a dead delivery: pending, due now, attempts kept.
// Returns ENotFound, EConflict (not dead), EUnavailable.
func (s *Service) RetryDelivery(ctx context.Context, id int64) (*DeliveryView, error) {
	st := s.store.With(ctx)
	var ok bool
	err := s.store.Do(model.WithOp(ctx, "delivery"), func(q model.Queries) (err error) {
		ok, err = q.RearmDelivery(id, s.now())
		return err
	})
	if err != nil {
		return nil, storeErr("delivery", err)
	}
	d, err := st.Delivery(id)
	if err != nil {
		return nil, storeErr("delivery "+strconv.FormatInt(id, 10), err)
	}
	if !ok {
		return nil, errf(EConflict, "", "delivery %d is %s, not dead", id, d.Status)
	}
	return &DeliveryView{ID: d.ID, OrgCode: d.OrgCode, Status: d.Status, Attempts: d.Attempts}, nil
}

// deliver makes one attempt of a delivery under a lease, so that the API's
// first try and the redelivery job of any instance never send the same
// delivery at once. It reports whether the delivery was taken.
func (s *Service) deliver(ctx context.Context, p *model.ProjectStatePush, d *model.Delivery) bool {
	ctx = model.WithOp(ctx, "delivery")
	now := s.now()
	token := s.claimToken(JobDeliverOutbox)
	var claimed bool
	err := s.store.Do(ctx, func(q model.Queries) (err error) {
		claimed, err = q.ClaimDelivery(d.ID, token, now, now.Add(s.set.Lease))
		return err
	})
	if err != nil || !claimed {
		return false
	}
	inst, ok := s.insts.ByOrgCode(d.OrgCode)
	var callErr error
	if !ok {
		callErr = errors.New("institution no longer configured")
	} else {
		callErr = inst.Client.ProjectState(ctx, wire.ProjectState{ProjectName: p.ProjectName, ProjectCode: p.ProjectCode,
			LotName: p.LotName, LotCode: p.LotCode, OpeningAt: p.OpeningAt, State: p.State})
	}
	a := s.deliveryAttempt(d, callErr)
	err = s.store.Do(ctx, func(q model.Queries) error {
		_, err := q.RecordDeliveryAttempt(d.ID, token, a)
		return err
	})
	if err != nil {
		s.logger(ctx).WithError(err).WithField("delivery", d.ID).Error("delivery result not stored")
	}
	d.Attempts = a.Attempts
	return callErr == nil
}

// deliveryAttempt is what an attempt that ended in callErr leaves: the
// delivery delivered, due again on the redelivery back-off (or the
// institution's Retry-After when longer), or dead after the last step.
func (s *Service) deliveryAttempt(d *model.Delivery, callErr error) model.DeliveryAttempt {
	now := s.now()
	a := model.DeliveryAttempt{Attempts: d.Attempts + 1, Status: model.DeliveryPending}
	switch {
	case callErr == nil:
		a.Status, a.At = model.DeliveryDelivered, now
		return a
	case client.KindOf(callErr) == client.KindCircuitOpen:
		// Nothing was sent: the institution is known to be down. This is
		// not an attempt, and must not use up a step of the ~24-hour
		// schedule; look again after the first step.
		a.Attempts = d.Attempts
		a.NextAt = now.Add(backoff(s.set.RedeliveryBackoff, 1))
	case a.Attempts > len(s.set.RedeliveryBackoff):
		a.Status = model.DeliveryDead
	default:
		wait := s.set.RedeliveryBackoff[a.Attempts-1]
		var ce *client.Error
		if errors.As(callErr, &ce) && ce.RetryAfter > wait {
			wait = ce.RetryAfter // the institution asked for more time
		}
		a.NextAt = now.Add(wait)
	}
	a.LastError = truncate(callErr.Error(), 512)
	return a
}
