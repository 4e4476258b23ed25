package wire

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// China Standard Time has had no daylight saving since 1991, so a fixed zone
// reads "yyyy-MM-dd HH:mm:ss" exactly as Asia/Shanghai would, without tzdata.
var shanghai = time.FixedZone("CST", 8*3600)

// Bounds outside which a time is surely a mistake (seconds taken for
// milliseconds, a zero value), not a procurement date.
var (
	minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Money: yuan, non-negative, at most two decimals, no exponent, and within
// DECIMAL(18,2). Rate: the premium rate, up to six decimals.
var (
	moneyPattern = regexp.MustCompile(`^[0-9]{1,16}(\.[0-9]{1,2})?$`)
	ratePattern  = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,6})?$`)
)

// MaxMoney is the most DECIMAL(18,2) holds. Every amount matches
// moneyPattern and so stays within it; a sum of amounts the gateway stores
// (an order's paid and refunded amounts) must be checked against it.
var MaxMoney = decimal.RequireFromString("9999999999999999.99")

// apiOrderNo is the form of an orderno the bidding module gives the
// gateway (docs/decisions.md §38): it travels in URL paths and in the
// Content-Disposition of the PDF, where anything else would need escaping
// or could break the header. The interface's string(32) still bounds it.
var apiOrderNo = regexp.MustCompile(`^[0-9A-Za-z._-]{1,50}$`)

// CheckAPIOrderNo refuses an orderno of the bidding module that is not 1
// to 50 of 0-9, A-Z, a-z, '.', '_' and '-'.
func CheckAPIOrderNo(field, s string) *FieldError {
	if !apiOrderNo.MatchString(s) {
		return fieldErr(field, "must be 1 to 50 of the characters 0-9 A-Z a-z . _ -")
	}
	return nil
}

// Amount is money on the wire: sent as a JSON number with exactly two
// decimals (docs/decisions.md §5).
type Amount struct{ decimal.Decimal }

// MarshalJSON writes 10000.00, never 1e4 or 10000.
func (a Amount) MarshalJSON() ([]byte, error) { return []byte(a.StringFixed(2)), nil }

// Rate is a premium rate on the wire, sent with its own precision.
type Rate struct{ decimal.Decimal }

// MarshalJSON writes the rate as a JSON number.
func (r Rate) MarshalJSON() ([]byte, error) { return []byte(r.String()), nil }

// Millis is a time on the wire: epoch milliseconds as a JSON number.
type Millis struct{ time.Time }

// MarshalJSON writes epoch milliseconds; the zero time is written as null.
func (m Millis) MarshalJSON() ([]byte, error) {
	if m.IsZero() {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, m.UnixMilli(), 10), nil
}

// ParseMoney reads an amount from a JSON number or numeric string.
func ParseMoney(field string, raw json.RawMessage) (decimal.Decimal, *FieldError) {
	return parseDecimal(field, raw, moneyPattern, "money: a non-negative number of yuan with at most two decimals")
}

func parseDecimal(field string, raw json.RawMessage, pattern *regexp.Regexp, rule string) (decimal.Decimal, *FieldError) {
	s, ferr := scalar(field, raw)
	if ferr != nil {
		return decimal.Decimal{}, ferr
	}
	if !pattern.MatchString(s) {
		return decimal.Decimal{}, fieldErr(field, "%s", rule)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, fieldErr(field, "%s", rule)
	}
	return d, nil
}

// ParseTime reads epoch milliseconds or seconds (numbers or numeric strings;
// below 10^11 taken as seconds) or "yyyy-MM-dd HH:mm:ss" in Asia/Shanghai,
// and returns it in UTC (docs/decisions.md §4).
func ParseTime(field string, raw json.RawMessage) (time.Time, *FieldError) {
	s, ferr := scalar(field, raw)
	if ferr != nil {
		return time.Time{}, ferr
	}
	var t time.Time
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 1e11 {
			t = time.Unix(n, 0)
		} else {
			t = time.UnixMilli(n)
		}
	} else if p, err := time.ParseInLocation(time.DateTime, s, shanghai); err == nil {
		t = p
	} else {
		return time.Time{}, fieldErr(field, "time: epoch milliseconds or yyyy-MM-dd HH:mm:ss")
	}
	if t.Before(minTime) || !t.Before(maxTime) {
		return time.Time{}, fieldErr(field, "time out of range")
	}
	return t.UTC(), nil
}

// scalar returns the text of a JSON number or string; anything else (object,
// array, bool) is the wrong type for the field.
func scalar(field string, raw json.RawMessage) (string, *FieldError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", fieldErr(field, "missing")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fieldErr(field, "malformed string")
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw), nil
	default:
		return "", fieldErr(field, "wrong type: want a number or a string")
	}
}

// CheckLen enforces docs/protocol.md's string(n): at most n characters (runes).
func CheckLen(field, s string, max int) *FieldError {
	if !utf8.ValidString(s) {
		return fieldErr(field, "not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fieldErr(field, "longer than %d characters (%d)", max, n)
	}
	return nil
}
