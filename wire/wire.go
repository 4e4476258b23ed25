// Package wire is the vocabulary of docs/protocol.md: the envelope, the request
// and response parameters of every endpoint, and the rules for their values
// (money, times, string lengths) as docs/decisions.md settles them. The client,
// the callback service and the simulated institution all speak it, so the
// rules exist once.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Generic-response error codes the gateway answers with (docs/decisions.md §7).
const (
	CodeOK          = "000000"
	CodeBadAppKey   = "100001"
	CodeBadCipher   = "100002"
	CodeBadParam    = "100003"
	CodeUnknown     = "200001"
	CodeConflict    = "200002"
	CodeUnavailable = "500001"
)

// Request is the body we send: the ciphertext of the parameters' JSON.
type Request struct {
	Data string `json:"data"`
}

// Response is the generic response of docs/protocol.md §3.1.4.
type Response struct {
	Stat    int    `json:"stat"`
	Errcode string `json:"errcode"`
	Msg     string `json:"msg"`
	Data    string `json:"data"`
}

// ErrEnvelope is returned when a body is none of the accepted envelope forms.
var ErrEnvelope = errors.New("wire: body is not an envelope")

// Ciphertext extracts the ciphertext from a received body. Tolerant, as
// docs/decisions.md §1 asks: a JSON object with a string "data", a JSON string, or
// the bare ciphertext text.
func Ciphertext(body []byte) ([]byte, error) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrEnvelope)
	}
	switch b[0] {
	case '{':
		// data is taken raw and, as ciphertext (base64 or hex) has no
		// escapes, used in place: an issuance notice is tens of MiB, and
		// decoding it into a string and copying that again doubled the
		// gateway's peak memory for nothing.
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
		}
		return unquote(env.Data)
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
		}
		if s == "" {
			return nil, fmt.Errorf("%w: no data", ErrEnvelope)
		}
		return []byte(s), nil
	default:
		return b, nil
	}
}

// unquote returns the text of a JSON string value: a subslice when it is
// plain ASCII, else the decoded copy.
func unquote(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '"' {
		return nil, fmt.Errorf("%w: no data", ErrEnvelope)
	}
	if plainASCII(raw[1 : len(raw)-1]) {
		if len(raw) == 2 {
			return nil, fmt.Errorf("%w: no data", ErrEnvelope)
		}
		return raw[1 : len(raw)-1], nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || s == "" {
		return nil, fmt.Errorf("%w: no data", ErrEnvelope)
	}
	return []byte(s), nil
}

// plainASCII reports whether a JSON string's content reads the same raw and
// decoded: printable ASCII without escapes, as base64 and hex are.
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return false
		}
	}
	return true
}

// ResponseData extracts the (possibly empty) ciphertext of an institution's
// answer. data may be ciphertext, empty, null or absent.
func ResponseData(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s)
	}
	return ""
}

// FieldError names the parameter that broke a rule; it maps to errcode
// 100003 on callbacks and to 400 with "field" on the API.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
