package service_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	gw "github.com/procurement/gateway/gateway"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
	"github.com/procurement/gateway/wire"
	"github.com/procurement/gateway/wire/pdftest"
)

const (
	orgCode = "BANK01"
	secret  = "0123456789abcdef"
)

var testPDF = pdftest.Letter("jobs", 0, 1)

// bank is an httptest institution: it speaks the real envelope with the
// real cipher, counts every call by endpoint and key (orderno, bhno or
// xmcode), and can be told to fail, hang, answer garbage or refuse.
type bank struct {
	srv      *httptest.Server
	cipher   crypto.Cipher
	hang     chan struct{} // closed at cleanup: frees hanging handlers
	inflight atomic.Int64

	mu      sync.Mutex
	calls   map[string]int
	mode    string            // ok, fail (500), unavailable (503 + Retry-After), hang, garbage, refuse (stat 0), fakepdf (pull: "%PDF-")
	delay   time.Duration     // before an ok answer
	answers map[string]string // queryurl status by orderno; default processing
	// elsewhere, when set, is the base of the queryurl and pullurl an apply
	// answer hands out instead of the bank's own.
	elsewhere string
}

func newBank(t testing.TB) *bank {
	t.Helper()
	c, err := crypto.New(crypto.Options{}, secret)
	if err != nil {
		t.Fatal(err)
	}
	b := &bank{cipher: c, hang: make(chan struct{}), calls: map[string]int{}, mode: "ok", answers: map[string]string{}}
	b.srv = httptest.NewServer(b)
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { close(b.hang) }) // runs first: cleanups run last-in first-out
	return b
}

func (b *bank) set(mode string, delay time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mode, b.delay = mode, delay
}

func (b *bank) answer(orderNo, status string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.answers[orderNo] = status
}

// count is the number of calls to endpoint (query, pull, apply, xmstate) for key.
func (b *bank) count(endpoint, key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[endpoint+" "+key]
}

func (b *bank) total(endpoint string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k, v := range b.calls {
		if strings.HasPrefix(k, endpoint+" ") {
			n += v
		}
	}
	return n
}

func (b *bank) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	ct, err := wire.Ciphertext(raw)
	if err != nil {
		http.Error(w, "no envelope", http.StatusBadRequest)
		return
	}
	plain, err := b.cipher.Decrypt(ct)
	if err != nil {
		http.Error(w, "does not decrypt", http.StatusBadRequest)
		return
	}
	var p map[string]any
	if err := json.Unmarshal(plain, &p); err != nil {
		http.Error(w, "not json", http.StatusBadRequest)
		return
	}
	var endpoint, key string
	switch {
	case strings.HasSuffix(r.URL.Path, "/guarantee/apply"):
		endpoint, key = "apply", fmt.Sprint(p["orderno"])
	case strings.HasSuffix(r.URL.Path, "/guarantee/xmstate"):
		endpoint, key = "xmstate", fmt.Sprint(p["xmcode"])
	case strings.HasSuffix(r.URL.Path, "/query"):
		endpoint, key = "query", fmt.Sprint(p["orderno"])
	case strings.HasSuffix(r.URL.Path, "/pull"):
		endpoint, key = "pull", fmt.Sprint(p["baohanno"])
	default:
		http.NotFound(w, r)
		return
	}
	b.mu.Lock()
	b.calls[endpoint+" "+key]++
	mode, delay, status, elsewhere := b.mode, b.delay, b.answers[key], b.elsewhere
	b.mu.Unlock()
	b.inflight.Add(1)
	defer b.inflight.Add(-1)

	switch mode {
	case "fail":
		w.WriteHeader(http.StatusInternalServerError)
		return
	case "unavailable":
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case "hang":
		select {
		case <-r.Context().Done():
		case <-b.hang:
		}
		return
	case "garbage":
		w.Write([]byte("<html><body>502 Bad Gateway</body></html>"))
		return
	case "refuse":
		json.NewEncoder(w).Encode(wire.Response{Stat: 0, Errcode: "E100", Msg: "refused"})
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	var data any
	switch endpoint {
	case "apply":
		urls := cmp.Or(elsewhere, b.srv.URL)
		data = wire.ApplyResult{ContinueURL: b.srv.URL + "/continue/" + key, QueryURL: urls + "/query", PullURL: urls + "/pull"}
	case "query":
		if status == "" {
			status = wire.NotifyProcessing
		}
		data = wire.QueryResult{Status: status, Describe: "as of now", DealtAt: time.Now()}
	case "pull":
		data = wire.PullResult{Name: key + ".pdf", File: testPDF}
		if mode == "fakepdf" {
			data = wire.PullResult{Name: key + ".pdf", File: []byte("%PDF-")}
		}
	}
	resp := wire.Response{Stat: 1, Errcode: wire.CodeOK}
	if data != nil {
		j, _ := json.Marshal(data)
		enc, _ := b.cipher.Encrypt(j)
		resp.Data = string(enc)
	}
	json.NewEncoder(w).Encode(resp)
}

// logSink keeps what a gateway logged, for tests that read it.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the logged entries whose msg is msg.
func (l *logSink) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// gateway is one instance, built by gateway.New as production builds it,
// over a store it may share with others. Its schedules do not run unless
// the test turns them on; a test runs a job with run.
type gateway struct {
	svc     *service.Service
	jobs    *service.Scheduler
	logs    *logSink
	store   *model.Store
	metrics *service.PrometheusMetrics
}

// metric returns the value of the sample of /metrics that starts with
// name{labels}, 0 when there is none.
func (g *gateway) metric(t testing.TB, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	g.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

type gwOptions struct {
	owner         string
	configure     func(*config.Config)
	timeout       time.Duration // per call; default 2s
	maxConcurrent int           // per institution; default 8
	level         logrus.Level  // default debug
}

// testConfig is one instance's configuration: config.yaml's defaults, and
// steps a test would otherwise wait for made quicker.
func testConfig(owner string, b *bank, o gwOptions) *config.Config {
	cfg := config.Default()
	cfg.Server.Instance = owner
	cfg.API.Tokens = []string{"test-token-0123456789abcdef"}
	cfg.Institutions = []config.Institution{{OrgCode: orgCode, Name: "test bank", BaseURL: b.srv.URL + "/eg",
		AppKey: "key-" + orgCode, AppSecret: secret}}
	cfg.ApplyDefaults()
	in := &cfg.Institutions[0]
	// One attempt per call: a test counts calls.
	in.Timeout, in.Retries, in.RetryWait, in.MaxConcurrent = o.timeout, 0, 10*time.Millisecond, o.maxConcurrent
	j := &cfg.Jobs
	j.Disabled = true
	j.PollBackoff = []time.Duration{time.Minute, time.Hour}
	j.RedeliveryBackoff = []time.Duration{time.Minute, 2 * time.Minute}
	j.ApplyBackoff = []time.Duration{time.Minute, 2 * time.Minute}
	j.MaxApplyAttempts, j.BatchSize, j.Concurrency, j.Lease = 3, 20, 8, time.Minute
	return cfg
}

func newGateway(t testing.TB, store *model.Store, b *bank, o gwOptions) *gateway {
	t.Helper()
	if o.owner == "" {
		o.owner = "gw-a"
	}
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	if o.maxConcurrent == 0 {
		o.maxConcurrent = 8
	}
	if o.level == 0 {
		o.level = logrus.DebugLevel
	}
	cfg := testConfig(o.owner, b, o)
	if o.configure != nil {
		o.configure(cfg)
	}
	sink := &logSink{}
	log := logrus.New()
	log.SetOutput(sink)
	log.SetFormatter(&logrus.JSONFormatter{})
	log.SetLevel(o.level)
	g, err := gw.New(context.Background(), cfg, log, gw.WithStore(store))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return &gateway{svc: g.Service(), jobs: g.Jobs(), logs: sink, store: store, metrics: g.Metrics()}
}

func (g *gateway) run(t testing.TB, job string) service.JobStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := g.jobs.RunOnce(ctx, job)
	if err != nil {
		t.Fatalf("%s: %v", job, err)
	}
	return st
}

// seed stores n orders named prefix00000... in status st, due a second
// ago, with URLs at the bank; fn adjusts each before it is stored.
func seed(t testing.TB, store *model.Store, b *bank, prefix string, n int, st model.Status, fn func(i int, o *model.Order)) []string {
	t.Helper()
	now := time.Now().UTC()
	due := now.Add(-time.Second)
	nos := make([]string, n)
	const per = 500
	for start := 0; start < n; start += per {
		err := store.InTx(context.Background(), func(tx model.Queries) error {
			for i := start; i < min(start+per, n); i++ {
				o := &model.Order{OrderNo: fmt.Sprintf("%s%05d", prefix, i), OrgCode: orgCode, Status: st, RequestHash: "h",
					ApplicantName: "某某建设有限公司", ApplicantCode: fmt.Sprintf("9111%s%010d", prefix, i),
					DepositAmount: decimal.RequireFromString("10000.00"), ProjectName: "道路工程", ProjectCode: "XM" + prefix,
					LotName: "一标段", LotCode: "BD1", OpeningAt: now.Add(7 * 24 * time.Hour), DeadlineAt: now.Add(6 * 24 * time.Hour),
					TendererName: "某某局", TendererCode: "12110000000000000X", AccountBank: "某银行", AccountName: "某某建设有限公司",
					AccountNo: "6222000011112222", ContactName: "张三", ContactPhone: "13800005678", ContactEmail: "a@b.cn",
					ContinueURL: b.srv.URL + "/continue", QueryURL: b.srv.URL + "/query", PullURL: b.srv.URL + "/pull",
					NextCheckAt: &due}
				if fn != nil {
					fn(i, o)
				}
				if err := tx.CreateOrder(o); err != nil {
					return err
				}
				nos[i] = o.OrderNo
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return nos
}

// makeDue moves the orders' next check to the past: their next due time.
func makeDue(t testing.TB, store *model.Store, nos []string) {
	t.Helper()
	past := time.Now().UTC().Add(-time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	work := make(chan string)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for no := range work {
				if _, err := store.UpdateOrder(no, model.OrderChange{}.DueAt(past), model.OrderGuard{}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, no := range nos {
		work <- no
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func order(t testing.TB, store *model.Store, no string) *model.Order {
	t.Helper()
	o, err := store.Order(no)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// within reports whether got lies in [lo, hi], with a second of slack for
// the database's rounding of fractional seconds.
func within(got *time.Time, lo, hi time.Time) bool {
	return got != nil && !got.Before(lo.Add(-time.Second)) && !got.After(hi.Add(time.Second))
}

func runAll(t *testing.T, gws []*gateway, job string) []service.JobStats {
	t.Helper()
	stats := make([]service.JobStats, len(gws))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			st, err := g.jobs.RunOnce(ctx, job)
			if err != nil {
				t.Errorf("%s on instance %d: %v", job, i, err)
			}
			stats[i] = st
		}()
	}
	close(start)
	wg.Wait()
	return stats
}

func TestPollThreeInstancesQueryEachDueOrderOnce(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		b.set("ok", 2*time.Millisecond)
		// 300 on MariaDB, where instances really share a server. SQLite
		// (one embedded writer, a commit per fsync) gets fewer, to stay quick.
		n := 300
		if store.Driver() == "sqlite" {
			n = 60
		}
		nos := seed(t, store, b, "P", n, model.StatusProcessing, nil)
		var gws []*gateway
		for _, owner := range []string{"gw-a", "gw-b", "gw-c"} {
			gws = append(gws, newGateway(t, store, b, gwOptions{owner: owner, level: logrus.InfoLevel}))
		}
		for round := 1; round <= 2; round++ {
			before := time.Now().UTC()
			stats := runAll(t, gws, service.JobPollPending)
			after := time.Now().UTC()
			claimed, done := 0, 0
			for _, st := range stats {
				claimed, done = claimed+st.Claimed, done+st.Done
				if st.Failed != 0 || st.Released != 0 {
					t.Errorf("round %d: %+v", round, st)
				}
			}
			t.Logf("round %d: claimed per instance %d, %d, %d", round, stats[0].Claimed, stats[1].Claimed, stats[2].Claimed)
			if claimed != len(nos) || done != len(nos) {
				t.Errorf("round %d: claimed %d, done %d, want %d each", round, claimed, done, len(nos))
			}
			for _, no := range nos {
				if n := b.count("query", no); n != round {
					t.Errorf("round %d: %s queried %d times, want %d", round, no, n, round)
				}
				o := order(t, store, no)
				// After the n-th query the wait is the (n+1)-th step; the
				// last step (1h) repeats.
				if o.CheckAttempts != round || !within(o.NextCheckAt, before.Add(time.Hour), after.Add(time.Hour)) {
					t.Errorf("round %d: %s attempts %d next %v, want %d and an hour on", round, no, o.CheckAttempts, o.NextCheckAt, round)
				}
				if o.LeaseOwner != "" || o.LeaseUntil != nil || o.Status != model.StatusProcessing {
					t.Errorf("round %d: %s left %s with lease %q %v", round, no, o.Status, o.LeaseOwner, o.LeaseUntil)
				}
			}
			// Nothing is due any more: another run of each claims nothing.
			for _, st := range runAll(t, gws, service.JobPollPending) {
				if st.Claimed != 0 {
					t.Errorf("round %d: a run after the cycle claimed %d", round, st.Claimed)
				}
			}
			makeDue(t, store, nos) // the next due time
		}
	})
}

func TestPollAppliesAnswers(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		g := newGateway(t, store, b, gwOptions{})
		opened := time.Now().UTC().Add(-25 * time.Hour)
		tests := []struct {
			name     string
			answer   string
			opening  *time.Time
			status   model.Status
			queried  int
			flag     model.Flag
			nextNull bool
		}{
			{"processing stays and waits the next step", wire.NotifyProcessing, nil, model.StatusProcessing, 1, "", false},
			// A query's answer carries no bhno, and the pull needs one: the
			// order waits for the applynotify (or the bhno) off every queue.
			{"issued moves on, the pull waits for its bhno", wire.NotifyIssued, nil, model.StatusIssued, 1, "", true},
			{"failed moves on, no more checks", wire.NotifyFailed, nil, model.StatusFailed, 1, "", true},
			{"a day after the bid opening: stale, not queried", wire.NotifyProcessing, &opened, model.StatusProcessing, 0, model.FlagStale, true},
		}
		nos := seed(t, store, b, "A", len(tests), model.StatusProcessing, func(i int, o *model.Order) {
			if tests[i].opening != nil {
				o.OpeningAt, o.DeadlineAt = *tests[i].opening, tests[i].opening.Add(-time.Hour)
			}
		})
		for i, tc := range tests {
			b.answer(nos[i], tc.answer)
		}
		st := g.run(t, service.JobPollPending)
		if st.Claimed != 4 || st.Done != 3 || st.Flagged != 1 || st.Failed != 0 {
			t.Errorf("stats %+v, want 4 claimed, 3 done, 1 flagged", st)
		}
		for i, tc := range tests {
			o := order(t, store, nos[i])
			if o.Status != tc.status || o.Flag != tc.flag || b.count("query", nos[i]) != tc.queried {
				t.Errorf("%s: status %s flag %q queried %d", tc.name, o.Status, o.Flag, b.count("query", nos[i]))
			}
			if (o.NextCheckAt == nil) != tc.nextNull {
				t.Errorf("%s: next check %v", tc.name, o.NextCheckAt)
			}
			if o.LeaseOwner != "" || o.LeaseUntil != nil {
				t.Errorf("%s: lease %q %v left", tc.name, o.LeaseOwner, o.LeaseUntil)
			}
		}
		evs, err := store.Events(nos[3])
		if err != nil || len(evs) != 1 || evs[0].Name != "stale" {
			t.Errorf("stale order's events: %+v %v", evs, err)
		}
		if n := len(g.logs.lines("order stale: still processing after the bid opening; polling stopped")); n != 1 {
			t.Errorf("%d stale warnings logged, want 1", n)
		}
	})
}

func TestDeadInstanceLeasesAreTakenOverWhenTheyRunOut(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		nos := seed(t, store, b, "D", 50, model.StatusProcessing, nil)
		// Instance "gw-dead" claimed 20 of them and died mid-batch: it
		// never queried them and never gave them back.
		now := time.Now().UTC()
		until := now.Add(1500 * time.Millisecond)
		dead, err := store.ClaimOrders(model.QueuePoll, "gw-dead/poll_pending/1", now, now, until, 20)
		if err != nil || len(dead) != 20 {
			t.Fatalf("dead instance's claim: %d %v", len(dead), err)
		}
		g := newGateway(t, store, b, gwOptions{owner: "gw-b"})
		if st := g.run(t, service.JobPollPending); st.Claimed != 30 || st.Done != 30 {
			t.Errorf("while the dead lease lives: %+v, want the 30 others", st)
		}
		for _, o := range dead {
			if n := b.count("query", o.OrderNo); n != 0 {
				t.Errorf("%s queried under another instance's live lease", o.OrderNo)
			}
		}
		time.Sleep(time.Until(until) + 50*time.Millisecond)
		if st := g.run(t, service.JobPollPending); st.Claimed != 20 || st.Done != 20 {
			t.Errorf("after the lease ran out: %+v, want the dead instance's 20", st)
		}
		for _, no := range nos {
			o := order(t, store, no)
			if n := b.count("query", no); n != 1 || o.CheckAttempts != 1 || o.LeaseOwner != "" {
				t.Errorf("%s: queried %d times, attempts %d, lease %q", no, n, o.CheckAttempts, o.LeaseOwner)
			}
		}
	})
}

func TestStopMidBatch(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		tests := []struct {
			name string
			mode string        // the bank while the first instance runs
			wait time.Duration // Stop's deadline
		}{
			// In-flight calls finish and are stored; what was claimed but
			// not started is handed back: every order queried exactly once.
			{"in-flight calls finish within the deadline", "ok", 10 * time.Second},
			// Calls that outlast the deadline are cancelled; their orders
			// are handed back unqueried-as-far-as-we-know and taken over.
			{"calls past the deadline are cut off", "hang", 300 * time.Millisecond},
		}
		for k, tc := range tests {
			b := newBank(t)
			b.set(tc.mode, 200*time.Millisecond)
			nos := seed(t, store, b, fmt.Sprintf("S%d", k), 60, model.StatusProcessing, nil)
			a := newGateway(t, store, b, gwOptions{owner: fmt.Sprintf("gw-a%d", k), configure: func(c *config.Config) {
				c.Jobs.Concurrency, c.Jobs.BatchSize = 4, 30
			}})
			var st service.JobStats
			ran := make(chan struct{})
			go func() {
				defer close(ran)
				st, _ = a.jobs.RunOnce(context.Background(), service.JobPollPending)
			}()
			for b.inflight.Load() < 4 {
				time.Sleep(5 * time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.wait)
			err := a.jobs.Stop(ctx)
			cancel()
			<-ran
			if (err != nil) != (tc.mode == "hang") {
				t.Errorf("%s: Stop: %v", tc.name, err)
			}
			if _, err := a.jobs.RunOnce(context.Background(), service.JobPollPending); !errors.Is(err, service.ErrStopping) {
				t.Errorf("%s: a run after Stop: %v, want ErrStopping", tc.name, err)
			}
			// Stop released everything: another instance takes the rest now,
			// without waiting for the leases (a minute) to run out.
			for _, no := range nos {
				if o := order(t, store, no); o.LeaseOwner != "" {
					t.Fatalf("%s: %s still leased by %q after Stop", tc.name, no, o.LeaseOwner)
				}
			}
			b.set("ok", 0)
			g := newGateway(t, store, b, gwOptions{owner: fmt.Sprintf("gw-b%d", k)})
			st2 := g.run(t, service.JobPollPending)
			t.Logf("%s: first instance %+v; second %+v", tc.name, st, st2)
			if st.Claimed != st.Done+st.Failed+st.Released {
				t.Errorf("%s: first instance's counts do not add up: %+v", tc.name, st)
			}
			if st.Done+st2.Done != len(nos) {
				t.Errorf("%s: %d + %d orders done, want %d", tc.name, st.Done, st2.Done, len(nos))
			}
			if tc.mode == "ok" && (st.Done < 4 || st.Released == 0) {
				t.Errorf("%s: first instance %+v: want its in-flight calls done and the rest released", tc.name, st)
			}
			for _, no := range nos {
				o := order(t, store, no)
				if o.CheckAttempts != 1 || o.LeaseOwner != "" {
					t.Errorf("%s: %s attempts %d lease %q", tc.name, no, o.CheckAttempts, o.LeaseOwner)
				}
				if n := b.count("query", no); tc.mode == "ok" && n != 1 {
					t.Errorf("%s: %s queried %d times", tc.name, no, n)
				}
			}
		}
	})
}

func TestJobsBackOffWhenTheInstitutionMisbehaves(t *testing.T) {
	modes := []string{"fail", "hang", "garbage"}
	type check func(t *testing.T, store *model.Store, key string, before, after time.Time)
	jobs := []struct {
		job   string
		setup func(t *testing.T, store *model.Store, b *bank) []string // returns keys
		check check
	}{
		{service.JobPollPending, func(t *testing.T, store *model.Store, b *bank) []string {
			return seed(t, store, b, "Q", 3, model.StatusProcessing, nil)
		}, func(t *testing.T, store *model.Store, no string, before, after time.Time) {
			o := order(t, store, no)
			if o.Status != model.StatusProcessing || o.CheckAttempts != 1 || !within(o.NextCheckAt, before.Add(time.Hour), after.Add(time.Hour)) || o.LeaseOwner != "" {
				t.Errorf("%s: %s attempts %d next %v lease %q", no, o.Status, o.CheckAttempts, o.NextCheckAt, o.LeaseOwner)
			}
		}},
		{service.JobRecoverApplying, func(t *testing.T, store *model.Store, b *bank) []string {
			return seed(t, store, b, "R", 3, model.StatusApplying, func(_ int, o *model.Order) { o.QueryURL, o.PullURL = "", "" })
		}, func(t *testing.T, store *model.Store, no string, before, after time.Time) {
			o := order(t, store, no)
			if o.Status != model.StatusApplying || o.CheckAttempts != 1 || o.Flag != "" || o.QueryURL != "" ||
				!within(o.NextCheckAt, before.Add(time.Minute), after.Add(time.Minute)) || o.LeaseOwner != "" {
				t.Errorf("%s: %s attempts %d flag %q next %v lease %q", no, o.Status, o.CheckAttempts, o.Flag, o.NextCheckAt, o.LeaseOwner)
			}
		}},
		{service.JobPullFiles, func(t *testing.T, store *model.Store, b *bank) []string {
			return seed(t, store, b, "F", 3, model.StatusIssued, func(i int, o *model.Order) {
				bh := fmt.Sprintf("BH-F%d", i)
				o.GuaranteeNo, o.FilePending = sql.NullString{String: bh, Valid: true}, true
			})
		}, func(t *testing.T, store *model.Store, no string, before, after time.Time) {
			o := order(t, store, no)
			if _, err := store.FileInfo(no); !errors.Is(err, model.ErrNotFound) {
				t.Errorf("%s: a file is stored: %v", no, err)
			}
			if !o.FilePending || o.CheckAttempts != 1 || o.Flag != "" || !within(o.NextCheckAt, before.Add(time.Minute), after.Add(time.Minute)) || o.LeaseOwner != "" {
				t.Errorf("%s: pending %v attempts %d flag %q next %v lease %q", no, o.FilePending, o.CheckAttempts, o.Flag, o.NextCheckAt, o.LeaseOwner)
			}
		}},
		{service.JobDeliverOutbox, func(t *testing.T, store *model.Store, b *bank) []string {
			return pushState(t, store, 3)
		}, func(t *testing.T, store *model.Store, id string, before, after time.Time) {
			d := delivery(t, store, id)
			if d.Status != model.DeliveryPending || d.Attempts != 1 || d.LastError == "" ||
				!within(d.NextAttemptAt, before.Add(time.Minute), after.Add(time.Minute)) || d.LeaseOwner != "" {
				t.Errorf("delivery %s: %s attempts %d next %v error %q lease %q", id, d.Status, d.Attempts, d.NextAttemptAt, d.LastError, d.LeaseOwner)
			}
		}},
	}
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, _ *model.Store) {
		driver := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
		for _, mode := range modes {
			for _, j := range jobs {
				t.Run(mode+"/"+j.job, func(t *testing.T) {
					t.Parallel()
					store := modeltest.Open(t, driver, os.Getenv)
					b := newBank(t)
					b.set(mode, 0)
					g := newGateway(t, store, b, gwOptions{timeout: 300 * time.Millisecond})
					keys := j.setup(t, store, b)
					before := time.Now().UTC()
					st := g.run(t, j.job)
					after := time.Now().UTC()
					if st.Claimed != len(keys) || st.Failed != len(keys) || st.Done != 0 {
						t.Errorf("stats %+v, want %d claimed and failed, none done", st, len(keys))
					}
					for _, k := range keys {
						j.check(t, store, k, before, after)
					}
					// The back-off holds: nothing is due again yet.
					if st := g.run(t, j.job); st.Claimed != 0 {
						t.Errorf("a second run claimed %d before the back-off passed", st.Claimed)
					}
				})
			}
		}
	})
}

// pushState stores a project-state push of lot XM/BD with n deliveries to
// the bank, due now, and returns their ids.
func pushState(t testing.TB, store *model.Store, n int) []string {
	t.Helper()
	var ids []string
	err := store.InTx(context.Background(), func(tx model.Queries) error {
		for i := range n {
			ds, err := tx.InsertPush(&model.ProjectStatePush{ProjectName: "道路工程", ProjectCode: fmt.Sprintf("XM%d", i),
				LotName: "一标段", LotCode: "BD1", OpeningAt: time.Now(), State: "1"}, []string{orgCode})
			if err != nil {
				return err
			}
			ids = append(ids, fmt.Sprint(ds[0].ID))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// InsertPush made them due at its clock reading: let that pass.
	time.Sleep(5 * time.Millisecond)
	return ids
}

func delivery(t testing.TB, store *model.Store, id string) *model.Delivery {
	t.Helper()
	var n int64
	fmt.Sscan(id, &n)
	d, err := store.Delivery(n)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPullStoresThePDF(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		g := newGateway(t, store, b, gwOptions{})
		nos := seed(t, store, b, "F", 3, model.StatusIssued, func(i int, o *model.Order) {
			bh := fmt.Sprintf("BH%d", i)
			o.GuaranteeNo, o.FilePending = sql.NullString{String: bh, Valid: true}, true
			if i == 2 { // issued by a query: no bhno yet, nothing to pull with
				o.GuaranteeNo = sql.NullString{}
			}
		})
		st := g.run(t, service.JobPullFiles)
		if st.Claimed != 2 || st.Done != 2 {
			t.Errorf("stats %+v, want 2 claimed and done", st)
		}
		sum := sha256.Sum256(testPDF)
		for i, no := range nos[:2] {
			f, err := store.File(no)
			if err != nil {
				t.Fatalf("%s: %v", no, err)
			}
			if f.Sha256 != hex.EncodeToString(sum[:]) || !bytes.Equal(f.Content, testPDF) || f.Source != "pull" {
				t.Errorf("%s: stored %s %d bytes from %s", no, f.Sha256, f.Size, f.Source)
			}
			if o := order(t, store, no); o.FilePending || o.LeaseOwner != "" || b.count("pull", fmt.Sprintf("BH%d", i)) != 1 {
				t.Errorf("%s: pending %v lease %q", no, o.FilePending, o.LeaseOwner)
			}
		}
		if b.total("pull") != 2 {
			t.Errorf("%d pulls, want 2", b.total("pull"))
		}
		if st := g.run(t, service.JobPullFiles); st.Claimed != 0 {
			t.Errorf("a stored file was pulled again: %+v", st)
		}
	})
}

func TestPullFlagsAfterManyFailuresAndKeepsTrying(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		b.set("fail", 0)
		g := newGateway(t, store, b, gwOptions{})
		nos := seed(t, store, b, "F", 2, model.StatusIssued, func(i int, o *model.Order) {
			bh := fmt.Sprintf("BH%d", i)
			o.GuaranteeNo, o.FilePending, o.CheckAttempts = sql.NullString{String: bh, Valid: true}, true, 8+i // the 9th and the 10th failure
		})
		before := time.Now().UTC()
		g.run(t, service.JobPullFiles)
		after := time.Now().UTC()
		tests := []struct {
			name string
			flag model.Flag
			wait time.Duration
		}{
			{"9th failure: the back-off's last step, not yet flagged", "", time.Hour},
			{"10th failure: flagged pull_failed, tried again hourly", model.FlagPullFailed, time.Hour},
		}
		for i, tc := range tests {
			o := order(t, store, nos[i])
			if o.Flag != tc.flag || !within(o.NextCheckAt, before.Add(tc.wait), after.Add(tc.wait)) || !o.FilePending {
				t.Errorf("%s: flag %q next %v pending %v", tc.name, o.Flag, o.NextCheckAt, o.FilePending)
			}
		}
		// Once it works again, the file is stored and the flag cleared.
		b.set("ok", 0)
		makeDue(t, store, nos)
		g.run(t, service.JobPullFiles)
		if o := order(t, store, nos[1]); o.Flag != "" || o.FilePending {
			t.Errorf("after a good pull: flag %q pending %v", o.Flag, o.FilePending)
		}
	})
}

// TestPullRefusesAFileThatIsNoPDF: a pulled file that is not a readable
// PDF (here the five bytes "%PDF-", which once passed) is not stored; the
// order keeps waiting for its file, gets an event saying why, the refusal
// is counted, and the pull is tried again later (docs/decisions.md §37).
func TestPullRefusesAFileThatIsNoPDF(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		b.set("fakepdf", 0)
		g := newGateway(t, store, b, gwOptions{})
		nos := seed(t, store, b, "FP", 1, model.StatusIssued, func(_ int, o *model.Order) {
			o.GuaranteeNo, o.FilePending = sql.NullString{String: "BH-FP", Valid: true}, true
		})
		before := time.Now().UTC()
		if st := g.run(t, service.JobPullFiles); st.Claimed != 1 || st.Failed != 1 {
			t.Errorf("stats %+v, want the pull failed", st)
		}
		if _, err := store.File(nos[0]); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("a file that is no PDF was stored: %v", err)
		}
		o := order(t, store, nos[0])
		if !o.FilePending || o.CheckAttempts != 1 || !within(o.NextCheckAt, before.Add(time.Minute), time.Now().UTC().Add(time.Minute)) {
			t.Errorf("order after the refused file: pending %v attempts %d next %v", o.FilePending, o.CheckAttempts, o.NextCheckAt)
		}
		evs, err := store.Events(nos[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Name != "file_refused" || !strings.Contains(evs[0].Detail, "not a PDF") {
			t.Errorf("events %+v, want one file_refused saying it is not a PDF", evs)
		}
		if n := g.metric(t, `gateway_files_refused_total{institution="BANK01",source="pull"}`); n != 1 {
			t.Errorf("gateway_files_refused_total = %v, want 1", n)
		}
		// The institution sends a real letter: it is stored.
		b.set("ok", 0)
		makeDue(t, store, nos)
		if st := g.run(t, service.JobPullFiles); st.Done != 1 {
			t.Errorf("stats %+v, want the pull done", st)
		}
		if f, err := store.File(nos[0]); err != nil || !bytes.Equal(f.Content, testPDF) {
			t.Errorf("file after a good pull: %v", err)
		}
	})
}

// TestURLOffOriginIsNotCalled: the URLs of an apply answer off the
// institution's origins (another port of the same host) are kept but
// never called, by the poll job, the pull job or the API: the order is
// flagged url_refused with one event, each refusal counted, and the job
// backs off as after a failure. Once the origin is listed in url_origins
// the calls are made and the flag goes (docs/decisions.md §39).
func TestURLOffOriginIsNotCalled(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		other := newBank(t) // same host, another port: another origin
		b.elsewhere = other.srv.URL
		g := newGateway(t, store, b, gwOptions{})

		// At the apply's answer: processing, URLs kept, flagged at once.
		nos := seed(t, store, b, "UO", 1, model.StatusApplying, func(_ int, o *model.Order) {
			o.QueryURL, o.PullURL, o.ContinueURL = "", "", ""
		})
		if st := g.run(t, service.JobRecoverApplying); st.Done != 1 {
			t.Fatalf("re-send: %+v", st)
		}
		o := order(t, store, nos[0])
		if o.Status != model.StatusProcessing || o.QueryURL != other.srv.URL+"/query" || o.Flag != model.FlagURLRefused {
			t.Errorf("after the apply answer: %s queryurl %q flag %q; want processing, flagged url_refused", o.Status, o.QueryURL, o.Flag)
		}
		urlEvents := func() []model.Event {
			t.Helper()
			evs, err := store.Events(nos[0])
			if err != nil {
				t.Fatal(err)
			}
			var out []model.Event
			for _, e := range evs {
				if e.Name == "url_refused" {
					out = append(out, e)
				}
			}
			return out
		}
		if evs := urlEvents(); len(evs) != 1 || !strings.Contains(evs[0].Detail, "queryurl origin "+other.srv.URL) ||
			!strings.Contains(evs[0].Detail, "pullurl") {
			t.Errorf("url_refused events %+v, want one naming queryurl and pullurl and the origin", evs)
		}
		if n := g.metric(t, `gateway_urls_refused_total{institution="BANK01",url="queryurl"}`); n != 1 {
			t.Errorf("queryurl refusals counted %v, want 1", n)
		}

		// Before each call: the poll job makes none, backs off, and does
		// not repeat the event.
		for round := range 2 {
			makeDue(t, store, nos)
			before := time.Now().UTC()
			if st := g.run(t, service.JobPollPending); st.Claimed != 1 || st.Failed != 1 {
				t.Errorf("poll round %d: %+v, want one failed row", round, st)
			}
			o := order(t, store, nos[0])
			if o.Flag != model.FlagURLRefused || !within(o.NextCheckAt, before.Add(time.Hour), time.Now().UTC().Add(time.Hour)) {
				t.Errorf("poll round %d: flag %q next %v", round, o.Flag, o.NextCheckAt)
			}
		}
		if n := other.total("query"); n != 0 {
			t.Errorf("the other origin was queried %d times", n)
		}
		if calls, err := store.Calls(nos[0]); err != nil || len(calls) != 1 || calls[0].Endpoint != "apply" {
			t.Errorf("recorded calls %+v (%v); want the apply alone: a refused URL is never attempted", calls, err)
		}
		if evs := urlEvents(); len(evs) != 1 {
			t.Errorf("%d url_refused events after the polls, want still 1", len(evs))
		}
		if n := g.metric(t, `gateway_urls_refused_total{institution="BANK01",url="queryurl"}`); n != 3 {
			t.Errorf("queryurl refusals counted %v, want 3", n)
		}
		// The API's refresh is refused too, with the reason.
		if _, err := g.svc.Refresh(context.Background(), nos[0]); service.ErrorCode(err) != service.EConflict ||
			!strings.Contains(err.Error(), "queryurl") {
			t.Errorf("refresh: %v, want a conflict naming queryurl", err)
		}

		// Issued by a callback meanwhile: the pull job does not call the
		// pullurl either, and never escalates to pull_failed, which would
		// hide why.
		if _, err := store.UpdateOrder(nos[0], model.OrderChange{}.GuaranteeNo("BH-UO").FilePending(true).Attempts(20),
			model.OrderGuard{}); err != nil {
			t.Fatal(err)
		}
		if _, err := store.MoveOrder(nos[0], []model.Status{model.StatusProcessing}, model.StatusIssued, model.OrderChange{}); err != nil {
			t.Fatal(err)
		}
		makeDue(t, store, nos)
		if st := g.run(t, service.JobPullFiles); st.Failed != 1 {
			t.Errorf("pull: %+v", st)
		}
		if o := order(t, store, nos[0]); o.Flag != model.FlagURLRefused || other.total("pull") != 0 {
			t.Errorf("pull: flag %q, pulls at the other origin %d", o.Flag, other.total("pull"))
		}

		// The operator lists the origin: the next pull is made and clears the flag.
		g2 := newGateway(t, store, b, gwOptions{owner: "gw-b", configure: func(c *config.Config) {
			c.Institutions[0].URLOrigins = []string{other.srv.URL}
		}})
		makeDue(t, store, nos)
		if st := g2.run(t, service.JobPullFiles); st.Done != 1 || other.total("pull") != 1 {
			t.Errorf("pull with the origin listed: %+v, pulls %d", st, other.total("pull"))
		}
		if o := order(t, store, nos[0]); o.Flag != model.FlagNone || o.FilePending {
			t.Errorf("after a good pull: flag %q pending %v", o.Flag, o.FilePending)
		}
	})
}

func TestRecoverApplying(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		tests := []struct {
			name     string
			mode     string
			attempts int // before the run
			status   model.Status
			flag     model.Flag
			done     int
		}{
			{"accepted on re-send: processing with its URLs", "ok", 1, model.StatusProcessing, "", 1},
			{"refused on re-send: apply_rejected, a definite answer", "refuse", 1, model.StatusApplyRejected, "", 1},
			{"still unknown after the last attempt: flagged", "garbage", 2, model.StatusApplying, model.FlagApplyUnconfirmed, 0},
		}
		for i, tc := range tests {
			b := newBank(t)
			b.set(tc.mode, 0)
			g := newGateway(t, store, b, gwOptions{owner: fmt.Sprintf("gw-%d", i)})
			nos := seed(t, store, b, fmt.Sprintf("R%d", i), 1, model.StatusApplying, func(_ int, o *model.Order) {
				o.QueryURL, o.PullURL, o.ContinueURL, o.CheckAttempts = "", "", "", tc.attempts
			})
			st := g.run(t, service.JobRecoverApplying)
			o := order(t, store, nos[0])
			if st.Claimed != 1 || st.Done != tc.done || o.Status != tc.status || o.Flag != tc.flag || o.LeaseOwner != "" {
				t.Errorf("%s: %+v; order %s flag %q lease %q", tc.name, st, o.Status, o.Flag, o.LeaseOwner)
			}
			if b.count("apply", nos[0]) != 1 {
				t.Errorf("%s: apply sent %d times, want once with the same orderno", tc.name, b.count("apply", nos[0]))
			}
			if tc.status == model.StatusProcessing && (o.QueryURL != b.srv.URL+"/query" || o.NextCheckAt == nil) {
				t.Errorf("%s: queryurl %q next %v", tc.name, o.QueryURL, o.NextCheckAt)
			}
			// Given up on: never claimed again, even when due.
			makeDue(t, store, nos)
			if st := g.run(t, service.JobRecoverApplying); st.Claimed != 0 {
				t.Errorf("%s: claimed again: %+v", tc.name, st)
			}
		}

		// An order whose institution was removed from the config counts its
		// attempts like any other, and is flagged after the last one.
		b := newBank(t)
		g := newGateway(t, store, b, gwOptions{owner: "gw-gone"})
		nos := seed(t, store, b, "RG", 1, model.StatusApplying, func(_ int, o *model.Order) { o.OrgCode, o.CheckAttempts = "GONE", 2 })
		st := g.run(t, service.JobRecoverApplying)
		o := order(t, store, nos[0])
		if st.Claimed != 1 || st.Failed != 1 || o.Status != model.StatusApplying || o.CheckAttempts != 3 ||
			o.Flag != model.FlagApplyUnconfirmed || o.LeaseOwner != "" {
			t.Errorf("no institution: %+v; order %s attempts %d flag %q lease %q", st, o.Status, o.CheckAttempts, o.Flag, o.LeaseOwner)
		}
		makeDue(t, store, nos)
		if st := g.run(t, service.JobRecoverApplying); st.Claimed != 0 {
			t.Errorf("no institution: claimed again after the flag: %+v", st)
		}
	})
}

func TestDeliverOutbox(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		ctx := context.Background()
		b := newBank(t)
		g := newGateway(t, store, b, gwOptions{configure: func(c *config.Config) {
			c.Jobs.RedeliveryBackoff = []time.Duration{time.Second, 2 * time.Second}
		}})
		ids := pushState(t, store, 4)
		past := time.Now().UTC().Add(-time.Second)
		live := time.Now().UTC().Add(time.Minute)
		// 0: fresh; 1: its instance died mid-attempt; 2: another instance is
		// attempting it now; 3: one attempt left.
		modeltest.Exec(t, store, "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ?", "gw-dead/1", past, ids[1])
		modeltest.Exec(t, store, "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ?", "gw-live/1", live, ids[2])
		modeltest.Exec(t, store, "UPDATE deliveries SET attempts = 2 WHERE id = ?", ids[3])

		b.set("unavailable", 0) // 503 with Retry-After: 120
		before := time.Now().UTC()
		st := g.run(t, service.JobDeliverOutbox)
		after := time.Now().UTC()
		if st.Claimed != 3 || st.Failed != 3 || st.Done != 0 {
			t.Errorf("stats %+v, want 3 taken (not the live lease's), 3 failed", st)
		}
		for _, id := range ids[:2] {
			d := delivery(t, store, id)
			// The institution asked for 120 s, more than the back-off's 1 s.
			if d.Status != model.DeliveryPending || d.Attempts != 1 || !within(d.NextAttemptAt, before.Add(120*time.Second), after.Add(120*time.Second)) {
				t.Errorf("delivery %s: %s attempts %d next %v, want Retry-After honoured", id, d.Status, d.Attempts, d.NextAttemptAt)
			}
		}
		if d := delivery(t, store, ids[2]); d.Attempts != 0 || d.LeaseOwner != "gw-live/1" {
			t.Errorf("a delivery under another instance's live lease was attempted: %+v", d)
		}
		if d := delivery(t, store, ids[3]); d.Status != model.DeliveryDead || d.NextAttemptAt != nil {
			t.Errorf("after the last attempt: %s next %v, want dead", d.Status, d.NextAttemptAt)
		}

		// POST /v1/deliveries/{id}/retry re-arms the dead one; it goes now.
		var dead int64
		fmt.Sscan(ids[3], &dead)
		if _, err := g.svc.RetryDelivery(ctx, dead); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		b.set("ok", 0)
		st = g.run(t, service.JobDeliverOutbox)
		if st.Claimed != 1 || st.Done != 1 {
			t.Errorf("after retry: %+v, want the re-armed one delivered", st)
		}
		if d := delivery(t, store, ids[3]); d.Status != model.DeliveryDelivered || d.Attempts != 4 {
			t.Errorf("re-armed delivery: %s attempts %d", d.Status, d.Attempts)
		}
		// Sent twice: the 503 that killed it, and the re-armed attempt.
		if n := b.count("xmstate", "XM3"); n != 2 {
			t.Errorf("XM3 sent %d times, want 2", n)
		}
	})
}

func TestReconcile(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		ctx := context.Background()
		b := newBank(t)
		g := newGateway(t, store, b, gwOptions{})
		now := time.Now().UTC()
		type pay struct {
			kind, amount string
		}
		cases := []struct {
			status  model.Status
			premium string
			opened  bool
			pays    []pay
			want    string // finding kind, "" for none
		}{
			{model.StatusIssued, "100.00", false, []pay{{"1", "60.10"}, {"1", "39.90"}}, ""},
			{model.StatusIssued, "100.00", false, nil, service.FindingIssuedUnpaid},
			{model.StatusIssued, "100.00", false, []pay{{"1", "90.00"}}, service.FindingPremiumMismatch},
			{model.StatusIssued, "100.00", false, []pay{{"1", "100.00"}, {"2", "100.00"}}, service.FindingRefundWhileIssued},
			{model.StatusSurrendered, "100.00", false, []pay{{"1", "100.00"}, {"2", "100.00"}}, ""},
			{model.StatusFailed, "", false, []pay{{"1", "50.00"}}, service.FindingPaidNotIssued},
			{model.StatusFailed, "", false, []pay{{"1", "50.00"}, {"2", "50.00"}}, ""},
			{model.StatusProcessing, "", false, []pay{{"1", "50.00"}}, ""},
			{model.StatusProcessing, "", true, []pay{{"1", "50.00"}}, service.FindingPaidNotIssued},
			// Stored before refunds above the payments were refused.
			{model.StatusSurrendered, "200.00", false, []pay{{"1", "200.00"}, {"2", "99999.00"}}, service.FindingRefundExceedsPaid},
			{model.StatusFailed, "", false, []pay{{"2", "0.01"}}, service.FindingRefundExceedsPaid},
		}
		nos := seed(t, store, b, "C", len(cases), model.StatusApplying, func(i int, o *model.Order) {
			c := cases[i]
			o.Status = c.status
			if c.premium != "" {
				o.Premium = decimal.NewNullDecimal(decimal.RequireFromString(c.premium))
			}
			if c.status == model.StatusIssued || c.status == model.StatusSurrendered {
				bh := fmt.Sprintf("BH-C%d", i)
				o.GuaranteeNo = sql.NullString{String: bh, Valid: true}
			}
			if c.opened {
				o.OpeningAt, o.DeadlineAt = now.Add(-time.Hour), now.Add(-2*time.Hour)
			}
		})
		want := map[string]bool{service.FindingPaidNotIssued + " GHOST": true}
		k := 0
		for i, c := range cases {
			if c.want != "" {
				want[c.want+" "+nos[i]] = true
			}
			for _, p := range c.pays {
				k++
				if err := store.InsertPayment(&model.Payment{DedupKey: fmt.Sprintf("k%d", k), OrderNo: nos[i], OrgCode: orgCode,
					Kind: p.kind, Amount: decimal.RequireFromString(p.amount), PaidAt: now}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := store.InsertPayment(&model.Payment{DedupKey: "ghost", OrderNo: "GHOST", OrgCode: orgCode, Kind: "1",
			Amount: decimal.RequireFromString("9.99"), PaidAt: now}); err != nil {
			t.Fatal(err)
		}

		const date = "2026-03-01"
		for run := 1; run <= 2; run++ {
			// The first run is full; the second, incremental, finds the
			// same orders changed since the first began (its overlap).
			rs, err := g.svc.Reconcile(ctx, date, run == 1)
			if err != nil {
				t.Fatal(err)
			}
			wantNew := len(want)
			if run == 2 {
				wantNew = 0
			}
			if rs.Findings != len(want) || rs.New != wantNew || rs.Examined != len(cases)+1 {
				t.Errorf("run %d: %+v, want %d findings, %d new", run, rs, len(want), wantNew)
			}
		}
		fs, err := g.svc.Findings(ctx, date)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, f := range fs {
			got[f.Kind+" "+f.OrderNo] = true
			if strings.Contains(f.Detail, "6222000011112222") || strings.Contains(f.Detail, "13800005678") {
				t.Errorf("finding detail carries personal data: %q", f.Detail)
			}
		}
		if fmt.Sprint(keys(got)) != fmt.Sprint(keys(want)) {
			t.Errorf("findings\n got %v\nwant %v", keys(got), keys(want))
		}
		// Logged once each, though the run was made twice.
		if n := len(g.logs.lines("reconciliation finding")); n != len(want) {
			t.Errorf("%d findings logged, want %d", n, len(want))
		}
	})
}

// TestReconcileIncremental: after a run, the next reads only what changed
// since it began: an order that got a payment, an order whose bid opened,
// a payment of an unknown orderno; the orders nobody touched are not read.
func TestReconcileIncremental(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		ctx := context.Background()
		b := newBank(t)
		g := newGateway(t, store, b, gwOptions{})
		now := time.Now().UTC()
		const n = 30
		nos := seed(t, store, b, "I", n, model.StatusFailed, func(i int, o *model.Order) {
			if i == 1 {
				o.Status = model.StatusProcessing
			}
		})
		pay := func(key, orderNo string) {
			t.Helper()
			if err := store.InsertPayment(&model.Payment{DedupKey: key, OrderNo: orderNo, OrgCode: orgCode, Kind: "1",
				Amount: decimal.RequireFromString("10.00"), PaidAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		pay("paid-before-opening", nos[1]) // processing, paid: normal until its bid opens
		// Everything so far happened two days ago.
		modeltest.Exec(t, store, "UPDATE orders SET updated_at = ?", now.Add(-48*time.Hour))
		modeltest.Exec(t, store, "UPDATE payments SET created_at = ?", now.Add(-48*time.Hour))

		full, err := g.svc.Reconcile(ctx, "2026-03-01", false) // no mark yet: full
		if err != nil {
			t.Fatal(err)
		}
		if !full.Full || full.Examined != n || full.Findings != 0 {
			t.Fatalf("first run: %+v, want a full run over %d orders and no finding", full, n)
		}

		pay("late-pay", nos[0])                                                                                        // a failed order paid
		modeltest.Exec(t, store, "UPDATE orders SET opening_at = ? WHERE order_no = ?", now.Add(-time.Second), nos[1]) // its bid opened
		pay("ghost-pay", "GHOST-I")                                                                                    // nobody's order
		inc, err := g.svc.Reconcile(ctx, "2026-03-02", false)
		if err != nil {
			t.Fatal(err)
		}
		if inc.Full || inc.Examined != 3 || inc.Findings != 3 || inc.New != 3 {
			t.Errorf("incremental run: %+v, want 2 orders and 1 orphan examined, 3 new findings", inc)
		}
		fs, err := g.svc.Findings(ctx, "2026-03-02")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, f := range fs {
			got[f.Kind+" "+f.OrderNo] = true
		}
		want := map[string]bool{service.FindingPaidNotIssued + " " + nos[0]: true,
			service.FindingPaidNotIssued + " " + nos[1]: true, service.FindingPaidNotIssued + " GHOST-I": true}
		if fmt.Sprint(keys(got)) != fmt.Sprint(keys(want)) {
			t.Errorf("findings\n got %v\nwant %v", keys(got), keys(want))
		}

		// A full run on demand still reads everything.
		again, err := g.svc.Reconcile(ctx, "2026-03-02", true)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Full || again.Examined != n+1 || again.New != 0 {
			t.Errorf("full run: %+v, want %d examined, nothing new", again, n+1)
		}
	})
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestReconcileRunsInOneInstance(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		b := newBank(t)
		var gws []*gateway
		for _, owner := range []string{"gw-a", "gw-b", "gw-c"} {
			gws = append(gws, newGateway(t, store, b, gwOptions{owner: owner}))
		}
		seed(t, store, b, "C", 5, model.StatusIssued, func(i int, o *model.Order) {
			bh := fmt.Sprintf("BH%d", i)
			o.GuaranteeNo = sql.NullString{String: bh, Valid: true}
		})
		stats := runAll(t, gws, service.JobReconcile)
		ran := 0
		for _, st := range stats {
			if !st.Skipped {
				ran++
				if st.Claimed != 5 || st.Flagged != 5 {
					t.Errorf("the run that ran: %+v, want 5 examined and 5 findings", st)
				}
			}
		}
		if ran != 1 {
			t.Errorf("%d instances ran the reconciliation, want 1: %+v", ran, stats)
		}
		// A daily schedule keeps the lease an hour after the run: an
		// instance whose clock is behind does not run it again.
		if st := gws[1].run(t, service.JobReconcile); !st.Skipped {
			t.Errorf("a late instance ran it again: %+v", st)
		}
	})
}

func TestSchedulerRunsOnItsSchedule(t *testing.T) {
	store := modeltest.Open(t, "sqlite", os.Getenv)
	b := newBank(t)
	nos := seed(t, store, b, "T", 3, model.StatusProcessing, nil)
	g := newGateway(t, store, b, gwOptions{configure: func(c *config.Config) {
		c.Jobs.Disabled = false
		c.Jobs.PollPending, c.Jobs.PullFiles, c.Jobs.RecoverApplying, c.Jobs.DeliverOutbox = "@every 1s", "@every 1h", "@every 1h", "@every 1h"
	}})
	g.jobs.Start()
	deadline := time.Now().Add(5 * time.Second)
	for b.total("query") < len(nos) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.jobs.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, no := range nos {
		if n := b.count("query", no); n != 1 {
			t.Errorf("%s queried %d times by the scheduled job, want 1", no, n)
		}
	}
	runs := g.logs.lines("job run")
	if len(runs) == 0 {
		t.Fatal("no job run logged")
	}
	for _, f := range []string{"job", "claimed", "done", "failed", "duration_ms"} {
		if _, ok := runs[0][f]; !ok {
			t.Errorf("job run log lacks %s: %v", f, runs[0])
		}
	}
}

func TestNewSchedulerRefusesABadSchedule(t *testing.T) {
	store := modeltest.Open(t, "sqlite", os.Getenv)
	b := newBank(t)
	g := newGateway(t, store, b, gwOptions{})
	tests := []struct {
		name  string
		sched service.Schedules
		want  string
	}{
		{"not a schedule", service.Schedules{PollPending: "every 5s"}, "jobs.poll_pending"},
		{"six fields", service.Schedules{Reconcile: "0 0 2 * * *"}, "jobs.reconcile"},
		{"disabled still checks", service.Schedules{Disabled: true, DeliverOutbox: "@every"}, "jobs.deliver_outbox"},
	}
	for _, tc := range tests {
		_, err := service.NewScheduler(g.svc, tc.sched, logrus.New())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	if _, err := service.NewScheduler(g.svc, service.Schedules{Disabled: true, PollPending: "@every 1s"}, logrus.New()); err != nil {
		t.Errorf("disabled with good schedules: %v", err)
	}
}
