// Package model is the gateway's storage: GORM models, versioned migrations
// (goose, one SQL set per dialect), and the queries the service runs. It
// speaks SQL only; it makes no HTTP call and knows no cipher.
//
// Idempotency lives in unique indexes (order_no, org_code+guarantee_no, the
// callback and the payment dedup keys, each under its order) and in
// conditional UPDATEs with a rows-affected check, never in a read before a
// write.
package model

import (
	"database/sql"
	"time"

	"github.com/shopspring/decimal"
	"gorm.io/gorm"
)

// Status is where an order stands in its lifecycle (docs/api.md "Order
// lifecycle"; the transitions are service/lifecycle.go's table).
type Status string

// The statuses of an order.
const (
	StatusApplying      Status = "applying"
	StatusApplyRejected Status = "apply_rejected"
	StatusProcessing    Status = "processing"
	StatusIssued        Status = "issued"
	StatusFailed        Status = "failed"
	StatusCancelling    Status = "cancelling"
	StatusCancelled     Status = "cancelled"
	StatusSurrendered   Status = "surrendered"
)

// AllStatuses lists every status, for metrics and validation of filters.
var AllStatuses = []Status{StatusApplying, StatusApplyRejected, StatusProcessing, StatusIssued,
	StatusFailed, StatusCancelling, StatusCancelled, StatusSurrendered}

// Active reports whether an order in this status holds the bidder's slot for
// its lot: one active guarantee per bidder and lot.
func (s Status) Active() bool {
	return s == StatusApplying || s == StatusProcessing || s == StatusIssued
}

// Flag marks an order that waits for an operator; "" when none.
type Flag string

// The flags an order can carry.
const (
	FlagNone             Flag = ""
	FlagStale            Flag = "stale"             // still processing long after the bid opening
	FlagApplyUnconfirmed Flag = "apply_unconfirmed" // no definite answer to the apply after every retry
	FlagPullFailed       Flag = "pull_failed"       // the PDF could not be pulled after many tries
	FlagURLRefused       Flag = "url_refused"       // a per-order URL is not on the institution's origins: not called
)

// AllFlags lists every flag but FlagNone, for metrics and filters.
var AllFlags = []Flag{FlagStale, FlagApplyUnconfirmed, FlagPullFailed, FlagURLRefused}

// Order is one application for a guarantee, keyed by its orderno.
type Order struct {
	ID          int64
	OrderNo     string
	OrgCode     string
	Status      Status
	ActiveSlot  *int
	GuaranteeNo sql.NullString // the bhno; NULL until the institution tells it
	RequestHash string

	ApplicantName string
	ApplicantCode string
	DepositAmount decimal.Decimal
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

	ContinueURL string
	QueryURL    string
	PullURL     string
	CancelURL   string

	PremiumRate   decimal.NullDecimal
	Premium       decimal.NullDecimal
	IssuerName    string
	IssuerAddress string
	IssuerPhone   string
	IssuedAt      *time.Time
	Remark        string

	PaidAmount     decimal.Decimal
	RefundedAmount decimal.Decimal

	FilePending   bool
	NextCheckAt   *time.Time
	CheckAttempts int
	Flag          Flag
	LeaseOwner    string
	LeaseUntil    *time.Time

	CreatedAt time.Time
	UpdatedAt time.Time
}

// Event kinds of an order's history.
const (
	EventCallback = "callback" // an institution told us something
	EventCall     = "call"     // we called the institution
	EventStatus   = "status"   // the order moved
	EventNote     = "note"     // anything else worth an operator's eye
)

// Event is one line of an order's history, oldest first by ID.
type Event struct {
	ID         int64     `json:"id"`
	OrderNo    string    `json:"orderno"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name"`
	FromStatus string    `json:"from_status,omitempty"`
	ToStatus   string    `json:"to_status,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	RefID      *int64    `json:"ref_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// TableName keeps the table named as the migration does.
func (Event) TableName() string { return "order_events" }

// Payment is one pay or refund notified by paystate.
type Payment struct {
	ID           int64
	DedupKey     string
	OrderNo      string
	OrgCode      string
	Kind         string // "1" pay, "2" refund
	Amount       decimal.Decimal
	PaidAt       time.Time
	PayerName    string
	PayerAccount string
	CallbackID   int64
	CreatedAt    time.Time
}

// GuaranteeFile is the PDF of an issued guarantee, stored once per order.
type GuaranteeFile struct {
	ID          int64
	OrderNo     string
	GuaranteeNo string
	Sha256      string `gorm:"column:sha256"`
	Size        int64
	Source      string // "notify" or "pull"
	Content     []byte
	CreatedAt   time.Time
}

// What became of a received callback: its audit row's result, and the
// result label of the callback metrics.
const (
	CallbackAccepted  = "accepted"  // stored, effect applied
	CallbackDuplicate = "duplicate" // the same callback was accepted before
	CallbackLate      = "late"      // acknowledged, would move the order backwards
	CallbackRejected  = "rejected"  // answered stat 0
)

// Callback is the audit record of one received callback.
type Callback struct {
	ID          int64
	OrgCode     string
	Kind        string
	OrderNo     string
	GuaranteeNo string
	DedupKey    *string
	Body        []byte // the raw body, nil when over the audit limit
	BodySha256  string `gorm:"column:body_sha256"`
	BodySize    int64
	Result      string // Callback*
	Errcode     string
	Msg         string
	RemoteAddr  string
	RequestID   string
	ReceivedAt  time.Time
}

// Call is the record of one outbound call to an institution.
type Call struct {
	ID            int64
	OrgCode       string
	OrderNo       string
	Endpoint      string
	URL           string `gorm:"column:url"`
	Attempt       int
	HTTPStatus    int `gorm:"column:http_status"`
	Stat          *int
	Errcode       string
	Result        string // "ok" or the kind of failure (client.Kind)
	Error         string
	LatencyMs     int64
	RequestBytes  int64
	ResponseBytes int64
	CreatedAt     time.Time
}

// TableName keeps the table named as the migration does.
func (Call) TableName() string { return "outbound_calls" }

// ProjectStatePush is one project-state announcement of the bidding module.
type ProjectStatePush struct {
	ID          int64
	ProjectName string
	ProjectCode string
	LotName     string
	LotCode     string
	OpeningAt   time.Time
	State       string
	CreatedAt   time.Time
}

// TableName keeps the table named as the migration does.
func (ProjectStatePush) TableName() string { return "project_states" }

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryDead      = "dead"
)

// Delivery is one institution's copy of a project-state push, kept until taken.
type Delivery struct {
	ID            int64
	PushID        int64
	OrgCode       string
	Status        string
	Attempts      int
	NextAttemptAt *time.Time
	LastError     string
	LeaseOwner    string
	LeaseUntil    *time.Time
	DeliveredAt   *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Finding is one discrepancy found by the daily reconciliation.
type Finding struct {
	ID        int64     `json:"id"`
	RunDate   string    `json:"date"`
	Kind      string    `json:"kind"`
	OrderNo   string    `json:"orderno"`
	Detail    string    `json:"detail"`
	CreatedAt time.Time `json:"created_at"`
}

// utc converts time values to UTC: every time is stored in UTC whatever zone
// the caller used (MySQL DATETIME and SQLite text keep no zone).
func utc(v any) any {
	switch t := v.(type) {
	case time.Time:
		return t.UTC()
	case *time.Time:
		if t != nil {
			u := t.UTC()
			return &u
		}
	}
	return v
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// BeforeSave stores the order's times in UTC.
func (o *Order) BeforeSave(*gorm.DB) error {
	o.OpeningAt, o.DeadlineAt = o.OpeningAt.UTC(), o.DeadlineAt.UTC()
	o.IssuedAt, o.NextCheckAt, o.LeaseUntil = utcPtr(o.IssuedAt), utcPtr(o.NextCheckAt), utcPtr(o.LeaseUntil)
	return nil
}

// BeforeSave stores the payment time in UTC.
func (p *Payment) BeforeSave(*gorm.DB) error {
	p.PaidAt = p.PaidAt.UTC()
	return nil
}

// BeforeSave stores the opening time in UTC.
func (p *ProjectStatePush) BeforeSave(*gorm.DB) error {
	p.OpeningAt = p.OpeningAt.UTC()
	return nil
}
