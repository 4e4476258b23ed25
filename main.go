// Command gateway is the procurement system's electronic-guarantee gateway
// (电子保函网关): it takes the institutions' callbacks, calls their
// interfaces, serves the bidding module's API and runs the scheduled jobs.
//
//	gateway [serve] [-config config.yaml]   serve (the default)
//	gateway migrate [-config config.yaml]   apply the database migrations and exit
//	gateway config  [-config config.yaml]   print the effective config, secrets redacted
//	gateway banksim [-addr 127.0.0.1:8090]  run the simulated institution alone
//	gateway demo                            walk one whole lifecycle against banksim
//	gateway loadtest [flags]                callback load against a gateway
//	gateway scale [flags]                   the same work measured on 10k and on 1M orders
//	gateway password                        read a password, print its bcrypt hash (console.users)
//
// main.go only wires: every part is built by its own constructor.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/term"

	"github.com/procurement/gateway/banksim"
	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/gateway"
	"github.com/procurement/gateway/model"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		cfg, err := loadConfig("serve", args, getenv, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stdout, stderr)
	case "migrate":
		cfg, err := loadConfig("migrate", args, getenv, stderr)
		if err != nil {
			return err
		}
		return migrate(ctx, cfg, stdout)
	case "config":
		cfg, err := loadConfig("config", args, getenv, stderr)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, cfg.String())
		return nil
	case "reconcile":
		return runReconcile(ctx, args, getenv, stdout, stderr)
	case "banksim":
		return runBanksim(ctx, args, getenv, stdout, stderr)
	case "demo":
		return runDemo(ctx, args, getenv, stdout, stderr)
	case "loadtest":
		return runLoadtest(ctx, args, getenv, stdout, stderr)
	case "scale":
		return runScale(ctx, args, getenv, stdout, stderr)
	case "password":
		return runPassword(os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: gateway [serve|migrate|config|reconcile|banksim|demo|loadtest|scale|password] [-config config.yaml]")
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, migrate, config, reconcile, banksim, demo, loadtest, scale, password)", cmd)
}

func loadConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (*config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default $GATEWAY_CONFIG, then config.yaml)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return config.Load(config.Path(*path, getenv), getenv)
}

func newLogger(c config.Log, w io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(w)
	if lvl, err := logrus.ParseLevel(c.Level); err == nil {
		log.SetLevel(lvl)
	}
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	if c.Format == "json" || c.Format != "text" && !tty {
		log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	return log
}

func migrate(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	store, err := model.Open(ctx, cfg.Database.Driver, cfg.Database.DSN, model.Pool{MaxOpen: cfg.Database.MaxOpenConns,
		MaxIdle: cfg.Database.MaxIdleConns, MaxLifetime: cfg.Database.ConnMaxLife})
	if err != nil {
		return fmt.Errorf("database.dsn: %w", err)
	}
	defer store.Close()
	applied, err := store.Migrate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied: %d %v\n", len(applied), applied)
	return nil
}

// serve runs the gateway until ctx ends, then shuts down in order: stop
// taking work (HTTP and jobs), let what is in flight finish within the
// grace period, release leases, close the database. With a sim section the
// simulated institution runs beside it.
func serve(ctx context.Context, cfg *config.Config, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	gw, err := gateway.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer gw.Close()
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSim()
	if cfg.Sim != nil {
		if err := startSim(simCtx, cfg, log); err != nil {
			return err
		}
	}
	if err := gw.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s%s (database %s)\n", listeningPrefix, gw.Addr(), cfg.Database.Driver)
	return gw.Run(ctx)
}

// startSim runs the simulated institution of config.yaml's sim section in
// process, so that `go run .` alone shows the whole flow.
func startSim(ctx context.Context, cfg *config.Config, log logrus.FieldLogger) error {
	ic, ok := cfg.Institution(cfg.Sim.OrgCode)
	if !ok {
		return fmt.Errorf("sim.orgcode %q names no institution", cfg.Sim.OrgCode)
	}
	ln, err := net.Listen("tcp", cfg.Sim.Addr)
	if err != nil {
		return fmt.Errorf("sim.addr: listen %s: %w", cfg.Sim.Addr, err)
	}
	sc := banksim.Config{OrgCode: ic.OrgCode, Name: ic.Name, AppKey: ic.AppKey, AppSecret: ic.AppSecret,
		Cipher: ic.Cipher.Options(), Prefix: "/sim", PublicURL: ic.BaseURL, GatewayURL: cfg.Server.PublicBaseURL,
		PayDelay: cfg.Sim.PayDelay, IssueDelay: cfg.Sim.IssueDelay, ReleaseDelay: cfg.Sim.IssueDelay,
		PDFInNotify: true, Logger: log.WithField("component", "banksim")}
	go func() {
		if err := banksim.Serve(ctx, sc, ln); err != nil && ctx.Err() == nil {
			log.WithError(err).Error("simulated institution stopped")
		}
	}()
	log.WithField("addr", ln.Addr().String()).Info("simulated institution started")
	return nil
}
