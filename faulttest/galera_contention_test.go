package faulttest

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// TestClusterContention pays a dozen orders six times each at the same
// moment through three gateways, each on its own node of a Galera cluster:
// every order's row is written on three nodes at once, and of the writers
// of one row all but one fail certification (1213) at their COMMIT or at
// their next statement. The gateway runs such a transaction again inside,
// so at most one callback in ten may bounce back to its sender with 503;
// none may be lost or doubled, and every order's paid amount must be the
// sum of its payments. Three rounds, each at one moment.
//
// The same load first goes to three gateways that do not retry
// (database.retries: 0), on other orders of the same cluster: what the
// sender saw before, and proof that the load makes conflicts.
func TestClusterContention(t *testing.T) {
	c := clusterGate(t)
	dsns := c.database(t)
	store := openStore(t, "mysql", dsns[0])

	before := contend(t, dsns, store, "CON0", true)
	t.Logf("without retries: %v", before)
	after := contend(t, dsns, store, "CON1", false)
	t.Logf("with retries:    %v", after)
	if after.bounced*10 > after.sent {
		t.Errorf("%d of %d callbacks answered 503 (%.0f%%); want at most one in ten", after.bounced, after.sent,
			100*float64(after.bounced)/float64(after.sent))
	}
	if after.work.retried+after.work.exhausted == 0 {
		t.Errorf("no transaction needed a retry: the load made no conflict, and proved nothing")
	}
}

// contention is what one contend run saw.
type contention struct {
	sent, bounced int
	answers       map[string]int
	work          dbWork
	took          time.Duration
}

func (c contention) String() string {
	return fmt.Sprintf("%d answered 503 of %d (%.1f%%) in %v; answers %v; the gateways' paystate transactions: %v",
		c.bounced, c.sent, 100*float64(c.bounced)/float64(c.sent), c.took.Round(time.Millisecond), c.answers, c.work)
}

// contend starts three gateways, one per node, and sends them rounds of
// paystates: in each round every one of a dozen orders is paid six times
// at the same moment, two payments through each gateway. It checks that
// nothing acknowledged is lost or doubled and that the amounts add up, and
// stops the gateways.
func contend(t *testing.T, dsns [3]string, store *model.Store, prefix string, noRetries bool) contention {
	t.Helper()
	const (
		nOrders  = 12
		perOrder = 6
		rounds   = 3
	)
	orders := seedOrders(t, store, faultInst.OrgCode, prefix, nOrders)
	gws := clusterGateways(t, dsns, []institution{faultInst}, "", noRetries)
	snd := newSender(t, faultInst)

	var cbs []*callback
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	for round := range rounds {
		var batch []*callback
		var target []int
		for o, no := range orders {
			for k := range perOrder {
				i := (round*nOrders+o)*perOrder + k
				p := &pay{OrderNo: no, Kind: wire.PayKindPay, Amount: decimal.New(int64(100+i), -2),
					PaidAt: base.Add(time.Duration(i) * time.Second)}
				batch = append(batch, newPayCallback(t, snd, p))
				target = append(target, k%len(gws)) // two of each order's six through each gateway
			}
		}
		// Every sender waits at the gate; it opens for all at once.
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i, cb := range batch {
			g := gws[target[i]]
			wg.Go(func() {
				<-gate
				cb.send(context.Background(), snd, g.URL, time.Now())
			})
		}
		time.Sleep(50 * time.Millisecond)
		close(gate)
		wg.Wait()
		cbs = append(cbs, batch...)
	}
	out := contention{sent: len(cbs), answers: map[string]int{}, took: time.Since(start),
		work: gatewaysDBWork(gws[:], "paystate", "paystate_batch")}
	for _, cb := range cbs {
		for _, tr := range cb.Tries() {
			switch {
			case tr.Acked():
				out.answers["stat 1"]++
			case tr.Err != nil:
				out.answers["no answer"]++
				t.Errorf("%s of %s: %v", cb.Kind, cb.OrderNo, tr.Err)
			default:
				out.answers[fmt.Sprintf("HTTP %d errcode %s", tr.Status, tr.Resp.Errcode)]++
				if tr.Status == http.StatusServiceUnavailable && tr.Resp.Errcode == wire.CodeUnavailable {
					out.bounced++
				} else {
					t.Errorf("%s of %s answered %v; want stat 1, or 503 with %s", cb.Kind, cb.OrderNo, tr.answer, wire.CodeUnavailable)
				}
			}
		}
	}
	for _, g := range gws {
		g.stop()
	}
	res := verifyStored(t, store, orders, cbs)
	t.Logf("%s: acknowledged %d, stored %d, lost %d, doubled %d, stored but unacknowledged %d", prefix, res.Acked,
		res.Stored, res.Lost, res.Doubled, res.StoredUnacked)
	if res.Lost != 0 || res.Doubled != 0 || res.StoredUnacked != 0 {
		t.Errorf("%s: lost %d, doubled %d, stored but answered 503 %d; want 0, 0 and 0", prefix, res.Lost, res.Doubled,
			res.StoredUnacked)
	}
	return out
}

// sortedKeys returns m's keys in order, for stable reports.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func joinKeys[V any](m map[string]V) string { return strings.Join(sortedKeys(m), ", ") }
