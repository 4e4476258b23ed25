package faulttest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// TestDatabaseOutage cuts the gateway's connection to MariaDB in the
// middle of callback load: a TCP proxy between the two drops every open
// connection and refuses new ones. While it is cut the gateway must answer
// HTTP 503 with stat 0 (errcode 500001), never stat 1, and /readyz must say
// 503; within 5 s of the database coming back it must serve again, the same
// process, without a restart. Nothing answered stat 1 may be lost.
func TestDatabaseOutage(t *testing.T) {
	faultGate(t)
	t.Parallel() // the three subprocess tests share the wall clock, each on its own database
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	store := openStore(t, "mysql", dsn)
	const (
		nOrders   = 10
		workers   = 4
		before    = 2 * time.Second // load before the cut
		outage    = 4 * time.Second
		after     = 3 * time.Second // load after the database is back
		recoverIn = 5 * time.Second // the bound
	)
	orders := seedOrders(t, store, faultInst.OrgCode, "OUT", nOrders)

	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, cfg.Addr)
	cfg.Addr = proxy.Addr()
	g := startGateway(t, setup{DSN: cfg.FormatDSN(), Institutions: []institution{faultInst}})
	pid := g.Pid()
	snd := newSender(t, faultInst)

	// Distinct paystates, made as the workers need them.
	var mu sync.Mutex
	var cbs []*callback
	next := func() *callback {
		mu.Lock()
		defer mu.Unlock()
		i := len(cbs)
		p := &pay{OrderNo: orders[i%nOrders], Kind: wire.PayKindPay, Amount: decimal.New(int64(100+i), -2),
			PaidAt: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)}
		c := newPayCallback(t, snd, p)
		cbs = append(cbs, c)
		return c
	}

	// /readyz, watched every 100 ms.
	type probe struct {
		at, end time.Time
		status  int
	}
	var probes []probe
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			at := time.Now()
			status, _ := getStatus(g.URL() + "/readyz")
			mu.Lock()
			probes = append(probes, probe{at, time.Now(), status})
			mu.Unlock()
		}
	})
	ctx := context.Background()
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				next().send(ctx, snd, g.URL, time.Now())
				time.Sleep(40 * time.Millisecond)
			}
		})
	}

	time.Sleep(before)
	cutAt := time.Now()
	proxy.Cut()
	cutDone := time.Now()
	time.Sleep(outage)
	restoreAt := time.Now()
	if err := proxy.Restore(); err != nil {
		t.Fatalf("restore the proxy: %v", err)
	}
	// Load goes on until the gateway has served again and for `after` more.
	var servedAt, readyAt time.Time
	waitFor(recoverIn+after, func() bool {
		mu.Lock()
		defer mu.Unlock()
		if servedAt.IsZero() {
			for _, c := range cbs {
				for _, tr := range c.Tries() {
					if tr.Start.After(restoreAt) && tr.Acked() && (servedAt.IsZero() || tr.End.Before(servedAt)) {
						servedAt = tr.End
					}
				}
			}
		}
		if readyAt.IsZero() {
			for _, p := range probes {
				if p.at.After(restoreAt) && p.status == http.StatusOK {
					readyAt = p.at
					break
				}
			}
		}
		return !servedAt.IsZero() && !readyAt.IsZero() && time.Since(restoreAt) > after
	})
	close(stop)
	wg.Wait()

	// The outage as the institution and the load balancer saw it.
	var during, duringAcked, during503, bad int
	for _, c := range cbs {
		for _, tr := range c.Tries() {
			ok503 := tr.Err == nil && tr.Status == http.StatusServiceUnavailable && tr.Resp.Stat == 0 &&
				tr.Resp.Errcode == wire.CodeUnavailable
			if !tr.Acked() && !ok503 {
				bad++
				if bad <= 5 {
					t.Errorf("%s of %s started %v after the cut: %v; want stat 1, or 503 with stat 0 and %s",
						c.Kind, c.OrderNo, tr.Start.Sub(cutAt).Round(time.Millisecond), tr.answer, wire.CodeUnavailable)
				}
			}
			if tr.Start.After(cutDone) && tr.End.Before(restoreAt) {
				during++
				if tr.Acked() {
					duringAcked++
					t.Errorf("%s of %s answered stat 1 while the database was cut", c.Kind, c.OrderNo)
				}
				if ok503 {
					during503++
				}
			}
		}
	}
	if during < 20 {
		t.Errorf("only %d callbacks were sent during the outage; the load did not cover it", during)
	}
	var notReady, readyDuring int
	var first503 time.Time
	for _, p := range probes {
		if first503.IsZero() && p.at.After(cutDone) && p.status == http.StatusServiceUnavailable {
			first503 = p.end
		}
		// The first ping after the cut may still be on its way (2 s timeout).
		if p.at.After(cutDone.Add(2500*time.Millisecond)) && p.end.Before(restoreAt) {
			if p.status == http.StatusServiceUnavailable {
				notReady++
			} else {
				readyDuring++
			}
		}
	}
	if notReady == 0 || readyDuring > 0 {
		t.Errorf("/readyz during the outage: %d answers 503, %d other; want every one 503", notReady, readyDuring)
		for _, p := range probes {
			t.Logf("/readyz at %v after the cut: %d", p.at.Sub(cutDone).Round(time.Millisecond), p.status)
		}
	}
	if servedAt.IsZero() || servedAt.Sub(restoreAt) > recoverIn {
		t.Errorf("no callback answered stat 1 within %v of the database coming back (first at %v)", recoverIn, sinceOrNever(servedAt, restoreAt))
	}
	if readyAt.IsZero() || readyAt.Sub(restoreAt) > recoverIn {
		t.Errorf("/readyz not 200 within %v of the database coming back (first at %v)", recoverIn, sinceOrNever(readyAt, restoreAt))
	}
	if !g.Running() || g.Pid() != pid {
		t.Errorf("the gateway was restarted or died during the outage")
	}

	// Stored but not acknowledged: a 503 whose transaction committed as the
	// connection dropped; the sender retries and the dedup key absorbs it.
	first := verifyStored(t, store, orders, cbs)
	t.Logf("outage of %v (cut took %v): %d callbacks sent during it, %d answered 503/%s, %d stat 1; /readyz 503 %v after the cut, then ×%d",
		outage, cutDone.Sub(cutAt).Round(time.Microsecond), during, during503, wire.CodeUnavailable, duringAcked,
		sinceOrNever(first503, cutDone), notReady)
	t.Logf("recovery after the database came back: first stat 1 after %v, /readyz 200 after %v (bound %v)",
		sinceOrNever(servedAt, restoreAt), sinceOrNever(readyAt, restoreAt), recoverIn)
	t.Logf("callbacks: %d distinct, acknowledged %d, stored %d, lost %d, doubled %d, answered 503 but stored %d, other answers %v",
		len(cbs), first.Acked, first.Stored, first.Lost, first.Doubled, first.StoredUnacked, first.Others)

	// The institution sends again what was refused; all of it is stored once.
	resendUnacked(ctx, snd, g.URL, cbs, workers)
	final := verifyStored(t, store, orders, cbs)
	if final.Acked != len(cbs) || final.Stored != len(cbs) || final.Lost != 0 || final.Doubled != 0 {
		t.Errorf("after the re-sends: acknowledged %d, stored %d of %d, lost %d, doubled %d; want all stored once",
			final.Acked, final.Stored, len(cbs), final.Lost, final.Doubled)
	}
}

func sinceOrNever(at, from time.Time) string {
	if at.IsZero() {
		return "never"
	}
	return at.Sub(from).Round(time.Millisecond).String()
}

// tcpProxy forwards connections to a target. Cut drops every open
// connection and refuses new ones (its listener is closed, so a dial gets
// ECONNREFUSED, as from a database host that is down); Restore listens
// again on the same address.
type tcpProxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	up    bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(func() {
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is where the gateway dials.
func (p *tcpProxy) Addr() string { return p.addr }

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln, p.up = ln, true
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

func (p *tcpProxy) pipe(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		client.Close()
		server.Close()
		return
	}
	var wg sync.WaitGroup
	copyClose := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	wg.Go(func() { copyClose(server, client) })
	wg.Go(func() { copyClose(client, server) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// track registers a connection pair unless the proxy was cut meanwhile.
func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.up {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// Cut refuses new connections and drops the open ones.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = false
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		// Reset rather than close: what a dropped link or a dead host does.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Restore listens again on the same address.
func (p *tcpProxy) Restore() error {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("listen %s again: %w", p.addr, err)
}
