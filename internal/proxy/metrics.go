package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus metrics, modelled on kube-proxy's.
type Metrics struct {
	syncDuration   *prometheus.HistogramVec
	programLatency prometheus.Histogram
	syncErrors     prometheus.Counter
	services       prometheus.Gauge
	endpoints      prometheus.Gauge
	lastSync       prometheus.Gauge
}

// NewMetrics registers the proxy's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "amime_proxy_sync_duration_seconds", Help: "Time to compute and program the Service proxy table, by kind (full or partial).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"kind"}),
		programLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "amime_proxy_network_programming_duration_seconds", Help: "Time from a Service or EndpointSlice change seen by the agent to the rules programmed.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "amime_proxy_sync_errors_total", Help: "Failed Service proxy syncs (the previous rules stay)."}),
		services:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_proxy_service_ports", Help: "Service ports programmed (per IP family)."}),
		endpoints:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_proxy_endpoints", Help: "Endpoints of the programmed Service ports."}),
		lastSync:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_proxy_last_sync_timestamp_seconds", Help: "Time of the last successful sync."}),
	}
	reg.MustRegister(m.syncDuration, m.programLatency, m.syncErrors, m.services, m.endpoints, m.lastSync)
	return m
}

func (m *Metrics) syncError() {
	if m != nil {
		m.syncErrors.Inc()
	}
}

func (m *Metrics) synced(full bool, d time.Duration, changedAt time.Time, ports []*ServicePort) {
	if m == nil {
		return
	}
	kind := "partial"
	if full {
		kind = "full"
	}
	m.syncDuration.WithLabelValues(kind).Observe(d.Seconds())
	if !changedAt.IsZero() {
		m.programLatency.Observe(time.Since(changedAt).Seconds())
	}
	n := 0
	for _, sp := range ports {
		n += len(sp.Endpoints)
	}
	m.services.Set(float64(len(ports)))
	m.endpoints.Set(float64(n))
	m.lastSync.SetToCurrentTime()
}
