// Package gateway builds a whole gateway from its configuration: the store,
// the ciphers and clients of the institutions, the service, the scheduler
// and the HTTP server, in dependency order, and runs it. main, the test
// helpers, the demo and the load test all build their gateway here, so
// that what they run is what production runs.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/handler"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/service"
)

// Gateway is every part of a running gateway.
type Gateway struct {
	cfg      *config.Config
	log      *logrus.Logger
	store    *model.Store
	ownStore bool
	svc      *service.Service
	jobs     *service.Scheduler
	state    *service.StateCounter // the gauges' counts, in the background
	metrics  *service.PrometheusMetrics
	handler  http.Handler
	console  consoleServer // the operators' console (console.go)

	mu      sync.Mutex
	srv     *http.Server
	ln      net.Listener
	served  chan error // the server's end, once started
	stopped bool
}

// Option changes how New builds a gateway.
type Option func(*options)

type options struct {
	store *model.Store
}

// WithStore runs the gateway on a store opened elsewhere, which Close
// leaves open: several gateways on one store, as replicas on one database.
func WithStore(s *model.Store) Option { return func(o *options) { o.store = s } }

// New validates cfg and builds a gateway from it: it opens the database
// (unless WithStore gives one) and migrates it, builds each institution's
// cipher and client, the service, the scheduler and the HTTP handler. It
// serves nothing yet: Start or Run does. A config that does not validate,
// a database that cannot be reached and a failed migration are errors that
// name their cause.
func New(ctx context.Context, cfg *config.Config, log *logrus.Logger, opts ...Option) (*Gateway, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: log, store: o.store}
	if g.store == nil {
		store, err := model.Open(ctx, cfg.Database.Driver, cfg.Database.DSN, model.Pool{MaxOpen: cfg.Database.MaxOpenConns,
			MaxIdle: cfg.Database.MaxIdleConns, MaxLifetime: cfg.Database.ConnMaxLife})
		if err != nil {
			return nil, fmt.Errorf("database.dsn: %w", err)
		}
		g.store, g.ownStore = store, true
	}
	if err := g.build(ctx); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) build(ctx context.Context) error {
	cfg, log := g.cfg, g.log
	// Every transaction of this gateway, its migrations' included, runs
	// again when the database refused it over a conflict (on a Galera
	// cluster, another node's writer of the same rows), counted per op. A
	// store given by WithStore keeps its own pool and gets this policy too.
	g.metrics = service.NewPrometheusMetrics()
	g.store = g.store.Retrying(model.Retry{Attempts: cfg.Database.Retries, Wait: cfg.Database.RetryWait,
		Observe: g.metrics.DBWork})
	applied, err := g.store.Migrate(ctx)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		log.WithField("migrations", applied).Info("database migrated")
	}
	// An issuance notice's PDF is written in one statement (escaped, so up
	// to twice its size): a server that refuses such a statement would make
	// the gateway answer 503 to that notice for ever.
	if packet, err := g.store.MaxPacket(ctx); err == nil && packet > 0 && packet < 2*cfg.Server.NotifyBodyLimit {
		log.WithFields(logrus.Fields{"max_allowed_packet": packet, "notify_body_limit": cfg.Server.NotifyBodyLimit}).
			Warn("MySQL max_allowed_packet is below twice server.notify_body_limit: large PDF notices will be refused; set max_allowed_packet=64M or more")
	}

	insts, err := institutions(cfg.Institutions)
	if err != nil {
		return err
	}
	g.svc = service.New(g.store, service.NewRegistry(insts), service.SettingsFrom(cfg), log, g.metrics)
	hc := client.NewHTTPClient()
	for i, in := range insts {
		ic := cfg.Institutions[i]
		in.Client = client.New(client.Config{OrgCode: ic.OrgCode, BaseURL: ic.BaseURL, AppKey: ic.AppKey,
			Cipher: in.Cipher, Timeout: ic.Timeout, Retries: ic.Retries, RetryWait: ic.RetryWait,
			BreakerFailures: uint32(ic.BreakerFailures), BreakerOpenFor: ic.BreakerOpenFor, URLOrigins: ic.URLOrigins}, hc, g.svc)
	}
	g.warnInsecureDefaults()
	g.metrics.Watch(g.svc)
	g.state = service.NewStateCounter(g.svc, cfg.Metrics.StateInterval, log)
	j := cfg.Jobs
	g.jobs, err = service.NewScheduler(g.svc, service.Schedules{Disabled: j.Disabled, PollPending: j.PollPending,
		RecoverApplying: j.RecoverApplying, PullFiles: j.PullFiles, DeliverOutbox: j.DeliverOutbox,
		Reconcile: j.Reconcile, Retention: j.Retention}, log)
	if err != nil {
		return err
	}
	api := handler.NewServer(handler.Deps{Service: g.svc, Log: log, Tokens: cfg.API.Tokens,
		Metrics: g.metrics.Handler(), NotifyBodyLimit: cfg.Server.NotifyBodyLimit,
		CallbackBodyLimit: cfg.Server.CallbackBodyLimit})
	g.handler, err = g.withConsole(api)
	return err
}

// warnInsecureDefaults warns of each secret shipped with the gateway (the
// README's API token, the simulator's secret) that is still in force, and
// counts them in gateway_insecure_defaults: fine on a laptop, a hole
// anywhere else, and silent until now (docs/decisions.md §40).
func (g *Gateway) warnInsecureDefaults() {
	found := g.cfg.InsecureDefaults()
	for _, key := range found {
		g.log.WithField("key", key).Warn("a secret shipped with the gateway is in force: anyone who read the README holds it; set your own before serving anything but this machine")
	}
	g.metrics.SetInsecureDefaults(len(found))
}

// institutions builds the run-time institutions of the config: each with
// its cipher, source networks and rate limiter; their clients come after
// the service, which records their calls.
func institutions(list []config.Institution) ([]*service.Institution, error) {
	insts := make([]*service.Institution, 0, len(list))
	for _, ic := range list {
		cipher, err := crypto.New(ic.Cipher.Options(), ic.AppSecret)
		if err != nil {
			return nil, fmt.Errorf("institutions[%s]: %w", ic.OrgCode, err)
		}
		in := &service.Institution{OrgCode: ic.OrgCode, Name: ic.Name, AppKey: ic.AppKey, Cipher: cipher,
			Timeout: ic.Timeout, Disabled: ic.Disabled, MaxConcurrent: ic.MaxConcurrent}
		for _, c := range ic.AllowCIDRs {
			_, n, err := net.ParseCIDR(c)
			if err != nil {
				return nil, fmt.Errorf("institutions[%s].allow_cidrs: %w", ic.OrgCode, err)
			}
			in.Allow = append(in.Allow, n)
		}
		if ic.RateLimit > 0 {
			in.Limiter = rate.NewLimiter(rate.Limit(ic.RateLimit), ic.RateBurst)
		}
		insts = append(insts, in)
	}
	return insts, nil
}

// Handler is the gateway's HTTP handler: callbacks, the /v1 API,
// operations, and the console unless it has its own listener.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Service is the gateway's service.
func (g *Gateway) Service() *service.Service { return g.svc }

// Store is the gateway's store.
func (g *Gateway) Store() *model.Store { return g.store }

// Jobs is the gateway's scheduler.
func (g *Gateway) Jobs() *service.Scheduler { return g.jobs }

// Metrics is the gateway's Prometheus registry.
func (g *Gateway) Metrics() *service.PrometheusMetrics { return g.metrics }

// Start listens on server.addr, serves HTTP (HTTPS with server.tls) and
// starts the jobs' schedules. It returns once the listener is open; Addr
// then says where.
func (g *Gateway) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		return errors.New("gateway: already started")
	}
	cfg := g.cfg.Server
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("server.addr: listen %s: %w", cfg.Addr, err)
	}
	consoleLn, err := g.listenConsole()
	if err != nil {
		ln.Close()
		return err
	}
	// net/http's own complaints (TLS handshakes refused, say a client
	// offering only TLS 1.1) go through logrus, so that the log stays JSON
	// and an operator sees why an institution cannot connect.
	httpErrors := g.log.WriterLevel(logrus.WarnLevel)
	srv := &http.Server{Handler: g.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute,
		// docs/protocol.md §3.1.1 asks for HTTPS; TLS 1.2 is the floor.
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		ErrorLog:  stdlog.New(httpErrors, "", 0)}
	served := make(chan error, 1)
	go func() {
		defer httpErrors.Close()
		var err error
		if cfg.TLS != nil {
			err = srv.ServeTLS(ln, cfg.TLS.CertFile, cfg.TLS.KeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		served <- err
	}()
	g.srv, g.ln, g.served = srv, ln, served
	g.serveConsole(consoleLn)
	g.jobs.Start()
	// On every instance, jobs disabled or not: each serves /metrics.
	g.state.Start()
	g.log.WithFields(logrus.Fields{"addr": ln.Addr().String(), "driver": g.store.Driver(),
		"institutions": len(g.cfg.Institutions), "instance": g.cfg.Server.Instance}).Info("gateway started")
	return nil
}

// Addr is the address the gateway listens on, once started.
func (g *Gateway) Addr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln == nil {
		return nil
	}
	return g.ln.Addr()
}

// Run starts the gateway (unless Start did) and serves until ctx ends (a
// signal) or the server fails, then shuts down within
// server.shutdown_grace.
func (g *Gateway) Run(ctx context.Context) error {
	g.mu.Lock()
	started := g.srv != nil
	g.mu.Unlock()
	if !started {
		if err := g.Start(); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
	case err := <-g.served:
		g.served <- err // for Shutdown
		if err != nil {
			g.log.WithError(err).Error("server failed")
		}
	}
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.Server.ShutdownGrace)
	defer cancel()
	return g.Shutdown(grace)
}

// Shutdown stops taking work, in order: the background count of the
// gauges stops, no new connection or job run, requests and runs in flight
// finish within ctx, then the leases this instance holds are released
// (service.Scheduler.Stop). The store stays open until Close. It returns
// the server's failure if it failed.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return nil
	}
	g.stopped = true
	srv, served := g.srv, g.served
	g.mu.Unlock()
	g.log.Info("shutting down")
	// The background count first: it serves nobody, and a count in flight
	// (seconds at a million orders, or stuck behind a lock) would hold a
	// connection that the release of the leases may need.
	cerr := g.state.Stop(ctx)
	var herr, serr error
	if srv != nil {
		herr = errors.Join(srv.Shutdown(ctx), g.shutdownConsole(ctx))
		serr = <-served
	}
	jerr := g.jobs.Stop(ctx)
	g.log.Info("stopped")
	return errors.Join(serr, herr, jerr, cerr)
}

// Close shuts the gateway down if it is running, with server.shutdown_grace,
// and closes the store it opened.
func (g *Gateway) Close() error {
	var err error
	if g.jobs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Server.ShutdownGrace)
		err = g.Shutdown(ctx)
		cancel()
	}
	if g.ownStore {
		err = errors.Join(err, g.store.Close())
	}
	return err
}
