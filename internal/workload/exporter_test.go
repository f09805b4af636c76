package workload

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestExporterReportsWhetherNginxAnswers(t *testing.T) {
	status := http.StatusOK
	nginx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	defer nginx.Close()
	for _, tt := range []struct {
		name   string
		uri    string
		status int
		want   string
	}{
		{"nginx answers", nginx.URL + "/", http.StatusOK, "nginx_up 1\n"},
		{"nginx errors", nginx.URL + "/", http.StatusBadGateway, "nginx_up 0\n"},
		{"nginx down", "http://127.0.0.1:1/", http.StatusOK, "nginx_up 0\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status = tt.status
			h := exporterHandler{scrapeURI: tt.uri, client: &http.Client{Timeout: 2 * time.Second}, log: slog.New(slog.DiscardHandler)}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			body, _ := io.ReadAll(rec.Body)
			if !strings.HasSuffix(string(body), tt.want) || !strings.Contains(string(body), "# TYPE nginx_up gauge\n") {
				t.Errorf("metrics:\n%s\nwant them to end with %q", body, tt.want)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
				t.Errorf("Content-Type %q, want the Prometheus text format", ct)
			}
		})
	}
}
