//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestDualStackLab brings up a second, two-node dual-stack lab and checks that
// nodes, pods and Services get addresses of both families and that pods reach
// each other over IPv6 across nodes.
func TestDualStackLab(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dual := extraLab(t, "e2edual", "--ip-family", "dual", "--pod-cidr", "10.245.0.0/16", "--pod-cidr-v6", "fd00:10:245::/56", "--underlay", "172.30.8.0/24", "--underlay-v6", "fd00:a:e8::/64", "--etcd-port", "12579")
	nodes, err := dual.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if len(n.Spec.PodCIDRs) != 2 || !strings.Contains(n.Spec.PodCIDRs[1], ":") || !strings.HasSuffix(n.Spec.PodCIDRs[1], "/64") {
			t.Errorf("node %s podCIDRs %v: want an IPv4 /24 and an IPv6 /64", n.Name, n.Spec.PodCIDRs)
		}
	}
	svc, err := dual.CoreV1().Services("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes Service %v (%v)", svc.Spec.ClusterIPs, err)
	}
	for i, node := range []string{"e2edual-node-1", "e2edual-node-2"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Args: []string{"netexec"},
			}}},
		}
		if _, err := dual.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var ips [2][]corev1.PodIP
	for i := range 2 {
		ips[i] = runningPodIPs(t, dual, fmt.Sprintf("p%d", i), 2)
		a0, _ := netip.ParseAddr(ips[i][0].IP)
		a1, _ := netip.ParseAddr(ips[i][1].IP)
		if !a0.Is4() || !a1.Is6() {
			t.Errorf("pod p%d IPs %v: want IPv4 first, then IPv6", i, ips[i])
		}
	}
	for fam, want := range map[int]string{0: ips[0][0].IP + ":", 1: "[" + ips[0][1].IP + "]:"} {
		host := ips[1][fam].IP
		if fam == 1 {
			host = "[" + host + "]"
		}
		got := curlFrom(t, "e2edual", "p0", "http://"+host+":8080/clientip")
		if !strings.HasPrefix(got, want) {
			t.Errorf("pod to pod across nodes over IPv%d: seen as %q; want the client's own address %s", 4+2*fam, got, want)
		}
	}
}

// TestNativeRoutingLab brings up a two-node lab in native routing mode: no
// VXLAN device, routes to the other node's pod range via its address, and pod
// to pod traffic across nodes without NAT.
func TestNativeRoutingLab(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	nat := extraLab(t, "e2enat", "--routing", "native", "--pod-cidr", "10.246.0.0/16", "--underlay", "172.30.6.0/24", "--underlay-v6", "fd00:a:e6::/64", "--etcd-port", "12779")
	for i, node := range []string{"e2enat-node-1", "e2enat-node-2"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Args: []string{"netexec"},
			}}},
		}
		if _, err := nat.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a := runningPodIPs(t, nat, "p0", 1)[0].IP
	b := runningPodIPs(t, nat, "p1", 1)[0].IP
	if got := curlFrom(t, "e2enat", "p0", "http://"+b+":8080/clientip"); !strings.HasPrefix(got, a+":") {
		t.Errorf("native routing across nodes: seen as %q, want %s", got, a)
	}
	n2, err := nat.CoreV1().Nodes().Get(context.Background(), "e2enat-node-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := n2.Spec.PodCIDR + " via 172.30.6.12 dev eth0"
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = run(context.Background(), *amimeBin, "lab", "exec", "--name", "e2enat", "--node", "e2enat-node-1", "--", "sh", "-c", "ip route; ip link show amime.vxlan 2>&1 || true")
		if err == nil && strings.Contains(out, want+" proto 161") && strings.Contains(out, "does not exist") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("native routes on node 1:\n%s\nwant %q (proto 161) and no VXLAN device (err %v)", out, want, err)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// extraLab brings up a second, two-node lab for one test and removes it after.
func extraLab(t *testing.T, name string, flags ...string) *kubernetes.Clientset {
	t.Helper()
	down := func() error {
		_, err := run(context.Background(), *amimeBin, "lab", "down", "--name", name)
		return err
	}
	_ = down()
	t.Cleanup(func() {
		if err := down(); err != nil {
			t.Errorf("lab down --name %s: %v", name, err)
		}
		if _, err := os.Stat("/var/lib/amime-lab/" + name); err == nil {
			t.Errorf("lab down --name %s left its state directory", name)
		}
	})
	out, err := run(context.Background(), *amimeBin, append([]string{"lab", "up", "--name", name, "--nodes", "2"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	kc := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "=")+1:])
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// runningPodIPs waits for a pod of the default namespace to run with n IPs.
func runningPodIPs(t *testing.T, c *kubernetes.Clientset, name string, n int) []corev1.PodIP {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := c.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.PodIPs) == n {
			return p.Status.PodIPs
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not running with %d IPs: %v", name, n, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// curlFrom fetches url from a pod of another lab, retrying briefly.
func curlFrom(t *testing.T, lab, pod, url string) string {
	t.Helper()
	var out string
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = run(context.Background(), *amimeBin, "lab", "exec", "--name", lab, pod, "--", "curl", "-s", "--max-time", "3", url)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("curl %s from %s: %v", url, pod, err)
	}
	return strings.TrimSpace(out)
}
