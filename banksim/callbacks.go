package banksim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/procurement/gateway/wire"
)

// Callback paths on the gateway (docs/protocol.md §3.2.3, §3.2.4, §3.2.9).
const (
	pathPayState    = "/api/guarantee/paystate"
	pathApplyNotify = "/api/guarantee/applynotify"
	pathRelease     = "/api/guarantee/release"
)

// maxAnswerBody bounds what is read of the gateway's answer to a callback.
const maxAnswerBody = 64 << 10

// Remarks (info) of the decisions.
const (
	remarkIssued  = "审核通过,保函已开具"
	remarkRefused = "资料审核不通过,不予出函(模拟拒绝)"
)

// lifecycle plays what happens after an accepted apply: the bidder pays
// (paystate) after PayDelay, then the institution decides (applynotify)
// after IssueDelay. The order's state changes before each callback is sent,
// so that queryurl reports it even when the callback never gets through:
// that is the case the gateway's polling exists for.
func (s *Sim) lifecycle(ctx context.Context, orderNo string) {
	log := s.log.WithField("orderno", orderNo)

	if !sleep(ctx, s.cfg.PayDelay) {
		return
	}
	s.mu.Lock()
	o := s.orders[orderNo]
	o.PaidAt = time.Now()
	pay := wire.PayState{
		OrderNo:      orderNo,
		Amount:       o.Fee,
		PaidAt:       o.PaidAt,
		Kind:         wire.PayKindPay,
		PayerName:    o.Request.AccountName, // the bidder pays from its basic account
		PayerAccount: o.Request.AccountNo,
	}
	s.mu.Unlock()
	log.Info("bidder paid")
	s.deliver(ctx, pathPayState, pay, &s.stats.payState)

	if !sleep(ctx, s.cfg.IssueDelay) {
		return
	}
	refuse := s.chance(s.cfg.RefuseRate)
	s.mu.Lock()
	o.DecidedAt = time.Now()
	if refuse {
		o.Status, o.Remark = StatusFailed, remarkRefused
	} else {
		o.Status, o.Remark = StatusIssued, remarkIssued
		o.GuaranteeNo = s.nextGuaranteeNo(o.DecidedAt)
		s.byGuaranteeNo[o.GuaranteeNo] = orderNo
	}
	snap := *o
	s.mu.Unlock()

	notify := wire.ApplyNotify{
		OrderNo:       orderNo,
		GuaranteeNo:   snap.GuaranteeNo,
		Remark:        snap.Remark,
		PremiumRate:   s.cfg.Rate,
		Premium:       snap.Fee,
		IssuerName:    s.cfg.Name,
		IssuerAddress: s.cfg.Address,
		IssuerPhone:   s.cfg.Phone,
	}
	if refuse {
		notify.State = wire.NotifyFailed
		log.Info("issuance refused")
	} else {
		notify.State = wire.NotifyIssued
		notify.IssuedAt = snap.DecidedAt
		if s.cfg.PDFInNotify {
			pdf, err := s.letter(snap)
			if err != nil {
				// Sent without the file all the same: the gateway
				// recovers a missing file through pullurl.
				log.WithError(err).Error("rendering the letter")
			}
			notify.File = pdf
		}
		log.WithField("bhno", snap.GuaranteeNo).Info("guarantee issued")
	}
	s.deliver(ctx, pathApplyNotify, notify, &s.stats.applyNotify)

	if refuse && s.cfg.RefundOnRefuse {
		refund := wire.PayState{OrderNo: orderNo, Amount: snap.Fee, PaidAt: time.Now(), Kind: wire.PayKindRefund}
		s.deliver(ctx, pathPayState, refund, &s.stats.payState)
	}
}

// releaseLater cancels an issued guarantee after ReleaseDelay and tells the
// gateway (release state 1, 注销).
func (s *Sim) releaseLater(ctx context.Context, orderNo, guaranteeNo string) {
	if !sleep(ctx, s.cfg.ReleaseDelay) {
		return
	}
	s.mu.Lock()
	o := s.orders[orderNo]
	o.Status = StatusCancelled
	o.ReleasedAt = time.Now()
	s.mu.Unlock()
	s.log.WithFields(map[string]any{"orderno": orderNo, "bhno": guaranteeNo}).Info("guarantee cancelled")
	s.deliver(ctx, pathRelease, wire.Release{GuaranteeNo: guaranteeNo, State: wire.ReleaseCancelled}, &s.stats.release)
}

// nextGuaranteeNo makes a bhno: prefix, issuance date (China time), and a
// six-digit sequence of this Sim.
func (s *Sim) nextGuaranteeNo(at time.Time) string {
	return fmt.Sprintf("%s%s%06d", s.cfg.GuaranteeNoPrefix, at.In(shanghai).Format("20060102"), s.seq.Add(1))
}

// deliver sends one callback in the envelope, retrying with doubling waits
// while the gateway says it could not store it (non-200, stat 0 with
// 500001) or cannot be reached, for at most CallbackAttempts tries. Any
// other stat 0 is a refusal that a retry would not change. It reports
// whether the gateway acknowledged; acked counts it.
func (s *Sim) deliver(ctx context.Context, path string, msg any, acked *atomic.Int64) bool {
	log := s.log.WithField("callback", path)
	if s.cfg.GatewayURL == "" {
		log.Debug("no GatewayURL: callback not sent")
		return false
	}
	plain, err := json.Marshal(msg)
	if err == nil {
		var text []byte
		if text, err = s.cipher.Encrypt(plain); err == nil {
			plain, err = json.Marshal(wire.Request{Data: string(text)})
		}
	}
	if err != nil { // a bug of ours
		log.WithError(err).Error("encoding the callback")
		s.stats.gaveUp.Add(1)
		return false
	}
	body := plain

	wait := s.cfg.CallbackBackoff
	for attempt := 1; ; attempt++ {
		s.stats.attempts.Add(1)
		retry, err := s.postOnce(ctx, s.cfg.GatewayURL+path, body)
		if err == nil {
			acked.Add(1)
			log.WithField("attempt", attempt).Debug("callback acknowledged")
			return true
		}
		log := log.WithError(err).WithField("attempt", attempt)
		if !retry || attempt >= s.cfg.CallbackAttempts {
			log.Warn("callback given up")
			s.stats.gaveUp.Add(1)
			return false
		}
		log.Info("callback failed; will retry")
		if !sleep(ctx, wait) {
			s.stats.gaveUp.Add(1)
			return false
		}
		wait = min(2*wait, maxCbBackoff)
	}
}

// postOnce makes one callback POST. retry tells whether a failure is worth
// another attempt.
func (s *Sim) postOnce(ctx context.Context, url string, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", s.cfg.AppKey)
	resp, err := s.client.Do(req)
	if err != nil {
		return ctx.Err() == nil, err // not when we are closing
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBody)) // lets the connection be reused
	if err != nil {
		return true, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var ans wire.Response
	if err := json.Unmarshal(raw, &ans); err != nil {
		// Whether it was stored is unknown: sending again is safe, the
		// gateway takes repeated notices.
		return true, fmt.Errorf("answer is not the generic response: %w", err)
	}
	switch {
	case ans.Stat == 1:
		return false, nil
	case ans.Errcode == wire.CodeUnavailable:
		return true, fmt.Errorf("stat 0, errcode %s: %s", ans.Errcode, ans.Msg)
	default:
		return false, fmt.Errorf("refused: stat 0, errcode %s: %s", ans.Errcode, ans.Msg)
	}
}
