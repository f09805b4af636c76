//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// backend is a netexec Deployment (HTTP 8080 named "http", UDP 8081 named
// "udp") and a client pod, in namespace ns.
func backend(t *testing.T, ns string, replicas int, extra string) {
	t.Helper()
	apply(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      # Well-behaved servers keep serving for a moment after SIGTERM, while the
      # proxies stop sending them new connections.
      terminationGracePeriodSeconds: 5
      %[3]s
      containers:
      - name: c
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080, --udp-port=8081, --delay-shutdown=2]
        ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: %[1]s}
spec:
  nodeName: e2e-node-2
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec, --http-port=8080, --udp-port=8081]}
`, ns, replicas, extra))
}

func service(t *testing.T, ns, name, spec string) *corev1.Service {
	t.Helper()
	apply(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n%s", name, ns, spec))
	svc, err := cs.CoreV1().Services(ns).Get(ctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// hostnames asks url n times from the client pod and counts the answers.
func hostnames(t *testing.T, ns, url string, n int) map[string]int {
	t.Helper()
	out, err := amime(t, "lab", "exec", "-n", ns, "client", "--", "sh", "-c",
		fmt.Sprintf("for i in $(seq %d); do curl -s --max-time 2 %s; echo; done", n, url))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		seen[strings.TrimSpace(l)]++
	}
	return seen
}

func waitEndpoints(t *testing.T, ns, svc string, n int) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%d ready endpoints of %s", n, svc), func() error {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready++
				}
			}
		}
		if ready != n {
			return fmt.Errorf("%d ready", ready)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // the proxy programs within milliseconds; leave it a moment
}

// TestClusterIPSpreadsOverEndpoints: TCP and UDP through the ClusterIP with
// named target ports; scaling 1 → 5 spreads 100 requests over all 5 pods.
func TestClusterIPSpreadsOverEndpoints(t *testing.T) {
	ns := namespace(t, "svc-spread")
	backend(t, ns, 1, "")
	svc := service(t, ns, "web", "  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP, targetPort: udp}]\n")
	readyPodsByName(t, ns, "client")
	waitEndpoints(t, ns, "web", 1)
	if seen := hostnames(t, ns, "http://"+svc.Spec.ClusterIP+"/hostname", 10); len(seen) != 1 || seen[""] > 0 {
		t.Fatalf("one endpoint: answers %v", seen)
	}
	mustKubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	waitEndpoints(t, ns, "web", 5)
	seen := hostnames(t, ns, "http://"+svc.Spec.ClusterIP+"/hostname", 100)
	if len(seen) != 5 || seen[""] > 0 {
		t.Errorf("100 requests over 5 endpoints: %v", seen)
	}
	// UDP through the ClusterIP, by agnhost's /dial from the client.
	out, err := amime(t, "lab", "exec", "-n", ns, "client", "--", "curl", "-s", "--max-time", "10",
		"http://127.0.0.1:8080/dial?request=hostname&host="+svc.Spec.ClusterIP+"&port=53&protocol=udp&tries=20")
	var r dialResult
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || len(r.Responses) == 0 {
		t.Errorf("UDP through the ClusterIP: %q %v", out, err)
	}
}

// TestNoEndpointsRejectedAtOnce: a Service without endpoints refuses at once.
func TestNoEndpointsRejectedAtOnce(t *testing.T) {
	ns := namespace(t, "svc-empty")
	backend(t, ns, 0, "")
	svc := service(t, ns, "nobody", "  selector: {app: nobody}\n  ports: [{port: 80, targetPort: 8080}]\n")
	readyPodsByName(t, ns, "client")
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	_, err := amime(t, "lab", "exec", "-n", ns, "client", "--", "curl", "-s", "--max-time", "5", "http://"+svc.Spec.ClusterIP+"/")
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("connection to a Service without endpoints: %v; want refused (curl exit 7)", err)
	}
	if took > time.Second {
		t.Errorf("refusal took %s; want under 1 s", took)
	}
}

// TestNodePortFromOutside: a NodePort answers on every node from the external
// namespace; with policy Cluster the pod sees the node's address (SNAT).
func TestNodePortFromOutside(t *testing.T) {
	ns := namespace(t, "svc-nodeport")
	backend(t, ns, 2, "")
	svc := service(t, ns, "web", "  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	waitEndpoints(t, ns, "web", 2)
	np := svc.Spec.Ports[0].NodePort
	if np < 30000 || np > 32767 {
		t.Fatalf("nodePort %d outside 30000-32767", np)
	}
	for n := 1; n <= 3; n++ {
		node := fmt.Sprintf("172.30.9.%d", 10+n)
		out, err := amime(t, "lab", "exec", "--external", "--", "curl", "-s", "--max-time", "3", fmt.Sprintf("http://%s:%d/clientip", node, np))
		host, _, _ := strings.Cut(strings.TrimSpace(out), ":")
		if err != nil || host == "" || host == "172.30.9.200" {
			t.Errorf("NodePort on %s from outside: %q %v; want an answer from the node's address (SNAT)", node, out, err)
		}
	}
}

// TestExternalTrafficPolicyLocal: only nodes with a local endpoint serve, the
// client's address is preserved, and the health check node port says which.
func TestExternalTrafficPolicyLocal(t *testing.T) {
	ns := namespace(t, "svc-local")
	backend(t, ns, 1, "nodeName: e2e-node-1")
	// A LoadBalancer with policy Local gets a healthCheckNodePort (and a NodePort).
	svc := service(t, ns, "web", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	waitEndpoints(t, ns, "web", 1)
	np := svc.Spec.Ports[0].NodePort
	out, err := amime(t, "lab", "exec", "--external", "--", "curl", "-s", "--max-time", "3", fmt.Sprintf("http://172.30.9.11:%d/clientip", np))
	if host, _, _ := strings.Cut(strings.TrimSpace(out), ":"); err != nil || host != "172.30.9.200" {
		t.Errorf("node with the endpoint: %q %v; want the external client's own address 172.30.9.200", out, err)
	}
	if out, err := amime(t, "lab", "exec", "--external", "--", "curl", "-s", "--max-time", "2", fmt.Sprintf("http://172.30.9.12:%d/clientip", np)); err == nil {
		t.Errorf("node without a local endpoint answered %q; want no answer", out)
	}
	// From inside the cluster the policy does not apply (as kube-proxy): the
	// node without a local endpoint, and a pod on it, are served cluster-wide.
	apply(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: np-client, namespace: %s}\nspec:\n  nodeName: %s\n  containers: [{name: c, image: nicolaka/netshoot, command: [sleep, infinity]}]\n", ns, nodeName(2)))
	readyPodsByName(t, ns, "np-client")
	url := fmt.Sprintf("http://%s:%d/hostname", nodeIP(2), np)
	if out, err := amime(t, "lab", "exec", "--node", nodeName(2), "--", "curl", "-s", "--max-time", "3", url); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("node without a local endpoint → its own NodePort (policy Local): %q %v; want the remote endpoint to answer", out, err)
	}
	if out, err := amime(t, "lab", "exec", "-n", ns, "np-client", "--", "curl", "-s", "--max-time", "3", url); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("pod on a node without a local endpoint → NodePort (policy Local): %q %v; want the remote endpoint to answer", out, err)
	}
	hc := svc.Spec.HealthCheckNodePort
	if hc == 0 {
		t.Fatalf("no healthCheckNodePort")
	}
	for node, want := range map[string]string{"172.30.9.11": "200 1", "172.30.9.12": "503 0"} {
		var got string
		eventually(t, 10*time.Second, "health check on "+node, func() error {
			out, err := amime(t, "lab", "exec", "--external", "--", "curl", "-s", "--max-time", "2", "-w", " %{http_code}", fmt.Sprintf("http://%s:%d/healthz", node, hc))
			if err != nil {
				return err
			}
			i := strings.LastIndex(out, " ")
			var body struct {
				LocalEndpoints int `json:"localEndpoints"`
			}
			if err := json.Unmarshal([]byte(out[:i]), &body); err != nil {
				return fmt.Errorf("body %q: %v", out, err)
			}
			got = fmt.Sprintf("%s %d", strings.TrimSpace(out[i:]), body.LocalEndpoints)
			if got != want {
				return fmt.Errorf("got %s", got)
			}
			return nil
		})
	}
}

// TestSessionAffinityPinsClient: ClientIP affinity sends one client to one pod.
func TestSessionAffinityPinsClient(t *testing.T) {
	ns := namespace(t, "svc-affinity")
	backend(t, ns, 3, "")
	svc := service(t, ns, "web", "  selector: {app: web}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports: [{port: 80, targetPort: 8080}]\n")
	readyPodsByName(t, ns, "client")
	waitEndpoints(t, ns, "web", 3)
	if seen := hostnames(t, ns, "http://"+svc.Spec.ClusterIP+"/hostname", 50); len(seen) != 1 || seen[""] > 0 {
		t.Errorf("50 requests with ClientIP affinity reached %v; want one pod", seen)
	}
}

// TestInternalTrafficPolicyLocal: only node-local endpoints serve the ClusterIP.
func TestInternalTrafficPolicyLocal(t *testing.T) {
	ns := namespace(t, "svc-itp")
	backend(t, ns, 1, "nodeName: e2e-node-2")
	svc := service(t, ns, "web", "  selector: {app: web}\n  internalTrafficPolicy: Local\n  ports: [{port: 80, targetPort: 8080}]\n")
	readyPodsByName(t, ns, "client")
	waitEndpoints(t, ns, "web", 1)
	if seen := hostnames(t, ns, "http://"+svc.Spec.ClusterIP+"/hostname", 5); len(seen) != 1 || seen[""] > 0 {
		t.Errorf("client on the endpoint's node: %v", seen)
	}
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: svc-itp}
spec:
  nodeName: e2e-node-3
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
`)
	readyPodsByName(t, ns, "far")
	if out, err := amime(t, "lab", "exec", "-n", ns, "far", "--", "curl", "-s", "--max-time", "2", "http://"+svc.Spec.ClusterIP+"/hostname"); err == nil {
		t.Errorf("client on a node without a local endpoint got %q; want no answer", out)
	}
}

// TestLoadBalancerAndExternalIPs: traffic to an external IP and to a
// load-balancer IP set by hand is served like the ClusterIP (the external
// namespace routes them to node 1, standing in for an announcement).
func TestLoadBalancerAndExternalIPs(t *testing.T) {
	ns := namespace(t, "svc-lb")
	backend(t, ns, 2, "")
	svc := service(t, ns, "web", "  type: LoadBalancer\n  selector: {app: web}\n  externalIPs: [172.30.9.150]\n  ports: [{port: 80, targetPort: 8080}]\n")
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "172.30.9.151"}}
	if _, err := cs.CoreV1().Services(ns).UpdateStatus(ctx(t), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, ns, "web", 2)
	for _, ip := range []string{"172.30.9.150", "172.30.9.151"} {
		if _, err := run(ctx(t), "ip", "-n", "amime-e2e-external", "route", "replace", ip+"/32", "via", "172.30.9.11"); err != nil {
			t.Fatal(err)
		}
		var out string
		eventually(t, 10*time.Second, "reach "+ip, func() (err error) {
			out, err = amime(t, "lab", "exec", "--external", "--", "curl", "-s", "--max-time", "2", "http://"+ip+"/hostname")
			return err
		})
		if !strings.HasPrefix(strings.TrimSpace(out), "web-") {
			t.Errorf("%s answered %q; want a web pod", ip, out)
		}
	}
}

// TestHairpin: a pod reaching its own Service lands on itself and gets an answer.
func TestHairpin(t *testing.T) {
	ns := namespace(t, "svc-hairpin")
	backend(t, ns, 1, "")
	svc := service(t, ns, "web", "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	pods := readyPods(t, ns, "app=web", 1)
	waitEndpoints(t, ns, "web", 1)
	out, err := amime(t, "lab", "exec", "-n", ns, pods[0].Name, "--", "curl", "-s", "--max-time", "3", "http://"+svc.Spec.ClusterIP+"/hostname")
	if err != nil || strings.TrimSpace(out) != pods[0].Name {
		t.Errorf("hairpin: %q %v; want the pod's own name", out, err)
	}
}

// TestTerminatingEndpointsStillServe: while a Service's only pod terminates
// (and keeps serving), requests still reach it.
func TestTerminatingEndpointsStillServe(t *testing.T) {
	ns := namespace(t, "svc-term")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: slowstop, namespace: svc-term, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 15
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080, --delay-shutdown=10]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: svc-term}
spec:
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
`)
	svc := service(t, ns, "web", "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	readyPodsByName(t, ns, "client")
	waitEndpoints(t, ns, "web", 1)
	mustKubectl(t, "delete", "pod", "-n", ns, "slowstop", "--wait=false")
	waitTerminatingEndpoint(t, ns, "web", 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	out, err := amime(t, "lab", "exec", "-n", ns, "client", "--", "curl", "-s", "--max-time", "2", "http://"+svc.Spec.ClusterIP+"/hostname")
	if err != nil || strings.TrimSpace(out) != "slowstop" {
		t.Errorf("request while the only endpoint terminates: %q %v; want it served by the terminating pod", out, err)
	}
}

// TestServicesLeftToOtherProxies: Services labelled for another proxy, and
// headless Services, get no rules.
func TestServicesLeftToOtherProxies(t *testing.T) {
	ns := namespace(t, "svc-other")
	backend(t, ns, 1, "")
	other := service(t, ns, "other", "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	mustKubectl(t, "label", "service", "-n", ns, "other", "service.kubernetes.io/service-proxy-name=someone-else")
	mine := service(t, ns, "mine", "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	waitEndpoints(t, ns, "mine", 1)
	out, err := amime(t, "lab", "exec", "--node", "e2e-node-1", "--", "nft", "list", "map", "inet", "amime-proxy", "service-ips-v4")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, other.Spec.ClusterIP+" ") {
		t.Errorf("Service labelled for another proxy is programmed:\n%s", out)
	}
	if !strings.Contains(out, mine.Spec.ClusterIP+" ") {
		t.Errorf("ordinary Service is not programmed:\n%s", out)
	}
}

// proxyDump is what a node's proxy programmed for one ClusterIP: its map
// element and its Service chain (other tests' Services may come and go meanwhile).
func proxyDump(t *testing.T, node, clusterIP string) string {
	t.Helper()
	out, err := amime(t, "lab", "exec", "--node", node, "--", "nft", "list", "map", "inet", "amime-proxy", "service-ips-v4")
	if err != nil {
		t.Fatal(err)
	}
	var element, chain string
	for _, part := range strings.FieldsFunc(out, func(r rune) bool { return r == ',' || r == '{' || r == '}' || r == '\n' }) {
		if part = strings.TrimSpace(part); strings.HasPrefix(part, clusterIP+" ") {
			element = part
			chain = part[strings.LastIndex(part, " ")+1:]
		}
	}
	if chain == "" {
		t.Fatalf("no element for %s in:\n%s", clusterIP, out)
	}
	rules, err := amime(t, "lab", "exec", "--node", node, "--", "nft", "list", "chain", "inet", "amime-proxy", chain)
	if err != nil {
		t.Fatal(err)
	}
	return element + "\n" + rules
}

// TestAgentRestartUnderServiceLoad: requests through a ClusterIP keep being
// answered while the agents are killed and restarted, a rolling update under
// the same load loses none, and the restarted agents program the same table.
func TestAgentRestartUnderServiceLoad(t *testing.T) {
	ns := namespace(t, "svc-restart")
	backend(t, ns, 3, "")
	svc := service(t, ns, "web", "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n")
	readyPodsByName(t, ns, "client")
	waitEndpoints(t, ns, "web", 3)
	before := proxyDump(t, "e2e-node-2", svc.Spec.ClusterIP)
	load := func(seconds int) chan string {
		done := make(chan string, 1)
		go func() {
			// New connections, 20 a second, each with a 2 s limit: a lost request fails curl.
			out, _ := amime(t, "lab", "exec", "-n", ns, "client", "--", "sh", "-c",
				fmt.Sprintf("ok=0; fail=0; for i in $(seq %d); do if curl -s -o /dev/null --max-time 2 http://%s/hostname; then ok=$((ok+1)); else fail=$((fail+1)); fi; sleep 0.05; done; echo $ok $fail", seconds*20, svc.Spec.ClusterIP))
			done <- strings.TrimSpace(out)
		}()
		return done
	}
	done := load(4)
	time.Sleep(time.Second)
	for n := 1; n <= 3; n++ {
		if err := syscall.Kill(agentPid(t, fmt.Sprintf("e2e-node-%d", n)), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-done; !strings.HasSuffix(got, " 0") {
		t.Errorf("requests during the agent restart: %q (ok fail); want no failure", got)
	}
	waitAgentsReady(t)
	if after := proxyDump(t, "e2e-node-2", svc.Spec.ClusterIP); after != before {
		t.Errorf("the restarted agent programmed a different table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// A rolling update under load.
	done = load(8)
	time.Sleep(500 * time.Millisecond)
	mustKubectl(t, "set", "env", "-n", ns, "deployment/web", "GENERATION=2")
	mustKubectl(t, "rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
	if got := <-done; !strings.HasSuffix(got, " 0") {
		t.Errorf("requests during a rolling update: %q (ok fail); want no failure", got)
	}
}
