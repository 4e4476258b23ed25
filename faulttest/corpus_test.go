package faulttest

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// The institutions of the corpus: FAULT posts, OTHER owns an order FAULT
// must not see, and has its own key.
var (
	corpusFault = handlertest.Institution{OrgCode: "FAULT", Name: "FAULT bank", AppKey: "fault-app-key",
		AppSecret: "fault-secret-16b", Timeout: time.Second}
	corpusOther = handlertest.Institution{OrgCode: "OTHER", Name: "OTHER bank", AppKey: "other-app-key",
		AppSecret: "other-secret-16b", Timeout: time.Second}
)

// corpusCase is one malformed callback and the refusal it must get.
type corpusCase struct {
	name string
	kind string
	// plain is encrypted with FAULT's cipher and put in the envelope; body,
	// when set, is posted as it is instead.
	plain []byte
	body  []byte
	// appKey is the header; "" means FAULT's, "-" none at all.
	appKey  string
	errcode string
	field   string // 100003: the field the answer must name
	// status is the HTTP status, 200 unless set.
	status int
}

// TestMalformedCallbacks posts a corpus of malformed callbacks — each
// required field missing, over-long, of the wrong type; bad money, times,
// base64 and padding; a file that is not a PDF; deep nesting; invalid
// UTF-8; bad envelopes and keys; unknown and conflicting references — to the
// real gateway (in process, real store, real cipher). Each must be answered
// stat 0 with its errcode, leave orders, payments, files and events exactly
// as they were, and add exactly one audit row, result rejected, with that
// errcode. The unmodified bases are accepted at the end, which shows the
// corpus fails for the reason each case names and that the database check
// sees a change when there is one.
func TestMalformedCallbacks(t *testing.T) {
	for _, driver := range []string{"sqlite", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			if driver == "mysql" && os.Getenv(modeltest.EnvDSN) == "" {
				t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
			}
			runCorpus(t, driver)
		})
	}
}

func runCorpus(t *testing.T, driver string) {
	driverName, dsn := modeltest.DSN(t, driver, os.Getenv)
	store := openStore(t, driverName, dsn)
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	seedCorpusOrders(t, store)
	gw := handlertest.Start(t, handlertest.Options{Driver: driver, Store: store,
		Institutions: []handlertest.Institution{corpusFault, corpusOther}})

	cases := corpusCases(t)
	if len(cases) < 40 {
		t.Fatalf("corpus has %d cases, want at least 40", len(cases))
	}
	answers := map[string]int{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, db)
			status, resp := postCase(t, gw, tc)
			after := snapshot(t, db)
			answers[resp.Errcode]++

			wantStatus := tc.status
			if wantStatus == 0 {
				wantStatus = http.StatusOK
			}
			if status != wantStatus || resp.Stat != 0 || resp.Errcode != tc.errcode {
				t.Errorf("answer HTTP %d stat %d errcode %s (%s); want HTTP %d stat 0 errcode %s",
					status, resp.Stat, resp.Errcode, resp.Msg, wantStatus, tc.errcode)
			}
			if tc.field != "" && !strings.Contains(resp.Msg, "invalid parameter "+tc.field+":") {
				t.Errorf("answer %q does not name the field %s", resp.Msg, tc.field)
			}
			if resp.Data != "" {
				t.Errorf("a refusal carries data %q", resp.Data)
			}
			if after.tables != before.tables {
				t.Errorf("the refused callback changed the stored state:\nbefore %s\nafter  %s", before.tables, after.tables)
			}
			added := after.callbacks - before.callbacks
			switch {
			case added != 1:
				t.Errorf("%d audit rows added; want exactly 1", added)
			case after.last.Result != model.CallbackRejected || after.last.Errcode != tc.errcode || after.last.Kind != tc.kind ||
				after.last.DedupKey != nil:
				t.Errorf("audit row %+v; want kind %s, result rejected, errcode %s, no dedup key",
					after.last, tc.kind, tc.errcode)
			}
		})
	}
	codes := make([]string, 0, len(answers))
	for c := range answers {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var summary []string
	for _, c := range codes {
		summary = append(summary, fmt.Sprintf("%s ×%d", c, answers[c]))
	}
	t.Logf("corpus of %d malformed callbacks on %s: %s", len(cases), driver, strings.Join(summary, ", "))

	// The bases are valid: each is accepted and changes what is stored.
	for _, ctl := range []struct {
		name, kind string
		plain      []byte
		check      func(o *model.Order) bool
		orderNo    string
	}{
		{"paystate", "paystate", corpusJSON(t, basePayState(), nil), func(o *model.Order) bool { return o.PaidAmount.StringFixed(2) == "100.00" }, "CORPUS-0001"},
		{"applynotify", "applynotify", corpusJSON(t, baseNotify(), nil), func(o *model.Order) bool {
			return o.Status == model.StatusIssued && o.GuaranteeNo.String == "BH-CORPUS-1"
		}, "CORPUS-0001"},
		{"release", "release", corpusJSON(t, baseRelease(), nil), func(o *model.Order) bool { return o.Status == model.StatusCancelled }, "CORPUS-0002"},
	} {
		before := snapshot(t, db)
		status, resp := postCase(t, gw, corpusCase{kind: ctl.kind, plain: ctl.plain})
		after := snapshot(t, db)
		o, err := store.Order(ctl.orderNo)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK || resp.Stat != 1 || after.tables == before.tables || !ctl.check(o) {
			t.Errorf("control %s: HTTP %d %+v, state changed %v, order %s %s; want it accepted and stored",
				ctl.name, status, resp, after.tables != before.tables, o.Status, o.GuaranteeNo.String)
		}
	}
}

func postCase(t *testing.T, gw *handlertest.Gateway, tc corpusCase) (int, wire.Response) {
	t.Helper()
	body := tc.body
	if body == nil {
		body = envelopeOf(t, corpusFault.AppSecret, tc.plain)
	}
	key := tc.appKey
	switch key {
	case "":
		key = corpusFault.AppKey
	case "-":
		key = ""
	}
	return gw.RawCallback(t, tc.kind, key, body)
}

func envelopeOf(t testing.TB, secret string, plain []byte) []byte {
	t.Helper()
	c, err := crypto.New(crypto.Options{}, secret)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(wire.Request{Data: string(ct)})
	return b
}

// seedCorpusOrders: CORPUS-1 processing, CORPUS-2 issued as BH-CORPUS-2
// and paid 1.00, CORPUS-3 cancelled as BH-CORPUS-3 (all FAULT's), CORPUS-9
// processing at OTHER.
func seedCorpusOrders(t testing.TB, store *model.Store) {
	t.Helper()
	seedOrders(t, store, "FAULT", "CORPUS", 3)
	for _, o := range []struct {
		no   string
		to   model.Status
		bhno string
	}{{"CORPUS-0002", model.StatusIssued, "BH-CORPUS-2"}, {"CORPUS-0003", model.StatusCancelled, "BH-CORPUS-3"}} {
		moved, err := store.MoveOrder(o.no, []model.Status{model.StatusProcessing}, o.to, model.OrderChange{}.GuaranteeNo(o.bhno))
		if err != nil || !moved {
			t.Fatalf("seed %s: %v %v", o.no, moved, err)
		}
	}
	// CORPUS-0002 was paid 1.00.
	if _, err := store.UpdateOrder("CORPUS-0002", model.OrderChange{}.Amounts(model.Amounts{Paid: decimal.RequireFromString("1.00"),
		Refunded: decimal.Zero}), model.OrderGuard{}); err != nil {
		t.Fatal(err)
	}
	other := testOrder("OTHER", "CORPUS-9", 9)
	other.Status = model.StatusProcessing
	if err := store.CreateOrder(other); err != nil {
		t.Fatal(err)
	}
}

// The valid callbacks the corpus breaks one thing of.
func basePayState() map[string]any {
	return map[string]any{"orderno": "CORPUS-0001", "paymoney": "100.00", "paytime": int64(1767225600000), "type": "1",
		"paybankname": "某某建设有限公司", "paybankno": "6222020200112233445"}
}

func baseNotify() map[string]any {
	return map[string]any{"orderno": "CORPUS-0001", "bhno": "BH-CORPUS-1", "staus": "1", "info": "同意出函",
		"bhrate": "0.005", "bhcost": "500.00", "sellername": "某某担保有限公司", "selleraddress": "北京市西城区某某街1号",
		"sellerphone": "010-12345678", "bhcretime": int64(1767225600000), "bhfile": base64.StdEncoding.EncodeToString(testPDF)}
}

func baseRelease() map[string]any { return map[string]any{"bhno": "BH-CORPUS-2", "state": "1"} }

// raw marks a value written into the JSON as it is.
type raw string

// corpusJSON is base with the changes applied: a value sets the field
// (raw: verbatim JSON), nil deletes it.
func corpusJSON(t testing.TB, base map[string]any, changes map[string]any) []byte {
	t.Helper()
	for k, v := range changes {
		if v == nil {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	keys := make([]string, 0, len(base))
	for k := range base {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		b.Write(kj)
		b.WriteByte(':')
		if r, ok := base[k].(raw); ok {
			b.WriteString(string(r))
			continue
		}
		vj, err := json.Marshal(base[k])
		if err != nil {
			t.Fatal(err)
		}
		b.Write(vj)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func corpusCases(t testing.TB) []corpusCase {
	pay := func(name string, changes map[string]any, code, field string) corpusCase {
		return corpusCase{name: "paystate/" + name, kind: "paystate", plain: corpusJSON(t, basePayState(), changes), errcode: code, field: field}
	}
	notify := func(name string, changes map[string]any, code, field string) corpusCase {
		return corpusCase{name: "applynotify/" + name, kind: "applynotify", plain: corpusJSON(t, baseNotify(), changes), errcode: code, field: field}
	}
	release := func(name string, changes map[string]any, code, field string) corpusCase {
		return corpusCase{name: "release/" + name, kind: "release", plain: corpusJSON(t, baseRelease(), changes), errcode: code, field: field}
	}
	const bad, unknown, conflict = wire.CodeBadParam, wire.CodeUnknown, wire.CodeConflict
	b64 := base64.StdEncoding.EncodeToString
	pdf := b64(testPDF)
	if !strings.HasSuffix(pdf, "=") {
		t.Fatalf("the test PDF's base64 has no padding to break: %s", pdf)
	}
	// A PDF whose base64 has '+' or '/', sent in the URL-safe alphabet.
	pdfURL := base64.URLEncoding.EncodeToString(append(bytes.Clone(testPDF), 0xfb, 0xff, 0xbf))
	if !strings.ContainsAny(pdfURL, "-_") {
		t.Fatalf("URL-safe base64 %s has no - or _", pdfURL)
	}
	validPay := corpusJSON(t, basePayState(), nil)

	cases := []corpusCase{
		// paystate: each required field missing or blank.
		pay("orderno missing", map[string]any{"orderno": nil}, bad, "orderno"),
		pay("orderno blank", map[string]any{"orderno": "   "}, bad, "orderno"),
		pay("orderno null", map[string]any{"orderno": raw("null")}, bad, "orderno"),
		pay("paymoney missing", map[string]any{"paymoney": nil}, bad, "paymoney"),
		pay("paytime missing", map[string]any{"paytime": nil}, bad, "paytime"),
		pay("type missing", map[string]any{"type": nil}, bad, "type"),
		pay("paybankname missing for a payment", map[string]any{"paybankname": nil}, bad, "paybankname"),
		pay("paybankno missing for a payment", map[string]any{"paybankno": nil}, bad, "paybankno"),
		// Over-long (string(n) counts characters).
		pay("orderno of 33 characters", map[string]any{"orderno": strings.Repeat("A", 33)}, bad, "orderno"),
		pay("paybankname of 65 Chinese characters", map[string]any{"paybankname": strings.Repeat("付", 65)}, bad, "paybankname"),
		pay("paybankno of 65 digits", map[string]any{"paybankno": strings.Repeat("6", 65)}, bad, "paybankno"),
		// The wrong type.
		pay("orderno a number", map[string]any{"orderno": raw("12345")}, bad, "orderno"),
		pay("orderno an object", map[string]any{"orderno": raw(`{"no":"CORPUS-0001"}`)}, bad, "orderno"),
		pay("paymoney a boolean", map[string]any{"paymoney": raw("true")}, bad, "paymoney"),
		pay("paymoney an array", map[string]any{"paymoney": raw(`["100.00"]`)}, bad, "paymoney"),
		pay("type 3", map[string]any{"type": "3"}, bad, "type"),
		pay("type an array", map[string]any{"type": raw(`["1"]`)}, bad, "type"),
		pay("paybankname a number", map[string]any{"paybankname": raw("42")}, bad, "paybankname"),
		// Bad money.
		pay("paymoney negative", map[string]any{"paymoney": "-1.00"}, bad, "paymoney"),
		pay("paymoney negative number", map[string]any{"paymoney": raw("-1")}, bad, "paymoney"),
		pay("paymoney three decimals", map[string]any{"paymoney": "100.001"}, bad, "paymoney"),
		pay("paymoney three decimals as a number", map[string]any{"paymoney": raw("100.001")}, bad, "paymoney"),
		pay("paymoney exponent", map[string]any{"paymoney": raw("1e2")}, bad, "paymoney"),
		pay("paymoney exponent string", map[string]any{"paymoney": "1.5E+2"}, bad, "paymoney"),
		pay("paymoney NaN", map[string]any{"paymoney": "NaN"}, bad, "paymoney"),
		pay("paymoney Infinity", map[string]any{"paymoney": "Infinity"}, bad, "paymoney"),
		pay("paymoney empty string", map[string]any{"paymoney": ""}, bad, "paymoney"),
		pay("paymoney over DECIMAL(18,2)", map[string]any{"paymoney": "12345678901234567.00"}, bad, "paymoney"),
		pay("paymoney with a thousands separator", map[string]any{"paymoney": "1,000.00"}, bad, "paymoney"),
		pay("paymoney with a plus sign", map[string]any{"paymoney": "+1.00"}, bad, "paymoney"),
		pay("paymoney with blanks", map[string]any{"paymoney": " 1.00"}, bad, "paymoney"),
		pay("paymoney hexadecimal", map[string]any{"paymoney": "0x10"}, bad, "paymoney"),
		// Bad times.
		pay("paytime words", map[string]any{"paytime": "yesterday"}, bad, "paytime"),
		pay("paytime zero", map[string]any{"paytime": raw("0")}, bad, "paytime"),
		pay("paytime negative", map[string]any{"paytime": raw("-1767225600000")}, bad, "paytime"),
		pay("paytime in 2100", map[string]any{"paytime": raw("4102444800000")}, bad, "paytime"),
		pay("paytime slashed date", map[string]any{"paytime": "2026/01/01 10:00:00"}, bad, "paytime"),
		pay("paytime ISO 8601", map[string]any{"paytime": "2026-01-01T10:00:00Z"}, bad, "paytime"),
		pay("paytime 31 February", map[string]any{"paytime": "2026-02-31 10:00:00"}, bad, "paytime"),
		pay("paytime fractional", map[string]any{"paytime": raw("1767225600000.5")}, bad, "paytime"),
		pay("paytime beyond int64", map[string]any{"paytime": raw("99999999999999999999")}, bad, "paytime"),
		pay("paytime a boolean", map[string]any{"paytime": raw("false")}, bad, "paytime"),
		// References.
		pay("unknown orderno", map[string]any{"orderno": "NO-SUCH-ORDER"}, unknown, ""),
		pay("another institution's order", map[string]any{"orderno": "CORPUS-9"}, unknown, ""),
		// Amounts that do not add up (issue 13): a refund above what was
		// paid, and a payment that takes the order's paid sum beyond what
		// DECIMAL(18,2) holds (CORPUS-0002 has 1.00 paid).
		pay("a refund above the payments", map[string]any{"type": "2", "paymoney": "99999.00", "paybankname": nil, "paybankno": nil}, conflict, ""),
		pay("a refund above the payments by a fen", map[string]any{"orderno": "CORPUS-0002", "type": "2", "paymoney": "1.01"}, conflict, ""),
		pay("paymoney taking the paid sum beyond DECIMAL(18,2)", map[string]any{"orderno": "CORPUS-0002", "paymoney": "9999999999999999.99"}, bad, "paymoney"),

		// applynotify.
		notify("staus missing", map[string]any{"staus": nil}, bad, "staus"),
		notify("staus 9", map[string]any{"staus": "9"}, bad, "staus"),
		notify("staus a boolean", map[string]any{"staus": raw("true")}, bad, "staus"),
		notify("issued without bhno", map[string]any{"bhno": nil}, bad, "bhno"),
		notify("bhno of 65 characters", map[string]any{"bhno": strings.Repeat("B", 65)}, bad, "bhno"),
		notify("info of 513 characters", map[string]any{"info": strings.Repeat("意", 513)}, bad, "info"),
		notify("bhrate missing", map[string]any{"bhrate": nil}, bad, "bhrate"),
		notify("bhrate seven decimals", map[string]any{"bhrate": "0.0000001"}, bad, "bhrate"),
		notify("bhcost negative", map[string]any{"bhcost": "-500.00"}, bad, "bhcost"),
		notify("bhcost three decimals", map[string]any{"bhcost": raw("500.005")}, bad, "bhcost"),
		notify("sellername missing", map[string]any{"sellername": nil}, bad, "sellername"),
		notify("sellerphone of 65 characters", map[string]any{"sellerphone": strings.Repeat("1", 65)}, bad, "sellerphone"),
		notify("bhcretime garbage", map[string]any{"bhcretime": "soon"}, bad, "bhcretime"),
		notify("bhfile not base64", map[string]any{"bhfile": "%%% not base64 %%%"}, bad, "bhfile"),
		notify("bhfile without its base64 padding", map[string]any{"bhfile": strings.TrimRight(pdf, "=")}, bad, "bhfile"),
		notify("bhfile with extra padding", map[string]any{"bhfile": pdf + "=="}, bad, "bhfile"),
		notify("bhfile URL-safe alphabet", map[string]any{"bhfile": pdfURL}, bad, "bhfile"),
		notify("bhfile not a PDF", map[string]any{"bhfile": b64([]byte("hello, this is not a PDF"))}, bad, "bhfile"),
		notify("bhfile a PNG", map[string]any{"bhfile": b64([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))}, bad, "bhfile"),
		notify("bhfile a number", map[string]any{"bhfile": raw("12345")}, bad, "bhfile"),
		// Files that start like a PDF and are none (issue 13): each was
		// stored, served and called valid by 验真 when only the first five
		// bytes were checked.
		notify("bhfile the five bytes of the PDF magic", map[string]any{"bhfile": b64([]byte("%PDF-"))}, bad, "bhfile"),
		notify("bhfile a PDF header and a comment", map[string]any{"bhfile": b64([]byte("%PDF-1.7\n% guarantee letter\n%%EOF\n"))}, bad, "bhfile"),
		notify("bhfile a catalog without pages", map[string]any{"bhfile": b64([]byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"))}, bad, "bhfile"),
		notify("bhfile a letter cut in half", map[string]any{"bhfile": b64(testPDF[:len(testPDF)/2])}, bad, "bhfile"),
		notify("unknown orderno", map[string]any{"orderno": "NO-SUCH-ORDER"}, unknown, ""),
		notify("another bhno for an issued order", map[string]any{"orderno": "CORPUS-0002", "bhno": "BH-ANOTHER"}, conflict, ""),
		notify("failed after issued", map[string]any{"orderno": "CORPUS-0002", "staus": "0", "bhno": nil}, conflict, ""),
		// The file would be stored before the bhno's unique index refuses
		// the order's move: the transaction must take the file back too.
		notify("the bhno of another order", map[string]any{"bhno": "BH-CORPUS-2"}, conflict, ""),

		// release.
		release("bhno missing", map[string]any{"bhno": nil}, bad, "bhno"),
		release("state missing", map[string]any{"state": nil}, bad, "state"),
		release("state 2", map[string]any{"state": "2"}, bad, "state"),
		release("state an object", map[string]any{"state": raw(`{"v":1}`)}, bad, "state"),
		release("bhno of 65 characters", map[string]any{"bhno": strings.Repeat("B", 65)}, bad, "bhno"),
		release("unknown bhno", map[string]any{"bhno": "BH-NO-SUCH"}, unknown, ""),
		release("a cancelled guarantee surrendered", map[string]any{"bhno": "BH-CORPUS-3", "state": "0"}, conflict, ""),

		// The decrypted body.
		{name: "body/not JSON", kind: "paystate", plain: []byte("orderno=CORPUS-0001&paymoney=100.00"), errcode: bad, field: "body"},
		{name: "body/a JSON array", kind: "paystate", plain: []byte(`[` + string(validPay) + `]`), errcode: bad, field: "body"},
		{name: "body/JSON null", kind: "paystate", plain: []byte("null"), errcode: bad, field: "body"},
		{name: "body/a JSON string", kind: "release", plain: []byte(`"BH-CORPUS-2"`), errcode: bad, field: "body"},
		{name: "body/truncated JSON", kind: "paystate", plain: validPay[:len(validPay)-10], errcode: bad, field: "body"},
		{name: "body/empty", kind: "paystate", plain: []byte{}, errcode: bad, field: "body"},
		{name: "body/nested 20000 deep", kind: "paystate", plain: []byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)), errcode: bad, field: "body"},
		{name: "body/a field nested 5000 deep", kind: "paystate", plain: corpusJSON(t, basePayState(),
			map[string]any{"orderno": raw(strings.Repeat("[", 5000) + strings.Repeat("]", 5000))}), errcode: bad, field: "orderno"},
		{name: "body/invalid UTF-8", kind: "paystate", plain: bytes.Replace(validPay, []byte("某某"), []byte("\xff\xfe"), 1), errcode: bad, field: "body"},
		{name: "body/UTF-8 surrogate half", kind: "release", plain: []byte("{\"bhno\":\"BH-\xed\xa0\x80\",\"state\":\"1\"}"), errcode: bad, field: "body"},
		{name: "body/UTF-16", kind: "release", plain: utf16le(`{"bhno":"BH-CORPUS-2","state":"1"}`), errcode: bad, field: "body"},

		// The envelope and the key.
		{name: "envelope/no appKey", kind: "paystate", plain: validPay, appKey: "-", errcode: wire.CodeBadAppKey},
		{name: "envelope/unknown appKey", kind: "paystate", plain: validPay, appKey: "no-such-key", errcode: wire.CodeBadAppKey},
		{name: "envelope/another institution's appKey", kind: "paystate", plain: validPay, appKey: corpusOther.AppKey, errcode: wire.CodeBadCipher},
		{name: "envelope/encrypted under another key", kind: "paystate", body: envelopeOf(t, "some-other-key16", validPay), errcode: wire.CodeBadCipher},
		{name: "envelope/empty body", kind: "paystate", body: []byte{}, errcode: wire.CodeBadCipher},
		{name: "envelope/no data", kind: "paystate", body: []byte(`{}`), errcode: wire.CodeBadCipher},
		{name: "envelope/data empty", kind: "paystate", body: []byte(`{"data":""}`), errcode: wire.CodeBadCipher},
		{name: "envelope/data null", kind: "paystate", body: []byte(`{"data":null}`), errcode: wire.CodeBadCipher},
		{name: "envelope/data a number", kind: "paystate", body: []byte(`{"data":12345}`), errcode: wire.CodeBadCipher},
		{name: "envelope/data not base64", kind: "paystate", body: []byte(`{"data":"!!! not base64 !!!"}`), errcode: wire.CodeBadCipher},
		{name: "envelope/ciphertext without its padding", kind: "paystate", body: mangle(t, validPay, func(ct string) string {
			if !strings.HasSuffix(ct, "=") {
				t.Fatalf("ciphertext %s has no padding to break", ct)
			}
			return strings.TrimRight(ct, "=")
		}), errcode: wire.CodeBadCipher},
		{name: "envelope/ciphertext not whole blocks", kind: "paystate", body: mangle(t, validPay, func(ct string) string {
			raw, _ := base64.StdEncoding.DecodeString(ct)
			return b64(raw[:len(raw)-1])
		}), errcode: wire.CodeBadCipher},
		{name: "envelope/ciphertext last block altered", kind: "paystate", body: mangle(t, validPay, func(ct string) string {
			raw, _ := base64.StdEncoding.DecodeString(ct)
			raw[len(raw)-1] ^= 0x5a
			return b64(raw)
		}), errcode: wire.CodeBadCipher},
		{name: "envelope/truncated JSON", kind: "paystate", body: []byte(`{"data":"IpO7dQlrHNtdcgTX`), errcode: wire.CodeBadCipher},
		{name: "envelope/nested 20000 deep", kind: "paystate", body: []byte(`{"data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`), errcode: wire.CodeBadCipher},
		{name: "envelope/invalid UTF-8", kind: "paystate", body: []byte("{\"data\":\"\xff\xfe\xfd\"}"), errcode: wire.CodeBadCipher},
		{name: "envelope/over the 64 KiB limit", kind: "paystate", body: []byte(`{"data":"` + strings.Repeat("A", 70<<10) + `"}`),
			errcode: wire.CodeBadParam, status: http.StatusRequestEntityTooLarge},
	}
	return cases
}

// mangle encrypts plain with FAULT's key and changes the ciphertext text.
func mangle(t testing.TB, plain []byte, change func(ct string) string) []byte {
	var env wire.Request
	if err := json.Unmarshal(envelopeOf(t, corpusFault.AppSecret, plain), &env); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(wire.Request{Data: change(env.Data)})
	return b
}

func utf16le(s string) []byte {
	out := []byte{0xff, 0xfe} // BOM
	for _, r := range s {
		out = append(out, byte(r), byte(r>>8))
	}
	return out
}

// dbState is what a refused callback must not change, and the audit rows.
type dbState struct {
	tables    string
	callbacks int64
	last      model.Callback
}

// snapshot reads the stored state directly: every order's status and
// amounts, and the count and last id of payments, files, events, calls and
// deliveries; then the audit rows.
func snapshot(t testing.TB, db *sql.DB) dbState {
	t.Helper()
	var s dbState
	var b strings.Builder
	rows, err := db.Query(`SELECT order_no, status, COALESCE(guarantee_no, ''), paid_amount, refunded_amount,
		file_pending, remark, issuer_name, updated_at FROM orders ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		vals := make([]any, 9)
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if bs, ok := v.([]byte); ok {
				v = string(bs)
			}
			fmt.Fprintf(&b, "%v|", v)
		}
		b.WriteString("; ")
	}
	rows.Close()
	for _, table := range []string{"payments", "guarantee_files", "order_events", "outbound_calls", "deliveries"} {
		var n, last int64
		if err := db.QueryRow("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM "+table).Scan(&n, &last); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d/%d; ", table, n, last)
	}
	s.tables = b.String()
	if err := db.QueryRow("SELECT COUNT(*) FROM callbacks").Scan(&s.callbacks); err != nil {
		t.Fatal(err)
	}
	var key sql.NullString
	err = db.QueryRow("SELECT id, kind, org_code, result, errcode, dedup_key FROM callbacks ORDER BY id DESC LIMIT 1").
		Scan(&s.last.ID, &s.last.Kind, &s.last.OrgCode, &s.last.Result, &s.last.Errcode, &key)
	if err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	if key.Valid {
		s.last.DedupKey = &key.String
	}
	return s
}
