package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/shopspring/decimal"
)

// Enumerations of docs/protocol.md, as sent on the wire.
const (
	PayKindPay    = "1"
	PayKindRefund = "2"

	NotifyFailed     = "0"
	NotifyIssued     = "1"
	NotifyProcessing = "2"

	ReleaseSurrendered = "0" // 退保
	ReleaseCancelled   = "1" // 注销
)

// ApplyRequest is /guarantee/apply's parameters (docs/protocol.md §3.2.1). The
// bidding module posts the same fields plus orgcode to POST /v1/guarantees.
type ApplyRequest struct {
	OrgCode       string // which institution; not sent to it
	ApplicantName string
	ApplicantCode string
	DepositAmount decimal.Decimal
	OrderNo       string
	ProjectName   string
	ProjectCode   string
	LotName       string
	LotCode       string
	OpeningAt     time.Time
	TendererName  string
	TendererCode  string
	DeadlineAt    time.Time
	AccountBank   string
	AccountName   string
	AccountNo     string
	ContactName   string
	ContactPhone  string
	ContactEmail  string
}

// MarshalJSON writes the interface's field names, money with two decimals
// and times as epoch milliseconds.
func (a ApplyRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ApplicantName string `json:"qyname"`
		ApplicantCode string `json:"qycode"`
		DepositAmount Amount `json:"bzjmoney"`
		OrderNo       string `json:"orderno"`
		ProjectName   string `json:"xmname"`
		ProjectCode   string `json:"xmcode"`
		LotName       string `json:"bdname"`
		LotCode       string `json:"bdcode"`
		OpeningAt     Millis `json:"kbttime"`
		TendererName  string `json:"zbrname"`
		TendererCode  string `json:"zbrcode"`
		DeadlineAt    Millis `json:"tbjztime"`
		AccountBank   string `json:"qykh"`
		AccountName   string `json:"qykhzh"`
		AccountNo     string `json:"qyjbzh"`
		ContactName   string `json:"jbrname"`
		ContactPhone  string `json:"jbrphone"`
		ContactEmail  string `json:"jbremail"`
	}{a.ApplicantName, a.ApplicantCode, Amount{a.DepositAmount}, a.OrderNo, a.ProjectName, a.ProjectCode,
		a.LotName, a.LotCode, Millis{a.OpeningAt}, a.TendererName, a.TendererCode, Millis{a.DeadlineAt},
		a.AccountBank, a.AccountName, a.AccountNo, a.ContactName, a.ContactPhone, a.ContactEmail})
}

// ParseApplyRequest validates apply parameters. withOrgCode reads the
// bidding module's form (orgcode required, orderno optional: the gateway
// makes one); otherwise the institution's form (orderno required).
func ParseApplyRequest(plain []byte, withOrgCode bool) (ApplyRequest, error) {
	r, e := newReader(plain)
	if e != nil {
		return ApplyRequest{}, e
	}
	var a ApplyRequest
	if withOrgCode {
		a.OrgCode = r.str("orgcode", 128, true)
	}
	a.ApplicantName = r.str("qyname", 64, true)
	a.ApplicantCode = r.str("qycode", 32, true)
	a.DepositAmount = r.money("bzjmoney", true)
	if r.err == nil && !a.DepositAmount.IsPositive() {
		r.fail(fieldErr("bzjmoney", "must be positive"))
	}
	a.OrderNo = r.str("orderno", 32, !withOrgCode)
	if withOrgCode && a.OrderNo != "" && r.err == nil {
		if e := CheckAPIOrderNo("orderno", a.OrderNo); e != nil {
			r.fail(e)
		}
	}
	a.ProjectName = r.str("xmname", 256, true)
	a.ProjectCode = r.str("xmcode", 128, true)
	a.LotName = r.str("bdname", 256, true)
	a.LotCode = r.str("bdcode", 128, true)
	a.OpeningAt = r.time("kbttime", true)
	a.TendererName = r.str("zbrname", 128, true)
	a.TendererCode = r.str("zbrcode", 32, true)
	a.DeadlineAt = r.time("tbjztime", true)
	a.AccountBank = r.str("qykh", 128, true)
	a.AccountName = r.str("qykhzh", 128, true)
	a.AccountNo = r.str("qyjbzh", 32, true)
	a.ContactName = r.str("jbrname", 128, true)
	a.ContactPhone = r.str("jbrphone", 128, true)
	a.ContactEmail = r.str("jbremail", 128, true)
	return a, r.done()
}

// ApplyResult is /guarantee/apply's answer. cancelurl is empty when the
// institution has no cancel interface.
type ApplyResult struct {
	ContinueURL string `json:"continueurl"`
	QueryURL    string `json:"queryurl"`
	PullURL     string `json:"pullurl"`
	CancelURL   string `json:"cancelurl,omitempty"`
}

// ParseApplyResult reads an apply answer; continueurl, queryurl and pullurl
// are required.
func ParseApplyResult(plain []byte) (ApplyResult, error) {
	r, e := newReader(plain)
	if e != nil {
		return ApplyResult{}, e
	}
	const maxURL = 1024 // no length in docs/protocol.md; bounded by our column
	res := ApplyResult{
		ContinueURL: r.str("continueurl", maxURL, true),
		QueryURL:    r.str("queryurl", maxURL, true),
		PullURL:     r.str("pullurl", maxURL, true),
		CancelURL:   r.str("cancelurl", maxURL, false),
	}
	return res, r.done()
}

// OrderRef is queryurl's parameter.
type OrderRef struct {
	OrderNo string `json:"orderno"`
}

// ParseOrderRef reads queryurl's parameter.
func ParseOrderRef(plain []byte) (OrderRef, error) {
	r, e := newReader(plain)
	if e != nil {
		return OrderRef{}, e
	}
	ref := OrderRef{OrderNo: r.str("orderno", 32, true)}
	return ref, r.done()
}

// GuaranteeRef is pullurl's and cancelurl's parameter: baohanno is the bhno.
type GuaranteeRef struct {
	GuaranteeNo string `json:"baohanno"`
}

// ParseGuaranteeRef reads pullurl's or cancelurl's parameter.
func ParseGuaranteeRef(plain []byte) (GuaranteeRef, error) {
	r, e := newReader(plain)
	if e != nil {
		return GuaranteeRef{}, e
	}
	ref := GuaranteeRef{GuaranteeNo: r.str("baohanno", 64, true)}
	return ref, r.done()
}

// QueryResult is queryurl's answer (docs/protocol.md §3.2.2). It has no bhno; an
// institution that adds one has it used (docs/decisions.md §6).
type QueryResult struct {
	Status      string // NotifyFailed, NotifyIssued, NotifyProcessing
	Describe    string
	DealtAt     time.Time // zero when absent
	GuaranteeNo string
}

// MarshalJSON writes the institution's form.
func (q QueryResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Status      json.Number `json:"status"`
		Describe    string      `json:"describe"`
		DealtAt     Millis      `json:"dealtime"`
		GuaranteeNo string      `json:"bhno,omitempty"`
	}{json.Number(q.Status), q.Describe, Millis{q.DealtAt}, q.GuaranteeNo})
}

// ParseQueryResult reads a queryurl answer.
func ParseQueryResult(plain []byte) (QueryResult, error) {
	r, e := newReader(plain)
	if e != nil {
		return QueryResult{}, e
	}
	q := QueryResult{
		Status:      r.code("status", true, NotifyFailed, NotifyIssued, NotifyProcessing),
		Describe:    r.str("describe", 512, false),
		DealtAt:     r.time("dealtime", false),
		GuaranteeNo: r.str("bhno", 64, false),
	}
	return q, r.done()
}

// PayState is the /api/guarantee/paystate callback (docs/protocol.md §3.2.3).
type PayState struct {
	OrderNo      string
	Amount       decimal.Decimal
	PaidAt       time.Time
	Kind         string // PayKindPay or PayKindRefund
	PayerName    string
	PayerAccount string
}

// MarshalJSON writes the institution's form.
func (p PayState) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		OrderNo      string `json:"orderno"`
		Amount       Amount `json:"paymoney"`
		PaidAt       Millis `json:"paytime"`
		Kind         string `json:"type"`
		PayerName    string `json:"paybankname,omitempty"`
		PayerAccount string `json:"paybankno,omitempty"`
	}{p.OrderNo, Amount{p.Amount}, Millis{p.PaidAt}, p.Kind, p.PayerName, p.PayerAccount})
}

// ParsePayState validates a paystate callback: paybankname and paybankno are
// required when type is 1 (pay).
func ParsePayState(plain []byte) (PayState, error) {
	r, e := newReader(plain)
	if e != nil {
		return PayState{}, e
	}
	p := PayState{
		OrderNo: r.str("orderno", 32, true),
		Amount:  r.money("paymoney", true),
		PaidAt:  r.time("paytime", true),
		Kind:    r.code("type", true, PayKindPay, PayKindRefund),
	}
	payment := p.Kind == PayKindPay
	p.PayerName = r.str("paybankname", 64, payment)
	p.PayerAccount = r.str("paybankno", 64, payment)
	return p, r.done()
}

// ApplyNotify is the /api/guarantee/applynotify callback (§3.2.4).
type ApplyNotify struct {
	OrderNo       string
	GuaranteeNo   string
	State         string // NotifyFailed, NotifyIssued, NotifyProcessing
	Remark        string
	PremiumRate   decimal.Decimal
	Premium       decimal.Decimal
	IssuerName    string
	IssuerAddress string
	IssuerPhone   string
	IssuedAt      time.Time // zero when absent
	File          []byte    // the decoded PDF; nil when absent
	// Missing lists what the interface requires of an issuance that this
	// notice lacked (bhcretime, bhfile); it is accepted all the same.
	Missing []string
}

// MarshalJSON writes the institution's form; the state goes out as "staus".
func (n ApplyNotify) MarshalJSON() ([]byte, error) {
	var file string
	if n.File != nil {
		file = base64.StdEncoding.EncodeToString(n.File)
	}
	return json.Marshal(struct {
		OrderNo       string `json:"orderno"`
		GuaranteeNo   string `json:"bhno,omitempty"`
		State         string `json:"staus"`
		Remark        string `json:"info,omitempty"`
		PremiumRate   Rate   `json:"bhrate"`
		Premium       Amount `json:"bhcost"`
		IssuerName    string `json:"sellername"`
		IssuerAddress string `json:"selleraddress"`
		IssuerPhone   string `json:"sellerphone"`
		IssuedAt      Millis `json:"bhcretime"`
		File          string `json:"bhfile,omitempty"`
	}{n.OrderNo, n.GuaranteeNo, n.State, n.Remark, Rate{n.PremiumRate}, Amount{n.Premium},
		n.IssuerName, n.IssuerAddress, n.IssuerPhone, Millis{n.IssuedAt}, file})
}

// ParseApplyNotify validates an applynotify callback. The state is read from
// "staus" (sic), or "status" when staus is absent; bhno is required when the
// state is 1, and a bhfile that is present must decode to a readable PDF
// (CheckPDF).
func ParseApplyNotify(plain []byte) (ApplyNotify, error) {
	r, e := newReader(plain)
	if e != nil {
		return ApplyNotify{}, e
	}
	var n ApplyNotify
	n.OrderNo = r.str("orderno", 32, true)
	stateField := "staus"
	if !r.has("staus") && r.has("status") {
		stateField = "status"
	}
	n.State = r.code(stateField, true, NotifyFailed, NotifyIssued, NotifyProcessing)
	issued := n.State == NotifyIssued
	n.GuaranteeNo = r.str("bhno", 64, issued)
	n.Remark = r.str("info", 512, false)
	n.PremiumRate = r.rate("bhrate", true)
	n.Premium = r.money("bhcost", true)
	n.IssuerName = r.str("sellername", 64, true)
	n.IssuerAddress = r.str("selleraddress", 256, true)
	n.IssuerPhone = r.str("sellerphone", 64, true)
	n.IssuedAt = r.time("bhcretime", false)
	n.File = r.pdf("bhfile")
	if r.err == nil && issued {
		if n.IssuedAt.IsZero() {
			n.Missing = append(n.Missing, "bhcretime")
		}
		if n.File == nil {
			n.Missing = append(n.Missing, "bhfile")
		}
	}
	return n, r.done()
}

// PullResult is pullurl's answer (§3.2.5).
type PullResult struct {
	Name   string
	File   []byte
	Remark string
}

// MarshalJSON writes the institution's form.
func (p PullResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name   string `json:"name,omitempty"`
		File   string `json:"file"`
		Remark string `json:"remark,omitempty"`
	}{p.Name, base64.StdEncoding.EncodeToString(p.File), p.Remark})
}

// ParsePullResult reads a pullurl answer; file is required and must be a
// readable PDF (CheckPDF).
func ParsePullResult(plain []byte) (PullResult, error) {
	r, e := newReader(plain)
	if e != nil {
		return PullResult{}, e
	}
	p := PullResult{
		Name:   r.str("name", 128, false),
		File:   r.pdf("file"),
		Remark: r.str("remark", 256, false),
	}
	if r.err == nil && p.File == nil {
		r.fail(fieldErr("file", "missing"))
	}
	return p, r.done()
}

// CostRequest is /guarantee/cost's parameters (§3.2.7).
type CostRequest struct {
	DepositAmount decimal.Decimal
	OrgCode       string
}

// MarshalJSON writes the institution's form.
func (c CostRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		DepositAmount Amount `json:"bzjmoney"`
		OrgCode       string `json:"orgcode"`
	}{Amount{c.DepositAmount}, c.OrgCode})
}

// ParseCostRequest reads /guarantee/cost's parameters.
func ParseCostRequest(plain []byte) (CostRequest, error) {
	r, e := newReader(plain)
	if e != nil {
		return CostRequest{}, e
	}
	c := CostRequest{DepositAmount: r.money("bzjmoney", true), OrgCode: r.str("orgcode", 128, true)}
	return c, r.done()
}

// CostResult is /guarantee/cost's answer: a fee or a description, one of two.
type CostResult struct {
	Fee         *decimal.Decimal
	Description string
}

// MarshalJSON writes the institution's form.
func (c CostResult) MarshalJSON() ([]byte, error) {
	var fee *Amount
	if c.Fee != nil {
		fee = &Amount{*c.Fee}
	}
	return json.Marshal(struct {
		Fee         *Amount `json:"money,omitempty"`
		Description string  `json:"describe,omitempty"`
	}{fee, c.Description})
}

// ParseCostResult reads a cost answer; at least one of money and describe.
func ParseCostResult(plain []byte) (CostResult, error) {
	r, e := newReader(plain)
	if e != nil {
		return CostResult{}, e
	}
	var c CostResult
	if r.has("money") {
		fee := r.money("money", true)
		c.Fee = &fee
	}
	c.Description = r.str("describe", 512, false)
	if r.err == nil && c.Fee == nil && c.Description == "" {
		r.fail(fieldErr("money", "missing, and so is describe"))
	}
	return c, r.done()
}

// ProjectState is /guarantee/xmstate's parameters (§3.2.8).
type ProjectState struct {
	ProjectName string
	ProjectCode string
	LotName     string
	LotCode     string
	OpeningAt   time.Time
	State       string // "1" awarded, "2" failed tender, "3" terminated, "4" re-tender
}

// MarshalJSON writes the institution's form.
func (p ProjectState) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ProjectName string `json:"xmname"`
		ProjectCode string `json:"xmcode"`
		LotName     string `json:"bdname"`
		LotCode     string `json:"bdcode"`
		OpeningAt   Millis `json:"kbttime"`
		State       string `json:"state"`
	}{p.ProjectName, p.ProjectCode, p.LotName, p.LotCode, Millis{p.OpeningAt}, p.State})
}

// ParseProjectState reads xmstate's parameters (also the bidding module's
// POST /v1/projects/state).
func ParseProjectState(plain []byte) (ProjectState, error) {
	r, e := newReader(plain)
	if e != nil {
		return ProjectState{}, e
	}
	p := ProjectState{
		ProjectName: r.str("xmname", 256, true),
		ProjectCode: r.str("xmcode", 128, true),
		LotName:     r.str("bdname", 256, true),
		LotCode:     r.str("bdcode", 128, true),
		OpeningAt:   r.time("kbttime", true),
		State:       r.code("state", true, "1", "2", "3", "4"),
	}
	return p, r.done()
}

// Release is the /api/guarantee/release callback (§3.2.9).
type Release struct {
	GuaranteeNo string `json:"bhno"`
	State       string `json:"state"` // ReleaseSurrendered or ReleaseCancelled
}

// ParseRelease validates a release callback.
func ParseRelease(plain []byte) (Release, error) {
	r, e := newReader(plain)
	if e != nil {
		return Release{}, e
	}
	rel := Release{
		GuaranteeNo: r.str("bhno", 64, true),
		State:       r.code("state", true, ReleaseSurrendered, ReleaseCancelled),
	}
	return rel, r.done()
}

// pdf reads a base64 PDF; nil when absent.
func (r *reader) pdf(name string) []byte {
	if r.err != nil {
		return nil
	}
	v := r.raw(name)
	if v == nil {
		return nil
	}
	if v[0] != '"' {
		r.fail(fieldErr(name, "wrong type: want a base64 string"))
		return nil
	}
	// Base64 has no escapes: decode straight from the raw JSON rather than
	// through a string copy of a file that may be tens of MiB.
	text := v[1 : len(v)-1]
	if bytes.IndexByte(text, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			r.fail(fieldErr(name, "malformed string"))
			return nil
		}
		text = []byte(s)
	}
	if len(text) == 0 {
		return nil
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(b, text)
	if err != nil {
		r.fail(fieldErr(name, "not base64"))
		return nil
	}
	b = b[:n]
	if err := CheckPDF(b); err != nil {
		fe := fieldErr(name, "%v", err)
		fe.cause = err
		r.fail(fe)
		return nil
	}
	return b
}
