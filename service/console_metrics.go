package service

import "github.com/prometheus/client_golang/prometheus"

// Registerer lets another surface of the gateway (the console's page
// timings) register its metrics beside the service's, on the same registry.
func (m *PrometheusMetrics) Registerer() prometheus.Registerer { return m.reg }
