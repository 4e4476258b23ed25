package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// TestPayBatcherGroups: requests that arrive while the leaders are busy
// queue up and are taken together; every job is run exactly once, by at
// most payLeaders batches at a time, none over the maximum size.
func TestPayBatcherGroups(t *testing.T) {
	const jobs, maxBatch = 200, 16
	var running, peak, batches atomic.Int64
	var mu sync.Mutex
	ran := map[*payJob]int{}
	b := newPayBatcher(payLeaders, maxBatch, func(batch []*payJob) {
		if n := running.Add(1); n > peak.Load() {
			peak.Store(n)
		}
		batches.Add(1)
		if len(batch) > maxBatch {
			t.Errorf("batch of %d, max %d", len(batch), maxBatch)
		}
		time.Sleep(5 * time.Millisecond) // the transaction
		mu.Lock()
		for _, j := range batch {
			ran[j]++
			j.handled, j.err = true, fmt.Errorf("answer %s", j.key)
		}
		mu.Unlock()
		running.Add(-1)
		for _, j := range batch {
			close(j.done)
		}
	})
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			j := &payJob{key: fmt.Sprint(i)}
			handled, err := b.do(j)
			if !handled || err == nil || err.Error() != "answer "+j.key {
				t.Errorf("job %d: handled %v, err %v", i, handled, err)
			}
		}()
	}
	close(gate)
	wg.Wait()
	if len(ran) != jobs {
		t.Fatalf("%d jobs ran, want %d", len(ran), jobs)
	}
	for j, n := range ran {
		if n != 1 {
			t.Errorf("job %s ran %d times", j.key, n)
		}
	}
	if peak.Load() > payLeaders {
		t.Errorf("%d batches ran at once, at most %d may", peak.Load(), payLeaders)
	}
	// 200 arrivals over 5 ms batches: one at a time would be 200 batches.
	if n := batches.Load(); n > jobs/4 {
		t.Errorf("%d batches for %d jobs: the queue did not group them", n, jobs)
	}
	t.Logf("%d jobs in %d batches", jobs, batches.Load())
}

// batchFixture is a service over a real store with two institutions and
// three orders: two of BANKA, one of BANKB.
type batchFixture struct {
	svc        *Service
	store      *model.Store
	bankA      *Institution
	bankB      *Institution
	a1, a2, b1 string
}

func newBatchFixture(t *testing.T, store *model.Store) *batchFixture {
	t.Helper()
	f := &batchFixture{store: store, bankA: &Institution{OrgCode: "BANKA"}, bankB: &Institution{OrgCode: "BANKB"},
		a1: "PB-A1", a2: "PB-A2", b1: "PB-B1"}
	log := logrus.New()
	log.SetOutput(io.Discard)
	f.svc = New(store, NewRegistry([]*Institution{f.bankA, f.bankB}), Settings{}, log, nil)
	now := time.Now().UTC()
	err := store.InTx(context.Background(), func(tx model.Tx) error {
		for i, o := range []struct{ no, org string }{{f.a1, "BANKA"}, {f.a2, "BANKA"}, {f.b1, "BANKB"}} {
			err := tx.CreateOrder(&model.Order{OrderNo: o.no, OrgCode: o.org, Status: model.StatusProcessing, RequestHash: "h",
				ApplicantName: "某某建设有限公司", ApplicantCode: fmt.Sprintf("91110000MA%08d", i),
				DepositAmount: decimal.RequireFromString("10000.00"), ProjectName: "道路工程", ProjectCode: "XM1",
				LotName: "一标段", LotCode: "BD1", OpeningAt: now.Add(72 * time.Hour), DeadlineAt: now.Add(48 * time.Hour),
				TendererName: "某某局", TendererCode: "12110000000000000X", AccountBank: "某银行", AccountName: "某某建设有限公司",
				AccountNo: "6222000011112222", ContactName: "张三", ContactPhone: "13800005678", ContactEmail: "a@b.cn"})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// job makes the paystate job of inst for orderNo as takeCallback would.
func (f *batchFixture) job(inst *Institution, orderNo, kind, amount string, at time.Time) *payJob {
	p := wire.PayState{OrderNo: orderNo, Kind: kind, Amount: decimal.RequireFromString(amount), PaidAt: at.UTC()}
	if kind == wire.PayKindPay {
		p.PayerName, p.PayerAccount = "某某建设有限公司", "6222000011112222"
	}
	key := dedupKey(KindPayState, inst.OrgCode, p.OrderNo, p.Kind, fmt.Sprint(p.PaidAt.UnixMilli()), p.Amount.StringFixed(2))
	return &payJob{ctx: context.Background(), in: CallbackInput{Kind: KindPayState, Body: []byte(`{"data":"` + key + `"}`), RemoteAddr: "127.0.0.1:1"},
		out: &outcome{inst: inst, result: model.OutcomeAccepted}, p: p, key: key, done: make(chan struct{})}
}

// counts are the rows of every table a paystate writes.
func (f *batchFixture) counts(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := f.store.InTx(context.Background(), func(tx model.Tx) error {
		for _, no := range []string{f.a1, f.a2, f.b1, "PB-NONE"} {
			pays, err := tx.Payments(no)
			if err != nil {
				return err
			}
			cbs, err := tx.Callbacks(no)
			if err != nil {
				return err
			}
			evs, err := tx.Events(no)
			if err != nil {
				return err
			}
			out["payments"] += int64(len(pays))
			out["callbacks"] += int64(len(cbs))
			out["events"] += int64(len(evs))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *batchFixture) order(t *testing.T, no string) *model.Order {
	t.Helper()
	o, err := f.store.With(context.Background()).Order(no)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestPayBatchCommit: one batch commits the plain new payments together,
// with each callback, payment and event tied as on the one-by-one path and
// the amounts summed across the batch; it hands back the callbacks that
// path must answer (a repeat of a stored callback, a repeat within the
// batch, an unknown order, another institution's order), which then get
// the answers they would get alone.
func TestPayBatchCommit(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		f := newBatchFixture(t, store)
		t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
		stored := f.job(f.bankA, f.a1, wire.PayKindPay, "100.00", t0)
		if err := f.svc.payOne(stored.ctx, stored.in, stored.out, stored.p, stored.key); err != nil {
			t.Fatal(err)
		}
		before := f.counts(t)

		jobs := []*payJob{
			f.job(f.bankA, f.a1, wire.PayKindPay, "10.00", t0.Add(time.Second)),     // new
			f.job(f.bankA, f.a1, wire.PayKindPay, "5.50", t0.Add(2*time.Second)),    // new, same order
			f.job(f.bankA, f.a2, wire.PayKindRefund, "1.25", t0.Add(3*time.Second)), // new refund, another order
			f.job(f.bankA, f.a1, wire.PayKindPay, "100.00", t0),                     // the stored one again
			f.job(f.bankA, f.a2, wire.PayKindRefund, "1.25", t0.Add(3*time.Second)), // the third again, in the batch
			f.job(f.bankA, "PB-NONE", wire.PayKindPay, "1.00", t0),                  // unknown order
			f.job(f.bankA, f.b1, wire.PayKindPay, "2.00", t0),                       // BANKB's order
			f.job(f.bankB, f.b1, wire.PayKindPay, "3.00", t0.Add(4*time.Second)),    // new, BANKB's own
		}
		wantTaken := []bool{true, true, true, false, false, false, false, true}
		f.svc.payBatch(jobs)
		for i, j := range jobs {
			select {
			case <-j.done:
			default:
				t.Fatalf("job %d not done", i)
			}
			if j.handled != wantTaken[i] || j.err != nil {
				t.Errorf("job %d: handled %v err %v, want handled %v", i, j.handled, j.err, wantTaken[i])
			}
		}
		after := f.counts(t)
		for _, table := range []string{"payments", "callbacks", "events"} {
			if d := after[table] - before[table]; d != 4 {
				t.Errorf("%s: %d new rows, want 4", table, d)
			}
		}
		decimalIs(t, "a1 paid", f.order(t, f.a1).PaidAmount, "115.50")
		decimalIs(t, "a2 refunded", f.order(t, f.a2).RefundedAmount, "1.25")
		decimalIs(t, "b1 paid", f.order(t, f.b1).PaidAmount, "3.00")

		// Every payment points at the callback of its own dedup key, and
		// its event at the same callback.
		for _, no := range []string{f.a1, f.a2, f.b1} {
			var pays []model.Payment
			var cbs []model.Callback
			var evs []model.Event
			err := store.InTx(context.Background(), func(tx model.Tx) (err error) {
				if pays, err = tx.Payments(no); err != nil {
					return err
				}
				if cbs, err = tx.Callbacks(no); err != nil {
					return err
				}
				evs, err = tx.Events(no)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			byID := map[int64]model.Callback{}
			for _, c := range cbs {
				byID[c.ID] = c
			}
			refs := map[int64]int{}
			for _, e := range evs {
				if e.RefID != nil {
					refs[*e.RefID]++
				}
			}
			for _, p := range pays {
				c, ok := byID[p.CallbackID]
				if !ok || c.DedupKey == nil || *c.DedupKey != p.DedupKey || c.OrderNo != no || c.Outcome != model.OutcomeAccepted {
					t.Errorf("%s payment %s: callback %d is %+v", no, p.Amount, p.CallbackID, c)
				}
				if refs[p.CallbackID] != 1 {
					t.Errorf("%s payment %s: %d events point at its callback, want 1", no, p.Amount, refs[p.CallbackID])
				}
			}
		}

		// What was handed back gets the one-by-one answers.
		wantAlone := map[int]string{3: model.OutcomeDuplicate, 4: model.OutcomeDuplicate, 5: wire.CodeUnknown, 6: wire.CodeUnknown}
		for i, want := range wantAlone {
			j := jobs[i]
			err := f.svc.payOne(j.ctx, j.in, j.out, j.p, j.key)
			var ce *callbackErr
			switch {
			case want == model.OutcomeDuplicate:
				if err != nil || j.out.result != model.OutcomeDuplicate {
					t.Errorf("job %d alone: %v, outcome %s, want a duplicate", i, err, j.out.result)
				}
			case !errors.As(err, &ce) || ce.code != want:
				t.Errorf("job %d alone: %v, want %s", i, err, want)
			}
		}
		decimalIs(t, "a1 paid after the repeats", f.order(t, f.a1).PaidAmount, "115.50")
		decimalIs(t, "a2 refunded after the repeats", f.order(t, f.a2).RefundedAmount, "1.25")
	})
}

// TestPayBatchRollsBack: when a statement of the batch fails, here a
// payment whose dedup key the read of callbacks could not see, nothing of
// the batch is written and every callback goes back to its request.
func TestPayBatchRollsBack(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		f := newBatchFixture(t, store)
		t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
		jobs := []*payJob{
			f.job(f.bankA, f.a1, wire.PayKindPay, "10.00", t0),
			f.job(f.bankA, f.a2, wire.PayKindPay, "20.00", t0),
			f.job(f.bankA, f.a1, wire.PayKindPay, "30.00", t0.Add(time.Second)),
		}
		// A payment row under the second job's key, without its callback.
		err := store.With(context.Background()).InsertPayment(&model.Payment{DedupKey: jobs[1].key, OrderNo: f.a2, OrgCode: "BANKA",
			Kind: wire.PayKindPay, Amount: decimal.RequireFromString("20.00"), PaidAt: t0})
		if err != nil {
			t.Fatal(err)
		}
		before := f.counts(t)
		f.svc.payBatch(jobs)
		for i, j := range jobs {
			if j.handled || j.err != nil {
				t.Errorf("job %d: handled %v err %v, want handed back", i, j.handled, j.err)
			}
		}
		if after := f.counts(t); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("rows before %v, after the rolled-back batch %v", before, after)
		}
		decimalIs(t, "a1 paid", f.order(t, f.a1).PaidAmount, "0")
		// Alone, the first and third are taken; the second meets the index.
		for i, j := range jobs {
			err := f.svc.payOne(j.ctx, j.in, j.out, j.p, j.key)
			var ce *callbackErr
			if i == 1 {
				if !errors.As(err, &ce) || ce.code != wire.CodeConflict {
					t.Errorf("job 1 alone: %v, want %s", err, wire.CodeConflict)
				}
			} else if err != nil {
				t.Errorf("job %d alone: %v", i, err)
			}
		}
		decimalIs(t, "a1 paid", f.order(t, f.a1).PaidAmount, "40.00")
	})
}

func decimalIs(t *testing.T, what string, got decimal.Decimal, want string) {
	t.Helper()
	if !got.Equal(decimal.RequireFromString(want)) {
		t.Errorf("%s: %s, want %s", what, got, want)
	}
}
