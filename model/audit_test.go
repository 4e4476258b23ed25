package model_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// TestOrderTrails: the trail of a run's orders counts their payments (and
// whether each is tied to its accepted callback), files and callback rows,
// and nothing of another run's.
func TestOrderTrails(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		ctx := context.Background()
		st := s.With(ctx)
		for _, o := range []*model.Order{newOrder("RUNA-1", "QA1"), newOrder("RUNA-2", "QA2"), newOrder("RUNB-1", "QB1")} {
			if err := st.CreateOrder(o); err != nil {
				t.Fatal(err)
			}
		}
		key := strings.Repeat("a", 64)
		cb := &model.Callback{OrgCode: "BANK01", Kind: "paystate", OrderNo: "RUNA-1", DedupKey: &key, BodySha256: key,
			Result: model.CallbackAccepted, Errcode: "000000"}
		dup := &model.Callback{OrgCode: "BANK01", Kind: "paystate", OrderNo: "RUNA-1", BodySha256: key,
			Result: model.CallbackDuplicate, Errcode: "000000"}
		for _, c := range []*model.Callback{cb, dup} {
			if err := st.InsertCallback(c); err != nil {
				t.Fatal(err)
			}
		}
		pay := func(orderNo, key string, callbackID int64) *model.Payment {
			return &model.Payment{DedupKey: key, OrderNo: orderNo, OrgCode: "BANK01", Kind: "1",
				Amount: decimal.RequireFromString("200.00"), PaidAt: time.Now(), CallbackID: callbackID}
		}
		for _, p := range []*model.Payment{pay("RUNA-1", key, cb.ID), pay("RUNA-1", strings.Repeat("b", 64), cb.ID),
			pay("RUNB-1", strings.Repeat("c", 64), cb.ID)} {
			if err := st.InsertPayment(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.InsertFile(&model.GuaranteeFile{OrderNo: "RUNA-2", GuaranteeNo: "BH1", Sha256: key, Size: 5,
			Source: "notify", Content: []byte("%PDF-")}); err != nil {
			t.Fatal(err)
		}

		trails, err := st.OrderTrails("RUNA-")
		if err != nil {
			t.Fatal(err)
		}
		a1, a2 := trails["RUNA-1"], trails["RUNA-2"]
		switch {
		case len(trails) != 2 || a1 == nil || a2 == nil:
			t.Fatalf("trails %v, want RUNA-1 and RUNA-2 only", trails)
		case a1.Payments != 2 || a1.PaymentKeys != 2 || a1.PaymentsUnlinked != 1:
			// The second payment names the callback of another key.
			t.Errorf("RUNA-1 payments %+v, want 2 of 2 keys, 1 unlinked", *a1)
		case a1.Callbacks["paystate/accepted"] != 1 || a1.Callbacks["paystate/duplicate"] != 1 || a1.Files != 0:
			t.Errorf("RUNA-1 callbacks %v, files %d", a1.Callbacks, a1.Files)
		case a2.Files != 1 || a2.Payments != 0 || a2.Status != model.StatusApplying:
			t.Errorf("RUNA-2 %+v", *a2)
		}

		for _, bad := range []string{"", "RUN_", "RUN%", `RUN\`} {
			if _, err := st.OrderTrails(bad); err == nil {
				t.Errorf("OrderTrails(%q): no error; a LIKE wildcard would widen the match", bad)
			}
		}
	})
}
