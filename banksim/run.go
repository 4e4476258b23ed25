package banksim

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// shutdownGrace bounds how long Run waits for answers in flight.
const shutdownGrace = 5 * time.Second

// Run serves a Sim built from cfg on addr until ctx is done, then closes it
// (callbacks in flight are abandoned) and shuts the server down. It returns
// nil after a clean shutdown. The `gateway banksim` sub-command runs this.
func Run(ctx context.Context, cfg Config, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return Serve(ctx, cfg, ln)
}

// Serve is Run on a listener the caller opened (say on port 0, to learn the
// port first). It closes ln.
func Serve(ctx context.Context, cfg Config, ln net.Listener) error {
	sim, err := New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           sim.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sim.log.WithField("addr", ln.Addr().String()).WithField("prefix", sim.cfg.Prefix).Info("banksim listening")

	select {
	case err := <-served: // the listener failed
		sim.Close()
		return err
	case <-ctx.Done():
	}
	// Close first: it ends the hanging answers that Shutdown would wait for.
	sim.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
