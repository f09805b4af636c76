//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fastPathMetrics reads node 1's fast path counters and endpoint gauge.
func fastPathMetrics(t *testing.T) map[string]int {
	t.Helper()
	out, err := amime(t, "lab", "exec", "--node", nodeName(1), "--", "curl", "-s", "--max-time", "5", "http://127.0.0.1:9962/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", nodeName(1), err)
	}
	got := map[string]int{}
	for _, m := range fastPathLine.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		key := m[1]
		if m[2] != "" {
			key = m[2]
		}
		got[key] = int(v)
	}
	if _, ok := got["redirected"]; !ok {
		t.Fatalf("%s exposes no fast path counters:\n%s", nodeName(1), out)
	}
	return got
}

var fastPathLine = regexp.MustCompile(`(?m)^amime_fastpath_(packets_total\{result="(\w+)"\}|endpoints) (\S+)$`)

// dial asks the client pod's netexec to reach host:port once and returns what
// the server saw as the client's address ("" when it failed, or took longer
// than curl waits).
func dial(t *testing.T, ns, client, protocol, host string, port int) string {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:8080/dial?request=clientip&host=%s&port=%d&protocol=%s&tries=1", host, port, protocol)
	out, err := amime(t, "lab", "exec", "-n", ns, client, "--", "curl", "-s", "--max-time", "5", url)
	if err != nil {
		t.Logf("dial from %s: %v", client, err)
		return ""
	}
	var r dialResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Responses) != 1 {
		return ""
	}
	addr, _, _ := strings.Cut(r.Responses[0], ":")
	return addr
}

// TestFastPath: between two pods of one node that no policy selects, TCP and
// UDP take the fast path (the agent's count of redirected packets grows) and
// the server sees the client's own address; the replies of a Service
// connection are left to the stack for their reverse NAT (the nat count
// grows) and reach the client; a policy selecting the server takes it off the
// fast path before its rules apply, so the client is denied, and deleting the
// policy brings it back.
func TestFastPath(t *testing.T) {
	ns := namespace(t, "fastpath")
	var b strings.Builder
	for _, name := range []string{"server", "client"} {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: %s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080, --udp-port=8081]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
`, name, ns, name, nodeName(1))
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: %s}
spec:
  selector: {app: server}
  ports:
  - {name: http, port: 80, targetPort: 8080}
`, ns)
	apply(t, b.String())
	server := readyPodsByName(t, ns, "server")
	client := readyPodsByName(t, ns, "client")
	clientIP := client.Status.PodIP

	before := fastPathMetrics(t)
	for _, proto := range []struct {
		name string
		port int
	}{{"http", 8080}, {"udp", 8081}} {
		if seen := dial(t, ns, "client", proto.name, server.Status.PodIP, proto.port); seen != clientIP {
			t.Errorf("%s client → server: seen as %q, want %s", proto.name, seen, clientIP)
		}
	}
	after := fastPathMetrics(t)
	// A TCP exchange is at least SYN, ACK, request, FIN from the client and
	// SYN-ACK, answer, FIN from the server; UDP one datagram each way.
	if got := after["redirected"] - before["redirected"]; got < 9 {
		t.Errorf("%d packets redirected for a TCP and a UDP exchange between two pods, want at least 9 (counters %v → %v)", got, before, after)
	}

	svcIP := strings.TrimSpace(mustKubectl(t, "get", "service", "-n", ns, "server", "-o", "jsonpath={.spec.clusterIP}"))
	before = after
	eventually(t, 10*time.Second, "client → Service", func() error {
		if seen := dial(t, ns, "client", "http", svcIP, 80); seen != clientIP {
			return fmt.Errorf("seen as %q", seen)
		}
		return nil
	})
	after = fastPathMetrics(t)
	if got := after["nat"] - before["nat"]; got < 3 {
		t.Errorf("%d packets of a Service connection left to the stack, want at least the server's 3 (counters %v → %v)", got, before, after)
	}

	// A policy selects the server: it leaves the fast path, and the client is
	// denied from the first packet the rules see.
	endpoints := after["endpoints"]
	apply(t, fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-server, namespace: %s}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
`, ns))
	eventually(t, 10*time.Second, "the server off the fast path", func() error {
		if m := fastPathMetrics(t); m["endpoints"] >= endpoints {
			return fmt.Errorf("%d endpoints, had %d", m["endpoints"], endpoints)
		}
		return nil
	})
	for _, proto := range []struct {
		name string
		port int
	}{{"http", 8080}, {"udp", 8081}} {
		if seen := dial(t, ns, "client", proto.name, server.Status.PodIP, proto.port); seen != "" {
			t.Errorf("%s client → server under a denying policy: answered (seen as %s)", proto.name, seen)
		}
	}
	mustKubectl(t, "delete", "networkpolicy", "-n", ns, "deny-server")
	eventually(t, 10*time.Second, "the server back on the fast path", func() error {
		before := fastPathMetrics(t)
		if seen := dial(t, ns, "client", "http", server.Status.PodIP, 8080); seen != clientIP {
			return fmt.Errorf("seen as %q", seen)
		}
		if m := fastPathMetrics(t); m["redirected"]-before["redirected"] < 5 {
			return fmt.Errorf("the connection took the stack (counters %v → %v)", before, m)
		}
		return nil
	})
}
