package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// ApplyStatus tells the handler which success status to answer.
type ApplyStatus int

const (
	ApplyAccepted    ApplyStatus = iota // 201: the institution accepted, processing
	ApplyRepeated                       // 200: the same orderno and body again
	ApplyUnconfirmed                    // 202: no definite answer, stays applying; the recovery job re-sends
)

// Apply validates an application, stores it as applying and sends it to the
// institution's /guarantee/apply. Idempotency key: orderno (the gateway makes
// one when none is given). The same orderno with the same body answers the
// stored order without a second call; with another body, EConflict. Returns
// EInvalid (a field, a passed deadline, kbttime before tbjztime, an unknown
// or disabled orgcode), EConflict (orderno taken, or an active order of the
// bidder for the lot, named), EUpstream (stat 0: apply_rejected, with the
// institution's errcode and msg), EUnavailable.
func (s *Service) Apply(ctx context.Context, body []byte) (*OrderView, ApplyStatus, error) {
	req, err := wire.ParseApplyRequest(body, true)
	if err != nil {
		return nil, 0, invalid(err)
	}
	inst, ok := s.insts.ByOrgCode(req.OrgCode)
	if !ok || inst.Disabled {
		return nil, 0, errf(EInvalid, "orgcode", "unknown or disabled institution %q", req.OrgCode)
	}
	now := s.now()
	given := req.OrderNo != ""
	if !given {
		req.OrderNo = newOrderNo(now)
	}
	hash, err := requestHash(req)
	if err != nil {
		return nil, 0, err
	}
	if err := checkDates(req, now); err != nil {
		// A repeat of an application stored before its deadline passed is
		// answered from the store like any repeat, not refused.
		if given {
			if v, st, rerr := s.repeat(ctx, req.OrderNo, hash); !errors.Is(rerr, model.ErrNotFound) {
				return v, st, rerr
			}
		}
		return nil, 0, err
	}
	// The lease keeps the recovery job off the order while this request is
	// calling; if the process dies mid-call, the lease runs out and the job
	// re-sends the apply.
	leaseUntil := now.Add(inst.Timeout + 10*time.Second)
	next := now.Add(backoff(s.set.ApplyBackoff, 1))
	o := orderOf(req, hash)
	o.NextCheckAt, o.LeaseOwner, o.LeaseUntil = &next, s.set.Instance, &leaseUntil
	err = s.store.InTx(model.WithOp(ctx, "apply"), func(tx model.Queries) error {
		o.ID = 0 // an attempt refused over a conflict may have set it
		if err := tx.CreateOrder(o); err != nil {
			return err
		}
		return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventStatus, Name: "apply",
			ToStatus: string(model.StatusApplying), Detail: "received from the bidding module"})
	})
	switch {
	case errors.Is(err, model.ErrDuplicate), errors.Is(err, model.ErrActiveOrder):
		// A repeat of an active order breaks both unique indexes, and which
		// one the database names differs (SQLite names the newest index, the
		// active slot): whether the orderno exists decides.
		if v, st, rerr := s.repeat(ctx, req.OrderNo, hash); !errors.Is(rerr, model.ErrNotFound) {
			return v, st, rerr
		}
		if errors.Is(err, model.ErrDuplicate) {
			return nil, 0, storeErr("apply "+req.OrderNo, err)
		}
		msg := "the bidder already has an active guarantee order for this lot"
		if active, aerr := s.store.With(ctx).ActiveOrder(req.ApplicantCode, req.ProjectCode, req.LotCode); aerr == nil {
			msg += ": " + active.OrderNo
		}
		return nil, 0, errf(EConflict, "qycode", "%s", msg)
	case err != nil:
		return nil, 0, storeErr("apply "+req.OrderNo, err)
	}

	// From here the institution may act on the application: what it answers
	// is recorded even if the bidding module stops waiting (the call itself
	// is bounded by the institution's timeout).
	ctx = context.WithoutCancel(ctx)
	st, err := s.sendApply(ctx, inst, o)
	if err != nil {
		return nil, 0, err
	}
	v, err := s.View(ctx, o.OrderNo)
	return v, st, err
}

// checkDates refuses an application whose bid deadline has passed or whose
// bid opening comes before the deadline.
func checkDates(req wire.ApplyRequest, now time.Time) error {
	if !req.DeadlineAt.After(now) {
		return errf(EInvalid, "tbjztime", "the bid deadline has passed")
	}
	if req.OpeningAt.Before(req.DeadlineAt) {
		return errf(EInvalid, "kbttime", "the bid opening is before the bid deadline")
	}
	return nil
}

// repeat answers an application whose orderno is stored: the same
// application (by its hash) gets the stored order, another one EConflict.
// It returns model.ErrNotFound when the orderno is not stored.
func (s *Service) repeat(ctx context.Context, orderNo, hash string) (*OrderView, ApplyStatus, error) {
	existing, err := s.store.With(ctx).Order(orderNo)
	if errors.Is(err, model.ErrNotFound) {
		return nil, 0, model.ErrNotFound
	}
	if err != nil {
		return nil, 0, storeErr("order "+orderNo, err)
	}
	if existing.RequestHash != hash {
		return nil, 0, errf(EConflict, "orderno", "orderno %s exists with a different application", orderNo)
	}
	v, err := s.view(ctx, existing)
	return v, ApplyRepeated, err
}

// sendApply calls /guarantee/apply for a stored applying order and applies
// the answer as the lifecycle table says: processing (URLs kept; in any
// other status the URLs are learnt and nothing moves), apply_rejected
// (stat 0, returned as EUpstream), or still applying when no definite
// answer came (ApplyUnconfirmed).
func (s *Service) sendApply(ctx context.Context, inst *Institution, o *model.Order) (ApplyStatus, error) {
	ctx = model.WithOp(ctx, "apply")
	res, err := inst.Client.Apply(ctx, applyRequestOf(o))
	if err == nil {
		err = checkURLs(res)
	}
	var ce *client.Error
	switch {
	case err == nil:
		learn := model.OrderChange{}.Links(model.Links{ContinueURL: res.ContinueURL, QueryURL: res.QueryURL,
			PullURL: res.PullURL, CancelURL: res.CancelURL}).FreeLease().Flag(model.FlagNone)
		// The URLs are kept as the institution gave them, but one off its
		// origins will not be called: the order is flagged for an operator.
		refused := s.offOrigin(inst, res)
		if len(refused) > 0 {
			learn = learn.Flag(model.FlagURLRefused)
		}
		err := s.store.InTx(ctx, func(tx model.Queries) error {
			to := model.StatusProcessing
			moved, err := tx.MoveOrder(o.OrderNo, movesFrom(evApplyAccepted, to), to,
				learn.DueAt(s.now().Add(backoff(s.set.PollBackoff, 1))).Attempts(0))
			if err != nil {
				return err
			}
			if !moved {
				// A callback got here first (the institution was quick): it
				// keeps its status and learns the URLs.
				_, err = tx.UpdateOrder(o.OrderNo, learn, model.OrderGuard{})
			} else {
				err = tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventStatus, Name: "apply",
					FromStatus: string(model.StatusApplying), ToStatus: string(to), Detail: "accepted by " + inst.OrgCode})
			}
			if err != nil || len(refused) == 0 {
				return err
			}
			return tx.AddEvent(urlRefusedEvent(o.OrderNo, strings.Join(refused, "; ")))
		})
		if err != nil {
			return 0, storeErr("apply "+o.OrderNo, err)
		}
		return ApplyAccepted, nil

	case errors.As(err, &ce) && ce.Kind == client.KindRefused:
		remark := truncate(fmt.Sprintf("apply refused: errcode %s: %s", ce.Errcode, ce.Msg), 512)
		err := s.store.InTx(ctx, func(tx model.Queries) error {
			to := model.StatusApplyRejected
			moved, err := tx.MoveOrder(o.OrderNo, movesFrom(evApplyRefused, to), to,
				model.OrderChange{}.Remark(remark).NotDue().FreeLease())
			if err != nil || !moved {
				return err // not applying any more: a notice said more than this answer
			}
			return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventStatus, Name: "apply",
				FromStatus: string(model.StatusApplying), ToStatus: string(to), Detail: remark})
		})
		if err != nil {
			return 0, storeErr("apply "+o.OrderNo, err)
		}
		return 0, &Error{Code: EUpstream, Message: fmt.Sprintf("%s refused the application: errcode %s: %s", inst.OrgCode, ce.Errcode, ce.Msg), Err: err}

	default:
		// Timeout, reset, 5xx, garbage, open breaker: the institution may or
		// may not have the order. It stays applying; the recovery job sends
		// it again with the same orderno after the back-off.
		s.applyAttemptFailed(ctx, o, model.OrderGuard{Status: []model.Status{model.StatusApplying}})
		s.logger(ctx).WithError(err).WithField("orderno", o.OrderNo).Warn("no definite answer to the apply; will re-send")
		return ApplyUnconfirmed, nil
	}
}

// applyAttemptFailed counts one apply that did not get a definite answer:
// the order stays applying, its next try waits one more back-off step, its
// lease is given up, and after the last allowed attempt it is flagged
// apply_unconfirmed for operators and taken off the recovery job's queue.
// g guards the update (the status, or the job's lease token).
func (s *Service) applyAttemptFailed(ctx context.Context, o *model.Order, g model.OrderGuard) {
	attempts := o.CheckAttempts + 1
	c := model.OrderChange{}.Attempts(attempts).FreeLease()
	if attempts >= s.set.MaxApplyAttempts {
		c = c.Flag(model.FlagApplyUnconfirmed).NotDue()
	} else {
		c = c.DueAt(s.now().Add(backoff(s.set.ApplyBackoff, attempts)))
	}
	err := s.store.Do(model.WithOp(ctx, "apply"), func(q model.Queries) error {
		_, err := q.UpdateOrder(o.OrderNo, c, g)
		return err
	})
	if err != nil {
		s.logger(ctx).WithError(err).WithField("orderno", o.OrderNo).Error("apply back-off not stored")
	}
}

// offOrigin lists the per-order URLs of an apply answer that are not on
// the institution's origins, each with why (docs/decisions.md §39), and
// counts them. continueurl is the bidder's page, not ours to call: any
// http(s) URL will do.
func (s *Service) offOrigin(inst *Institution, res wire.ApplyResult) []string {
	var out []string
	for _, u := range []struct{ name, endpoint, url string }{
		{"queryurl", client.EndpointQuery, res.QueryURL},
		{"pullurl", client.EndpointPull, res.PullURL},
		{"cancelurl", client.EndpointCancel, res.CancelURL},
	} {
		if u.url == "" {
			continue
		}
		if err := inst.Client.CheckURL(u.endpoint, u.url); err != nil {
			s.metrics.URLRefused(inst.OrgCode, u.name)
			out = append(out, u.name+" "+callCause(err))
		}
	}
	return out
}

// checkURLs insists that the URLs we will call later are absolute.
func checkURLs(r wire.ApplyResult) error {
	for name, raw := range map[string]string{"continueurl": r.ContinueURL, "queryurl": r.QueryURL, "pullurl": r.PullURL, "cancelurl": r.CancelURL} {
		if raw == "" && name == "cancelurl" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return &client.Error{Kind: client.KindBadAnswer, Endpoint: client.EndpointApply, Err: fmt.Errorf("%s is not an absolute URL", name)}
		}
	}
	return nil
}

func invalid(err error) error {
	var fe *wire.FieldError
	if errors.As(err, &fe) {
		return &Error{Code: EInvalid, Field: fe.Field, Message: fe.Reason}
	}
	return &Error{Code: EInvalid, Message: err.Error()}
}

// newOrderNo makes a time-ordered, unique orderno of 26 characters:
// G + yyyyMMddHHmmssSSS + 8 random hex digits.
func newOrderNo(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return "G" + now.UTC().Format("20060102150405.000")[:14] + now.UTC().Format(".000")[1:] + hex.EncodeToString(b[:])
}

// requestHash fingerprints an application without its orderno, to tell a
// repeated request from a different one under the same orderno.
func requestHash(req wire.ApplyRequest) (string, error) {
	req.OrderNo = ""
	b, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(append(b, []byte("\x1f"+req.OrgCode)...))
	return hex.EncodeToString(h[:]), nil
}

func orderOf(r wire.ApplyRequest, hash string) *model.Order {
	return &model.Order{OrderNo: r.OrderNo, OrgCode: r.OrgCode, Status: model.StatusApplying, RequestHash: hash,
		ApplicantName: r.ApplicantName, ApplicantCode: r.ApplicantCode, DepositAmount: r.DepositAmount,
		ProjectName: r.ProjectName, ProjectCode: r.ProjectCode, LotName: r.LotName, LotCode: r.LotCode,
		OpeningAt: r.OpeningAt, TendererName: r.TendererName, TendererCode: r.TendererCode, DeadlineAt: r.DeadlineAt,
		AccountBank: r.AccountBank, AccountName: r.AccountName, AccountNo: r.AccountNo,
		ContactName: r.ContactName, ContactPhone: r.ContactPhone, ContactEmail: r.ContactEmail}
}

func applyRequestOf(o *model.Order) wire.ApplyRequest {
	return wire.ApplyRequest{OrgCode: o.OrgCode, OrderNo: o.OrderNo, ApplicantName: o.ApplicantName,
		ApplicantCode: o.ApplicantCode, DepositAmount: o.DepositAmount, ProjectName: o.ProjectName,
		ProjectCode: o.ProjectCode, LotName: o.LotName, LotCode: o.LotCode, OpeningAt: o.OpeningAt,
		TendererName: o.TendererName, TendererCode: o.TendererCode, DeadlineAt: o.DeadlineAt,
		AccountBank: o.AccountBank, AccountName: o.AccountName, AccountNo: o.AccountNo,
		ContactName: o.ContactName, ContactPhone: o.ContactPhone, ContactEmail: o.ContactEmail}
}
