//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fastPathMetrics reads a node's fast path counters and endpoint gauge.
func fastPathMetrics(t *testing.T, node int) map[string]int {
	t.Helper()
	out, err := amime(t, "lab", "exec", "--node", nodeName(node), "--", "curl", "-s", "--max-time", "5", "http://127.0.0.1:9962/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", nodeName(node), err)
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
		t.Fatalf("%s exposes no fast path counters:\n%s", nodeName(node), out)
	}
	return got
}

// udpStream is conntrack -L's line for an assured UDP entry with more than a
// minute left (a flow the stack last saw gets 30 seconds).
var udpStream = regexp.MustCompile(`(?m)^udp\s+17\s+(6[1-9]|[7-9]\d|1[0-2]\d)\s.*\[ASSURED\]`)

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

// requests makes n HTTP requests to url from a pod over one connection and
// returns how many were answered.
func requests(t *testing.T, ns, pod, url string, n int) int {
	t.Helper()
	args := []string{"lab", "exec", "-n", ns, pod, "--", "curl", "-s", "--max-time", "10", "-w", `%{http_code}\n`}
	for range n {
		args = append(args, "-o", "/dev/null", url) // curl's -o names one URL's output
	}
	out, _ := amime(t, args...)
	// Whole lines only: the output also holds lab exec's stderr.
	answered := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "200" {
			answered++
		}
	}
	return answered
}

// TestFastPath: between two pods of one node that no policy selects, a
// connection's packets after its opening take the fast path (the agent's
// count of redirected packets grows) and the server sees the client's own
// address, for TCP and UDP; between pods of two nodes the sending node
// encapsulates them into the overlay and the receiving one takes them out and
// delivers them; the replies of a Service
// connection are left to the stack for their reverse NAT (the nat count
// grows) and reach the client; a policy selecting the server takes it off the
// fast path before its rules apply, so the client is denied, and deleting the
// policy brings it back.
func TestFastPath(t *testing.T) {
	ns := namespace(t, "fastpath")
	var b strings.Builder
	for _, name := range []string{"server", "client", "far"} {
		node := nodeName(1)
		if name == "far" {
			node = nodeName(2)
		}
		b.WriteString(netexecPod(name, ns, name, node))
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

	readyPodsByName(t, ns, "far")
	serverURL := "http://" + server.Status.PodIP + ":8080/clientip"
	for _, proto := range []struct {
		name string
		port int
	}{{"http", 8080}, {"udp", 8081}} {
		if seen := dial(t, ns, "client", proto.name, server.Status.PodIP, proto.port); seen != clientIP {
			t.Errorf("%s client → server: seen as %q, want %s", proto.name, seen, clientIP)
		}
	}
	// Five requests on one connection: after the handshake, each request and
	// answer is the fast path's.
	before := fastPathMetrics(t, 1)
	if n := requests(t, ns, "client", serverURL, 5); n != 5 {
		t.Fatalf("%d of 5 requests answered", n)
	}
	after := fastPathMetrics(t, 1)
	if got := after["redirected"] - before["redirected"]; got < 10 {
		t.Errorf("%d packets redirected for five requests on one connection between two pods of a node, want at least 10 (counters %v → %v)", got, before, after)
	}
	// UDP: the exchanges after the first on one socket, for 3 seconds. The
	// stack sees only the first, yet conntrack keeps the flow as the stream
	// it is: assured, with the stream timeout (2 minutes), because the
	// program refreshes the entry as the stack would have.
	before = after
	out, err := amime(t, "lab", "exec", "-n", ns, "client", "--", "sh", "-c",
		"(for i in 1 2 3 4; do echo hostname; sleep 0.8; done) | nc -u -w1 "+server.Status.PodIP+" 8081")
	if err != nil || strings.Count(out, "server") != 4 {
		t.Fatalf("four UDP exchanges: %q %v", out, err)
	}
	after = fastPathMetrics(t, 1)
	if got := after["redirected"] - before["redirected"]; got < 6 {
		t.Errorf("%d packets redirected for four UDP exchanges on one socket, want at least the last three's 6 (counters %v → %v)", got, before, after)
	}
	entries, err := amime(t, "lab", "exec", "--node", nodeName(1), "--", "conntrack", "-L", "-p", "udp",
		"--orig-src", clientIP, "--orig-dst", server.Status.PodIP, "--orig-port-dst", "8081")
	if err != nil {
		t.Fatalf("conntrack -L: %v\n%s", err, entries)
	}
	if !udpStream.MatchString(entries) {
		t.Errorf("no assured entry with the stream timeout for the client's UDP flow:\n%s", entries)
	}
	// Across nodes, through the overlay: node 2 encapsulates, node 1 takes
	// the tunnel off and delivers, and the answers go back the same way. The
	// server still sees the client's own address.
	before, before2 := after, fastPathMetrics(t, 2)
	if n := requests(t, ns, "far", serverURL, 5); n != 5 {
		t.Fatalf("%d of 5 requests from node 2 answered", n)
	}
	after, after2 := fastPathMetrics(t, 1), fastPathMetrics(t, 2)
	for _, c := range []struct {
		node          int
		result, what  string
		before, after map[string]int
	}{
		{2, "encapsulated", "requests to node 1", before2, after2},
		{1, "decapsulated", "requests from node 2", before, after},
		{1, "encapsulated", "answers to node 2", before, after},
		{2, "decapsulated", "answers from node 1", before2, after2},
	} {
		if got := c.after[c.result] - c.before[c.result]; got < 5 {
			t.Errorf("node %d %s %d packets of five %s, want at least 5 (counters %v → %v)", c.node, c.result, got, c.what, c.before, c.after)
		}
	}
	far := readyPodsByName(t, ns, "far")
	if seen := dial(t, ns, "far", "http", server.Status.PodIP, 8080); seen != far.Status.PodIP {
		t.Errorf("node 2 → node 1 through the overlay: seen as %q, want %s", seen, far.Status.PodIP)
	}

	svcIP := strings.TrimSpace(mustKubectl(t, "get", "service", "-n", ns, "server", "-o", "jsonpath={.spec.clusterIP}"))
	eventually(t, 10*time.Second, "client → Service", func() error {
		if seen := dial(t, ns, "client", "http", svcIP, 80); seen != clientIP {
			return fmt.Errorf("seen as %q", seen)
		}
		return nil
	})
	before = fastPathMetrics(t, 1)
	if n := requests(t, ns, "client", "http://"+svcIP+"/clientip", 5); n != 5 {
		t.Fatalf("%d of 5 requests to the Service answered", n)
	}
	after = fastPathMetrics(t, 1)
	if got := after["nat"] - before["nat"]; got < 5 {
		t.Errorf("%d packets of a Service connection left to the stack, want at least the server's 5 answers (counters %v → %v)", got, before, after)
	}

	// A policy selects the server: it leaves the fast path, and the client is
	// denied from the first packet the rules see.
	selectServer(t, ns, "deny-server", "")
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
		before := fastPathMetrics(t, 1)
		if n := requests(t, ns, "client", serverURL, 5); n != 5 {
			return fmt.Errorf("%d of 5 requests answered", n)
		}
		if m := fastPathMetrics(t, 1); m["redirected"]-before["redirected"] < 10 {
			return fmt.Errorf("the connection took the stack (counters %v → %v)", before, m)
		}
		return nil
	})

	// A bulk transfer across nodes: node 2 wraps it all; node 1 takes the
	// tunnel off its small packets but leaves the GSO ones (most of the
	// data) to its VXLAN device, whose program then delivers them.
	before, before2 = fastPathMetrics(t, 1), fastPathMetrics(t, 2)
	bulkToServer(t, ns, server.Status.PodIP)
	after, after2 = fastPathMetrics(t, 1), fastPathMetrics(t, 2)
	if got := after2["encapsulated"] - before2["encapsulated"]; got < 50 {
		t.Errorf("node 2 encapsulated %d packets of a bulk transfer, want at least 50 (counters %v → %v)", got, before2, after2)
	}
	if got := after["redirected"] - before["redirected"]; got < 20 {
		t.Errorf("node 1's VXLAN device delivered %d packets of a bulk transfer, want its GSO packets, at least 20 (counters %v → %v)", got, before, after)
	}

	// A policy that selects the server and admits everyone: node 1 leaves the
	// server to its stack, so its VXLAN device takes apart everything node
	// 2's program wraps.
	selectServer(t, ns, "allow-server", "ingress: [{}]")
	before2 = fastPathMetrics(t, 2)
	bulkToServer(t, ns, server.Status.PodIP)
	if got := fastPathMetrics(t, 2)["encapsulated"] - before2["encapsulated"]; got < 50 {
		t.Errorf("node 2 encapsulated %d packets of a bulk transfer to a server a policy selects, want at least 50", got)
	}
}

// bulkToServer sends 8 MB over TCP from the pod "far" to the pod "server"
// and fails the test unless all of it arrives.
func bulkToServer(t *testing.T, ns, serverIP string) {
	t.Helper()
	const bulk = 8_000_000
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	sink := exec.CommandContext(ctx, *amimeBin, withLabFlags([]string{"lab", "exec", "-n", ns, "server", "--", "sh", "-c", "timeout 30 nc -l 9000 | wc -c"})...)
	var received bytes.Buffer
	sink.Stdout = &received
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a bulk transfer from node 2 to the server", func() error {
		_, err := amime(t, "lab", "exec", "-n", ns, "far", "--", "sh", "-c",
			fmt.Sprintf("head -c %d /dev/zero | timeout 10 nc -N %s 9000", bulk, serverIP))
		return err
	})
	if err := sink.Wait(); err != nil || strings.TrimSpace(received.String()) != strconv.Itoa(bulk) {
		t.Errorf("the server received %q bytes (%v), want %d", strings.TrimSpace(received.String()), err, bulk)
	}
}

// selectServer applies an ingress policy named name that selects the pods
// labelled app=server (on node 1), with the given ingress rules (YAML, or none:
// it denies), and waits until the fast path has let go of the server.
func selectServer(t *testing.T, ns, name, ingress string) {
	t.Helper()
	endpoints := fastPathMetrics(t, 1)["endpoints"]
	apply(t, fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: %s}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  %s
`, name, ns, ingress))
	eventually(t, 10*time.Second, "the server off the fast path", func() error {
		if m := fastPathMetrics(t, 1); m["endpoints"] >= endpoints {
			return fmt.Errorf("%d endpoints, had %d", m["endpoints"], endpoints)
		}
		return nil
	})
}
