package handler_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
)

// A delivery refused by the open circuit breaker sent nothing: it must not
// count as an attempt, or a down institution would burn through the
// ~24-hour redelivery schedule without being called once.
func TestDeliveryNotCountedWhileBreakerOpen(t *testing.T) {
	var calls atomic.Int64
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer inst.Close()
	spec := handlertest.DefaultInstitution("DOWN")
	spec.BaseURL, spec.BreakerFailures, spec.BreakerOpenFor = inst.URL, 1, time.Hour
	g := handlertest.Start(t, handlertest.Options{Institutions: []handlertest.Institution{spec}})

	at := time.Now().Add(48 * time.Hour)
	o := &model.Order{OrderNo: "BRK-1", OrgCode: "DOWN", Status: model.StatusProcessing, RequestHash: "h",
		ApplicantName: "n", ApplicantCode: "Q", DepositAmount: decimal.NewFromInt(1000), ProjectName: "p",
		ProjectCode: "XM", LotName: "l", LotCode: "BD", OpeningAt: at, DeadlineAt: at, TendererName: "t",
		TendererCode: "tc", AccountBank: "b", AccountName: "a", AccountNo: "1", ContactName: "c",
		ContactPhone: "1", ContactEmail: "e"}
	if err := g.Store.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	push := map[string]any{"xmname": "p", "xmcode": "XM", "bdname": "l", "bdcode": "BD", "kbttime": at.UnixMilli(), "state": "1"}

	type view struct {
		Deliveries []struct {
			Attempts  int    `json:"attempts"`
			Status    string `json:"status"`
			LastError string `json:"last_error"`
		} `json:"deliveries"`
	}
	deliveries := func() view {
		code, body := g.API(t, "POST", "/v1/projects/state", push)
		if code != http.StatusAccepted {
			t.Fatalf("push = %d %s", code, body)
		}
		var v view
		json.Unmarshal(body, &v)
		if len(v.Deliveries) != 1 {
			t.Fatalf("deliveries = %s", body)
		}
		return v
	}
	// The first push reaches the institution (with its retries), fails and
	// opens the breaker: one attempt.
	first := deliveries()
	sent := calls.Load()
	if first.Deliveries[0].Attempts != 1 || sent == 0 {
		t.Fatalf("first push: attempts %d, institution called %d times", first.Deliveries[0].Attempts, sent)
	}
	// The second finds the breaker open: nothing sent, no attempt counted.
	second := deliveries()
	d := second.Deliveries[0]
	if d.Attempts != 0 || d.Status != model.DeliveryPending || !strings.Contains(d.LastError, "circuit_open") {
		t.Fatalf("second push while open: %+v", d)
	}
	if calls.Load() != sent {
		t.Fatalf("the institution was called while the breaker was open (%d calls, was %d)", calls.Load(), sent)
	}
}
