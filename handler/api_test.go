package handler_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/procurement/gateway/handler/handlertest"
)

// The tests of the bidding module's API (docs/api.md, issue 4) run the real
// gateway (handlertest: real store, cipher, client, service and gin server)
// against stub institutions on httptest, on SQLite and, when
// GATEWAY_TEST_MYSQL_DSN is set, on MariaDB.

// apiStart starts a gateway on driver with the given stub institutions.
func apiStart(t *testing.T, driver string, insts ...*stubInst) *handlertest.Gateway {
	t.Helper()
	return apiStartWith(t, handlertest.Options{Driver: driver}, insts...)
}

func apiStartWith(t *testing.T, o handlertest.Options, insts ...*stubInst) *handlertest.Gateway {
	t.Helper()
	for _, in := range insts {
		o.Institutions = append(o.Institutions, in.Spec)
	}
	return handlertest.Start(t, o)
}

// apiApplication is a valid POST /v1/guarantees body; the bid deadline is a
// week away.
func apiApplication(org, orderNo, qycode, xmcode, bdcode string) map[string]any {
	deadline := time.Now().Add(7 * 24 * time.Hour).Truncate(time.Millisecond)
	m := map[string]any{
		"orgcode": org, "qyname": "某某建设有限公司", "qycode": qycode, "bzjmoney": json.Number("100000.00"),
		"xmname": "某市政道路工程", "xmcode": xmcode, "bdname": "第一标段", "bdcode": bdcode,
		"kbttime": deadline.Add(2 * time.Hour).UnixMilli(), "zbrname": "某市交通局", "zbrcode": "11110000000000000X",
		"tbjztime": deadline.UnixMilli(), "qykh": "某银行某支行", "qykhzh": "某某建设有限公司", "qyjbzh": "6222020200000000001",
		"jbrname": "张三", "jbrphone": "13800000000", "jbremail": "zhangsan@example.com",
	}
	if orderNo != "" {
		m["orderno"] = orderNo
	}
	return m
}

// apiOrder is the order as the API answers it (the fields the tests read).
type apiOrder struct {
	OrderNo     string      `json:"orderno"`
	OrgCode     string      `json:"orgcode"`
	Status      string      `json:"status"`
	Bhno        string      `json:"bhno"`
	Qycode      string      `json:"qycode"`
	Xmcode      string      `json:"xmcode"`
	Bdcode      string      `json:"bdcode"`
	Bzjmoney    json.Number `json:"bzjmoney"`
	Continueurl string      `json:"continueurl"`
	Info        string      `json:"info"`
	Cancellable bool        `json:"cancellable"`
	File        struct {
		Stored bool   `json:"stored"`
		Size   int64  `json:"size"`
		Sha256 string `json:"sha256"`
	} `json:"file"`
	CreatedAt int64 `json:"created_at"`
}

// apiError is docs/api.md's error shape.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func apiDecode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return v
}

// apiWant checks the status of an answer and returns its body.
func apiWant(t testing.TB, status int, body []byte, want int) []byte {
	t.Helper()
	if status != want {
		t.Fatalf("status %d, want %d; body %s", status, want, body)
	}
	return body
}

// apiWantError checks an error answer: its status and docs/api.md's shape with
// the code and field.
func apiWantError(t testing.TB, status int, body []byte, want int, code, field string) apiError {
	t.Helper()
	apiWant(t, status, body, want)
	e := apiDecode[apiError](t, body)
	if e.Error.Code != code || e.Error.Field != field || e.Error.Message == "" {
		t.Fatalf("error %+v, want code %q field %q and a message", e.Error, code, field)
	}
	return e
}

// apiApply posts an application and returns the status and body.
func apiApply(t testing.TB, g *handlertest.Gateway, body any) (int, []byte) {
	t.Helper()
	return g.API(t, http.MethodPost, "/v1/guarantees", body)
}

// apiGet returns the stored order.
func apiGet(t testing.TB, g *handlertest.Gateway, orderNo string) apiOrder {
	t.Helper()
	st, b := g.API(t, http.MethodGet, "/v1/guarantees/"+orderNo, nil)
	return apiDecode[apiOrder](t, apiWant(t, st, b, http.StatusOK))
}

// apiNotify posts applynotify as institution org: staus "1" with bhno (and
// the PDF when pdf is not nil), or "0" when bhno is empty.
func apiNotify(t testing.TB, g *handlertest.Gateway, org, orderNo, bhno string, pdf []byte) {
	t.Helper()
	p := map[string]any{"orderno": orderNo, "staus": "1", "bhno": bhno, "bhrate": "0.0015", "bhcost": "150.00",
		"sellername": org + " bank", "selleraddress": "某市某路1号", "sellerphone": "010-12345678",
		"bhcretime": time.Now().UnixMilli()}
	if bhno == "" {
		p["staus"] = "0"
		delete(p, "bhno")
	}
	if pdf != nil {
		p["bhfile"] = base64.StdEncoding.EncodeToString(pdf)
	}
	st, r := g.Callback(t, org, "applynotify", p)
	if st != http.StatusOK || r.Stat != 1 {
		t.Fatalf("applynotify of %s answered %d %+v", orderNo, st, r)
	}
}

// apiProcessing applies for a fresh order that the stub accepts.
func apiProcessing(t testing.TB, g *handlertest.Gateway, in *stubInst, orderNo, qycode, bdcode string) apiOrder {
	t.Helper()
	st, b := apiApply(t, g, apiApplication(in.Spec.OrgCode, orderNo, qycode, "XM-1", bdcode))
	o := apiDecode[apiOrder](t, apiWant(t, st, b, http.StatusCreated))
	if o.Status != "processing" {
		t.Fatalf("order %s is %s, want processing", orderNo, o.Status)
	}
	return o
}

// apiRoutes returns the routes the gateway registered.
func apiRoutes(t testing.TB, g *handlertest.Gateway) gin.RoutesInfo {
	t.Helper()
	e, ok := g.Handler().(*gin.Engine)
	if !ok {
		t.Fatalf("handler is %T, not *gin.Engine", g.Handler())
	}
	return e.Routes()
}

func TestAPIAuth(t *testing.T) {
	t.Parallel()
	g := apiStart(t, "sqlite", newStubInst(t, "BANK01", 0))

	do := func(method, path, auth string) (int, http.Header, []byte) {
		req, _ := http.NewRequest(method, g.URL+path, strings.NewReader("{}"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	refused := []struct{ name, auth string }{
		{"no header", ""},
		{"wrong token", "Bearer not-the-token"},
		{"token prefix", "Bearer " + handlertest.Token[:len(handlertest.Token)-1]},
		{"token plus suffix", "Bearer " + handlertest.Token + "x"},
		{"basic scheme", "Basic " + handlertest.Token},
		{"bare token", handlertest.Token},
		{"empty bearer", "Bearer "},
	}
	// Every /v1 route the server registers refuses a request without the
	// token, before anything else is looked at.
	var v1 int
	for _, r := range apiRoutes(t, g) {
		if !strings.HasPrefix(r.Path, "/v1/") {
			continue
		}
		v1++
		path := strings.NewReplacer(":orderno", "X1", ":id", "1").Replace(r.Path)
		for _, c := range refused {
			t.Run(r.Method+" "+r.Path+"/"+c.name, func(t *testing.T) {
				st, h, b := do(r.Method, path, c.auth)
				apiWantError(t, st, b, http.StatusUnauthorized, "unauthorized", "")
				if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", h.Get("WWW-Authenticate"))
				}
				if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q", ct)
				}
			})
		}
	}
	if v1 < 15 {
		t.Fatalf("only %d /v1 routes registered, docs/api.md has 15", v1)
	}
	for _, auth := range []string{"Bearer " + handlertest.Token, "bearer " + handlertest.Token} {
		if st, _, b := do(http.MethodGet, "/v1/institutions", auth); st != http.StatusOK {
			t.Errorf("%q: %d %s", auth[:7], st, b)
		}
	}
	// Operations and the institutions' callbacks are not behind the token.
	if st, _, b := do(http.MethodGet, "/healthz", ""); st != http.StatusOK {
		t.Errorf("healthz: %d %s", st, b)
	}
}

func TestAPIUnknownRoute(t *testing.T) {
	t.Parallel()
	g := apiStart(t, "sqlite", newStubInst(t, "BANK01", 0))
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/nothing"},
		{http.MethodDelete, "/v1/guarantees/X1"},
		{http.MethodGet, "/v1/guarantees/X1/nothing"},
	} {
		st, b := g.API(t, c.method, c.path, nil)
		apiWantError(t, st, b, http.StatusNotFound, "not_found", "")
	}
}

func TestAPIApply(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 300*time.Millisecond)
		g := apiStart(t, driver, in)

		cases := []struct {
			name       string
			answer     stubAnswer
			wantStatus int
			wantOrder  string // status of the stored order
			wantInfo   []string
		}{
			{name: "accepted", answer: stubAnswer{}, wantStatus: http.StatusCreated, wantOrder: "processing"},
			{name: "accepted without cancelurl", answer: stubAnswer{Data: map[string]any{"continueurl": in.URL + "/c",
				"queryurl": in.URL + "/order/query", "pullurl": in.URL + "/order/pull"}},
				wantStatus: http.StatusCreated, wantOrder: "processing"},
			{name: "refused", answer: stubAnswer{Mode: stubRefuse, Errcode: "E4001", Msg: "企业信息不全"},
				wantStatus: http.StatusBadGateway, wantOrder: "apply_rejected", wantInfo: []string{"E4001", "企业信息不全"}},
			{name: "timeout", answer: stubAnswer{Mode: stubHang}, wantStatus: http.StatusAccepted, wantOrder: "applying"},
			{name: "connection reset", answer: stubAnswer{Mode: stubReset}, wantStatus: http.StatusAccepted, wantOrder: "applying"},
			{name: "HTTP 500", answer: stubAnswer{Mode: stub500}, wantStatus: http.StatusAccepted, wantOrder: "applying"},
			{name: "garbage", answer: stubAnswer{Mode: stubGarbage}, wantStatus: http.StatusAccepted, wantOrder: "applying"},
			{name: "relative queryurl", answer: stubAnswer{Data: map[string]any{"continueurl": in.URL + "/c",
				"queryurl": "/order/query", "pullurl": in.URL + "/order/pull"}},
				wantStatus: http.StatusAccepted, wantOrder: "applying"},
			{name: "no pullurl", answer: stubAnswer{Data: map[string]any{"continueurl": in.URL + "/c",
				"queryurl": in.URL + "/order/query"}}, wantStatus: http.StatusAccepted, wantOrder: "applying"},
			{name: "no continueurl", answer: stubAnswer{Data: map[string]any{"queryurl": in.URL + "/order/query",
				"pullurl": in.URL + "/order/pull"}}, wantStatus: http.StatusAccepted, wantOrder: "applying"},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				in.set(epApply, c.answer)
				orderNo := fmt.Sprintf("A%s%02d", driver[:1], i)
				before := in.calls(epApply)
				start := time.Now()
				st, b := apiApply(t, g, apiApplication("BANK01", orderNo, fmt.Sprintf("QY%02d", i), "XM-1", "BD-1"))
				took := time.Since(start)
				apiWant(t, st, b, c.wantStatus)
				if n := in.calls(epApply) - before; n != 1 {
					t.Errorf("institution got %d applies, want 1", n)
				}
				if got := in.last(t, epApply)["orderno"]; got != orderNo {
					t.Errorf("institution got orderno %v", got)
				}
				switch c.wantStatus {
				case http.StatusCreated, http.StatusAccepted:
					o := apiDecode[apiOrder](t, b)
					if o.OrderNo != orderNo || o.Status != c.wantOrder {
						t.Errorf("answered %s %s, want %s %s", o.OrderNo, o.Status, orderNo, c.wantOrder)
					}
					if c.wantOrder == "processing" && !strings.HasPrefix(o.Continueurl, in.URL+"/c") {
						t.Errorf("continueurl %q", o.Continueurl)
					}
					if c.wantOrder == "applying" && o.Continueurl != "" {
						t.Errorf("applying order has continueurl %q", o.Continueurl)
					}
				case http.StatusBadGateway:
					e := apiWantError(t, st, b, http.StatusBadGateway, "institution", "")
					for _, s := range c.wantInfo {
						if !strings.Contains(e.Error.Message, s) {
							t.Errorf("message %q lacks %q", e.Error.Message, s)
						}
					}
				}
				if c.answer.Mode == stubHang {
					t.Logf("apply answered 202 in %v with the institution hanging (timeout 300ms)", took)
				}
				if c.answer.Mode == stubHang && took > 300*time.Millisecond+time.Second {
					t.Errorf("a hanging institution held the apply for %v", took)
				}
				o := apiGet(t, g, orderNo)
				if o.Status != c.wantOrder {
					t.Errorf("stored status %s, want %s", o.Status, c.wantOrder)
				}
				for _, s := range c.wantInfo {
					if !strings.Contains(o.Info, s) {
						t.Errorf("stored info %q lacks %q", o.Info, s)
					}
				}
			})
		}
	})
}

// TestAPIApplyCallerGone: the bidding module gives up while the institution
// is still answering; what the institution answered is recorded all the
// same, so the order does not sit in applying until the recovery job.
func TestAPIApplyCallerGone(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 2*time.Second)
		in.set(epApply, stubAnswer{Delay: 300 * time.Millisecond})
		g := apiStart(t, driver, in)

		body, _ := json.Marshal(apiApplication("BANK01", "GONE1", "QYGONE", "XM-1", "BD-1"))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.URL+"/v1/guarantees", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+handlertest.Token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("answered %d before the institution did", resp.StatusCode)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			st, b := g.API(t, http.MethodGet, "/v1/guarantees/GONE1", nil)
			if st == http.StatusOK && apiDecode[apiOrder](t, b).Status == "processing" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("order after the caller left: %d %s", st, b)
			}
		}
		if n := in.calls(epApply); n != 1 {
			t.Errorf("%d applies, want 1", n)
		}
	})
}

func TestAPIApplyIdempotent(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 300*time.Millisecond)
		g := apiStart(t, driver, in)

		cases := []struct {
			name   string
			answer stubAnswer
			first  int
			status string
		}{
			{"processing", stubAnswer{}, http.StatusCreated, "processing"},
			{"applying after a timeout", stubAnswer{Mode: stubHang}, http.StatusAccepted, "applying"},
			{"apply_rejected", stubAnswer{Mode: stubRefuse, Errcode: "E1", Msg: "no"}, http.StatusBadGateway, "apply_rejected"},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				in.set(epApply, c.answer)
				orderNo := fmt.Sprintf("I%02d", i)
				body := apiApplication("BANK01", orderNo, fmt.Sprintf("QY%02d", i), "XM-1", "BD-1")
				st, b := apiApply(t, g, body)
				apiWant(t, st, b, c.first)
				calls := in.calls(epApply)

				// The same body again, money written another way: the same
				// application, answered from the store.
				body["bzjmoney"] = "100000"
				st, b = apiApply(t, g, body)
				o := apiDecode[apiOrder](t, apiWant(t, st, b, http.StatusOK))
				if o.OrderNo != orderNo || o.Status != c.status {
					t.Errorf("repeat answered %s %s, want %s %s", o.OrderNo, o.Status, orderNo, c.status)
				}
				if n := in.calls(epApply); n != calls {
					t.Errorf("repeat called the institution again (%d calls, want %d)", n, calls)
				}

				// Another body under the same orderno.
				body["bzjmoney"] = "100001.00"
				st, b = apiApply(t, g, body)
				apiWantError(t, st, b, http.StatusConflict, "conflict", "orderno")
				if n := in.calls(epApply); n != calls {
					t.Errorf("conflict called the institution (%d calls, want %d)", n, calls)
				}
			})
		}

		t.Run("repeat after the deadline passed", func(t *testing.T) {
			in.set(epApply, stubAnswer{})
			deadline := time.Now().Add(700 * time.Millisecond)
			body := apiApplication("BANK01", "LATE1", "QYLATE", "XM-1", "BD-1")
			body["tbjztime"] = deadline.UnixMilli()
			st, b := apiApply(t, g, body)
			apiWant(t, st, b, http.StatusCreated)
			calls := in.calls(epApply)
			time.Sleep(time.Until(deadline) + 50*time.Millisecond)

			// The bidding module retrying a request it sent in time is
			// answered the stored order, not told the deadline passed.
			st, b = apiApply(t, g, body)
			if o := apiDecode[apiOrder](t, apiWant(t, st, b, http.StatusOK)); o.Status != "processing" {
				t.Errorf("repeat answered %s", o.Status)
			}
			body["qyname"] = "另一家公司"
			st, b = apiApply(t, g, body)
			apiWantError(t, st, b, http.StatusConflict, "conflict", "orderno")
			body["orderno"] = "LATE2"
			st, b = apiApply(t, g, body)
			apiWantError(t, st, b, http.StatusBadRequest, "invalid", "tbjztime")
			if n := in.calls(epApply); n != calls {
				t.Errorf("%d more institution calls, want none", n-calls)
			}
		})
	})
}

func TestAPIApplyGeneratedOrderNo(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 0)
		g := apiStart(t, driver, in)
		var got []string
		for i := range 3 {
			st, b := apiApply(t, g, apiApplication("BANK01", "", fmt.Sprintf("QY%02d", i), "XM-1", "BD-1"))
			o := apiDecode[apiOrder](t, apiWant(t, st, b, http.StatusCreated))
			if o.OrderNo == "" || len(o.OrderNo) > 32 {
				t.Fatalf("generated orderno %q: want 1 to 32 characters", o.OrderNo)
			}
			if sent := in.last(t, epApply)["orderno"]; sent != o.OrderNo {
				t.Errorf("institution got orderno %v, the answer says %s", sent, o.OrderNo)
			}
			got = append(got, o.OrderNo)
			time.Sleep(2 * time.Millisecond) // the next one is made in a later millisecond
		}
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Errorf("ordernos not time-ordered: %q then %q", got[i-1], got[i])
			}
		}
	})
}

func TestAPIApplyValidation(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 0)
		g := apiStart(t, driver, in)
		// The bidder already holds an active order for XM-1/BD-1.
		first := apiProcessing(t, g, in, "ACTIVE1", "QYACTIVE", "BD-1")

		now := time.Now()
		cjk := func(n int) string { return strings.Repeat("标", n) }
		cases := []struct {
			name   string
			change map[string]any // nil value: remove the field
			status int
			code   string
			field  string
		}{
			{"qyname missing", map[string]any{"qyname": nil}, 400, "invalid", "qyname"},
			{"qyname blank", map[string]any{"qyname": "  "}, 400, "invalid", "qyname"},
			{"qyname 65 characters", map[string]any{"qyname": cjk(65)}, 400, "invalid", "qyname"},
			{"qyname a number", map[string]any{"qyname": 12}, 400, "invalid", "qyname"},
			{"qycode 33 characters", map[string]any{"qycode": strings.Repeat("9", 33)}, 400, "invalid", "qycode"},
			{"orderno 33 characters", map[string]any{"orderno": strings.Repeat("O", 33)}, 400, "invalid", "orderno"},
			{"xmname 257 characters", map[string]any{"xmname": cjk(257)}, 400, "invalid", "xmname"},
			{"jbremail 129 characters", map[string]any{"jbremail": cjk(129)}, 400, "invalid", "jbremail"},
			{"bzjmoney three decimals", map[string]any{"bzjmoney": json.Number("100.001")}, 400, "invalid", "bzjmoney"},
			{"bzjmoney negative", map[string]any{"bzjmoney": json.Number("-100")}, 400, "invalid", "bzjmoney"},
			{"bzjmoney exponent", map[string]any{"bzjmoney": json.Number("1e5")}, 400, "invalid", "bzjmoney"},
			{"bzjmoney zero", map[string]any{"bzjmoney": "0.00"}, 400, "invalid", "bzjmoney"},
			{"bzjmoney text", map[string]any{"bzjmoney": "十万"}, 400, "invalid", "bzjmoney"},
			{"bzjmoney missing", map[string]any{"bzjmoney": nil}, 400, "invalid", "bzjmoney"},
			{"tbjztime not a time", map[string]any{"tbjztime": "next week"}, 400, "invalid", "tbjztime"},
			{"tbjztime passed", map[string]any{"tbjztime": now.Add(-time.Minute).UnixMilli(),
				"kbttime": now.Add(time.Hour).UnixMilli()}, 400, "invalid", "tbjztime"},
			{"kbttime before tbjztime", map[string]any{"kbttime": now.Add(24 * time.Hour).UnixMilli(),
				"tbjztime": now.Add(48 * time.Hour).UnixMilli()}, 400, "invalid", "kbttime"},
			{"orgcode unknown", map[string]any{"orgcode": "NOBANK"}, 400, "invalid", "orgcode"},
			{"orgcode missing", map[string]any{"orgcode": nil}, 400, "invalid", "orgcode"},
			{"active order of the bidder for the lot", map[string]any{"qycode": "QYACTIVE"}, 409, "conflict", "qycode"},
		}
		before := in.calls(epApply)
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				body := apiApplication("BANK01", fmt.Sprintf("V%02d", i), fmt.Sprintf("QY%02d", i), "XM-1", "BD-1")
				for k, v := range c.change {
					if v == nil {
						delete(body, k)
					} else {
						body[k] = v
					}
				}
				st, b := apiApply(t, g, body)
				e := apiWantError(t, st, b, c.status, c.code, c.field)
				if c.status == http.StatusConflict && !strings.Contains(e.Error.Message, first.OrderNo) {
					t.Errorf("message %q does not name the active order %s", e.Error.Message, first.OrderNo)
				}
				if st, b := g.API(t, http.MethodGet, "/v1/guarantees/"+body["orderno"].(string), nil); st != http.StatusNotFound {
					t.Errorf("a refused application was stored: %d %s", st, b)
				}
			})
		}
		if n := in.calls(epApply) - before; n != 0 {
			t.Errorf("refused applications made %d institution calls", n)
		}

		for _, c := range []struct {
			name, body string
			field      string
		}{
			{"not JSON", "qyname=x", "body"},
			{"a JSON array", "[]", "body"},
			{"not UTF-8", "{\"qyname\":\"\xff\"}", "body"},
		} {
			st, b := apiApply(t, g, []byte(c.body))
			apiWantError(t, st, b, http.StatusBadRequest, "invalid", c.field)
		}
		st, b := apiApply(t, g, bytes.Repeat([]byte(" "), 2<<20))
		apiWant(t, st, b, http.StatusRequestEntityTooLarge)

		// Within the limits, in characters not bytes, and money as a string.
		ok := apiApplication("BANK01", "LIMITS", "QYLIMITS", "XM-1", "BD-1")
		ok["qyname"], ok["xmname"], ok["bzjmoney"] = cjk(64), cjk(256), "99.5"
		st, b = apiApply(t, g, ok)
		o := apiDecode[apiOrder](t, apiWant(t, st, b, http.StatusCreated))
		if o.Bzjmoney.String() != "99.50" {
			t.Errorf("bzjmoney answered as %s, want 99.50", o.Bzjmoney)
		}
		if got := in.last(t, epApply)["qyname"]; got != cjk(64) {
			t.Errorf("institution got qyname %v", got)
		}

		// The slot frees when the order is no longer active: the same bidder
		// and lot may apply again after a rejection.
		in.set(epApply, stubAnswer{Mode: stubRefuse, Errcode: "E1", Msg: "no"})
		st, b = apiApply(t, g, apiApplication("BANK01", "REJ1", "QYREJ", "XM-1", "BD-1"))
		apiWant(t, st, b, http.StatusBadGateway)
		in.set(epApply, stubAnswer{})
		st, b = apiApply(t, g, apiApplication("BANK01", "REJ2", "QYREJ", "XM-1", "BD-1"))
		apiWant(t, st, b, http.StatusCreated)
		// Another lot of the same project is another slot.
		apiProcessing(t, g, in, "ACTIVE2", "QYACTIVE", "BD-2")
	})
}

func TestAPIApplyConcurrent(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 0)
		// A slow institution widens the window in which the repeats arrive.
		in.set(epApply, stubAnswer{Delay: 50 * time.Millisecond})
		g := apiStart(t, driver, in)

		const n = 8
		run := func(body func(i int) any) map[int]int {
			var mu sync.Mutex
			statuses := map[int]int{}
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					st, _ := apiApply(t, g, body(i))
					mu.Lock()
					statuses[st]++
					mu.Unlock()
				}()
			}
			close(start)
			wg.Wait()
			return statuses
		}

		t.Run("same orderno", func(t *testing.T) {
			same := apiApplication("BANK01", "SAME1", "QYSAME", "XM-1", "BD-1")
			got := run(func(int) any { return same })
			if got[http.StatusCreated] != 1 || got[http.StatusOK] != n-1 {
				t.Errorf("statuses %v, want one 201 and %d 200", got, n-1)
			}
			if c := in.calls(epApply); c != 1 {
				t.Errorf("institution got %d applies, want 1", c)
			}
			st, b := g.API(t, http.MethodGet, "/v1/guarantees?qycode=QYSAME", nil)
			items := apiDecode[struct{ Items []apiOrder }](t, apiWant(t, st, b, http.StatusOK)).Items
			if len(items) != 1 || items[0].Status != "processing" {
				t.Errorf("stored orders %+v, want one processing", items)
			}
		})

		t.Run("same bidder and lot", func(t *testing.T) {
			before := in.calls(epApply)
			got := run(func(i int) any {
				return apiApplication("BANK01", fmt.Sprintf("LOT%d", i), "QYLOT", "XM-1", "BD-1")
			})
			if got[http.StatusCreated] != 1 || got[http.StatusConflict] != n-1 {
				t.Errorf("statuses %v, want one 201 and %d 409", got, n-1)
			}
			if c := in.calls(epApply) - before; c != 1 {
				t.Errorf("institution got %d applies, want 1", c)
			}
		})
	})
}
