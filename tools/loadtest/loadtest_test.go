package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// gateway starts a real gateway (handlertest) over a fresh database of
// driver and returns it with the database's DSN, for Run to check. Its
// pool is smaller than the load's concurrency on purpose: a gateway that
// needs a second connection while holding one freezes there, as it did
// with GORM's prepared-statement cache (go-gorm/gorm#7465).
func gateway(t *testing.T, driver string) (*handlertest.Gateway, handlertest.Institution, string) {
	t.Helper()
	drv, dsn := modeltest.DSN(t, driver, os.Getenv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := model.Open(ctx, drv, dsn, model.Pool{MaxOpen: 4, MaxIdle: 4, MaxLifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	inst := handlertest.DefaultInstitution("LOAD")
	inst.BaseURL = "http://127.0.0.1:9/unused"
	g := handlertest.Start(t, handlertest.Options{Store: store, Institutions: []handlertest.Institution{inst}})
	return g, inst, dsn
}

// TestRun drives a small load, with repeats, the baseline and a PDF probe,
// at a real gateway on each database, and holds the report to what was
// sent: every callback acknowledged, each stored once, each repeat audited
// as a duplicate, the baseline's rows counted, the big file stored whole.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		driver  string
		n, c    int
		dup     float64
		rounds  int
		repeats int
	}{
		{name: "sqlite", driver: "sqlite", n: 120, c: 8, dup: 0.1, rounds: 1, repeats: 12},
		{name: "sqlite, odd count, alternating rounds", driver: "sqlite", n: 61, c: 4, dup: 0.05, rounds: 3, repeats: 3},
		{name: "mysql", driver: "mysql", n: 200, c: 16, dup: 0.1, rounds: 2, repeats: 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, inst, dsn := gateway(t, tc.driver)
			var out bytes.Buffer
			rep, err := Run(context.Background(), Config{URL: g.URL, Driver: tc.driver, DSN: dsn,
				OrgCode: inst.OrgCode, AppKey: inst.AppKey, AppSecret: inst.AppSecret,
				N: tc.n, C: tc.c, Dup: tc.dup, Rounds: tc.rounds, Timeout: time.Minute, Baseline: true,
				PDFBytes: 512 << 10, InProcess: true, Seed: 7, Out: &out})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			unique := tc.n - tc.repeats
			switch {
			case rep.Repeats != tc.repeats || rep.Paystate+rep.Notify != unique || rep.Orders != (unique+1)/2:
				t.Errorf("plan: %d repeats, %d+%d callbacks, %d orders; want %d repeats of %d callbacks", rep.Repeats,
					rep.Paystate, rep.Notify, rep.Orders, tc.repeats, unique)
			case rep.Ours.OK != tc.n || rep.Ours.ErrorCount() != 0 || rep.Ours.P99 <= 0 || rep.Ours.P50 > rep.Ours.P99:
				t.Errorf("gateway phase: %+v", *rep.Ours)
			case rep.Audit.Acked != unique || !rep.Audit.OK() || rep.Audit.RepeatsAcked != tc.repeats:
				t.Errorf("audit: %+v", *rep.Audit)
			case rep.Audit.DuplicateRows != int64(tc.repeats):
				t.Errorf("duplicate audit rows %d, want one per repeat (%d)", rep.Audit.DuplicateRows, tc.repeats)
			case rep.Base == nil || rep.Base.OK != tc.n || rep.BaseRows != int64(tc.n):
				t.Errorf("baseline: %+v, %d rows; want %d acknowledged and stored", rep.Base, rep.BaseRows, tc.n)
			case rep.Probe == nil || !rep.Probe.Accepted || !rep.Probe.Stored || rep.Probe.PDFBytes < 512<<10:
				t.Errorf("probe: %+v", rep.Probe)
			case rep.Probe.Heap == nil || rep.Probe.Heap.Allocated < uint64(rep.Probe.PDFBytes):
				// Decoding alone allocates the PDF once: less means the
				// measurement missed the request.
				t.Errorf("probe heap: %+v, PDF %d bytes", rep.Probe.Heap, rep.Probe.PDFBytes)
			}
			for _, want := range []string{"ours/baseline: throughput", "0 lost, 0 doubled ✓", "heap: peak growth"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, out.String())
				}
			}
			// The baseline's table is gone with it.
			if n, err := g.Store.With(context.Background()).OrderTrails(rep.RunID); err != nil || len(n) != rep.Orders+1 {
				t.Errorf("trails of the run: %d, %v; want %d orders and the probe's", len(n), err, rep.Orders)
			}
		})
	}
}

// TestVerifyCatchesLostAndDoubled makes the check fail on purpose: a second
// payment stored for one acknowledged paystate is a double, and an
// acknowledgement claimed for a callback never sent is a loss.
func TestVerifyCatchesLostAndDoubled(t *testing.T) {
	g, inst, _ := gateway(t, "sqlite")
	ctx := context.Background()
	cipher := g.Cipher(inst.OrgCode)
	rng := rand.New(rand.NewPCG(1, 2))
	p, err := newPlan("LTverify-", 20, 0, inst.OrgCode, cipher, rng)
	if err != nil {
		t.Fatal(err)
	}
	if err := createOrders(ctx, g.Store, p.orders); err != nil {
		t.Fatal(err)
	}
	// Send all but the last request; then claim the last was acknowledged.
	d := newDriver(inst.AppKey, 4, nil)
	defer d.close()
	ph := d.newPhase("gateway", g.URL, p, newCPUMeter("sqlite"))
	d.run(ctx, ph, p, 0, len(p.requests)-1)
	ph.ph.answers[len(p.requests)-1] = answer{sent: true, status: 200, stat: 1}

	clean, err := verify(ctx, g.Store, p, ph.ph.answers)
	if err != nil {
		t.Fatal(err)
	}
	if clean.Lost != 1 || clean.Doubled != 0 || clean.Acked != 20 {
		t.Fatalf("before tampering: %+v; want exactly the unsent one lost", *clean)
	}

	var paid *callback
	for i := range p.callbacks {
		if p.callbacks[i].kind == kindPayState && i != p.requests[len(p.requests)-1].cb {
			paid = &p.callbacks[i]
			break
		}
	}
	extra := &model.Payment{DedupKey: strings.Repeat("f", 64), OrderNo: paid.orderNo, OrgCode: inst.OrgCode, Kind: "1",
		Amount: premium, PaidAt: time.Now(), CallbackID: 1}
	if err := g.Store.With(ctx).InsertPayment(extra); err != nil {
		t.Fatal(err)
	}
	a, err := verify(ctx, g.Store, p, ph.ph.answers)
	if err != nil {
		t.Fatal(err)
	}
	// The extra row is also not tied to an accepted callback of its key.
	if a.Lost != 1 || a.Doubled != 1 || a.Unlinked != 1 || a.OK() || len(a.Problems) != 3 {
		t.Errorf("after a second payment of %s: %+v; want 1 lost, 1 doubled, 1 unlinked", paid.orderNo, *a)
	}
}

func TestConfigCheck(t *testing.T) {
	valid := Config{URL: "http://127.0.0.1:8080", Driver: "mysql", DSN: "root@tcp(127.0.0.1:3306)/loadtest",
		OrgCode: "SIM", AppKey: "k", AppSecret: "simsecret0123456", N: 10, C: 2, Dup: 0.05, Timeout: time.Minute}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"localhost and a socket", func(c *Config) { c.URL, c.DSN = "http://localhost:1", "root@unix(/run/mysqld.sock)/x" }, ""},
		{"remote gateway", func(c *Config) { c.URL = "http://10.1.2.3:8080" }, "loopback only"},
		{"remote database", func(c *Config) { c.DSN = "root@tcp(db.example:3306)/x" }, "not a loopback address"},
		{"https", func(c *Config) { c.URL = "https://127.0.0.1:8443" }, "want http://"},
		{"unknown driver", func(c *Config) { c.Driver = "postgres" }, "driver"},
		{"too many", func(c *Config) { c.N = MaxN + 1 }, "n 1000001"},
		{"no concurrency", func(c *Config) { c.C = 0 }, "c 0"},
		{"all repeats", func(c *Config) { c.Dup = 1 }, "dup 1"},
		{"unbounded", func(c *Config) { c.Timeout = 0 }, "timeout"},
		{"nothing to do", func(c *Config) { c.N = 0 }, "nothing to do"},
		{"probe only", func(c *Config) { c.N, c.PDFBytes = 0, 1<<20 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.change(&c)
			err := c.check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("check: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one", ms(7), 50, 7 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p95 of 100", ms(hundred...), 95, 95 * time.Millisecond},
		{"p99 of 10 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestLetter(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name string
		size int
	}{{"small", 0}, {"padded", 300 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := letter("LTX-000001", tc.size, rng), letter("LTX-000002", tc.size, rng)
			if !bytes.HasPrefix(a, []byte("%PDF-1.4\n")) || !bytes.HasSuffix(a, []byte("%%EOF\n")) {
				t.Errorf("not framed as a PDF: %q … %q", a[:12], a[len(a)-8:])
			}
			if len(a) < tc.size || len(a) > tc.size+4096 {
				t.Errorf("size %d, want a little over %d", len(a), tc.size)
			}
			if bytes.Equal(a, b) || !bytes.Contains(a, []byte("LTX-000001")) {
				t.Error("letters of two orders must differ and name their order")
			}
			// The cross-reference table points at the objects.
			if i := bytes.Index(a, []byte("\n1 0 obj")); i < 0 || !bytes.Contains(a, fmt.Appendf(nil, "%010d 00000 n", i+1)) {
				t.Errorf("xref does not point at object 1")
			}
		})
	}
}
