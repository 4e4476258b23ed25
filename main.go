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
//
// main.go only wires: every part is built by its own constructor.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/term"

	"github.com/procurement/gateway/config"
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
		return serve(ctx, cfg, getenv, stdout, stderr)
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
	case "banksim":
		return runBanksim(ctx, args, getenv, stdout, stderr)
	case "demo":
		return runDemo(ctx, args, getenv, stdout, stderr)
	case "loadtest":
		return runLoadtest(ctx, args, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: gateway [serve|migrate|config|banksim|demo|loadtest] [-config config.yaml]")
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, migrate, config, banksim, demo, loadtest)", cmd)
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

func openStore(ctx context.Context, cfg *config.Config) (*model.Store, error) {
	return model.Open(ctx, cfg.Database.Driver, cfg.Database.DSN, model.Pool{MaxOpen: cfg.Database.MaxOpenConns,
		MaxIdle: cfg.Database.MaxIdleConns, MaxLifetime: cfg.Database.ConnMaxLife})
}

func migrate(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
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
// grace period, release leases, close the database.
func serve(ctx context.Context, cfg *config.Config, getenv func(string) string, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	gw, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer gw.store.Close()

	ln, err := net.Listen("tcp", cfg.Server.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Server.Addr, err)
	}
	// net/http's own complaints (TLS handshakes refused, say a client
	// offering only TLS 1.1) go through logrus, so that the log stays JSON
	// and an operator sees why an institution cannot connect.
	httpErrors := log.WriterLevel(logrus.WarnLevel)
	defer httpErrors.Close()
	srv := &http.Server{Handler: gw.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, TLSConfig: tlsConfig(),
		ErrorLog: stdlog.New(httpErrors, "", 0)}
	errc := make(chan error, 2)
	go func() {
		var err error
		if cfg.Server.TLS != nil {
			err = srv.ServeTLS(ln, cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSim()
	if cfg.Sim != nil {
		if err := startSim(simCtx, cfg, log, errc); err != nil {
			return err
		}
	}
	gw.jobs.Start()
	fmt.Fprintf(stdout, "gateway listening on %s (database %s)\n", ln.Addr(), cfg.Database.Driver)
	log.WithFields(logrus.Fields{"addr": ln.Addr().String(), "driver": cfg.Database.Driver,
		"institutions": len(cfg.Institutions)}).Info("gateway started")

	select {
	case <-ctx.Done():
	case err := <-errc:
		log.WithError(err).Error("server failed")
		return err
	}
	log.Info("shutting down")
	grace, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownGrace)
	defer cancel()
	herr := srv.Shutdown(grace)
	jerr := gw.jobs.Stop(grace)
	stopSim()
	log.Info("stopped")
	return errors.Join(herr, jerr)
}
