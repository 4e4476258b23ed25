package scale

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// Paystate callbacks, encrypted with the institution's real cipher and
// posted over HTTP as an institution does, each to its own order: orders
// the run creates (processing, as after an accepted apply, next check a
// day away) and deletes again at the end.

// callbackWorkers post at once during the rolling restart.
const callbackWorkers = 8

// The quiet time before and after instance A's shutdown during which the
// callbacks run; the latency that counts is of those in flight while A
// shuts down.
const rollingMargin = 300 * time.Millisecond

// callbacks: one paystate on its own, then the rolling restart.
func (r *run) callbacks(ctx context.Context) error {
	if err := r.createOrders(ctx); err != nil {
		return err
	}
	bodies, err := r.seal()
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: callbackWorkers, DisableCompression: true}}
	defer client.CloseIdleConnections()

	// One callback at a time: the last five orders, the median of five.
	var one []time.Duration
	for _, body := range bodies[len(bodies)-5:] {
		took, err := r.post(ctx, client, body)
		if err != nil {
			return err
		}
		one = append(one, took)
	}
	slices.Sort(one)
	r.f.ms("paystate callback: time", one[len(one)/2], atMost(ms(callbackMax), UnitMs, ""))

	return r.rolling(ctx, client, bodies[:len(bodies)-5])
}

// createOrders stores the callbacks' orders directly, a few at a time.
func (r *run) createOrders(ctx context.Context) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	next := now.Add(24 * time.Hour)
	deposit := decimal.RequireFromString("100000.00")
	orders := make(chan *model.Order)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := r.bDB.With(ctx)
			for o := range orders {
				if err := st.CreateOrder(o); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	prefix := "SCALE" + r.id
	for i := range r.cfg.Callbacks {
		no := fmt.Sprintf("%s%06d", prefix, i)
		h := sha256.Sum256([]byte(no))
		r.cbOrders = append(r.cbOrders, no)
		orders <- &model.Order{OrderNo: no, OrgCode: OrgCode, Status: model.StatusProcessing,
			RequestHash: hex.EncodeToString(h[:]), ApplicantName: "规模测试企业" + strconv.Itoa(i), ApplicantCode: "SC" + no,
			DepositAmount: deposit, ProjectName: "规模测试项目", ProjectCode: "SCXM-" + r.id, LotName: "一标段", LotCode: "BD-1",
			OpeningAt: now.Add(48 * time.Hour), DeadlineAt: now.Add(24 * time.Hour),
			TendererName: "规模测试招标人", TendererCode: "11110000000000000Y",
			AccountBank: "规模测试银行", AccountName: "规模测试企业" + strconv.Itoa(i), AccountNo: fmt.Sprintf("6222%012d", i),
			ContactName: "张三", ContactPhone: "13800000000", ContactEmail: "scale@example.cn", NextCheckAt: &next}
	}
	close(orders)
	wg.Wait()
	select {
	case err := <-errc:
		return fmt.Errorf("create orders: %w", err)
	default:
		return nil
	}
}

// seal makes each order's paystate envelope.
func (r *run) seal() ([][]byte, error) {
	c := r.config("seal").Institutions[0]
	cipher, err := crypto.New(c.Cipher.Options(), c.AppSecret)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	out := make([][]byte, len(r.cbOrders))
	for i, no := range r.cbOrders {
		plain, err := json.Marshal(wire.PayState{OrderNo: no, Amount: decimal.RequireFromString("200.00"),
			PaidAt: now, Kind: wire.PayKindPay, PayerName: "规模测试企业" + strconv.Itoa(i),
			PayerAccount: fmt.Sprintf("6222%012d", i)})
		if err != nil {
			return nil, err
		}
		text, err := cipher.Encrypt(plain)
		if err != nil {
			return nil, err
		}
		if out[i], err = json.Marshal(wire.Request{Data: string(text)}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// post sends one paystate to gateway B and insists on stat 1.
func (r *run) post(ctx context.Context, client *http.Client, body []byte) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.bURL+"/api/guarantee/paystate", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", r.appKey)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return time.Since(start), fmt.Errorf("paystate: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("paystate: %w", err)
	}
	var ans wire.Response
	if err := json.Unmarshal(raw, &ans); err != nil || resp.StatusCode != http.StatusOK || ans.Stat != 1 {
		return took, fmt.Errorf("paystate: HTTP %d %.120q", resp.StatusCode, raw)
	}
	return took, nil
}

// sent is one callback of the rolling restart.
type sent struct {
	start, end time.Time
	err        error
}

// rolling is the rolling restart: callbacks run at gateway B while gateway
// A, on the same database and holding leases, shuts down gracefully. What
// counts is the slowest callback in flight while A shut down: A's release
// of its leases must not hold B's writers.
func (r *run) rolling(ctx context.Context, client *http.Client, bodies [][]byte) error {
	aDB, err := r.pool(ctx)
	if err != nil {
		return err
	}
	defer aDB.Close()
	instA := "scale-a-" + r.id
	a, err := r.gateway(ctx, instA, aDB)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Start(); err != nil {
		return err
	}
	// A holds leases as its jobs would: on some of the orders the
	// callbacks are for, on others, and on deliveries.
	leased := r.cbOrders[:min(100, len(r.cbOrders))]
	until := time.Now().UTC().Add(2 * time.Minute)
	if _, err := r.store.DB().ExecContext(ctx, "UPDATE orders SET lease_owner = ?, lease_until = ? WHERE order_no >= ? AND order_no <= ?",
		instA+"/poll/y", until, leased[0], leased[len(leased)-1]); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	var firstCB int64
	if err := r.store.DB().QueryRowContext(ctx, "SELECT id FROM orders WHERE order_no = ?", r.cbOrders[0]).Scan(&firstCB); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	if _, _, err := r.lease(ctx, instA, 100, oldDeliveries, firstCB); err != nil {
		return err
	}

	var (
		next    atomic.Int64
		stop    atomic.Bool
		ranOut  atomic.Bool
		results = make([]sent, len(bodies))
		wg      sync.WaitGroup
	)
	for range callbackWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(bodies) {
					ranOut.Store(true)
					return
				}
				start := time.Now()
				_, err := r.post(ctx, client, bodies[i])
				results[i] = sent{start: start, end: time.Now(), err: err}
			}
		}()
	}
	time.Sleep(rollingMargin)
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	t0 := time.Now()
	serr := a.Shutdown(sctx)
	t1 := time.Now()
	cancel()
	time.Sleep(rollingMargin)
	stop.Store(true)
	wg.Wait()
	if serr != nil {
		return fmt.Errorf("instance A's shutdown: %w", serr)
	}
	if ranOut.Load() {
		return fmt.Errorf("the %d callbacks ran out before the rolling restart ended: give more (Callbacks)", len(bodies))
	}

	var worst time.Duration
	var n, failed, during int
	for _, s := range results {
		if s.start.IsZero() {
			continue
		}
		n++
		if s.err != nil {
			failed++
			continue
		}
		if s.start.Before(t1) && s.end.After(t0) {
			during++
			worst = max(worst, s.end.Sub(s.start))
		}
	}
	if during == 0 {
		return errors.New("no callback was in flight during instance A's shutdown")
	}
	var left int64
	if err := r.store.DB().QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM orders WHERE lease_owner >= ? AND lease_owner < ?) + "+
		"(SELECT COUNT(*) FROM deliveries WHERE lease_owner >= ? AND lease_owner < ?)",
		instA+"/", instA+"0", instA+"/", instA+"0").Scan(&left); err != nil {
		return fmt.Errorf("leases left: %w", err)
	}
	r.f.ms("rolling restart: A's shutdown", t1.Sub(t0), Target{})
	r.f.ms("rolling restart: slowest callback during it", worst, atMost(ms(rollingMax), UnitMs, ""))
	r.f.add("rolling restart: callbacks sent", UnitCount, float64(n), Target{})
	r.f.add("rolling restart: callbacks failed", UnitCount, float64(failed), exactly(0))
	r.f.add("rolling restart: A's leases left", UnitCount, float64(left), exactly(0))
	return nil
}

// cleanup deletes what the callbacks stored, and their orders. It runs
// once, as a step and again (doing nothing) when the run ends early.
func (r *run) cleanup(ctx context.Context) error {
	if len(r.cbOrders) == 0 {
		return nil
	}
	lo, hi := r.cbOrders[0], r.cbOrders[len(r.cbOrders)-1]
	for _, t := range []string{"payments", "callbacks", "order_events", "outbound_calls", "guarantee_files", "orders"} {
		if _, err := r.store.DB().ExecContext(ctx, "DELETE FROM "+t+" WHERE order_no >= ? AND order_no <= ?", lo, hi); err != nil {
			return fmt.Errorf("cleanup %s: %w", t, err)
		}
	}
	r.cbOrders = nil
	return nil
}
