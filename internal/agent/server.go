package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"amime.dev/amime/internal/status"
)

type metrics struct {
	reg          *prometheus.Registry
	syncs        *prometheus.CounterVec
	syncDuration prometheus.Histogram
	remoteNodes  prometheus.Gauge
	routes       prometheus.Gauge
	lastSync     prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amime_agent_routing_syncs_total", Help: "Routing syncs by result.",
		}, []string{"result"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "amime_agent_routing_sync_duration_seconds", Help: "Time to compute and apply the node's routing state.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		remoteNodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_agent_remote_nodes", Help: "Other nodes known to the routing controller."}),
		routes:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_agent_routes", Help: "Routes to other nodes' pod ranges programmed."}),
		lastSync:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "amime_agent_routing_last_sync_timestamp_seconds", Help: "Time of the last successful routing sync."}),
	}
	m.reg.MustRegister(m.syncs, m.syncDuration, m.remoteNodes, m.routes, m.lastSync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeSync(d time.Duration, err error) {
	m.syncDuration.Observe(d.Seconds())
	if err != nil {
		m.syncs.WithLabelValues("error").Inc()
		return
	}
	m.syncs.WithLabelValues("success").Inc()
	m.lastSync.SetToCurrentTime()
}

type server struct {
	addr   string
	m      *metrics
	ready  func() error
	status func() status.Agent     // nil: no /status
	extra  map[string]http.Handler // controllers' own endpoints, by pattern
}

func newServer(addr string, m *metrics, ready func() error) *server {
	return &server{addr: addr, m: m, ready: ready, extra: map[string]http.Handler{}}
}

func (s *server) run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	for pattern, h := range s.extra {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		if s.status == nil {
			http.NotFound(w, nil)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
