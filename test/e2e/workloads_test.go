//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHostNetworkDaemonSet runs a hostNetwork DaemonSet, as the amime agent is
// deployed: one pod per node, in the node's network namespace, reachable on the
// node's address from outside the cluster.
func TestHostNetworkDaemonSet(t *testing.T) {
	ns := namespace(t, "hostnet")
	apply(t, `
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: hostnet, namespace: hostnet}
spec:
  selector: {matchLabels: {app: hostnet}}
  template:
    metadata: {labels: {app: hostnet}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=19999, --udp-port=-1]
`)
	pods := readyPods(t, ns, "app=hostnet", 3)
	for _, p := range pods {
		if p.Status.PodIP != p.Status.HostIP {
			t.Errorf("hostNetwork pod %s: podIP %s, hostIP %s; want equal", p.Name, p.Status.PodIP, p.Status.HostIP)
		}
		var out string
		eventually(t, 10*time.Second, "reach "+p.Status.HostIP, func() (err error) {
			out, err = amime(t, "lab", "exec", "--external", "--", "curl", "-s", "--max-time", "2", "http://"+p.Status.HostIP+":19999/hostname")
			return err
		})
		if strings.TrimSpace(out) != p.Spec.NodeName {
			t.Errorf("hostNetwork pod on %s answers hostname %q; want the node's name", p.Spec.NodeName, out)
		}
	}
}

func TestLivenessProbeRestartsContainer(t *testing.T) {
	ns := namespace(t, "liveness")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: sick, namespace: liveness}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    livenessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
      failureThreshold: 2
`)
	eventually(t, 40*time.Second, "restart after liveness failure", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "sick", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount < 1 {
			return fmt.Errorf("not restarted yet")
		}
		return nil
	})
	events, err := cs.CoreV1().Events(ns).List(ctx(t), metav1.ListOptions{FieldSelector: "involvedObject.name=sick"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Items {
		if e.Reason == "Unhealthy" && strings.Contains(e.Message, "Liveness probe failed") {
			found = true
		}
	}
	if !found {
		t.Errorf("no Unhealthy event for the liveness failure")
	}
}

// TestPodEnvironmentAndDNSConfig checks Service variables, the downward API,
// and dnsPolicy None with dnsConfig.
func TestPodEnvironmentAndDNSConfig(t *testing.T) {
	ns := namespace(t, "env")
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: my-svc, namespace: env}
spec:
  ports: [{name: web, port: 8080, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: envy, namespace: env, labels: {tier: front}}
spec:
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [example.test]
    options: [{name: ndots, value: "2"}]
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    env:
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MY_TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: GREETING, value: "hello $(MY_POD)"}
`)
	// The Service must exist before the pod starts for its variables to be set.
	pod := readyPodsByName(t, ns, "envy")
	out, err := kubectl(t, "exec", "-n", ns, "envy", "--", "env")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx(t), "my-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"KUBERNETES_SERVICE_HOST=10.96.0.1",
		"KUBERNETES_SERVICE_PORT=443",
		"MY_SVC_SERVICE_HOST=" + svc.Spec.ClusterIP,
		"MY_SVC_SERVICE_PORT_WEB=8080",
		"MY_SVC_PORT_53_UDP=udp://" + svc.Spec.ClusterIP + ":53",
		"MY_POD=envy",
		"MY_IP=" + pod.Status.PodIP,
		"MY_TIER=front",
		"GREETING=hello envy",
		"HOSTNAME=envy",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("env lacks %q:\n%s", want, out)
		}
	}
	out, err = kubectl(t, "exec", "-n", ns, "envy", "--", "cat", "/etc/resolv.conf")
	want := "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n"
	if err != nil || out != want {
		t.Errorf("resolv.conf with dnsPolicy None:\n%q\nwant\n%q (%v)", out, want, err)
	}
	out, err = kubectl(t, "exec", "-n", ns, "envy", "--", "cat", "/etc/hosts")
	if err != nil || !strings.Contains(out, pod.Status.PodIP+"\tenvy\n") {
		t.Errorf("/etc/hosts lacks the pod's entry:\n%s (%v)", out, err)
	}
}

// TestCNICheckOnDemand runs CNI CHECK through the node runtime: it passes on a
// healthy pod and fails once the pod's address is removed behind the plugin's back.
func TestCNICheckOnDemand(t *testing.T) {
	ns := namespace(t, "cnicheck")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: target, namespace: cnicheck}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: registry.k8s.io/pause:3.10}
`)
	pod := readyPodsByName(t, ns, "target")
	out, err := amime(t, "lab", "cni-check", "-n", ns, "target")
	if err != nil || !strings.Contains(out, "CNI CHECK ok") || !strings.Contains(out, pod.Status.PodIP) {
		t.Fatalf("CNI CHECK on a healthy pod: %q, %v", out, err)
	}
	if _, err := run(ctx(t), "ip", "-n", "amime-e2e-pod-"+string(pod.UID), "addr", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	out, err = amime(t, "lab", "cni-check", "-n", ns, "target")
	if err == nil || !strings.Contains(out, "CNI CHECK failed") {
		t.Errorf("CNI CHECK after removing the pod's address: %q, %v; want a failure", out, err)
	}
}
