package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/model"
)

// An institution's per-order URLs (queryurl, pullurl, cancelurl) are called
// only on its own origins: base_url's, or one of its url_origins
// (docs/decisions.md §39). The client checks before every call; the apply
// answer is checked as it arrives, so that an operator hears of it before
// the first call would have been made. Either way the order is flagged
// url_refused, with an event, and the refusal is counted.

// callCause is the cause of a client's error without the institution and
// endpoint before it: why a URL was refused, without the URL itself (it
// may carry a token): "origin https://other.example:443 is neither …".
func callCause(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Err != nil {
		return ce.Err.Error()
	}
	return err.Error()
}

// urlRefusedEvent is the order's event of URLs not to be called.
func urlRefusedEvent(orderNo, why string) *model.Event {
	return &model.Event{OrderNo: orderNo, Kind: model.EventNote, Name: string(model.FlagURLRefused),
		Detail: truncate("not called: "+why+"; flagged url_refused (add the origin to the institution's url_origins if it is truly its own)", 512)}
}

// urlRefused records a call to an order's URL (name: queryurl, pullurl,
// cancelurl) that the client did not make: counted always, and the first
// time the order is flagged url_refused with an event. It returns the
// error for the API: 409 naming the URL.
func (s *Service) urlRefused(ctx context.Context, inst *Institution, o *model.Order, name string, err error) error {
	s.metrics.URLRefused(inst.OrgCode, name)
	why := name + " " + callCause(err)
	if o.Flag != model.FlagURLRefused {
		serr := s.store.InTx(context.WithoutCancel(ctx), func(tx model.Queries) error {
			if _, err := tx.UpdateOrder(o.OrderNo, model.OrderChange{}.Flag(model.FlagURLRefused), model.OrderGuard{}); err != nil {
				return err
			}
			return tx.AddEvent(urlRefusedEvent(o.OrderNo, why))
		})
		if serr != nil {
			s.logger(ctx).WithError(serr).WithField("orderno", o.OrderNo).Error("url_refused flag not stored")
		}
		s.logger(ctx).WithFields(logrus.Fields{"orderno": o.OrderNo, "institution": inst.OrgCode, "reason": why}).
			Warn("order flagged url_refused: an institution URL off its origins was not called")
	}
	return &Error{Code: EConflict, Message: fmt.Sprintf("order %s: %s; it was not called", o.OrderNo, why), Err: err}
}
