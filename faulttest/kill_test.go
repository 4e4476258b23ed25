package faulttest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// TestKillUnderLoad kills the gateway with SIGKILL five times at random
// moments while an institution posts paystate and applynotify callbacks,
// restarting it each time. Every callback answered stat 1 must be stored
// exactly once, and each order must be what the stored callbacks make it.
// A callback whose answer was lost in a kill may or may not be stored (the
// crash can come after the commit); the institution sends it again, and
// then it must be stored exactly once too.
func TestKillUnderLoad(t *testing.T) {
	faultGate(t)
	t.Parallel() // the three subprocess tests share the wall clock, each on its own database
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	store := openStore(t, "mysql", dsn)
	const (
		nOrders  = 30
		nPays    = 1500
		nIssued  = 15 // orders that also get applynotify (processing, then issued)
		repeatP  = 0.15
		loadFor  = 20 * time.Second
		kills    = 5
		workers  = 32
		burst    = 24               // sends dispatched at once: callbacks in flight together, batched together
		sendWait = 30 * time.Second // how long a sender keeps dialling a gateway that is down
	)
	orders := seedOrders(t, store, faultInst.OrgCode, "KILL", nOrders)
	g := startGateway(t, setup{DSN: dsn, Institutions: []institution{faultInst}})
	snd := newSender(t, faultInst)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (the plan and the kill moments)", seed)
	rng := rand.New(rand.NewPCG(8, seed))

	// The distinct callbacks, then the sends: each callback once, some twice
	// (an institution that did not trust the first answer), in random order.
	var cbs []*callback
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range nPays {
		kind := wire.PayKindPay
		if rng.IntN(10) == 0 {
			kind = wire.PayKindRefund
		}
		p := &pay{OrderNo: orders[rng.IntN(nOrders)], Kind: kind, Amount: decimal.New(int64(1+rng.IntN(50000)), -2),
			PaidAt: base.Add(time.Duration(i) * time.Second)}
		cbs = append(cbs, newPayCallback(t, snd, p))
	}
	for i := range nIssued {
		for _, state := range []string{wire.NotifyProcessing, wire.NotifyIssued} {
			n := &notice{OrderNo: orders[i], State: state}
			if state == wire.NotifyIssued {
				n.BHNo = "BH-" + orders[i]
			}
			cbs = append(cbs, newNoticeCallback(t, snd, n))
		}
	}
	sends := make([]*callback, 0, len(cbs)*2)
	for _, c := range cbs {
		sends = append(sends, c)
		if rng.Float64() < repeatP {
			sends = append(sends, c)
		}
	}
	rng.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })

	// The load: bursts of sends spread evenly over loadFor, taken by a pool
	// of workers, so that many callbacks are in flight at once and the
	// gateway commits them in batches.
	ctx := context.Background()
	var inFlight atomic.Int64
	var refusedDials atomic.Int64
	jobs := make(chan *callback)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range jobs {
				inFlight.Add(1)
				refusedDials.Add(int64(c.send(ctx, snd, g.URL, time.Now().Add(sendWait))))
				inFlight.Add(-1)
			}
		})
	}

	// The kills: one at a random moment in each fifth of the load.
	type killRecord struct {
		at       time.Duration
		inFlight int64
		restart  time.Duration
		err      error
	}
	var killLog []killRecord
	loadStart := time.Now()
	killDone := make(chan struct{})
	go func() {
		defer close(killDone)
		slot := loadFor / kills
		for k := range kills {
			at := time.Duration(k)*slot + slot/10 + time.Duration(rng.Int64N(int64(slot*6/10)))
			time.Sleep(time.Until(loadStart.Add(at)))
			// Kill while callbacks are being taken (a burst is in), which
			// is the point; a moment between bursts would find none.
			waitFor(time.Second, func() bool { return inFlight.Load() >= burst/3 })
			rec := killRecord{at: time.Since(loadStart).Round(time.Millisecond), inFlight: inFlight.Load()}
			g.kill()
			rec.restart, rec.err = g.start()
			killLog = append(killLog, rec)
			if rec.err != nil {
				return
			}
		}
	}()
	interval := loadFor / time.Duration((len(sends)+burst-1)/burst)
	for i, c := range sends {
		if i%burst == 0 {
			time.Sleep(time.Until(loadStart.Add(time.Duration(i/burst) * interval)))
		}
		jobs <- c
	}
	close(jobs)
	wg.Wait()
	<-killDone
	loadTook := time.Since(loadStart)

	for i, k := range killLog {
		if k.err != nil {
			t.Fatalf("restart after kill %d: %v", i+1, k.err)
		}
		t.Logf("kill %d at %v with %d callbacks in flight; back and ready in %v", i+1, k.at, k.inFlight, k.restart.Round(time.Millisecond))
	}
	if len(killLog) != kills {
		t.Fatalf("%d kills, want %d", len(killLog), kills)
	}

	// What the institution saw, and what is stored.
	first := verifyStored(t, store, orders, cbs)
	t.Logf("kill -9 ×%d under load: %d sends of %d distinct callbacks (%d paystate, %d applynotify) in %v, %d refused dials while down",
		kills, len(sends), len(cbs), nPays, 2*nIssued, loadTook.Round(time.Millisecond), refusedDials.Load())
	t.Logf("after the kills: acknowledged %d, stored %d, lost %d, doubled %d, stored but unacknowledged %d, neither %d, other answers %v",
		first.Acked, first.Stored, first.Lost, first.Doubled, first.StoredUnacked, first.Neither, first.Others)
	if first.Lost != 0 || first.Doubled != 0 {
		t.Errorf("lost %d and doubled %d callbacks that were answered stat 1; want 0 and 0", first.Lost, first.Doubled)
	}
	if first.Acked == 0 || first.Acked < len(cbs)/2 {
		t.Errorf("only %d of %d callbacks acknowledged: the load did not reach the gateway", first.Acked, len(cbs))
	}

	// The institution sends again whatever was not answered stat 1; now
	// every callback must be acknowledged and stored exactly once.
	resent := resendUnacked(ctx, snd, g.URL, cbs, workers)
	final := verifyStored(t, store, orders, cbs)
	t.Logf("after re-sending %d: acknowledged %d of %d, stored %d, lost %d, doubled %d", resent, final.Acked, len(cbs),
		final.Stored, final.Lost, final.Doubled)
	if final.Acked != len(cbs) || final.Stored != len(cbs) || final.Lost != 0 || final.Doubled != 0 {
		t.Errorf("after the re-sends: acknowledged %d, stored %d of %d, lost %d, doubled %d; want all stored once",
			final.Acked, final.Stored, len(cbs), final.Lost, final.Doubled)
	}
}

// resendUnacked sends again, with n workers, every callback not yet
// answered stat 1, as an institution does; it returns how many it sent.
func resendUnacked(ctx context.Context, s *sender, url func() string, cbs []*callback, n int) int {
	jobs := make(chan *callback)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for c := range jobs {
				c.send(ctx, s, url, time.Now().Add(10*time.Second))
			}
		})
	}
	sent := 0
	for _, c := range cbs {
		if !c.Acked() {
			sent++
			jobs <- c
		}
	}
	close(jobs)
	wg.Wait()
	return sent
}

// callback is one distinct callback of a load test and what came of it.
type callback struct {
	Kind    string
	OrderNo string
	Body    []byte // the envelope, the same bytes on every send
	Sha256  string // of Body: the audit row's body_sha256
	Pay     *pay
	Notice  *notice

	mu    sync.Mutex
	tries []try
}

// notice is an applynotify of the fault tests.
type notice struct {
	OrderNo string
	State   string
	BHNo    string
}

// try is one send that reached the gateway, or failed after it may have.
type try struct {
	Start, End time.Time
	answer
}

func newPayCallback(t testing.TB, s *sender, p *pay) *callback {
	return newCallback(t, s, &callback{Kind: "paystate", OrderNo: p.OrderNo, Pay: p}, p.plain())
}

func newNoticeCallback(t testing.TB, s *sender, n *notice) *callback {
	an := wire.ApplyNotify{OrderNo: n.OrderNo, State: n.State, GuaranteeNo: n.BHNo,
		PremiumRate: decimal.RequireFromString("0.005"), Premium: decimal.RequireFromString("500.00"),
		IssuerName: "某某担保有限公司", IssuerAddress: "北京市西城区某某街1号", IssuerPhone: "010-12345678"}
	if n.State == wire.NotifyIssued {
		an.IssuedAt, an.File = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), testPDF
	}
	plain, err := json.Marshal(an)
	if err != nil {
		t.Fatal(err)
	}
	return newCallback(t, s, &callback{Kind: "applynotify", OrderNo: n.OrderNo, Notice: n}, plain)
}

func newCallback(t testing.TB, s *sender, c *callback, plain []byte) *callback {
	c.Body = s.envelope(t, plain)
	sum := sha256.Sum256(c.Body)
	c.Sha256 = hex.EncodeToString(sum[:])
	return c
}

// send posts the callback once, dialling again while the gateway is down
// (a refused dial surely delivered nothing) until the deadline; it returns
// how many dials were refused.
func (c *callback) send(ctx context.Context, s *sender, url func() string, until time.Time) int {
	refused := 0
	for {
		start := time.Now()
		a := s.post(ctx, url(), c.Kind, c.Body)
		if a.NotSent && time.Now().Before(until) {
			refused++
			time.Sleep(25 * time.Millisecond)
			continue
		}
		c.mu.Lock()
		c.tries = append(c.tries, try{Start: start, End: time.Now(), answer: a})
		c.mu.Unlock()
		return refused
	}
}

// Acked reports whether any send was answered stat 1.
func (c *callback) Acked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tr := range c.tries {
		if tr.Acked() {
			return true
		}
	}
	return false
}

// Tries returns a copy of the sends so far.
func (c *callback) Tries() []try {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]try(nil), c.tries...)
}

// tally is what verifyStored found.
type tally struct {
	Acked         int // callbacks answered stat 1 at least once
	Stored        int // callbacks whose effect is stored (once or more)
	Lost          int // answered stat 1, not stored
	Doubled       int // stored more than once
	StoredUnacked int // stored, never answered stat 1: the answer was lost
	Neither       int // neither answered stat 1 nor stored
	// Others counts the answers other than stat 1, by HTTP status, errcode
	// or transport failure.
	Others map[string]int
}

// verifyStored compares what the institution was told with what the
// database holds, reading it directly:
//   - a callback's effect is stored when its audit row carries the dedup
//     key (result accepted or late); a paystate's also has its payment row,
//     written in the same transaction;
//   - no payment row and no accepted audit row that no callback explains;
//   - each order's paid and refunded amounts are the sums of its stored
//     payments; an order is issued, with the bhno and the file, exactly when
//     an issuance notice of it is stored.
//
// Lost and doubled callbacks are counted, not failed here, so that the
// caller can report the figures; any other inconsistency fails the test.
func verifyStored(t *testing.T, store *model.Store, orders []string, cbs []*callback) tally {
	t.Helper()
	res := tally{Others: map[string]int{}}
	payRows := map[string]int{}
	effectRows := map[string]int{}
	planned := map[string]bool{}
	for _, c := range cbs {
		planned[c.Sha256] = true
	}
	sumOf := map[string][2]decimal.Decimal{} // order → paid, refunded from the stored rows
	for _, no := range orders {
		pays, err := store.Payments(no)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := store.Callbacks(no)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[int64]model.Callback{}
		for _, r := range rows {
			byID[r.ID] = r
			if r.DedupKey == nil {
				continue
			}
			if r.Result != model.CallbackAccepted && r.Result != model.CallbackLate {
				t.Errorf("audit row %d of %s has a dedup key and result %q", r.ID, no, r.Result)
			}
			if !planned[r.BodySha256] {
				t.Errorf("audit row %d of %s: an accepted %s that no callback of the test sent", r.ID, no, r.Kind)
			}
			effectRows[r.BodySha256]++
		}
		s := [2]decimal.Decimal{decimal.Zero, decimal.Zero}
		for _, p := range pays {
			payRows[paymentKey(p)]++
			if cb, ok := byID[p.CallbackID]; !ok || cb.DedupKey == nil || cb.Kind != "paystate" {
				t.Errorf("payment %d of %s: its callback %d is not an accepted paystate audit row", p.ID, no, p.CallbackID)
			}
			if p.Kind == wire.PayKindRefund {
				s[1] = s[1].Add(p.Amount)
			} else {
				s[0] = s[0].Add(p.Amount)
			}
		}
		sumOf[no] = s
		o, err := store.Order(no)
		if err != nil {
			t.Fatal(err)
		}
		if !o.PaidAmount.Equal(s[0]) || !o.RefundedAmount.Equal(s[1]) {
			t.Errorf("order %s: paid %s refunded %s, but its payments sum to %s and %s", no,
				o.PaidAmount.StringFixed(2), o.RefundedAmount.StringFixed(2), s[0].StringFixed(2), s[1].StringFixed(2))
		}
	}

	plannedPays := map[string]bool{}
	issuedStored := map[string]string{} // order → bhno of a stored issuance notice
	for _, c := range cbs {
		acked := c.Acked()
		n := effectRows[c.Sha256]
		if c.Pay != nil {
			plannedPays[c.Pay.key()] = true
			if pr := payRows[c.Pay.key()]; pr != n {
				t.Errorf("paystate %s: %d payment rows but %d accepted audit rows", c.Pay.key(), pr, n)
			}
		}
		if c.Notice != nil && c.Notice.State == wire.NotifyIssued && n > 0 {
			issuedStored[c.OrderNo] = c.Notice.BHNo
		}
		if acked {
			res.Acked++
		}
		if n > 0 {
			res.Stored++
		}
		switch {
		case n > 1:
			res.Doubled++
		case acked && n == 0:
			res.Lost++
			t.Errorf("lost: %s of %s answered stat 1 but not stored", c.Kind, c.OrderNo)
		case !acked && n == 1:
			res.StoredUnacked++
		case !acked && n == 0:
			res.Neither++
		}
		for _, tr := range c.Tries() {
			switch {
			case tr.Acked():
			case tr.Err != nil:
				res.Others["no answer"]++
			default:
				res.Others[fmt.Sprintf("HTTP %d errcode %s", tr.Status, tr.Resp.Errcode)]++
			}
		}
	}
	for k, n := range payRows {
		if !plannedPays[k] {
			t.Errorf("payment %s stored %d times, but no callback of the test said it", k, n)
		}
	}
	for _, no := range orders {
		o, err := store.Order(no)
		if err != nil {
			t.Fatal(err)
		}
		bhno, issued := issuedStored[no]
		switch {
		case issued && (o.Status != model.StatusIssued || o.GuaranteeNo.String != bhno):
			t.Errorf("order %s: its issuance notice (%s) is stored, but the order is %s with bhno %q", no, bhno, o.Status, o.GuaranteeNo.String)
		case !issued && o.Status != model.StatusProcessing:
			t.Errorf("order %s is %s, but no issuance notice of it is stored", no, o.Status)
		}
		if issued {
			f, err := store.FileInfo(no)
			sum := sha256.Sum256(testPDF)
			if err != nil || f.Sha256 != hex.EncodeToString(sum[:]) || o.FilePending {
				t.Errorf("order %s issued: file %+v (%v), file_pending %v; want the notice's PDF", no, f, err, o.FilePending)
			}
		}
	}
	return res
}
