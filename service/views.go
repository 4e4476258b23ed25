package service

import (
	"net/url"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// OrderView is the order as the bidding module sees it (docs/api.md): the
// interface's field names, money with two decimals, times in epoch ms.
type OrderView struct {
	OrderNo        string       `json:"orderno"`
	OrgCode        string       `json:"orgcode"`
	Status         model.Status `json:"status"`
	Flag           string       `json:"flag,omitempty"`
	GuaranteeNo    string       `json:"bhno"`
	ApplicantName  string       `json:"qyname"`
	ApplicantCode  string       `json:"qycode"`
	DepositAmount  wire.Amount  `json:"bzjmoney"`
	ProjectName    string       `json:"xmname"`
	ProjectCode    string       `json:"xmcode"`
	LotName        string       `json:"bdname"`
	LotCode        string       `json:"bdcode"`
	OpeningAt      wire.Millis  `json:"kbttime"`
	DeadlineAt     wire.Millis  `json:"tbjztime"`
	ContinueURL    string       `json:"continueurl"`
	PremiumRate    *wire.Rate   `json:"bhrate"`
	Premium        *wire.Amount `json:"bhcost"`
	IssuerName     string       `json:"sellername"`
	IssuerAddress  string       `json:"selleraddress"`
	IssuerPhone    string       `json:"sellerphone"`
	IssuedAt       *wire.Millis `json:"bhcretime"`
	Remark         string       `json:"info,omitempty"`
	PaidAmount     wire.Amount  `json:"paid_amount"`
	RefundedAmount wire.Amount  `json:"refunded_amount"`
	File           FileView     `json:"file"`
	Cancellable    bool         `json:"cancellable"`
	CreatedAt      wire.Millis  `json:"created_at"`
	UpdatedAt      wire.Millis  `json:"updated_at"`
}

// FileView says whether the PDF is stored.
type FileView struct {
	Stored bool   `json:"stored"`
	Size   int64  `json:"size,omitempty"`
	Sha256 string `json:"sha256,omitempty"`
}

func viewOf(o *model.Order, f *model.GuaranteeFile) *OrderView {
	v := &OrderView{
		OrderNo: o.OrderNo, OrgCode: o.OrgCode, Status: o.Status, Flag: string(o.Flag), GuaranteeNo: o.GuaranteeNo.String,
		ApplicantName: o.ApplicantName, ApplicantCode: o.ApplicantCode, DepositAmount: wire.Amount{Decimal: o.DepositAmount},
		ProjectName: o.ProjectName, ProjectCode: o.ProjectCode, LotName: o.LotName, LotCode: o.LotCode,
		OpeningAt: wire.Millis{Time: o.OpeningAt}, DeadlineAt: wire.Millis{Time: o.DeadlineAt},
		ContinueURL: httpURL(o.ContinueURL), IssuerName: o.IssuerName, IssuerAddress: o.IssuerAddress, IssuerPhone: o.IssuerPhone,
		Remark: o.Remark, PaidAmount: wire.Amount{Decimal: o.PaidAmount}, RefundedAmount: wire.Amount{Decimal: o.RefundedAmount},
		Cancellable: o.Status == model.StatusIssued && o.CancelURL != "" && o.GuaranteeNo.String != "",
		CreatedAt:   wire.Millis{Time: o.CreatedAt}, UpdatedAt: wire.Millis{Time: o.UpdatedAt},
	}
	if o.PremiumRate.Valid {
		v.PremiumRate = &wire.Rate{Decimal: o.PremiumRate.Decimal}
	}
	if o.Premium.Valid {
		v.Premium = &wire.Amount{Decimal: o.Premium.Decimal}
	}
	if o.IssuedAt != nil {
		v.IssuedAt = &wire.Millis{Time: *o.IssuedAt}
	}
	if f != nil {
		v.File = FileView{Stored: true, Size: f.Size, Sha256: f.Sha256}
	}
	return v
}

// httpURL returns u when it is an absolute http(s) URL, else "":
// continueurl is where the bidding module sends the bidder's browser, and
// whatever else a row holds (javascript:, data:) must not get there
// (docs/decisions.md §39). The apply answer is checked as it arrives
// (checkURLs); this holds for rows stored by any other way.
func httpURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return ""
	}
	return u
}

// EventView is one line of an order's history, from whichever record. At
// is epoch milliseconds like every time of the API; a call is placed when it
// was sent, between what caused it and what its answer caused.
type EventView struct {
	At     wire.Millis `json:"at"`
	Source string      `json:"source"` // "event", "callback", "call"
	Kind   string      `json:"kind"`
	Name   string      `json:"name"`
	From   string      `json:"from_status,omitempty"`
	To     string      `json:"to_status,omitempty"`
	Detail string      `json:"detail,omitempty"`
	// callbacks and calls
	OrgCode string `json:"orgcode,omitempty"`
	// Result is what became of a callback (accepted, duplicate, late,
	// rejected) or a call (ok, or the kind of failure). The API has named
	// it "outcome" since its first version, and keeps the name.
	Result     string `json:"outcome,omitempty"`
	Errcode    string `json:"errcode,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	LatencyMs  int64  `json:"latency_ms,omitempty"`
	URL        string `json:"url,omitempty"`
	ID         int64  `json:"id"`
	// bodyKept: a callback whose body was stored when it came (the
	// console tells one emptied by retention from one never kept).
	bodyKept bool
}
