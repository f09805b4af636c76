package dns

import (
	"sync"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the DNS server, on /metrics. Label values are bounded: query types
// outside a fixed set count as "other".
type Metrics struct {
	requests       *prometheus.CounterVec   // proto, type
	responses      *prometheus.CounterVec   // rcode
	duration       *prometheus.HistogramVec // source: zone, cache, upstream
	cacheHits      *prometheus.CounterVec   // kind: positive, negative, stale
	cacheMisses    prometheus.Counter
	cacheEntries   prometheus.Gauge
	upstreamErrors *prometheus.CounterVec // upstream
	autopath       prometheus.Counter
	syncDuration   *prometheus.HistogramVec // kind: full, partial
	services       prometheus.Gauge
	reloads        *prometheus.CounterVec // result: ok, error

	// Children resolved once: a label lookup hashes its values, which costs
	// more than the rest of a cached answer's bookkeeping.
	mu      sync.Mutex
	reqFast map[reqKey]prometheus.Counter
	rcodes  map[int]prometheus.Counter
	sources map[string]prometheus.Observer
}

type reqKey struct {
	tcp   bool
	qtype uint16
}

// observe counts one request and its answer.
func (m *Metrics) observe(tcp bool, qtype uint16, rcode int, source string, seconds float64) {
	req, rc, obs := m.children(tcp, qtype, rcode, source)
	req.Inc()
	rc.Inc()
	obs.Observe(seconds)
}

// children returns the request counter, rcode counter and duration observer
// of one kind of answer (the packed cache keeps them per answer).
func (m *Metrics) children(tcp bool, qtype uint16, rcode int, source string) (prometheus.Counter, prometheus.Counter, prometheus.Observer) {
	m.mu.Lock()
	req, ok := m.reqFast[reqKey{tcp, qtype}]
	if !ok {
		proto := "udp"
		if tcp {
			proto = "tcp"
		}
		req = m.requests.WithLabelValues(proto, typeLabel(qtype))
		m.reqFast[reqKey{tcp, qtype}] = req
	}
	rc, ok := m.rcodes[rcode]
	if !ok {
		rc = m.responses.WithLabelValues(rcodeLabel(rcode))
		m.rcodes[rcode] = rc
	}
	obs, ok := m.sources[source]
	if !ok {
		obs = m.duration.WithLabelValues(source)
		m.sources[source] = obs
	}
	m.mu.Unlock()
	return req, rc, obs
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amime_dns_requests_total",
			Help: "DNS requests by transport and query type."}, []string{"proto", "type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amime_dns_responses_total",
			Help: "DNS responses by rcode."}, []string{"rcode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amime_dns_request_duration_seconds",
			Help:    "Time to answer a request, by where the answer came from.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"source"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amime_dns_cache_hits_total",
			Help: "Upstream answers served from the cache (stale: served past expiry because upstreams failed)."}, []string{"kind"}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "amime_dns_cache_misses_total",
			Help: "Forwarded queries not found in the cache."}),
		cacheEntries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_dns_cache_entries",
			Help: "Entries in the cache of upstream answers."}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amime_dns_upstream_errors_total",
			Help: "Exchanges with an upstream that failed (timeout, network error, SERVFAIL/REFUSED)."}, []string{"upstream"}),
		autopath: prometheus.NewCounter(prometheus.CounterOpts{Name: "amime_dns_autopath_total",
			Help: "Queries answered by server-side search-path completion."}),
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amime_dns_zone_sync_duration_seconds",
			Help: "Time to rebuild the zone from the informer caches.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"kind"}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_dns_services",
			Help: "Services with names in the zone."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amime_dns_config_reloads_total",
			Help: "Configuration reloads from the ConfigMap, by result."}, []string{"result"}),
	}
	m.reqFast, m.rcodes, m.sources = map[reqKey]prometheus.Counter{}, map[int]prometheus.Counter{}, map[string]prometheus.Observer{}
	reg.MustRegister(m.requests, m.responses, m.duration, m.cacheHits, m.cacheMisses, m.cacheEntries,
		m.upstreamErrors, m.autopath, m.syncDuration, m.services, m.reloads)
	return m
}

// typeLabel bounds the "type" label.
func typeLabel(t uint16) string {
	switch t {
	case mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypePTR, mdns.TypeCNAME, mdns.TypeTXT, mdns.TypeMX,
		mdns.TypeNS, mdns.TypeSOA, mdns.TypeHTTPS, mdns.TypeSVCB, mdns.TypeANY:
		return mdns.TypeToString[t]
	}
	return "other"
}

func rcodeLabel(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return "other"
}
