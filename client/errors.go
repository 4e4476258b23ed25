package client

import (
	"errors"
	"fmt"
	"time"
)

// Kind tells what went wrong with a call, which decides what the caller may
// do next: an outcome-unknown apply must not be treated as refused.
type Kind string

const (
	// KindUnknown: the request may have reached the institution (timeout,
	// connection reset after sending): the outcome is unknown.
	KindUnknown Kind = "unknown"
	// KindUnreachable: the request surely did not leave (dial refused, DNS,
	// or the caller's context was done before it was sent): nothing
	// happened there, safe to try again.
	KindUnreachable Kind = "unreachable"
	// KindHTTP: the institution answered with an HTTP error status.
	KindHTTP Kind = "http_error"
	// KindRefused: the institution answered stat 0, with errcode and msg.
	KindRefused Kind = "refused"
	// KindBadAnswer: the answer does not decrypt or does not parse.
	KindBadAnswer Kind = "bad_answer"
	// KindInvalid: our own request broke a rule of docs/protocol.md; not sent.
	KindInvalid Kind = "invalid"
	// KindCircuitOpen: the institution failed repeatedly; not sent.
	KindCircuitOpen Kind = "circuit_open"
	// KindURLRefused: the URL is on none of the institution's origins
	// (base_url's, url_origins); not sent (docs/decisions.md §39).
	KindURLRefused Kind = "url_refused"
)

// Error is every failure a Client returns.
type Error struct {
	Kind       Kind
	OrgCode    string
	Endpoint   string
	HTTPStatus int           // KindHTTP
	RetryAfter time.Duration // KindHTTP 429/503 with Retry-After
	Errcode    string        // KindRefused
	Msg        string        // KindRefused: the institution's message
	Err        error         // the cause, if any

	// callerGone: the caller's context ended (not the institution's
	// timeout), so the failure says nothing about the institution.
	callerGone bool
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.OrgCode, e.Endpoint, e.Kind)
	switch {
	case e.Kind == KindRefused:
		s += fmt.Sprintf(" (errcode %s: %s)", e.Errcode, e.Msg)
	case e.Kind == KindHTTP:
		s += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of a client error, "" for other errors.
func KindOf(err error) Kind {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Kind
	}
	return ""
}

// OutcomeUnknown reports whether the request may have taken effect at the
// institution without us knowing: the caller must find out (query, re-send
// an idempotent request) rather than assume either way.
func OutcomeUnknown(err error) bool { return KindOf(err) == KindUnknown }

// retryable reports whether an idempotent call may be tried again at once.
func (e *Error) retryable() bool {
	switch e.Kind {
	case KindUnknown, KindUnreachable:
		return true
	case KindHTTP:
		return e.HTTPStatus >= 500 || e.HTTPStatus == 429
	}
	return false
}

// breakerFailure reports whether the failure says the institution is down,
// as opposed to a business answer (stat 0) or our own mistake.
func (e *Error) breakerFailure() bool {
	switch e.Kind {
	case KindUnknown, KindUnreachable, KindBadAnswer:
		return true
	case KindHTTP:
		return e.HTTPStatus >= 500 || e.HTTPStatus == 429
	}
	return false
}
