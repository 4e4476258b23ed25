package model

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Conflicts between writers are answered by refusing one of them, and the
// refused one must run its work again from the start.
//
// On one InnoDB server that is a deadlock (1213) or a lock wait timeout
// (1205); on TiDB a write conflict (9007); on SQLite a busy database. On a
// Galera cluster it is the normal way concurrent writers on different
// nodes are ordered: each runs on its own node without seeing the other's
// locks, and at COMMIT the one certified second fails with 1213. When the
// other node's commit reaches this node while the transaction is still
// open, the transaction is rolled back at once and its next statement,
// whatever it is, answers 1213. So a transaction is retried whole, never
// statement by statement, and no code may carry on after a statement's
// error as if the transaction were still alive.

// Retry says how the store runs work again that the database refused over
// a conflict: InTx runs the whole transaction again, Do the whole function
// on the pool. The zero value never retries.
type Retry struct {
	// Attempts is how many times refused work is run again; 0: never.
	Attempts int
	// Wait bounds the first pause before running again; each later bound
	// doubles, up to maxRetryWait. Each pause is drawn at random below its
	// bound (full jitter), so that writers refused together do not meet
	// again at the same moment.
	Wait time.Duration
	// Observe, when set, is told of every piece of work the store ran
	// under this policy, once it is over: its op (WithOp), how many times
	// it ran again, and whether conflicts outlasted the attempts.
	Observe func(op string, retries int, exhausted bool)
}

// maxRetryWait caps a single pause: past it a conflict is not one that
// waiting resolves, and the caller's caller (an institution, a job's next
// run) is better placed to try later.
const maxRetryWait = time.Second

// pause returns the wait before the n-th retry (1-based).
func (r Retry) pause(n int) time.Duration {
	bound := r.Wait
	for i := 1; i < n && bound < maxRetryWait; i++ {
		bound *= 2
	}
	bound = min(bound, maxRetryWait)
	if bound <= 0 {
		return 0
	}
	return rand.N(bound) + 1
}

type opKey struct{}

// WithOp names the work that ctx runs (InTx, Do), for Retry.Observe: the
// metrics count retries per op.
func WithOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

func opOf(ctx context.Context) string {
	if op, ok := ctx.Value(opKey{}).(string); ok && op != "" {
		return op
	}
	return "other"
}

// Retrying returns a store on the same pool whose InTx and Do follow r.
func (s *Store) Retrying(r Retry) *Store {
	c := *s
	c.retry = r
	return &c
}

// retrying runs work, and again while the database refuses it over a
// conflict, at most s.retry.Attempts more times. The error is the last
// attempt's; conflicts that outlasted the attempts say how many there were.
func (s *Store) retrying(ctx context.Context, work func() error) error {
	retries := 0
	err := work()
	for Transient(err) && retries < s.retry.Attempts {
		retries++
		t := time.NewTimer(s.retry.pause(retries))
		select {
		case <-ctx.Done():
			t.Stop()
			retries-- // not run again
			err = errors.Join(err, ctx.Err())
		case <-t.C:
			err = work()
			continue
		}
		break
	}
	exhausted := Transient(err)
	if s.retry.Observe != nil {
		s.retry.Observe(opOf(ctx), retries, exhausted)
	}
	if exhausted && retries > 0 {
		return fmt.Errorf("%w (refused %d times)", err, retries+1)
	}
	return err
}

// Do runs fn on the pool, each statement in a transaction of its own
// (autocommit), and runs it whole again when the database refused a
// statement over a conflict, as InTx does with a transaction. fn must be
// safe to run again from its start: a claim or a conditional update, an
// insert that a unique key decides.
func (s *Store) Do(ctx context.Context, fn func(q Queries) error) error {
	return s.retrying(ctx, func() error { return fn(s.With(ctx)) })
}
