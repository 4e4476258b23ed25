// Package banksim is a simulated financial institution: the other side of
// docs/protocol.md, for tests, demos and load tests of the gateway.
//
// As a provider it serves /guarantee/apply, /guarantee/cost,
// /guarantee/xmstate and the per-order queryurl, pullurl, cancelurl and
// continueurl it hands out. As a caller it plays the bidder paying and the
// institution deciding: after an accepted apply it posts paystate, then
// applynotify, and after a cancel the release callback, to the gateway.
//
// Everything goes through the same envelope and cipher as a real
// institution (packages wire and crypto), so a gateway that works against
// banksim has exercised its real code paths. Faults (latency, failures,
// hangs, garbage, refusals) are injected on request, drawn from a seeded
// source so that a test can reproduce them.
package banksim

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// Status is where a simulated order stands.
type Status string

// Order statuses, as the institution sees them.
const (
	StatusProcessing Status = "processing" // accepted, not yet decided
	StatusIssued     Status = "issued"     // guarantee issued, bhno set
	StatusFailed     Status = "failed"     // issuance refused
	StatusCancelled  Status = "cancelled"  // issued, then cancelled (注销) through cancelurl
)

// Order is a snapshot of one application as the simulator holds it.
type Order struct {
	Request     wire.ApplyRequest
	Result      wire.ApplyResult // what apply answered (the same every time)
	Fee         decimal.Decimal  // premium: paymoney and bhcost
	Status      Status
	GuaranteeNo string // bhno, once issued
	Remark      string // info of the decision
	AppliedAt   time.Time
	PaidAt      time.Time // zero until the bidder paid
	DecidedAt   time.Time // issued or refused; zero while processing
	CancelledAt time.Time // cancelurl received; zero otherwise
	ReleasedAt  time.Time // cancellation done (release callback sent after it)
}

// Stats counts what the simulator saw and did.
type Stats struct {
	// Requests received per provider endpoint, refused ones included.
	Apply, Cost, XMState, Query, Pull, Cancel, Continue int64
	// Injected counts provider answers failed on purpose (FailRate).
	Injected int64
	// Callbacks the gateway acknowledged with stat 1, per endpoint.
	PayState, ApplyNotify, Release int64
	// Attempts counts callback POSTs made, retries included; GaveUp the
	// callbacks abandoned (refused, out of attempts, or Close).
	Attempts, GaveUp int64
}

// counters are the live Stats.
type counters struct {
	apply, cost, xmstate, query, pull, cancel, cont atomic.Int64
	injected                                        atomic.Int64
	payState, applyNotify, release                  atomic.Int64
	attempts, gaveUp                                atomic.Int64
}

// Sim is one simulated institution. It is safe for concurrent use.
type Sim struct {
	cfg    Config
	cipher crypto.Cipher
	log    logrus.FieldLogger
	client *http.Client
	mux    *http.ServeMux
	stats  counters
	seq    atomic.Int64 // bhno sequence

	// ctx ends the callbacks and the hanging answers when the Sim closes;
	// wg counts the callback goroutines.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	closed        bool
	orders        map[string]*Order // by orderno
	byGuaranteeNo map[string]string // bhno → orderno
	projects      []wire.ProjectState

	// rng is not safe for concurrent use, hence its own lock.
	rngMu sync.Mutex
	rng   *rand.Rand

	fill filler
}

// New checks cfg and builds a Sim. Nothing runs until its Handler is served
// and an apply arrives.
func New(cfg Config) (*Sim, error) {
	c, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	ciph, err := crypto.New(c.Cipher, c.AppSecret)
	if err != nil {
		return nil, err
	}
	log := c.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}

	// A transport of its own, so that Close can drop its idle connections
	// without touching anybody else's (the default transport is shared).
	transport := http.DefaultTransport.(*http.Transport).Clone()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		cfg:           c,
		cipher:        ciph,
		log:           log.WithFields(logrus.Fields{"component": "banksim", "orgcode": c.OrgCode}),
		client:        &http.Client{Timeout: c.CallbackTimeout, Transport: transport},
		mux:           http.NewServeMux(),
		ctx:           ctx,
		cancel:        cancel,
		orders:        make(map[string]*Order),
		byGuaranteeNo: make(map[string]string),
		// The second PCG word is fixed so that one number (Seed) is all a
		// test has to write down.
		rng:  rand.New(rand.NewPCG(c.Seed, 0x62616e6b73696d)), // "banksim"
		fill: filler{seed: c.Seed},
	}
	s.routes()
	return s, nil
}

// Handler serves the provider endpoints under the configured prefix.
func (s *Sim) Handler() http.Handler { return s.mux }

// Close stops the lifecycles and callbacks in flight, ends hanging answers,
// and waits for the goroutines. Applies received afterwards are still
// answered, but nothing more happens to them. Close may be called twice.
func (s *Sim) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.client.CloseIdleConnections()
}

// Stats returns the counters as they are now.
func (s *Sim) Stats() Stats {
	c := &s.stats
	return Stats{
		Apply: c.apply.Load(), Cost: c.cost.Load(), XMState: c.xmstate.Load(), Query: c.query.Load(),
		Pull: c.pull.Load(), Cancel: c.cancel.Load(), Continue: c.cont.Load(),
		Injected: c.injected.Load(),
		PayState: c.payState.Load(), ApplyNotify: c.applyNotify.Load(), Release: c.release.Load(),
		Attempts: c.attempts.Load(), GaveUp: c.gaveUp.Load(),
	}
}

// Orders returns a snapshot of every order, oldest apply first.
func (s *Sim) Orders() []Order {
	s.mu.Lock()
	out := make([]Order, 0, len(s.orders))
	for _, o := range s.orders {
		out = append(out, *o)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Order) int {
		if c := a.AppliedAt.Compare(b.AppliedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Request.OrderNo, b.Request.OrderNo)
	})
	return out
}

// Order returns a snapshot of one order.
func (s *Sim) Order(orderNo string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[orderNo]
	if !ok {
		return Order{}, false
	}
	return *o, true
}

// ProjectStates returns the xmstate pushes received, oldest first.
func (s *Sim) ProjectStates() []wire.ProjectState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.projects)
}

// fee is the premium for a deposit: amount × Rate rounded to fen, at least
// MinFee. Decimal all the way: money never goes through a float64.
func (s *Sim) fee(deposit decimal.Decimal) decimal.Decimal {
	f := deposit.Mul(s.cfg.Rate).Round(2)
	if f.LessThan(s.cfg.MinFee) {
		return s.cfg.MinFee
	}
	return f
}

// chance draws true with probability p.
func (s *Sim) chance(p float64) bool {
	switch {
	case p <= 0:
		return false
	case p >= 1:
		return true
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

// intN draws in [0, n).
func (s *Sim) intN(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

// goLocked runs f in a goroutine tied to the Sim's context, unless the Sim
// is closed. The caller holds s.mu: checking closed and wg.Add under the
// same lock that Close takes is what keeps wg.Add from racing wg.Wait.
func (s *Sim) goLocked(f func(ctx context.Context)) bool {
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f(s.ctx)
	}()
	return true
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// shanghai is China Standard Time: dates in bhno and on the letter are
// local to the institution. A fixed zone needs no tzdata (no DST since 1991).
var shanghai = time.FixedZone("CST", 8*3600)
