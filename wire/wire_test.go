package wire

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCiphertext(t *testing.T) {
	tests := []struct {
		name, body, want string
		ok               bool
	}{
		{"object", `{"data":"QUJD+/=="}`, "QUJD+/==", true},
		{"object with spaces and other fields", ` { "x": 1, "data" : "QUJD" } `, "QUJD", true},
		{"escaped slash (PHP, some Java encoders)", `{"data":"QU\/JD"}`, "QU/JD", true},
		{"JSON string", `"QUJD"`, "QUJD", true},
		{"bare text", "QUJD\n", "QUJD", true},
		{"empty body", "  ", "", false},
		{"no data", `{"x":"QUJD"}`, "", false},
		{"empty data", `{"data":""}`, "", false},
		{"null data", `{"data":null}`, "", false},
		{"number data", `{"data":12}`, "", false},
		{"broken object", `{"data":"QUJD"`, "", false},
	}
	for _, tc := range tests {
		got, err := Ciphertext([]byte(tc.body))
		if tc.ok != (err == nil) || string(got) != tc.want {
			t.Errorf("%s: got %q, %v; want %q ok=%v", tc.name, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: error %v does not wrap ErrEnvelope", tc.name, err)
		}
	}
}

func TestParseMoney(t *testing.T) {
	tests := []struct{ in, want string }{
		{`10000`, "10000"}, {`10000.5`, "10000.5"}, {`"10000.50"`, "10000.5"}, {`0.01`, "0.01"},
		{`9999999999999999.99`, "9999999999999999.99"},
		{`-1`, ""}, {`1.001`, ""}, {`1e3`, ""}, {`"NaN"`, ""}, {`"1,000"`, ""}, {`true`, ""},
		{`{"a":1}`, ""}, {`""`, ""}, {`99999999999999999`, ""},
	}
	for _, tc := range tests {
		d, err := ParseMoney("bzjmoney", json.RawMessage(tc.in))
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s: accepted as %s", tc.in, d)
		case tc.want != "" && (err != nil || d.String() != tc.want):
			t.Errorf("%s: got %s, %v; want %s", tc.in, d, err, tc.want)
		case err != nil && err.Field != "bzjmoney":
			t.Errorf("%s: error names %q", tc.in, err.Field)
		}
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 12, 1, 1, 30, 0, 0, time.UTC) // 09:30 in Beijing
	for _, in := range []string{`1796088600000`, `"1796088600000"`, `1796088600`, `"2026-12-01 09:30:00"`} {
		got, err := ParseTime("kbttime", json.RawMessage(in))
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%s: got %v, %v; want %v in UTC", in, got, err, want)
		}
	}
	for _, in := range []string{`0`, `-5`, `"2026-13-01 00:00:00"`, `"yesterday"`, `4102444800000`, `1.5`, `[]`} {
		if got, err := ParseTime("kbttime", json.RawMessage(in)); err == nil {
			t.Errorf("%s: accepted as %v", in, got)
		}
	}
}

func TestCheckLen(t *testing.T) {
	if err := CheckLen("qyname", strings.Repeat("中", 64), 64); err != nil {
		t.Errorf("64 characters of 3 bytes each refused: %v", err)
	}
	if err := CheckLen("qyname", strings.Repeat("中", 65), 64); err == nil {
		t.Error("65 characters accepted")
	}
	if err := CheckLen("qyname", "a\xffb", 64); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
}

func TestApplyNotifyFile(t *testing.T) {
	pdf := []byte("%PDF-1.4 a/b?c>d" + strings.Repeat("x", 100))
	b64 := base64.StdEncoding.EncodeToString(pdf)
	base := `{"orderno":"A1","staus":"1","bhno":"BH1","bhrate":0.0015,"bhcost":200,"sellername":"s",
		"selleraddress":"a","sellerphone":"p","bhcretime":1796103000000,"bhfile":%s}`
	tests := []struct {
		name, file string
		ok         bool
	}{
		{"plain base64", `"` + b64 + `"`, true},
		{"escaped slashes", `"` + strings.ReplaceAll(b64, "/", `\/`) + `"`, true},
		{"not a PDF", `"` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"`, false},
		{"not base64", `"%%%%"`, false},
		{"not a string", `123`, false},
	}
	for _, tc := range tests {
		n, err := ParseApplyNotify([]byte(strings.Replace(base, "%s", tc.file, 1)))
		if tc.ok && (err != nil || string(n.File) != string(pdf)) {
			t.Errorf("%s: %v, file %q", tc.name, err, n.File)
		}
		var fe *FieldError
		if !tc.ok && (!errors.As(err, &fe) || fe.Field != "bhfile") {
			t.Errorf("%s: err %v, want one naming bhfile", tc.name, err)
		}
	}
	// staus (sic) wins; status is read only when staus is absent.
	n, err := ParseApplyNotify([]byte(`{"orderno":"A1","status":2,"bhrate":0,"bhcost":0,"sellername":"s","selleraddress":"a","sellerphone":"p"}`))
	if err != nil || n.State != NotifyProcessing {
		t.Errorf("status fallback: %+v %v", n, err)
	}
}
