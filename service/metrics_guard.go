package service

import "github.com/prometheus/client_golang/prometheus"

// guardMetrics count what the gateway refused to do for the safety of its
// memory, its disk and the hosts around it (docs/operations.md "Metrics").
type guardMetrics struct {
	unaudited    *prometheus.CounterVec
	fileRefused  *prometheus.CounterVec
	urlRefused   *prometheus.CounterVec
	budgetRefuse *prometheus.CounterVec
	budgetHeld   prometheus.Gauge
	insecure     prometheus.Gauge
}

func newGuardMetrics(reg prometheus.Registerer) *guardMetrics {
	g := &guardMetrics{
		unaudited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_callbacks_unaudited_total",
			Help: "Callbacks refused from their headers alone (unknown appKey, source outside allow_cidrs, over rate_limit) that were only counted, not audited: over server.stranger_audit_rate."},
			[]string{"kind"}),
		fileRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_files_refused_total",
			Help: "Guarantee files refused because they are not a readable PDF, by institution and source (applynotify, pull)."},
			[]string{"institution", "source"}),
		urlRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_urls_refused_total",
			Help: "Per-order URLs of an institution not on its origins (base_url's, url_origins): seen in an apply answer, or a call not made."},
			[]string{"institution", "url"}),
		budgetRefuse: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_body_budget_refusals_total",
			Help: "Requests answered 503 because server.body_bytes_in_flight had no room for their body within a second, by route (paystate, applynotify, release, api)."},
			[]string{"route"}),
		budgetHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_body_bytes_in_flight",
			Help: "Bytes of server.body_bytes_in_flight held now by the request bodies being read and worked on."}),
		insecure: prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_insecure_defaults",
			Help: "Secrets shipped with the gateway (README, config.yaml, the simulator) still in force: 0 in production."}),
	}
	reg.MustRegister(g.unaudited, g.fileRefused, g.urlRefused, g.budgetRefuse, g.budgetHeld, g.insecure)
	return g
}

// CallbackUnaudited counts a refusal at the door that was not audited.
func (m *PrometheusMetrics) CallbackUnaudited(kind string) {
	m.guard.unaudited.WithLabelValues(kind).Inc()
}

// FileRefused counts a guarantee file that is not a readable PDF.
func (m *PrometheusMetrics) FileRefused(org, source string) {
	m.guard.fileRefused.WithLabelValues(org, source).Inc()
}

// URLRefused counts a per-order URL off the institution's origins.
func (m *PrometheusMetrics) URLRefused(org, url string) {
	m.guard.urlRefused.WithLabelValues(org, url).Inc()
}

// BodyBudget records the budget's bytes held, and a body refused for want of room.
func (m *PrometheusMetrics) BodyBudget(route string, refused bool, held int64) {
	if refused {
		m.guard.budgetRefuse.WithLabelValues(route).Inc()
	}
	m.guard.budgetHeld.Set(float64(held))
}

// SetInsecureDefaults sets how many shipped secrets are in force.
func (m *PrometheusMetrics) SetInsecureDefaults(n int) { m.guard.insecure.Set(float64(n)) }
