package service

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/procurement/gateway/model"
)

// PrometheusMetrics counts what the gateway does, on its own registry (no
// global default registry: tests build as many gateways as they like).
type PrometheusMetrics struct {
	reg       *prometheus.Registry
	callbacks *prometheus.CounterVec
	cbLatency *prometheus.HistogramVec
	calls     *prometheus.CounterVec
	callLat   *prometheus.HistogramVec
	jobRuns   *prometheus.CounterVec
	jobDur    *prometheus.HistogramVec
	batches   *prometheus.HistogramVec
	guard     *guardMetrics
	dbWork    *prometheus.CounterVec
	dbRetries *prometheus.CounterVec
}

// NewPrometheusMetrics registers the gateway's metrics and the Go runtime
// and process collectors.
func NewPrometheusMetrics() *PrometheusMetrics {
	m := &PrometheusMetrics{
		reg: prometheus.NewRegistry(),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_callbacks_total",
			Help: "Callbacks received, by institution, kind, result (accepted, duplicate, late, rejected) and errcode."},
			[]string{"institution", "kind", "result", "errcode"}),
		cbLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_callback_duration_seconds",
			Help: "Time to take a callback, decryption and commit included.", Buckets: prometheus.DefBuckets},
			[]string{"institution", "kind"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_institution_calls_total",
			Help: "Outbound call attempts to institutions, by endpoint and result (ok or the failure kind)."},
			[]string{"institution", "endpoint", "result"}),
		callLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_institution_call_duration_seconds",
			Help: "Latency of outbound calls.", Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
			[]string{"institution", "endpoint"}),
		jobRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_job_runs_total",
			Help: "Scheduled job runs, by job and result."}, []string{"job", "result"}),
		jobDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_job_duration_seconds",
			Help: "Duration of scheduled job runs.", Buckets: []float64{.01, .1, .5, 1, 5, 15, 60, 300}}, []string{"job"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_callback_batch_size",
			Help:    "Callbacks per group-committed transaction, by kind and result: committed, or rolled_back (its callbacks then went one by one).",
			Buckets: []float64{2, 4, 8, 16, 32, 64}}, []string{"kind", "result"}),
		dbWork: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_db_transactions_total",
			Help: "Transactions (and writes on the pool) run, by op and result: first_try, retried (refused over a conflict, then done), exhausted (refused on every attempt: the caller was told to retry)."},
			[]string{"op", "result"}),
		dbRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_db_retries_total",
			Help: "Times a transaction (or a write on the pool) was run again after the database refused it over a conflict: a deadlock, a lock wait timeout, a Galera certification failure."},
			[]string{"op"}),
	}
	m.reg.MustRegister(m.callbacks, m.cbLatency, m.calls, m.callLat, m.jobRuns, m.jobDur, m.batches, m.dbWork, m.dbRetries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.guard = newGuardMetrics(m.reg)
	return m
}

// Callback counts one callback.
func (m *PrometheusMetrics) Callback(org, kind, result, errcode string, d time.Duration) {
	m.callbacks.WithLabelValues(org, kind, result, errcode).Inc()
	m.cbLatency.WithLabelValues(org, kind).Observe(d.Seconds())
}

// CallbackBatch counts one group commit of n callbacks.
func (m *PrometheusMetrics) CallbackBatch(kind, result string, n int) {
	m.batches.WithLabelValues(kind, result).Observe(float64(n))
}

// DBWork counts one transaction or write on the pool, and the times it was
// run again; it is the store's model.Retry.Observe.
func (m *PrometheusMetrics) DBWork(op string, retries int, exhausted bool) {
	result := "first_try"
	switch {
	case exhausted:
		result = "exhausted"
	case retries > 0:
		result = "retried"
	}
	m.dbWork.WithLabelValues(op, result).Inc()
	if retries > 0 {
		m.dbRetries.WithLabelValues(op).Add(float64(retries))
	}
}

// Call counts one outbound attempt.
func (m *PrometheusMetrics) Call(org, endpoint, result string, d time.Duration) {
	m.calls.WithLabelValues(org, endpoint, result).Inc()
	m.callLat.WithLabelValues(org, endpoint).Observe(d.Seconds())
}

// JobRun counts one job run.
func (m *PrometheusMetrics) JobRun(job, result string, d time.Duration) {
	m.jobRuns.WithLabelValues(job, result).Inc()
	m.jobDur.WithLabelValues(job).Observe(d.Seconds())
}

// Watch adds the gauges of where orders and deliveries stand, served from
// the service's last count (Service.LastState, kept fresh by a
// StateCounter) so that a scrape never waits for a count, with that
// count's age; and gateway_database_up, asked of the database at each
// scrape by the cheap readiness check of /readyz.
func (m *PrometheusMetrics) Watch(s *Service) {
	m.reg.MustRegister(&stateCollector{s: s,
		orders: prometheus.NewDesc("gateway_orders", "Orders by status, at the last count (gateway_state_age_seconds ago).", []string{"status"}, nil),
		flagged: prometheus.NewDesc("gateway_orders_flagged", "Orders flagged for operators (stale, apply_unconfirmed, pull_failed, url_refused), at the last count.",
			[]string{"flag"}, nil),
		deliveries: prometheus.NewDesc("gateway_deliveries", "Project-state deliveries by status, at the last count.", []string{"status"}, nil),
		age: prometheus.NewDesc("gateway_state_age_seconds",
			"Seconds since the last successful count of gateway_orders, gateway_orders_flagged and gateway_deliveries started; absent, like them, until a count succeeds.", nil, nil),
		counted: prometheus.NewDesc("gateway_state_counted_timestamp_seconds",
			"Unix time at which the last successful count of the order and delivery gauges started; 0 while none has succeeded since the process started.", nil, nil),
		took: prometheus.NewDesc("gateway_state_count_duration_seconds", "How long the last successful count took.", nil, nil),
		up: prometheus.NewDesc("gateway_database_up",
			"1 when the database answered this scrape's readiness check (as /readyz) within 1 s, 0 otherwise.", nil, nil)})
}

// Handler serves the metrics in the Prometheus text format.
func (m *PrometheusMetrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// upTimeout bounds the readiness check of a scrape: a healthy database
// answers it in a millisecond, and a scrape must end well within
// Prometheus' own timeout (10 s by default) to report 0 rather than
// nothing when the database hangs.
const upTimeout = time.Second

type stateCollector struct {
	s                                                   *Service
	orders, flagged, deliveries, age, counted, took, up *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.orders, c.flagged, c.deliveries, c.age, c.counted, c.took, c.up} {
		ch <- d
	}
}

// Collect reads no table: the readiness check reads a row of goose's, and
// the gauges come from memory.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	up := 1.0
	if err := c.s.Ready(ctx); err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	st, ok := c.s.LastState()
	if !ok {
		// Zeros would read as "no order anywhere": no gauge until a count
		// succeeded, and a timestamp that says so.
		ch <- prometheus.MustNewConstMetric(c.counted, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.counted, prometheus.GaugeValue, float64(st.At.UnixMilli())/1e3)
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, max(c.s.now().Sub(st.At), 0).Seconds())
	ch <- prometheus.MustNewConstMetric(c.took, prometheus.GaugeValue, st.Took.Seconds())
	for _, status := range model.AllStatuses {
		ch <- prometheus.MustNewConstMetric(c.orders, prometheus.GaugeValue, float64(st.Orders[status]), string(status))
	}
	for _, f := range model.AllFlags {
		ch <- prometheus.MustNewConstMetric(c.flagged, prometheus.GaugeValue, float64(st.Flagged[f]), string(f))
	}
	for _, d := range []string{model.DeliveryPending, model.DeliveryDelivered, model.DeliveryDead} {
		ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.GaugeValue, float64(st.Deliveries[d]), d)
	}
}
