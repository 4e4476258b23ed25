package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/procurement/gateway/banksim"
	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/handler"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/service"
)

//go:embed openapi.yaml
var openapiYAML []byte

// gateway is every part of a running gateway, built in dependency order.
type gateway struct {
	store   *model.Store
	service *service.Service
	jobs    *service.Scheduler
	handler http.Handler
}

func build(ctx context.Context, cfg *config.Config, log *logrus.Logger) (*gateway, error) {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	applied, err := store.Migrate(ctx)
	if err != nil {
		store.Close()
		return nil, err
	}
	if len(applied) > 0 {
		log.WithField("migrations", applied).Info("database migrated")
	}
	// An issuance notice's PDF is written in one statement (escaped, so up
	// to twice its size): a server that refuses such a statement would make
	// the gateway answer 503 to that notice for ever.
	if packet, err := store.MaxPacket(ctx); err == nil && packet > 0 && packet < 2*cfg.Server.NotifyBodyLimit {
		log.WithFields(logrus.Fields{"max_allowed_packet": packet, "notify_body_limit": cfg.Server.NotifyBodyLimit}).
			Warn("MySQL max_allowed_packet is below twice server.notify_body_limit: large PDF notices will be refused; set max_allowed_packet=64M or more")
	}

	insts := make([]*service.Institution, 0, len(cfg.Institutions))
	for _, ic := range cfg.Institutions {
		cipher, err := crypto.New(ic.Cipher.Options(), ic.AppSecret)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("institutions[%s]: %w", ic.OrgCode, err)
		}
		in := &service.Institution{OrgCode: ic.OrgCode, Name: ic.Name, AppKey: ic.AppKey, Cipher: cipher,
			Timeout: ic.Timeout, Disabled: ic.Disabled, MaxConcurrent: ic.MaxConcurrent}
		for _, c := range ic.AllowCIDRs {
			_, n, err := net.ParseCIDR(c)
			if err != nil {
				store.Close()
				return nil, fmt.Errorf("institutions[%s].allow_cidrs: %w", ic.OrgCode, err)
			}
			in.Allow = append(in.Allow, n)
		}
		if ic.RateLimit > 0 {
			in.Limiter = rate.NewLimiter(rate.Limit(ic.RateLimit), ic.RateBurst)
		}
		insts = append(insts, in)
	}
	metrics := service.NewPrometheusMetrics()
	svc := service.New(store, service.NewRegistry(insts), settings(cfg), log, metrics)
	hc := client.NewHTTPClient()
	for i, in := range insts {
		ic := cfg.Institutions[i]
		in.Client = client.New(client.Config{OrgCode: ic.OrgCode, BaseURL: ic.BaseURL, AppKey: ic.AppKey,
			Cipher: in.Cipher, Timeout: ic.Timeout, Retries: ic.Retries,
			BreakerFailures: uint32(ic.BreakerFailures), BreakerOpenFor: ic.BreakerOpenFor}, hc, svc)
	}
	metrics.Watch(svc)
	jobs, err := service.NewScheduler(svc, schedules(cfg.Jobs), log)
	if err != nil {
		store.Close()
		return nil, err
	}
	h := handler.NewServer(handler.Deps{Service: svc, Log: log, Tokens: cfg.API.Tokens, Metrics: metrics.Handler(),
		OpenAPI: openapiYAML, NotifyBodyLimit: cfg.Server.NotifyBodyLimit, CallbackBodyLimit: cfg.Server.CallbackBodyLimit})
	return &gateway{store: store, service: svc, jobs: jobs, handler: h}, nil
}

// owner names this instance in leases: host and pid tell an operator which
// replica holds a row.
func owner() string {
	host, _ := os.Hostname()
	return host + ":" + strconv.Itoa(os.Getpid())
}

func settings(cfg *config.Config) service.Settings {
	j := cfg.Jobs
	return service.Settings{Owner: owner(), PollBackoff: j.PollBackoff, RedeliveryBackoff: j.RedeliveryBackoff,
		ApplyBackoff: j.ApplyBackoff, MaxApplyAttempts: j.MaxApplyAttempts, StaleAfterOpening: j.StaleAfterOpening,
		BatchSize: j.BatchSize, Concurrency: j.Concurrency, Lease: j.Lease, CallbackBatch: cfg.Server.CallbackBatch}
}

func schedules(j config.Jobs) service.Schedules {
	return service.Schedules{Disabled: j.Disabled, PollPending: j.PollPending, RecoverApplying: j.RecoverApplying,
		PullFiles: j.PullFiles, DeliverOutbox: j.DeliverOutbox, Reconcile: j.Reconcile}
}

// tlsConfig: interface.md asks for HTTPS; TLS 1.2 is the floor.
func tlsConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }

// startSim runs the simulated institution of config.yaml's sim section in
// process, so that `go run .` alone shows the whole flow.
func startSim(ctx context.Context, cfg *config.Config, log logrus.FieldLogger, errc chan<- error) error {
	ic, ok := cfg.Institution(cfg.Sim.OrgCode)
	if !ok {
		return fmt.Errorf("sim.orgcode %q names no institution", cfg.Sim.OrgCode)
	}
	ln, err := net.Listen("tcp", cfg.Sim.Addr)
	if err != nil {
		return fmt.Errorf("sim: listen %s: %w", cfg.Sim.Addr, err)
	}
	sc := banksim.Config{OrgCode: ic.OrgCode, Name: ic.Name, AppKey: ic.AppKey, AppSecret: ic.AppSecret,
		Cipher: ic.Cipher.Options(), Prefix: "/sim", PublicURL: ic.BaseURL, GatewayURL: cfg.Server.PublicBaseURL,
		PayDelay: cfg.Sim.PayDelay, IssueDelay: cfg.Sim.IssueDelay, ReleaseDelay: cfg.Sim.IssueDelay,
		PDFInNotify: true, Logger: log.WithField("component", "banksim")}
	go func() {
		if err := banksim.Serve(ctx, sc, ln); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("sim: %w", err)
		}
	}()
	log.WithField("addr", ln.Addr().String()).Info("simulated institution started")
	return nil
}
