//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
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
	name := []string{"--name", "e2edual"}
	down := func() { _, _ = run(context.Background(), *amimeBin, append([]string{"lab", "down"}, name...)...) }
	down()
	t.Cleanup(down)
	out, err := run(context.Background(), *amimeBin, append(append([]string{"lab", "up"}, name...),
		"--nodes", "2", "--ip-family", "dual", "--underlay", "172.30.8.0/24", "--underlay-v6", "fd00:a:e8::/64",
		"--etcd-port", "12579")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out)
	kc := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "=")+1:])
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	dual := kubernetes.NewForConfigOrDie(cfg)
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
		deadline := time.Now().Add(60 * time.Second)
		for {
			p, err := dual.CoreV1().Pods("default").Get(context.Background(), fmt.Sprintf("p%d", i), metav1.GetOptions{})
			if err == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.PodIPs) == 2 {
				ips[i] = p.Status.PodIPs
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pod p%d not running with two IPs: %+v (%v)", i, p.Status, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		a0, _ := netip.ParseAddr(ips[i][0].IP)
		a1, _ := netip.ParseAddr(ips[i][1].IP)
		if !a0.Is4() || !a1.Is6() {
			t.Errorf("pod p%d IPs %v: want IPv4 first, then IPv6", i, ips[i])
		}
	}
	target := "http://[" + ips[1][1].IP + "]:8080/clientip"
	var got string
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err = run(context.Background(), *amimeBin, "lab", "exec", "--name", "e2edual", "p0", "--", "curl", "-s", "--max-time", "3", target)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(got, "["+ips[0][1].IP+"]:") {
		t.Errorf("IPv6 pod to pod across nodes: %q, %v; want the client's own IPv6 address", got, err)
	}
}
