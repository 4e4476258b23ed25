package model_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

func newOrder(no, applicant string) *model.Order {
	at := time.Date(2026, 12, 1, 9, 30, 0, 0, time.FixedZone("CST", 8*3600))
	return &model.Order{
		OrderNo: no, OrgCode: "BANK01", Status: model.StatusApplying, RequestHash: "h",
		ApplicantName: "某某建设有限公司", ApplicantCode: applicant, DepositAmount: decimal.RequireFromString("10000.10"),
		ProjectName: "项目", ProjectCode: "XM1", LotName: "标段", LotCode: "BD1",
		OpeningAt: at, DeadlineAt: at, TendererName: "t", TendererCode: "tc",
		AccountBank: "b", AccountName: "n", AccountNo: "6222000011112222", ContactName: "c",
		ContactPhone: "13800005678", ContactEmail: "a@b.cn",
	}
}

func TestMigrateTwice(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		applied, err := s.Migrate(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != 0 {
			t.Fatalf("second migrate applied %v, want nothing", applied)
		}
	})
}

func TestOrderUniqueness(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		if err := s.CreateOrder(newOrder("A1", "Q1")); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			order *model.Order
			want  error
		}{
			{"same orderno", newOrder("A1", "Q2"), model.ErrDuplicate},
			{"same bidder and lot while active", newOrder("A2", "Q1"), model.ErrActiveOrder},
		}
		for _, tc := range tests {
			if err := s.CreateOrder(tc.order); !errors.Is(err, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			}
		}
		// Once the first order leaves the active states, the bidder may apply again.
		moved, err := s.MoveOrder("A1", []model.Status{model.StatusApplying}, model.StatusApplyRejected, model.OrderChange{})
		if err != nil || !moved {
			t.Fatalf("move: %v %v", moved, err)
		}
		if err := s.CreateOrder(newOrder("A3", "Q1")); err != nil {
			t.Fatalf("re-apply after rejection: %v", err)
		}
		// Two inactive orders of the same bidder and lot coexist (NULL slots).
		s.MoveOrder("A3", []model.Status{model.StatusApplying}, model.StatusApplyRejected, model.OrderChange{})
		if err := s.CreateOrder(newOrder("A4", "Q1")); err != nil {
			t.Fatalf("third order: %v", err)
		}
	})
}

func TestMoveOrderIsConditional(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		if err := s.CreateOrder(newOrder("M1", "Q1")); err != nil {
			t.Fatal(err)
		}
		// 10 writers race to move applying -> processing: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.MoveOrder("M1", []model.Status{model.StatusApplying}, model.StatusProcessing, model.OrderChange{}.Links(model.Links{ContinueURL: "https://x"}))
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d writers moved the order, want 1", wins)
		}
		o, err := s.Order("M1")
		if err != nil {
			t.Fatal(err)
		}
		if o.Status != model.StatusProcessing || o.ContinueURL != "https://x" {
			t.Fatalf("order = %s %q", o.Status, o.ContinueURL)
		}
	})
}

func TestMoneyAndTimesRoundTrip(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		o := newOrder("T1", "Q1")
		o.DepositAmount = decimal.RequireFromString("9999999999999999.99")
		if err := s.CreateOrder(o); err != nil {
			t.Fatal(err)
		}
		got, err := s.Order("T1")
		if err != nil {
			t.Fatal(err)
		}
		if !got.DepositAmount.Equal(o.DepositAmount) {
			t.Errorf("deposit = %s, want %s", got.DepositAmount, o.DepositAmount)
		}
		if !got.OpeningAt.Equal(o.OpeningAt) || got.OpeningAt.Location() != time.UTC {
			t.Errorf("opening = %v, want %v in UTC", got.OpeningAt, o.OpeningAt)
		}
		// Sums are exact: ten payments of 0.10 make 1.00, not 0.9999999.
		for i := 0; i < 10; i++ {
			p := &model.Payment{DedupKey: fmt.Sprint("k", i), OrderNo: "T1", OrgCode: "BANK01", Kind: "1",
				Amount: decimal.RequireFromString("0.10"), PaidAt: time.Now().UTC(), CallbackID: 1}
			if err := s.InsertPayment(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecomputePaid("T1"); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Order("T1")
		if got.PaidAmount.String() != "1" {
			t.Errorf("paid = %s, want exactly 1", got.PaidAmount)
		}
	})
}

func TestCallbackDedup(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		key := "dedup-1"
		rec := func(k *string) error {
			return s.InsertCallback(&model.Callback{Kind: "paystate", OrderNo: "O1", DedupKey: k, BodySha256: "x",
				Result: model.CallbackAccepted, Errcode: "000000"})
		}
		if err := rec(&key); err != nil {
			t.Fatal(err)
		}
		if err := rec(&key); !errors.Is(err, model.ErrDuplicate) {
			t.Fatalf("second insert: %v, want ErrDuplicate", err)
		}
		// Rejected and duplicate callbacks carry no key and never collide.
		for i := 0; i < 3; i++ {
			if err := rec(nil); err != nil {
				t.Fatalf("audit record %d: %v", i, err)
			}
		}
		// A group commit looks keys up with their order (the index leads
		// with it, docs/decisions.md §44) and reads its rows' IDs back so.
		two := "dedup-2"
		taken, err := s.TakenCallbackKeys([]model.DedupRef{{OrderNo: "O1", Key: key}, {OrderNo: "O1", Key: two}})
		if err != nil || len(taken) != 1 || !taken[key] {
			t.Fatalf("taken keys: %v (%v), want only %s", taken, err, key)
		}
		batch := func() []*model.Callback {
			return []*model.Callback{
				{Kind: "paystate", OrderNo: "O1", DedupKey: &two, BodySha256: "x", Result: model.CallbackAccepted, Errcode: "000000"},
				{Kind: "paystate", OrderNo: "O1", BodySha256: "x", Result: model.CallbackDuplicate, Errcode: "000000"},
			}
		}
		cbs := batch()
		if err := s.InsertCallbacks(cbs); err != nil || cbs[0].ID == 0 {
			t.Fatalf("batch: %v, id %d", err, cbs[0].ID)
		}
		if got, err := s.Callback(cbs[0].ID); err != nil || got.DedupKey == nil || *got.DedupKey != two {
			t.Errorf("batch row handed out id %d, which is %+v (%v)", cbs[0].ID, got, err)
		}
		if err := s.InsertCallbacks(batch()); !errors.Is(err, model.ErrDuplicate) {
			t.Fatalf("batch again: %v, want ErrDuplicate", err)
		}
	})
}

func TestListOrdersCursor(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		for i := 0; i < 5; i++ {
			s.CreateOrder(newOrder(fmt.Sprint("L", i), fmt.Sprint("Q", i)))
		}
		page1, _ := s.ListOrders(model.OrderFilter{Limit: 2})
		// A new order arriving between pages must not shift the next page.
		s.CreateOrder(newOrder("L9", "Q9"))
		page2, _ := s.ListOrders(model.OrderFilter{Limit: 2, BeforeID: page1[len(page1)-1].ID})
		var got []string
		for _, o := range append(page1, page2...) {
			got = append(got, o.OrderNo)
		}
		if fmt.Sprint(got) != "[L4 L3 L2 L1]" {
			t.Fatalf("pages = %v", got)
		}
	})
}

func TestFilesBySha(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		f := &model.GuaranteeFile{OrderNo: "F1", GuaranteeNo: "BH1", Sha256: "abc", Size: 3, Source: "notify", Content: []byte("%PD")}
		if err := s.InsertFile(f); err != nil {
			t.Fatal(err)
		}
		if err := s.InsertFile(&model.GuaranteeFile{OrderNo: "F1", Sha256: "x", Content: []byte("x"), Source: "pull"}); !errors.Is(err, model.ErrDuplicate) {
			t.Fatalf("second file: %v", err)
		}
		fs, err := s.FilesBySha256("abc")
		if err != nil || len(fs) != 1 || fs[0].Content != nil || fs[0].Size != 3 {
			t.Fatalf("by sha: %+v %v", fs, err)
		}
		full, _ := s.File("F1")
		if string(full.Content) != "%PD" {
			t.Fatalf("content = %q", full.Content)
		}
	})
}
