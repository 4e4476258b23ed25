// Package loadtest drives encrypted callbacks (paystate and applynotify,
// with repeats) at a gateway, as institutions under load would, measures
// throughput and latency, and then checks in the gateway's database that
// every callback the gateway acknowledged with stat 1 is stored exactly
// once. It can run the same load against a bare gin + GORM insert into the
// same database, to say what the gateway costs over the least any endpoint
// could do, and measure the heap taken by one applynotify with a big PDF.
//
// It talks to the gateway over HTTP only. The orders the callbacks need are
// inserted directly in the database (model.CreateOrder, status processing):
// an apply through the API would go to an institution that may then send
// callbacks of its own (config.yaml's simulated one does, after 1 s and
// 2 s), and they would race the test's. The database is read, after the
// load, to verify.
//
// Loopback only: the gateway's URL and the database address must be local.
package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
)

// Config is one load test.
type Config struct {
	// URL is the gateway's base URL (http://127.0.0.1:PORT).
	URL string
	// Driver and DSN name the gateway's database ("mysql" or "sqlite"):
	// the orders are created there and the outcome verified there.
	Driver, DSN string
	// The institution the callbacks come from: its orgcode, header appKey,
	// secret and cipher, as the gateway has them configured.
	OrgCode, AppKey, AppSecret string
	Cipher                     crypto.Options

	N       int           // callbacks to send, repeats included
	C       int           // at once
	Dup     float64       // share of the N that repeat an earlier callback
	Timeout time.Duration // bound of the whole run
	// Baseline runs the same load against a bare gin endpoint doing one
	// GORM insert of the raw body into the same database.
	Baseline bool
	// Rounds splits the load into that many slices, each sent to the
	// gateway and then to the baseline, so that a machine whose load
	// changes during the run weighs on both alike (default 1).
	Rounds int
	// PDFBytes > 0 sends, after the load and alone, one applynotify whose
	// PDF has that size, and reports its latency and (InProcess) the heap.
	PDFBytes int
	// InProcess says the gateway runs in this process, so that the heap
	// measured is the gateway's.
	InProcess bool
	// Pool is the baseline's connection pool size, open and idle: the
	// gateway's database.max_open_conns (default 32).
	Pool int
	// CPUProfile, when set, receives a CPU profile of the gateway phase;
	// MemProfile the allocations of the whole run (every 4 KiB sampled),
	// for `go tool pprof -sample_index=alloc_space`.
	CPUProfile, MemProfile string
	// Seed fixes the plan (order of requests, which are repeated); 0: random.
	Seed uint64
	// Out receives the report; Progress the progress bars (nil: none).
	Out, Progress io.Writer
}

// Bounds: a load test is bounded by count and by time.
const (
	MaxN = 1_000_000
	MaxC = 1024
)

// Report is everything measured.
type Report struct {
	RunID     string
	InProcess bool   // the gateway ran in this process
	Driver    string // the database's
	Orders    int
	Paystate  int // distinct callbacks of each kind
	Notify    int
	Repeats   int
	Ours      *Phase
	Audit     *Audit
	Base      *Phase // nil without Baseline
	BaseRows  int64  // rows the baseline stored
	Probe     *Probe // nil without PDFBytes
}

// Probe is the big-PDF applynotify.
type Probe struct {
	PDFBytes  int
	BodyBytes int
	Answer    string
	Accepted  bool
	Stored    bool // the file is in the database with the size sent
	Took      time.Duration
	Heap      *Heap // nil when the gateway is not in this process
}

func (c *Config) check() error {
	var errs []error
	if err := loopbackURL(c.URL); err != nil {
		errs = append(errs, err)
	}
	switch c.Driver {
	case "sqlite":
	case "mysql":
		if err := LoopbackDSN(c.DSN); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("database driver %q: want mysql or sqlite", c.Driver))
	}
	if c.N < 0 || c.N > MaxN {
		errs = append(errs, fmt.Errorf("n %d: want 0..%d", c.N, MaxN))
	}
	if c.C < 1 || c.C > MaxC {
		errs = append(errs, fmt.Errorf("c %d: want 1..%d", c.C, MaxC))
	}
	if !(c.Dup >= 0 && c.Dup < 1) {
		errs = append(errs, fmt.Errorf("dup %v: want a share in [0, 1)", c.Dup))
	}
	if c.Timeout <= 0 || c.Timeout > time.Hour {
		errs = append(errs, fmt.Errorf("timeout %v: want (0, 1h]", c.Timeout))
	}
	if c.PDFBytes < 0 || c.PDFBytes > 20<<20 {
		errs = append(errs, fmt.Errorf("pdf size %d: want 0..20 MiB (the gateway's notify limit is 30 MiB of body)", c.PDFBytes))
	}
	if c.Rounds < 0 || c.Rounds > 100 {
		errs = append(errs, fmt.Errorf("rounds %d: want 0..100", c.Rounds))
	}
	if c.OrgCode == "" || c.AppKey == "" {
		errs = append(errs, errors.New("orgcode and app key are required"))
	}
	if c.N == 0 && c.PDFBytes == 0 {
		errs = append(errs, errors.New("nothing to do: n is 0 and no PDF probe"))
	}
	return errors.Join(errs...)
}

// loopbackURL insists on http to a loopback address.
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("gateway url %q: want http://127.0.0.1:PORT", raw)
	}
	if !loopbackHost(u.Hostname()) {
		return fmt.Errorf("gateway url %q: load tests target loopback only", raw)
	}
	return nil
}

// LoopbackDSN refuses a MySQL DSN whose server is not on this machine:
// load tests and fills stay on loopback (or a unix socket).
func LoopbackDSN(dsn string) error {
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("mysql dsn: %v", err)
	}
	if cfg.Net == "unix" {
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		host = cfg.Addr
	}
	if !loopbackHost(host) {
		return fmt.Errorf("mysql dsn: %s is not a loopback address: load tests stay on this machine", cfg.Addr)
	}
	return nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Run runs the load test and writes the report to cfg.Out. It returns the
// report, and an error when the run could not be made or when its check
// failed (a callback lost or stored twice, an error answer, the time bound
// reached, the big PDF refused).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Pool == 0 {
		cfg.Pool = 32
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	if cfg.MemProfile != "" {
		runtime.MemProfileRate = 4096
		defer writeMemProfile(cfg.MemProfile, cfg.Out)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cipher, err := crypto.New(cfg.Cipher, cfg.AppSecret)
	if err != nil {
		return nil, fmt.Errorf("loadtest: cipher: %w", err)
	}
	store, err := model.Open(ctx, cfg.Driver, cfg.DSN, model.Pool{MaxOpen: 8, MaxIdle: 8, MaxLifetime: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	defer store.Close()

	seed := cfg.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	rng := mrand.New(mrand.NewPCG(seed, 0x6c6f6164)) // "load"
	var id [5]byte
	rand.Read(id[:])
	runID := "LT" + hex.EncodeToString(id[:]) + "-"
	out := cfg.Out

	rep := &Report{RunID: runID, InProcess: cfg.InProcess, Driver: cfg.Driver}
	var fails []string
	if cfg.N > 0 {
		if fails, err = rep.load(ctx, cfg, store, cipher, rng); err != nil {
			return nil, err
		}
	}
	if cfg.PDFBytes > 0 {
		if ctx.Err() != nil {
			fails = append(fails, "the time bound ran out before the PDF probe")
		} else {
			rep.Probe, err = probe(ctx, cfg, store, cipher, rep.RunID, rng)
			if err != nil {
				return rep, err
			}
			fails = append(fails, rep.Probe.print(out)...)
		}
	}
	if len(fails) > 0 {
		return rep, fmt.Errorf("loadtest: %s", strings.Join(fails, "; "))
	}
	return rep, nil
}

// load creates the orders, drives the callbacks, checks the database and
// prints the figures; it returns what failed.
func (r *Report) load(ctx context.Context, cfg Config, store *model.Store, cipher crypto.Cipher, rng *mrand.Rand) ([]string, error) {
	start := time.Now()
	p, err := newPlan(r.RunID, cfg.N, cfg.Dup, cfg.OrgCode, cipher, rng)
	if err != nil {
		return nil, err
	}
	if err := createOrders(ctx, store, p.orders); err != nil {
		return nil, err
	}
	r.Orders, r.Repeats = len(p.orders), p.dups
	for _, cb := range p.callbacks {
		if cb.kind == kindPayState {
			r.Paystate++
		} else {
			r.Notify++
		}
	}
	out := cfg.Out
	fmt.Fprintf(out, "load test %s: %d callbacks (%d paystate, %d applynotify, %d repeats) for %d orders, %d at once\n",
		strings.TrimSuffix(r.RunID, "-"), cfg.N, r.Paystate, r.Notify, r.Repeats, r.Orders, cfg.C)
	fmt.Fprintf(out, "  gateway %s (%s), database %s; callbacks sealed and orders inserted directly in %v; load average %s\n",
		cfg.URL, where(cfg.InProcess), cfg.Driver, time.Since(start).Round(time.Millisecond), loadAverage())
	if cfg.Baseline && cfg.Rounds > 1 {
		fmt.Fprintf(out, "  gateway and baseline alternate in %d rounds of about %d requests\n", cfg.Rounds, cfg.N/cfg.Rounds)
	}
	if err := r.drive(ctx, cfg, p); err != nil {
		return nil, err
	}
	// The check runs even if the time bound cut the load: what was
	// acknowledged must be stored all the same.
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if r.Audit, err = verify(vctx, store, p, r.Ours.answers); err != nil {
		return nil, err
	}
	return r.printLoad(out), nil
}

func where(inProcess bool) string {
	if inProcess {
		return "in this process"
	}
	return "external"
}

// drive runs the load against the gateway and, with Baseline, the same
// load against the bare endpoint, in Rounds alternating slices (gateway,
// baseline, gateway, ...), so that both meet the same conditions of the
// machine. The CPU profile covers the gateway's first slice.
func (r *Report) drive(ctx context.Context, cfg Config, p *plan) (err error) {
	meter := newCPUMeter(cfg.Driver)
	d := newDriver(cfg.AppKey, cfg.C, cfg.Progress)
	defer d.close()
	ours := d.newPhase("gateway", cfg.URL, p, meter)
	var base *phase
	var bd *driver
	if cfg.Baseline {
		var b *baseline
		if b, err = startBaseline(ctx, cfg.Driver, cfg.DSN, cfg.Pool); err != nil {
			return err
		}
		bd = newDriver(cfg.AppKey, cfg.C, cfg.Progress)
		defer bd.close()
		base = bd.newPhase("baseline", b.url(), p, meter)
		defer func() {
			// Count what it stored, then drop its table.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			rows, rerr := b.rows(sctx)
			r.BaseRows = rows
			if serr := errors.Join(rerr, b.stop(sctx)); serr != nil && err == nil {
				err = fmt.Errorf("loadtest: baseline: %w", serr)
			}
		}()
	}
	rounds := max(1, min(cfg.Rounds, len(p.requests)))
	for i := range rounds {
		lo, hi := i*len(p.requests)/rounds, (i+1)*len(p.requests)/rounds
		stopProfile := func() {}
		if i == 0 {
			if stopProfile, err = startProfile(cfg.CPUProfile); err != nil {
				return err
			}
		}
		d.run(ctx, ours, p, lo, hi)
		stopProfile()
		if base != nil {
			bd.run(ctx, base, p, lo, hi)
		}
	}
	cut := ctx.Err() != nil
	r.Ours = ours.finish(cut)
	if base != nil {
		r.Base = base.finish(cut)
	}
	return nil
}

// startProfile starts a CPU profile into path; the returned func stops it.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("loadtest: cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeMemProfile writes the allocation profile; a failure is reported, not
// fatal: the figures are already out.
func writeMemProfile(path string, out io.Writer) {
	runtime.GC() // the profile shows allocations as of the last collection
	f, err := os.Create(path)
	if err == nil {
		err = errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
	}
	if err != nil {
		fmt.Fprintf(out, "memory profile not written: %v\n", err)
	}
}

// loadAverage is the machine's 1, 5 and 15 minute load average, to read
// the figures by: a load test on a busy machine measures the machine.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
