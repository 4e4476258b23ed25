// Package service is the gateway's lifecycle: applying for guarantees,
// taking the institutions' callbacks, the scheduled jobs and
// reconciliation. It decides every transition of an order (lifecycle.go),
// so that a handler only moves bytes and a model function only SQL. What
// it needs from outside it states as small interfaces beside their users:
// Store (storage, satisfied by *model.Store) and InstitutionClient (one
// institution's interface, satisfied by *client.Client).
package service

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
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

// Store is the storage the service needs: queries on the pool, one
// transaction, writes on the pool, a readiness check. *model.Store
// satisfies it. InTx and Do run their function again when the database
// refused it over a conflict with another writer (model.Retry); the
// function must be safe to run again.
type Store interface {
	With(ctx context.Context) model.Queries
	InTx(ctx context.Context, fn func(tx model.Queries) error) error
	Do(ctx context.Context, fn func(q model.Queries) error) error
	Ready(ctx context.Context) error
}

// InstitutionClient is one institution's interface as the service calls it
// (docs/protocol.md §3.2). *client.Client satisfies it; its errors are
// *client.Error, which say whether the institution may have acted.
type InstitutionClient interface {
	Apply(ctx context.Context, req wire.ApplyRequest) (wire.ApplyResult, error)
	Cost(ctx context.Context, req wire.CostRequest) (wire.CostResult, error)
	ProjectState(ctx context.Context, p wire.ProjectState) error
	Query(ctx context.Context, queryURL, orderNo string) (wire.QueryResult, error)
	Pull(ctx context.Context, pullURL, orderNo, guaranteeNo string) (wire.PullResult, error)
	Cancel(ctx context.Context, cancelURL, orderNo, guaranteeNo string) error
	// CheckURL refuses (client.KindURLRefused) a URL that is not on the
	// institution's origins; the calls check it themselves too.
	CheckURL(endpoint, url string) error
	BreakerState() string
}

// Institution is one configured institution at run time.
type Institution struct {
	OrgCode  string
	Name     string
	AppKey   string
	Cipher   crypto.Cipher
	Client   InstitutionClient
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

// Settings are the service's knobs. They come from the configuration
// (SettingsFrom), whose defaults and validation apply: the service sets
// no default of its own.
type Settings struct {
	Instance          string // this replica's name in leases
	PollBackoff       []time.Duration
	RedeliveryBackoff []time.Duration
	ApplyBackoff      []time.Duration
	MaxApplyAttempts  int
	StaleAfterOpening time.Duration
	BatchSize         int
	Concurrency       int
	Lease             time.Duration
	// CallbackBatch: at most this many concurrent callbacks of a kind in
	// one transaction (batch.go); 1 takes each in its own.
	CallbackBatch int
	// StrangerAuditRate: audit rows per second, at most, of the callbacks
	// refused from their headers (admission.go); 0 audits none.
	StrangerAuditRate float64
	// BodyBytesInFlight: the memory budget of request bodies (budget.go);
	// 0 leaves them unbounded.
	BodyBytesInFlight int64
	// Retention: how long callback bodies (RetainBodies) and outbound
	// call records (RetainCalls) are kept, 0 for ever; the retention job
	// works in batches of RetentionBatch rows with RetentionPause between
	// them, at most RetentionMaxPerRun rows of each per run (retention.go).
	RetainBodies       time.Duration
	RetainCalls        time.Duration
	RetentionBatch     int
	RetentionPause     time.Duration
	RetentionMaxPerRun int
}

// SettingsFrom takes the service's settings from a configuration.
func SettingsFrom(cfg *config.Config) Settings {
	j := cfg.Jobs
	return Settings{Instance: cfg.Server.Instance, PollBackoff: j.PollBackoff, RedeliveryBackoff: j.RedeliveryBackoff,
		ApplyBackoff: j.ApplyBackoff, MaxApplyAttempts: j.MaxApplyAttempts, StaleAfterOpening: j.StaleAfterOpening,
		BatchSize: j.BatchSize, Concurrency: j.Concurrency, Lease: j.Lease, CallbackBatch: cfg.Server.CallbackBatch,
		StrangerAuditRate: cfg.Server.StrangerAuditRate, BodyBytesInFlight: cfg.Server.BodyBytesInFlight,
		RetainBodies: cfg.Retention.RawBodies, RetainCalls: cfg.Retention.Calls, RetentionBatch: cfg.Retention.BatchSize,
		RetentionPause: cfg.Retention.Pause, RetentionMaxPerRun: cfg.Retention.MaxPerRun}
}

// rawAuditLimit: a callback body larger than this is audited as its sha256
// and size only (a PDF lives once, in guarantee_files).
const rawAuditLimit = 1 << 20

// Service is the gateway's lifecycle.
type Service struct {
	store   Store
	insts   *Registry
	log     logrus.FieldLogger
	metrics Metrics
	set     Settings
	now     func() time.Time
	pays    *batcher    // group commit of paystates (batch.go); nil: one by one
	notices *batcher    // and of applynotify callbacks
	door    *doorAudit  // the bounded audit of refusals at the door (admission.go)
	bodies  *bodyBudget // the memory budget of request bodies (budget.go); nil: none
	// lastState is the last State counted (state.go): what /metrics and
	// the console's overview show, read without a query.
	lastState atomic.Pointer[State]
}

// New builds the service. metrics may be nil.
func New(store Store, insts *Registry, set Settings, log logrus.FieldLogger, metrics Metrics) *Service {
	if metrics == nil {
		metrics = nopMetrics{}
	}
	s := &Service{store: store, insts: insts, log: log, metrics: metrics, set: set,
		now: func() time.Time { return time.Now().UTC() }}
	if set.CallbackBatch > 1 {
		s.pays = newBatcher(batchLeaders, set.CallbackBatch, s.payBatch)
		s.notices = newBatcher(batchLeaders, set.CallbackBatch, s.noticeBatch)
	}
	s.door = newDoorAudit(set.StrangerAuditRate)
	s.bodies = newBodyBudget(set.BodyBytesInFlight)
	return s
}

// Institutions returns the registry.
func (s *Service) Institutions() *Registry { return s.insts }

// Ready checks that storage takes work within ctx (model.Store.Ready): a
// Galera node out of the primary component answers but does not.
func (s *Service) Ready(ctx context.Context) error { return s.store.Ready(ctx) }

// Metrics receives what the service counts; the Prometheus one is in metrics.go.
type Metrics interface {
	Callback(org, kind, result, errcode string, d time.Duration)
	CallbackBatch(kind, result string, n int)
	Call(org, endpoint, result string, d time.Duration)
	JobRun(job, result string, d time.Duration)
	// What was refused to keep the gateway safe (metrics_guard.go).
	CallbackUnaudited(kind string)
	FileRefused(org, source string)
	URLRefused(org, url string)
	BodyBudget(route string, refused bool, held int64)
}

type nopMetrics struct{}

func (nopMetrics) Callback(string, string, string, string, time.Duration) {}
func (nopMetrics) CallbackBatch(string, string, int)                      {}
func (nopMetrics) Call(string, string, string, time.Duration)             {}
func (nopMetrics) JobRun(string, string, time.Duration)                   {}
func (nopMetrics) CallbackUnaudited(string)                               {}
func (nopMetrics) FileRefused(string, string)                             {}
func (nopMetrics) URLRefused(string, string)                              {}
func (nopMetrics) BodyBudget(string, bool, int64)                         {}

// backoff returns the wait before attempt n (1-based); the last step
// repeats. Every list comes from the configuration, which refuses an
// empty one.
func backoff(steps []time.Duration, n int) time.Duration {
	return steps[min(max(n, 1), len(steps))-1]
}
