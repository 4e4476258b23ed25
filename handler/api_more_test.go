package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/service"
)

type apiQuote struct {
	OrgCode  string      `json:"orgcode"`
	Name     string      `json:"name"`
	Money    json.Number `json:"money"`
	Describe string      `json:"describe"`
	Error    string      `json:"error"`
}

// apiDisable marks an institution disabled, as config's disabled: true does.
func apiDisable(t testing.TB, g *handlertest.Gateway, org string) {
	t.Helper()
	for _, in := range g.Service.Institutions().All() {
		if in.OrgCode == org {
			in.Disabled = true
			return
		}
	}
	t.Fatalf("no institution %s", org)
}

func TestAPIQuotes(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		const hangTimeout = 300 * time.Millisecond
		money, describe := newStubInst(t, "Q1", 0), newStubInst(t, "Q2", 0)
		hang, refuse := newStubInst(t, "Q3", hangTimeout), newStubInst(t, "Q4", 0)
		disabled, garbage := newStubInst(t, "Q5", 0), newStubInst(t, "Q6", 0)
		money.set(epCost, stubAnswer{Data: map[string]any{"money": json.Number("150.5")}})
		describe.set(epCost, stubAnswer{Data: map[string]any{"describe": "费率千分之一点五，最低200元"}})
		hang.set(epCost, stubAnswer{Mode: stubHang})
		hang.Spec.Retries = 2 // retries too must fit in the institution's timeout
		refuse.set(epCost, stubAnswer{Mode: stubRefuse, Errcode: "E2", Msg: "暂不支持该金额"})
		garbage.set(epCost, stubAnswer{Mode: stubGarbage})
		g := apiStart(t, driver, money, describe, hang, refuse, disabled, garbage)
		apiDisable(t, g, "Q5")

		start := time.Now()
		st, body := g.API(t, http.MethodGet, "/v1/quotes?bzjmoney=100000", nil)
		took := time.Since(start)
		items := apiDecode[struct{ Items []apiQuote }](t, apiWant(t, st, body, http.StatusOK)).Items

		// Every institution is asked at once: the answer waits for the
		// hanging one's timeout, not for the sum of everybody's time.
		t.Logf("quotes answered in %v with Q3 hanging (timeout %v, 2 retries)", took, hangTimeout)
		if margin := 500 * time.Millisecond; took > hangTimeout+margin {
			t.Errorf("quotes took %v, want at most %v + %v", took, hangTimeout, margin)
		}
		var orgs []string
		for _, q := range items {
			orgs = append(orgs, q.OrgCode)
		}
		if want := []string{"Q1", "Q2", "Q3", "Q4", "Q6"}; !slices.Equal(orgs, want) {
			t.Fatalf("items of %v, want %v in configuration order", orgs, want)
		}
		check := func(q apiQuote, money, describe string, errParts ...string) {
			t.Helper()
			if q.Money.String() != money || q.Describe != describe || q.Name != q.OrgCode+" bank" {
				t.Errorf("%s: %+v", q.OrgCode, q)
			}
			if len(errParts) == 0 && q.Error != "" {
				t.Errorf("%s: error %q", q.OrgCode, q.Error)
			}
			for _, p := range errParts {
				if !strings.Contains(q.Error, p) {
					t.Errorf("%s: error %q lacks %q", q.OrgCode, q.Error, p)
				}
			}
		}
		check(items[0], "150.50", "")
		check(items[1], "", "费率千分之一点五，最低200元")
		check(items[2], "", "", "Q3")
		check(items[3], "", "", "E2", "暂不支持该金额")
		check(items[4], "", "", "Q6")
		if n := disabled.calls(epCost); n != 0 {
			t.Errorf("a disabled institution was asked %d times", n)
		}
		if p := money.last(t, epCost); p["bzjmoney"] != json.Number("100000.00") || p["orgcode"] != "Q1" {
			t.Errorf("cost parameters %v", p)
		}

		for _, q := range []string{"", "bzjmoney=", "bzjmoney=abc", "bzjmoney=1.234", "bzjmoney=-5", "bzjmoney=1e5"} {
			st, body := g.API(t, http.MethodGet, "/v1/quotes?"+q, nil)
			apiWantError(t, st, body, http.StatusBadRequest, "invalid", "bzjmoney")
		}
	})
}

func TestAPICost(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in, off := newStubInst(t, "BANK01", 300*time.Millisecond), newStubInst(t, "BANK02", 0)
		g := apiStart(t, driver, in, off)
		apiDisable(t, g, "BANK02")

		cases := []struct {
			name     string
			body     any
			answer   stubAnswer
			status   int
			code     string
			field    string
			money    string
			describe string
		}{
			{name: "money", body: map[string]any{"orgcode": "BANK01", "bzjmoney": 100000}, status: 200, money: "150.00"},
			{name: "money as a string", body: map[string]any{"orgcode": "BANK01", "bzjmoney": "2000.5"}, status: 200, money: "150.00"},
			{name: "describe", body: map[string]any{"orgcode": "BANK01", "bzjmoney": 100000},
				answer: stubAnswer{Data: map[string]any{"describe": "请联系客户经理"}}, status: 200, describe: "请联系客户经理"},
			{name: "refused", body: map[string]any{"orgcode": "BANK01", "bzjmoney": 100000},
				answer: stubAnswer{Mode: stubRefuse, Errcode: "E3", Msg: "金额超限"}, status: 502, code: "institution"},
			{name: "hangs", body: map[string]any{"orgcode": "BANK01", "bzjmoney": 100000},
				answer: stubAnswer{Mode: stubHang}, status: 502, code: "institution"},
			{name: "unknown orgcode", body: map[string]any{"orgcode": "NOBANK", "bzjmoney": 100000}, status: 400, code: "invalid", field: "orgcode"},
			{name: "disabled orgcode", body: map[string]any{"orgcode": "BANK02", "bzjmoney": 100000}, status: 400, code: "invalid", field: "orgcode"},
			{name: "money with three decimals", body: map[string]any{"orgcode": "BANK01", "bzjmoney": json.Number("1.005")}, status: 400, code: "invalid", field: "bzjmoney"},
			{name: "money missing", body: map[string]any{"orgcode": "BANK01"}, status: 400, code: "invalid", field: "bzjmoney"},
			{name: "not JSON", body: []byte("orgcode=BANK01"), status: 400, code: "invalid", field: "body"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				in.set(epCost, c.answer)
				st, body := g.API(t, http.MethodPost, "/v1/cost", c.body)
				if c.code != "" {
					apiWantError(t, st, body, c.status, c.code, c.field)
					return
				}
				q := apiDecode[apiQuote](t, apiWant(t, st, body, c.status))
				if q.OrgCode != "BANK01" || q.Money.String() != c.money || q.Describe != c.describe || q.Error != "" {
					t.Errorf("answered %+v", q)
				}
			})
		}
		if n := off.calls(epCost); n != 0 {
			t.Errorf("the disabled institution was asked %d times", n)
		}
	})
}

type apiPush struct {
	ID          int64  `json:"id"`
	ProjectCode string `json:"xmcode"`
	LotCode     string `json:"bdcode"`
	State       string `json:"state"`
	Deliveries  []struct {
		ID            int64  `json:"id"`
		OrgCode       string `json:"orgcode"`
		Status        string `json:"status"`
		Attempts      int    `json:"attempts"`
		NextAttemptAt int64  `json:"next_attempt_at"`
		LastError     string `json:"last_error"`
	} `json:"deliveries"`
}

func apiProjectState(xmcode, bdcode string, state any) map[string]any {
	return map[string]any{"xmname": "某市政道路工程", "xmcode": xmcode, "bdname": "第一标段", "bdcode": bdcode,
		"kbttime": time.Now().Add(time.Hour).UnixMilli(), "state": state}
}

func TestAPIProjectState(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		ok, failing := newStubInst(t, "P1", 0), newStubInst(t, "P2", 0)
		other, none := newStubInst(t, "P3", 0), newStubInst(t, "P4", 0)
		g := apiStart(t, driver, ok, failing, other, none)
		apiProcessing(t, g, ok, "PS1", "QY1", "BD-1")
		apiProcessing(t, g, failing, "PS2", "QY2", "BD-1")
		apiProcessing(t, g, other, "PS3", "QY3", "BD-2") // another lot of the project

		// Both institutions hold their answer until both requests are in:
		// deliveries tried one after the other would never both arrive.
		hold := make(chan struct{})
		ok.set(epXMState, stubAnswer{Hold: hold})
		failing.set(epXMState, stubAnswer{Mode: stubRefuse, Errcode: "E8", Msg: "系统维护", Hold: hold})

		push := apiProjectState("XM-1", "BD-1", "2")
		type answer struct {
			st   int
			body []byte
		}
		done := make(chan answer, 1)
		go func() {
			st, body := g.API(t, http.MethodPost, "/v1/projects/state", push)
			done <- answer{st, body}
		}()
		for deadline := time.Now().Add(time.Second); ok.calls(epXMState) == 0 || failing.calls(epXMState) == 0; {
			if time.Now().After(deadline) {
				n1, n2 := ok.calls(epXMState), failing.calls(epXMState)
				close(hold)
				<-done
				t.Fatalf("within 1s, P1 got %d and P2 %d xmstate calls: not tried at once", n1, n2)
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(hold)
		a := <-done
		p := apiDecode[apiPush](t, apiWant(t, a.st, a.body, http.StatusAccepted))
		check := func(p apiPush) {
			t.Helper()
			if p.ID == 0 || p.ProjectCode != "XM-1" || p.LotCode != "BD-1" || p.State != "2" || len(p.Deliveries) != 2 {
				t.Fatalf("push %+v", p)
			}
			d1, d2 := p.Deliveries[0], p.Deliveries[1]
			if d1.OrgCode != "P1" || d1.Status != "delivered" || d1.Attempts != 1 || d1.NextAttemptAt != 0 || d1.LastError != "" {
				t.Errorf("P1's delivery %+v", d1)
			}
			// The failure is left to the redelivery job: pending, its next
			// attempt planned, the cause kept.
			if d2.OrgCode != "P2" || d2.Status != "pending" || d2.Attempts != 1 || d2.NextAttemptAt <= time.Now().UnixMilli() ||
				!strings.Contains(d2.LastError, "E8") {
				t.Errorf("P2's delivery %+v", d2)
			}
		}
		check(p)
		st, body := g.API(t, http.MethodGet, fmt.Sprintf("/v1/projects/state/%d", p.ID), nil)
		check(apiDecode[apiPush](t, apiWant(t, st, body, http.StatusOK)))

		if n := other.calls(epXMState) + none.calls(epXMState); n != 0 {
			t.Errorf("institutions without an order of the lot got %d xmstate calls", n)
		}
		got := ok.last(t, epXMState)
		for _, k := range []string{"xmname", "xmcode", "bdname", "bdcode", "state"} {
			if fmt.Sprint(got[k]) != fmt.Sprint(push[k]) {
				t.Errorf("xmstate %s = %v, want %v", k, got[k], push[k])
			}
		}
		if fmt.Sprint(got["kbttime"]) != fmt.Sprint(push["kbttime"]) {
			t.Errorf("xmstate kbttime = %v, want %v", got["kbttime"], push["kbttime"])
		}

		t.Run("a lot without orders", func(t *testing.T) {
			st, body := g.API(t, http.MethodPost, "/v1/projects/state", apiProjectState("XM-9", "BD-9", 1))
			if p := apiDecode[apiPush](t, apiWant(t, st, body, http.StatusAccepted)); len(p.Deliveries) != 0 || p.State != "1" {
				t.Errorf("push %+v", p)
			}
		})
		for _, c := range []struct {
			name   string
			change map[string]any
			field  string
		}{
			{"state 5", map[string]any{"state": "5"}, "state"},
			{"state 0", map[string]any{"state": 0}, "state"},
			{"state missing", map[string]any{"state": nil}, "state"},
			{"xmcode missing", map[string]any{"xmcode": nil}, "xmcode"},
			{"bdname too long", map[string]any{"bdname": strings.Repeat("标", 257)}, "bdname"},
			{"kbttime not a time", map[string]any{"kbttime": "soon"}, "kbttime"},
		} {
			t.Run(c.name, func(t *testing.T) {
				body := apiProjectState("XM-1", "BD-1", "1")
				for k, v := range c.change {
					if v == nil {
						delete(body, k)
					} else {
						body[k] = v
					}
				}
				st, b := g.API(t, http.MethodPost, "/v1/projects/state", body)
				apiWantError(t, st, b, http.StatusBadRequest, "invalid", c.field)
			})
		}
		for _, id := range []string{"999999", "abc", "0"} {
			st, body := g.API(t, http.MethodGet, "/v1/projects/state/"+id, nil)
			apiWantError(t, st, body, http.StatusNotFound, "not_found", "")
		}
	})
}

func TestAPIRetryDelivery(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		ok, failing := newStubInst(t, "P1", 0), newStubInst(t, "P2", 0)
		failing.set(epXMState, stubAnswer{Mode: stub500})
		// One redelivery step: the delivery whose first attempt fails is
		// dead after the redelivery job's attempt.
		g := apiStartWith(t, handlertest.Options{Driver: driver, Configure: func(c *config.Config) {
			c.Jobs.RedeliveryBackoff = []time.Duration{time.Millisecond}
		}}, ok, failing)
		apiProcessing(t, g, ok, "RD1", "QY1", "BD-1")
		apiProcessing(t, g, failing, "RD2", "QY2", "BD-1")
		st, body := g.API(t, http.MethodPost, "/v1/projects/state", apiProjectState("XM-1", "BD-1", "1"))
		p := apiDecode[apiPush](t, apiWant(t, st, body, http.StatusAccepted))
		if len(p.Deliveries) != 2 || p.Deliveries[0].Status != "delivered" || p.Deliveries[1].Status != "pending" {
			t.Fatalf("deliveries %+v", p.Deliveries)
		}
		time.Sleep(5 * time.Millisecond) // the one step
		if _, err := g.Jobs().RunOnce(context.Background(), service.JobDeliverOutbox); err != nil {
			t.Fatal(err)
		}
		st, body = g.API(t, http.MethodGet, fmt.Sprintf("/v1/projects/state/%d", p.ID), nil)
		if p := apiDecode[apiPush](t, apiWant(t, st, body, http.StatusOK)); p.Deliveries[1].Status != "dead" {
			t.Fatalf("after the last attempt: %+v", p.Deliveries[1])
		}
		delivered, dead := p.Deliveries[0].ID, p.Deliveries[1].ID

		retry := func(id any) (int, []byte) {
			return g.API(t, http.MethodPost, fmt.Sprintf("/v1/deliveries/%v/retry", id), nil)
		}
		st, body = retry(dead)
		d := apiDecode[struct {
			ID       int64  `json:"id"`
			OrgCode  string `json:"orgcode"`
			Status   string `json:"status"`
			Attempts int    `json:"attempts"`
		}](t, apiWant(t, st, body, http.StatusAccepted))
		if d.ID != dead || d.OrgCode != "P2" || d.Status != "pending" || d.Attempts != 2 {
			t.Errorf("re-armed delivery %+v", d)
		}
		st, body = g.API(t, http.MethodGet, fmt.Sprintf("/v1/projects/state/%d", p.ID), nil)
		if p := apiDecode[apiPush](t, apiWant(t, st, body, http.StatusOK)); p.Deliveries[1].Status != "pending" ||
			p.Deliveries[1].NextAttemptAt == 0 || p.Deliveries[1].NextAttemptAt > time.Now().UnixMilli() {
			t.Errorf("after the retry: %+v", p.Deliveries[1])
		}
		for _, c := range []struct {
			name   string
			id     any
			status int
			code   string
		}{
			{"pending again", dead, 409, "conflict"},
			{"delivered", delivered, 409, "conflict"},
			{"unknown", 999999, 404, "not_found"},
			{"not a number", "x", 404, "not_found"},
		} {
			t.Run(c.name, func(t *testing.T) {
				st, body := retry(c.id)
				apiWantError(t, st, body, c.status, c.code, "")
			})
		}
	})
}

func TestAPIInstitutionsAndReconciliation(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		a, b := newStubInst(t, "BANK01", 0), newStubInst(t, "BANK02", 1500*time.Millisecond)
		b.Spec.AppSecret = "fedcba9876543210fedcba9876543210"
		g := apiStart(t, driver, a, b)
		apiDisable(t, g, "BANK02")

		st, body := g.API(t, http.MethodGet, "/v1/institutions", nil)
		apiWant(t, st, body, http.StatusOK)
		for _, secret := range []string{a.Spec.AppSecret, b.Spec.AppSecret, a.Spec.AppKey, b.Spec.AppKey} {
			if strings.Contains(string(body), secret) {
				t.Errorf("institutions answer shows a key or secret: %s", body)
			}
		}
		type inst struct {
			OrgCode string `json:"orgcode"`
			Name    string `json:"name"`
			Enabled bool   `json:"enabled"`
			Timeout string `json:"timeout"`
			Breaker string `json:"breaker"`
		}
		got := apiDecode[struct{ Items []inst }](t, body).Items
		want := []inst{{"BANK01", "BANK01 bank", true, "2s", "closed"}, {"BANK02", "BANK02 bank", false, "1.5s", "closed"}}
		if !slices.Equal(got, want) {
			t.Errorf("institutions %+v, want %+v", got, want)
		}

		for _, date := range []string{"yesterday", "2025-1-5", "2025-13-01", "2025-02-30", "20250301"} {
			st, body := g.API(t, http.MethodGet, "/v1/reconciliation?date="+date, nil)
			apiWantError(t, st, body, http.StatusBadRequest, "invalid", "date")
		}
		for _, q := range []string{"?date=2025-03-01", ""} {
			st, body := g.API(t, http.MethodGet, "/v1/reconciliation"+q, nil)
			r := apiDecode[struct {
				Date  string            `json:"date"`
				Items []json.RawMessage `json:"items"`
			}](t, apiWant(t, st, body, http.StatusOK))
			if r.Items == nil || len(r.Items) != 0 || r.Date == "" || !strings.Contains(string(body), `"items":[]`) {
				t.Errorf("reconciliation%s: %s", q, body)
			}
		}
	})
}

func TestAPIStorageDown(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in := newStubInst(t, "BANK01", 0)
		g := apiStart(t, driver, in)
		apiProcessing(t, g, in, "SD1", "QY1", "BD-1")
		g.Store.Close()
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, "/v1/guarantees/SD1", nil},
			{http.MethodGet, "/v1/guarantees", nil},
			{http.MethodGet, "/v1/guarantees/SD1/events", nil},
			{http.MethodGet, "/v1/guarantees/SD1/file", nil},
			{http.MethodPost, "/v1/guarantees", apiApplication("BANK01", "SD2", "QY2", "XM-1", "BD-1")},
			{http.MethodPost, "/v1/projects/state", apiProjectState("XM-1", "BD-1", "1")},
			{http.MethodPost, "/v1/verify", map[string]string{"sha256": strings.Repeat("a", 64)}},
			{http.MethodGet, "/v1/reconciliation?date=2025-03-01", nil},
		} {
			t.Run(c.method+" "+c.path, func(t *testing.T) {
				st, body := g.API(t, c.method, c.path, c.body)
				e := apiWantError(t, st, body, http.StatusServiceUnavailable, "unavailable", "")
				if strings.Contains(e.Error.Message, "sql") || strings.Contains(e.Error.Message, "closed") {
					t.Errorf("the cause leaks to the caller: %q", e.Error.Message)
				}
			})
		}
		if n := in.calls(epApply); n != 1 {
			t.Errorf("%d applies sent; an application that could not be stored must not be", n)
		}
	})
}
