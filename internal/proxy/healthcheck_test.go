package proxy

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestHealthCheckHandler(t *testing.T) {
	e := newEnv(t,
		newService("default", "here", []string{"10.96.0.40"}, withType(corev1.ServiceTypeNodePort), withNodePort(30040), withETPLocal(32040)),
		newSlice("default", "here-1", "here", v4, tcpPorts,
			ep("10.244.1.40", onNode("node-a")), ep("10.244.1.41", onNode("node-a")), ep("10.244.2.40", onNode("node-b"))),
		newService("default", "elsewhere", []string{"10.96.0.41"}, withType(corev1.ServiceTypeNodePort), withNodePort(30041), withETPLocal(32041)),
		newSlice("default", "elsewhere-1", "elsewhere", v4, tcpPorts, ep("10.244.2.41", onNode("node-b"))),
		// Two IP families, one health check: the local endpoints are counted
		// once per Service (the larger family), not summed.
		newService("default", "dual", []string{"10.96.0.42", "fd00:96::42"}, withType(corev1.ServiceTypeNodePort), withNodePort(30042), withETPLocal(32042)),
		newSlice("default", "dual-4", "dual", v4, tcpPorts, ep("10.244.1.42", onNode("node-a"))),
		newSlice("default", "dual-6", "dual", v6, []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolTCP, 8080)},
			ep("fd00:244:1::42", onNode("node-a"))),
	)
	h := NewHealthChecks(e.p, slog.New(slog.DiscardHandler))

	type reply struct {
		Service struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"service"`
		LocalEndpoints      int  `json:"localEndpoints"`
		ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
	}
	get := func(port int32) (int, reply, http.Header) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.handler(port).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		var r reply
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			t.Fatalf("port %d: %v in %q", port, err, rec.Body.String())
		}
		return rec.Code, r, rec.Header()
	}

	// Before the first sync nothing is known: unavailable.
	if code, r, _ := get(32040); code != http.StatusServiceUnavailable || r.ServiceProxyHealthy {
		t.Errorf("before sync: %d %+v", code, r)
	}
	e.sync()
	for _, tc := range []struct {
		port     int32
		code     int
		ns, name string
		n        int
	}{
		{32040, http.StatusOK, "default", "here", 2},
		{32041, http.StatusServiceUnavailable, "default", "elsewhere", 0},
		{32042, http.StatusOK, "default", "dual", 1},
		{32099, http.StatusServiceUnavailable, "", "", 0},
	} {
		code, r, hdr := get(tc.port)
		if code != tc.code || r.Service.Namespace != tc.ns || r.Service.Name != tc.name || r.LocalEndpoints != tc.n || !r.ServiceProxyHealthy {
			t.Errorf("port %d: %d %+v, want %d %s/%s localEndpoints %d", tc.port, code, r, tc.code, tc.ns, tc.name, tc.n)
		}
		if hdr.Get("Content-Type") != "application/json" {
			t.Errorf("port %d: Content-Type %q", tc.port, hdr.Get("Content-Type"))
		}
	}
	// The local endpoint goes away: 503 after the next sync.
	e.update(newSlice("default", "here-1", "here", v4, tcpPorts, ep("10.244.2.40", onNode("node-b"))))
	e.sync()
	if code, r, _ := get(32040); code != http.StatusServiceUnavailable || r.LocalEndpoints != 0 {
		t.Errorf("after the local endpoints left: %d %+v", code, r)
	}
}
