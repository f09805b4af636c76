//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serverPods creates n agnhost netexec pods per node (HTTP 8080, UDP 8081) in ns
// and returns them once Ready.
func serverPods(t *testing.T, ns string, perNode int) []corev1.Pod {
	t.Helper()
	var b strings.Builder
	for node := 1; node <= 3; node++ {
		for i := 0; i < perNode; i++ {
			b.WriteString(netexecPod(fmt.Sprintf("s%d-%d", node, i), ns, "server", nodeName(node)))
		}
	}
	apply(t, b.String())
	return readyPods(t, ns, "app=server", 3*perNode)
}

// netexecPod is the manifest of an agnhost netexec pod (HTTP 8080, UDP 8081)
// on a node.
func netexecPod(name, ns, app, node string) string {
	return fmt.Sprintf(`---
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
`, name, ns, app, node)
}

// dialResult is agnhost's /dial answer.
type dialResult struct {
	Responses []string `json:"responses"`
	Errors    []string `json:"errors"`
}

// TestPodToPodAllPairs: every pair among 9 pods on 3 nodes reaches each other
// over TCP and UDP, and the receiver sees the sender's own pod IP (no NAT).
func TestPodToPodAllPairs(t *testing.T) {
	ns := namespace(t, "pairs")
	pods := serverPods(t, ns, 3)
	var targets []string
	for _, p := range pods {
		targets = append(targets, p.Status.PodIP)
	}
	script := `for t in ` + strings.Join(targets, " ") + `; do
  for proto in http:8080 udp:8081; do
    curl -s --max-time 5 "http://127.0.0.1:8080/dial?request=clientip&host=$t&port=${proto#*:}&protocol=${proto%:*}&tries=1"; echo
  done
done`
	failures := 0
	for _, src := range pods {
		out, err := amime(t, "lab", "exec", "-n", ns, src.Name, "--", "sh", "-c", script)
		if err != nil {
			t.Fatalf("dial from %s: %v", src.Name, err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2*len(targets) {
			t.Fatalf("from %s: %d answers, want %d:\n%s", src.Name, len(lines), 2*len(targets), out)
		}
		for i, line := range lines {
			dst, proto := pods[i/2], []string{"TCP", "UDP"}[i%2]
			var r dialResult
			if err := json.Unmarshal([]byte(line), &r); err != nil || len(r.Responses) != 1 {
				t.Errorf("%s → %s %s: %q", src.Name, dst.Name, proto, line)
				failures++
				continue
			}
			if host, _, _ := strings.Cut(r.Responses[0], ":"); host != src.Status.PodIP {
				t.Errorf("%s (%s) → %s %s: seen as %s; the source IP must be preserved", src.Name, src.Status.PodIP, dst.Name, proto, r.Responses[0])
			}
		}
	}
	if failures > 0 {
		t.Fatalf("%d of %d connections failed", failures, 2*len(pods)*len(pods))
	}
}

// TestPodToNodeAndNodeToPod: pods reach node addresses (the agent's health
// port on every node) and nodes reach pods on their own and on other nodes.
func TestPodToNodeAndNodeToPod(t *testing.T) {
	ns := namespace(t, "podnode")
	pods := serverPods(t, ns, 1)
	for _, p := range pods {
		for n := 1; n <= 3; n++ {
			node := fmt.Sprintf("172.30.9.%d", 10+n)
			out, err := amime(t, "lab", "exec", "-n", ns, p.Name, "--", "curl", "-s", "--max-time", "5", "http://"+node+":9962/healthz")
			if err != nil || strings.TrimSpace(out) != "ok" {
				t.Errorf("pod %s → node %s: %q %v", p.Name, node, out, err)
			}
			out, err = amime(t, "lab", "exec", "--node", fmt.Sprintf("e2e-node-%d", n), "--", "curl", "-s", "--max-time", "5", "http://"+p.Status.PodIP+":8080/hostname")
			if err != nil || strings.TrimSpace(out) != p.Name {
				t.Errorf("node e2e-node-%d → pod %s: %q %v", n, p.Name, out, err)
			}
		}
	}
}

// TestEgressMasquerade: traffic to the outside (the external namespace's
// 198.51.100.1) leaves with the node's address; traffic to the node network
// keeps the pod's address.
func TestEgressMasquerade(t *testing.T) {
	ns := namespace(t, "egress")
	pods := serverPods(t, ns, 1)
	backgroundServer(t, "--external", "--", "netexec", "--http-port=18080", "--udp-port=-1")
	backgroundServer(t, "--node", "e2e-node-3", "--", "netexec", "--http-port=18081", "--udp-port=-1")
	nodeIP := map[string]string{}
	for _, p := range pods {
		nodeIP[p.Name] = p.Status.HostIP
	}
	for _, p := range pods {
		var out string
		eventually(t, 10*time.Second, "reach the outside", func() (err error) {
			out, err = amime(t, "lab", "exec", "-n", ns, p.Name, "--", "curl", "-s", "--max-time", "2", "http://198.51.100.1:18080/clientip")
			return err
		})
		if host, _, _ := strings.Cut(strings.TrimSpace(out), ":"); host != nodeIP[p.Name] {
			t.Errorf("pod %s to the outside seen as %q; want its node's address %s (masquerade)", p.Name, out, nodeIP[p.Name])
		}
		out, err := amime(t, "lab", "exec", "-n", ns, p.Name, "--", "curl", "-s", "--max-time", "2", "http://172.30.9.13:18081/clientip")
		if host, _, _ := strings.Cut(strings.TrimSpace(out), ":"); err != nil || host != p.Status.PodIP {
			t.Errorf("pod %s to a node seen as %q (%v); want its own address %s (no masquerade)", p.Name, out, err, p.Status.PodIP)
		}
	}
}

// backgroundServer runs a built-in workload in a lab namespace (lab exec flags
// before "--") until the test ends.
func backgroundServer(t *testing.T, args ...string) {
	t.Helper()
	i := 0
	for i < len(args) && args[i] != "--" {
		i++
	}
	argv := append(append([]string{"lab", "exec", "--name", labName}, args[:i+1]...),
		append([]string{filepath.Join(filepath.Dir(*amimeBin), "amime-pod"), "workload"}, args[i+1:]...)...)
	srv := exec.Command(*amimeBin, argv...)
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
		_ = srv.Wait()
	})
}

// agentPid finds the container process of the amime agent on a node.
func agentPid(t *testing.T, node string) int {
	t.Helper()
	pods, err := cs.CoreV1().Pods("kube-system").List(ctx(t), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=amime-agent", FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("agent pod on %s: %v (%d pods)", node, err, len(pods.Items))
	}
	b, err := os.ReadFile(filepath.Join("/var/lib/amime-lab", labName, "nodes", node, "pods", string(pods.Items[0].UID), "containers", "agent", "container.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(b))[0])
	return pid
}

func nodeRoutes(t *testing.T, node string) string {
	out, err := amime(t, "lab", "exec", "--node", node, "--", "sh", "-c", "ip route show proto 161; ip neigh show dev amime.vxlan; bridge fdb show dev amime.vxlan | grep dst")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAgentKilledKeepsConnections: SIGKILL of the agents on both ends of a
// cross-node connection loses nothing, and the restarted agents find their
// routes programmed and change nothing.
func TestAgentKilledKeepsConnections(t *testing.T) {
	ns := namespace(t, "agentkill")
	pods := serverPods(t, ns, 1)
	src, dst := pods[0], pods[1]
	before := nodeRoutes(t, src.Spec.NodeName)
	var urls []string
	for i := 0; i < 24; i++ {
		urls = append(urls, fmt.Sprintf("http://%s:8080/echo?msg=m%d", dst.Status.PodIP, i))
	}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		// One connection, reused for every request, 8 requests a second (3 s).
		args := append([]string{"lab", "exec", "-n", ns, src.Name, "--", "curl", "-s", "--rate", "8/s", "-w", " %{num_connects}\n"}, urls...)
		out, err := amime(t, args...)
		done <- result{out, err}
	}()
	time.Sleep(700 * time.Millisecond)
	for _, node := range []string{src.Spec.NodeName, dst.Spec.NodeName} {
		if err := syscall.Kill(agentPid(t, node), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("traffic during agent restart: %v", r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != len(urls) {
		t.Fatalf("%d answers, want %d:\n%s", len(lines), len(urls), r.out)
	}
	connects := 0
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] != fmt.Sprintf("m%d", i) {
			t.Errorf("request %d: %q", i, l)
			continue
		}
		n, _ := strconv.Atoi(f[1])
		connects += n
	}
	if connects != 1 {
		t.Errorf("%d connections opened; the established one should have carried every request", connects)
	}
	// The agents come back (restartPolicy Always) and the routes are unchanged.
	waitAgentsReady(t)
	if after := nodeRoutes(t, src.Spec.NodeName); after != before {
		t.Errorf("routes changed across the agent restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNoLeaksAfterManyPods: 300 pods created and deleted (three rounds of 100)
// leave no IP allocation, veth or route behind.
func TestNoLeaksAfterManyPods(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	ns := namespace(t, "churn")
	apply(t, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: churn, namespace: churn}
spec:
  replicas: 0
  selector: {matchLabels: {app: churn}}
  template:
    metadata: {labels: {app: churn}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: c, image: registry.k8s.io/pause:3.10}]
`)
	for round := 0; round < 3; round++ {
		mustKubectl(t, "scale", "-n", ns, "deployment/churn", "--replicas=100")
		readyPodsTimeout(t, ns, "app=churn", 100, 4*time.Minute)
		mustKubectl(t, "scale", "-n", ns, "deployment/churn", "--replicas=0")
		eventually(t, 3*time.Minute, "churn pods gone", func() error {
			list, err := cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{})
			if err != nil {
				return err
			}
			if len(list.Items) != 0 {
				return fmt.Errorf("%d pods left", len(list.Items))
			}
			return nil
		})
	}
	eventually(t, 60*time.Second, "nothing leaked", func() error { return leaks(t) })
}

// leaks compares, per node, the IPAM allocations, pod veths and pod routes
// with the pods that hold a pod network there.
func leaks(t *testing.T) error {
	pods, err := cs.CoreV1().Pods("").List(ctx(t), metav1.ListOptions{})
	if err != nil {
		return err
	}
	want := map[string]int{}
	for _, p := range pods.Items {
		if !p.Spec.HostNetwork && p.Status.PodIP != "" {
			want[p.Spec.NodeName]++
		}
	}
	var problems []string
	for n := 1; n <= 3; n++ {
		node := fmt.Sprintf("e2e-node-%d", n)
		ipam, _ := filepath.Glob(filepath.Join("/var/lib/amime-lab", labName, "nodes", node, "fs/var/lib/amime/ipam/*/[0-9a-f]*[.:]*"))
		out, _ := amime(t, "lab", "exec", "--node", node, "--", "sh", "-c", "ip -br link | grep -c '^amv' ; ip route | grep -c ' dev amv'")
		f := append(strings.Fields(out), "?", "?")
		got := fmt.Sprintf("ipam %d, veths %s, routes %s", len(ipam), f[0], f[1])
		if exp := fmt.Sprintf("ipam %d, veths %d, routes %d", want[node], want[node], want[node]); got != exp {
			problems = append(problems, fmt.Sprintf("%s: %s; want %s", node, got, exp))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return nil
}

func readyPodsTimeout(t *testing.T, ns, selector string, want int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d Ready pods %s", want, selector), func() error {
		list, err := cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		n := 0
		for _, p := range list.Items {
			if podReady(&p) {
				n++
			}
		}
		if n != want {
			return fmt.Errorf("%d of %d Ready", n, want)
		}
		return nil
	})
}

// waitAgentsReady waits until the amime agent is Ready on all three nodes again
// (after a test killed agents; the node runtime restarts them).
func waitAgentsReady(t *testing.T) {
	t.Helper()
	eventually(t, 60*time.Second, "agents Ready again", func() error {
		ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx(t), "amime-agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.NumberReady != 3 {
			return fmt.Errorf("%d ready", ds.Status.NumberReady)
		}
		return nil
	})
}
