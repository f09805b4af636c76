package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// HealthChecks serves the healthCheckNodePort of every Service with
// externalTrafficPolicy Local, answering as kube-proxy does: 200 when this node
// has local endpoints, 503 when it has none, with the count in JSON, so that an
// external load balancer sends traffic only to nodes that can serve it.
type HealthChecks struct {
	p       *Proxier
	log     *slog.Logger
	mu      sync.Mutex
	servers map[int32]*http.Server
}

// NewHealthChecks returns the health check servers of p.
func NewHealthChecks(p *Proxier, log *slog.Logger) *HealthChecks {
	return &HealthChecks{p: p, log: log, servers: map[int32]*http.Server{}}
}

// Run opens and closes listeners as Services come and go.
func (h *HealthChecks) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		h.sync()
		select {
		case <-ctx.Done():
			h.mu.Lock()
			for _, s := range h.servers {
				_ = s.Close()
			}
			h.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

func (h *HealthChecks) sync() {
	want := map[int32]bool{}
	for _, port := range h.p.HealthCheckPorts() {
		want[port] = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, s := range h.servers {
		if !want[port] {
			_ = s.Close()
			delete(h.servers, port)
		}
	}
	for port := range want {
		if _, ok := h.servers[port]; ok {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			h.log.Warn("health check node port", "port", port, "err", err)
			continue
		}
		srv := &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = srv
		go func() { _ = srv.Serve(ln) }()
	}
}

func (h *HealthChecks) handler(port int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ns, name, n, ok := h.p.LocalEndpoints(port)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", fmt.Sprint(n))
		if !ok || n == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"service":             map[string]string{"namespace": ns, "name": name},
			"localEndpoints":      n,
			"serviceProxyHealthy": h.p.Healthy() == nil,
		})
	})
}
