package service

import (
	"context"
	"time"

	"github.com/procurement/gateway/model"
)

// State is where the gateway's orders and deliveries stand, counted in the
// database: what the gauges of /metrics and the console's overview show.
type State struct {
	At         time.Time              // when it was counted
	Orders     map[model.Status]int64 // by status
	Flagged    map[model.Flag]int64   // by flag, flagged orders only
	Deliveries map[string]int64       // by delivery status
}

// State counts orders by status and flag and deliveries by status.
// Returns EUnavailable.
func (s *Service) State(ctx context.Context) (State, error) {
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
	out := State{At: s.now(), Orders: map[model.Status]int64{}, Flagged: map[model.Flag]int64{}, Deliveries: dels}
	for k, n := range byStatus {
		out.Orders[model.Status(k)] = n
	}
	for k, n := range byFlag {
		out.Flagged[model.Flag(k)] = n
	}
	return out, nil
}
