package service

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// TestBatcherGroups: requests that arrive while the leaders are busy
// queue up and are taken together; every job is run exactly once, by at
// most payLeaders batches at a time, none over the maximum size.
func TestBatcherGroups(t *testing.T) {
	const jobs, maxBatch = 200, 16
	var running, peak, batches atomic.Int64
	var mu sync.Mutex
	ran := map[*batchJob]int{}
	b := newBatcher(batchLeaders, maxBatch, func(batch []*batchJob) {
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
			j := &batchJob{key: fmt.Sprint(i)}
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
	if peak.Load() > batchLeaders {
		t.Errorf("%d batches ran at once, at most %d may", peak.Load(), batchLeaders)
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
	a3, a4     string // BANKA's: issued as BH-A3, and applying
}

func newBatchFixture(t *testing.T, store *model.Store) *batchFixture {
	t.Helper()
	f := &batchFixture{store: store, bankA: &Institution{OrgCode: "BANKA"}, bankB: &Institution{OrgCode: "BANKB"},
		a1: "PB-A1", a2: "PB-A2", b1: "PB-B1", a3: "PB-A3", a4: "PB-A4"}
	log := logrus.New()
	log.SetOutput(io.Discard)
	f.svc = New(store, NewRegistry([]*Institution{f.bankA, f.bankB}), SettingsFrom(config.Default()), log, nil)
	now := time.Now().UTC()
	err := store.InTx(context.Background(), func(tx model.Queries) error {
		bh := sql.NullString{String: "BH-A3", Valid: true}
		for i, o := range []struct {
			no, org string
			st      model.Status
			bhno    sql.NullString
		}{{f.a1, "BANKA", model.StatusProcessing, sql.NullString{}}, {f.a2, "BANKA", model.StatusProcessing, sql.NullString{}},
			{f.b1, "BANKB", model.StatusProcessing, sql.NullString{}}, {f.a3, "BANKA", model.StatusIssued, bh},
			{f.a4, "BANKA", model.StatusApplying, sql.NullString{}}} {
			err := tx.CreateOrder(&model.Order{OrderNo: o.no, OrgCode: o.org, Status: o.st, GuaranteeNo: o.bhno, RequestHash: "h",
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
func (f *batchFixture) job(inst *Institution, orderNo, kind, amount string, at time.Time) *batchJob {
	p := wire.PayState{OrderNo: orderNo, Kind: kind, Amount: decimal.RequireFromString(amount), PaidAt: at.UTC()}
	if kind == wire.PayKindPay {
		p.PayerName, p.PayerAccount = "某某建设有限公司", "6222000011112222"
	}
	key := dedupKey(KindPayState, inst.OrgCode, p.OrderNo, p.Kind, fmt.Sprint(p.PaidAt.UnixMilli()), p.Amount.StringFixed(2))
	return &batchJob{ctx: context.Background(), in: CallbackInput{Kind: KindPayState, Body: []byte(`{"data":"` + key + `"}`), RemoteAddr: "127.0.0.1:1"},
		out: &receipt{inst: inst, result: model.CallbackAccepted}, pay: p, key: key, done: make(chan struct{})}
}

// counts are the rows of every table a paystate writes.
func (f *batchFixture) counts(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := f.store.InTx(context.Background(), func(tx model.Queries) error {
		for _, no := range []string{f.a1, f.a2, f.b1, f.a3, f.a4, "PB-NONE"} {
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
			if _, err := tx.FileInfo(no); err == nil {
				out["files"]++
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
// the amounts summed across the batch; it records repeats (of a stored
// callback, and within the batch) as duplicates, changing nothing else;
// and it hands back an unknown order and another institution's order,
// which then get the answers they would get alone; and so does a payment
// that would leave its order's amounts unsound: a refund above what was
// paid (the batch's own earlier payments counted), a sum beyond
// DECIMAL(18,2).
func TestPayBatchCommit(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		f := newBatchFixture(t, store)
		t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
		stored := f.job(f.bankA, f.a1, wire.PayKindPay, "100.00", t0)
		if err := f.svc.payOne(stored.ctx, stored.in, stored.out, stored.pay, stored.key); err != nil {
			t.Fatal(err)
		}
		before := f.counts(t)

		jobs := []*batchJob{
			f.job(f.bankA, f.a1, wire.PayKindPay, "10.00", t0.Add(time.Second)),                 // new
			f.job(f.bankA, f.a1, wire.PayKindPay, "5.50", t0.Add(2*time.Second)),                // new, same order
			f.job(f.bankA, f.a2, wire.PayKindPay, "2.00", t0),                                   // new, another order
			f.job(f.bankA, f.a2, wire.PayKindRefund, "1.25", t0.Add(3*time.Second)),             // new refund of it, within what the batch paid
			f.job(f.bankA, f.a1, wire.PayKindPay, "100.00", t0),                                 // the stored one again
			f.job(f.bankA, f.a2, wire.PayKindRefund, "1.25", t0.Add(3*time.Second)),             // the refund again, in the batch
			f.job(f.bankA, "PB-NONE", wire.PayKindPay, "1.00", t0),                              // unknown order
			f.job(f.bankA, f.b1, wire.PayKindPay, "2.00", t0),                                   // BANKB's order
			f.job(f.bankB, f.b1, wire.PayKindPay, "3.00", t0.Add(4*time.Second)),                // new, BANKB's own
			f.job(f.bankA, f.a2, wire.PayKindRefund, "5.00", t0.Add(5*time.Second)),             // refunds would pass the 2.00 paid
			f.job(f.bankA, f.a1, wire.PayKindPay, "9999999999999999.00", t0.Add(6*time.Second)), // the sum would pass DECIMAL(18,2)
		}
		wantTaken := []bool{true, true, true, true, true, true, false, false, true, false, false}
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
		for table, want := range map[string]int64{"payments": 5, "callbacks": 7, "events": 5} {
			if d := after[table] - before[table]; d != want {
				t.Errorf("%s: %d new rows, want %d", table, d, want)
			}
		}
		for i, want := range []string{model.CallbackAccepted, model.CallbackAccepted, model.CallbackAccepted,
			model.CallbackAccepted, model.CallbackDuplicate, model.CallbackDuplicate} {
			if got := jobs[i].out.result; got != want {
				t.Errorf("job %d: result %s, want %s", i, got, want)
			}
		}
		decimalIs(t, "a1 paid", f.order(t, f.a1).PaidAmount, "115.50")
		decimalIs(t, "a2 paid", f.order(t, f.a2).PaidAmount, "2.00")
		decimalIs(t, "a2 refunded", f.order(t, f.a2).RefundedAmount, "1.25")
		decimalIs(t, "b1 paid", f.order(t, f.b1).PaidAmount, "3.00")

		// Every payment points at the callback of its own dedup key, and
		// its event at the same callback.
		for _, no := range []string{f.a1, f.a2, f.b1} {
			var pays []model.Payment
			var cbs []model.Callback
			var evs []model.Event
			err := store.InTx(context.Background(), func(tx model.Queries) (err error) {
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
				if !ok || c.DedupKey == nil || *c.DedupKey != p.DedupKey || c.OrderNo != no || c.Result != model.CallbackAccepted {
					t.Errorf("%s payment %s: callback %d is %+v", no, p.Amount, p.CallbackID, c)
				}
				if refs[p.CallbackID] != 1 {
					t.Errorf("%s payment %s: %d events point at its callback, want 1", no, p.Amount, refs[p.CallbackID])
				}
			}
		}

		// What was handed back gets the one-by-one answers: unknown
		// orders, a refund above the payments (naming the amounts), a sum
		// beyond DECIMAL(18,2) (naming paymoney).
		for i, want := range map[int]string{6: wire.CodeUnknown, 7: wire.CodeUnknown, 9: wire.CodeConflict, 10: wire.CodeBadParam} {
			j := jobs[i]
			err := f.svc.payOne(j.ctx, j.in, j.out, j.pay, j.key)
			if ce := (*callbackErr)(nil); !errors.As(err, &ce) || ce.code != want {
				t.Errorf("job %d alone: %v, want %s", i, err, want)
			}
		}
		if err := f.svc.payOne(jobs[9].ctx, jobs[9].in, jobs[9].out, jobs[9].pay, jobs[9].key); err == nil ||
			!strings.Contains(err.Error(), "5.00") || !strings.Contains(err.Error(), "6.25") || !strings.Contains(err.Error(), "2.00 paid") {
			t.Errorf("refund above the payments: %v, want the amounts named", err)
		}
		if err := f.svc.payOne(jobs[10].ctx, jobs[10].in, jobs[10].out, jobs[10].pay, jobs[10].key); err == nil ||
			!strings.Contains(err.Error(), "invalid parameter paymoney:") {
			t.Errorf("a sum beyond DECIMAL(18,2): %v, want paymoney named", err)
		}
		decimalIs(t, "a1 paid after the repeats", f.order(t, f.a1).PaidAmount, "115.50")
		decimalIs(t, "a2 refunded after the repeats", f.order(t, f.a2).RefundedAmount, "1.25")
	})
}

// TestPayBatchRollsBack: when a statement of the batch fails, here a
// payment whose dedup key the read of callbacks could not see, nothing of
// the batch is written and every callback goes back to its request as it
// came: a repeat the batch had recorded is not called a duplicate.
func TestPayBatchRollsBack(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		f := newBatchFixture(t, store)
		t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
		jobs := []*batchJob{
			f.job(f.bankA, f.a1, wire.PayKindPay, "10.00", t0),
			f.job(f.bankA, f.a2, wire.PayKindPay, "20.00", t0),
			f.job(f.bankA, f.a1, wire.PayKindPay, "30.00", t0.Add(time.Second)),
			f.job(f.bankA, f.a1, wire.PayKindPay, "10.00", t0), // the first again
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
			if j.handled || j.err != nil || j.out.result != model.CallbackAccepted {
				t.Errorf("job %d: handled %v err %v result %s, want handed back as it came", i, j.handled, j.err, j.out.result)
			}
		}
		if after := f.counts(t); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("rows before %v, after the rolled-back batch %v", before, after)
		}
		decimalIs(t, "a1 paid", f.order(t, f.a1).PaidAmount, "0")
		// Alone, the first and third are taken; the second meets the
		// index; the fourth repeats the first.
		for i, j := range jobs {
			err := f.svc.payOne(j.ctx, j.in, j.out, j.pay, j.key)
			var ce *callbackErr
			switch {
			case i == 1:
				if !errors.As(err, &ce) || ce.code != wire.CodeConflict {
					t.Errorf("job 1 alone: %v, want %s", err, wire.CodeConflict)
				}
			case err != nil:
				t.Errorf("job %d alone: %v", i, err)
			case i == 3 && j.out.result != model.CallbackDuplicate:
				t.Errorf("job 3 alone: result %s, want a duplicate", j.out.result)
			}
		}
		decimalIs(t, "a1 paid", f.order(t, f.a1).PaidAmount, "40.00")
	})
}

// notice makes the applynotify job of inst for orderNo as takeCallback
// would: state 1 issued (with a PDF unless noFile), 2 processing.
func (f *batchFixture) notice(inst *Institution, orderNo, state, bhno string, noFile bool) *batchJob {
	n := wire.ApplyNotify{OrderNo: orderNo, State: state, GuaranteeNo: bhno}
	fileSum := ""
	if state == wire.NotifyIssued {
		n.Remark = "出函成功"
		n.PremiumRate, n.Premium = decimal.RequireFromString("0.001500"), decimal.RequireFromString("150.00")
		n.IssuerName, n.IssuerAddress, n.IssuerPhone = "某某担保有限公司", "北京市", "010-12345678"
		n.IssuedAt = time.Date(2025, 3, 2, 9, 30, 0, 0, time.UTC)
		if noFile {
			n.Missing = []string{"bhfile"}
		} else {
			n.File = []byte("%PDF-1.4\n% letter of " + orderNo + "\n%%EOF\n")
			fileSum = fmt.Sprintf("%x", sha256.Sum256(n.File))
		}
	}
	key := dedupKey(KindApplyNotify, inst.OrgCode, n.OrderNo, n.State, n.GuaranteeNo, fileSum)
	return &batchJob{ctx: context.Background(), in: CallbackInput{Kind: KindApplyNotify, Body: []byte(`{"data":"` + key + `"}`), RemoteAddr: "127.0.0.1:1"},
		out: &receipt{inst: inst, result: model.CallbackAccepted, guaranteeNo: bhno}, notice: n, key: key, done: make(chan struct{})}
}

// trail is what an order's callbacks left, without IDs and clocks: the
// order's columns, its file, its events and its callbacks' results.
func (f *batchFixture) trail(t *testing.T, no string) string {
	t.Helper()
	var b strings.Builder
	err := f.store.InTx(context.Background(), func(tx model.Queries) error {
		o, err := tx.Order(no)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "order %s %s bhno=%s rate=%s premium=%s issuer=%s/%s/%s issued=%v remark=%q pending=%v due=%v attempts=%d flag=%q slot=%v\n",
			o.OrderNo, o.Status, o.GuaranteeNo.String, o.PremiumRate.Decimal.String(), o.Premium.Decimal.String(), o.IssuerName, o.IssuerAddress,
			o.IssuerPhone, o.IssuedAt, o.Remark, o.FilePending, o.NextCheckAt != nil, o.CheckAttempts, o.Flag, o.ActiveSlot != nil)
		if fi, err := tx.FileInfo(no); err == nil {
			fmt.Fprintf(&b, "file %s %s %d %s\n", fi.GuaranteeNo, fi.Sha256, fi.Size, fi.Source)
		}
		evs, err := tx.Events(no)
		if err != nil {
			return err
		}
		for _, e := range evs {
			fmt.Fprintf(&b, "event %s %s %s>%s %q ref=%v\n", e.Kind, e.Name, e.FromStatus, e.ToStatus, e.Detail, e.RefID != nil)
		}
		cbs, err := tx.Callbacks(no)
		if err != nil {
			return err
		}
		for _, c := range cbs {
			fmt.Fprintf(&b, "callback %s %s %s %s key=%v\n", c.Kind, c.Result, c.Errcode, c.GuaranteeNo, c.DedupKey != nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestNoticeBatchCommit: a batch of applynotify callbacks leaves exactly
// what the one-by-one path leaves, callback for callback: it takes the
// plain ones (issued from processing and from applying with the PDF,
// processing again) and records a repeat as a duplicate; it hands back the
// rest, which then get the one-by-one answers: a bhno given to two orders
// (200002), a late notice, another institution's order (200001), an
// issuance without its PDF (accepted, marked for the pull).
func TestNoticeBatchCommit(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		batched := newBatchFixture(t, store)
		alone := newBatchFixture(t, modeltest.Open(t, store.Driver(), os.Getenv))
		jobs := func(f *batchFixture) []*batchJob {
			return []*batchJob{
				f.notice(f.bankA, f.a1, wire.NotifyIssued, "BH-A1", false), // processing → issued
				f.notice(f.bankA, f.a4, wire.NotifyIssued, "BH-A4", false), // applying → issued
				f.notice(f.bankA, f.a2, wire.NotifyProcessing, "", false),  // processing, still
				f.notice(f.bankA, f.a2, wire.NotifyIssued, "BH-A1", false), // another order's bhno
				f.notice(f.bankA, f.a3, wire.NotifyProcessing, "", false),  // late: a3 is issued
				f.notice(f.bankA, f.a1, wire.NotifyIssued, "BH-A1", false), // the first again
				f.notice(f.bankA, f.b1, wire.NotifyIssued, "BH-B1", false), // BANKB's order
				f.notice(f.bankB, f.b1, wire.NotifyIssued, "BH-B1", true),  // no PDF: marked for the pull
			}
		}
		answers := []string{model.CallbackAccepted, model.CallbackAccepted, model.CallbackAccepted, wire.CodeConflict,
			model.CallbackLate, model.CallbackDuplicate, wire.CodeUnknown, model.CallbackAccepted}
		wantTaken := []bool{true, true, true, false, false, true, false, false}
		check := func(how string, i int, j *batchJob, err error) {
			t.Helper()
			switch w := answers[i]; w {
			case model.CallbackAccepted, model.CallbackLate, model.CallbackDuplicate:
				if err != nil || j.out.result != w {
					t.Errorf("job %d %s: %v, result %s, want %s", i, how, err, j.out.result, w)
				}
			default:
				if ce := (*callbackErr)(nil); !errors.As(err, &ce) || ce.code != w {
					t.Errorf("job %d %s: %v, want %s", i, how, err, w)
				}
			}
		}

		before := batched.counts(t)
		bj := jobs(batched)
		batched.svc.noticeBatch(bj)
		for i, j := range bj {
			if j.handled != wantTaken[i] {
				t.Errorf("job %d: handled %v, want %v", i, j.handled, wantTaken[i])
			}
			if j.handled {
				check("in the batch", i, j, j.err)
			}
		}
		after := batched.counts(t)
		if after["callbacks"]-before["callbacks"] != 4 || after["files"]-before["files"] != 2 || after["events"]-before["events"] != 2 {
			t.Errorf("rows before %v, after %v: want 4 callbacks, 2 files, 2 events more", before, after)
		}
		// What was handed back goes one by one; in the other fixture,
		// every callback does, in the same order.
		for i, j := range bj {
			if !j.handled {
				check("handed back", i, j, batched.svc.notifyOne(j.ctx, j.in, j.out, j.notice, j.key))
			}
		}
		for i, j := range jobs(alone) {
			check("one by one", i, j, alone.svc.notifyOne(j.ctx, j.in, j.out, j.notice, j.key))
		}
		for _, no := range []string{batched.a1, batched.a2, batched.a3, batched.a4, batched.b1} {
			if b, a := batched.trail(t, no), alone.trail(t, no); b != a {
				t.Errorf("%s batched:\n%s\none by one:\n%s", no, b, a)
			}
		}
		if tr := batched.trail(t, batched.a1); !strings.Contains(tr, "order PB-A1 issued bhno=BH-A1") ||
			!strings.Contains(tr, "event status applynotify processing>issued") || !strings.Contains(tr, "pending=false") ||
			!strings.Contains(tr, "callback applynotify duplicate") {
			t.Errorf("a1 after its issuance and the repeat:\n%s", tr)
		}
	})
}

func decimalIs(t *testing.T, what string, got decimal.Decimal, want string) {
	t.Helper()
	if !got.Equal(decimal.RequireFromString(want)) {
		t.Errorf("%s: %s, want %s", what, got, want)
	}
}

// TestBatcherSurvivesPanic: a batch that panics hands its other jobs back
// instead of leaving their requests waiting, frees its leader's slot, and
// the panic reaches the leader's own request.
func TestBatcherSurvivesPanic(t *testing.T) {
	s := &Service{log: logrus.New(), metrics: nopMetrics{}}
	s.log.(*logrus.Logger).SetOutput(io.Discard)
	release := make(chan struct{})
	var calls atomic.Int64
	b := newBatcher(1, defaultCallbackBatch, func(jobs []*batchJob) {
		s.runBatch("test", jobs, func(*batchJob) error {
			if calls.Add(1) == 1 {
				<-release // hold the only slot while the others queue
			}
			return nil
		}, func(context.Context, []*batchJob) ([]*batchJob, error) { panic("boom") })
	})
	first := &batchJob{ctx: context.Background(), key: "first"}
	firstDone := make(chan bool)
	go func() { handled, _ := b.do(first); firstDone <- handled }()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The leader holds the slot: these queue, then go as one batch that
	// panics in the hands of whichever of them leads it.
	const n = 5
	results := make(chan string, n)
	for i := range n {
		go func() {
			defer func() {
				if r := recover(); r != nil {
					results <- "panic"
				}
			}()
			handled, err := b.do(&batchJob{ctx: context.Background(), key: fmt.Sprint(i)})
			results <- fmt.Sprintf("handled=%v err=%v", handled, err)
		}()
	}
	for {
		b.mu.Lock()
		queued := len(b.queue)
		b.mu.Unlock()
		if queued == n {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if !<-firstDone {
		t.Error("the first job, alone, was not handled")
	}
	got := map[string]int{}
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case r := <-results:
			got[r]++
		case <-timeout:
			t.Fatalf("requests still waiting after the panic; answers so far %v", got)
		}
	}
	if got["panic"] != 1 || got["handled=false err=<nil>"] != n-1 {
		t.Errorf("answers %v: want the leader's panic and %d handed back", got, n-1)
	}
	// The slot is free again.
	if handled, _ := b.do(&batchJob{ctx: context.Background(), key: "after"}); !handled {
		t.Error("a job after the panic was not handled")
	}
}

// batchCounter counts the group commits a service reports.
type batchCounter struct {
	nopMetrics
	mu      sync.Mutex
	batches map[string]int
}

func (c *batchCounter) CallbackBatch(kind, result string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches[kind+"/"+result]++
}

// TestCallbackBatchSetting: server.callback_batch 1 takes every callback
// in its own transaction; the default groups a burst. Either way a burst of
// distinct payments of one order all count.
func TestCallbackBatchSetting(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		for _, size := range []int{1, config.Default().Server.CallbackBatch} {
			t.Run(fmt.Sprintf("callback_batch=%d", size), func(t *testing.T) {
				f := newBatchFixture(t, modeltest.Open(t, store.Driver(), os.Getenv))
				counter := &batchCounter{batches: map[string]int{}}
				set := SettingsFrom(config.Default())
				set.CallbackBatch = size
				f.svc = New(f.store, f.svc.insts, set, f.svc.log, counter)
				const n = 40
				t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
				var wg sync.WaitGroup
				gate := make(chan struct{})
				errs := make(chan error, n)
				for i := range n {
					j := f.job(f.bankA, f.a1, wire.PayKindPay, "1.25", t0.Add(time.Duration(i)*time.Second))
					wg.Go(func() {
						<-gate
						errs <- f.svc.payState(j.ctx, j.in, j.out, j.pay)
					})
				}
				close(gate)
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				decimalIs(t, "paid", f.order(t, f.a1).PaidAmount, "50.00")
				counter.mu.Lock()
				defer counter.mu.Unlock()
				if size == 1 && len(counter.batches) != 0 {
					t.Errorf("group commit off, yet batches %v", counter.batches)
				}
				if size > 1 && counter.batches["paystate/committed"] == 0 {
					t.Errorf("%d paystates at once made no batch: %v", n, counter.batches)
				}
			})
		}
	})
}
