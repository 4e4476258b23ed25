package faulttest

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// The cluster tests run three gateways, each on its own node of a
// three-node MariaDB Galera cluster that deploy/galera/cluster.sh starts on
// loopback, once for the package (about 25 s), and stops when the
// package's tests end. They need what the script needs (mariadbd,
// galera-4's libgalera_smm.so, rsync); without it they skip and say why.

// EnvGaleraDir names the directory of a cluster that cluster.sh already
// runs: the tests use it (starting what is not running) and leave it
// running, which saves its start when a test is run again and again.
const EnvGaleraDir = "GATEWAY_TEST_GALERA_DIR"

// galeraProviderOptions make the survivors of a killed node evict it in
// about 3.5 s instead of 6 (deploy/galera/README.md, "What was measured"),
// which keeps the test short; production keeps Galera's defaults.
const galeraProviderOptions = "evs.keepalive_period=PT0.5S; evs.suspect_timeout=PT2S; evs.inactive_timeout=PT4S"

// galera is the package's cluster, started by the first test that needs it.
var galera struct {
	once sync.Once
	c    *cluster
	skip string
	err  error
}

// cluster is a running cluster of cluster.sh.
type cluster struct {
	script string
	dir    string
	own    bool // started by this package: stopped and removed at the end
	nodes  [3]*mysqldrv.Config
	mu     sync.Mutex // one script command at a time
}

// clusterGate skips a test unless the fault suite is on and a Galera
// cluster can run here, and returns the package's cluster, started once.
func clusterGate(t *testing.T) *cluster {
	t.Helper()
	faultGate(t)
	galera.once.Do(func() { galera.c, galera.skip, galera.err = startCluster(t) })
	if galera.skip != "" {
		t.Skip(galera.skip)
	}
	if galera.err != nil {
		t.Fatalf("Galera cluster: %v", galera.err)
	}
	// The test before may have left a node rejoining.
	if out, err := galera.c.run("wait"); err != nil {
		t.Fatalf("cluster.sh wait: %v\n%s", err, out)
	}
	return galera.c
}

func startCluster(t *testing.T) (*cluster, string, error) {
	script, err := filepath.Abs("../deploy/galera/cluster.sh")
	if err != nil {
		return nil, "", err
	}
	provider := cmp.Or(os.Getenv("GALERA_PROVIDER"), "/usr/lib/galera/libgalera_smm.so")
	mariadbd := cmp.Or(os.Getenv("MARIADBD"), "/usr/sbin/mariadbd")
	for _, need := range []struct{ what, path string }{
		{"deploy/galera/cluster.sh", script},
		{"galera-4 (apt-get install galera-4)", provider},
		{"mariadbd (apt-get install mariadb-server)", mariadbd},
	} {
		if _, err := os.Stat(need.path); err != nil {
			return nil, fmt.Sprintf("Galera cluster tests skipped: %s not found at %s", need.what, need.path), nil
		}
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		return nil, "Galera cluster tests skipped: rsync not found (apt-get install rsync): the nodes' state transfer needs it", nil
	}
	c := &cluster{script: script, dir: os.Getenv(EnvGaleraDir)}
	if c.dir == "" {
		// cluster.sh refuses a directory with anything in it: a new,
		// empty one under a temporary one that is ours.
		parent, err := os.MkdirTemp("", "gateway-galera-")
		if err != nil {
			return nil, "", err
		}
		// As root the nodes run as mysql, which must enter it.
		if err := os.Chmod(parent, 0o755); err != nil {
			return nil, "", err
		}
		c.dir, c.own = filepath.Join(parent, "cluster"), true
	}
	start := time.Now()
	out, err := c.run("start")
	t.Logf("cluster.sh start (%v):\n%s", time.Since(start).Round(time.Millisecond), indent(out))
	if err != nil {
		if c.own {
			c.stop()
		}
		return nil, "", fmt.Errorf("cluster.sh start: %v", err)
	}
	env, err := os.ReadFile(filepath.Join(c.dir, "env"))
	if err != nil {
		return nil, "", err
	}
	for i := range c.nodes {
		m := regexp.MustCompile(fmt.Sprintf(`(?m)^GALERA_NODE%d_DSN='([^']*)'`, i+1)).FindSubmatch(env)
		if m == nil {
			return nil, "", fmt.Errorf("%s/env names no DSN for node%d", c.dir, i+1)
		}
		if c.nodes[i], err = mysqldrv.ParseDSN(string(m[1])); err != nil {
			return nil, "", err
		}
	}
	return c, "", nil
}

// stopGalera stops the package's cluster if it started it.
func stopGalera() {
	if c := galera.c; c != nil && c.own {
		c.stop()
	}
}

func (c *cluster) stop() {
	if out, err := c.run("stop", "--purge"); err != nil {
		fmt.Fprintf(os.Stderr, "cluster.sh stop: %v\n%s", err, out)
	}
	os.Remove(filepath.Dir(c.dir))
}

// run runs one cluster.sh command on the cluster's directory, bounded.
func (c *cluster) run(args ...string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = append(childEnv(), "GALERA_DIR="+c.dir, "GALERA_PROVIDER_OPTIONS="+galeraProviderOptions)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// errorLog is the path of node n's error log (1-based).
func (c *cluster) errorLog(n int) string {
	return filepath.Join(c.dir, fmt.Sprintf("node%d", n), "error.log")
}

// database creates an empty database for the test through node1 (the DDL
// runs on every node at once) and returns its DSN on each node.
func (c *cluster) database(t *testing.T) [3]string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "gwtest_" + hex.EncodeToString(b[:])
	admin := c.nodes[0].Clone()
	admin.DBName = ""
	db, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create database %s on the cluster: %v", name, err)
	}
	// The DDL returns once done on node1; the others run it in the same
	// order but may finish a moment later.
	for i, n := range c.nodes {
		cfg := n.Clone()
		cfg.DBName = name
		ok := waitFor(10*time.Second, func() bool {
			db, err := sql.Open("mysql", cfg.FormatDSN())
			if err != nil {
				return false
			}
			defer db.Close()
			return db.Ping() == nil
		})
		if !ok {
			t.Fatalf("database %s not on node%d 10s after its creation", name, i+1)
		}
	}
	t.Cleanup(func() {
		if db, err := sql.Open("mysql", admin.FormatDSN()); err == nil {
			db.Exec("DROP DATABASE IF EXISTS " + name)
			db.Close()
		}
	})
	var out [3]string
	for i, n := range c.nodes {
		cfg := n.Clone()
		cfg.DBName, cfg.ParseTime = name, true
		out[i] = cfg.FormatDSN()
	}
	return out
}

// clusterGateways starts one gateway per node, at once, each with the
// given institutions and jobs.
func clusterGateways(t *testing.T, dsns [3]string, insts []institution, jobs string, noRetries bool) [3]*gatewayProc {
	t.Helper()
	var gws [3]*gatewayProc
	for i := range gws {
		gws[i] = prepareGateway(t, setup{DSN: dsns[i], Institutions: insts, Jobs: jobs, NoDBRetries: noRetries})
	}
	// The three start, and so migrate, at the same moment, each through
	// its own node: goose's lock row has to keep them apart.
	var wg sync.WaitGroup
	errs := make([]error, len(gws))
	took := make([]time.Duration, len(gws))
	for i, g := range gws {
		wg.Go(func() { took[i], errs[i] = g.start() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("gateway %d: %v", i+1, err)
		}
	}
	t.Logf("three gateways started at once, one per node, ready in %v, %v, %v", took[0].Round(time.Millisecond),
		took[1].Round(time.Millisecond), took[2].Round(time.Millisecond))
	return gws
}

// metricSum adds up the samples of one metric family on a gateway's
// /metrics whose labels contain every given label="value" pair; a gateway
// that does not answer counts 0.
func metricSum(url, name string, labels ...string) float64 {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// dbWork is what the gateways' metrics say of their transactions of some
// ops: how many ran, how many needed a retry, how many retries were made.
type dbWork struct {
	total, retried, exhausted, retries float64
}

func gatewaysDBWork(gws []*gatewayProc, ops ...string) dbWork {
	var w dbWork
	for _, g := range gws {
		url := g.URL()
		if len(ops) == 0 {
			ops = []string{""} // every op
		}
		for _, op := range ops {
			l := `op="` + op + `"`
			if op == "" {
				l = "op="
			}
			w.total += metricSum(url, "gateway_db_transactions_total", l)
			w.retried += metricSum(url, "gateway_db_transactions_total", l, `result="retried"`)
			w.exhausted += metricSum(url, "gateway_db_transactions_total", l, `result="exhausted"`)
			w.retries += metricSum(url, "gateway_db_retries_total", l)
		}
	}
	return w
}

func (w dbWork) minus(o dbWork) dbWork {
	return dbWork{w.total - o.total, w.retried - o.retried, w.exhausted - o.exhausted, w.retries - o.retries}
}

func (w dbWork) String() string {
	if w.total == 0 {
		return "no transactions counted"
	}
	return fmt.Sprintf("%.0f transactions, %.0f (%.1f%%) needed a retry, %.0f (%.1f%%) were refused on every attempt; %.0f retries in all",
		w.total, w.retried+w.exhausted, 100*(w.retried+w.exhausted)/w.total, w.exhausted, 100*w.exhausted/w.total, w.retries)
}

// clusterInstitution is the institution behind the gateways' jobs: it
// takes applies and answers every queryurl "still processing", after a
// pause, so that a query is in flight for a while. It records each query
// as the span it was in flight: two spans of one order that overlap mean
// that two gateways held the order's lease at once.
type clusterInstitution struct {
	t      testing.TB
	srv    *httptest.Server
	cipher crypto.Cipher
	appKey string
	pause  time.Duration

	mu      sync.Mutex
	applies map[string]int
	queries map[string][]span
}

type span struct{ start, end time.Time }

func newClusterInstitution(t testing.TB, in institution, pause time.Duration) *clusterInstitution {
	ci := &clusterInstitution{t: t, cipher: in.cipher(t), appKey: in.AppKey, pause: pause,
		applies: map[string]int{}, queries: map[string][]span{}}
	ci.srv = httptest.NewServer(http.HandlerFunc(ci.serve))
	t.Cleanup(ci.srv.Close)
	return ci
}

func (ci *clusterInstitution) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, _ := io.ReadAll(r.Body)
	ct, err := wire.Ciphertext(body)
	var plain []byte
	if err == nil {
		plain, err = ci.cipher.Decrypt(ct)
	}
	if err != nil || r.Header.Get("appKey") != ci.appKey {
		ci.t.Errorf("institution: %s with appKey %q does not decrypt: %v", r.URL.Path, r.Header.Get("appKey"), err)
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	switch {
	case r.URL.Path == "/guarantee/apply":
		req, err := wire.ParseApplyRequest(plain, false)
		if err != nil {
			ci.t.Errorf("institution: apply: %v", err)
			return
		}
		ci.mu.Lock()
		ci.applies[req.OrderNo]++
		ci.mu.Unlock()
		base := ci.srv.URL + "/orders/" + req.OrderNo
		ci.reply(w, wire.ApplyResult{ContinueURL: base + "/continue", QueryURL: base + "/query", PullURL: base + "/pull"})
	case strings.HasSuffix(r.URL.Path, "/query"):
		ref, err := wire.ParseOrderRef(plain)
		if err != nil || r.URL.Path != "/orders/"+ref.OrderNo+"/query" {
			ci.t.Errorf("institution: query %s: %+v %v", r.URL.Path, ref, err)
			return
		}
		select {
		case <-time.After(ci.pause):
		case <-r.Context().Done():
		}
		ci.reply(w, wire.QueryResult{Status: wire.NotifyProcessing, Describe: "审核中"})
		ci.mu.Lock()
		ci.queries[ref.OrderNo] = append(ci.queries[ref.OrderNo], span{start, time.Now()})
		ci.mu.Unlock()
	default:
		http.NotFound(w, r)
	}
}

func (ci *clusterInstitution) reply(w http.ResponseWriter, data any) {
	plain, err := json.Marshal(data)
	if err != nil {
		ci.t.Error(err)
		return
	}
	text, err := ci.cipher.Encrypt(plain)
	if err != nil {
		ci.t.Error(err)
		return
	}
	out, _ := json.Marshal(wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "成功", Data: string(text)})
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Write(out)
}

// doubleClaims returns the orders some of whose queries were in flight at
// the same time, with the overlapping pairs, and how many queries there
// were of how many orders.
func (ci *clusterInstitution) doubleClaims() (overlaps map[string]int, queries, orders int) {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	overlaps = map[string]int{}
	for no, spans := range ci.queries {
		s := append([]span(nil), spans...)
		sort.Slice(s, func(i, j int) bool { return s[i].start.Before(s[j].start) })
		for i := 1; i < len(s); i++ {
			if s[i].start.Before(s[i-1].end) {
				overlaps[no]++
			}
		}
		queries += len(s)
	}
	return overlaps, queries, len(ci.queries)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
