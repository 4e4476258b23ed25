package service

import (
	"context"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/model"
)

// RecordCall persists one outbound attempt and counts it; it satisfies
// client.Recorder. A failure to store the record is logged and does not
// fail the call: the call happened either way.
func (s *Service) RecordCall(ctx context.Context, r client.Record) {
	s.metrics.Call(r.OrgCode, r.Endpoint, r.Result, r.Latency)
	c := &model.Call{OrgCode: r.OrgCode, OrderNo: r.OrderNo, Endpoint: r.Endpoint, URL: truncate(r.URL, 1024),
		Attempt: r.Attempt, HTTPStatus: r.HTTPStatus, Stat: r.Stat, Errcode: r.Errcode, Result: r.Result,
		Error: truncate(r.Error, 512), LatencyMs: r.Latency.Milliseconds(), RequestBytes: r.RequestBytes,
		ResponseBytes: r.ResponseBytes}
	entry := s.logger(ctx).WithFields(map[string]any{"institution": r.OrgCode, "endpoint": r.Endpoint, "result": r.Result,
		"http_status": r.HTTPStatus, "latency_ms": r.Latency.Milliseconds(), "attempt": r.Attempt})
	if r.OrderNo != "" {
		entry = entry.WithField("orderno", r.OrderNo)
	}
	if r.Result != "ok" {
		entry.WithField("error", r.Error).Warn("institution call failed")
	} else {
		entry.Debug("institution call")
	}
	if err := s.store.Do(model.WithOp(ctx, "record_call"), func(q model.Queries) error { return q.InsertCall(c) }); err != nil {
		entry.WithError(err).Error("call record not stored")
	}
}
