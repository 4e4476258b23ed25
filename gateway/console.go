package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/console"
	"github.com/procurement/gateway/service"
)

// consoleServer is the operators' console (package console) when it has a
// listener of its own (console.addr); otherwise its handler is mounted
// under /console/ of the main one.
type consoleServer struct {
	handler http.Handler // nil: no console (no users configured)
	srv     *http.Server
	ln      net.Listener
	served  chan error
}

// withConsole builds the console when users are configured, and returns
// the main listener's handler: api alone, or api with the console under
// /console/ unless it has its own address.
func (g *Gateway) withConsole(api http.Handler) (http.Handler, error) {
	cfg := g.cfg.Console
	if !cfg.Enabled() {
		return api, nil
	}
	users := make([]service.ConsoleUser, 0, len(cfg.Users))
	for _, u := range cfg.Users {
		users = append(users, service.ConsoleUser{Name: u.Name, PasswordHash: u.PasswordHash, Role: u.Role})
		if u.PasswordHash == console.DemoPasswordHash {
			g.log.WithFields(logrus.Fields{"user": u.Name, "password": console.DemoPassword}).
				Warn("console: a user has the shipped demo password, which anyone can read in the README: give it its own (gateway password) before the console is reachable by others")
		}
	}
	loc, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("console.time_zone: %w", err)
	}
	h, err := console.New(console.Deps{
		Console:      service.NewConsole(g.svc, service.ConsoleSettings{Users: users, SessionTTL: cfg.SessionTTL}),
		Log:          g.log.WithField("component", "console"),
		Institutions: g.cfg.Redacted().Institutions,
		Location:     loc,
		Metrics:      g.metrics.Registerer(),
	})
	if err != nil {
		return nil, err
	}
	g.console.handler = h
	if cfg.Addr != "" {
		return api, nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/console" || strings.HasPrefix(r.URL.Path, console.Prefix) {
			h.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	}), nil
}

// listenConsole opens console.addr when the console has its own listener.
func (g *Gateway) listenConsole() (net.Listener, error) {
	if g.console.handler == nil || g.cfg.Console.Addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", g.cfg.Console.Addr)
	if err != nil {
		return nil, fmt.Errorf("console.addr: listen %s: %w", g.cfg.Console.Addr, err)
	}
	return ln, nil
}

// serveConsole serves the console on its own listener (if listenConsole
// opened one), with the main server's timeouts and TLS.
func (g *Gateway) serveConsole(ln net.Listener) {
	if ln == nil {
		return
	}
	h := g.console.handler
	mux := http.NewServeMux()
	mux.Handle("/", http.RedirectHandler(console.Prefix, http.StatusFound))
	mux.Handle("/console", h)
	mux.Handle(console.Prefix, h)
	httpErrors := g.log.WriterLevel(logrus.WarnLevel)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}, ErrorLog: stdlog.New(httpErrors, "", 0)}
	served := make(chan error, 1)
	tlsCfg := g.cfg.Server.TLS
	go func() {
		defer httpErrors.Close()
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(ln, tlsCfg.CertFile, tlsCfg.KeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		served <- err
	}()
	g.console.srv, g.console.ln, g.console.served = srv, ln, served
	g.log.WithField("addr", ln.Addr().String()).Info("console listening")
}

// shutdownConsole stops the console's own listener, if it has one.
func (g *Gateway) shutdownConsole(ctx context.Context) error {
	if g.console.srv == nil {
		return nil
	}
	err := g.console.srv.Shutdown(ctx)
	return errors.Join(<-g.console.served, err)
}

// ConsoleAddr is where the console listens when console.addr gives it a
// listener of its own, once started; nil otherwise.
func (g *Gateway) ConsoleAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.console.ln == nil {
		return nil
	}
	return g.console.ln.Addr()
}
