package service

import (
	"context"
	"time"

	"github.com/procurement/gateway/model"
)

// InstitutionView is an institution without its secrets.
type InstitutionView struct {
	OrgCode string `json:"orgcode"`
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	Timeout string `json:"timeout"`
	Breaker string `json:"breaker"`
}

// InstitutionList returns the configured institutions, without secrets.
func (s *Service) InstitutionList() []InstitutionView {
	out := make([]InstitutionView, 0, len(s.insts.All()))
	for _, in := range s.insts.All() {
		v := InstitutionView{OrgCode: in.OrgCode, Name: in.Name, Enabled: !in.Disabled, Timeout: in.Timeout.String()}
		if in.Client != nil {
			v.Breaker = in.Client.BreakerState()
		}
		out = append(out, v)
	}
	return out
}

// Findings returns the reconciliation findings of a day (YYYY-MM-DD, a
// date of the calendar: 2025-02-30 is refused, not read as an empty day).
// Returns EInvalid, EUnavailable.
func (s *Service) Findings(ctx context.Context, date string) ([]model.Finding, error) {
	if d, err := time.Parse(time.DateOnly, date); err != nil || d.Format(time.DateOnly) != date {
		return nil, errf(EInvalid, "date", "date must be a day as YYYY-MM-DD")
	}
	fs, err := s.store.With(ctx).Findings(date)
	if err != nil {
		return nil, storeErr("findings", err)
	}
	return fs, nil
}
