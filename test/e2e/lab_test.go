//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodesReady(t *testing.T) {
	nodes, err := cs.CoreV1().Nodes().List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("want 3 nodes, got %d", len(nodes.Items))
	}
	underlay := netip.MustParsePrefix("172.30.9.0/24")
	cidrs := map[string]bool{}
	for _, n := range nodes.Items {
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			t.Errorf("node %s is not Ready", n.Name)
		}
		if len(n.Spec.PodCIDRs) != 1 || !strings.HasPrefix(n.Spec.PodCIDRs[0], "10.240.") || !strings.HasSuffix(n.Spec.PodCIDRs[0], "/24") {
			t.Errorf("node %s: podCIDRs %v, want one /24 of 10.240.0.0/16 (the e2e lab's --pod-cidr)", n.Name, n.Spec.PodCIDRs)
		}
		if cidrs[n.Spec.PodCIDR] {
			t.Errorf("node %s: podCIDR %s given twice", n.Name, n.Spec.PodCIDR)
		}
		cidrs[n.Spec.PodCIDR] = true
		var internal string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = a.Address
			}
		}
		if a, err := netip.ParseAddr(internal); err != nil || !underlay.Contains(a) {
			t.Errorf("node %s: InternalIP %q not on the lab underlay %s", n.Name, internal, underlay)
		}
		lease, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx(t), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("node %s: lease: %v", n.Name, err)
		} else if age := time.Since(lease.Spec.RenewTime.Time); age > 20*time.Second {
			t.Errorf("node %s: lease renewed %s ago", n.Name, age)
		}
	}
}

const netexecDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: netexec, namespace: %s}
spec:
  replicas: 6
  selector: {matchLabels: {app: netexec}}
  template:
    metadata: {labels: {app: netexec}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080, --udp-port=8081]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
`

// readyPods waits for want Ready pods with the label and returns them.
func readyPods(t *testing.T, ns, selector string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, 90*time.Second, fmt.Sprintf("%d Ready pods %s in %s", want, selector, ns), func() error {
		list, err := cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		pods = nil
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				pods = append(pods, p)
			}
		}
		if len(pods) != want {
			return fmt.Errorf("%d of %d Ready", len(pods), want)
		}
		return nil
	})
	return pods
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestDeploymentSpreadsWithDistinctIPs(t *testing.T) {
	ns := namespace(t, "spread")
	apply(t, fmt.Sprintf(netexecDeployment, ns))
	pods := readyPods(t, ns, "app=netexec", 6)
	nodes, err := cs.CoreV1().Nodes().List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podCIDR := map[string]netip.Prefix{}
	for _, n := range nodes.Items {
		podCIDR[n.Name] = netip.MustParsePrefix(n.Spec.PodCIDR)
	}
	ips := map[string]string{}
	perNode := map[string]int{}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: phase %s", p.Name, p.Status.Phase)
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			t.Fatalf("pod %s: podIP %q: %v", p.Name, p.Status.PodIP, err)
		}
		if !podCIDR[p.Spec.NodeName].Contains(ip) {
			t.Errorf("pod %s on %s: IP %s outside the node's podCIDR %s", p.Name, p.Spec.NodeName, ip, podCIDR[p.Spec.NodeName])
		}
		if other, dup := ips[ip.String()]; dup {
			t.Errorf("pods %s and %s share IP %s", p.Name, other, ip)
		}
		ips[ip.String()] = p.Name
		perNode[p.Spec.NodeName]++
		if p.Status.HostIP == "" || len(p.Status.PodIPs) != 1 {
			t.Errorf("pod %s: hostIP %q podIPs %v", p.Name, p.Status.HostIP, p.Status.PodIPs)
		}
	}
	if len(perNode) != 3 {
		t.Errorf("pods did not spread over the 3 nodes: %v", perNode)
	}
	// The pod network is flat and without NAT: a pod on another node sees the
	// client pod's own IP.
	var a, b corev1.Pod
	for _, p := range pods {
		if p.Spec.NodeName != pods[0].Spec.NodeName {
			a, b = pods[0], p
			break
		}
	}
	out, err := amime(t, "lab", "exec", "-n", ns, a.Name, "--", "curl", "-s", "--max-time", "5", "http://"+b.Status.PodIP+":8080/clientip")
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := strings.Cut(strings.TrimSpace(out), ":"); host != a.Status.PodIP {
		t.Errorf("pod %s (%s) reached %s on another node as %q; want its own IP", a.Name, a.Status.PodIP, b.Name, out)
	}
}

func TestDeletedPodIsReplaced(t *testing.T) {
	ns := namespace(t, "replace")
	apply(t, fmt.Sprintf(strings.Replace(netexecDeployment, "replicas: 6", "replicas: 2", 1), ns))
	pods := readyPods(t, ns, "app=netexec", 2)
	victim := pods[0]
	mustKubectl(t, "delete", "pod", "-n", ns, victim.Name)
	after := readyPods(t, ns, "app=netexec", 2)
	for _, p := range after {
		if p.Name == victim.Name || p.UID == victim.UID {
			t.Fatalf("deleted pod %s is still there", victim.Name)
		}
	}
	// Its network namespace is gone.
	if _, err := os.Stat("/run/netns/amime-e2e-pod-" + string(victim.UID)); !os.IsNotExist(err) {
		t.Errorf("network namespace of deleted pod %s still exists (err %v)", victim.Name, err)
	}
}

func TestReadinessProbeGatesReady(t *testing.T) {
	ns := namespace(t, "readiness")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: slow, namespace: readiness}
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "sleep 4; touch /data/ready; exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
    readinessProbe:
      exec: {command: [cat, /data/ready]}
      periodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: gated, namespace: readiness}
spec:
  readinessGates: [{conditionType: "example.com/feature"}]
  containers:
  - {name: c, image: registry.k8s.io/pause:3.10}
`)
	var running time.Time
	eventually(t, 30*time.Second, "slow pod running", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "slow", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		if podReady(p) {
			t.Fatalf("pod Ready before its readiness probe passed")
		}
		running = time.Now()
		return nil
	})
	eventually(t, 30*time.Second, "slow pod Ready", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "slow", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !podReady(p) {
			return fmt.Errorf("not Ready")
		}
		return nil
	})
	if d := time.Since(running); d < time.Second {
		t.Errorf("pod became Ready %s after running; the probe cannot have passed before the file existed", d)
	}
	// A readiness gate keeps the pod not Ready until its condition is True.
	eventually(t, 30*time.Second, "gated pod ContainersReady", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "gated", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.ContainersReady && c.Status == corev1.ConditionTrue {
				if podReady(p) {
					t.Fatalf("pod Ready although its readiness gate is not")
				}
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Reason != "ReadinessGatesNotReady" {
						t.Errorf("Ready reason %q, want ReadinessGatesNotReady", c.Reason)
					}
				}
				return nil
			}
		}
		return fmt.Errorf("containers not ready yet")
	})
	mustKubectl(t, "patch", "pod", "-n", ns, "gated", "--subresource=status", "--type=strategic",
		"-p", `{"status":{"conditions":[{"type":"example.com/feature","status":"True"}]}}`)
	eventually(t, 30*time.Second, "gated pod Ready", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "gated", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !podReady(p) {
			return fmt.Errorf("not Ready")
		}
		return nil
	})
}

func TestLabExecNamespaces(t *testing.T) {
	ns := namespace(t, "exec")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: exec}
spec:
  containers:
  - {name: c, image: nicolaka/netshoot, command: [sleep, infinity]}
`)
	readyPodsByName(t, ns, "shell")
	out, err := amime(t, "lab", "exec", "-n", ns, "shell", "--", "hostname")
	if err != nil || strings.TrimSpace(out) != "shell" {
		t.Errorf("hostname in pod: %q, %v; want shell", out, err)
	}
	out, err = amime(t, "lab", "exec", "-n", ns, "shell", "--", "cat", "/etc/resolv.conf")
	want := "search exec.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	if err != nil || out != want {
		t.Errorf("resolv.conf in pod:\n%s\nwant:\n%s(err %v)", out, want, err)
	}
	if _, err := amime(t, "lab", "exec", "-n", ns, "shell", "--", "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("exit code not propagated: %v", err)
	}
	out, err = amime(t, "lab", "exec", "--node", "e2e-node-2", "--", "hostname")
	if err != nil || strings.TrimSpace(out) != "e2e-node-2" {
		t.Errorf("hostname on node: %q, %v", out, err)
	}
	out, err = amime(t, "lab", "exec", "--external", "--", "ip", "-br", "addr", "show", "eth0")
	if err != nil || !strings.Contains(out, "172.30.9.200/24") {
		t.Errorf("external namespace address: %q, %v", out, err)
	}
	// The real kubectl works through the node runtime's kubelet API.
	out, err = kubectl(t, "exec", "-n", ns, "shell", "--", "hostname")
	if err != nil || strings.TrimSpace(out) != "shell" {
		t.Errorf("kubectl exec hostname: %q, %v", out, err)
	}
	if _, err := kubectl(t, "exec", "-n", ns, "shell", "--", "sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("kubectl exec exit code: %v", err)
	}
}

func readyPodsByName(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 60*time.Second, "pod "+ns+"/"+name+" Ready", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !podReady(p) {
			return fmt.Errorf("not Ready (phase %s)", p.Status.Phase)
		}
		pod = p
		return nil
	})
	return pod
}

func TestKubectlLogs(t *testing.T) {
	ns := namespace(t, "logs")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: talker, namespace: logs}
spec:
  containers:
  - {name: c, image: busybox, command: [sh, -c, "for i in 1 2 3 4 5; do echo line $i; done; exec sleep 3600"]}
`)
	readyPodsByName(t, ns, "talker")
	eventually(t, 20*time.Second, "kubectl logs", func() error {
		out, err := kubectl(t, "logs", "-n", ns, "talker")
		if err != nil {
			return err
		}
		if out != "line 1\nline 2\nline 3\nline 4\nline 5\n" {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
	out := mustKubectl(t, "logs", "-n", ns, "talker", "--tail=2")
	if out != "line 4\nline 5\n" {
		t.Errorf("kubectl logs --tail=2: %q", out)
	}
	out, err := amime(t, "lab", "logs", "-n", ns, "talker")
	if err != nil || !strings.HasPrefix(out, "line 1\n") {
		t.Errorf("amime lab logs: %q, %v", out, err)
	}
}

func TestRestartPolicies(t *testing.T) {
	ns := namespace(t, "restarts")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: always, namespace: restarts}
spec:
  containers:
  - {name: c, image: busybox, command: [sh, -c, "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: never, namespace: restarts}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, command: [sh, -c, "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure, namespace: restarts}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: c, image: busybox, command: [sh, -c, "exit 0"]}
`)
	phase := func(name string, want corev1.PodPhase, code int32) {
		eventually(t, 40*time.Second, name+" "+string(want), func() error {
			p, err := cs.CoreV1().Pods(ns).Get(ctx(t), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != want {
				return fmt.Errorf("phase %s", p.Status.Phase)
			}
			st := p.Status.ContainerStatuses[0].State.Terminated
			if st == nil || st.ExitCode != code {
				return fmt.Errorf("container state %+v, want exit code %d", p.Status.ContainerStatuses[0].State, code)
			}
			if p.Status.ContainerStatuses[0].RestartCount != 0 {
				return fmt.Errorf("restarted %d times", p.Status.ContainerStatuses[0].RestartCount)
			}
			return nil
		})
	}
	phase("never", corev1.PodFailed, 3)
	phase("onfailure", corev1.PodSucceeded, 0)
	// restartPolicy Always: restarted at once, then after a back-off.
	eventually(t, 40*time.Second, "always restarted twice with back-off", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "always", metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := p.Status.ContainerStatuses[0]
		if s.RestartCount < 2 {
			return fmt.Errorf("restartCount %d", s.RestartCount)
		}
		if s.LastTerminationState.Terminated == nil || s.LastTerminationState.Terminated.ExitCode != 3 {
			return fmt.Errorf("lastState %+v", s.LastTerminationState)
		}
		return nil
	})
	eventually(t, 30*time.Second, "CrashLoopBackOff", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "always", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if w := p.Status.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "CrashLoopBackOff" {
			return fmt.Errorf("state %+v", p.Status.ContainerStatuses[0].State)
		}
		return nil
	})
}

func TestUnmappedImageFailsClearly(t *testing.T) {
	ns := namespace(t, "unmapped")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: mystery, namespace: unmapped}
spec:
  containers:
  - {name: c, image: example.org/team/mystery:1.2}
`)
	eventually(t, 30*time.Second, "waiting reason", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(t), "mystery", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return fmt.Errorf("no waiting state yet")
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		if w.Reason != "ErrImagePull" || !strings.Contains(w.Message, "example.org/team/mystery:1.2") || !strings.Contains(w.Message, "not mapped") {
			return fmt.Errorf("waiting %+v", w)
		}
		return nil
	})
}

func TestGracefulDeletionKeepsTerminatingEndpoint(t *testing.T) {
	ns := namespace(t, "graceful")
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: graceful}
spec:
  selector: {app: stubborn}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn, namespace: graceful, labels: {app: stubborn}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - {name: c, image: busybox, command: [sh, -c, "trap 'echo got TERM' TERM; while true; do sleep 0.2; done"]}
`)
	pod := readyPodsByName(t, ns, "stubborn")
	start := time.Now()
	mustKubectl(t, "delete", "pod", "-n", ns, "stubborn", "--wait=false")
	// While it terminates, the EndpointSlice shows it as terminating.
	waitTerminatingEndpoint(t, ns, "svc", 4*time.Second)
	eventually(t, 20*time.Second, "pod gone", func() error {
		_, err := cs.CoreV1().Pods(ns).Get(ctx(t), "stubborn", metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if d := time.Since(start); d < 4*time.Second {
		t.Errorf("pod that ignores SIGTERM was gone after %s; the grace period is 5s", d)
	}
	if _, err := os.Stat("/run/netns/amime-e2e-pod-" + string(pod.UID)); !os.IsNotExist(err) {
		t.Errorf("pod network namespace left behind")
	}
}

func TestMalformedManifestRejected(t *testing.T) {
	cmd := `apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
spec:
  containers: [{name: c, image: busybox}]
`
	out, err := runStdin(cmd, "kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "Invalid value") {
		t.Errorf("malformed pod accepted or unclear error: %v\n%s", err, out)
	}
}

// TestNodeRuntimeRestartAdoptsPods kills one node runtime: the node goes
// NotReady through the node-lifecycle controller, the pods keep running, and the
// restarted runtime adopts them instead of starting them again.
func TestNodeRuntimeRestartAdoptsPods(t *testing.T) {
	ns := namespace(t, "adopt")
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: survivor, namespace: adopt}
spec:
  nodeName: e2e-node-2
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec]}
`)
	before := readyPodsByName(t, ns, "survivor")
	containerPidFile := "/var/lib/amime-lab/e2e/nodes/e2e-node-2/pods/" + string(before.UID) + "/containers/c/container.pid"
	pidBefore, err := os.ReadFile(containerPidFile)
	if err != nil {
		t.Fatal(err)
	}
	pidFile := "/var/lib/amime-lab/e2e/run/e2e-node-2.pid"
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(b))[0])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "node NotReady", func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx(t), "e2e-node-2", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("still Ready")
	})
	if _, err := amime(t, "lab", "up"); err != nil {
		t.Fatal(err)
	}
	after := readyPodsByName(t, ns, "survivor")
	if after.UID != before.UID || after.Status.PodIP != before.Status.PodIP {
		t.Errorf("pod replaced: uid %s→%s ip %s→%s", before.UID, after.UID, before.Status.PodIP, after.Status.PodIP)
	}
	if after.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("container restarted %d times; it should have been adopted", after.Status.ContainerStatuses[0].RestartCount)
	}
	pidAfter, err := os.ReadFile(containerPidFile)
	if err != nil || string(pidAfter) != string(pidBefore) {
		t.Errorf("container process changed: %q → %q (%v)", pidBefore, pidAfter, err)
	}
	var pid2, start2 int
	fmt.Sscanf(string(pidAfter), "%d %d", &pid2, &start2)
	if err := syscall.Kill(pid2, 0); err != nil {
		t.Errorf("container process %d is gone: %v", pid2, err)
	}
}

// waitTerminatingEndpoint waits until an endpoint of the Service is terminating.
func waitTerminatingEndpoint(t *testing.T, ns, svc string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "terminating endpoint of "+svc, func() error {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return err
		}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
					return nil
				}
			}
		}
		return fmt.Errorf("no terminating endpoint")
	})
}
