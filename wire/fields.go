package wire

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// reader validates one decrypted JSON object field by field. The first
// broken rule is kept, so the answer names one field, the first in the
// interface's order.
type reader struct {
	m   map[string]inPlace // slices of the plaintext: a bhfile is not copied out
	err *FieldError
}

func newReader(plain []byte) (*reader, *FieldError) {
	if !utf8.Valid(plain) {
		return nil, fieldErr("body", "not valid UTF-8")
	}
	var m map[string]inPlace
	if err := json.Unmarshal(plain, &m); err != nil || m == nil {
		return nil, fieldErr("body", "not a JSON object")
	}
	return &reader{m: m}, nil
}

// raw returns the field's value, nil when absent or null.
func (r *reader) raw(name string) json.RawMessage {
	v := bytes.TrimSpace(json.RawMessage(r.m[name]))
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	return v
}

func (r *reader) has(name string) bool { return r.raw(name) != nil }

func (r *reader) fail(e *FieldError) {
	if r.err == nil {
		r.err = e
	}
}

// str reads a string(max); required means present and not blank.
func (r *reader) str(name string, max int, required bool) string {
	return value(r, name, required, func(name string, v json.RawMessage) (string, *FieldError) {
		if v[0] != '"' {
			return "", fieldErr(name, "wrong type: want a string")
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fieldErr(name, "malformed string")
		}
		if required && len(bytes.TrimSpace([]byte(s))) == 0 {
			return "", fieldErr(name, "missing")
		}
		return s, CheckLen(name, s, max)
	})
}

// code reads an enumerated value sent as a string or a number ("1" or 1).
func (r *reader) code(name string, required bool, allowed ...string) string {
	return value(r, name, required, func(name string, v json.RawMessage) (string, *FieldError) {
		s, e := scalar(name, v)
		if e != nil {
			return "", e
		}
		for _, a := range allowed {
			if s == a {
				return s, nil
			}
		}
		return "", fieldErr(name, "must be one of %v", allowed)
	})
}

func (r *reader) money(name string, required bool) decimal.Decimal {
	return r.decimal(name, required, ParseMoney)
}

func (r *reader) rate(name string, required bool) decimal.Decimal {
	return r.decimal(name, required, func(f string, v json.RawMessage) (decimal.Decimal, *FieldError) {
		return parseDecimal(f, v, ratePattern, "rate: a non-negative number with at most six decimals")
	})
}

func (r *reader) decimal(name string, required bool, parse func(string, json.RawMessage) (decimal.Decimal, *FieldError)) decimal.Decimal {
	return value(r, name, required, parse)
}

func (r *reader) time(name string, required bool) time.Time {
	return value(r, name, required, ParseTime)
}

// value reads one field with parse: the zero value when it is absent (and
// "missing" when it is required) or when an earlier field broke a rule.
func value[T any](r *reader, name string, required bool, parse func(string, json.RawMessage) (T, *FieldError)) T {
	var zero T
	if r.err != nil {
		return zero
	}
	v := r.raw(name)
	if v == nil {
		if required {
			r.fail(fieldErr(name, "missing"))
		}
		return zero
	}
	out, e := parse(name, v)
	if e != nil {
		r.fail(e)
		return zero
	}
	return out
}

// done returns the first broken rule as an error, or nil.
func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	return nil
}
