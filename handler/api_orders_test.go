package handler_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/handler/handlertest"
)

func TestAPIGetAndList(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		a, b := newStubInst(t, "BANK01", 0), newStubInst(t, "BANK02", 0)
		g := apiStart(t, driver, a, b)

		st, body := g.API(t, http.MethodGet, "/v1/guarantees/NOSUCH", nil)
		apiWantError(t, st, body, http.StatusNotFound, "not_found", "")

		// Six orders, oldest first: BANK01 on lots 1 and 2, BANK02 on lot 1;
		// one of BANK02's is refused.
		type spec struct{ orderNo, org, qycode, bdcode string }
		specs := []spec{{"L1", "BANK01", "QY1", "BD-1"}, {"L2", "BANK02", "QY2", "BD-1"}, {"L3", "BANK01", "QY3", "BD-2"},
			{"L4", "BANK01", "QY4", "BD-1"}, {"L5", "BANK02", "QY5", "BD-2"}, {"L6", "BANK01", "QY6", "BD-1"}}
		for _, s := range specs {
			if s.orderNo == "L5" {
				b.set(epApply, stubAnswer{Mode: stubRefuse, Errcode: "E1", Msg: "no"})
			}
			st, body := apiApply(t, g, apiApplication(s.org, s.orderNo, s.qycode, "XM-1", s.bdcode))
			if st != http.StatusCreated && st != http.StatusBadGateway {
				t.Fatalf("apply %s: %d %s", s.orderNo, st, body)
			}
		}
		o := apiGet(t, g, "L4")
		if o.OrderNo != "L4" || o.OrgCode != "BANK01" || o.Qycode != "QY4" || o.Xmcode != "XM-1" || o.Bdcode != "BD-1" ||
			o.Status != "processing" || o.Bzjmoney.String() != "100000.00" || o.CreatedAt == 0 {
			t.Errorf("GET answered %+v", o)
		}

		list := func(t *testing.T, query string) ([]string, string) {
			t.Helper()
			st, body := g.API(t, http.MethodGet, "/v1/guarantees?"+query, nil)
			page := apiDecode[struct {
				Items      []apiOrder `json:"items"`
				NextCursor string     `json:"next_cursor"`
			}](t, apiWant(t, st, body, http.StatusOK))
			var nos []string
			for _, o := range page.Items {
				nos = append(nos, o.OrderNo)
			}
			return nos, page.NextCursor
		}
		for _, c := range []struct {
			name, query string
			want        []string
		}{
			{"all, newest first", "", []string{"L6", "L5", "L4", "L3", "L2", "L1"}},
			{"by orgcode", "orgcode=BANK02", []string{"L5", "L2"}},
			{"by lot", "xmcode=XM-1&bdcode=BD-1", []string{"L6", "L4", "L2", "L1"}},
			{"by bidder", "qycode=QY3", []string{"L3"}},
			{"by status", "status=apply_rejected", []string{"L5"}},
			{"combined", "orgcode=BANK01&bdcode=BD-2&status=processing", []string{"L3"}},
			{"nothing matches", "xmcode=XM-9", nil},
		} {
			t.Run(c.name, func(t *testing.T) {
				got, next := list(t, c.query)
				if !slices.Equal(got, c.want) || next != "" {
					t.Errorf("got %v (next %q), want %v", got, next, c.want)
				}
			})
		}

		t.Run("paging while orders arrive", func(t *testing.T) {
			p1, next := list(t, "limit=2")
			if !slices.Equal(p1, []string{"L6", "L5"}) || next == "" {
				t.Fatalf("page 1: %v next %q", p1, next)
			}
			// A new order arrives between pages: it shifts nothing.
			apiProcessing(t, g, a, "L7", "QY7", "BD-1")
			p2, next := list(t, "limit=2&cursor="+url.QueryEscape(next))
			if !slices.Equal(p2, []string{"L4", "L3"}) || next == "" {
				t.Fatalf("page 2: %v next %q", p2, next)
			}
			// The last page, full as it is, has no cursor to an empty one.
			p3, next := list(t, "limit=2&cursor="+url.QueryEscape(next))
			if !slices.Equal(p3, []string{"L2", "L1"}) || next != "" {
				t.Fatalf("page 3: %v next %q", p3, next)
			}
			// The newcomer is first on a fresh first page; filters and the
			// cursor combine.
			if p, _ := list(t, "limit=2"); p[0] != "L7" {
				t.Errorf("fresh page: %v", p)
			}
			f1, next := list(t, "orgcode=BANK01&limit=2")
			f2, _ := list(t, "orgcode=BANK01&limit=2&cursor="+url.QueryEscape(next))
			if !slices.Equal(append(f1, f2...), []string{"L7", "L6", "L4", "L3"}) {
				t.Errorf("filtered pages %v then %v", f1, f2)
			}
		})

		for _, c := range []struct{ query, field string }{
			{"status=lost", "status"},
			{"limit=abc", "limit"},
			{"limit=-1", "limit"},
			{"limit=501", "limit"},
			{"cursor=%21%21", "cursor"},
			{"cursor=-5", "cursor"},
		} {
			t.Run("refused "+c.query, func(t *testing.T) {
				st, body := g.API(t, http.MethodGet, "/v1/guarantees?"+c.query, nil)
				apiWantError(t, st, body, http.StatusBadRequest, "invalid", c.field)
			})
		}
	})
}

func TestAPIRefresh(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 300*time.Millisecond)
		g := apiStart(t, driver, in)
		apiProcessing(t, g, in, "R1", "QY1", "BD-1")
		in.set(epApply, stubAnswer{Mode: stubHang})
		st, body := apiApply(t, g, apiApplication("BANK01", "R2", "QY2", "XM-1", "BD-1"))
		apiWant(t, st, body, http.StatusAccepted)

		cases := []struct {
			name            string
			orderNo         string
			answer          stubAnswer
			wantStatus      int
			wantCode        string
			wantOrder       string
			wantGuaranteeNo string
			wantCalls       int
		}{
			{"unknown order", "NOSUCH", stubAnswer{}, 404, "not_found", "", "", 0},
			{"no queryurl yet", "R2", stubAnswer{}, 409, "conflict", "applying", "", 0},
			{"still processing", "R1", stubAnswer{}, 200, "", "processing", "", 1},
			{"institution refuses", "R1", stubAnswer{Mode: stubRefuse, Errcode: "E9", Msg: "查询失败"}, 502, "institution", "processing", "", 1},
			{"institution hangs", "R1", stubAnswer{Mode: stubHang}, 502, "institution", "processing", "", 1},
			{"issued with bhno", "R1", stubAnswer{Data: map[string]any{"status": "1", "describe": "已出函",
				"dealtime": time.Now().UnixMilli(), "bhno": "BH-R1"}}, 200, "", "issued", "BH-R1", 1},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				in.set(epQuery, c.answer)
				before := in.calls(epQuery)
				st, body := g.API(t, http.MethodPost, "/v1/guarantees/"+c.orderNo+"/refresh", nil)
				if c.wantCode != "" {
					apiWantError(t, st, body, c.wantStatus, c.wantCode, "")
				} else {
					o := apiDecode[apiOrder](t, apiWant(t, st, body, c.wantStatus))
					if o.Status != c.wantOrder || o.Bhno != c.wantGuaranteeNo {
						t.Errorf("answered %s bhno %q, want %s %q", o.Status, o.Bhno, c.wantOrder, c.wantGuaranteeNo)
					}
				}
				if n := in.calls(epQuery) - before; n < c.wantCalls || c.wantCalls == 0 && n != 0 {
					t.Errorf("%d queries, want %d", n, c.wantCalls)
				}
				if c.wantCalls > 0 {
					if got := in.last(t, epQuery)["orderno"]; got != c.orderNo {
						t.Errorf("queryurl got orderno %v", got)
					}
				}
				if c.wantOrder != "" {
					if o := apiGet(t, g, c.orderNo); o.Status != c.wantOrder {
						t.Errorf("stored %s, want %s", o.Status, c.wantOrder)
					}
				}
			})
		}
	})
}

func TestAPIFile(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 300*time.Millisecond)
		g := apiStart(t, driver, in)

		notified := stubPDF("notified", 40<<10)
		apiProcessing(t, g, in, "F1", "QY1", "BD-1")
		apiNotify(t, g, "BANK01", "F1", "BH-F1", notified) // issued with its PDF
		apiProcessing(t, g, in, "F2", "QY2", "BD-1")
		apiNotify(t, g, "BANK01", "F2", "BH-F2", nil) // issued, the PDF to be pulled
		apiProcessing(t, g, in, "F3", "QY3", "BD-1")
		in.set(epQuery, stubAnswer{Data: map[string]any{"status": 1, "describe": "已出函"}})
		st, body := g.API(t, http.MethodPost, "/v1/guarantees/F3/refresh", nil) // issued, bhno unknown
		if o := apiDecode[apiOrder](t, apiWant(t, st, body, http.StatusOK)); o.Status != "issued" || o.Bhno != "" {
			t.Fatalf("F3 is %s bhno %q", o.Status, o.Bhno)
		}
		apiProcessing(t, g, in, "F4", "QY4", "BD-1") // processing
		apiProcessing(t, g, in, "F5", "QY5", "BD-1")
		apiNotify(t, g, "BANK01", "F5", "BH-F5", nil) // issued, the pull fails

		get := func(orderNo string, header map[string]string) (*http.Response, []byte) {
			req, _ := http.NewRequest(http.MethodGet, g.URL+"/v1/guarantees/"+orderNo+"/file", nil)
			req.Header.Set("Authorization", "Bearer "+handlertest.Token)
			for k, v := range header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, b
		}
		wantPDF := func(t *testing.T, orderNo string, pdf []byte) {
			t.Helper()
			resp, b := get(orderNo, nil)
			apiWant(t, resp.StatusCode, b, http.StatusOK)
			sum := sha256.Sum256(pdf)
			etag := `"` + hex.EncodeToString(sum[:]) + `"`
			if string(b) != string(pdf) {
				t.Errorf("%d bytes, not the %d of the PDF", len(b), len(pdf))
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/pdf" {
				t.Errorf("Content-Type %q", ct)
			}
			if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(pdf)) {
				t.Errorf("Content-Length %q, want %d", cl, len(pdf))
			}
			if got := resp.Header.Get("ETag"); got != etag {
				t.Errorf("ETag %s, want %s", got, etag)
			}
			for _, inm := range []string{etag, `"other", ` + etag, "*"} {
				resp, b = get(orderNo, map[string]string{"If-None-Match": inm})
				if resp.StatusCode != http.StatusNotModified || len(b) != 0 {
					t.Errorf("If-None-Match %s: %d with %d bytes", inm, resp.StatusCode, len(b))
				}
			}
			resp, _ = get(orderNo, map[string]string{"If-None-Match": `"other"`})
			if resp.StatusCode != http.StatusOK {
				t.Errorf("If-None-Match of another file: %d", resp.StatusCode)
			}
			if o := apiGet(t, g, orderNo); !o.File.Stored || o.File.Size != int64(len(pdf)) || `"`+o.File.Sha256+`"` != etag {
				t.Errorf("order's file %+v", o.File)
			}
		}

		t.Run("stored", func(t *testing.T) {
			wantPDF(t, "F1", notified)
			if n := in.calls(epPull); n != 0 {
				t.Errorf("%d pulls of a stored file", n)
			}
		})
		t.Run("issued, pulled now", func(t *testing.T) {
			if o := apiGet(t, g, "F2"); o.File.Stored {
				t.Fatal("F2's file is stored already")
			}
			wantPDF(t, "F2", in.PDF)
			if n := in.calls(epPull); n != 1 {
				t.Errorf("%d pulls, want 1 (the file is stored after the first)", n)
			}
			if got := in.last(t, epPull)["baohanno"]; got != "BH-F2" {
				t.Errorf("pullurl got baohanno %v", got)
			}
		})
		for _, c := range []struct {
			name, orderNo string
			answer        stubAnswer
			status        int
			code          string
		}{
			{"issued without bhno", "F3", stubAnswer{}, 409, "conflict"},
			{"processing", "F4", stubAnswer{}, 409, "conflict"},
			{"unknown order", "NOSUCH", stubAnswer{}, 404, "not_found"},
			{"pull refused", "F5", stubAnswer{Mode: stubRefuse, Errcode: "E7", Msg: "文件未生成"}, 502, "institution"},
			{"pull hangs", "F5", stubAnswer{Mode: stubHang}, 502, "institution"},
			{"pull answers no PDF", "F5", stubAnswer{Data: map[string]any{"file": "bm90IGEgcGRm"}}, 502, "institution"},
		} {
			t.Run(c.name, func(t *testing.T) {
				in.set(epPull, c.answer)
				resp, b := get(c.orderNo, nil)
				apiWantError(t, resp.StatusCode, b, c.status, c.code, "")
				if c.orderNo != "NOSUCH" {
					if o := apiGet(t, g, c.orderNo); o.File.Stored {
						t.Errorf("a file is stored for %s", c.orderNo)
					}
				}
			})
		}
	})
}

func TestAPICancel(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 300*time.Millisecond)
		g := apiStart(t, driver, in)

		issued := func(orderNo string) {
			apiProcessing(t, g, in, orderNo, "QY"+orderNo, "BD-1")
			apiNotify(t, g, "BANK01", orderNo, "BH-"+orderNo, stubPDF(orderNo, 1<<10))
		}
		issued("C1")
		issued("C2")
		issued("C3")
		in.set(epApply, stubAnswer{Data: map[string]any{"continueurl": in.URL + "/c", "queryurl": in.URL + "/order/query",
			"pullurl": in.URL + "/order/pull"}})
		issued("C4") // the institution gave no cancelurl
		in.set(epApply, stubAnswer{})
		apiProcessing(t, g, in, "C5", "QYC5", "BD-1")

		if o := apiGet(t, g, "C4"); o.Cancellable {
			t.Error("an order without cancelurl says it is cancellable")
		}
		if o := apiGet(t, g, "C1"); !o.Cancellable {
			t.Error("an issued order with cancelurl says it is not cancellable")
		}
		cases := []struct {
			name, orderNo string
			answer        stubAnswer
			status        int
			code          string
			msg           string
			after         string
			calls         int
		}{
			{"unknown order", "NOSUCH", stubAnswer{}, 404, "not_found", "", "", 0},
			{"not issued", "C5", stubAnswer{}, 409, "conflict", "", "processing", 0},
			{"no cancelurl", "C4", stubAnswer{}, 409, "conflict", "cancelurl", "issued", 0},
			{"refused", "C2", stubAnswer{Mode: stubRefuse, Errcode: "E5", Msg: "保函已生效不可注销"}, 502, "institution", "保函已生效不可注销", "issued", 1},
			{"no answer", "C3", stubAnswer{Mode: stubHang}, 502, "institution", "", "issued", 1},
			{"accepted", "C1", stubAnswer{}, 202, "", "", "cancelling", 1},
			{"already cancelling", "C1", stubAnswer{}, 409, "conflict", "", "cancelling", 0},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				in.set(epCancel, c.answer)
				before := in.calls(epCancel)
				st, body := g.API(t, http.MethodPost, "/v1/guarantees/"+c.orderNo+"/cancel", nil)
				if c.code != "" {
					e := apiWantError(t, st, body, c.status, c.code, "")
					if !strings.Contains(e.Error.Message, c.msg) {
						t.Errorf("message %q lacks %q", e.Error.Message, c.msg)
					}
				} else if o := apiDecode[apiOrder](t, apiWant(t, st, body, c.status)); o.Status != c.after {
					t.Errorf("answered %s, want %s", o.Status, c.after)
				}
				if n := in.calls(epCancel) - before; n != c.calls {
					t.Errorf("%d cancel calls, want %d", n, c.calls)
				}
				if c.calls > 0 {
					if got := in.last(t, epCancel)["baohanno"]; got != "BH-"+c.orderNo {
						t.Errorf("cancelurl got baohanno %v, want the bhno", got)
					}
				}
				if c.after != "" {
					if o := apiGet(t, g, c.orderNo); o.Status != c.after {
						t.Errorf("stored %s, want %s", o.Status, c.after)
					}
				}
			})
		}
		// The release callback ends it.
		if st, r := g.Callback(t, "BANK01", "release", map[string]any{"bhno": "BH-C1", "state": "1"}); st != 200 || r.Stat != 1 {
			t.Fatalf("release: %d %+v", st, r)
		}
		if o := apiGet(t, g, "C1"); o.Status != "cancelled" {
			t.Errorf("after release C1 is %s", o.Status)
		}
	})
}

func TestAPIVerify(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 0)
		g := apiStart(t, driver, in)
		pdf1, pdf2 := stubPDF("one", 2<<10), stubPDF("two", 2<<10)
		for i, pdf := range [][]byte{pdf1, pdf2} {
			no := fmt.Sprintf("VF%d", i+1)
			apiProcessing(t, g, in, no, "QY"+no, "BD-1")
			apiNotify(t, g, "BANK01", no, "BH-"+no, pdf)
		}
		// VF2 is surrendered (退保): its file no longer stands.
		if st, r := g.Callback(t, "BANK01", "release", map[string]any{"bhno": "BH-VF2", "state": "0"}); st != 200 || r.Stat != 1 {
			t.Fatalf("release: %d %+v", st, r)
		}
		sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

		type verification struct {
			Match   bool   `json:"match"`
			Sha256  string `json:"sha256"`
			OrderNo string `json:"orderno"`
			Bhno    string `json:"bhno"`
			Status  string `json:"status"`
			Valid   bool   `json:"valid"`
		}
		cases := []struct {
			name string
			body any
			want verification
		}{
			{"the PDF of an issued guarantee", pdf1, verification{true, sum(pdf1), "VF1", "BH-VF1", "issued", true}},
			{"its sha256", map[string]string{"sha256": sum(pdf1)}, verification{true, sum(pdf1), "VF1", "BH-VF1", "issued", true}},
			{"its sha256 in capitals", map[string]string{"sha256": strings.ToUpper(sum(pdf1))},
				verification{true, sum(pdf1), "VF1", "BH-VF1", "issued", true}},
			{"a surrendered guarantee", pdf2, verification{true, sum(pdf2), "VF2", "BH-VF2", "surrendered", false}},
			{"a PDF we never received", stubPDF("forged", 2<<10), verification{Sha256: sum(stubPDF("forged", 2<<10))}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				st, body := g.API(t, http.MethodPost, "/v1/verify", c.body)
				if got := apiDecode[verification](t, apiWant(t, st, body, http.StatusOK)); got != c.want {
					t.Errorf("got %+v, want %+v", got, c.want)
				}
			})
		}
		for _, bad := range []any{[]byte("hello"), map[string]string{"sha256": "abc"}, map[string]string{}, []byte("")} {
			st, body := g.API(t, http.MethodPost, "/v1/verify", bad)
			apiWantError(t, st, body, http.StatusBadRequest, "invalid", "sha256")
		}
	})
}

func TestAPIEvents(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 0)
		// A few milliseconds per call, as over any real network: a call then
		// has a moment of its own between what caused it and what followed.
		for _, ep := range []string{epApply, epQuery, epPull, epCancel} {
			in.set(ep, stubAnswer{Delay: 3 * time.Millisecond})
		}
		g := apiStart(t, driver, in)

		apiProcessing(t, g, in, "E1", "QY1", "BD-1")
		st, r := g.Callback(t, "BANK01", "paystate", map[string]any{"orderno": "E1", "paymoney": "150.00",
			"paytime": time.Now().UnixMilli(), "type": "1", "paybankname": "某某建设有限公司", "paybankno": "6222020200000000001"})
		if st != 200 || r.Stat != 1 {
			t.Fatalf("paystate: %d %+v", st, r)
		}
		apiNotify(t, g, "BANK01", "E1", "BH-E1", nil)
		st, body := g.API(t, http.MethodGet, "/v1/guarantees/E1/file", nil)
		apiWant(t, st, body, http.StatusOK)
		st, body = g.API(t, http.MethodPost, "/v1/guarantees/E1/cancel", nil)
		apiWant(t, st, body, http.StatusAccepted)
		st, r = g.Callback(t, "BANK01", "release", map[string]any{"bhno": "BH-E1", "state": "1"})
		if st != 200 || r.Stat != 1 {
			t.Fatalf("release: %d %+v", st, r)
		}

		st, body = g.API(t, http.MethodGet, "/v1/guarantees/E1/events", nil)
		evs := apiDecode[struct {
			Items []struct {
				At     int64  `json:"at"`
				Source string `json:"source"`
				Name   string `json:"name"`
				From   string `json:"from_status"`
				To     string `json:"to_status"`
				Result string `json:"outcome"`
			} `json:"items"`
		}](t, apiWant(t, st, body, http.StatusOK)).Items
		var got []string
		for i, e := range evs {
			if i > 0 && e.At < evs[i-1].At {
				t.Errorf("item %d at %d is older than item %d at %d", i, e.At, i-1, evs[i-1].At)
			}
			switch e.Source {
			case "event":
				if e.To != "" {
					got = append(got, "status "+e.From+">"+e.To)
				}
			case "call":
				got = append(got, "call "+e.Name+" "+e.Result)
			case "callback":
				got = append(got, "callback "+e.Name+" "+e.Result)
			}
		}
		want := []string{
			"status >applying", "call apply ok", "status applying>processing",
			"callback paystate accepted",
			"callback applynotify accepted", "status processing>issued",
			"call pull ok",
			"call cancel ok", "status issued>cancelling",
			"callback release accepted", "status cancelling>cancelled",
		}
		if !slices.Equal(got, want) {
			t.Errorf("history\n got %q\nwant %q", got, want)
		}
		if evs[0].At < time.Now().Add(-time.Minute).UnixMilli() || evs[0].At > time.Now().UnixMilli() {
			t.Errorf("first item at %d: not epoch milliseconds of now", evs[0].At)
		}

		st, body = g.API(t, http.MethodGet, "/v1/guarantees/NOSUCH/events", nil)
		apiWantError(t, st, body, http.StatusNotFound, "not_found", "")
	})
}
