package service

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// bodyBudget is server.body_bytes_in_flight: the memory that request
// bodies may take at once, while they are read and while they are worked
// on (docs/decisions.md §35). Without it, the number of large bodies in
// flight, and so the gateway's memory, is whatever the senders make it:
// eight legal 30 MiB notices at once took ~874 MiB.
type bodyBudget struct {
	sem  *semaphore.Weighted
	size int64
	held atomic.Int64
}

// BodyCostFactor is what a body costs the heap while it is worked on, per
// byte of the body: the body itself, the decrypted plaintext (3/4 of it),
// the decoded PDF (9/16 of it), pdfcpu's reading of the PDF (about as
// much again) and the write of the file, plus the collector's slack, since
// freed buffers stay on the heap until the next collection.
// TestBodyCostFactor measures it on a large notice and fails if the
// factor is too low.
const BodyCostFactor = 4

// bodyWait is how long a request waits for room in the budget before it
// is answered 503 with Retry-After.
const bodyWait = time.Second

// bodyRetryAfter is the Retry-After of that answer: about the time a large
// notice takes to be worked on.
const bodyRetryAfter = 2 * time.Second

func newBodyBudget(size int64) *bodyBudget {
	if size <= 0 {
		return nil
	}
	return &bodyBudget{sem: semaphore.NewWeighted(size), size: size}
}

// ReserveBody holds room in the memory budget for a request body of n
// bytes (its declared length, or the route's limit when it declared
// none), at BodyCostFactor times its size and at most the whole budget, so
// that a body the limits allow is always taken once it is alone. The room
// is held until release is called, once the request is answered. When no
// room comes within a second ReserveBody returns false: the caller answers
// 503 (a callback: stat 0, 500001) with Retry-After, reading nothing.
// route names the requests in gateway_body_budget_refusals_total.
func (s *Service) ReserveBody(ctx context.Context, route string, n int64) (release func(), ok bool) {
	b := s.bodies
	if b == nil || n <= 0 {
		return func() {}, true
	}
	w := min(n*BodyCostFactor, b.size)
	wait, cancel := context.WithTimeout(ctx, bodyWait)
	defer cancel()
	if err := b.sem.Acquire(wait, w); err != nil {
		s.metrics.BodyBudget(route, true, b.held.Load())
		return nil, false
	}
	s.metrics.BodyBudget(route, false, b.held.Add(w))
	var once sync.Once
	return func() {
		once.Do(func() {
			b.sem.Release(w)
			s.metrics.BodyBudget(route, false, b.held.Add(-w))
		})
	}, true
}

// BodyRetryAfter is the Retry-After of a request refused by the budget.
func BodyRetryAfter() time.Duration { return bodyRetryAfter }
