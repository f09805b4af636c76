package policy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the policy controller's Prometheus metrics.
type Metrics struct {
	syncDuration   *prometheus.HistogramVec
	programLatency prometheus.Histogram
	syncErrors     prometheus.Counter
	policies       prometheus.Gauge
	pods           prometheus.Gauge
	groups         prometheus.Gauge
	lastSync       prometheus.Gauge
	logged         *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "amime_policy_sync_duration_seconds", Help: "Time to compute and program the NetworkPolicy table, by kind (full or partial).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"kind"}),
		programLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "amime_policy_programming_duration_seconds", Help: "Time from a NetworkPolicy, Pod or Namespace change seen by the agent to the rules programmed.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "amime_policy_sync_errors_total", Help: "Failed NetworkPolicy syncs (the previous rules stay)."}),
		policies:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_policy_policies", Help: "NetworkPolicies in the cluster at the last sync."}),
		pods:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_policy_programmed_pods", Help: "Local pods isolated in some direction."}),
		groups:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_policy_groups", Help: "Distinct allow-lists programmed (chains shared by pods)."}),
		lastSync:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_policy_last_sync_timestamp_seconds", Help: "Time of the last successful sync."}),
		logged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amime_policy_verdicts_logged_total", Help: "Verdicts received from the kernel's log, by verdict."},
			[]string{"verdict"}),
	}
	reg.MustRegister(m.syncDuration, m.programLatency, m.syncErrors, m.policies, m.pods, m.groups, m.lastSync, m.logged)
	return m
}

func (m *Metrics) syncError() {
	if m != nil {
		m.syncErrors.Inc()
	}
}

func (m *Metrics) synced(full bool, d time.Duration, changedAt time.Time, st Status) {
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
	m.policies.Set(float64(st.Policies))
	m.pods.Set(float64(st.ProgrammedPods))
	m.groups.Set(float64(st.Groups))
	m.lastSync.SetToCurrentTime()
}

func (m *Metrics) loggedVerdict(v string) {
	if m != nil {
		m.logged.WithLabelValues(v).Inc()
	}
}
