package workload

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// nginx-prometheus-exporter (nginx/nginx-prometheus-exporter) stands beside
// nginx in the seeds' "nginx" Service, on port 9113. This one serves the
// exporter's availability metrics: nginx_up says whether nginx answered the
// scrape URI, checked at each scrape as the real exporter does. (The real one
// also parses stub_status counters; the built-in nginx has no stub_status.)
const exporterVersion = "1.4.2"

type exporterHandler struct {
	scrapeURI string
	client    *http.Client
	log       *slog.Logger
}

func (h exporterHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := 0
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.scrapeURI, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = h.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				up = 1
			} else {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
	}
	if err != nil {
		h.log.Warn("scrape nginx", "uri", h.scrapeURI, "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP nginx_exporter_build_info A metric with a constant '1' value labeled by version, revision, branch, goversion from which nginx_exporter was built, and the goos and goarch for the build.\n"+
		"# TYPE nginx_exporter_build_info gauge\n"+
		"nginx_exporter_build_info{version=%q} 1\n"+
		"# HELP nginx_up Status of the last metric scrape\n"+
		"# TYPE nginx_up gauge\n"+
		"nginx_up %d\n", exporterVersion, up)
}

func runNginxExporter(ctx context.Context, name string, args []string, o *cmdIO) int {
	fs := newFlagSet(name, o)
	listen := fs.String("web.listen-address", ":9113", "address to serve the metrics on")
	path := fs.String("web.telemetry-path", "/metrics", "path of the metrics")
	uri := fs.String("nginx.scrape-uri", "http://127.0.0.1:8080/stub_status", "the nginx URL to check")
	positional, err := parseArgs(fs, args)
	if err == nil && len(positional) > 0 {
		err = usageErrorf("unexpected arguments: %q", positional)
	}
	if err != nil {
		return argsExit(o, name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+*path, exporterHandler{scrapeURI: *uri, client: &http.Client{Timeout: 5 * time.Second}, log: o.log})
	s, err := newPageServer(*listen, mux, o.log)
	if err != nil {
		o.errorf(name, "%v", err)
		return 1
	}
	return s.run(ctx)
}
