package service

import (
	"context"

	"github.com/sirupsen/logrus"
)

type requestIDKey struct{}

// WithRequestID returns ctx carrying the id of the HTTP request it serves,
// so that every line the service logs for that request (outbound calls
// included) can be found by the X-Request-Id the caller sent or received.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id carried by ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// logger is the service's logger for work done on behalf of ctx: with the
// request id when there is one (a job's context has none).
func (s *Service) logger(ctx context.Context) logrus.FieldLogger {
	if id := RequestID(ctx); id != "" {
		return s.log.WithField("request_id", id)
	}
	return s.log
}
