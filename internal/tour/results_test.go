package tour

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNSLookup(t *testing.T) {
	for _, tt := range []struct {
		name, out, wantName, wantAddr string
	}{
		{"answer", "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10#53\n\nName:\tnginx-svc.default.svc.cluster.local\nAddress: 10.96.41.7\n\n",
			"nginx-svc.default.svc.cluster.local", "10.96.41.7"},
		{"nxdomain", "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10#53\n\n** server can't find nginx: NXDOMAIN\n\n", "", ""},
		{"no server", ";; connection timed out; no servers could be reached\n", "", ""},
		{"two families", "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10#53\n\nName:\ts.default.svc.cluster.local\nAddress: 10.96.0.20\nName:\ts.default.svc.cluster.local\nAddress: fd00:10:96::20\n",
			"s.default.svc.cluster.local", "10.96.0.20"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, a := parseNSLookup(tt.out)
			if n != tt.wantName || a != tt.wantAddr {
				t.Errorf("parseNSLookup = %q %q, want %q %q", n, a, tt.wantName, tt.wantAddr)
			}
		})
	}
}

func TestStatusLine(t *testing.T) {
	for _, tt := range []struct {
		out, want string
		ok        bool
	}{
		{"HTTP/1.1 200 OK\r\nServer: nginx/1.27.5\r\n", "HTTP/1.1 200 OK", true},
		{"HTTP/1.1 404 Not Found\r\n", "HTTP/1.1 404 Not Found", false},
		{"curl: (6) Could not resolve host: nginx\n", "", false},
	} {
		got := statusLine(tt.out)
		if got != tt.want || statusOK(got) != tt.ok {
			t.Errorf("statusLine(%q) = %q (ok %v), want %q (ok %v)", tt.out, got, statusOK(got), tt.want, tt.ok)
		}
	}
}

func TestCountServerAddresses(t *testing.T) {
	out := "      7 <p><span>Server&nbsp;address:</span> <span>10.244.1.7:80</span></p>\n" +
		"     12 <p><span>Server&nbsp;address:</span> <span>10.244.2.3:80</span></p>\n" +
		"      1 Server address: 10.244.0.9:80\n" +
		"garbage\n"
	got := map[string]int{}
	countServerAddresses(out, got)
	want := map[string]int{"10.244.1.7:80": 7, "10.244.2.3:80": 12, "10.244.0.9:80": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

func TestCountEndpointAddresses(t *testing.T) {
	out := `Name:         nginx-svc
Namespace:    default
Labels:       <none>
Annotations:  endpoints.kubernetes.io/last-change-trigger-time: 2026-11-22T10:00:00Z
Subsets:
  Addresses:          10.244.0.5,10.244.1.4,10.244.1.5,10.244.2.6,10.244.2.7
  NotReadyAddresses:  10.244.0.9
  Ports:
    Name  Port  Protocol
    ----  ----  --------
    http  80    TCP

Events:  <none>
`
	if got := countEndpointAddresses(out); got != 5 {
		t.Errorf("countEndpointAddresses = %d, want 5 (not-ready addresses are not counted)", got)
	}
	if got := countEndpointAddresses("Subsets:\n  Addresses:  <none>\n"); got != 0 {
		t.Errorf("countEndpointAddresses(<none>) = %d, want 0", got)
	}
}

func TestDisplayQuotesWhatAShellWouldSplit(t *testing.T) {
	got := display([]string{"kubectl", "exec", "netshoot", "--", "sh", "-c", "for i in $(seq 3); do echo it's; done"})
	want := `kubectl exec netshoot -- sh -c 'for i in $(seq 3); do echo it'\''s; done'`
	if got != want {
		t.Errorf("display = %s\nwant      %s", got, want)
	}
}
