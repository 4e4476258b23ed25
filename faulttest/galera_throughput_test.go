package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// TestClusterThroughput measures callback throughput, same machine, same
// run: one gateway on the single MariaDB server (GATEWAY_TEST_MYSQL_DSN),
// one gateway on one node of the Galera cluster, three gateways, one per
// node, the load spread over them in turn as a load balancer would, and
// three gateways all on node1 (which tells the cost of three processes on
// the same two cores from that of writing through three nodes).
// Two loads, each of distinct paystates sent once, 48 at a time: "hot", of
// 40 orders, so that payments of one order arrive through several nodes at
// once and conflict; "spread", of 1200 orders, where that is rare, as it
// is in life (a few payments per order, hours apart). The setups take
// turns, twice. Nothing acknowledged may be lost or doubled; the figures
// are reported, not asserted (a race-detector build, as CI runs it, is
// several times slower: quote the figures of a plain `go test`).
//
// It runs only when GATEWAY_CLUSTER_THROUGHPUT=1 (about two minutes): a
// measurement, not a gate of CI.
func TestClusterThroughput(t *testing.T) {
	if os.Getenv(EnvClusterThroughput) != "1" {
		t.Skipf("cluster throughput figures skipped: set %s=1 to measure them", EnvClusterThroughput)
	}
	c := clusterGate(t)
	const (
		perRun = 1200
		conc   = 48
		rounds = 2
	)
	_, singleDSN := modeltest.DSN(t, "mysql", os.Getenv)
	single := openStore(t, "mysql", singleDSN)
	dsns := c.database(t)
	clusterStore := openStore(t, "mysql", dsns[0])

	snd := newSender(t, faultInst)
	one := startGateway(t, setup{DSN: singleDSN, Institutions: []institution{faultInst}})
	three := clusterGateways(t, dsns, []institution{faultInst}, "", false)
	// The gateway on one node alone is a fourth process, on node1; three
	// more on node1 tell what is the cost of three processes and what of
	// writing through three nodes.
	alone := startGateway(t, setup{DSN: dsns[0], Institutions: []institution{faultInst}})
	oneNode := clusterGateways(t, [3]string{dsns[0], dsns[0], dsns[0]}, []institution{faultInst}, "", false)
	type setupRun struct {
		name  string
		store *model.Store
		gws   []*gatewayProc
	}
	setups := []setupRun{
		{"1 gateway, single MariaDB", single, []*gatewayProc{one}},
		{"1 gateway, Galera node1", clusterStore, []*gatewayProc{alone}},
		{"3 gateways, one per Galera node", clusterStore, three[:]},
		{"3 gateways, all on Galera node1", clusterStore, oneNode[:]},
	}
	rng := rand.New(rand.NewPCG(14, uint64(time.Now().UnixNano())))
	n := 0
	for _, load := range []struct {
		name    string
		nOrders int
	}{{"hot", 40}, {"spread", perRun}} {
		type result struct {
			orders []string
			cbs    []*callback
			took   time.Duration
			lat    []time.Duration
			acked  int
		}
		results := make([]result, len(setups))
		for i, s := range setups {
			results[i].orders = seedOrders(t, s.store, faultInst.OrgCode, fmt.Sprintf("TP%s%d", load.name[:1], i), load.nOrders)
		}
		before := gatewaysDBWork(three[:], "paystate", "paystate_batch")
		for round := range rounds {
			for i, s := range setups {
				r := &results[i]
				cbs := make([]*callback, perRun)
				for k := range cbs {
					n++
					cbs[k] = newPayCallback(t, snd, &pay{OrderNo: r.orders[rng.IntN(load.nOrders)], Kind: wire.PayKindPay,
						Amount: decimal.New(int64(1+rng.IntN(50000)), -2), PaidAt: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second)})
				}
				took := drive(snd, cbs, s.gws, conc)
				r.cbs = append(r.cbs, cbs...)
				r.took += took
				for _, cb := range cbs {
					for _, tr := range cb.Tries() {
						r.lat = append(r.lat, tr.End.Sub(tr.Start))
						if tr.Acked() {
							r.acked++
						}
					}
				}
				t.Logf("%s load, round %d, %s: %d paystates in %v (%.0f/s)", load.name, round+1, s.name, perRun,
					took.Round(time.Millisecond), float64(perRun)/took.Seconds())
			}
		}
		base := float64(len(results[0].cbs)) / results[0].took.Seconds()
		for i, s := range setups {
			r := results[i]
			slices.Sort(r.lat)
			rate := float64(len(r.cbs)) / r.took.Seconds()
			t.Logf("%s load (%d orders), %-32s %5.0f callbacks/s (×%.2f of one gateway on the single server), p50 %v, p99 %v, %d of %d acknowledged",
				load.name, load.nOrders, s.name+":", rate, rate/base, pct(r.lat, 50), pct(r.lat, 99), r.acked, len(r.cbs))
			res := verifyStored(t, s.store, r.orders, r.cbs)
			if res.Lost != 0 || res.Doubled != 0 {
				t.Errorf("%s load, %s: lost %d, doubled %d; want 0 and 0", load.name, s.name, res.Lost, res.Doubled)
			}
		}
		after := gatewaysDBWork(three[:], "paystate", "paystate_batch")
		t.Logf("%s load: the paystate transactions of the three gateways on three nodes: %v", load.name, after.minus(before))
	}
}

// EnvClusterThroughput enables TestClusterThroughput.
const EnvClusterThroughput = "GATEWAY_CLUSTER_THROUGHPUT"

// drive sends every callback once, conc at a time, spread over the
// gateways in turn, and returns how long they took.
func drive(snd *sender, cbs []*callback, gws []*gatewayProc, conc int) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(cbs) {
					return
				}
				g := gws[i%len(gws)]
				cbs[i].send(context.Background(), snd, g.URL, time.Now())
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)].Round(100 * time.Microsecond)
}
