package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/banksim"
	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/gateway"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/tools/demo"
	"github.com/procurement/gateway/tools/fill"
	"github.com/procurement/gateway/tools/loadtest"
	"github.com/procurement/gateway/tools/scale"
)

// The SIM institution of config.yaml: the demo plays it, and the load test
// sends as it unless told otherwise.
const (
	simOrgCode   = "SIM"
	simName      = "模拟担保公司 (simulated)"
	simAppKey    = "sim-app-key"
	simAppSecret = config.ShippedSimSecret // a warning at start wherever it is in force
)

// runBanksim runs the simulated institution alone.
func runBanksim(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("banksim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	gatewayURL := fs.String("gateway", "http://127.0.0.1:8080", "the gateway's base URL, for callbacks")
	orgcode := fs.String("orgcode", simOrgCode, "orgcode")
	appKey := fs.String("app-key", simAppKey, "appKey")
	secret := fs.String("app-secret", simAppSecret, "appSecret (AES key: 16, 24 or 32 bytes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "banksim %s listening on %s, calling back %s\n", *orgcode, *addr, *gatewayURL)
	return banksim.Run(ctx, banksim.Config{OrgCode: *orgcode, AppKey: *appKey, AppSecret: *secret,
		GatewayURL: *gatewayURL, PDFInNotify: true}, *addr)
}

// runDemo starts a gateway on a free port with a temporary SQLite and a
// banksim on another free port that calls back, and walks one guarantee
// through its lifecycle (package demo). It fails if any step did not hold.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	delay := fs.Duration("delay", 200*time.Millisecond, "banksim's delay before paying, issuing and releasing")
	wait := fs.Duration("wait", 15*time.Second, "how long a step waits for a callback")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "gateway-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// banksim's port first, so that the gateway's config can name it; its
	// callbacks are pointed at the gateway once that listens.
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer simLn.Close()
	simURL := "http://" + simLn.Addr().String() + "/sim"
	token := randomToken()
	cfg := &config.Config{
		// public_base_url is only what an operator tells institutions; the
		// demo's banksim is given the real address below.
		Server:   config.Server{Addr: "127.0.0.1:0", PublicBaseURL: "http://127.0.0.1", ShutdownGrace: 5 * time.Second},
		Database: config.Database{Driver: "sqlite", DSN: filepath.Join(dir, "gateway.db")},
		API:      config.API{Tokens: []string{token}},
		Institutions: []config.Institution{{OrgCode: simOrgCode, Name: simName, BaseURL: simURL,
			AppKey: simAppKey, AppSecret: simAppSecret, Timeout: 5 * time.Second}},
		Log: config.Log{Level: "info", Format: "json"},
	}
	cfg.ApplyDefaults()
	var logs lockedBuffer
	gwURL, stopGateway, err := startGateway(ctx, cfg, &logs)
	if err != nil {
		return fmt.Errorf("demo: gateway: %w", err)
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() {
		simDone <- banksim.Serve(simCtx, banksim.Config{OrgCode: simOrgCode, Name: simName, AppKey: simAppKey,
			AppSecret: simAppSecret, PublicURL: simURL, GatewayURL: gwURL, PDFInNotify: true,
			PayDelay: *delay, IssueDelay: *delay, ReleaseDelay: *delay}, simLn)
	}()
	fmt.Fprintf(stdout, "demo: gateway %s (SQLite in %s), banksim %s at %s\n", gwURL, dir, simOrgCode, simURL)

	err = demo.Run(ctx, demo.Config{URL: gwURL, Token: token, OrgCode: simOrgCode, Wait: *wait, Out: stdout})
	stopSim()
	serr := errors.Join(<-simDone, stopGateway())
	if err != nil {
		// What the gateway logged is where the reason is.
		fmt.Fprintf(stderr, "gateway log (last lines):\n%s", logs.tail(30))
		return err
	}
	return serr
}

// runReconcile runs the reconciliation once, now: incremental (what
// changed since the last run) unless --full, filed under today's UTC date
// unless --date. Findings are filed once per date, kind and orderno, so a
// run beside the scheduled one doubles nothing.
func runReconcile(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default $GATEWAY_CONFIG, then config.yaml)")
	full := fs.Bool("full", false, "read every order and payment, not only what changed since the last run")
	date := fs.String("date", time.Now().UTC().Format(time.DateOnly), "the day (YYYY-MM-DD) the findings are filed under")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(config.Path(*path, getenv), getenv)
	if err != nil {
		return err
	}
	gw, err := gateway.New(ctx, cfg, newLogger(cfg.Log, stderr))
	if err != nil {
		return err
	}
	defer gw.Close()
	start := time.Now()
	rs, err := gw.Service().Reconcile(ctx, *date, *full)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "reconciliation %s (full %t): %d examined, %d findings, %d new, in %s\n",
		rs.Date, rs.Full, rs.Examined, rs.Findings, rs.New, time.Since(start).Round(time.Millisecond))
	return nil
}

// runLoadtest drives callbacks at a gateway (package loadtest): one running
// at --url, or one started here on a free port over --mysql DSN, --sqlite
// PATH, or a temporary SQLite.
func runLoadtest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gwURL := fs.String("url", "", "a running gateway (loopback); its database must be given too, for the check")
	mysqlDSN := fs.String("mysql", "", "MariaDB/MySQL DSN of the gateway's database")
	sqlitePath := fs.String("sqlite", "", "SQLite file of the gateway's database")
	n := fs.Int("n", 2000, "callbacks to send, repeats included")
	c := fs.Int("c", 64, "concurrency")
	dup := fs.Float64("dup", 0.05, "share of the callbacks that repeat an earlier one")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound of the whole run")
	baseline := fs.Bool("baseline", false, "run the same load against a bare gin + GORM insert into the same database")
	rounds := fs.Int("rounds", 1, "with --baseline: alternate gateway and baseline in this many slices of the load")
	pdfMiB := fs.Float64("pdf-mib", 0, "also send one applynotify with a PDF of this many MiB, alone, and measure its heap")
	orgcode := fs.String("orgcode", simOrgCode, "the institution's orgcode")
	appKey := fs.String("app-key", simAppKey, "the institution's appKey")
	secret := fs.String("app-secret", simAppSecret, "the institution's appSecret (AES/ECB/base64 key)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the gateway phase to this file")
	memprofile := fs.String("memprofile", "", "write an allocation profile of the run to this file")
	logPath := fs.String("log", "", "the in-process gateway's log file (default: a temporary file)")
	seed := fs.Uint64("seed", 0, "seed of the plan (0: random)")
	fillN := fs.Int("fill", 0, "fill the --mysql database with this many orders (package tools/fill) and exit; migrates it first")
	fillAppend := fs.Bool("fill-append", false, "with --fill: add to a database that has orders already")
	fillSeed := fs.Uint64("fill-seed", 1, "with --fill: seed of the filled rows")
	fillNow := fs.String("fill-now", "", "with --fill: end of the filled history, RFC 3339 (default: now); with --fill-seed, the same rows each time")
	fillWorkers := fs.Int("fill-workers", 0, "with --fill: connections inserting at once (default 3)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *fillN != 0 {
		if *mysqlDSN == "" || *gwURL != "" || *sqlitePath != "" {
			return errors.New("loadtest: --fill takes --mysql DSN alone")
		}
		opt := fill.Options{Orders: *fillN, Seed: *fillSeed, Append: *fillAppend, Workers: *fillWorkers, Progress: stderr}
		if *fillNow != "" {
			t, err := time.Parse(time.RFC3339, *fillNow)
			if err != nil {
				return fmt.Errorf("loadtest: --fill-now: %w", err)
			}
			opt.Now = t
		}
		return runFill(ctx, *mysqlDSN, opt, stdout)
	}
	lc := loadtest.Config{URL: *gwURL, OrgCode: *orgcode, AppKey: *appKey, AppSecret: *secret,
		N: *n, C: *c, Dup: *dup, Timeout: *timeout, Baseline: *baseline, Rounds: *rounds, PDFBytes: int(*pdfMiB * (1 << 20)),
		CPUProfile: *cpuprofile, MemProfile: *memprofile, Seed: *seed, Out: stdout, Progress: stderr}
	switch {
	case *mysqlDSN != "" && *sqlitePath != "":
		return errors.New("loadtest: give --mysql or --sqlite, not both")
	case *mysqlDSN != "":
		lc.Driver, lc.DSN = "mysql", *mysqlDSN
	case *sqlitePath != "":
		lc.Driver, lc.DSN = "sqlite", *sqlitePath
	case *gwURL != "":
		return errors.New("loadtest: with --url, name the gateway's database (--mysql DSN or --sqlite PATH): the check reads it")
	default:
		dir, err := os.MkdirTemp("", "gateway-loadtest-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		lc.Driver, lc.DSN = "sqlite", filepath.Join(dir, "gateway.db")
	}

	if *gwURL != "" {
		_, err := loadtest.Run(ctx, lc)
		return err
	}
	cfg := &config.Config{
		Server:   config.Server{Addr: "127.0.0.1:0", PublicBaseURL: "http://127.0.0.1", ShutdownGrace: 10 * time.Second},
		Database: config.Database{Driver: lc.Driver, DSN: lc.DSN},
		API:      config.API{Tokens: []string{randomToken()}},
		// Nothing is called: the orders are stored as processing and the
		// jobs, which would poll them, do not run.
		Institutions: []config.Institution{{OrgCode: *orgcode, Name: "load test institution",
			BaseURL: "http://127.0.0.1:9/unused", AppKey: *appKey, AppSecret: *secret}},
		Jobs: config.Jobs{Disabled: true},
		// Logged as in production (info, JSON), into a file.
		Log: config.Log{Level: "info", Format: "json"},
	}
	cfg.ApplyDefaults()
	logFile, err := openLog(*logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	url, stop, err := startGateway(ctx, cfg, logFile)
	if err != nil {
		return fmt.Errorf("loadtest: gateway: %w", err)
	}
	lc.URL, lc.InProcess, lc.Pool = url, true, cfg.Database.MaxOpenConns
	_, err = loadtest.Run(ctx, lc)
	err = errors.Join(err, stop())
	fmt.Fprintf(stdout, "gateway log: %s\n", logFile.Name())
	return err
}

// runScale measures the same work on a small and a large database (package
// scale) and prints them side by side with their growth; it fails when a
// target is missed.
func runScale(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	small := fs.String("small-dsn", "", "MariaDB/MySQL DSN of the small database (10,000 orders), filled and migrated (see --fill)")
	large := fs.String("large-dsn", "", "MariaDB/MySQL DSN of the large database (1,000,000 orders), filled and migrated (see --fill)")
	batch := fs.Int("batch", 0, "the claims' batch (default: jobs.batch_size's default)")
	callbacks := fs.Int("callbacks", scale.DefaultCallbacks, "orders made for the rolling restart's callbacks")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound of the measurements of one database")
	logPath := fs.String("log", "", "the gateways' log file (default: a temporary file)")
	doFill := fs.Bool("fill", false, "create, migrate and fill each database first when it has no order (package fill)")
	smallN := fs.Int("small-orders", scale.SmallOrders, "with --fill: orders of the small database")
	largeN := fs.Int("large-orders", scale.LargeOrders, "with --fill: orders of the large database")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("scale: unexpected arguments %q", fs.Args())
	}
	if *doFill {
		for _, db := range []struct {
			dsn string
			n   int
		}{{*small, *smallN}, {*large, *largeN}} {
			if err := scale.Prepare(ctx, db.dsn, db.n, stderr); err != nil {
				return fmt.Errorf("scale: %w", err)
			}
		}
	}
	logFile, err := openLog(*logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	_, err = scale.Run(ctx, scale.Config{SmallDSN: *small, LargeDSN: *large, BatchSize: *batch, Callbacks: *callbacks,
		Timeout: *timeout, Out: stdout, Log: logFile, Progress: stderr})
	fmt.Fprintf(stdout, "gateways' log: %s\n", logFile.Name())
	return err
}

// runFill migrates the database at dsn (loopback only) and fills it.
func runFill(ctx context.Context, dsn string, opt fill.Options, stdout io.Writer) error {
	if err := loadtest.LoopbackDSN(dsn); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	store, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 2, MaxIdle: 2, MaxLifetime: time.Hour})
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	_, err = store.Migrate(ctx)
	store.Close()
	if err != nil {
		return fmt.Errorf("fill: migrate: %w", err)
	}
	// A pool of its own: the gateway's read timeout (30 s) would cut the
	// index builds at the end of a big fill, which take minutes.
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	cfg.ReadTimeout, cfg.WriteTimeout, cfg.ParseTime = time.Hour, time.Hour, true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	defer db.Close()
	rep, err := fill.Run(ctx, db, opt)
	if err != nil {
		return err
	}
	rep.Print(stdout)
	return nil
}

// openLog opens the in-process gateway's log file: path, or a new
// temporary file (kept, so that its errors can be read after the run).
func openLog(path string) (*os.File, error) {
	if path == "" {
		return os.CreateTemp("", "gateway-loadtest-*.log")
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
}

// startGateway builds and starts a gateway on cfg (whose server.addr is
// 127.0.0.1:0), logging to logs, and returns its base URL and a function
// that shuts it down and closes it.
func startGateway(ctx context.Context, cfg *config.Config, logs io.Writer) (string, func() error, error) {
	gw, err := gateway.New(ctx, cfg, newLogger(cfg.Log, logs))
	if err != nil {
		return "", nil, err
	}
	if err := gw.Start(); err != nil {
		gw.Close()
		return "", nil, err
	}
	return "http://" + gw.Addr().String(), gw.Close, nil
}

// listeningPrefix starts the line serve prints once it listens, which
// scripts and the fault tests read the address from.
const listeningPrefix = "gateway listening on "

// lockedBuffer collects the demo gateway's log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns the last n lines.
func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.SplitAfter(b.buf.String(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

// randomToken is a bearer token for a gateway that lives as long as the command.
func randomToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
