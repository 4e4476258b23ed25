package service

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
)

// State is where the gateway's orders and deliveries stand, counted in the
// database: what the gauges of /metrics and the console's overview show.
type State struct {
	At         time.Time              // when the count started: the numbers are at least this fresh
	Took       time.Duration          // how long the count took
	Orders     map[model.Status]int64 // by status
	Flagged    map[model.Flag]int64   // by flag, flagged orders only
	Deliveries map[string]int64       // by delivery status
}

// State counts orders by status and flag and deliveries by status, and
// keeps the result as the last known state (LastState) unless a count
// started later is already kept. At a million orders the count takes
// seconds: /metrics and the console serve LastState, which a StateCounter
// keeps fresh in the background. Returns EUnavailable.
func (s *Service) State(ctx context.Context) (State, error) {
	start := s.now()
	st := s.store.With(ctx)
	byStatus, err := st.CountByStatus()
	if err != nil {
		return State{}, storeErr("state", err)
	}
	byFlag, err := st.CountFlagged()
	if err != nil {
		return State{}, storeErr("state", err)
	}
	dels, err := st.CountDeliveries()
	if err != nil {
		return State{}, storeErr("state", err)
	}
	out := State{At: start, Took: s.now().Sub(start), Orders: map[model.Status]int64{}, Flagged: map[model.Flag]int64{},
		Deliveries: dels}
	for k, n := range byStatus {
		out.Orders[model.Status(k)] = n
	}
	for k, n := range byFlag {
		out.Flagged[model.Flag(k)] = n
	}
	s.keepState(&out)
	return out, nil
}

// keepState makes st the last known state unless a count that started
// later finished first (the console's and the loop's counts may overlap).
func (s *Service) keepState(st *State) {
	for {
		cur := s.lastState.Load()
		if cur != nil && cur.At.After(st.At) {
			return
		}
		if s.lastState.CompareAndSwap(cur, st) {
			return
		}
	}
}

// LastState is the last state counted successfully, from memory: no query.
// ok is false until a count has succeeded. Its maps are shared: read only.
func (s *Service) LastState() (st State, ok bool) {
	p := s.lastState.Load()
	if p == nil {
		return State{}, false
	}
	return *p, true
}

// StateCounter counts the State in the background every interval, so that
// /metrics and the console's overview read it from memory whatever the
// size of the tables. The gateway runs one per instance: the counts are
// the database's, the same on every replica, and cheap next to a scrape
// that waited for them. A failed count is logged at warn when counts start
// failing, and at info when they succeed again: not at every interval.
type StateCounter struct {
	s     *Service
	every time.Duration
	log   logrus.FieldLogger

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	failing string // the error of the last count; "" while counts succeed
}

// NewStateCounter returns a counter of s's State every interval (the
// configuration's metrics.state_interval; positive). Start starts it.
func NewStateCounter(s *Service, every time.Duration, log logrus.FieldLogger) *StateCounter {
	return &StateCounter{s: s, every: every, log: log.WithField("job", "count_state")}
}

// Start counts at once, then every interval, until Stop. It starts once:
// a second Start, or a Start after Stop, does nothing.
func (c *StateCounter) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.loop(ctx)
}

// Stop cancels the count in flight, if any, and waits for the loop to end
// (or ctx to). It may be called more than once, and without Start.
func (c *StateCounter) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
		close(c.done)
		c.cancel = func() {}
	}
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("state counter: still counting at the shutdown deadline: %w", ctx.Err())
	}
}

func (c *StateCounter) loop(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		c.count(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// count runs one count, given up after an interval: a count stuck behind
// a lock frees its connection, and the next one starts afresh.
func (c *StateCounter) count(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, c.every)
	defer cancel()
	start := time.Now()
	_, err := c.s.State(cctx)
	if ctx.Err() != nil {
		return // stopping: not a failure of the database
	}
	if err == nil {
		if c.failing != "" {
			c.log.WithField("took", time.Since(start).String()).Info("counting orders and deliveries works again; /metrics serves fresh gauges")
		}
		c.failing = ""
		return
	}
	msg := err.Error()
	if cctx.Err() != nil {
		msg = fmt.Sprintf("not done within metrics.state_interval (%s)", c.every)
	}
	// Once per failure spell: the text of a failing count varies with the
	// statement it failed in, and a warning per interval would flood.
	if c.failing == "" {
		last, ok := c.s.LastState()
		f := logrus.Fields{"error": msg}
		if ok {
			f["state_age"] = time.Since(last.At).Round(time.Second).String()
		}
		c.log.WithFields(f).Warn("counting orders and deliveries failed: /metrics and the console serve the last count, with its age")
	}
	c.failing = msg
}
