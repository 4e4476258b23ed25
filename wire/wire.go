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
	"net/url"
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
// docs/decisions.md §1 asks: a JSON object with a string "data", a JSON
// string, a form (data=…, as application/x-www-form-urlencoded), or the
// bare ciphertext text. The body is never changed, and the ciphertext is
// a slice of it wherever it can be.
func Ciphertext(body []byte) ([]byte, error) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrEnvelope)
	}
	switch b[0] {
	case '{':
		// data is taken raw and, as ciphertext (base64 or hex) has no
		// escapes, used in place: an issuance notice is tens of MiB, and
		// decoding it into a string, or copying it out, doubled the
		// gateway's peak memory for nothing.
		var env struct {
			Data inPlace `json:"data"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
		}
		return unquote(json.RawMessage(env.Data))
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
		if v, ok := formValue(b, "data"); ok {
			return formCiphertext(v)
		}
		return b, nil
	}
}

// inPlace is a JSON value left where it lies in the document: encoding/json
// hands an Unmarshaler the slice of the document it decodes, and a body
// outlives its decoding and is never written to, so keeping that slice is
// safe, and spares a copy of tens of MiB (TestCiphertextInPlace holds
// encoding/json to it).
type inPlace []byte

func (v *inPlace) UnmarshalJSON(b []byte) error {
	*v = b
	return nil
}

// formValue finds the first field name=… of a form body
// (application/x-www-form-urlencoded, which some Java clients send). Base64
// and hex ciphertext contain no '&' and no '=' but their trailing padding,
// so a bare ciphertext never looks like a form.
func formValue(b []byte, name string) ([]byte, bool) {
	for field := range bytes.SplitSeq(b, []byte("&")) {
		if k, v, ok := bytes.Cut(field, []byte("=")); ok && string(k) == name {
			return v, true
		}
	}
	return nil, false
}

// formCiphertext decodes a form field's ciphertext: %XX escapes are
// undone, but a '+' stays a '+', not the space of form encoding: a client
// that sends base64 unescaped means its '+', and ciphertext never holds a
// space.
func formCiphertext(v []byte) ([]byte, error) {
	if bytes.IndexByte(v, '%') >= 0 {
		s, err := url.PathUnescape(string(v))
		if err != nil {
			return nil, fmt.Errorf("%w: form field data: %v", ErrEnvelope, err)
		}
		v = []byte(s)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: no data", ErrEnvelope)
	}
	return v, nil
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
	cause  error // what broke the rule, when it has an error of its own (ErrNotPDF)
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }
func (e *FieldError) Unwrap() error { return e.cause }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
