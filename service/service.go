// Package service is the gateway's lifecycle: applying for guarantees,
// taking the institutions' callbacks, the scheduled jobs and reconciliation.
// It states what it needs from storage (the model package) and from the
// institutions (the client package), and decides every transition of an
// order, so that a handler only moves bytes and a model function only SQL.
package service

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
)

// Error codes of the bidding module's API, mapped to HTTP statuses in one
// place (handler.apiStatus). Every exported method says which it returns.
const (
	EInvalid      = "invalid"      // 400, names the field
	ENotFound     = "not_found"    // 404
	EConflict     = "conflict"     // 409
	EUpstream     = "institution"  // 502: the institution refused or failed
	EUnavailable  = "unavailable"  // 503: storage is down, retry
	EInternal     = "internal"     // 500
	EAccepted     = "accepted"     // not an error: 202, the outcome will follow
	EUnauthorized = "unauthorized" // 401
)

// Error is every failure the service returns to the API.
type Error struct {
	Code    string
	Message string
	Field   string
	Err     error // the cause, logged, never shown to the caller
}

func (e *Error) Error() string {
	s := e.Code + ": " + e.Message
	if e.Field != "" {
		s += " (" + e.Field + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of a service error; EInternal for others.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

func errf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// storeErr maps a storage failure: not-found stays not-found, anything else
// means the database could not do its part, and the caller should retry.
func storeErr(what string, err error) error {
	if errors.Is(err, model.ErrNotFound) {
		return &Error{Code: ENotFound, Message: what + " not found", Err: err}
	}
	return &Error{Code: EUnavailable, Message: "storage unavailable, retry", Err: fmt.Errorf("%s: %w", what, err)}
}

// Institution is one configured institution at run time.
type Institution struct {
	OrgCode  string
	Name     string
	AppKey   string
	Cipher   crypto.Cipher
	Client   *client.Client
	Timeout  time.Duration
	Disabled bool
	// Callback admission: optional source networks and rate limit.
	Allow   []*net.IPNet
	Limiter *rate.Limiter
	// MaxConcurrent bounds the jobs' calls to it at once.
	MaxConcurrent int
}

// Registry finds institutions by orgcode, and by appKey in constant time.
type Registry struct {
	list  []*Institution
	byOrg map[string]*Institution
}

// NewRegistry indexes the institutions.
func NewRegistry(insts []*Institution) *Registry {
	r := &Registry{list: insts, byOrg: make(map[string]*Institution, len(insts))}
	for _, in := range insts {
		r.byOrg[in.OrgCode] = in
	}
	return r
}

// ByOrgCode returns the institution with that orgcode.
func (r *Registry) ByOrgCode(org string) (*Institution, bool) {
	in, ok := r.byOrg[org]
	return in, ok
}

// ByAppKey returns the institution whose app_key is key. Every key is
// compared, in constant time, so the answer's timing tells nothing about
// how much of a key was right.
func (r *Registry) ByAppKey(key string) (*Institution, bool) {
	var found *Institution
	for _, in := range r.list {
		if subtle.ConstantTimeCompare([]byte(in.AppKey), []byte(key)) == 1 {
			found = in
		}
	}
	return found, found != nil && key != ""
}

// All returns every institution, in configuration order.
func (r *Registry) All() []*Institution { return r.list }

// Settings are the service's knobs, from config.
type Settings struct {
	Owner             string // this instance's name in leases
	PollBackoff       []time.Duration
	RedeliveryBackoff []time.Duration
	ApplyBackoff      []time.Duration
	MaxApplyAttempts  int
	StaleAfterOpening time.Duration
	BatchSize         int
	Concurrency       int
	Lease             time.Duration
	// RawAuditLimit: a callback body larger than this is kept as its sha256
	// and size only (the PDF itself lives once, in guarantee_files).
	RawAuditLimit int64
	// CallbackBatch: at most this many concurrent callbacks of a kind in
	// one transaction (batch.go); 1 takes each in its own, 0 means 64.
	CallbackBatch int
}

// Service is the gateway's lifecycle.
type Service struct {
	store   *model.Store
	insts   *Registry
	log     logrus.FieldLogger
	metrics Metrics
	set     Settings
	now     func() time.Time
	pays    *batcher // group commit of paystates (batch.go); nil: one by one
	notices *batcher // and of applynotify callbacks
}

// New builds the service. metrics may be nil.
func New(store *model.Store, insts *Registry, set Settings, log logrus.FieldLogger, metrics Metrics) *Service {
	if metrics == nil {
		metrics = nopMetrics{}
	}
	if set.RawAuditLimit == 0 {
		set.RawAuditLimit = 1 << 20
	}
	if set.CallbackBatch == 0 {
		set.CallbackBatch = defaultCallbackBatch
	}
	s := &Service{store: store, insts: insts, log: log, metrics: metrics, set: set,
		now: func() time.Time { return time.Now().UTC() }}
	if set.CallbackBatch > 1 {
		s.pays = newBatcher(batchLeaders, set.CallbackBatch, s.payBatch)
		s.notices = newBatcher(batchLeaders, set.CallbackBatch, s.noticeBatch)
	}
	return s
}

// Institutions returns the registry.
func (s *Service) Institutions() *Registry { return s.insts }

// Ready checks that storage answers within ctx.
func (s *Service) Ready(ctx context.Context) error { return s.store.Ping(ctx) }

// Metrics receives what the service counts; the Prometheus one is in metrics.go.
type Metrics interface {
	Callback(org, kind, result, errcode string, d time.Duration)
	CallbackBatch(kind, result string, n int)
	Call(org, endpoint, outcome string, d time.Duration)
	JobRun(job, result string, d time.Duration)
}

type nopMetrics struct{}

func (nopMetrics) Callback(string, string, string, string, time.Duration) {}
func (nopMetrics) CallbackBatch(string, string, int)                      {}
func (nopMetrics) Call(string, string, string, time.Duration)             {}
func (nopMetrics) JobRun(string, string, time.Duration)                   {}

// backoff returns the wait before attempt n (1-based); the last step repeats.
func backoff(steps []time.Duration, n int) time.Duration {
	if len(steps) == 0 {
		return time.Minute
	}
	if n < 1 {
		n = 1
	}
	if n > len(steps) {
		n = len(steps)
	}
	return steps[n-1]
}
