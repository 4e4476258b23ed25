package client_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/wire"
	"github.com/procurement/gateway/wire/pdftest"
)

// TestApplyEnvelope checks what an institution receives from Apply: the
// envelope of docs/decisions.md §1, encrypted with its key, money as a JSON
// number with two decimals, times as epoch milliseconds; and what is
// recorded of the exchange.
func TestApplyEnvelope(t *testing.T) {
	checkNoLeak(t)
	result := wire.ApplyResult{ContinueURL: "https://bank.example/continue/1", QueryURL: "https://bank.example/q",
		PullURL: "https://bank.example/p", CancelURL: "https://bank.example/c"}
	var answered int
	in := newInstitution(t, func(in *institution, w http.ResponseWriter, r *http.Request, hit int) {
		body := map[string]any{"stat": 1, "errcode": "000000", "msg": "", "data": seal(t, in.cipher, result)}
		b, _ := json.Marshal(body)
		answered = len(b)
		writeJSON(w, http.StatusOK, string(b))
	})
	c, rec, _ := newClient(t, in.URL("/bank/"), nil)
	req := applyRequest()
	got, err := c.Apply(context.Background(), req)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got != result {
		t.Errorf("result = %+v, want %+v", got, result)
	}

	reqs := in.requests()
	if len(reqs) != 1 {
		t.Fatalf("institution saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if h := r.header.Get("appKey"); h != appKey {
		t.Errorf("appKey header = %q", h)
	}
	if h := r.header.Get("Content-Type"); h != "application/json;charset=utf-8" {
		t.Errorf("Content-Type = %q", h)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &env); err != nil || len(env) != 1 || env["data"] == nil {
		t.Fatalf("body is not {\"data\":...}: %s", r.body)
	}
	if r.plain == nil {
		t.Fatalf("body does not decrypt under the institution's secret: %s", r.body)
	}
	var params map[string]json.RawMessage
	if err := json.Unmarshal(r.plain, &params); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ field, want string }{
		{"bzjmoney", "10000.00"}, // a number with two decimals, not "10000.00" nor 10000 nor 1e4
		{"kbttime", strconv.FormatInt(req.OpeningAt.UnixMilli(), 10)},
		{"tbjztime", strconv.FormatInt(req.DeadlineAt.UnixMilli(), 10)},
		{"orderno", `"` + req.OrderNo + `"`},
		{"qyname", `"` + req.ApplicantName + `"`},
		{"jbrphone", `"13800138000"`},
	} {
		if g := string(params[tc.field]); g != tc.want {
			t.Errorf("%s = %s, want %s", tc.field, g, tc.want)
		}
	}
	if ms := string(params["kbttime"]); ms != "1768872600000" { // 2026-01-20 09:30 CST, by hand
		t.Errorf("kbttime = %s, want 1768872600000", ms)
	}
	if _, ok := params["orgcode"]; ok {
		t.Error("orgcode was sent to the institution")
	}
	if len(params) != 18 {
		t.Errorf("%d parameters sent, want the 18 of docs/protocol.md §3.2.1", len(params))
	}
	if !strings.HasPrefix(r.at.Format(time.RFC3339), "20") {
		t.Error("no arrival time")
	}

	recs := rec.all()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	got1 := recs[0]
	if got1.OrgCode != "ORG1" || got1.Endpoint != client.EndpointApply || got1.OrderNo != req.OrderNo ||
		got1.URL != in.URL("/bank/guarantee/apply") || got1.Attempt != 1 || got1.Result != "ok" ||
		got1.HTTPStatus != 200 || got1.Stat == nil || *got1.Stat != 1 || got1.Errcode != "000000" || got1.Error != "" {
		t.Errorf("record = %+v", got1)
	}
	if got1.RequestBytes != int64(len(r.body)) || got1.ResponseBytes != int64(answered) {
		t.Errorf("sizes = %d/%d, want %d/%d", got1.RequestBytes, got1.ResponseBytes, len(r.body), answered)
	}
	if got1.Latency <= 0 {
		t.Errorf("latency = %v", got1.Latency)
	}
	checkRecords(t, recs, secrets(req)...)
}

// TestEndpoints checks each method's URL, parameters and answer.
func TestEndpoints(t *testing.T) {
	checkNoLeak(t)
	pdf := pdftest.Letter("PDF-BODY-MARKER-93f1", 0, 1)
	fee := decimal.RequireFromString("12.50")
	answers := map[string]any{
		"/bank/guarantee/cost":    map[string]any{"money": "12.5"}, // a string, and one decimal: read tolerantly
		"/bank/guarantee/xmstate": nil,
		"/q/query":                map[string]any{"status": 1, "describe": "已出函", "dealtime": 1768872600000},
		"/p/pull":                 wire.PullResult{Name: "letter.pdf", File: pdf},
		"/c/cancel":               nil,
	}
	in := newInstitution(t, func(in *institution, w http.ResponseWriter, r *http.Request, hit int) {
		okWith(t, answers[r.URL.Path])(in, w, r, hit)
	})
	c, rec, _ := newClient(t, in.URL("/bank"), nil)
	ctx := context.Background()

	tests := []struct {
		name   string
		call   func() (any, error)
		path   string
		params string // the decrypted JSON the institution must see
		want   any
	}{
		{"cost", func() (any, error) {
			r, err := c.Cost(ctx, wire.CostRequest{DepositAmount: decimal.RequireFromString("10000.5"), OrgCode: "ORG1"})
			return r.Fee.String() + "|" + r.Description, err
		}, "/bank/guarantee/cost", `{"bzjmoney":10000.50,"orgcode":"ORG1"}`, fee.String() + "|"},
		{"xmstate", func() (any, error) {
			return nil, c.ProjectState(ctx, wire.ProjectState{ProjectName: "P", ProjectCode: "XM1", LotName: "L",
				LotCode: "BD1", OpeningAt: time.UnixMilli(1768872600000), State: "2"})
		}, "/bank/guarantee/xmstate",
			`{"xmname":"P","xmcode":"XM1","bdname":"L","bdcode":"BD1","kbttime":1768872600000,"state":"2"}`, nil},
		{"query", func() (any, error) {
			r, err := c.Query(ctx, in.URL("/q/query"), "G1")
			return r, err
		}, "/q/query", `{"orderno":"G1"}`,
			wire.QueryResult{Status: "1", Describe: "已出函", DealtAt: time.UnixMilli(1768872600000).UTC()}},
		{"pull", func() (any, error) {
			r, err := c.Pull(ctx, in.URL("/p/pull"), "G1", "BH-1")
			return string(r.File) + "|" + r.Name, err
		}, "/p/pull", `{"baohanno":"BH-1"}`, string(pdf) + "|letter.pdf"},
		{"cancel", func() (any, error) {
			return nil, c.Cancel(ctx, in.URL("/c/cancel"), "G1", "BH-1")
		}, "/c/cancel", `{"baohanno":"BH-1"}`, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.call()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if tc.want != nil && got != tc.want {
				t.Errorf("answer = %#v, want %#v", got, tc.want)
			}
			reqs := in.requests()
			if len(reqs) != i+1 {
				t.Fatalf("institution saw %d requests, want %d", len(reqs), i+1)
			}
			if string(reqs[i].plain) != tc.params {
				t.Errorf("sent %s, want %s", reqs[i].plain, tc.params)
			}
			if reqs[i].header.Get("appKey") != appKey {
				t.Error("no appKey header")
			}
		})
	}
	recs := rec.all()
	if len(recs) != len(tests) {
		t.Fatalf("%d records, want %d", len(recs), len(tests))
	}
	for i, r := range recs {
		if r.Endpoint != tests[i].name || r.Result != "ok" || !strings.HasSuffix(r.URL, tests[i].path) {
			t.Errorf("record %d = %+v", i, r)
		}
	}
	if recs[3].ResponseBytes < int64(len(pdf)) {
		t.Errorf("pull response size %d, smaller than the PDF", recs[3].ResponseBytes)
	}
	checkRecords(t, recs, appSecret, appKey, "PDF-BODY-MARKER", base64.StdEncoding.EncodeToString(pdf)[:40])
}

// TestURLOrigins: a per-order URL is called only on the origin of the
// institution's base_url or of its url_origins (docs/decisions.md §39).
// Another host, another port or another scheme is refused before anything
// is sent: no request reaches it, no attempt is recorded, and the breaker
// does not count it.
func TestURLOrigins(t *testing.T) {
	checkNoLeak(t)
	pdf := pdftest.Letter("BH-1", 0, 1)
	answers := map[string]any{
		"/q":    map[string]any{"status": 2, "describe": "审核中"},
		"/pull": wire.PullResult{File: pdf},
	}
	serve := func(in *institution, w http.ResponseWriter, r *http.Request, hit int) {
		okWith(t, answers[r.URL.Path])(in, w, r, hit)
	}
	bank := newInstitution(t, serve)  // base_url's origin
	files := newInstitution(t, serve) // listed in url_origins
	other := newInstitution(t, serve) // neither: another port of the same host
	c, rec, _ := newClient(t, bank.URL("/bank"), func(cfg *client.Config) {
		cfg.URLOrigins = []string{strings.ToUpper(files.URL("")) + "/"} // spelt otherwise, the same origin
		cfg.BreakerFailures = 1
	})
	ctx := context.Background()
	if _, err := c.Query(ctx, bank.URL("/q"), "G1"); err != nil {
		t.Errorf("queryurl on base_url's origin: %v", err)
	}
	if _, err := c.Pull(ctx, files.URL("/pull"), "G1", "BH-1"); err != nil {
		t.Errorf("pullurl on an origin of url_origins: %v", err)
	}
	host := strings.TrimPrefix(other.URL(""), "http://")
	for _, u := range []string{other.URL("/q"), "https://" + host + "/q", "http://localhost:" + strings.Split(host, ":")[1] + "/q"} {
		_, err := c.Query(ctx, u, "G1")
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Kind != client.KindURLRefused || ce.Endpoint != client.EndpointQuery {
			t.Errorf("query %s: %v, want url_refused", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "/q") {
			t.Errorf("the error shows the URL, not only its origin: %v", err)
		}
	}
	if err := c.Cancel(ctx, other.URL("/c"), "G1", "BH-1"); client.KindOf(err) != client.KindURLRefused {
		t.Errorf("cancel on another origin: %v, want url_refused", err)
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("the other origin got %d requests", n)
	}
	if n := len(rec.all()); n != 2 {
		t.Errorf("%d attempts recorded, want the 2 that were made", n)
	}
	if st := c.BreakerState(); st != "closed" {
		t.Errorf("breaker %s after refused URLs: they are not the institution failing", st)
	}
}

// TestTolerantAnswer: the generic response is read the tolerant way of
// docs/decisions.md §1 (stat 1 or "1"; data ciphertext, hex, empty, null or
// absent where the endpoint returns none).
func TestTolerantAnswer(t *testing.T) {
	checkNoLeak(t)
	query := map[string]any{"status": "2", "describe": "处理中"}
	tests := []struct {
		name  string
		body  func(in *institution) string
		call  string // "query" needs data; "xmstate" and "cancel" do not
		ok    bool
		wantK client.Kind
	}{
		{"stat number", func(in *institution) string {
			return `{"stat":1,"errcode":"000000","msg":"","data":"` + seal(t, in.cipher, query) + `"}`
		}, "query", true, ""},
		{"stat string", func(in *institution) string {
			return `{"stat":"1","errcode":"000000","msg":"","data":"` + seal(t, in.cipher, query) + `"}`
		}, "query", true, ""},
		{"no errcode nor msg, extra fields", func(in *institution) string {
			return `{"stat":1,"data":"` + seal(t, in.cipher, query) + `","traceId":"x","success":true}`
		}, "query", true, ""},
		{"hex ciphertext", func(in *institution) string {
			b64 := seal(t, in.cipher, query)
			raw, _ := base64.StdEncoding.DecodeString(b64)
			return `{"stat":1,"data":"` + strings.ToUpper(hexOf(raw)) + `"}`
		}, "query", true, ""},
		{"xmstate data absent", func(*institution) string { return `{"stat":1,"errcode":"000000","msg":"ok"}` }, "xmstate", true, ""},
		{"xmstate data empty", func(*institution) string { return `{"stat":"1","errcode":"000000","msg":"","data":""}` }, "xmstate", true, ""},
		{"cancel data null", func(*institution) string { return `{"stat":1,"errcode":"000000","data":null}` }, "cancel", true, ""},
		{"query data absent", func(*institution) string { return `{"stat":1,"errcode":"000000"}` }, "query", false, client.KindBadAnswer},
		{"query data null", func(*institution) string { return `{"stat":1,"data":null}` }, "query", false, client.KindBadAnswer},
		{"no stat", func(*institution) string { return `{"errcode":"000000","data":""}` }, "xmstate", false, client.KindBadAnswer},
		{"stat not a number", func(*institution) string { return `{"stat":"yes"}` }, "xmstate", false, client.KindBadAnswer},
		{"stat 0 as string, errcode as number", func(*institution) string {
			return `{"stat":"0","errcode":200001,"msg":"订单不存在"}`
		}, "cancel", false, client.KindRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstitution(t, func(in *institution, w http.ResponseWriter, _ *http.Request, _ int) {
				writeJSON(w, http.StatusOK, tc.body(in))
			})
			c, rec, _ := newClient(t, in.URL(""), nil)
			var err error
			switch tc.call {
			case "query":
				var q wire.QueryResult
				q, err = c.Query(context.Background(), in.URL("/q"), "G1")
				if err == nil && (q.Status != "2" || q.Describe != "处理中") {
					t.Errorf("query = %+v", q)
				}
			case "xmstate":
				err = c.ProjectState(context.Background(), wire.ProjectState{ProjectName: "P", ProjectCode: "X",
					LotName: "L", LotCode: "B", OpeningAt: time.Now(), State: "1"})
			case "cancel":
				err = c.Cancel(context.Background(), in.URL("/c"), "G1", "BH1")
			}
			if tc.ok != (err == nil) || client.KindOf(err) != tc.wantK {
				t.Fatalf("err = %v (kind %q), want ok=%v kind %q", err, client.KindOf(err), tc.ok, tc.wantK)
			}
			if tc.wantK == client.KindRefused {
				var ce *client.Error
				errors.As(err, &ce)
				if ce.Errcode != "200001" || ce.Msg != "订单不存在" {
					t.Errorf("refusal = %q %q", ce.Errcode, ce.Msg)
				}
				if r := rec.all(); len(r) != 1 || r[0].Stat == nil || *r[0].Stat != 0 || r[0].Errcode != "200001" {
					t.Errorf("record = %+v", r)
				}
			}
		})
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

// TestFaults: every way an institution can fail gives its own Kind, within
// the timeout, with the right number of attempts (idempotent calls retried,
// apply and cancel only re-sent when the request surely never left), every
// attempt recorded, and no goroutine left behind.
func TestFaults(t *testing.T) {
	const timeout = 150 * time.Millisecond
	wrongKey := newCipher(t, otherSecret)
	query := map[string]any{"status": "1", "describe": "ok"}

	status := func(code int, header ...string) answerFunc {
		return func(_ *institution, w http.ResponseWriter, _ *http.Request, _ int) {
			for i := 0; i+1 < len(header); i += 2 {
				w.Header().Set(header[i], header[i+1])
			}
			writeJSON(w, code, `{"stat":0,"errcode":"500001","msg":"busy"}`)
		}
	}
	raw := func(body string) answerFunc {
		return func(_ *institution, w http.ResponseWriter, _ *http.Request, _ int) { writeJSON(w, 200, body) }
	}
	// trickle sends the headers at once, then a byte every 20ms, forever.
	trickle := func(in *institution, w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-in.release:
				return
			case <-tick.C:
				if _, err := w.Write([]byte(" ")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	}
	// cut hijacks the connection once the request is read and closes it:
	// with linger 0 the client gets a reset, otherwise an EOF.
	cut := func(rst bool) answerFunc {
		return func(_ *institution, w http.ResponseWriter, _ *http.Request, _ int) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			if rst {
				conn.(*net.TCPConn).SetLinger(0)
			}
			conn.Close()
		}
	}

	tests := []struct {
		name     string
		answer   answerFunc // nil: nothing listens (refused dial)
		call     string     // apply, cost, query, pull, xmstate, cancel
		url      string     // overrides the query/pull/cancel URL
		retries  int
		tweak    func(*wire.ApplyRequest)
		want     client.Kind
		hits     int // requests the institution saw
		attempts int // records
		check    func(t *testing.T, e *client.Error, recs []client.Record)
	}{
		{name: "timeout before headers/apply", answer: hang, call: "apply", retries: 2,
			want: client.KindUnknown, hits: 1, attempts: 1},
		{name: "timeout before headers/query retried", answer: hang, call: "query", retries: 2,
			want: client.KindUnknown, hits: 3, attempts: 3},
		{name: "slow body/query", answer: trickle, call: "query",
			want: client.KindUnknown, hits: 1, attempts: 1,
			check: func(t *testing.T, _ *client.Error, recs []client.Record) {
				if recs[0].HTTPStatus != 200 || recs[0].ResponseBytes == 0 {
					t.Errorf("record = %+v, want status 200 and the bytes that came", recs[0])
				}
			}},
		{name: "slow body/pull", answer: trickle, call: "pull", want: client.KindUnknown, hits: 1, attempts: 1},
		{name: "reset/apply", answer: cut(true), call: "apply", retries: 2,
			want: client.KindUnknown, hits: 1, attempts: 1},
		{name: "closed after reading/apply", answer: cut(false), call: "apply",
			want: client.KindUnknown, hits: 1, attempts: 1},
		{name: "reset/cancel", answer: cut(true), call: "cancel", want: client.KindUnknown, hits: 1, attempts: 1},
		{name: "reset/query retried", answer: cut(true), call: "query", retries: 2,
			want: client.KindUnknown, hits: 3, attempts: 3},
		{name: "500/query retried", answer: status(500), call: "query", retries: 2,
			want: client.KindHTTP, hits: 3, attempts: 3,
			check: func(t *testing.T, e *client.Error, recs []client.Record) {
				if e.HTTPStatus != 500 {
					t.Errorf("HTTPStatus = %d", e.HTTPStatus)
				}
				for _, r := range recs {
					if r.HTTPStatus != 500 || r.Result != string(client.KindHTTP) || r.ResponseBytes == 0 {
						t.Errorf("record = %+v", r)
					}
				}
			}},
		{name: "500/apply not re-sent", answer: status(500), call: "apply", retries: 2,
			want: client.KindHTTP, hits: 1, attempts: 1},
		{name: "503/cancel not re-sent", answer: status(503), call: "cancel", retries: 2,
			want: client.KindHTTP, hits: 1, attempts: 1},
		{name: "502/xmstate retried", answer: status(502), call: "xmstate", retries: 1,
			want: client.KindHTTP, hits: 2, attempts: 2},
		{name: "404/query not retried", answer: status(404), call: "query", retries: 2,
			want: client.KindHTTP, hits: 1, attempts: 1},
		{name: "302 not followed", answer: status(302, "Location", "/elsewhere"), call: "query", retries: 2,
			want: client.KindHTTP, hits: 1, attempts: 1},
		{name: "429 without Retry-After/cost retried", answer: status(429), call: "cost", retries: 1,
			want: client.KindHTTP, hits: 2, attempts: 2},
		{name: "429 Retry-After too long/query not waited for", answer: status(429, "Retry-After", "3600"),
			call: "query", retries: 2, want: client.KindHTTP, hits: 1, attempts: 1,
			check: func(t *testing.T, e *client.Error, _ []client.Record) {
				if e.HTTPStatus != 429 || e.RetryAfter != 10*time.Minute { // capped
					t.Errorf("HTTPStatus %d RetryAfter %v", e.HTTPStatus, e.RetryAfter)
				}
			}},
		{name: "stat 0/query not retried", answer: raw(`{"stat":0,"errcode":"200001","msg":"无此订单"}`),
			call: "query", retries: 2, want: client.KindRefused, hits: 1, attempts: 1,
			check: func(t *testing.T, e *client.Error, recs []client.Record) {
				if e.Errcode != "200001" || e.Msg != "无此订单" {
					t.Errorf("errcode %q msg %q", e.Errcode, e.Msg)
				}
				if recs[0].Errcode != "200001" || recs[0].Stat == nil || *recs[0].Stat != 0 {
					t.Errorf("record = %+v", recs[0])
				}
			}},
		{name: "stat 0/apply", answer: raw(`{"stat":0,"errcode":"100003","msg":"qyname"}`), call: "apply",
			want: client.KindRefused, hits: 1, attempts: 1},
		{name: "garbage/query", answer: raw(`<html><body>502 Bad Gateway</body></html>`), call: "query", retries: 2,
			want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "garbage data/query", answer: raw(`{"stat":1,"data":"not base64 !!"}`), call: "query",
			want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "wrong key/query", answer: func(_ *institution, w http.ResponseWriter, _ *http.Request, _ int) {
			writeJSON(w, 200, map[string]any{"stat": 1, "data": seal(t, wrongKey, query)})
		}, call: "query", want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "wrong key/apply", answer: func(_ *institution, w http.ResponseWriter, _ *http.Request, _ int) {
			writeJSON(w, 200, map[string]any{"stat": 1, "data": seal(t, wrongKey, wire.ApplyResult{
				ContinueURL: "http://x/c", QueryURL: "http://x/q", PullURL: "http://x/p"})})
		}, call: "apply", want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "empty data/query", answer: raw(`{"stat":1,"errcode":"000000","msg":"","data":""}`), call: "query",
			want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "empty data/pull", answer: raw(`{"stat":1,"errcode":"000000","msg":"","data":""}`), call: "pull",
			want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "answer lacks a required field/apply", answer: okWith(t, map[string]string{"continueurl": "http://x/c"}),
			call: "apply", want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "pull file not a PDF", answer: okWith(t, map[string]string{"file": base64.StdEncoding.EncodeToString([]byte("GIF89a"))}),
			call: "pull", want: client.KindBadAnswer, hits: 1, attempts: 1},
		{name: "non-absolute URL/query", answer: hang, call: "query", url: "/guarantee/query",
			want: client.KindInvalid, hits: 0, attempts: 0},
		{name: "not http/pull", answer: hang, call: "pull", url: "ftp://127.0.0.1/pull",
			want: client.KindInvalid, hits: 0, attempts: 0},
		{name: "over-long qyname/apply", answer: hang, call: "apply",
			tweak: func(a *wire.ApplyRequest) { a.ApplicantName = strings.Repeat("企", 65) },
			want:  client.KindInvalid, hits: 0, attempts: 0},
		{name: "over-long orderno/apply", answer: hang, call: "apply",
			tweak: func(a *wire.ApplyRequest) { a.OrderNo = strings.Repeat("G", 33) },
			want:  client.KindInvalid, hits: 0, attempts: 0},
		{name: "missing opening time/apply", answer: hang, call: "apply",
			tweak: func(a *wire.ApplyRequest) { a.OpeningAt = time.Time{} },
			want:  client.KindInvalid, hits: 0, attempts: 0},
		{name: "money with three decimals/apply", answer: hang, call: "apply",
			tweak: func(a *wire.ApplyRequest) { a.DepositAmount = decimal.RequireFromString("10000.005") },
			want:  client.KindInvalid, hits: 0, attempts: 0},
		{name: "negative money/cost", answer: hang, call: "cost",
			tweak: func(a *wire.ApplyRequest) { a.DepositAmount = decimal.RequireFromString("-1") },
			want:  client.KindInvalid, hits: 0, attempts: 0},
		{name: "refused dial/apply re-sent once", call: "apply", retries: 3,
			want: client.KindUnreachable, attempts: 2},
		{name: "refused dial/cancel re-sent once", call: "cancel",
			want: client.KindUnreachable, attempts: 2},
		{name: "refused dial/query retried", call: "query", retries: 2,
			want: client.KindUnreachable, attempts: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			base := refusedURL(t)
			var in *institution
			if tc.answer != nil {
				in = newInstitution(t, tc.answer)
				base = in.URL("")
			}
			c, rec, _ := newClient(t, base, func(cfg *client.Config) {
				cfg.Timeout, cfg.Retries, cfg.BreakerFailures = timeout, tc.retries, 100
			})
			u := tc.url
			if u == "" {
				u = base + "/x"
			}
			a := applyRequest()
			if tc.tweak != nil {
				tc.tweak(&a)
			}
			ctx := context.Background()
			start := time.Now()
			var err error
			switch tc.call {
			case "apply":
				_, err = c.Apply(ctx, a)
			case "cost":
				_, err = c.Cost(ctx, wire.CostRequest{DepositAmount: a.DepositAmount, OrgCode: "ORG1"})
			case "query":
				_, err = c.Query(ctx, u, a.OrderNo)
			case "pull":
				_, err = c.Pull(ctx, u, a.OrderNo, "BH-1")
			case "xmstate":
				err = c.ProjectState(ctx, wire.ProjectState{ProjectName: "P", ProjectCode: "X", LotName: "L",
					LotCode: "B", OpeningAt: time.Now(), State: "1"})
			case "cancel":
				err = c.Cancel(ctx, u, a.OrderNo, "BH-1")
			default:
				t.Fatalf("unknown call %q", tc.call)
			}
			elapsed := time.Since(start)

			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want a *client.Error", err, err)
			}
			if ce.Kind != tc.want {
				t.Fatalf("kind = %q, want %q (%v)", ce.Kind, tc.want, err)
			}
			if ce.OrgCode != "ORG1" || ce.Endpoint != tc.call {
				t.Errorf("error names %q %q", ce.OrgCode, ce.Endpoint)
			}
			if client.OutcomeUnknown(err) != (tc.want == client.KindUnknown) {
				t.Errorf("OutcomeUnknown = %v", client.OutcomeUnknown(err))
			}
			// Each attempt ends within its timeout (with slack for a loaded CI
			// machine); the pauses are 10, 20, 40ms.
			if limit := time.Duration(max(tc.attempts, 1))*(timeout+250*time.Millisecond) + 200*time.Millisecond; elapsed > limit {
				t.Errorf("took %v, want under %v", elapsed, limit)
			}
			if in != nil {
				if n := len(in.requests()); n != tc.hits {
					t.Errorf("institution saw %d requests, want %d", n, tc.hits)
				}
			}
			recs := rec.all()
			if len(recs) != tc.attempts {
				t.Fatalf("%d records, want %d: %+v", len(recs), tc.attempts, recs)
			}
			for i, r := range recs {
				if r.Attempt != i+1 || r.Result != string(tc.want) || r.Error == "" || r.OrgCode != "ORG1" ||
					r.Endpoint != tc.call || r.RequestBytes == 0 || r.Latency <= 0 {
					t.Errorf("record %d = %+v", i, r)
				}
				if r.Latency > timeout+250*time.Millisecond {
					t.Errorf("record %d: latency %v beyond the timeout", i, r.Latency)
				}
			}
			checkRecords(t, recs, secrets(a)...)
			if tc.check != nil {
				tc.check(t, ce, recs)
			}
		})
	}
}

// TestRetryAfter: a 429 with Retry-After is retried no sooner than asked,
// and the doubling back-off spaces the other retries.
func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name    string
		first   func(w http.ResponseWriter)
		retries int
		gaps    []time.Duration // at least, between arrivals
	}{
		{"429 Retry-After 1s", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, 429, "slow down")
		}, 1, []time.Duration{time.Second}},
		{"503 back-off doubles", nil, 3, []time.Duration{40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			in := newInstitution(t, func(in *institution, w http.ResponseWriter, r *http.Request, hit int) {
				switch {
				case tc.first != nil && hit == 1:
					tc.first(w)
				case tc.first == nil && hit <= len(tc.gaps):
					writeJSON(w, 503, "")
				default:
					okWith(t, map[string]string{"status": "2"})(in, w, r, hit)
				}
			})
			c, rec, _ := newClient(t, in.URL(""), func(cfg *client.Config) {
				cfg.Retries, cfg.RetryWait = tc.retries, 40*time.Millisecond
			})
			q, err := c.Query(context.Background(), in.URL("/q"), "G1")
			if err != nil || q.Status != "2" {
				t.Fatalf("Query = %+v, %v", q, err)
			}
			reqs := in.requests()
			if len(reqs) != len(tc.gaps)+1 || len(rec.all()) != len(reqs) {
				t.Fatalf("%d requests, %d records, want %d", len(reqs), len(rec.all()), len(tc.gaps)+1)
			}
			for i, want := range tc.gaps {
				if gap := reqs[i+1].at.Sub(reqs[i].at); gap < want {
					t.Errorf("retry %d came after %v, want at least %v", i+1, gap, want)
				}
			}
		})
	}
}

// TestCallerGivesUp: a caller that cancels gets an outcome-unknown error for
// a request in flight, and nothing is sent for a call whose context is
// already done.
func TestCallerGivesUp(t *testing.T) {
	checkNoLeak(t)
	in := newInstitution(t, hang)
	c, rec, _ := newClient(t, in.URL(""), func(cfg *client.Config) {
		cfg.Timeout, cfg.Retries, cfg.BreakerFailures = time.Second, 2, 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Query(ctx, in.URL("/q"), "G1")
	if !client.OutcomeUnknown(err) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("Query = %v after %v, want an unknown outcome at the caller's deadline", err, time.Since(start))
	}
	if n := len(in.requests()); n != 1 {
		t.Errorf("%d requests, want 1: no retry after the caller gave up", n)
	}
	// The institution did nothing wrong: a breaker of one failure stays closed.
	if s := c.BreakerState(); s != "closed" {
		t.Errorf("breaker %s after the caller gave up", s)
	}

	_, err = c.Apply(ctx, applyRequest())
	if client.KindOf(err) != client.KindUnreachable {
		t.Errorf("Apply with a done context = %v, want unreachable (nothing sent)", err)
	}
	if n := len(in.requests()); n != 1 {
		t.Errorf("%d requests after an apply with a done context, want 1", n)
	}
	if n := len(rec.all()); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

// TestSharedTransport: two institutions over one *http.Client, each with
// its own keys: each receives what only its secret decrypts.
func TestSharedTransport(t *testing.T) {
	checkNoLeak(t)
	hc := client.NewHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	rec := &recorder{}
	secrets := []string{appSecret, otherSecret}
	var clients []*client.Client
	var insts []*institution
	for i, s := range secrets {
		// It decrypts requests and encrypts answers with its own key.
		in := newInstitutionKeyed(t, s, okWith(t, map[string]string{"status": "2"}))
		insts = append(insts, in)
		cfg := testConfig(t, "ORG"+strconv.Itoa(i), in.URL(""), s)
		cfg.AppKey = "key" + strconv.Itoa(i)
		clients = append(clients, client.New(cfg, hc, rec))
	}
	for round := 0; round < 3; round++ {
		for i, c := range clients {
			if _, err := c.Query(context.Background(), insts[i].URL("/q"), "G1"); err != nil {
				t.Fatalf("ORG%d: %v", i, err)
			}
		}
	}
	for i, in := range insts {
		for _, r := range in.requests() {
			if !bytes.Equal(r.plain, []byte(`{"orderno":"G1"}`)) || r.header.Get("appKey") != "key"+strconv.Itoa(i) {
				t.Errorf("ORG%d received %s with appKey %q", i, r.plain, r.header.Get("appKey"))
			}
		}
	}
	for _, r := range rec.all() {
		if r.Result != "ok" || !strings.HasPrefix(r.URL, insts[r.OrgCode[3]-'0'].URL("")) {
			t.Errorf("record %+v", r)
		}
	}
}

// TestRecordRedactsURL: a password in a URL handed back by an institution
// is not recorded.
func TestRecordRedactsURL(t *testing.T) {
	checkNoLeak(t)
	in := newInstitution(t, okWith(t, map[string]string{"status": "2"}))
	c, rec, _ := newClient(t, in.URL(""), nil)
	u := strings.Replace(in.URL("/q?token=abc"), "http://", "http://bank:hunter2@", 1)
	if _, err := c.Query(context.Background(), u, "G1"); err != nil {
		t.Fatal(err)
	}
	recs := rec.all()
	if len(recs) != 1 || !strings.Contains(recs[0].URL, "/q?token=abc") {
		t.Fatalf("records %+v", recs)
	}
	checkRecords(t, recs, "hunter2")
}
