package banksim

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/procurement/gateway/wire"
)

// maxRequestBody bounds what a provider endpoint reads: the gateway's
// requests are small (apply is the largest, a few KiB once encrypted).
const maxRequestBody = 1 << 20

// msgOK is the msg of every successful answer.
const msgOK = "成功"

// reply is what an endpoint decided: a success with optional data (sent
// encrypted), or stat 0 with an errcode and a message.
type reply struct {
	code string
	msg  string
	data any // marshalled to JSON and encrypted; nil: data ""
}

func ok(data any) reply           { return reply{code: wire.CodeOK, msg: msgOK, data: data} }
func fail(code, msg string) reply { return reply{code: code, msg: msg} }

// badParam maps a parse error to 100003, naming the field.
func badParam(err error) reply {
	var fe *wire.FieldError
	if errors.As(err, &fe) {
		return fail(wire.CodeBadParam, fe.Error())
	}
	return fail(wire.CodeBadParam, err.Error())
}

// endpoint handles one decrypted request.
type endpoint func(r *http.Request, plain []byte) reply

// fault is an injected failure of a provider answer.
type fault int

const (
	faultNone    fault = iota
	faultHTTP500       // HTTP 500, nothing done
	faultStat0         // stat 0 errcode 500001, nothing done
	faultHang          // done, answer after HangFor (past the client's timeout)
	faultGarbage       // done, answer a body that is not the envelope
)

// garbageBody is what a broken proxy in front of an institution answers.
const garbageBody = "<html><head><title>502 Bad Gateway</title></head><body>upstream sent an invalid response</body></html>\n"

func (s *Sim) routes() {
	p := s.cfg.Prefix
	s.mux.Handle("POST "+p+"/guarantee/apply", s.post(&s.stats.apply, s.apply))
	s.mux.Handle("POST "+p+"/guarantee/cost", s.post(&s.stats.cost, s.costEstimate))
	s.mux.Handle("POST "+p+"/guarantee/xmstate", s.post(&s.stats.xmstate, s.xmstate))
	s.mux.Handle("POST "+p+"/orders/{orderno}/query", s.post(&s.stats.query, s.query))
	s.mux.Handle("POST "+p+"/orders/{orderno}/pull", s.post(&s.stats.pull, s.pull))
	s.mux.Handle("POST "+p+"/orders/{orderno}/cancel", s.post(&s.stats.cancel, s.cancelOrder))
	s.mux.HandleFunc("GET "+p+"/continue/{orderno}", s.continuePage)
}

// post wraps an endpoint with what every POST of docs/protocol.md does: the
// latency, the injected fault, the appKey check, the envelope and the
// cipher, and the generic response.
func (s *Sim) post(counter *atomic.Int64, h endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		counter.Add(1)
		ctx := r.Context()
		if !sleep(ctx, s.cfg.Latency) {
			return // the caller left
		}

		f := s.drawFault()
		switch f {
		case faultHTTP500:
			http.Error(w, "simulated failure", http.StatusInternalServerError)
			return
		case faultStat0:
			s.writeReply(w, fail(wire.CodeUnavailable, "系统繁忙,请稍后重试(模拟故障)"))
			return
		}

		rep := s.handle(r, h)

		switch f {
		case faultHang:
			// The work is done; the answer comes too late for the caller,
			// or not at all if it gives up. Close cuts the hang short.
			s.hang(ctx)
			if ctx.Err() != nil {
				return
			}
		case faultGarbage:
			w.Header().Set("Content-Type", "text/html;charset=utf-8")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, garbageBody)
			return
		}
		s.writeReply(w, rep)
	})
}

// handle authenticates, opens the envelope and runs the endpoint.
func (s *Sim) handle(r *http.Request, h endpoint) reply {
	// Constant time, as the gateway does: the appKey is half a credential.
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("appKey")), []byte(s.cfg.AppKey)) != 1 {
		return fail(wire.CodeBadAppKey, "appKey 无效")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxRequestBody))
	if err != nil {
		return fail(wire.CodeBadParam, "body: unreadable or too large")
	}
	text, err := wire.Ciphertext(body)
	if err != nil {
		return fail(wire.CodeBadCipher, "报文解密失败: "+err.Error())
	}
	plain, err := s.cipher.Decrypt(text)
	if err != nil {
		return fail(wire.CodeBadCipher, "报文解密失败")
	}
	return h(r, plain)
}

// hang sleeps HangFor, until the caller leaves or the Sim closes.
func (s *Sim) hang(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	sleep(ctx, s.cfg.HangFor)
}

// drawFault decides whether this answer fails, and how.
func (s *Sim) drawFault() fault {
	if !s.chance(s.cfg.FailRate) {
		return faultNone
	}
	s.stats.injected.Add(1)
	return fault(1 + s.intN(4))
}

// writeReply writes the generic response, HTTP 200 whatever the stat.
func (s *Sim) writeReply(w http.ResponseWriter, rep reply) {
	resp := wire.Response{Stat: 0, Errcode: rep.code, Msg: rep.msg}
	if rep.code == wire.CodeOK {
		resp.Stat = 1
	}
	if rep.data != nil {
		plain, err := json.Marshal(rep.data)
		if err == nil {
			var text []byte
			if text, err = s.cipher.Encrypt(plain); err == nil {
				resp.Data = string(text)
			}
		}
		if err != nil { // a bug of ours, not the caller's
			s.log.WithError(err).Error("encoding the answer")
			resp = wire.Response{Stat: 0, Errcode: wire.CodeUnavailable, Msg: "内部错误"}
		}
	}
	out, err := json.Marshal(resp)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Write(out)
}

// apply accepts an application and starts its lifecycle. The orderno is the
// idempotency key: the same orderno again gets the same answer and no
// second lifecycle, as the gateway's retries of an outcome-unknown apply
// require.
func (s *Sim) apply(r *http.Request, plain []byte) reply {
	req, err := wire.ParseApplyRequest(plain, false)
	if err != nil {
		return badParam(err)
	}
	log := s.log.WithField("orderno", req.OrderNo)

	s.mu.Lock()
	if o, found := s.orders[req.OrderNo]; found {
		res, prev := o.Result, o.Request
		s.mu.Unlock()
		if !sameApply(prev, req) {
			// A gateway bug worth seeing: it must not reuse an orderno.
			log.Warn("apply repeated with other parameters; answering as the first time")
		}
		log.Debug("apply repeated")
		return ok(res)
	}

	base := s.publicBase(r)
	order := "/orders/" + url.PathEscape(req.OrderNo)
	o := &Order{
		Request: req,
		Result: wire.ApplyResult{
			ContinueURL: base + "/continue/" + url.PathEscape(req.OrderNo),
			QueryURL:    base + order + "/query",
			PullURL:     base + order + "/pull",
			CancelURL:   base + order + "/cancel",
		},
		Fee:       s.fee(req.DepositAmount),
		Status:    StatusProcessing,
		AppliedAt: time.Now(),
	}
	if s.cfg.NoCancelURL {
		o.Result.CancelURL = ""
	}
	s.orders[req.OrderNo] = o
	started := s.goLocked(func(ctx context.Context) { s.lifecycle(ctx, req.OrderNo) })
	res := o.Result
	s.mu.Unlock()

	if !started {
		log.Warn("apply accepted after Close: no lifecycle")
	}
	log.WithField("fee", o.Fee.StringFixed(2)).Info("apply accepted")
	return ok(res)
}

// sameApply compares two applications in their wire form, which is what
// the gateway meant to send (times in ms, money in fen).
func sameApply(a, b wire.ApplyRequest) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// publicBase is where the per-order URLs live: PublicURL, or else the
// scheme and Host the apply came in on, plus the prefix.
func (s *Sim) publicBase(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + s.cfg.Prefix
}

// costEstimate answers /guarantee/cost: the fee, or for a share of the
// answers (DescribeRate) a describe text instead, which the interface
// allows and a gateway must show as it is.
func (s *Sim) costEstimate(_ *http.Request, plain []byte) reply {
	req, err := wire.ParseCostRequest(plain)
	if err != nil {
		return badParam(err)
	}
	if req.OrgCode != s.cfg.OrgCode {
		return fail(wire.CodeBadParam, fmt.Sprintf("orgcode: %q is not this institution", req.OrgCode))
	}
	if s.chance(s.cfg.DescribeRate) {
		return ok(wire.CostResult{Description: fmt.Sprintf("费率%s%%,最低%s元,以实际出函为准",
			s.cfg.Rate.Shift(2).String(), s.cfg.MinFee.StringFixed(2))})
	}
	fee := s.fee(req.DepositAmount)
	return ok(wire.CostResult{Fee: &fee})
}

// xmstate records a project's final state. A real institution would, say,
// surrender the guarantees of a failed tender; the simulator only keeps it
// for tests to read (ProjectStates).
func (s *Sim) xmstate(_ *http.Request, plain []byte) reply {
	ps, err := wire.ParseProjectState(plain)
	if err != nil {
		return badParam(err)
	}
	s.mu.Lock()
	s.projects = append(s.projects, ps)
	s.mu.Unlock()
	s.log.WithFields(map[string]any{"xmcode": ps.ProjectCode, "bdcode": ps.LotCode, "state": ps.State}).Info("xmstate received")
	return ok(nil)
}

// query answers queryurl: the order's status (2 processing, 1 issued with
// its bhno, 0 refused) and when it was decided.
func (s *Sim) query(r *http.Request, plain []byte) reply {
	ref, err := wire.ParseOrderRef(plain)
	if err != nil {
		return badParam(err)
	}
	// The URL names the order too; the two disagreeing is a caller's bug.
	if p := r.PathValue("orderno"); p != ref.OrderNo {
		return fail(wire.CodeBadParam, fmt.Sprintf("orderno: %q does not match the queryurl's order %q", ref.OrderNo, p))
	}
	o, found := s.Order(ref.OrderNo)
	if !found {
		return fail(wire.CodeUnknown, "订单不存在: "+ref.OrderNo)
	}
	q := wire.QueryResult{DealtAt: o.DecidedAt, GuaranteeNo: o.GuaranteeNo}
	switch o.Status {
	case StatusProcessing:
		q.Status, q.Describe = wire.NotifyProcessing, "保函办理中"
	case StatusIssued:
		q.Status, q.Describe = wire.NotifyIssued, "保函已开具"
	case StatusCancelled:
		// queryurl reports the issuance; the cancellation is release's.
		q.Status, q.Describe = wire.NotifyIssued, "保函已开具,已注销"
	case StatusFailed:
		q.Status, q.Describe = wire.NotifyFailed, o.Remark
	}
	return ok(q)
}

// pull answers pullurl with the letter of an issued guarantee.
func (s *Sim) pull(r *http.Request, plain []byte) reply {
	ref, err := wire.ParseGuaranteeRef(plain)
	if err != nil {
		return badParam(err)
	}
	o, rep := s.byGuarantee(r, ref.GuaranteeNo)
	if rep != nil {
		return *rep
	}
	pdf, err := s.Letter(o.Request.OrderNo)
	if err != nil {
		s.log.WithError(err).WithField("bhno", ref.GuaranteeNo).Error("rendering the letter")
		return fail(wire.CodeUnavailable, "保函文件生成失败,请稍后重试")
	}
	return ok(wire.PullResult{Name: "电子投标保函-" + o.GuaranteeNo + ".pdf", File: pdf, Remark: "模拟机构出具"})
}

// cancelOrder answers cancelurl: accepted, and the release callback (state
// 1, 注销) follows after ReleaseDelay. A second cancel is accepted without
// a second release.
func (s *Sim) cancelOrder(r *http.Request, plain []byte) reply {
	ref, err := wire.ParseGuaranteeRef(plain)
	if err != nil {
		return badParam(err)
	}
	if _, rep := s.byGuarantee(r, ref.GuaranteeNo); rep != nil {
		return *rep
	}
	s.mu.Lock()
	o := s.orders[s.byGuaranteeNo[ref.GuaranteeNo]]
	first := o.CancelledAt.IsZero()
	if first {
		o.CancelledAt = time.Now()
		orderNo, guaranteeNo := o.Request.OrderNo, o.GuaranteeNo
		s.goLocked(func(ctx context.Context) { s.releaseLater(ctx, orderNo, guaranteeNo) })
	}
	s.mu.Unlock()
	s.log.WithFields(map[string]any{"bhno": ref.GuaranteeNo, "first": first}).Info("cancel accepted")
	return ok(nil)
}

// byGuarantee finds the order of a bhno, which must be the order of the
// URL the request came to. It answers the stat 0 to send otherwise.
func (s *Sim) byGuarantee(r *http.Request, guaranteeNo string) (Order, *reply) {
	s.mu.Lock()
	orderNo, found := s.byGuaranteeNo[guaranteeNo]
	s.mu.Unlock()
	if !found {
		rep := fail(wire.CodeUnknown, "保函编号不存在: "+guaranteeNo)
		return Order{}, &rep
	}
	if p := r.PathValue("orderno"); p != orderNo {
		rep := fail(wire.CodeUnknown, fmt.Sprintf("保函编号 %s 不属于订单 %s", guaranteeNo, p))
		return Order{}, &rep
	}
	o, _ := s.Order(orderNo)
	return o, nil
}

// continueTmpl stands in for the institution's page where the bidder adds
// materials and pays; the simulator pays by itself after PayDelay.
var continueTmpl = template.Must(template.New("continue").Parse(`<!doctype html>
<html lang="zh-CN">
<head><meta charset="utf-8"><title>继续办理 {{.Request.OrderNo}}</title></head>
<body>
<h1>{{.Issuer}} · 电子投标保函 继续办理</h1>
<p><em>Simulated institution (banksim): payment and issuance happen by themselves.</em></p>
<table>
<tr><th>订单号</th><td>{{.Request.OrderNo}}</td></tr>
<tr><th>申请企业</th><td>{{.Request.ApplicantName}} ({{.Request.ApplicantCode}})</td></tr>
<tr><th>项目</th><td>{{.Request.ProjectName}} / {{.Request.LotName}}</td></tr>
<tr><th>保证金金额</th><td>{{.Request.DepositAmount.StringFixed 2}} 元</td></tr>
<tr><th>保函费用</th><td>{{.Fee.StringFixed 2}} 元</td></tr>
<tr><th>状态</th><td>{{.Status}}{{with .GuaranteeNo}} · 保函编号 {{.}}{{end}}</td></tr>
</table>
</body>
</html>
`))

// continuePage serves continueurl.
func (s *Sim) continuePage(w http.ResponseWriter, r *http.Request) {
	s.stats.cont.Add(1)
	o, found := s.Order(r.PathValue("orderno"))
	if !found {
		http.NotFound(w, r)
		return
	}
	var buf bytes.Buffer
	if err := continueTmpl.Execute(&buf, struct {
		Order
		Issuer string
	}{o, s.cfg.Name}); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.Write(buf.Bytes())
}
