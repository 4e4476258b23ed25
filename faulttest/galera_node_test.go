package faulttest

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// TestClusterPartition cuts one node off the cluster (gmcast.isolate: it
// leaves the primary component but keeps running and taking connections)
// under a gateway. A ping still succeeds there, but the node refuses all
// work: the gateway on it must say 503 on /readyz, so that a load balancer
// moves traffic to another node's gateway, and answer callbacks 503 stat 0
// (500001) so that the sender tries again, never stat 1, while the
// gateway on a node of the primary component goes on taking them. Back in
// the cluster, the node's gateway is ready again by itself.
func TestClusterPartition(t *testing.T) {
	c := clusterGate(t)
	dsns := c.database(t)
	store := openStore(t, "mysql", dsns[0])
	orders := seedOrders(t, store, faultInst.OrgCode, "ISO", 2)
	gws := clusterGateways(t, dsns, []institution{faultInst}, "", false)
	snd := newSender(t, faultInst)
	// The store that the cut-off node's gateway has, seen from here.
	cut := openStore(t, "mysql", dsns[2])
	if !cut.Galera() {
		t.Fatal("the store does not see that it is on a Galera node")
	}
	at := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	payment := func(i int) *callback {
		return newPayCallback(t, snd, &pay{OrderNo: orders[i%2], Kind: wire.PayKindPay, Amount: decimal.New(int64(100+i), -2),
			PaidAt: at.Add(time.Duration(i) * time.Second)})
	}
	var cbs []*callback

	// A node set read-only reads but takes no write: not ready either.
	ro, err := sql.Open("mysql", dsns[2])
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Exec("SET GLOBAL read_only = 1"); err != nil {
		t.Fatal(err)
	}
	readOnly := waitFor(5*time.Second, func() bool { s, _ := getStatus(gws[2].URL() + "/readyz"); return s == http.StatusServiceUnavailable })
	if _, err := ro.Exec("SET GLOBAL read_only = 0"); err != nil {
		t.Fatal(err)
	}
	if !readOnly {
		t.Error("gateway 3 still ready 5s after its node was set read-only")
	}
	if !waitFor(5*time.Second, func() bool { s, _ := getStatus(gws[2].URL() + "/readyz"); return s == http.StatusOK }) {
		t.Fatal("gateway 3 not ready again 5s after its node was writable again")
	}

	out, err := c.run("isolate", "3")
	if err != nil {
		t.Fatalf("cluster.sh isolate 3: %v\n%s", err, out)
	}
	isolated := time.Now()
	t.Logf("cluster.sh isolate 3:\n%s", indent(out))
	rejoined := false
	defer func() {
		if !rejoined {
			c.run("rejoin", "3")
		}
	}()
	ctx := context.Background()
	if err := cut.Ping(ctx); err != nil {
		t.Errorf("ping of the cut-off node: %v; want it to answer (which is why a ping is no readiness check)", err)
	}
	if err := cut.Ready(ctx); err == nil {
		t.Error("Ready on the cut-off node succeeded; want an error")
	} else {
		t.Logf("Ready on the cut-off node: %v", err)
	}
	if !waitFor(10*time.Second, func() bool { s, _ := getStatus(gws[2].URL() + "/readyz"); return s == http.StatusServiceUnavailable }) {
		t.Fatalf("gateway 3 on the cut-off node still ready 10s after its node left the primary component")
	}
	t.Logf("gateway 3 not ready %v after its node was cut off", time.Since(isolated).Round(time.Millisecond))
	for _, g := range gws[:2] {
		if s, _ := getStatus(g.URL() + "/readyz"); s != http.StatusOK {
			t.Errorf("gateway on a node of the primary component: /readyz %d, want 200", s)
		}
	}
	for i := range 4 {
		cb := payment(i)
		cbs = append(cbs, cb)
		start := time.Now()
		cb.send(ctx, snd, gws[2].URL, time.Now())
		tr := cb.Tries()[0]
		if tr.Status != http.StatusServiceUnavailable || tr.Resp.Stat != 0 || tr.Resp.Errcode != wire.CodeUnavailable {
			t.Errorf("paystate through the cut-off node: %v; want HTTP 503 stat 0 errcode %s", tr.answer, wire.CodeUnavailable)
		}
		t.Logf("paystate through the cut-off node answered %v in %v", tr.answer, time.Since(start).Round(time.Millisecond))
		cb.send(ctx, snd, gws[i%2].URL, time.Now()) // the load balancer's other choice
	}

	out, err = c.run("rejoin", "3")
	if err != nil {
		t.Fatalf("cluster.sh rejoin 3: %v\n%s", err, out)
	}
	rejoined = true
	back := time.Now()
	t.Logf("cluster.sh rejoin 3:\n%s", indent(out))
	if !waitFor(15*time.Second, func() bool { s, _ := getStatus(gws[2].URL() + "/readyz"); return s == http.StatusOK }) {
		t.Fatalf("gateway 3 not ready 15s after its node rejoined")
	}
	t.Logf("gateway 3 ready again %v after its node rejoined", time.Since(back).Round(time.Millisecond))
	cb := payment(4)
	cbs = append(cbs, cb)
	cb.send(ctx, snd, gws[2].URL, time.Now())
	if !cb.Acked() {
		t.Errorf("paystate through the rejoined node: %v; want stat 1", cb.Tries()[0].answer)
	}
	res := verifyStored(t, store, orders, cbs)
	if res.Lost != 0 || res.Doubled != 0 || res.Stored != len(cbs) || res.Acked != len(cbs) {
		t.Errorf("acknowledged %d, stored %d of %d, lost %d, doubled %d; want every one once", res.Acked, res.Stored,
			len(cbs), res.Lost, res.Doubled)
	}
}

// TestClusterMigrateAtOnce migrates fresh databases from six stores, two
// on each node, at the same moment, as gateways starting together do. A
// named lock (GET_LOCK) holds on its own node only, so it would let them
// run the first migration at once, and the DDL of the slower ones fail on
// tables the first made; goose's own lock, given to goose, leaves the
// version table's creation outside it (Up asks HasPending first), so that
// an instance may find the table without its first row. Each store must
// succeed, each migration be recorded once, and the schema be whole on
// every node. Six rounds.
func TestClusterMigrateAtOnce(t *testing.T) {
	c := clusterGate(t)
	const perNode = 2
	for round := range 6 {
		dsns := c.database(t)
		var wg sync.WaitGroup
		n := perNode * len(dsns)
		errs := make([]error, n)
		applied := make([][]string, n)
		gate := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				s, err := model.Open(ctx, "mysql", dsns[i%len(dsns)], model.Pool{MaxOpen: 4, MaxIdle: 2, MaxLifetime: time.Minute})
				if err != nil {
					errs[i] = err
					return
				}
				defer s.Close()
				<-gate
				applied[i], errs[i] = s.Migrate(ctx)
			})
		}
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		close(gate)
		wg.Wait()
		took := time.Since(start)
		var ran []string
		total := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: migrate through node%d: %v", round+1, i%len(dsns)+1, err)
			}
			ran = append(ran, fmt.Sprintf("node%d %d", i%len(dsns)+1, len(applied[i])))
			total += len(applied[i])
		}
		t.Logf("round %d: %d stores migrated at once in %v; migrations applied through each: %s", round+1, n,
			took.Round(time.Millisecond), strings.Join(ran, ", "))
		for i, dsn := range dsns {
			versions, tables := schemaOf(t, dsn)
			if versions != total || tables < 10 {
				t.Errorf("round %d, node%d: %d versions recorded, %d tables; want each migration once and every table",
					round+1, i+1, versions, tables)
			}
		}
	}
}

// schemaOf counts the migrations goose recorded (besides its own row 0)
// and the tables of the database at dsn.
func schemaOf(t *testing.T, dsn string) (versions, tables int) {
	t.Helper()
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?", cfg.DBName).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	return versions, tables
}

// TestClusterCausalReads: on a Galera node the store makes its reads
// causal (wsrep_sync_wait=1: a read waits until the node has applied what
// was committed anywhere before it), whatever the server's default is
// (MariaDB's is 0), so that a callback through one node finds the order
// created through another; a DSN that names wsrep_sync_wait keeps its own.
func TestClusterCausalReads(t *testing.T) {
	c := clusterGate(t)
	dsns := c.database(t)
	ctx := context.Background()
	// MariaDB's default on every node for the length of the test, then
	// what was there before.
	for _, dsn := range dsns {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		var was int
		if err := db.QueryRow("SELECT @@global.wsrep_sync_wait").Scan(&was); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("SET GLOBAL wsrep_sync_wait = 0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			defer db.Close()
			if _, err := db.Exec(fmt.Sprintf("SET GLOBAL wsrep_sync_wait = %d", was)); err != nil {
				t.Errorf("restore wsrep_sync_wait: %v", err)
			}
		})
	}
	for _, c := range []struct {
		name, param string
		want        int
	}{
		{"the gateway's", "", 1},
		{"the DSN's", "&wsrep_sync_wait=0", 0},
		{"the DSN's", "&wsrep_sync_wait=3", 3},
	} {
		s, err := model.Open(ctx, "mysql", dsns[1]+c.param, model.Pool{MaxOpen: 2, MaxIdle: 1, MaxLifetime: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var got int
		err = s.DB().QueryRow("SELECT @@session.wsrep_sync_wait").Scan(&got)
		s.Close()
		if err != nil || got != c.want || !s.Galera() {
			t.Errorf("%s choice: session wsrep_sync_wait %d (%v), Galera %v; want %d on a Galera node", c.name, got, err, s.Galera(), c.want)
		}
	}
}
