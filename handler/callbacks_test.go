package handler_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
	"github.com/procurement/gateway/wire/pdftest"
)

// The institutions of these tests, one per cipher family of docs/decisions.md §2.
const (
	orgECB  = "BANK01" // AES/ECB, base64: the default
	orgCBC  = "BANK02" // AES/CBC with iv=key, lower-case hex
	orgPRNG = "BANK03" // key derived by Java's SHA1PRNG from the secret
	orgSM4  = "BANK04" // 国密 SM4/ECB, base64
)

func testInstitutions() []handlertest.Institution {
	ecb := handlertest.DefaultInstitution(orgECB)
	cbc := handlertest.Institution{OrgCode: orgCBC, Name: "CBC bank", AppKey: "key-" + orgCBC,
		AppSecret: "fedcba9876543210", Cipher: crypto.Options{Mode: "cbc", Encoding: "hex"}}
	prng := handlertest.Institution{OrgCode: orgPRNG, Name: "SHA1PRNG bank", AppKey: "key-" + orgPRNG,
		AppSecret: "a seed of any length, as Java takes it", Cipher: crypto.Options{Key: "sha1prng"}}
	sm4 := handlertest.Institution{OrgCode: orgSM4, Name: "SM4 bank", AppKey: "key-" + orgSM4,
		AppSecret: "sm4-secret-16chr", Cipher: crypto.Options{Algorithm: "sm4"}}
	return []handlertest.Institution{ecb, cbc, prng, sm4}
}

// institution is an httptest institution: it opens the envelope with its
// real cipher and accepts apply (answering its URLs) and cancel.
type institution struct {
	srv    *httptest.Server
	cipher crypto.Cipher
}

func newInstitution(t testing.TB, spec handlertest.Institution) *institution {
	t.Helper()
	c, err := crypto.New(spec.Cipher, spec.AppSecret)
	if err != nil {
		t.Fatal(err)
	}
	in := &institution{cipher: c}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		answer := func(resp wire.Response) {
			w.Header().Set("Content-Type", "application/json;charset=utf-8")
			json.NewEncoder(w).Encode(resp)
		}
		ct, err := wire.Ciphertext(body)
		if err != nil || r.Header.Get("appKey") != spec.AppKey {
			answer(wire.Response{Stat: 0, Errcode: "100001", Msg: "bad request"})
			return
		}
		plain, err := c.Decrypt(ct)
		if err != nil {
			answer(wire.Response{Stat: 0, Errcode: "100002", Msg: "does not decrypt"})
			return
		}
		switch r.URL.Path {
		case "/guarantee/apply":
			if _, err := wire.ParseApplyRequest(plain, false); err != nil {
				answer(wire.Response{Stat: 0, Errcode: "100003", Msg: err.Error()})
				return
			}
			res, _ := json.Marshal(wire.ApplyResult{ContinueURL: in.srv.URL + "/continue", QueryURL: in.srv.URL + "/query",
				PullURL: in.srv.URL + "/pull", CancelURL: in.srv.URL + "/cancel"})
			data, _ := c.Encrypt(res)
			answer(wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "ok", Data: string(data)})
		case "/cancel":
			answer(wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "ok"})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(in.srv.Close)
	return in
}

// fixture is a running gateway with the four institutions.
type fixture struct {
	*handlertest.Gateway
	specs map[string]handlertest.Institution
	seq   atomic.Int64
}

// start runs a gateway on driver; opts may change the options (a store of
// the test's own, a body limit) before it starts.
func start(t testing.TB, driver string, opts ...func(*handlertest.Options)) *fixture {
	t.Helper()
	o := handlertest.Options{Driver: driver}
	f := &fixture{specs: map[string]handlertest.Institution{}}
	for _, spec := range testInstitutions() {
		spec.BaseURL = newInstitution(t, spec).srv.URL
		o.Institutions = append(o.Institutions, spec)
		f.specs[spec.OrgCode] = spec
	}
	for _, fn := range opts {
		fn(&o)
	}
	f.Gateway = handlertest.Start(t, o)
	return f
}

// order applies through POST /v1/guarantees, so that the institution holds
// the order and it is processing; it returns the orderno.
func (f *fixture) order(t testing.TB, org string) string {
	t.Helper()
	n := f.seq.Add(1)
	orderNo := fmt.Sprintf("T%s%08d", org, n)
	now := time.Now()
	status, body := f.API(t, http.MethodPost, "/v1/guarantees", map[string]any{
		"orgcode": org, "orderno": orderNo, "qyname": "某某建设有限公司", "qycode": fmt.Sprintf("91330000MA%08d", n),
		"bzjmoney": "10000.00", "xmname": "办公设备采购", "xmcode": "XM-2025-001", "bdname": "第一标段",
		"bdcode": fmt.Sprintf("BD%d", n), "kbttime": now.Add(72 * time.Hour).UnixMilli(), "zbrname": "某某采购中心",
		"zbrcode": "12330000MB0000000X", "tbjztime": now.Add(48 * time.Hour).UnixMilli(), "qykh": "中国银行杭州分行",
		"qykhzh": "某某建设有限公司", "qyjbzh": "6217000000001234", "jbrname": "张三", "jbrphone": "13800001234",
		"jbremail": "zhangsan@example.com",
	})
	if status != http.StatusCreated {
		t.Fatalf("apply %s: %d %s", orderNo, status, body)
	}
	return orderNo
}

// issued makes a processing order of org and issues it as bhno with pdf.
func (f *fixture) issued(t testing.TB, org, bhno string, pdf []byte) string {
	t.Helper()
	orderNo := f.order(t, org)
	expect(t, "issue", ok)(f.Callback(t, org, "applynotify", notifyParams(orderNo, wire.NotifyIssued, bhno, pdf)))
	return orderNo
}

// post encrypts params (a map, or []byte as they are) with the cipher of
// org and posts it under appKey; it returns the exact body sent.
func (f *fixture) post(t testing.TB, kind, appKey, cipherOrg string, params any) (int, wire.Response, []byte) {
	t.Helper()
	body := envelope(t, f.Cipher(cipherOrg), params)
	status, resp := f.RawCallback(t, kind, appKey, body)
	return status, resp, body
}

func envelope(t testing.TB, c crypto.Cipher, params any) []byte {
	t.Helper()
	plain, isRaw := params.([]byte)
	if !isRaw {
		var err error
		if plain, err = json.Marshal(params); err != nil {
			t.Fatal(err)
		}
	}
	ct, err := c.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.Request{Data: string(ct)})
	return body
}

// want is an expected answer: HTTP status and errcode (stat follows).
type want struct {
	http int
	code string
}

var ok = want{http.StatusOK, wire.CodeOK}

func refused(code string) want { return want{http.StatusOK, code} }

// expect checks an answer; use as expect(t, what, w)(f.Callback(...)).
func expect(t testing.TB, what string, w want) func(int, wire.Response) {
	t.Helper()
	return func(status int, r wire.Response) {
		t.Helper()
		stat := 0
		if w.code == wire.CodeOK {
			stat = 1
		}
		if status != w.http || r.Stat != stat || r.Errcode != w.code {
			t.Fatalf("%s: got HTTP %d stat %d errcode %s (%q), want HTTP %d stat %d errcode %s",
				what, status, r.Stat, r.Errcode, r.Msg, w.http, stat, w.code)
		}
	}
}

const (
	payerName    = "某某建设有限公司"
	payerAccount = "6222020200112233445"
)

// issuedAt is the bhcretime of the tests' issuance notices.
var issuedAt = time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC)

func payParams(orderNo, kind, money string, at time.Time) map[string]any {
	m := map[string]any{"orderno": orderNo, "paymoney": money, "paytime": at.UnixMilli(), "type": kind}
	if kind == wire.PayKindPay {
		m["paybankname"], m["paybankno"] = payerName, payerAccount
	}
	return m
}

func notifyParams(orderNo, staus, bhno string, pdf []byte) map[string]any {
	m := map[string]any{"orderno": orderNo, "staus": staus, "bhrate": "0.0015", "bhcost": "15.00",
		"sellername": "某某银行杭州分行", "selleraddress": "杭州市西湖区某某路1号", "sellerphone": "0571-88888888"}
	if bhno != "" {
		m["bhno"] = bhno
	}
	switch staus {
	case wire.NotifyIssued:
		m["bhcretime"] = issuedAt.UnixMilli()
	case wire.NotifyFailed:
		m["info"] = "资料不全，不予出函"
	}
	if pdf != nil {
		m["bhfile"] = base64.StdEncoding.EncodeToString(pdf)
	}
	return m
}

func releaseParams(bhno, state string) map[string]any {
	return map[string]any{"bhno": bhno, "state": state}
}

// pdfOf returns a guarantee letter of about n bytes, distinct per seed and
// cheap to make under -race (pdftest.Letter).
func pdfOf(n int, seed uint64) []byte { return pdftest.Letter(fmt.Sprintf("test %d", seed), n, seed) }

// bigNotice returns the body of an issuance notice carrying pdf, put
// together without passing its megabytes through encoding/json, which is
// slow under -race; the gateway still parses it all.
func bigNotice(t testing.TB, c crypto.Cipher, orderNo, bhno string, pdf []byte) []byte {
	t.Helper()
	head := mustJSON(t, notifyParams(orderNo, wire.NotifyIssued, bhno, nil))
	plain := make([]byte, 0, len(head)+base64.StdEncoding.EncodedLen(len(pdf))+16)
	plain = append(plain, head[:len(head)-1]...) // without the closing brace
	plain = append(plain, `,"bhfile":"`...)
	plain = base64.StdEncoding.AppendEncode(plain, pdf)
	plain = append(plain, `"}`...)
	ct, err := c.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 0, len(ct)+16)
	body = append(body, `{"data":"`...) // base64 and hex need no escaping
	body = append(body, ct...)
	return append(body, `"}`...)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func mustOrder(t testing.TB, g *handlertest.Gateway, orderNo string) *model.Order {
	t.Helper()
	o, err := g.Store.Order(orderNo)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func mustPayments(t testing.TB, g *handlertest.Gateway, orderNo string) []model.Payment {
	t.Helper()
	p, err := g.Store.Payments(orderNo)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustCallbacks(t testing.TB, g *handlertest.Gateway, orderNo string) []model.Callback {
	t.Helper()
	cbs, err := g.Store.Callbacks(orderNo)
	if err != nil {
		t.Fatal(err)
	}
	return cbs
}

func mustEvents(t testing.TB, g *handlertest.Gateway, orderNo string) []model.Event {
	t.Helper()
	evs, err := g.Store.Events(orderNo)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// results lists the result of each callback row, oldest first.
func results(cbs []model.Callback) []string {
	out := make([]string, len(cbs))
	for i, c := range cbs {
		out[i] = c.Result + "/" + c.Errcode
	}
	return out
}

func statusEvents(evs []model.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == model.EventStatus {
			out = append(out, e.FromStatus+">"+e.ToStatus)
		}
	}
	return out
}

func eventNamed(evs []model.Event, name string) *model.Event {
	for i := range evs {
		if evs[i].Name == name {
			return &evs[i]
		}
	}
	return nil
}

func decimalEq(t testing.TB, what string, got decimal.Decimal, want string) {
	t.Helper()
	if !got.Equal(decimal.RequireFromString(want)) {
		t.Errorf("%s = %s, want %s", what, got.StringFixed(2), want)
	}
}

// TestCallbackRefusals walks every refusal before the effect: the appKey
// (100001), the cipher (100002) and each rule of docs/protocol.md on the fields
// (100003, the field named in msg). Each is answered HTTP 200 with stat 0,
// audited as a rejected callback with the body's digest, and changes nothing.
func TestCallbackRefusals(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)
		orderNo := f.order(t, orgECB)
		key := f.specs[orgECB].AppKey
		// A fixed time, so that the ciphertexts are the same on every run:
		// text of another key fails its padding check by design, not by luck.
		at := time.Date(2025, 2, 1, 8, 0, 0, 0, time.UTC)
		pay := func(change func(m map[string]any)) map[string]any {
			m := payParams(orderNo, wire.PayKindPay, "100.00", at)
			change(m)
			return m
		}
		notify := func(change func(m map[string]any)) map[string]any {
			m := notifyParams(orderNo, wire.NotifyIssued, "BH-REFUSED", pdfOf(64, 1))
			change(m)
			return m
		}
		rel := func(change func(m map[string]any)) map[string]any {
			m := releaseParams("BH-REFUSED", wire.ReleaseCancelled)
			change(m)
			return m
		}
		valid := pay(func(map[string]any) {})
		cases := []struct {
			name   string
			kind   string
			appKey string // the header; "-" sends none
			cipher string // whose cipher encrypts params
			params any    // a map, or []byte: the plaintext
			raw    []byte // when set, the body as it is
			code   string
			field  string // named in msg
			// auditedAs is the orderno under which the refusal is audited:
			// "" when the refusal came before the orderno was known.
			auditedAs string
		}{
			{name: "no appKey", kind: "paystate", appKey: "-", params: valid, code: wire.CodeBadAppKey},
			{name: "unknown appKey", kind: "paystate", appKey: "key-NOBODY", params: valid, code: wire.CodeBadAppKey},
			{name: "appKey prefix of a real one", kind: "paystate", appKey: "key-BANK0", params: valid, code: wire.CodeBadAppKey},
			{name: "appKey in other case", kind: "paystate", appKey: strings.ToUpper(key), params: valid, code: wire.CodeBadAppKey},
			{name: "empty body", kind: "paystate", raw: []byte{}, code: wire.CodeBadCipher},
			{name: "envelope without data", kind: "paystate", raw: []byte(`{"foo":"bar"}`), code: wire.CodeBadCipher},
			{name: "data not ciphertext", kind: "paystate", raw: []byte(`{"data":"this is not *base64* at all"}`), code: wire.CodeBadCipher},
			{name: "ciphertext of another institution", kind: "paystate", cipher: orgSM4, params: valid, code: wire.CodeBadCipher},
			{name: "plaintext not JSON", kind: "paystate", params: []byte("orderno=1"), code: wire.CodeBadParam, field: "body"},
			{name: "plaintext JSON array", kind: "paystate", params: []byte(`[1,2]`), code: wire.CodeBadParam, field: "body"},
			{name: "orderno missing", kind: "paystate", params: pay(func(m map[string]any) { delete(m, "orderno") }), code: wire.CodeBadParam, field: "orderno"},
			{name: "orderno blank", kind: "paystate", params: pay(func(m map[string]any) { m["orderno"] = "  " }), code: wire.CodeBadParam, field: "orderno"},
			{name: "orderno of 33 runes", kind: "paystate", params: pay(func(m map[string]any) { m["orderno"] = strings.Repeat("号", 33) }), code: wire.CodeBadParam, field: "orderno"},
			{name: "orderno a number", kind: "paystate", params: pay(func(m map[string]any) { m["orderno"] = 12345 }), code: wire.CodeBadParam, field: "orderno"},
			{name: "paymoney missing", kind: "paystate", params: pay(func(m map[string]any) { delete(m, "paymoney") }), code: wire.CodeBadParam, field: "paymoney", auditedAs: orderNo},
			{name: "paymoney three decimals", kind: "paystate", params: pay(func(m map[string]any) { m["paymoney"] = "100.001" }), code: wire.CodeBadParam, field: "paymoney", auditedAs: orderNo},
			{name: "paymoney negative", kind: "paystate", params: pay(func(m map[string]any) { m["paymoney"] = "-1.00" }), code: wire.CodeBadParam, field: "paymoney", auditedAs: orderNo},
			{name: "paymoney exponent", kind: "paystate", params: pay(func(m map[string]any) { m["paymoney"] = json.Number("1e4") }), code: wire.CodeBadParam, field: "paymoney", auditedAs: orderNo},
			{name: "paymoney NaN", kind: "paystate", params: pay(func(m map[string]any) { m["paymoney"] = "NaN" }), code: wire.CodeBadParam, field: "paymoney", auditedAs: orderNo},
			{name: "paytime not a time", kind: "paystate", params: pay(func(m map[string]any) { m["paytime"] = "yesterday" }), code: wire.CodeBadParam, field: "paytime", auditedAs: orderNo},
			{name: "paytime zero", kind: "paystate", params: pay(func(m map[string]any) { m["paytime"] = 0 }), code: wire.CodeBadParam, field: "paytime", auditedAs: orderNo},
			{name: "type 3", kind: "paystate", params: pay(func(m map[string]any) { m["type"] = "3" }), code: wire.CodeBadParam, field: "type", auditedAs: orderNo},
			{name: "type an object", kind: "paystate", params: pay(func(m map[string]any) { m["type"] = map[string]any{} }), code: wire.CodeBadParam, field: "type", auditedAs: orderNo},
			{name: "pay without paybankname", kind: "paystate", params: pay(func(m map[string]any) { delete(m, "paybankname") }), code: wire.CodeBadParam, field: "paybankname", auditedAs: orderNo},
			{name: "pay without paybankno", kind: "paystate", params: pay(func(m map[string]any) { delete(m, "paybankno") }), code: wire.CodeBadParam, field: "paybankno", auditedAs: orderNo},
			{name: "paybankname of 65 runes", kind: "paystate", params: pay(func(m map[string]any) { m["paybankname"] = strings.Repeat("名", 65) }), code: wire.CodeBadParam, field: "paybankname", auditedAs: orderNo},
			{name: "paybankno of 65 chars", kind: "paystate", params: pay(func(m map[string]any) { m["paybankno"] = strings.Repeat("6", 65) }), code: wire.CodeBadParam, field: "paybankno", auditedAs: orderNo},
			{name: "issued without bhno", kind: "applynotify", params: notify(func(m map[string]any) { delete(m, "bhno") }), code: wire.CodeBadParam, field: "bhno", auditedAs: orderNo},
			{name: "staus 5", kind: "applynotify", params: notify(func(m map[string]any) { m["staus"] = "5" }), code: wire.CodeBadParam, field: "staus", auditedAs: orderNo},
			{name: "neither staus nor status", kind: "applynotify", params: notify(func(m map[string]any) { delete(m, "staus") }), code: wire.CodeBadParam, field: "staus", auditedAs: orderNo},
			{name: "bhfile not a PDF", kind: "applynotify", params: notify(func(m map[string]any) {
				m["bhfile"] = base64.StdEncoding.EncodeToString([]byte("PK\x03\x04 a zip file"))
			}), code: wire.CodeBadParam, field: "bhfile", auditedAs: orderNo},
			{name: "bhfile not base64", kind: "applynotify", params: notify(func(m map[string]any) { m["bhfile"] = "%PDF-1.7 raw" }), code: wire.CodeBadParam, field: "bhfile", auditedAs: orderNo},
			{name: "bhno of 65 chars", kind: "applynotify", params: notify(func(m map[string]any) { m["bhno"] = strings.Repeat("B", 65) }), code: wire.CodeBadParam, field: "bhno", auditedAs: orderNo},
			{name: "sellername of 65 runes", kind: "applynotify", params: notify(func(m map[string]any) { m["sellername"] = strings.Repeat("银", 65) }), code: wire.CodeBadParam, field: "sellername", auditedAs: orderNo},
			{name: "selleraddress missing", kind: "applynotify", params: notify(func(m map[string]any) { delete(m, "selleraddress") }), code: wire.CodeBadParam, field: "selleraddress", auditedAs: orderNo},
			{name: "bhrate missing", kind: "applynotify", params: notify(func(m map[string]any) { delete(m, "bhrate") }), code: wire.CodeBadParam, field: "bhrate", auditedAs: orderNo},
			{name: "bhcost three decimals", kind: "applynotify", params: notify(func(m map[string]any) { m["bhcost"] = "15.001" }), code: wire.CodeBadParam, field: "bhcost", auditedAs: orderNo},
			{name: "info of 513 runes", kind: "applynotify", params: notify(func(m map[string]any) { m["info"] = strings.Repeat("意", 513) }), code: wire.CodeBadParam, field: "info", auditedAs: orderNo},
			{name: "bhcretime not a time", kind: "applynotify", params: notify(func(m map[string]any) { m["bhcretime"] = "2025-13-45 99:00:00" }), code: wire.CodeBadParam, field: "bhcretime", auditedAs: orderNo},
			{name: "release state 2", kind: "release", params: rel(func(m map[string]any) { m["state"] = "2" }), code: wire.CodeBadParam, field: "state"},
			{name: "release without bhno", kind: "release", params: rel(func(m map[string]any) { delete(m, "bhno") }), code: wire.CodeBadParam, field: "bhno"},
			{name: "release bhno of 65 chars", kind: "release", params: rel(func(m map[string]any) { m["bhno"] = strings.Repeat("B", 65) }), code: wire.CodeBadParam, field: "bhno"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				body := c.raw
				if body == nil {
					cipher := c.cipher
					if cipher == "" {
						cipher = orgECB
					}
					body = envelope(t, f.Cipher(cipher), c.params)
				}
				appKey := c.appKey
				switch appKey {
				case "":
					appKey = key
				case "-":
					appKey = ""
				}
				before := len(mustCallbacks(t, f.Gateway, c.auditedAs))
				status, resp := f.RawCallback(t, c.kind, appKey, body)
				expect(t, c.name, refused(c.code))(status, resp)
				if c.field != "" && !strings.Contains(resp.Msg, c.field) {
					t.Errorf("msg %q does not name the field %q", resp.Msg, c.field)
				}
				cbs := mustCallbacks(t, f.Gateway, c.auditedAs)
				if len(cbs) != before+1 {
					t.Fatalf("callbacks audited under %q: %d, want %d", c.auditedAs, len(cbs), before+1)
				}
				last := cbs[len(cbs)-1]
				// A sender refused from its headers had its body left
				// unread: its row has the declared size, no digest, no body.
				wantSum, door := sha(body), c.code == wire.CodeBadAppKey
				if door {
					wantSum = ""
				}
				full, err := f.Store.Callback(last.ID)
				if err != nil {
					t.Fatal(err)
				}
				if last.Result != model.CallbackRejected || last.Errcode != c.code || last.Kind != c.kind ||
					last.DedupKey != nil || last.BodySize != int64(len(body)) || last.BodySha256 != wantSum ||
					door && len(full.Body) != 0 || !door && !bytes.Equal(full.Body, body) {
					t.Errorf("audit row: %+v (body stored: %v)", last, len(full.Body) != 0)
				}
				if wantOrg := map[bool]string{true: orgECB, false: ""}[c.code != wire.CodeBadAppKey]; last.OrgCode != wantOrg {
					t.Errorf("audit row attributed to %q, want %q", last.OrgCode, wantOrg)
				}
			})
		}
		// Nothing of all that reached the order.
		o := mustOrder(t, f.Gateway, orderNo)
		if o.Status != model.StatusProcessing || o.GuaranteeNo.String != "" || !o.PaidAmount.IsZero() {
			t.Errorf("order changed by refused callbacks: %s bhno %q paid %s", o.Status, o.GuaranteeNo.String, o.PaidAmount)
		}
		if pays := mustPayments(t, f.Gateway, orderNo); len(pays) != 0 {
			t.Errorf("payments after refusals: %d", len(pays))
		}
		if _, err := f.Store.FileInfo(orderNo); err == nil {
			t.Error("a file was stored by a refused notice")
		}
	})
}

// TestCallbackConflicts covers the answers about what is stored: an unknown
// orderno or bhno (200001) and facts that contradict the order (200002).
// Each is recorded as a rejected callback and leaves the order as it was.
func TestCallbackConflicts(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)
		at := time.Now().Add(-time.Hour)
		processing := f.order(t, orgECB)
		other := f.order(t, orgCBC)
		issued := f.issued(t, orgECB, "BH-ISSUED-1", pdfOf(2048, 2))
		cancelled := f.issued(t, orgECB, "BH-CANCELLED-1", pdfOf(2048, 3))
		expect(t, "cancel", ok)(f.Callback(t, orgECB, "release", releaseParams("BH-CANCELLED-1", wire.ReleaseCancelled)))

		cases := []struct {
			name    string
			kind    string
			params  map[string]any
			code    string
			orderNo string // where the rejected callback is recorded ("" when it names no order)
			bhno    string // the audit row's bhno
		}{
			{name: "paystate of an unknown orderno", kind: "paystate", params: payParams("NO-SUCH-ORDER", "1", "10.00", at),
				code: wire.CodeUnknown, orderNo: "NO-SUCH-ORDER"},
			// 32 characters of three bytes each: valid by docs/protocol.md's
			// string(32), which counts characters, so it reaches the lookup.
			{name: "orderno of 32 runes is valid, and unknown", kind: "paystate", params: payParams(strings.Repeat("号", 32), "1", "10.00", at),
				code: wire.CodeUnknown, orderNo: strings.Repeat("号", 32)},
			{name: "paystate of another institution's order", kind: "paystate", params: payParams(other, "1", "10.00", at),
				code: wire.CodeUnknown, orderNo: other},
			{name: "applynotify of an unknown orderno", kind: "applynotify", params: notifyParams("NO-SUCH-ORDER-2", "2", "", nil),
				code: wire.CodeUnknown, orderNo: "NO-SUCH-ORDER-2"},
			{name: "release of an unknown bhno", kind: "release", params: releaseParams("BH-NOBODY", wire.ReleaseSurrendered),
				code: wire.CodeUnknown, bhno: "BH-NOBODY"},
			{name: "another bhno for an issued order", kind: "applynotify", params: notifyParams(issued, "1", "BH-ISSUED-2", pdfOf(2048, 4)),
				code: wire.CodeConflict, orderNo: issued, bhno: "BH-ISSUED-2"},
			{name: "failed after issued", kind: "applynotify", params: notifyParams(issued, "0", "", nil),
				code: wire.CodeConflict, orderNo: issued},
			{name: "bhno of another order", kind: "applynotify", params: notifyParams(processing, "1", "BH-ISSUED-1", pdfOf(2048, 5)),
				code: wire.CodeConflict, orderNo: processing, bhno: "BH-ISSUED-1"},
			{name: "issued after cancelled, as another bhno", kind: "applynotify", params: notifyParams(cancelled, "1", "BH-CANCELLED-2", nil),
				code: wire.CodeConflict, orderNo: cancelled, bhno: "BH-CANCELLED-2"},
			{name: "surrendered after cancelled", kind: "release", params: releaseParams("BH-CANCELLED-1", wire.ReleaseSurrendered),
				code: wire.CodeConflict, orderNo: cancelled, bhno: "BH-CANCELLED-1"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var was *model.Order
				if c.orderNo != "" {
					if o, err := f.Store.Order(c.orderNo); err == nil {
						was = o
					}
				}
				before := len(mustCallbacks(t, f.Gateway, c.orderNo))
				expect(t, c.name, refused(c.code))(f.Callback(t, orgECB, c.kind, c.params))
				cbs := mustCallbacks(t, f.Gateway, c.orderNo)
				if len(cbs) != before+1 {
					t.Fatalf("callbacks of %q: %d, want %d (the refusal recorded)", c.orderNo, len(cbs), before+1)
				}
				last := cbs[len(cbs)-1]
				if last.Result != model.CallbackRejected || last.Errcode != c.code || last.OrgCode != orgECB || last.GuaranteeNo != c.bhno {
					t.Errorf("recorded as %+v", last)
				}
				if was != nil {
					now := mustOrder(t, f.Gateway, c.orderNo)
					if now.Status != was.Status || now.GuaranteeNo.String != was.GuaranteeNo.String || !now.UpdatedAt.Equal(was.UpdatedAt) || !now.PaidAmount.Equal(was.PaidAmount) {
						t.Errorf("order changed: was %s %q, now %s %q", was.Status, was.GuaranteeNo.String, now.Status, now.GuaranteeNo.String)
					}
				}
			})
		}
		if pays := mustPayments(t, f.Gateway, other); len(pays) != 0 {
			t.Errorf("another institution's paystate made %d payments", len(pays))
		}
		if fi, err := f.Store.FileInfo(issued); err != nil || fi.Sha256 != sha(pdfOf(2048, 2)) {
			t.Errorf("issued order's file: %+v %v, want the first PDF kept", fi, err)
		}
	})
}

// TestPayState records pays and refunds as payments, derives the order's
// amounts from them, and takes a repeated callback as acknowledged and
// changing nothing.
func TestPayState(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)
		orderNo := f.order(t, orgECB)
		t1 := time.Date(2025, 3, 1, 10, 0, 0, 123e6, time.UTC)
		first := payParams(orderNo, wire.PayKindPay, "1000.50", t1)
		expect(t, "pay", ok)(f.Callback(t, orgECB, "paystate", first))

		// The second pay in the other accepted forms: type and money as
		// numbers, the time as Beijing wall-clock text.
		second := payParams(orderNo, wire.PayKindPay, "", time.Time{})
		second["type"], second["paymoney"], second["paytime"] = 1, json.Number("500"), "2025-03-01 18:30:00"
		expect(t, "second pay", ok)(f.Callback(t, orgECB, "paystate", second))
		// A refund needs no account.
		expect(t, "refund", ok)(f.Callback(t, orgECB, "paystate", payParams(orderNo, wire.PayKindRefund, "200.25", t1.Add(time.Hour))))
		// The same pay again: acknowledged, nothing new.
		expect(t, "repeat", ok)(f.Callback(t, orgECB, "paystate", first))
		// Same order, type and time, another amount: another payment.
		expect(t, "other amount", ok)(f.Callback(t, orgECB, "paystate", payParams(orderNo, wire.PayKindPay, "0.01", t1)))

		pays := mustPayments(t, f.Gateway, orderNo)
		if len(pays) != 4 {
			t.Fatalf("payments: %d, want 4", len(pays))
		}
		p := pays[0]
		decimalEq(t, "first amount", p.Amount, "1000.50")
		if p.Kind != wire.PayKindPay || !p.PaidAt.Equal(t1) || p.PaidAt.Location() != time.UTC ||
			p.PayerName != payerName || p.PayerAccount != payerAccount || p.OrgCode != orgECB || p.CallbackID == 0 {
			t.Errorf("first payment: %+v", p)
		}
		if want := time.Date(2025, 3, 1, 10, 30, 0, 0, time.UTC); !pays[1].PaidAt.Equal(want) {
			t.Errorf("paytime 2025-03-01 18:30:00 Beijing stored as %s, want %s", pays[1].PaidAt, want)
		}
		decimalEq(t, "second amount", pays[1].Amount, "500.00")
		if pays[2].Kind != wire.PayKindRefund || pays[2].PayerAccount != "" {
			t.Errorf("refund: %+v", pays[2])
		}
		o := mustOrder(t, f.Gateway, orderNo)
		decimalEq(t, "paid_amount", o.PaidAmount, "1500.51")
		decimalEq(t, "refunded_amount", o.RefundedAmount, "200.25")
		if o.Status != model.StatusProcessing {
			t.Errorf("a payment moved the order to %s", o.Status)
		}

		cbs := mustCallbacks(t, f.Gateway, orderNo)
		got := results(cbs)
		wantOutcomes := []string{"accepted/000000", "accepted/000000", "accepted/000000", "duplicate/000000", "accepted/000000"}
		if strings.Join(got, " ") != strings.Join(wantOutcomes, " ") {
			t.Errorf("callbacks: %v, want %v", got, wantOutcomes)
		}
		// The accepted rows carry the dedup key their payment carries; the
		// repeat's audit row carries none (the unique index refused it).
		for i, c := range cbs {
			if c.OrgCode != orgECB || c.Kind != "paystate" || c.ReceivedAt.IsZero() || time.Since(c.ReceivedAt) > time.Hour {
				t.Errorf("callback %d: %+v", i, c)
			}
			if (c.DedupKey != nil) != (c.Result == model.CallbackAccepted) {
				t.Errorf("callback %d (%s) dedup key %v", i, c.Result, c.DedupKey)
			}
		}
		if cbs[0].DedupKey == nil || *cbs[0].DedupKey != pays[0].DedupKey || pays[0].CallbackID != cbs[0].ID {
			t.Errorf("first payment not tied to its callback: key %v / %s, callback %d / %d",
				cbs[0].DedupKey, pays[0].DedupKey, pays[0].CallbackID, cbs[0].ID)
		}
		// Each effect appended one event; its detail masks the account.
		var notes []string
		for _, e := range mustEvents(t, f.Gateway, orderNo) {
			if e.Name == "pay" || e.Name == "refund" {
				notes = append(notes, e.Name)
				if strings.Contains(e.Detail, payerAccount) {
					t.Errorf("event shows the whole account: %q", e.Detail)
				}
				if e.RefID == nil {
					t.Errorf("event %s does not point at its callback", e.Name)
				}
			}
		}
		if strings.Join(notes, ",") != "pay,pay,refund,pay" {
			t.Errorf("payment events: %v", notes)
		}
	})
}

// TestPayStateConcurrent: identical callbacks at the same moment have one
// effect (the unique index decides), and distinct payments of one order at
// the same moment all count in its paid amount.
func TestPayStateConcurrent(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)
		const n = 20
		run := func(t *testing.T, params func(i int) map[string]any) {
			t.Helper()
			bodies := make([][]byte, n)
			for i := range bodies {
				bodies[i] = envelope(t, f.Cipher(orgECB), params(i))
			}
			for i, a := range postAtOnce(f.URL, "paystate", f.specs[orgECB].AppKey, bodies) {
				if a != "200/1/000000" {
					t.Errorf("callback %d answered %s", i, a)
				}
			}
		}

		t.Run("same payment", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			at := time.Now().Add(-time.Minute)
			run(t, func(int) map[string]any { return payParams(orderNo, wire.PayKindPay, "88.80", at) })
			if pays := mustPayments(t, f.Gateway, orderNo); len(pays) != 1 {
				t.Fatalf("payments: %d, want 1", len(pays))
			}
			decimalEq(t, "paid_amount", mustOrder(t, f.Gateway, orderNo).PaidAmount, "88.80")
			counts := map[string]int{}
			for _, c := range mustCallbacks(t, f.Gateway, orderNo) {
				counts[c.Result]++
			}
			if counts[model.CallbackAccepted] != 1 || counts[model.CallbackDuplicate] != n-1 {
				t.Errorf("callback results: %v, want 1 accepted and %d duplicates", counts, n-1)
			}
		})
		t.Run("distinct payments of one order", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			at := time.Now().Add(-time.Hour)
			run(t, func(i int) map[string]any {
				return payParams(orderNo, wire.PayKindPay, fmt.Sprintf("%d.01", i+1), at.Add(time.Duration(i)*time.Second))
			})
			if pays := mustPayments(t, f.Gateway, orderNo); len(pays) != n {
				t.Fatalf("payments: %d, want %d", len(pays), n)
			}
			// Σ (i + 0.01) for i in 1..20 = 210 + 0.20
			decimalEq(t, "paid_amount", mustOrder(t, f.Gateway, orderNo).PaidAmount, "210.20")
		})
	})
}

// postAtOnce posts every body at the same moment, each from its own
// goroutine, and returns the answers as "HTTP status/stat/errcode".
func postAtOnce(base, kind, appKey string, bodies [][]byte) []string {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	answers := make([]string, len(bodies))
	for i, body := range bodies {
		wg.Go(func() {
			<-gate
			status, r := postNoFatal(base, kind, appKey, body)
			answers[i] = fmt.Sprintf("%d/%d/%s", status, r.Stat, r.Errcode)
		})
	}
	close(gate)
	wg.Wait()
	return answers
}

// postNoFatal posts a body from any goroutine (t.Fatal must not be called
// outside the test's own); a failure shows as status 0.
func postNoFatal(base, kind, appKey string, body []byte) (int, wire.Response) {
	req, _ := http.NewRequest(http.MethodPost, base+"/api/guarantee/"+kind, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", appKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, wire.Response{Msg: err.Error()}
	}
	defer resp.Body.Close()
	var r wire.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		r.Msg = err.Error()
	}
	return resp.StatusCode, r
}

// TestApplyNotify walks the lifecycle that applynotify drives: processing,
// failed with its remark, issued with every field and the PDF, an issuance
// without the file, and late notices that must not move an order backwards.
func TestApplyNotify(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)

		t.Run("processing then failed", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			expect(t, "processing", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(orderNo, "2", "", nil)))
			if o := mustOrder(t, f.Gateway, orderNo); o.Status != model.StatusProcessing {
				t.Fatalf("after staus 2: %s", o.Status)
			}
			failed := notifyParams(orderNo, "0", "", nil)
			// "status" is read when "staus" is absent, and numbers are accepted.
			delete(failed, "staus")
			failed["status"] = 0
			expect(t, "failed", ok)(f.Callback(t, orgECB, "applynotify", failed))
			expect(t, "failed again", ok)(f.Callback(t, orgECB, "applynotify", failed))
			o := mustOrder(t, f.Gateway, orderNo)
			if o.Status != model.StatusFailed || o.Remark != "资料不全，不予出函" {
				t.Errorf("after staus 0: %s %q", o.Status, o.Remark)
			}
			if got := statusEvents(mustEvents(t, f.Gateway, orderNo)); strings.Join(got, " ") != ">applying applying>processing processing>failed" {
				t.Errorf("status events: %v", got)
			}
			// A processing notice now is late: acknowledged, recorded, no move.
			expect(t, "late processing", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(orderNo, "2", "", nil)))
			if o := mustOrder(t, f.Gateway, orderNo); o.Status != model.StatusFailed {
				t.Errorf("late processing moved a failed order to %s", o.Status)
			}
			got := results(mustCallbacks(t, f.Gateway, orderNo))
			if strings.Join(got, " ") != "accepted/000000 accepted/000000 duplicate/000000 duplicate/000000" {
				// The late processing repeats the first notice's dedup key.
				t.Errorf("callbacks: %v", got)
			}
		})

		t.Run("issued with its file, then a late processing", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			pdf := pdfOf(300<<10, 10)
			notice := notifyParams(orderNo, "1", "BH-2025-0001", pdf)
			notice["info"] = "准予出函"
			expect(t, "issued", ok)(f.Callback(t, orgECB, "applynotify", notice))

			o := mustOrder(t, f.Gateway, orderNo)
			if o.Status != model.StatusIssued || o.GuaranteeNo.String != "BH-2025-0001" || o.FilePending ||
				o.IssuerName != "某某银行杭州分行" || o.IssuerAddress != "杭州市西湖区某某路1号" || o.IssuerPhone != "0571-88888888" ||
				o.IssuedAt == nil || !o.IssuedAt.Equal(issuedAt) || o.Remark != "准予出函" {
				t.Errorf("issued order: %+v", o)
			}
			if !o.PremiumRate.Valid || !o.PremiumRate.Decimal.Equal(decimal.RequireFromString("0.0015")) ||
				!o.Premium.Valid || !o.Premium.Decimal.Equal(decimal.RequireFromString("15")) {
				t.Errorf("bhrate %v bhcost %v", o.PremiumRate, o.Premium)
			}
			file, err := f.Store.File(orderNo)
			if err != nil {
				t.Fatal(err)
			}
			if file.Sha256 != sha(pdf) || file.Size != int64(len(pdf)) || !bytes.Equal(file.Content, pdf) || file.GuaranteeNo != "BH-2025-0001" {
				t.Errorf("file: sha %s size %d bhno %s", file.Sha256, file.Size, file.GuaranteeNo)
			}

			// Late and repeated notices: acknowledged, the order stays issued.
			expect(t, "late processing", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(orderNo, "2", "", nil)))
			expect(t, "repeated issuance", ok)(f.Callback(t, orgECB, "applynotify", notice))
			o2 := mustOrder(t, f.Gateway, orderNo)
			if o2.Status != model.StatusIssued || o2.GuaranteeNo.String != "BH-2025-0001" || !o2.UpdatedAt.Equal(o.UpdatedAt) {
				t.Errorf("after late notices: %s %q updated %s (was %s)", o2.Status, o2.GuaranteeNo.String, o2.UpdatedAt, o.UpdatedAt)
			}
			cbs := mustCallbacks(t, f.Gateway, orderNo)
			if got := results(cbs); strings.Join(got, " ") != "accepted/000000 late/000000 duplicate/000000" {
				t.Errorf("callbacks: %v", got)
			}
			evs := mustEvents(t, f.Gateway, orderNo)
			if got := statusEvents(evs); strings.Join(got, " ") != ">applying applying>processing processing>issued" {
				t.Errorf("status events: %v", got)
			}
			late := eventNamed(evs, "late_notice")
			if late == nil || late.RefID == nil || *late.RefID != cbs[1].ID || !strings.Contains(late.Detail, "issued") {
				t.Errorf("late notice event: %+v", late)
			}
		})

		t.Run("issued without the file, then with it", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			notice := notifyParams(orderNo, "1", "BH-2025-0002", nil)
			delete(notice, "bhcretime")
			expect(t, "issued without file", ok)(f.Callback(t, orgECB, "applynotify", notice))
			o := mustOrder(t, f.Gateway, orderNo)
			if o.Status != model.StatusIssued || !o.FilePending || o.GuaranteeNo.String != "BH-2025-0002" {
				t.Fatalf("issued without file: %s pending %v bhno %q", o.Status, o.FilePending, o.GuaranteeNo.String)
			}
			ev := eventNamed(mustEvents(t, f.Gateway, orderNo), "issued_incomplete")
			if ev == nil || !strings.Contains(ev.Detail, "bhfile") || !strings.Contains(ev.Detail, "bhcretime") {
				t.Errorf("incomplete issuance event: %+v", ev)
			}
			// The institution sends the notice again, now with the PDF: not
			// a repeat of the first, the file is kept and no longer pending.
			pdf := pdfOf(4096, 11)
			expect(t, "issued with file", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(orderNo, "1", "BH-2025-0002", pdf)))
			o = mustOrder(t, f.Gateway, orderNo)
			fi, err := f.Store.FileInfo(orderNo)
			if err != nil || fi.Sha256 != sha(pdf) || o.FilePending || o.Status != model.StatusIssued {
				t.Errorf("after the file came: pending %v status %s file %+v %v", o.FilePending, o.Status, fi, err)
			}
			if o.IssuedAt == nil || !o.IssuedAt.Equal(issuedAt) {
				t.Errorf("bhcretime of the second notice not kept: %v", o.IssuedAt)
			}
			ev = eventNamed(mustEvents(t, f.Gateway, orderNo), "issued_completed")
			if ev == nil || !strings.Contains(ev.Detail, "bhfile") || !strings.Contains(ev.Detail, "bhcretime") {
				t.Errorf("completion event: %+v", ev)
			}
			// And that second notice again is a repeat.
			expect(t, "repeat", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(orderNo, "1", "BH-2025-0002", pdf)))
			if got := results(mustCallbacks(t, f.Gateway, orderNo)); strings.Join(got, " ") != "accepted/000000 accepted/000000 duplicate/000000" {
				t.Errorf("callbacks: %v", got)
			}
		})

		t.Run("from applying", func(t *testing.T) {
			// The apply's answer was lost: the order is still applying when
			// the institution's first notice comes.
			o := &model.Order{OrderNo: "TAPPLYING01", OrgCode: orgECB, Status: model.StatusApplying, RequestHash: strings.Repeat("0", 64),
				ApplicantName: "a", ApplicantCode: "A1", DepositAmount: decimal.NewFromInt(1), ProjectName: "p", ProjectCode: "P1",
				LotName: "l", LotCode: "L1", OpeningAt: time.Now(), DeadlineAt: time.Now(), TendererName: "t", TendererCode: "T1",
				AccountBank: "b", AccountName: "n", AccountNo: "1", ContactName: "c", ContactPhone: "1", ContactEmail: "e"}
			if err := f.Store.CreateOrder(o); err != nil {
				t.Fatal(err)
			}
			expect(t, "processing", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(o.OrderNo, "2", "", nil)))
			got := mustOrder(t, f.Gateway, o.OrderNo)
			if got.Status != model.StatusProcessing || got.NextCheckAt == nil {
				t.Errorf("applying + staus 2: %s next check %v", got.Status, got.NextCheckAt)
			}
		})

		t.Run("20 identical issuances at once", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			body := envelope(t, f.Cipher(orgECB), notifyParams(orderNo, "1", "BH-2025-0003", pdfOf(8192, 12)))
			var wg sync.WaitGroup
			answers := make([]string, 20)
			for i := range answers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					status, r := postNoFatal(f.URL, "applynotify", f.specs[orgECB].AppKey, body)
					answers[i] = fmt.Sprintf("%d/%d/%s", status, r.Stat, r.Errcode)
				}()
			}
			wg.Wait()
			for i, a := range answers {
				if a != "200/1/000000" {
					t.Errorf("notice %d answered %s", i, a)
				}
			}
			if got := statusEvents(mustEvents(t, f.Gateway, orderNo)); strings.Join(got, " ") != ">applying applying>processing processing>issued" {
				t.Errorf("status events: %v", got)
			}
		})
	})
}

// TestRelease ends issued guarantees: 注销 (state 1) from issued, 退保
// (state 0) from cancelling, each once.
func TestRelease(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)

		cancelled := f.issued(t, orgECB, "BH-R-1", pdfOf(1024, 20))
		expect(t, "cancel", ok)(f.Callback(t, orgECB, "release", releaseParams("BH-R-1", wire.ReleaseCancelled)))
		expect(t, "cancel again", ok)(f.Callback(t, orgECB, "release", map[string]any{"bhno": "BH-R-1", "state": 1}))
		if o := mustOrder(t, f.Gateway, cancelled); o.Status != model.StatusCancelled || o.ActiveSlot != nil {
			t.Errorf("after release 1: %s slot %v", o.Status, o.ActiveSlot)
		}
		if got := results(mustCallbacks(t, f.Gateway, cancelled)); strings.Join(got, " ") != "accepted/000000 accepted/000000 duplicate/000000" {
			t.Errorf("callbacks: %v", got)
		}

		// Through the API's cancel to cancelling, then surrendered.
		surrendered := f.issued(t, orgECB, "BH-R-2", pdfOf(1024, 21))
		if status, body := f.API(t, http.MethodPost, "/v1/guarantees/"+surrendered+"/cancel", nil); status != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", status, body)
		}
		if o := mustOrder(t, f.Gateway, surrendered); o.Status != model.StatusCancelling {
			t.Fatalf("after cancel: %s", o.Status)
		}
		expect(t, "surrender", ok)(f.Callback(t, orgECB, "release", releaseParams("BH-R-2", wire.ReleaseSurrendered)))
		evs := mustEvents(t, f.Gateway, surrendered)
		if got := statusEvents(evs); strings.Join(got, " ") != ">applying applying>processing processing>issued issued>cancelling cancelling>surrendered" {
			t.Errorf("status events: %v", got)
		}
		// A late issuance notice after the end is acknowledged and changes nothing.
		expect(t, "late issuance", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(surrendered, "1", "BH-R-2", nil)))
		if o := mustOrder(t, f.Gateway, surrendered); o.Status != model.StatusSurrendered {
			t.Errorf("late issuance moved a surrendered order to %s", o.Status)
		}
		cbs := mustCallbacks(t, f.Gateway, surrendered)
		if got := results(cbs); strings.Join(got, " ") != "accepted/000000 accepted/000000 late/000000" {
			t.Errorf("callbacks: %v", got)
		}
		if ev := eventNamed(mustEvents(t, f.Gateway, surrendered), "late_notice"); ev == nil || *ev.RefID != cbs[2].ID {
			t.Errorf("late notice event: %+v", ev)
		}
	})
}

// TestCallbackCiphers takes callbacks from institutions of every cipher
// family: CBC with hex (either case), a SHA1PRNG-derived key, and SM4.
func TestCallbackCiphers(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)
		for _, org := range []string{orgCBC, orgPRNG, orgSM4} {
			t.Run(f.specs[org].Name, func(t *testing.T) {
				orderNo := f.order(t, org)
				at := time.Date(2025, 2, 1, 8, 0, 0, 0, time.UTC) // fixed: see TestCallbackRefusals
				status, resp, body := f.post(t, "paystate", f.specs[org].AppKey, org, payParams(orderNo, wire.PayKindPay, "12.34", at))
				expect(t, "paystate", ok)(status, resp)
				if org == orgCBC {
					// The ciphertext went out as lower-case hex; the same
					// institution may send upper case, which is accepted.
					var env wire.Request
					json.Unmarshal(body, &env)
					if _, err := hex.DecodeString(env.Data); err != nil || strings.ToLower(env.Data) != env.Data {
						t.Fatalf("CBC institution's ciphertext is not lower-case hex: %.40s", env.Data)
					}
					ct, _ := f.Cipher(org).Encrypt(mustJSON(t, payParams(orderNo, wire.PayKindPay, "1.00", at)))
					upper, _ := json.Marshal(wire.Request{Data: strings.ToUpper(string(ct))})
					expect(t, "upper-case hex", ok)(f.RawCallback(t, "paystate", f.specs[org].AppKey, upper))
				}
				// The default cipher's text under this institution's appKey does not decrypt.
				status, resp, _ = f.post(t, "paystate", f.specs[org].AppKey, orgECB, payParams(orderNo, wire.PayKindPay, "9.99", at))
				expect(t, "ECB text under "+org, refused(wire.CodeBadCipher))(status, resp)

				bhno := "BH-" + org
				expect(t, "issued", ok)(f.Callback(t, org, "applynotify", notifyParams(orderNo, "1", bhno, pdfOf(5000, 30))))
				expect(t, "released", ok)(f.Callback(t, org, "release", releaseParams(bhno, wire.ReleaseSurrendered)))

				o := mustOrder(t, f.Gateway, orderNo)
				if o.Status != model.StatusSurrendered || o.GuaranteeNo.String != bhno {
					t.Errorf("order: %s %q", o.Status, o.GuaranteeNo.String)
				}
				pays := mustPayments(t, f.Gateway, orderNo)
				if len(pays) == 0 || pays[0].OrgCode != org || !pays[0].Amount.Equal(decimal.RequireFromString("12.34")) {
					t.Errorf("payments: %+v", pays)
				}
				for _, c := range mustCallbacks(t, f.Gateway, orderNo) {
					if c.OrgCode != org {
						t.Errorf("callback attributed to %s, want %s", c.OrgCode, org)
					}
				}
			})
		}
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openRaw opens a store of the test's own and a plain database/sql handle
// on the same database, to read columns the store does not return (the raw
// body of a callback).
func openRaw(t *testing.T, driver string) (*model.Store, *sql.DB) {
	t.Helper()
	name, dsn := modeltest.DSN(t, driver, os.Getenv)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := model.Open(ctx, name, dsn, model.Pool{MaxOpen: 32, MaxIdle: 16, MaxLifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open(name, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return store, raw
}

// storedBody returns the raw body kept for a callback, nil when only its
// digest was kept.
func storedBody(t *testing.T, raw *sql.DB, id int64) []byte {
	t.Helper()
	var b []byte
	if err := raw.QueryRow("SELECT body FROM callbacks WHERE id = ?", id).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCallbackBodies: the body limit of each route (413, stat 0, nothing
// stored), the raw ciphertext kept for a small callback, and only the
// digest and size of a body over 1 MiB, whose PDF is kept once, as the file.
func TestCallbackBodies(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		store, raw := openRaw(t, driver)
		f := start(t, driver, func(o *handlertest.Options) { o.Store = store })
		key := f.specs[orgECB].AppKey

		t.Run("limits", func(t *testing.T) {
			for _, c := range []struct {
				kind string
				size int
			}{
				{"paystate", 64<<10 + 1},
				{"release", 64<<10 + 1},
				{"applynotify", 31 << 20}, // the default limit is 30 MiB
			} {
				body := bytes.Repeat([]byte("A"), c.size)
				status, resp := f.RawCallback(t, c.kind, key, body)
				expect(t, fmt.Sprintf("%s of %d bytes", c.kind, c.size), want{http.StatusRequestEntityTooLarge, wire.CodeBadParam})(status, resp)
			}
			// Nothing is stored but the audit of each refusal: who sent
			// how much, never the body.
			cbs := mustCallbacks(t, f.Gateway, "")
			if len(cbs) != 3 {
				t.Fatalf("%d audit rows for 3 bodies over the limit: %v", len(cbs), results(cbs))
			}
			for i, cb := range cbs {
				if cb.Result != model.CallbackRejected || cb.Errcode != wire.CodeBadParam || cb.OrgCode != orgECB ||
					cb.BodySize <= 64<<10 || cb.BodySha256 != "" || cb.DedupKey != nil {
					t.Errorf("audit row %d: %+v", i, cb)
				}
			}
		})

		t.Run("raw body kept", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			status, resp, body := f.post(t, "paystate", key, orgECB, payParams(orderNo, wire.PayKindPay, "1.00", time.Now().Add(-time.Hour)))
			expect(t, "paystate", ok)(status, resp)
			cbs := mustCallbacks(t, f.Gateway, orderNo)
			if len(cbs) != 1 || !bytes.Equal(storedBody(t, raw, cbs[0].ID), body) || cbs[0].BodySha256 != sha(body) {
				t.Errorf("the ciphertext as received is not what was kept")
			}
		})

		t.Run("digest only over 1 MiB", func(t *testing.T) {
			orderNo := f.order(t, orgECB)
			pdf := pdfOf(1<<20, 40)
			body := bigNotice(t, f.Cipher(orgECB), orderNo, "BH-BIG-1", pdf)
			expect(t, fmt.Sprintf("notice of %d bytes", len(body)), ok)(f.RawCallback(t, "applynotify", key, body))
			fi, err := f.Store.FileInfo(orderNo)
			if err != nil || fi.Size != int64(len(pdf)) || fi.Sha256 != sha(pdf) {
				t.Fatalf("file: %+v %v", fi, err)
			}
			cbs := mustCallbacks(t, f.Gateway, orderNo)
			if len(cbs) != 1 || cbs[0].BodySize != int64(len(body)) || cbs[0].BodySha256 != sha(body) {
				t.Fatalf("callback: %+v", cbs)
			}
			if b := storedBody(t, raw, cbs[0].ID); b != nil {
				t.Errorf("a %d-byte body was kept whole (%d bytes); only its digest should be", len(body), len(b))
			}
		})
	})
}

// TestCallbackLargePDF: a 20 MiB PDF is 35.6 MiB on the wire (base64 in the
// JSON, encrypted, base64 again), over the default limit of 30 MiB, which
// admits PDFs up to about 16.8 MiB. With the limit raised to 40 MiB (it is
// configurable) the notice is accepted and the PDF stored whole. Under
// -race this is the slowest test here (encoding/json scans the 36 MiB
// twice, and the PDF's 27 MiB three times), so both drivers share one
// body and run side by side.
func TestCallbackLargePDF(t *testing.T) {
	spec := testInstitutions()[0]
	c, err := crypto.New(spec.Cipher, spec.AppSecret)
	if err != nil {
		t.Fatal(err)
	}
	// Each fixture numbers its orders from 1: the first is this one.
	orderNo := fmt.Sprintf("T%s%08d", spec.OrgCode, 1)
	pdf := pdfOf(20<<20, 41)
	body := bigNotice(t, c, orderNo, "BH-BIG-2", pdf)
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		if driver == "mysql" {
			ensureMaxPacket(t, 64<<20)
		}
		f := start(t, driver, func(o *handlertest.Options) {
			o.Configure = func(c *config.Config) { c.Server.NotifyBodyLimit = 40 << 20 }
		})
		if got := f.order(t, orgECB); got != orderNo {
			t.Fatalf("first order is %s, not %s", got, orderNo)
		}
		expect(t, fmt.Sprintf("notice of %d bytes", len(body)), ok)(f.RawCallback(t, "applynotify", spec.AppKey, body))
		file, err := f.Store.File(orderNo)
		if err != nil || !bytes.Equal(file.Content, pdf) || file.Sha256 != sha(pdf) {
			t.Fatalf("file not stored whole: %v", err)
		}
		if o := mustOrder(t, f.Gateway, orderNo); o.Status != model.StatusIssued || o.FilePending {
			t.Errorf("order %s, file pending %v", o.Status, o.FilePending)
		}
	})
}

// ensureMaxPacket makes room on the MariaDB server for a PDF of that size:
// the server refuses a statement (or a parameter sent as long data) over
// max_allowed_packet, 16 MiB by default. The setting is global and only
// raised; without the privilege to raise it the test is skipped, saying why.
func ensureMaxPacket(t *testing.T, need int64) {
	t.Helper()
	cfg, err := mysqldrv.ParseDSN(os.Getenv(modeltest.EnvDSN))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = ""
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var have int64
	if err := db.QueryRow("SELECT @@GLOBAL.max_allowed_packet").Scan(&have); err != nil {
		t.Fatal(err)
	}
	if have >= need {
		return
	}
	if _, err := db.Exec(fmt.Sprintf("SET GLOBAL max_allowed_packet = %d", need)); err != nil {
		t.Skipf("max_allowed_packet is %d bytes, less than the %d a 20 MiB PDF needs, and cannot be raised: %v", have, need, err)
	}
	t.Logf("raised the server's max_allowed_packet from %d to %d bytes", have, need)
}

// TestCallbackStorageDown: with the database gone, no callback is answered
// stat 1; the sender is told to retry (HTTP 503, 500001).
func TestCallbackStorageDown(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		f := start(t, driver)
		orderNo := f.order(t, orgECB)
		issued := f.issued(t, orgECB, "BH-DOWN-1", pdfOf(1024, 50))
		if err := f.Store.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			kind   string
			params map[string]any
		}{
			{"paystate", payParams(orderNo, wire.PayKindPay, "1.00", time.Now().Add(-time.Hour))},
			{"applynotify", notifyParams(orderNo, "2", "", nil)},
			{"release", releaseParams("BH-DOWN-1", wire.ReleaseCancelled)},
			// A repeat too: its original is stored, but nothing can be
			// confirmed while storage is down.
			{"applynotify", notifyParams(issued, "1", "BH-DOWN-1", pdfOf(1024, 50))},
		} {
			expect(t, c.kind, want{http.StatusServiceUnavailable, wire.CodeUnavailable})(f.Callback(t, orgECB, c.kind, c.params))
		}
		// The operator's line says why: the storage error itself, not
		// only "storage unavailable".
		n := 0
		for _, raw := range strings.Split(strings.TrimSpace(f.Logs.String()), "\n") {
			var l struct{ Msg, Error string }
			json.Unmarshal([]byte(raw), &l)
			if l.Msg != "callback not stored" {
				continue
			}
			n++
			if !strings.Contains(l.Error, "database is closed") {
				t.Errorf("callback not stored, error %q: the cause is missing", l.Error)
			}
		}
		if n != 4 {
			t.Errorf("%d lines \"callback not stored\", want 4", n)
		}
	})
}

// TestCallbackLog: one structured line per callback, with what an operator
// needs and nothing that must not be logged.
func TestCallbackLog(t *testing.T) {
	f := start(t, "sqlite")
	orderNo := f.order(t, orgECB)
	pdf := pdfOf(4096, 60)
	at := time.Now().Add(-time.Hour)
	expect(t, "pay", ok)(f.Callback(t, orgECB, "paystate", payParams(orderNo, wire.PayKindPay, "5.00", at)))
	expect(t, "repeat", ok)(f.Callback(t, orgECB, "paystate", payParams(orderNo, wire.PayKindPay, "5.00", at)))
	expect(t, "unknown", refused(wire.CodeUnknown))(f.Callback(t, orgECB, "paystate", payParams("NO-SUCH", wire.PayKindPay, "5.00", at)))
	expect(t, "issued", ok)(f.Callback(t, orgECB, "applynotify", notifyParams(orderNo, "1", "BH-LOG-1", pdf)))
	expect(t, "release", ok)(f.Callback(t, orgECB, "release", releaseParams("BH-LOG-1", wire.ReleaseCancelled)))
	expect(t, "bad key", refused(wire.CodeBadAppKey))(f.RawCallback(t, "release", "nope", []byte(`{"data":"x"}`)))

	type line struct {
		Msg         string  `json:"msg"`
		Institution *string `json:"institution"`
		Kind        string  `json:"kind"`
		OrderNo     string  `json:"orderno"`
		GuaranteeNo string  `json:"bhno"`
		Result      string  `json:"result"`
		Errcode     string  `json:"errcode"`
		Latency     *int64  `json:"latency_ms"`
	}
	var got []string
	logs := f.Logs.String()
	for _, raw := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l line
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("not a JSON log line: %q", raw)
		}
		if l.Kind == "" || l.Result == "" {
			continue // not a callback's line
		}
		if l.Institution == nil || l.Latency == nil || l.Errcode == "" {
			t.Errorf("callback line lacks fields: %s", raw)
		}
		got = append(got, strings.Join([]string{*l.Institution, l.Kind, l.OrderNo, l.GuaranteeNo, l.Result, l.Errcode}, "|"))
	}
	wantLines := []string{
		"BANK01|paystate|" + orderNo + "||accepted|000000",
		"BANK01|paystate|" + orderNo + "||duplicate|000000",
		"BANK01|paystate|NO-SUCH||rejected|200001",
		"BANK01|applynotify|" + orderNo + "|BH-LOG-1|accepted|000000",
		"BANK01|release|" + orderNo + "|BH-LOG-1|accepted|000000",
		"|release|||rejected|100001",
	}
	if strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("callback log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
	}
	for name, secret := range map[string]string{
		"app secret": f.specs[orgECB].AppSecret, "account number": payerAccount, "payer name": payerName,
		"PDF": base64.StdEncoding.EncodeToString(pdf[:300])[20:120],
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log shows the %s", name)
		}
	}
}
