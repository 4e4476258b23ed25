package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
)

// The operators' actions through the console. Each is recorded in
// console_actions before it runs ("started") and given its result after,
// logged, and shown in the order's timeline when it concerns an order. A
// viewer's attempt is refused with EForbidden, and recorded too.

// retryAllBatch is how many dead deliveries one statement re-arms.
const retryAllBatch = 200

// maxRetryAll bounds one "retry every one" action.
const maxRetryAll = 100_000

// QueryNow asks the order's queryurl now and applies the answer, as the
// poll job would. Returns EForbidden, ENotFound, EConflict (no queryurl
// yet), EUpstream, EUnavailable.
func (c *Console) QueryNow(ctx context.Context, a Actor, orderNo string) (string, error) {
	return c.act(ctx, a, "query", orderNo, "", func(ctx context.Context) (string, error) {
		v, err := c.s.Refresh(ctx, orderNo)
		if err != nil {
			return "", err
		}
		return "queried; status " + string(v.Status), nil
	})
}

// PullNow pulls the guarantee PDF through the order's pullurl now. Returns
// EForbidden, ENotFound, EConflict (stored already, not issued, no bhno or
// pullurl), EUpstream, EUnavailable.
func (c *Console) PullNow(ctx context.Context, a Actor, orderNo string) (string, error) {
	return c.act(ctx, a, "pull", orderNo, "", func(ctx context.Context) (string, error) {
		st := c.s.store.With(ctx)
		if f, err := st.FileInfo(orderNo); err == nil {
			return "", errf(EConflict, "", "the PDF of %s is stored already (%d bytes)", orderNo, f.Size)
		} else if !errors.Is(err, model.ErrNotFound) {
			return "", storeErr("file of "+orderNo, err)
		}
		f, err := c.s.File(ctx, orderNo)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("PDF pulled (%d bytes, sha256 %s)", f.Size, f.Sha256), nil
	})
}

// Cancel asks the institution's cancelurl to cancel the order's guarantee
// (Service.Cancel). Returns EForbidden, ENotFound, EConflict, EUpstream,
// EUnavailable.
func (c *Console) Cancel(ctx context.Context, a Actor, orderNo string) (string, error) {
	return c.act(ctx, a, "cancel", orderNo, "", func(ctx context.Context) (string, error) {
		v, err := c.s.Cancel(ctx, orderNo)
		if err != nil {
			return "", err
		}
		return "cancelurl accepted; status " + string(v.Status), nil
	})
}

// RetryDelivery re-arms a dead delivery (Service.RetryDelivery). Returns
// EForbidden, ENotFound, EConflict (not dead), EUnavailable.
func (c *Console) RetryDelivery(ctx context.Context, a Actor, id int64) (string, error) {
	return c.act(ctx, a, "retry_delivery", "", "delivery "+strconv.FormatInt(id, 10), func(ctx context.Context) (string, error) {
		d, err := c.s.RetryDelivery(ctx, id)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("delivery %d to %s re-armed after %d attempts", d.ID, d.OrgCode, d.Attempts), nil
	})
}

// RetryDeliveries re-arms every dead delivery, or every one of an
// institution, a batch at a time. Returns EForbidden, EConflict (none
// dead), EUnavailable (the ones re-armed before stay re-armed).
func (c *Console) RetryDeliveries(ctx context.Context, a Actor, orgCode string) (string, error) {
	target := "dead deliveries"
	if orgCode != "" {
		target += " of " + orgCode
	}
	return c.act(ctx, a, "retry_deliveries", "", truncate(target, 128), func(ctx context.Context) (string, error) {
		st := c.s.store.With(ctx)
		var after, total int64
		for total < maxRetryAll {
			ids, err := st.DeadDeliveryIDs(orgCode, after, retryAllBatch)
			if err != nil {
				return "", storeErr("retry deliveries", fmt.Errorf("after %d re-armed: %w", total, err))
			}
			if len(ids) == 0 {
				break
			}
			after = ids[len(ids)-1]
			n, err := st.RearmDeadDeliveries(ids, c.s.now())
			if err != nil {
				return "", storeErr("retry deliveries", fmt.Errorf("after %d re-armed: %w", total, err))
			}
			total += n
		}
		if total == 0 {
			return "", errf(EConflict, "", "no dead delivery to retry")
		}
		return fmt.Sprintf("%d dead deliveries re-armed", total), nil
	})
}

// ResolveFinding marks a reconciliation finding resolved with a note
// (1 to 512 characters). Returns EForbidden, EInvalid (note), ENotFound,
// EConflict (resolved already), EUnavailable.
func (c *Console) ResolveFinding(ctx context.Context, a Actor, id int64, note string) (string, error) {
	st := c.s.store.With(ctx)
	f, err := st.FindingRecordByID(id)
	if err != nil {
		return "", storeErr("finding "+strconv.FormatInt(id, 10), err)
	}
	return c.act(ctx, a, "resolve_finding", f.OrderNo, "finding "+strconv.FormatInt(id, 10), func(ctx context.Context) (string, error) {
		switch n := len([]rune(note)); {
		case n == 0:
			return "", errf(EInvalid, "note", "say how the finding was resolved")
		case n > 512:
			return "", errf(EInvalid, "note", "the note is %d characters, at most 512", n)
		}
		ok, err := st.ResolveFinding(id, a.User, note, c.s.now())
		if err != nil {
			return "", storeErr("resolve finding", err)
		}
		if !ok {
			return "", errf(EConflict, "", "finding %d was resolved already", id)
		}
		return fmt.Sprintf("%s of %s resolved: %s", f.Kind, f.RunDate, truncate(note, 400)), nil
	})
}

// act runs an operator's action: refused to a viewer, recorded before it
// runs (no record, no action), its result recorded and logged after.
func (c *Console) act(ctx context.Context, a Actor, action, orderNo, target string, fn func(context.Context) (string, error)) (string, error) {
	if a.Role != RoleOperator {
		c.record(ctx, a, action, orderNo, target, func(context.Context) (string, error) {
			return "", errf(EForbidden, "", "%s is a %s; only an operator may act", a.User, a.Role)
		})
		return "", errf(EForbidden, "", "only an operator may do this")
	}
	return c.record(ctx, a, action, orderNo, target, fn)
}

// record writes the action as started, runs fn, and stores and logs what
// it came to. If the record cannot be written fn does not run.
func (c *Console) record(ctx context.Context, a Actor, action, orderNo, target string, fn func(context.Context) (string, error)) (string, error) {
	row := &model.ConsoleAction{UserName: a.User, Role: a.Role, Action: action, OrderNo: orderNo, Target: target,
		Result: model.ConsoleActionStarted, RemoteAddr: truncate(a.RemoteAddr, 64), RequestID: truncate(a.RequestID, 64),
		CreatedAt: c.s.now()}
	if err := c.s.store.With(ctx).InsertConsoleAction(row); err != nil {
		return "", storeErr("console action", err)
	}
	msg, err := fn(ctx)
	result := "ok"
	detail := msg
	if err != nil {
		result = ErrorCode(err)
		var e *Error
		if errors.As(err, &e) {
			detail = e.Message
		}
	}
	fields := logrus.Fields{"user": a.User, "role": a.Role, "action": action, "result": result, "remote": a.RemoteAddr,
		"request_id": a.RequestID, "console_action": row.ID}
	if orderNo != "" {
		fields["orderno"] = orderNo
	}
	if target != "" {
		fields["target"] = target
	}
	entry := c.s.log.WithFields(fields)
	if err != nil {
		entry.WithField("detail", detail).Warn("console action failed")
	} else {
		entry.Info("console action")
	}
	// The action happened either way: its result is stored even if the
	// operator's request was cancelled meanwhile.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if ferr := c.s.store.With(sctx).FinishConsoleAction(row.ID, result, truncate(detail, 512), c.s.now()); ferr != nil {
		entry.WithError(ferr).Error("console action result not stored")
	}
	return msg, err
}
