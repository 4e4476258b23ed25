package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// Callback kinds: the three routes institutions post to.
const (
	KindPayState    = "paystate"
	KindApplyNotify = "applynotify"
	KindRelease     = "release"
)

// CallbackInput is one received callback, as the handler read it.
type CallbackInput struct {
	Kind       string
	AppKey     string
	Body       []byte
	RemoteAddr string
	RequestID  string
	// Admission is AdmitCallback's verdict on the sender, given from the
	// headers before the body was read; when it was not judged,
	// HandleCallback judges it.
	Admission Admission
	// The body was not taken when the sender was refused (Admission) or it
	// was over the route's limit (Oversize: 413), both unread, or when the
	// memory budget had no room for it (Busy: 503, dropped as it came).
	// Size is its declared length (-1 when undeclared), which its audit row
	// keeps instead of a digest.
	Oversize bool
	Busy     bool
	Size     int64
}

// unread reports whether the body was left unread: it is audited by its
// declared size alone, and a stranger's body is never stored.
func (in CallbackInput) unread() bool {
	return in.Oversize || in.Busy || !in.Admission.Admitted()
}

// Reply is the answer to a callback: the generic response and its HTTP
// status, and when the sender should come back (Retry-After) if it should.
type Reply struct {
	HTTPStatus int
	Body       wire.Response
	RetryAfter time.Duration
}

// callbackErr is a refusal with its errcode (docs/decisions.md §7).
type callbackErr struct {
	code       string
	msg        string
	err        error
	status     int           // the HTTP status when not the usual one for the code
	retryAfter time.Duration // Retry-After, when the sender should come back
}

// Error is the refusal and its cause: what the log shows an operator
// ("500001 storage unavailable, retry: insert callback: dial tcp …"); the
// sender is told msg only.
func (e *callbackErr) Error() string {
	if e.err != nil {
		return e.code + " " + e.msg + ": " + e.err.Error()
	}
	return e.code + " " + e.msg
}
func (e *callbackErr) Unwrap() error { return e.err }

func refuse(code, format string, args ...any) *callbackErr {
	return &callbackErr{code: code, msg: fmt.Sprintf(format, args...)}
}

// receipt is what is known of one callback as it is taken: its sender,
// what it is about and what became of it, for its audit row, its log line
// and its metric.
type receipt struct {
	inst        *Institution
	orderNo     string
	guaranteeNo string
	result      string // model.Callback*
	note        string
}

// HandleCallback takes one callback: its sender judged from the headers
// (in.Admission: 100001 for an unknown appKey or a refused source, 500002
// over the rate), it decrypts the body (100002), validates every field
// (100003), then in one transaction records the callback with its dedup
// key, applies its effect and appends the order's events. It answers stat 1
// only after the commit. A callback whose dedup key was accepted before
// answers stat 1 and changes nothing. Unknown order or guarantee → 200001;
// facts that contradict what is stored → 200002; storage down, or no room
// in the memory budget → HTTP 503 with 500001, so that the institution
// sends it again. Refusals are audited, those at the door without their
// body and at most server.stranger_audit_rate a second (admission.go).
func (s *Service) HandleCallback(ctx context.Context, in CallbackInput) Reply {
	start := time.Now()
	if !in.Admission.judged {
		in.Admission = s.AdmitCallback(in.AppKey, in.RemoteAddr)
	}
	// A refused sender whose key is known is still put to its account.
	out := receipt{result: model.CallbackAccepted, inst: in.Admission.inst}
	err := s.takeCallback(ctx, in, &out)

	var reply Reply
	var ce *callbackErr
	switch {
	case err == nil:
		reply = Reply{HTTPStatus: http.StatusOK, Body: wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "成功"}}
	case errors.As(err, &ce):
		out.result = model.CallbackRejected
		status := http.StatusOK
		if ce.status != 0 {
			status = ce.status
		} else if ce.code == wire.CodeUnavailable {
			status = http.StatusServiceUnavailable
		} else if ce.code == codeRateLimited {
			status = http.StatusTooManyRequests
		}
		reply = Reply{HTTPStatus: status, Body: wire.Response{Stat: 0, Errcode: ce.code, Msg: ce.msg}, RetryAfter: ce.retryAfter}
	default:
		out.result = model.CallbackRejected
		reply = Reply{HTTPStatus: http.StatusServiceUnavailable, Body: wire.Response{Stat: 0, Errcode: wire.CodeUnavailable, Msg: "storage unavailable, retry"}}
	}
	org := ""
	if out.inst != nil {
		org = out.inst.OrgCode
	}
	// Refusals are audited too; what was accepted has its row already.
	var auditErr error
	if out.result == model.CallbackRejected && reply.Body.Errcode != wire.CodeUnavailable {
		if !in.Admission.Admitted() && !s.door.take() {
			// Over the audit rate of refusals at the door: counted, and
			// summed up in a line at most once a minute, no more.
			s.metrics.CallbackUnaudited(in.Kind)
			s.metrics.Callback(org, in.Kind, out.result, reply.Body.Errcode, time.Since(start))
			if n, since := s.door.skip(s.now()); n > 0 {
				s.log.WithFields(logrus.Fields{"unaudited": n, "since": since.Format(time.RFC3339), "kind": in.Kind,
					"errcode": reply.Body.Errcode}).Warn("callbacks refused at the door and not audited (over server.stranger_audit_rate)")
			}
			return reply
		}
		auditErr = s.audit(ctx, in, &out, reply.Body, nil)
	}
	d := time.Since(start)
	s.metrics.Callback(org, in.Kind, out.result, reply.Body.Errcode, d)
	size := int64(len(in.Body))
	if in.unread() {
		size = in.Size
	}
	fields := logrus.Fields{"institution": org, "kind": in.Kind, "result": out.result,
		"errcode": reply.Body.Errcode, "latency_ms": d.Milliseconds(), "request_id": in.RequestID, "bytes": size}
	if out.orderNo != "" {
		fields["orderno"] = out.orderNo
	}
	if out.guaranteeNo != "" {
		fields["bhno"] = out.guaranteeNo
	}
	if auditErr != nil {
		fields["audit_error"] = auditErr.Error()
	}
	entry := s.log.WithFields(fields)
	switch {
	case reply.HTTPStatus >= 500 && !in.Busy:
		entry.WithError(err).Error("callback not stored")
	case err != nil:
		entry.WithField("reason", reply.Body.Msg).Warn("callback refused")
	default:
		entry.Info("callback")
	}
	return reply
}

// codeRateLimited answers a sender over its rate limit (HTTP 429, stat 0):
// not in docs/decisions.md §7, which has no code for it; the sender retries.
const codeRateLimited = "500002"

func (s *Service) takeCallback(ctx context.Context, in CallbackInput, out *receipt) error {
	if r := in.Admission.refused; r != nil {
		return r
	}
	if in.Oversize {
		return &callbackErr{code: wire.CodeBadParam, msg: "body too large", status: http.StatusRequestEntityTooLarge}
	}
	if in.Busy {
		return &callbackErr{code: wire.CodeUnavailable, msg: "too many large bodies in flight, retry later",
			retryAfter: bodyRetryAfter}
	}
	ct, err := wire.Ciphertext(in.Body)
	if err != nil {
		return refuse(wire.CodeBadCipher, "body is not an envelope")
	}
	plain, err := out.inst.Cipher.Decrypt(ct)
	if err != nil {
		return refuse(wire.CodeBadCipher, "data does not decrypt under this appKey's secret")
	}
	// On a refusal for a later field, the audit row still names the order
	// or guarantee, so that the refusal shows in the order's history.
	switch in.Kind {
	case KindPayState:
		p, err := wire.ParsePayState(plain)
		out.orderNo = validField(err, "orderno", p.OrderNo)
		if err != nil {
			return badParam(err)
		}
		return s.payState(ctx, in, out, p)
	case KindApplyNotify:
		n, err := wire.ParseApplyNotify(plain)
		out.orderNo, out.guaranteeNo = validField(err, "orderno", n.OrderNo), validField(err, "bhno", n.GuaranteeNo)
		if err != nil {
			s.countRefusedFile(out.inst, "applynotify", err)
			return badParam(err)
		}
		return s.applyNotify(ctx, in, out, n)
	case KindRelease:
		r, err := wire.ParseRelease(plain)
		out.guaranteeNo = validField(err, "bhno", r.GuaranteeNo)
		if err != nil {
			return badParam(err)
		}
		return s.release(ctx, in, out, r)
	}
	return refuse(wire.CodeBadParam, "unknown callback %q", in.Kind)
}

// countRefusedFile counts a guarantee file refused as no readable PDF.
func (s *Service) countRefusedFile(inst *Institution, source string, err error) {
	if errors.Is(err, wire.ErrNotPDF) {
		s.metrics.FileRefused(inst.OrgCode, source)
	}
}

// validField returns v unless err refused the parsing at field (the parser
// stops at the first broken rule, in the interface's order: a value read
// before the broken one is valid, one after it is empty anyway).
func validField(err error, field, v string) string {
	var fe *wire.FieldError
	if err == nil || errors.As(err, &fe) && fe.Field != field && fe.Field != "body" {
		return v
	}
	return ""
}

func badParam(err error) error {
	var fe *wire.FieldError
	if errors.As(err, &fe) {
		return &callbackErr{code: wire.CodeBadParam, msg: "invalid parameter " + fe.Field + ": " + fe.Reason, err: err}
	}
	return &callbackErr{code: wire.CodeBadParam, msg: "invalid parameters", err: err}
}

// dedupKey identifies "the same callback" of one institution.
func dedupKey(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x1f")))
	return hex.EncodeToString(h[:])
}

// errRepeat says the callback's dedup key was accepted before.
var errRepeat = errors.New("callback accepted before")

// accept takes one callback in one transaction: find locates what the
// callback is about (the order, locked where the effect derives from it)
// and names it in out; then the callback is recorded under its dedup key;
// then effect applies it. Finding first puts the order's name on every row
// of the callback, the repeat's included, and makes concurrent callbacks of
// one order queue on its row instead of reading it stale. If the key was
// taken by an earlier callback, the unique index says so and nothing is
// applied: the repeat is audited as a duplicate and acknowledged.
func (s *Service) accept(ctx context.Context, in CallbackInput, out *receipt, key string,
	find func(tx model.Queries) (*model.Order, error), effect func(tx model.Queries, o *model.Order, cb *model.Callback) error) error {
	// A transaction refused over a conflict runs again from the start
	// (model.Store.InTx), and what an attempt found out goes with it.
	first := *out
	err := s.store.InTx(model.WithOp(ctx, in.Kind), func(tx model.Queries) error {
		*out = first
		o, err := find(tx)
		if err != nil {
			return err
		}
		out.orderNo = o.OrderNo
		cb := s.callbackRow(in, out, wire.Response{Errcode: wire.CodeOK}, &key)
		if err := tx.InsertCallback(cb); errors.Is(err, model.ErrDuplicate) {
			return errRepeat
		} else if err != nil {
			return err
		}
		if err := effect(tx, o, cb); err != nil {
			return err
		}
		if out.result != model.CallbackAccepted || out.note != "" {
			// The effect decided the callback was late: say so in its row.
			return tx.SetCallbackResult(cb.ID, out.result, out.note)
		}
		return nil
	})
	var ce *callbackErr
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errRepeat):
		out.result = model.CallbackDuplicate
		if aerr := s.audit(ctx, in, out, wire.Response{Errcode: wire.CodeOK}, nil); aerr != nil {
			// The original is stored, so stat 1 would be true; but a store
			// that cannot write the audit row is not well, and the sender
			// loses nothing by sending once more.
			return &callbackErr{code: wire.CodeUnavailable, msg: "storage unavailable, retry", err: aerr}
		}
		return nil
	case errors.As(err, &ce):
		return err
	case errors.Is(err, model.ErrDuplicate):
		// A unique index of the effect refused it: it contradicts a stored fact.
		return &callbackErr{code: wire.CodeConflict, msg: "conflicts with what is stored", err: err}
	default:
		return &callbackErr{code: wire.CodeUnavailable, msg: "storage unavailable, retry", err: err}
	}
}

// audit records a callback outside the effect's transaction: refusals and
// duplicates, which change nothing else.
func (s *Service) audit(ctx context.Context, in CallbackInput, out *receipt, resp wire.Response, key *string) error {
	cb := s.callbackRow(in, out, resp, key)
	cb.Msg = truncate(resp.Msg, 500)
	return s.store.Do(model.WithOp(ctx, "audit"), func(q model.Queries) error { return q.InsertCallback(cb) })
}

func (s *Service) callbackRow(in CallbackInput, out *receipt, resp wire.Response, key *string) *model.Callback {
	sum := sha256.Sum256(in.Body)
	cb := &model.Callback{Kind: in.Kind, OrderNo: truncate(out.orderNo, 32), GuaranteeNo: truncate(out.guaranteeNo, 64),
		DedupKey: key, BodySha256: hex.EncodeToString(sum[:]), BodySize: int64(len(in.Body)),
		Result: out.result, Errcode: resp.Errcode, RemoteAddr: truncate(in.RemoteAddr, 64),
		RequestID: truncate(in.RequestID, 64), ReceivedAt: s.now()}
	if out.inst != nil {
		cb.OrgCode = out.inst.OrgCode
	}
	if in.unread() {
		// Never read: no digest, the declared size, and never a body: a
		// stranger's bytes are not ours to keep (docs/decisions.md §34).
		cb.BodySha256, cb.BodySize = "", in.Size
		return cb
	}
	// A body over the limit carries a PDF, which is stored once, in
	// guarantee_files; its audit keeps the digest and the size.
	if int64(len(in.Body)) <= rawAuditLimit {
		cb.Body = in.Body
	}
	return cb
}

// payState records a pay or refund and derives the order's paid and
// refunded amounts from its payments. Dedup key: institution, orderno,
// type, paytime and paymoney. Unknown orderno → 200001. Under load,
// concurrent paystates share one transaction (batch.go); payOne is the
// path of one alone, and of any the batch hands back.
func (s *Service) payState(ctx context.Context, in CallbackInput, out *receipt, p wire.PayState) error {
	org := out.inst.OrgCode
	key := dedupKey(KindPayState, org, p.OrderNo, p.Kind, fmt.Sprint(p.PaidAt.UnixMilli()), p.Amount.StringFixed(2))
	if handled, err := s.pays.do(&batchJob{ctx: ctx, in: in, out: out, key: key, pay: p}); handled {
		return err
	}
	return s.payOne(ctx, in, out, p, key)
}

// payOne takes one paystate in its own transaction.
func (s *Service) payOne(ctx context.Context, in CallbackInput, out *receipt, p wire.PayState, key string) error {
	// The order is locked before the payment is added: two payments of one
	// order at once would otherwise each count from the same amounts, and
	// the later update would lose the earlier payment.
	find := func(tx model.Queries) (*model.Order, error) { return s.ownOrder(tx, out.inst.OrgCode, p.OrderNo) }
	return s.accept(ctx, in, out, key, find, func(tx model.Queries, o *model.Order, cb *model.Callback) error {
		sums := model.Amounts{Paid: o.PaidAmount, Refunded: o.RefundedAmount}
		if err := checkPay(o.OrderNo, sums, p); err != nil {
			return err
		}
		pay, event := payEffect(o, cb, p, key, &sums)
		if err := tx.InsertPayment(pay); err != nil {
			return err
		}
		if _, err := tx.UpdateOrder(o.OrderNo, model.OrderChange{}.Amounts(sums), model.OrderGuard{}); err != nil {
			return err
		}
		return tx.AddEvent(event)
	})
}

// checkPay refuses a paystate that would leave the order's amounts (sums,
// before it) false or unstorable (docs/decisions.md §36): a refund that
// takes the refunds above the payments is 200002, naming the amounts; a
// payment that takes the paid sum beyond what DECIMAL(18,2) holds is
// 100003 on paymoney. A refund sent before the payment it returns is
// refused too, and taken when the institution sends it again after the
// payment.
func checkPay(orderNo string, sums model.Amounts, p wire.PayState) *callbackErr {
	after := addPay(sums, p)
	if p.Kind == wire.PayKindRefund {
		if after.Refunded.GreaterThan(after.Paid) {
			return refuse(wire.CodeConflict, "refund %s would bring the refunds of order %s to %s, above the %s paid",
				p.Amount.StringFixed(2), orderNo, after.Refunded.StringFixed(2), after.Paid.StringFixed(2))
		}
		return nil
	}
	if after.Paid.GreaterThan(wire.MaxMoney) {
		return refuse(wire.CodeBadParam, "invalid parameter paymoney: %s would bring the paid amount of order %s to %s, beyond DECIMAL(18,2)",
			p.Amount.StringFixed(2), orderNo, after.Paid.StringFixed(2))
	}
	return nil
}

// addPay is the order's amounts with one more pay or refund.
func addPay(sums model.Amounts, p wire.PayState) model.Amounts {
	if p.Kind == wire.PayKindRefund {
		sums.Refunded = sums.Refunded.Add(p.Amount)
	} else {
		sums.Paid = sums.Paid.Add(p.Amount)
	}
	return sums
}

// payEffect is what one paystate adds to its locked order: the payment, the
// event, and the amounts moved on from sums. The order is locked and its
// amounts are the sum of its payments so far, so adding this one keeps them
// so, without reading every payment again (decimals in Go: exact on SQLite
// too).
func payEffect(o *model.Order, cb *model.Callback, p wire.PayState, key string, sums *model.Amounts) (*model.Payment, *model.Event) {
	pay := &model.Payment{DedupKey: key, OrderNo: o.OrderNo, OrgCode: o.OrgCode, Kind: p.Kind, Amount: p.Amount,
		PaidAt: p.PaidAt, PayerName: p.PayerName, PayerAccount: p.PayerAccount, CallbackID: cb.ID}
	what := "pay"
	if p.Kind == wire.PayKindRefund {
		what = "refund"
	}
	*sums = addPay(*sums, p)
	event := &model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: what, RefID: &cb.ID,
		Detail: fmt.Sprintf("%s %s yuan at %s from %s", what, p.Amount.StringFixed(2),
			p.PaidAt.Format(time.RFC3339), MaskAccount(p.PayerAccount))}
	return pay, event
}

// ownOrder finds and locks the order of this institution; another
// institution's order is as unknown to the sender as one that does not
// exist (200001).
func (s *Service) ownOrder(tx model.Queries, org, orderNo string) (*model.Order, error) {
	o, err := tx.LockOrder(orderNo)
	if errors.Is(err, model.ErrNotFound) || err == nil && o.OrgCode != org {
		return nil, refuse(wire.CodeUnknown, "unknown orderno %s", orderNo)
	}
	return o, err
}

// applyNotify applies the institution's decision (staus 2 processing, 0
// failed, 1 issued). Dedup key: institution, orderno, state, bhno and the
// file's digest: an issuance sent again with the PDF it lacked is news, the
// same notice again is not.
func (s *Service) applyNotify(ctx context.Context, in CallbackInput, out *receipt, n wire.ApplyNotify) error {
	org := out.inst.OrgCode
	fileSum := ""
	if n.File != nil {
		sum := sha256.Sum256(n.File)
		fileSum = hex.EncodeToString(sum[:])
	}
	key := dedupKey(KindApplyNotify, org, n.OrderNo, n.State, n.GuaranteeNo, fileSum)
	if handled, err := s.notices.do(&batchJob{ctx: ctx, in: in, out: out, key: key, notice: n}); handled {
		return err
	}
	return s.notifyOne(ctx, in, out, n, key)
}

// notifyOne takes one applynotify in its own transaction.
func (s *Service) notifyOne(ctx context.Context, in CallbackInput, out *receipt, n wire.ApplyNotify, key string) error {
	find := func(tx model.Queries) (*model.Order, error) { return s.ownOrder(tx, out.inst.OrgCode, n.OrderNo) }
	return s.accept(ctx, in, out, key, find, func(tx model.Queries, o *model.Order, cb *model.Callback) error {
		res, err := s.applyProgress(tx, o, noticeProgress(n, &cb.ID))
		if err != nil {
			return err
		}
		if res.late {
			out.result, out.note = model.CallbackLate, res.note
		}
		return nil
	})
}

// noticeProgress is what an applynotify says, for applyProgress.
func noticeProgress(n wire.ApplyNotify, refID *int64) progress {
	return progress{state: n.State, guaranteeNo: n.GuaranteeNo, remark: n.Remark, source: "applynotify", refID: refID,
		issuer: &model.IssuerDetails{Rate: n.PremiumRate, Premium: n.Premium, Name: n.IssuerName, Address: n.IssuerAddress,
			Phone: n.IssuerPhone}, issuedAt: n.IssuedAt, file: n.File, missing: n.Missing}
}

// release records the guarantee's end: state 0 surrendered (退保), 1
// cancelled (注销), from issued or cancelling. Dedup key: institution, bhno,
// state. Unknown bhno → 200001; any other status → 200002.
func (s *Service) release(ctx context.Context, in CallbackInput, out *receipt, r wire.Release) error {
	org := out.inst.OrgCode
	key := dedupKey(KindRelease, org, r.GuaranteeNo, r.State)
	ev, to := evCancelled, model.StatusCancelled
	if r.State == wire.ReleaseSurrendered {
		ev, to = evSurrendered, model.StatusSurrendered
	}
	find := func(tx model.Queries) (*model.Order, error) {
		o, err := tx.OrderByGuarantee(org, r.GuaranteeNo)
		if errors.Is(err, model.ErrNotFound) {
			return nil, refuse(wire.CodeUnknown, "unknown bhno %s", r.GuaranteeNo)
		}
		return o, err
	}
	return s.accept(ctx, in, out, key, find, func(tx model.Queries, o *model.Order, cb *model.Callback) error {
		// The conditional update from every status the table moves from
		// decides; o.Status only words the refusal.
		moved, err := tx.MoveOrder(o.OrderNo, movesFrom(ev, to), to, model.OrderChange{}.NotDue())
		if err != nil {
			return err
		}
		if !moved {
			return refuse(wire.CodeConflict, "guarantee %s is %s, cannot become %s", r.GuaranteeNo, o.Status, to)
		}
		return tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventStatus, Name: KindRelease,
			FromStatus: string(o.Status), ToStatus: string(to), RefID: &cb.ID})
	})
}

// truncate cuts s to at most n characters: the columns are VARCHAR(n),
// which counts characters, as docs/protocol.md's string(n) does. It never cuts
// a character in half.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s // no more bytes than n, so no more characters
	}
	count := 0
	for i := range s {
		if count == n {
			return s[:i]
		}
		count++
	}
	return s
}
