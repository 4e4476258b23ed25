package scale

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/gateway"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/service"
)

// Targets (docs/operations.md, "Measuring at size").
const (
	// A claim reads at most this many rows per row of its batch: the due
	// orders of its queue, not the orders ever created.
	claimRowsPerBatchRow = 20
	releaseMax           = 100 * time.Millisecond // the shutdown's lease release
	rollingMax           = 200 * time.Millisecond // a callback during another instance's shutdown
	incrementalMax       = 5 * time.Second        // the incremental reconciliation
	metricsMax           = 500 * time.Millisecond // a scrape
	listMax              = 200 * time.Millisecond // a page of the API or the console
	lookupMax            = 50 * time.Millisecond  // an order, its events
	callbackMax          = 100 * time.Millisecond // one paystate, committed
	// A page costs at most this many statements, whatever its size: a
	// handful (the orders, their files; a search one per column), never one
	// per order.
	pageStatements = 8
	// Leases given to "scale-old" before its release is measured.
	oldOrders, oldDeliveries = 200, 50
	touched                  = 1000 // orders touched before the incremental reconciliation
)

// OrgCode is the institution of the orders the run creates for its
// callbacks, configured in the gateways it starts.
const OrgCode = "SCALE"

// run is the measurement of one database.
type run struct {
	cfg   Config
	label string
	dsn   string
	id    string // this run's random part: orderno prefix, instance names
	log   *logrus.Logger

	store *model.Store // one connection: its session counters are the figures
	sess  *session
	m     *gateway.Gateway // on store, not started: its service is measured
	b     *gateway.Gateway // started on its own pool: HTTP measurements
	bURL  string
	bDB   *model.Store

	appKey, secret, token string

	f *Figures
	// A sample of the database, read before anything is written.
	minID, maxID int64
	sample       struct {
		orderNo, orgCode string
		createdAt        time.Time
	}
	cbOrders []string // created for the callbacks, deleted at the end
}

func measure(ctx context.Context, cfg Config, label, dsn string) (_ *Figures, err error) {
	r := &run{cfg: cfg, label: label, dsn: dsn, id: randomHex(3)}
	dbName := ""
	if c, err := mysqldrv.ParseDSN(dsn); err == nil {
		dbName = c.DBName
	}
	r.f = &Figures{Database: dbName, Batch: cfg.BatchSize}
	r.log = logrus.New()
	r.log.SetOutput(cfg.Log)
	r.log.SetLevel(logrus.WarnLevel)
	r.log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	r.appKey, r.secret, r.token = "scale-"+r.id, randomHex(16), randomHex(16)

	r.step("opening %s", dbName)
	r.store, err = model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 1, MaxIdle: 1})
	if err != nil {
		return nil, err
	}
	defer r.store.Close()
	if r.m, err = r.gateway(ctx, "scale-m-"+r.id, r.store); err != nil {
		return nil, err
	}
	defer r.m.Close()
	if r.bDB, err = r.pool(ctx); err != nil {
		return nil, err
	}
	defer r.bDB.Close()
	if r.b, err = r.gateway(ctx, "scale-b-"+r.id, r.bDB); err != nil {
		return nil, err
	}
	defer r.b.Close()
	if err := r.b.Start(); err != nil {
		return nil, err
	}
	r.bURL = "http://" + r.b.Addr().String()
	if r.sess, err = newSession(ctx, r.store.DB()); err != nil {
		return nil, err
	}
	if err := r.survey(ctx); err != nil {
		return nil, err
	}
	defer func() {
		// The orders made for the callbacks go, whatever happened.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if cerr := r.cleanup(cctx); cerr != nil && err == nil {
			err = cerr
		}
	}()

	for _, step := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"GET /metrics", r.metrics},
		{"claims", r.claims},
		{"shutdown release", r.release},
		{"callbacks and rolling restart", r.callbacks},
		{"reconciliation", r.reconcile},
		{"lists", r.lists},
		{"order and events", r.lookups},
		{"cleanup", r.cleanup},
		{"bytes per order", r.bytes},
	} {
		r.step("%s", step.name)
		if err := step.fn(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return r.f, nil
}

func (r *run) step(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "scale: %s: %s\n", r.label, fmt.Sprintf(format, args...))
}

// gateway builds a gateway on store as gateway loadtest does, named
// instance in its leases, its jobs off (they would call institutions about
// the filled orders): the shutdown still releases the instance's leases.
func (r *run) gateway(ctx context.Context, instance string, store *model.Store) (*gateway.Gateway, error) {
	gw, err := gateway.New(ctx, r.config(instance), r.log, gateway.WithStore(store))
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", instance, err)
	}
	return gw, nil
}

// config is the configuration of the run's gateways.
func (r *run) config(instance string) *config.Config {
	cfg := &config.Config{
		Server: config.Server{Addr: "127.0.0.1:0", PublicBaseURL: "http://127.0.0.1", ShutdownGrace: 10 * time.Second,
			Instance: instance},
		Database: config.Database{Driver: "mysql", DSN: r.dsn},
		API:      config.API{Tokens: []string{r.token}},
		Institutions: []config.Institution{{OrgCode: OrgCode, Name: "scale run institution",
			BaseURL: "http://127.0.0.1:9/unused", AppKey: r.appKey, AppSecret: r.secret}},
		Jobs: config.Jobs{Disabled: true, BatchSize: r.cfg.BatchSize},
		Log:  config.Log{Level: "warn", Format: "json"},
	}
	cfg.ApplyDefaults()
	return cfg
}

// pool opens the database as a gateway does (database.max_open_conns'
// default), for the gateways that serve HTTP.
func (r *run) pool(ctx context.Context) (*model.Store, error) {
	d := r.config("pool").Database
	return model.Open(ctx, "mysql", r.dsn, model.Pool{MaxOpen: d.MaxOpenConns, MaxIdle: d.MaxIdleConns,
		MaxLifetime: d.ConnMaxLife})
}

// survey counts the orders and picks one in the middle of the table: the
// order looked up, searched for, and whose day the created range spans.
func (r *run) survey(ctx context.Context) error {
	db := r.store.DB()
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(MIN(id), 0), COALESCE(MAX(id), 0) FROM orders").
		Scan(&r.f.Orders, &r.minID, &r.maxID); err != nil {
		return fmt.Errorf("survey: %w", err)
	}
	if r.f.Orders == 0 {
		return errors.New("survey: the database has no orders: fill it first (gateway scale --fill)")
	}
	err := db.QueryRowContext(ctx, "SELECT order_no, org_code, created_at FROM orders WHERE id >= ? ORDER BY id LIMIT 1",
		(r.minID+r.maxID)/2).Scan(&r.sample.orderNo, &r.sample.orgCode, &r.sample.createdAt)
	if err != nil {
		return fmt.Errorf("survey: %w", err)
	}
	r.step("%d orders; sample order %s of %s", r.f.Orders, r.sample.orderNo, r.sample.orgCode)
	return nil
}

// claims: each job's claim of one batch, released again, and the
// deliveries' due read.
func (r *run) claims(ctx context.Context) error {
	batch := r.cfg.BatchSize
	rowsMax := atMost(float64(claimRowsPerBatchRow*batch), UnitRows, fmt.Sprintf("%d × batch", claimRowsPerBatchRow))
	st := r.store.With(ctx)
	for _, q := range []model.OrderQueue{model.QueuePoll, model.QueueApply, model.QueuePull} {
		token := "scale-m-" + r.id + "/" + q.String() + "/" + randomHex(6)
		now := time.Now().UTC()
		var got []model.Order
		c, err := r.sess.measure(ctx, func() (err error) {
			got, err = st.ClaimOrders(q, token, now, now, now.Add(2*time.Minute), batch)
			return err
		})
		if err != nil {
			return err
		}
		ids := make([]int64, len(got))
		for i := range got {
			ids[i] = got[i].ID
		}
		if _, err := st.ReleaseLeases(token, ids...); err != nil {
			return err
		}
		name := "claim " + q.String()
		r.f.ms(name+": time", c.took, Target{})
		r.f.add(name+": rows examined", UnitRows, float64(c.rows), rowsMax)
		r.f.add(name+": orders claimed", UnitCount, float64(len(got)), Target{})
	}
	now := time.Now().UTC()
	c, err := r.sess.measure(ctx, func() error {
		_, err := st.DueDeliveries(now, now, 0, batch)
		return err
	})
	if err != nil {
		return err
	}
	r.f.ms("due deliveries: time", c.took, Target{})
	r.f.add("due deliveries: rows examined", UnitRows, float64(c.rows), rowsMax)
	return nil
}

// lease gives instance's claim leases on up to n orders and m deliveries
// that hold none (the newest below belowID, when set), as a job of that
// instance would hold them, and returns how many it gave.
func (r *run) lease(ctx context.Context, instance string, n, m int, belowID int64) (orders, deliveries int64, err error) {
	db := r.store.DB()
	token := instance + "/poll/x"
	until := time.Now().UTC().Add(2 * time.Minute)
	q := "UPDATE orders SET lease_owner = ?, lease_until = ? WHERE lease_owner = ''"
	args := []any{token, until}
	if belowID > 0 {
		q += " AND id < ?"
		args = append(args, belowID)
	}
	res, err := db.ExecContext(ctx, q+" ORDER BY id DESC LIMIT ?", append(args, n)...)
	if err != nil {
		return 0, 0, fmt.Errorf("lease orders: %w", err)
	}
	orders, _ = res.RowsAffected()
	res, err = db.ExecContext(ctx, "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE lease_owner = '' ORDER BY id DESC LIMIT ?",
		token, until, m)
	if err != nil {
		return 0, 0, fmt.Errorf("lease deliveries: %w", err)
	}
	deliveries, _ = res.RowsAffected()
	return orders, deliveries, nil
}

// release: the leases of an instance that shuts down, freed by
// model.ReleaseInstance while other instances hold theirs.
func (r *run) release(ctx context.Context) error {
	const old = "scale-old"
	no, nd, err := r.lease(ctx, old, oldOrders, oldDeliveries, 0)
	if err != nil {
		return err
	}
	var fo, fd int64
	c, err := r.sess.measure(ctx, func() (err error) {
		fo, fd, err = r.store.With(ctx).ReleaseInstance(old)
		return err
	})
	if err != nil {
		return err
	}
	r.f.ms("shutdown release: time", c.took, atMost(ms(releaseMax), UnitMs, ""))
	// Each released row is read once through the lease index and once
	// by its primary key: a few reads per row, and none of anyone else's.
	r.f.add("shutdown release: rows examined", UnitRows, float64(c.rows),
		atMost(float64(4*(oldOrders+oldDeliveries)+20), UnitRows, "its rows only"))
	r.f.add("shutdown release: leases freed of given", UnitCount, float64(fo+fd-no-nd), exactly(0))
	return nil
}

// reconcile: a full reconciliation, then 1,000 orders touched and an
// incremental one.
func (r *run) reconcile(ctx context.Context) error {
	svc := r.m.Service()
	date := time.Now().UTC().Format(time.DateOnly)
	full, err := r.sess.measure(ctx, func() error { return reconcileRun(ctx, svc, date, true) })
	if err != nil {
		return err
	}
	r.f.ms("reconcile full: time", full.took, Target{})
	r.f.add("reconcile full: rows examined", UnitRows, float64(full.rows), Target{})
	if err := r.touch(ctx); err != nil {
		return err
	}
	inc, err := r.sess.measure(ctx, func() error { return reconcileRun(ctx, svc, date, false) })
	if err != nil {
		return err
	}
	r.f.ms("reconcile incremental (1,000 touched): time", inc.took, atMost(ms(incrementalMax), UnitMs, ""))
	r.f.add("reconcile incremental: rows examined", UnitRows, float64(inc.rows), Target{})
	return nil
}

// reconcileRun runs the reconciliation of date, in full or from its mark.
func reconcileRun(ctx context.Context, svc *service.Service, date string, full bool) error {
	_, err := svc.Reconcile(ctx, date, full)
	return err
}

// touch sets updated_at of 1,000 orders spread over the table to now, as
// that many callbacks would.
func (r *run) touch(ctx context.Context) error {
	n := min(int64(touched), r.f.Orders)
	ids := make([]any, 0, n)
	for i := range n {
		ids = append(ids, r.minID+i*(r.maxID-r.minID+1)/n)
	}
	q := "UPDATE orders SET updated_at = UTC_TIMESTAMP(3) WHERE id IN (?" + strings.Repeat(",?", len(ids)-1) + ")"
	if _, err := r.store.DB().ExecContext(ctx, q, ids...); err != nil {
		return fmt.Errorf("touch: %w", err)
	}
	return nil
}

// lists: the API's and the console's lists (service.List) under each filter.
func (r *run) lists(ctx context.Context) error {
	day := r.sample.createdAt.UTC().Truncate(24 * time.Hour)
	for _, l := range []struct {
		name string
		q    service.ListQuery
	}{
		{"list flag (no match)", service.ListQuery{Flag: string(model.FlagURLRefused)}},
		{"list status=issued, 50", service.ListQuery{Status: string(model.StatusIssued), Limit: 50}},
		{"list org, 50", service.ListQuery{OrgCode: r.sample.orgCode, Limit: 50}},
		{"list search orderno", service.ListQuery{Search: r.sample.orderNo}},
		{"list created range (1 day), 50", service.ListQuery{From: day, To: day.Add(24 * time.Hour), Limit: 50}},
		{"list page of 500", service.ListQuery{Limit: 500}},
	} {
		var page *service.OrderPage
		c, err := r.sess.median(ctx, 3, func() (err error) {
			page, err = r.m.Service().List(ctx, l.q)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
		limit := l.q.Limit
		if limit == 0 {
			limit = 50
		}
		r.f.ms(l.name+": time", c.took, atMost(ms(listMax), UnitMs, ""))
		r.f.add(l.name+": statements", UnitStmts, float64(c.stmts), atMost(pageStatements, UnitStmts, "constant"))
		r.f.add(l.name+": rows examined", UnitRows, float64(c.rows),
			atMost(float64(claimRowsPerBatchRow*(limit+1)), UnitRows, fmt.Sprintf("%d × page", claimRowsPerBatchRow)))
		_ = page
	}
	return nil
}

// lookups: one order by its number, and its events.
func (r *run) lookups(ctx context.Context) error {
	svc := r.m.Service()
	no := r.sample.orderNo
	for _, l := range []struct {
		name string
		fn   func() error
	}{
		{"order by number", func() error { _, err := svc.View(ctx, no); return err }},
		{"order's events", func() error { _, err := svc.Events(ctx, no); return err }},
	} {
		c, err := r.sess.median(ctx, 5, l.fn)
		if err != nil {
			return fmt.Errorf("%s %s: %w", l.name, no, err)
		}
		r.f.ms(l.name+": time", c.took, atMost(ms(lookupMax), UnitMs, ""))
		r.f.add(l.name+": rows examined", UnitRows, float64(c.rows), atMost(1000, UnitRows, ""))
	}
	return nil
}

// bytes: the space of each table per order, as InnoDB reports it after
// ANALYZE TABLE (data and indexes, pages allocated).
func (r *run) bytes(ctx context.Context) error {
	db := r.store.DB()
	tables := []string{"orders", "order_events", "payments", "callbacks", "guarantee_files", "outbound_calls",
		"deliveries", "findings"}
	var total float64
	for _, t := range tables {
		if _, err := db.ExecContext(ctx, "ANALYZE TABLE "+t); err != nil {
			return fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	for _, t := range tables {
		var size sql.NullInt64
		err := db.QueryRowContext(ctx, "SELECT data_length + index_length FROM information_schema.tables "+
			"WHERE table_schema = DATABASE() AND table_name = ?", t).Scan(&size)
		if err != nil {
			return fmt.Errorf("size of %s: %w", t, err)
		}
		per := float64(size.Int64) / float64(r.f.Orders)
		total += per
		r.f.add("bytes per order: "+t, UnitBytes, per, Target{})
	}
	var all sql.NullInt64
	if err := db.QueryRowContext(ctx, "SELECT SUM(data_length + index_length) FROM information_schema.tables "+
		"WHERE table_schema = DATABASE()").Scan(&all); err != nil {
		return fmt.Errorf("size: %w", err)
	}
	r.f.add("bytes per order: all tables", UnitBytes, float64(all.Int64)/float64(r.f.Orders), Target{})
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// metrics: a scrape of gateway B's GET /metrics (the median of five after
// one to warm), and whether it could read the database.
func (r *run) metrics(ctx context.Context) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	var took []time.Duration
	var body []byte
	for i := range 6 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.bURL+"/metrics", nil)
		if err != nil {
			return err
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
		}
		if i > 0 {
			took = append(took, time.Since(start))
		}
	}
	slices.Sort(took)
	up := math.NaN()
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "gateway_database_up "); ok {
			up, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	r.f.ms("GET /metrics: time", took[len(took)/2], atMost(ms(metricsMax), UnitMs, ""))
	r.f.add("GET /metrics: gateway_database_up", UnitCount, up, exactly(1))
	return nil
}
