//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"amime.dev/amime/internal/status"
	"amime.dev/amime/internal/tour"
)

// TestTour runs `amime lab tour` as `make lab` does, non-interactively, and
// checks its real results against what kubectl reports.
func TestTour(t *testing.T) {
	examples, err := filepath.Abs("../../examples/tour")
	if err != nil {
		t.Fatal(err)
	}
	resultsFile := filepath.Join(t.TempDir(), "tour.json")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "--ignore-not-found", "--wait=false", "-f", examples)
	})
	out, err := amime(t, "lab", "tour", "--examples", examples, "--results", resultsFile)
	if err != nil {
		t.Errorf("tour failed: %v", err)
	}
	b, rerr := os.ReadFile(resultsFile)
	if rerr != nil {
		t.Fatalf("tour wrote no results: %v\n%s", rerr, out)
	}
	var res tour.Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services("default").Get(ctx(t), "nginx-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.HTTPStatus, "HTTP/1.1 200") {
		t.Errorf("curl -I nginx-svc: %q, want HTTP 200", res.HTTPStatus)
	}
	if res.NSLookupName != "nginx-svc.default.svc.cluster.local" || res.NSLookupAddress != svc.Spec.ClusterIP {
		t.Errorf("nslookup nginx-svc: %q %q, want nginx-svc.default.svc.cluster.local %s", res.NSLookupName, res.NSLookupAddress, svc.Spec.ClusterIP)
	}
	if !strings.HasPrefix(res.CrossNamespaceStatus, "HTTP/1.1 200") {
		t.Errorf("curl -I nginx.nginx: %q, want HTTP 200", res.CrossNamespaceStatus)
	}
	if !strings.Contains(res.ShortNameError, "Could not resolve host") {
		t.Errorf("curl nginx from default: %q, want Could not resolve host", res.ShortNameError)
	}
	if res.Endpoints != 5 {
		t.Errorf("endpoints after scaling: %d, want 5", res.Endpoints)
	}
	total := 0
	for _, n := range res.ServerAddresses {
		total += n
	}
	if len(res.ServerAddresses) < 4 || total != 30 {
		t.Errorf("30 requests answered by %v (%d answers), want at least 4 distinct pods and 30 answers", res.ServerAddresses, total)
	}
	pods, err := cs.CoreV1().Pods("default").List(ctx(t), metav1.ListOptions{LabelSelector: "app=nginx"})
	if err != nil {
		t.Fatal(err)
	}
	podIPs := map[string]bool{}
	for _, p := range pods.Items {
		podIPs[p.Status.PodIP+":80"] = true
	}
	for addr := range res.ServerAddresses {
		if !podIPs[addr] {
			t.Errorf("answer from %s, which is not an nginx-hello pod (%v)", addr, podIPs)
		}
	}
	if len(res.NodeIPs) != 3 || len(res.NodePortStatus) != 3 {
		t.Errorf("NodePort checked on %v, want the 3 node IPs", res.NodePortStatus)
	}
	for ip, st := range res.NodePortStatus {
		if !strings.HasPrefix(st, "HTTP/1.1 200") {
			t.Errorf("NodePort %d from outside on %s: %q, want HTTP 200", res.NodePort, ip, st)
		}
	}
	if len(res.Failures) > 0 {
		t.Errorf("tour failures: %v", res.Failures)
	}
	for _, want := range []string{"$ kubectl get deploy,svc", "$ kubectl exec netshoot -- nslookup nginx-svc", "amime lab exec", "export KUBECONFIG="} {
		if !strings.Contains(out, want) {
			t.Errorf("tour output lacks %q", want)
		}
	}
}

// TestStatusJSON checks `amime status -o json` against what the apiserver says.
func TestStatusJSON(t *testing.T) {
	var r status.Report
	eventually(t, 30*time.Second, "every agent answers /status and is ready", func() error {
		out, err := amime(t, "status", "--lab", labName, "-o", "json")
		if err != nil {
			return err
		}
		r = status.Report{}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return err
		}
		for _, n := range r.Nodes {
			if n.Agent == nil || !n.Agent.Ready {
				return fmt.Errorf("node %s: agent %+v (%s)", n.Name, n.Agent, n.AgentError)
			}
		}
		return nil
	})
	nodes, err := cs.CoreV1().Nodes().List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Nodes) != len(nodes.Items) {
		t.Fatalf("status lists %d nodes, the apiserver %d", len(r.Nodes), len(nodes.Items))
	}
	mode := "overlay"
	if cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx(t), "amime-config", metav1.GetOptions{}); err == nil && cm.Data["routing-mode"] != "" {
		mode = cm.Data["routing-mode"]
	}
	byName := map[string]corev1.Node{}
	for _, n := range nodes.Items {
		byName[n.Name] = n
	}
	for _, nr := range r.Nodes {
		n, ok := byName[nr.Name]
		if !ok {
			t.Errorf("status lists node %s, unknown to the apiserver", nr.Name)
			continue
		}
		if strings.Join(nr.PodCIDRs, ",") != strings.Join(n.Spec.PodCIDRs, ",") {
			t.Errorf("node %s: podCIDRs %v, apiserver %v", nr.Name, nr.PodCIDRs, n.Spec.PodCIDRs)
		}
		if nr.Agent.Node != nr.Name || nr.Agent.RoutingMode != mode {
			t.Errorf("node %s: agent reports node %q mode %q, want %q %q", nr.Name, nr.Agent.Node, nr.Agent.RoutingMode, nr.Name, mode)
		}
		routing := nr.Agent.Component("routing")
		if routing == nil || routing.Programmed["remoteNodes"] != len(nodes.Items)-1 || routing.LastSync.IsZero() || routing.LastError != "" {
			t.Errorf("node %s: routing %+v, want %d remote nodes, a last sync and no error", nr.Name, routing, len(nodes.Items)-1)
		}
		proxy := nr.Agent.Component("proxy")
		if proxy == nil || proxy.Programmed["services"] < 1 || proxy.LastError != "" {
			t.Errorf("node %s: proxy %+v, want at least the kubernetes Service and no error", nr.Name, proxy)
		}
	}
	dns, err := cs.AppsV1().Deployments("kube-system").List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.DNS.Deployment == nil {
		t.Fatalf("status found no DNS Deployment behind kube-dns: %+v", r.DNS)
	}
	for _, d := range dns.Items {
		if d.Name == r.DNS.Deployment.Name && *d.Spec.Replicas != r.DNS.Deployment.Desired {
			t.Errorf("DNS deployment %s: status says %d desired, apiserver %d", d.Name, r.DNS.Deployment.Desired, *d.Spec.Replicas)
		}
	}
	svc, err := cs.CoreV1().Services("kube-system").Get(ctx(t), "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.DNS.ServiceIPs, ",") != strings.Join(svc.Spec.ClusterIPs, ",") || r.DNS.Ready != r.DNS.Replicas || r.DNS.Replicas < 1 {
		t.Errorf("DNS: %+v, want the kube-dns ClusterIPs %v and every replica ready", r.DNS, svc.Spec.ClusterIPs)
	}
	// The text form shows the same in a table.
	out, err := amime(t, "status", "--lab", labName)
	if err != nil || !strings.Contains(out, "NODE") || !strings.Contains(out, nodes.Items[0].Name) || !strings.Contains(out, "replicas ready") {
		t.Errorf("amime status: %v\n%s", err, out)
	}
}
