package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pdfcpu/pdfcpu/pkg/api"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/model"

	"github.com/procurement/gateway/wire/pdftest"
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
		// application/x-www-form-urlencoded, as some Java clients post it.
		{"form", "data=QUJD%2B%2F%3D%3D", "QUJD+/==", true},
		{"form with base64 unescaped", "data=QUJD+/==", "QUJD+/==", true},
		{"form among other fields", "appKey=k&data=QUJD&t=1", "QUJD", true},
		{"form with an empty data", "data=", "", false},
		{"form with a broken escape", "data=QUJD%2", "", false},
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

// TestCiphertextInPlace: the ciphertext of an object envelope is a slice
// of the body, not a copy (a notice is tens of MiB), and taking it leaves
// the body as it was. It fails if encoding/json ever hands an Unmarshaler
// a buffer of its own, which inPlace would then keep after it changed.
func TestCiphertextInPlace(t *testing.T) {
	body := []byte(`{"data":"` + strings.Repeat("QUJD", 1024) + `"}`)
	orig := string(body)
	ct, err := Ciphertext(body)
	if err != nil {
		t.Fatal(err)
	}
	if &ct[0] != &body[len(`{"data":"`)] {
		t.Error("the ciphertext was copied out of the body")
	}
	if string(body) != orig || string(ct) != strings.Repeat("QUJD", 1024) {
		t.Error("the body changed")
	}
	plain := []byte(`{"orderno":"A1","bhno":"BH1","staus":"2","bhrate":1,"bhcost":1,"sellername":"s","selleraddress":"a","sellerphone":"p"}`)
	r, ferr := newReader(plain)
	if ferr != nil {
		t.Fatal(ferr)
	}
	if v := r.raw("orderno"); &v[0] != &plain[len(`{"orderno":`)] {
		t.Error("a field's value was copied out of the plaintext")
	}
}

func TestCheckPDF(t *testing.T) {
	api.DisableConfigDir() // pdfcpu would write its configuration under $HOME
	letter := pdftest.Letter("BH-1", 0, 1)
	encrypted := func(user string) []byte {
		var out bytes.Buffer
		if err := api.Encrypt(bytes.NewReader(letter), &out, model.NewAESConfiguration(user, "owner-secret", 256)); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	tests := []struct {
		name string
		pdf  []byte
		ok   bool
	}{
		{"a letter", letter, true},
		{"a letter of 1 MiB", pdftest.Letter("BH-1", 1<<20, 2), true},
		{"encrypted, no user password (permissions only)", encrypted(""), true},
		{"encrypted with a user password", encrypted("user-secret"), true},
		{"the magic alone", []byte("%PDF-"), false},
		{"a header and a comment", []byte("%PDF-1.4\n% the letter\n%%EOF\n"), false},
		{"a catalog without pages", []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"), false},
		{"a letter cut short", letter[:len(letter)/2], false},
		{"a letter behind garbage", append([]byte("garbage "), letter...), false},
		{"a PNG", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), false},
	}
	for _, tc := range tests {
		err := CheckPDF(tc.pdf)
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNotPDF) {
			t.Errorf("%s: %v does not wrap ErrNotPDF", tc.name, err)
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
	pdf := pdftest.Letter("BH1", 600, 7)
	b64 := base64.StdEncoding.EncodeToString(pdf)
	if !strings.Contains(b64, "/") {
		t.Fatal("the letter's base64 has no slash to escape")
	}
	base := `{"orderno":"A1","staus":"1","bhno":"BH1","bhrate":0.0015,"bhcost":200,"sellername":"s",
		"selleraddress":"a","sellerphone":"p","bhcretime":1796103000000,"bhfile":%s}`
	tests := []struct {
		name, file string
		ok         bool
	}{
		{"plain base64", `"` + b64 + `"`, true},
		{"escaped slashes", `"` + strings.ReplaceAll(b64, "/", `\/`) + `"`, true},
		{"not a PDF", `"` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"`, false},
		{"five bytes of magic", `"` + base64.StdEncoding.EncodeToString([]byte("%PDF-")) + `"`, false},
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

func TestOrigin(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://bank.example/eg/query?x=1", "https://bank.example:443"},
		{"HTTPS://Bank.Example.:443/p", "https://bank.example:443"},
		{"http://bank.example", "http://bank.example:80"},
		{"http://bank.example:8080/", "http://bank.example:8080"},
		{"https://user:pass@bank.example/", "https://bank.example:443"},
		{"http://[::1]:9000/q", "http://[::1]:9000"},
		{"http://127.0.0.1:9/x", "http://127.0.0.1:9"},
		{"ftp://bank.example/", ""},
		{"/relative/path", ""},
		{"https:///nohost", ""},
		{"javascript:alert(1)", ""},
		{"http://bank.example:port/", ""},
	}
	for _, tc := range tests {
		got, err := Origin(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("Origin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
