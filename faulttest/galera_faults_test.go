package faulttest

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// TestClusterFaults runs three gateways, each on its own node of a Galera
// cluster, behind no load balancer: the institution posts every burst of
// callbacks through all three at once, so that the same orders receive
// payments and notices through different gateways, and the same rows are
// written on different nodes, at the same moment. The bidding module
// applies through one gateway and reads the order back through another;
// the poll job of every gateway claims and queries the orders in
// processing. Mid-load one database node is killed with SIGKILL and brought
// back (it must rejoin by incremental state transfer, IST, and say so in
// its log); then one gateway is killed with SIGKILL and restarted.
//
// Afterwards the institution sends again what was not answered stat 1,
// through any gateway, and then: every callback acknowledged is stored
// exactly once, no more (0 lost, 0 doubled); every order's paid amount is
// the sum of its payments; no order was ever queried by two gateways at
// once (its lease held twice); every acknowledged apply is stored and was
// found at once through another node; the three nodes hold the same rows;
// every gateway is ready again, and how long that took is reported.
func TestClusterFaults(t *testing.T) {
	c := clusterGate(t)
	dsns := c.database(t)
	store := openStore(t, "mysql", dsns[0])
	const (
		nOrders     = 24
		nIssued     = 8 // orders that get a processing, then an issuance notice
		burstOrders = 6 // orders per burst, each paid through the three gateways at once
		interval    = 300 * time.Millisecond
		repeatP     = 0.1
		killNodeAt  = 6 * time.Second // into the load
		deadNode    = 2               // its gateway is gws[1]
		deadGateway = 2               // gws[2], on node3
		maxBursts   = 300             // the load ends by then (90 s) even if the faults take longer
		maxLoad     = 3 * time.Minute
	)
	inst := newClusterInstitution(t, faultInst, 150*time.Millisecond)
	in := faultInst
	in.BaseURL = inst.srv.URL
	orders := seedOrders(t, store, in.OrgCode, "GAL", nOrders)
	now := time.Now().UTC()
	for _, no := range orders {
		base := inst.srv.URL + "/orders/" + no
		ok, err := store.UpdateOrder(no, model.OrderChange{}.Links(model.Links{ContinueURL: base + "/continue",
			QueryURL: base + "/query", PullURL: base + "/pull"}).DueAt(now), model.OrderGuard{})
		if err != nil || !ok {
			t.Fatalf("seed %s: %v %v", no, ok, err)
		}
	}
	// Every gateway polls every second, an order again a second after its
	// query, in claims of four orders: the three contend for the same rows
	// all the time. A killed gateway's leases run out in 5 s.
	jobs := "  poll_pending: \"@every 1s\"\n  recover_applying: \"@every 2s\"\n  pull_files: \"@every 1h\"\n" +
		"  deliver_outbox: \"@every 1h\"\n  reconcile: \"0 2 * * *\"\n  poll_backoff: [1s]\n  apply_backoff: [2s]\n" +
		"  lease: 5s\n  batch_size: 4\n"
	gws := clusterGateways(t, dsns, []institution{in}, jobs, false)
	snd := newSender(t, faultInst)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(14, seed))

	mon := watchReadiness(gws[:])
	defer mon.stop()
	stopLoad := make(chan struct{})
	ctx := context.Background()

	// The bidding module: an apply every 400 ms through one gateway, read
	// back at once through the next one.
	ap := &applier{}
	var loadWG sync.WaitGroup
	loadWG.Go(func() {
		tick := time.NewTicker(400 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			ap.apply(t, fmt.Sprintf("GAP-%04d", i), gws[i%3], gws[(i+1)%3])
		}
	})

	// The institution: bursts of callbacks, each through all three gateways.
	var cbs []*callback
	var cbMu sync.Mutex
	var sends sync.WaitGroup
	sendAt := func(cb *callback, g *gatewayProc) {
		sends.Go(func() { cb.send(ctx, snd, g.URL, time.Now()) })
	}
	n := 0
	newPay := func(no string) *callback {
		n++
		kind := wire.PayKindPay
		if rng.IntN(10) == 0 {
			kind = wire.PayKindRefund
		}
		return newPayCallback(t, snd, &pay{OrderNo: no, Kind: kind, Amount: decimal.New(int64(1+rng.IntN(50000)), -2),
			PaidAt: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second)})
	}
	notices := map[int][]*callback{} // burst → the notices sent in it
	for i := range nIssued {
		notices[4+2*i] = append(notices[4+2*i], newNoticeCallback(t, snd, &notice{OrderNo: orders[i], State: wire.NotifyProcessing}))
		notices[30+3*i] = append(notices[30+3*i], newNoticeCallback(t, snd, &notice{OrderNo: orders[i], State: wire.NotifyIssued,
			BHNo: "BH-" + orders[i]}))
	}
	loadStart := time.Now()
	loadWG.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for b := 0; b < maxBursts; b++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			var burst []*callback
			for _, o := range rng.Perm(nOrders)[:burstOrders] {
				for k := range gws {
					cb := newPay(orders[o])
					burst = append(burst, cb)
					sendAt(cb, gws[k])
					if rng.Float64() < repeatP { // sent twice at once, through two gateways
						sendAt(cb, gws[(k+1)%3])
					}
				}
			}
			for j, cb := range notices[b] {
				burst = append(burst, cb)
				sendAt(cb, gws[j%3])
				sendAt(cb, gws[(j+1)%3])
			}
			cbMu.Lock()
			cbs = append(cbs, burst...)
			cbMu.Unlock()
		}
	})

	// The faults.
	var nodeKill, nodeSynced, gwKill time.Time
	var gwRestart time.Duration
	time.Sleep(time.Until(loadStart.Add(killNodeAt)))
	logOffset := fileSize(c.errorLog(deadNode))
	nodeKill = time.Now()
	if out, err := c.run("kill", fmt.Sprint(deadNode)); err != nil {
		t.Fatalf("cluster.sh kill %d: %v\n%s", deadNode, err, out)
	}
	out, err := c.run("restart", fmt.Sprint(deadNode))
	nodeSynced = time.Now()
	if err != nil {
		close(stopLoad)
		t.Fatalf("cluster.sh restart %d: %v\n%s", deadNode, err, out)
	}
	t.Logf("node%d killed at %v into the load; cluster.sh restart:\n%s", deadNode,
		nodeKill.Sub(loadStart).Round(time.Millisecond), indent(out))
	if !strings.Contains(out, "state transfer: IST") {
		t.Errorf("node%d did not rejoin by IST: %s", deadNode, out)
	}
	rejoin := tail(c.errorLog(deadNode), logOffset)
	if !strings.Contains(rejoin, "Receiving IST") || !strings.Contains(rejoin, "IST received") ||
		strings.Contains(rejoin, "SST completed on joiner") {
		t.Errorf("node%d's log does not say it rejoined by IST alone", deadNode)
	}
	time.Sleep(3 * time.Second)
	gwKill = time.Now()
	gws[deadGateway].kill()
	gwRestart, err = gws[deadGateway].start()
	if err != nil {
		close(stopLoad)
		t.Fatalf("restart gateway %d: %v", deadGateway+1, err)
	}
	time.Sleep(4 * time.Second)
	close(stopLoad)
	loadWG.Wait()
	sends.Wait()
	loadTook := time.Since(loadStart)
	if loadTook > maxLoad {
		t.Errorf("the load took %v, over its bound of %v", loadTook, maxLoad)
	}
	mon.stop()

	// Readiness: while its node was away, the gateway on it said so; then
	// every gateway was ready again.
	t.Logf("gateway %d (SIGKILL) ready again %v after its restart", deadGateway+1, gwRestart.Round(time.Millisecond))
	for i := range gws {
		t.Logf("gateway %d /readyz: %s", i+1, mon.report(i, loadStart))
	}
	if !mon.notReadyBetween(deadNode-1, nodeKill, nodeSynced) {
		t.Errorf("gateway %d said ready all the while its node was away", deadNode)
	}
	allReady := mon.allReadyAfter(nodeKill, gwKill)
	if allReady.IsZero() {
		t.Errorf("the gateways were not all ready again between node%d's kill and the gateway's kill", deadNode)
	} else {
		t.Logf("after node%d's kill every gateway was ready again in %v (cluster.sh restart, which waits until the cluster is whole, returned after %v)",
			deadNode, allReady.Sub(nodeKill).Round(time.Millisecond), nodeSynced.Sub(nodeKill).Round(time.Millisecond))
	}
	if r := mon.allReadyAfter(gwKill, time.Now()); r.IsZero() {
		t.Errorf("the gateways were not all ready again after gateway %d's kill", deadGateway+1)
	} else {
		t.Logf("after gateway %d's kill every gateway was ready again in %v", deadGateway+1, r.Sub(gwKill).Round(time.Millisecond))
	}

	// What the institution saw, then what it sends again.
	cbMu.Lock()
	all := append([]*callback(nil), cbs...)
	cbMu.Unlock()
	first := verifyStored(t, store, orders, all)
	t.Logf("load of %v: %d distinct callbacks through 3 gateways; acknowledged %d, stored %d, lost %d, doubled %d, stored but unacknowledged %d, neither %d; other answers %v",
		loadTook.Round(time.Millisecond), len(all), first.Acked, first.Stored, first.Lost, first.Doubled, first.StoredUnacked,
		first.Neither, first.Others)
	if first.Lost != 0 || first.Doubled != 0 {
		t.Errorf("lost %d and doubled %d acknowledged callbacks; want 0 and 0", first.Lost, first.Doubled)
	}
	// As an institution does, again and again (a gateway under load may
	// answer 503 once more), within a bound.
	var rr atomic.Int64
	anyGateway := func() string { return gws[rr.Add(1)%3].URL() }
	resent := 0
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		n := resendUnacked(ctx, snd, anyGateway, all, 16)
		if n == 0 {
			break
		}
		resent += n
		time.Sleep(time.Second)
	}
	final := verifyStored(t, store, orders, all)
	t.Logf("after re-sending %d: acknowledged %d of %d, stored %d, lost %d, doubled %d", resent, final.Acked, len(all),
		final.Stored, final.Lost, final.Doubled)
	if final.Acked != len(all) || final.Stored != len(all) || final.Lost != 0 || final.Doubled != 0 {
		t.Errorf("after the re-sends: acknowledged %d, stored %d of %d, lost %d, doubled %d; want all stored once",
			final.Acked, final.Stored, len(all), final.Lost, final.Doubled)
	}

	// The poll job: queried, and never one order by two gateways at once.
	overlaps, queries, polled := inst.doubleClaims()
	t.Logf("poll job: %d queries of %d orders; orders queried by two gateways at once: %d", queries, polled, len(overlaps))
	if len(overlaps) > 0 {
		t.Errorf("orders whose lease two gateways held at once (overlapping queries): %v", overlaps)
	}
	if polled < nOrders {
		t.Errorf("the poll job queried %d orders of %d", polled, nOrders)
	}

	// The applies.
	t.Logf("applies: %s", ap)
	for _, no := range ap.ackedOrders() {
		if o, err := store.Order(no); err != nil || o.Status != model.StatusProcessing {
			t.Errorf("apply %s acknowledged, but stored as %+v (%v)", no, o, err)
		}
	}
	if ap.missing() > 0 {
		t.Errorf("%d applies acknowledged through one gateway were not found through another", ap.missing())
	}

	// The three nodes hold the same rows, the one that was away included.
	if out, err := c.run("wait"); err != nil {
		t.Fatalf("cluster.sh wait: %v\n%s", err, out)
	}
	var sums []string
	for i, dsn := range dsns {
		sums = append(sums, nodeSummary(t, dsn))
		if sums[i] != sums[0] {
			t.Errorf("node%d holds %s, node1 %s", i+1, sums[i], sums[0])
		}
	}
	t.Logf("every node holds %s", sums[0])
	t.Logf("the gateways' transactions since their (re)start: %v", gatewaysDBWork(gws[:]))
}

// applier is the bidding module of TestClusterFaults.
type applier struct {
	mu                         sync.Mutex
	acked                      []string
	refused, notFound, unknown int
}

// apply applies for orderNo through one gateway and, once acknowledged,
// reads it through another: a read on another node must see the write.
func (a *applier) apply(t *testing.T, orderNo string, through, readBack *gatewayProc) {
	now := time.Now().UnixMilli()
	body := fmt.Sprintf(`{"orgcode":%q,"orderno":%q,"qyname":"某某建设有限公司","qycode":"91110000100000000X",
		"bzjmoney":"100000.00","xmname":"办公楼","xmcode":%q,"bdname":"一标段","bdcode":"BD-1",
		"tbjztime":%d,"kbttime":%d,"zbrname":"某局","zbrcode":"11110000000000000Y",
		"qykh":"工商银行","qykhzh":"某某建设有限公司","qyjbzh":"6222020200112233445",
		"jbrname":"张三","jbrphone":"13800005678","jbremail":"zhangsan@example.cn"}`,
		faultInst.OrgCode, orderNo, "XM-"+orderNo, now+86_400_000, now+90_000_000)
	status, _ := tryAPI(http.MethodPost, through.URL(), "/v1/guarantees", []byte(body))
	a.mu.Lock()
	defer a.mu.Unlock()
	if status != http.StatusCreated {
		// Down, 503, or accepted without a definite answer from the
		// institution (202): nothing to read back for sure.
		a.refused++
		return
	}
	a.acked = append(a.acked, orderNo)
	switch st, _ := tryAPI(http.MethodGet, readBack.URL(), "/v1/guarantees/"+orderNo, nil); st {
	case http.StatusOK:
	case http.StatusNotFound:
		a.notFound++
		t.Errorf("apply %s acknowledged through %s, then not found through %s", orderNo, through.URL(), readBack.URL())
	default:
		a.unknown++ // the other gateway down or its node away
	}
}

func (a *applier) ackedOrders() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.acked...)
}

func (a *applier) missing() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.notFound
}

func (a *applier) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("%d acknowledged (201) and read back through another gateway (%d not found there, %d not answered there); %d not acknowledged",
		len(a.acked), a.notFound, a.unknown, a.refused)
}

// tryAPI calls the /v1 API of a gateway at base; status 0 when it did not
// answer (down: base is empty, or the connection failed).
func tryAPI(method, base, path string, body []byte) (int, []byte) {
	if base == "" {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

// readiness watches the gateways' /readyz, each every 200 ms.
type readiness struct {
	gws  []*gatewayProc
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu     sync.Mutex
	probes [][]probeAt // per gateway
}

type probeAt struct {
	at    time.Time
	ready bool
}

func watchReadiness(gws []*gatewayProc) *readiness {
	r := &readiness{gws: gws, done: make(chan struct{}), probes: make([][]probeAt, len(gws))}
	for i, g := range gws {
		r.wg.Go(func() {
			for {
				select {
				case <-r.done:
					return
				case <-time.After(200 * time.Millisecond):
				}
				ready := false
				if url := g.URL(); url != "" {
					status, _ := getStatus(url + "/readyz")
					ready = status == http.StatusOK
				}
				r.mu.Lock()
				r.probes[i] = append(r.probes[i], probeAt{time.Now(), ready})
				r.mu.Unlock()
			}
		})
	}
	return r
}

func (r *readiness) stop() {
	r.once.Do(func() { close(r.done) })
	r.wg.Wait()
}

// notReadyBetween reports whether gateway i was seen not ready in [from, to].
func (r *readiness) notReadyBetween(i int, from, to time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.probes[i] {
		if !p.at.Before(from) && !p.at.After(to) && !p.ready {
			return true
		}
	}
	return false
}

// allReadyAfter returns the first moment after from (and before to) from
// which every gateway's probes said ready up to to, or zero.
func (r *readiness) allReadyAfter(from, to time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time // of a probe not ready
	var seen bool
	for _, ps := range r.probes {
		for _, p := range ps {
			if p.at.Before(from) || p.at.After(to) {
				continue
			}
			seen = true
			if !p.ready && p.at.After(last) {
				last = p.at
			}
		}
	}
	if !seen {
		return time.Time{}
	}
	if last.IsZero() {
		return from
	}
	var first time.Time // the first ready probe of each after last: the latest of them
	for _, ps := range r.probes {
		var f time.Time
		for _, p := range ps {
			if p.at.After(last) && !p.at.After(to) && p.ready {
				f = p.at
				break
			}
		}
		if f.IsZero() {
			return time.Time{}
		}
		if f.After(first) {
			first = f
		}
	}
	return first
}

// report lists gateway i's spells of not ready, relative to t0.
func (r *readiness) report(i int, t0 time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var spells []string
	var from time.Time
	for _, p := range r.probes[i] {
		switch {
		case !p.ready && from.IsZero():
			from = p.at
		case p.ready && !from.IsZero():
			spells = append(spells, fmt.Sprintf("%v–%v", from.Sub(t0).Round(100*time.Millisecond), p.at.Sub(t0).Round(100*time.Millisecond)))
			from = time.Time{}
		}
	}
	if !from.IsZero() {
		spells = append(spells, fmt.Sprintf("%v–end", from.Sub(t0).Round(100*time.Millisecond)))
	}
	if len(spells) == 0 {
		return fmt.Sprintf("ready at every one of %d probes", len(r.probes[i]))
	}
	return fmt.Sprintf("not ready %s into the load (%d probes)", strings.Join(spells, ", "), len(r.probes[i]))
}

// nodeSummary is what one node holds of the test's database: rows and sums
// of the tables the callbacks write.
func nodeSummary(t *testing.T, dsn string) string {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var orders, callbacks, payments, events, files int64
	var paid, amounts decimal.Decimal
	q := `SELECT (SELECT COUNT(*) FROM orders), (SELECT COALESCE(SUM(paid_amount - refunded_amount), 0) FROM orders),
		(SELECT COUNT(*) FROM callbacks), (SELECT COUNT(*) FROM payments), (SELECT COALESCE(SUM(amount), 0) FROM payments),
		(SELECT COUNT(*) FROM order_events), (SELECT COUNT(*) FROM guarantee_files)`
	if err := db.QueryRow(q).Scan(&orders, &paid, &callbacks, &payments, &amounts, &events, &files); err != nil {
		t.Fatalf("summary of %s: %v", dsn, err)
	}
	return fmt.Sprintf("%d orders (net paid %s), %d callbacks, %d payments (%s), %d events, %d files", orders,
		paid.StringFixed(2), callbacks, payments, amounts.StringFixed(2), events, files)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tail returns a file from byte offset on.
func tail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}
