// Command policydp measures NetworkPolicy's packet path: the rate of new TCP
// connections (one HTTP request each) between two pods with no table at all,
// with the real table inet amime-policy programmed by the real controller
// (policy.Controller.Sync over listers) for no policy, and for 10 and 1,000
// policies (50 and 5,000 pods all on the node), the two pods isolated in both
// directions and allowed by policy. All in the same run, every round
// measuring each condition once. Three throwaway network
// namespaces: client pod — node — server pod. It also reports the RSS of this
// process after the large sync: the API objects as an informer cache holds
// them plus the controller's state (not a whole agent).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/policy"
)

const (
	client, node, server = "amime-bench-pdp-c", "amime-bench-pdp-n", "amime-bench-pdp-s"
	clientIP, serverIP   = "10.250.1.2", "10.250.2.2"
	nodeName             = "node-0"
)

func main() {
	podBin := flag.String("amime-pod", "bin/amime-pod", "amime-pod binary (the server)")
	dur := flag.Int("duration", 5, "seconds per measurement")
	rounds := flag.Int("rounds", 5, "rounds, each measuring every condition once")
	nPol := flag.Int("policies", 1000, "policies")
	nPod := flag.Int("pods", 5000, "pods (all on the node)")
	flag.Parse()
	if err := run(*podBin, *dur, *rounds, *nPol, *nPod); err != nil {
		fmt.Fprintln(os.Stderr, "policydp:", err)
		os.Exit(1)
	}
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func setup() error {
	for _, n := range []string{client, node, server} {
		_ = netns.Delete(n)
		if err := netns.Add(n); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "link", "add", "bpd-c", "netns", client, "type", "veth", "peer", "name", "bpd-nc", "netns", node},
		{"ip", "link", "add", "bpd-s", "netns", server, "type", "veth", "peer", "name", "bpd-ns", "netns", node},
		{"ip", "-n", client, "addr", "add", clientIP + "/24", "dev", "bpd-c"},
		{"ip", "-n", node, "addr", "add", "10.250.1.1/24", "dev", "bpd-nc"},
		{"ip", "-n", node, "addr", "add", "10.250.2.1/24", "dev", "bpd-ns"},
		{"ip", "-n", server, "addr", "add", serverIP + "/24", "dev", "bpd-s"},
		{"ip", "-n", client, "link", "set", "bpd-c", "up"},
		{"ip", "-n", node, "link", "set", "bpd-nc", "up"},
		{"ip", "-n", node, "link", "set", "bpd-ns", "up"},
		{"ip", "-n", server, "link", "set", "bpd-s", "up"},
		{"ip", "-n", client, "route", "add", "default", "via", "10.250.1.1"},
		{"ip", "-n", server, "route", "add", "default", "via", "10.250.2.1"},
		{"ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"},
		{"ip", "netns", "exec", server, "sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=1024"},
	}
	for _, s := range steps {
		if err := sh(s...); err != nil {
			return err
		}
	}
	return nil
}

func teardown() {
	for _, n := range []string{client, node, server} {
		_ = netns.Delete(n)
	}
}

// objects: the policybench model as API objects (pods in 50 namespaces,
// each policy selecting one app and allowing another from a namespace
// selector or an ipBlock), plus the two measured pods in namespace "bench":
// the client isolated for egress and allowed to the server on TCP 8080, the
// server isolated for ingress and allowed from the client on it.
func objects(nPol, nPod int) ([]*corev1.Pod, []*corev1.Namespace, []*networkingv1.NetworkPolicy) {
	var pods []*corev1.Pod
	nsSeen := map[string]bool{}
	var nss []*corev1.Namespace
	addNS := func(n string, l map[string]string) {
		if !nsSeen[n] {
			nsSeen[n] = true
			nss = append(nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, ResourceVersion: "1", Labels: l}})
		}
	}
	pod := func(ns, name, ip string, l map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1", Labels: l},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
		}
	}
	for i := 0; i < nPod; i++ {
		n := fmt.Sprintf("ns-%d", i%50)
		addNS(n, map[string]string{"team": fmt.Sprintf("t%d", i%7)})
		pods = append(pods, pod(n, fmt.Sprintf("p-%d", i), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(),
			map[string]string{"app": fmt.Sprintf("app-%d", i%97), "tier": fmt.Sprintf("tier-%d", i%3)}))
	}
	addNS("bench", map[string]string{"team": "bench"})
	pods = append(pods, pod("bench", "client", clientIP, map[string]string{"app": "client"}), pod("bench", "server", serverIP, map[string]string{"app": "server"}))
	var nps []*networkingv1.NetworkPolicy
	for i := 0; i < nPol; i++ {
		nps = append(nps, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("np-%d", i), ResourceVersion: "1"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%97)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%7)}},
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (i+1)%97)}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}},
				}}},
			},
		})
	}
	tcp, p8080 := corev1.ProtocolTCP, intstr.FromInt32(8080)
	ports := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p8080}}
	nps = append(nps,
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "server-from-client", ResourceVersion: "1"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: ports, From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "client-to-server", ResourceVersion: "1"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: ports, To: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}}}}}}}},
	)
	return pods, nss, nps
}

// program builds listers over the objects and runs one sync of the real
// controller in the node namespace. It returns the controller and the
// programmed status.
func program(nPol, nPod int, withPolicies bool) (*policy.Controller, error) {
	podIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nsIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	npIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	pods, nss, nps := objects(nPol, nPod)
	if !withPolicies {
		nps = nil
	}
	for _, o := range pods {
		_ = podIdx.Add(o)
	}
	for _, o := range nss {
		_ = nsIdx.Add(o)
	}
	for _, o := range nps {
		_ = npIdx.Add(o)
	}
	var c *policy.Controller
	err := netns.Do(netns.Path(node), func() error {
		nft, err := knftables.New(knftables.InetFamily, policy.Table)
		if err != nil {
			return err
		}
		c = policy.NewController(policy.RenderConfig{NodeName: nodeName, LogGroup: policy.DefaultLogGroup,
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("10.250.0.0/16")}}, policy.NewDataplane(nft, policy.DefaultLogGroup),
			corelisters.NewPodLister(podIdx), corelisters.NewNamespaceLister(nsIdx), networkinglisters.NewNetworkPolicyLister(npIdx),
			nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
		return c.Sync(context.Background())
	})
	return c, err
}

func deleteTable() error {
	return netns.Do(netns.Path(node), func() error {
		nft, err := knftables.New(knftables.InetFamily, policy.Table)
		if err != nil {
			return err
		}
		return policy.DeleteTable(context.Background(), nft)
	})
}

// rate runs wrk with a new connection per request and returns requests/s;
// the node's conntrack table is flushed first.
func rate(dur int) (float64, error) {
	_ = sh("ip", "netns", "exec", node, "conntrack", "-F")
	time.Sleep(200 * time.Millisecond)
	out, err := exec.Command("ip", "netns", "exec", client, "wrk", "-t1", "-c16", fmt.Sprintf("-d%ds", dur), "--timeout", "2s",
		"-H", "Connection: close", "http://"+serverIP+":8080/").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Requests/sec:" {
			var r float64
			fmt.Sscanf(f[1], "%f", &r)
			return r, nil
		}
	}
	return 0, fmt.Errorf("no rate in wrk output: %s", out)
}

// rssMiB reads this process's resident set.
func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb float64
			fmt.Sscanf(f[1], "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

// blocked checks that the table is really in the path: a connection the
// policies do not allow (client to the server on another port, where
// nothing listens) must time out (curl exit 28) instead of being refused.
func blocked() bool {
	err := exec.Command("ip", "netns", "exec", client, "curl", "-s", "-m", "1", "http://"+serverIP+":8081/").Run()
	ee, ok := err.(*exec.ExitError)
	return ok && ee.ExitCode() == 28
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// condition is one dataplane state a round measures.
type condition struct {
	name  string
	setup func() (*policy.Controller, error) // nil controller: no table
}

func run(podBin string, dur, rounds, nPol, nPod int) error {
	defer teardown()
	if err := setup(); err != nil {
		return err
	}
	srv := exec.Command("ip", "netns", "exec", server, podBin, "workload", "netexec", "--http-port=8080", "--udp-port=-1")
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(time.Second)
	rss0 := rssMiB()
	// "none" is a bare forwarding namespace: no table, so the kernel does not
	// even track connections there. "0 policies" is what an amime node runs
	// when no NetworkPolicy exists: the controller's table with its base
	// chains and empty maps (connection tracking on, as the Service proxy
	// also needs it on every node). The issue's "with and without the
	// policies" compares the last two conditions with the second.
	conds := []condition{
		{"no table", func() (*policy.Controller, error) { return nil, nil }},
		{"0 policies", func() (*policy.Controller, error) { return program(0, 0, false) }},
		{"10 policies / 50 pods", func() (*policy.Controller, error) { return program(10, 50, true) }},
		{fmt.Sprintf("%d policies / %d pods", nPol, nPod), func() (*policy.Controller, error) { return program(nPol, nPod, true) }},
	}
	rates := make([][]float64, len(conds))
	var st policy.Status
	var rss float64
	for r := 0; r < rounds; r++ {
		line := fmt.Sprintf("round %d:", r+1)
		for i, cond := range conds {
			if err := deleteTable(); err != nil && (r > 0 || i > 0) {
				return err
			}
			start := time.Now()
			c, err := cond.setup()
			if err != nil {
				return fmt.Errorf("%s: %w", cond.name, err)
			}
			took := time.Since(start)
			if i == len(conds)-1 {
				runtime.GC()
				st, rss = c.Status(), rssMiB()
			}
			if i >= 2 && !blocked() {
				return fmt.Errorf("%s: the client reached the server on a port no policy allows: the table is not in the path", cond.name)
			}
			v, err := rate(dur)
			if err != nil {
				return err
			}
			rates[i] = append(rates[i], v)
			line += fmt.Sprintf(" %s %.0f/s", cond.name, v)
			if c != nil {
				line += fmt.Sprintf(" (synced in %v)", took.Round(time.Millisecond))
			}
			line += ";"
			runtime.KeepAlive(c)
		}
		fmt.Println(strings.TrimSuffix(line, ";"))
	}
	_ = deleteTable()
	fmt.Printf("\nnew connections/s (wrk -t1 -c16, Connection: close, %d s each, %d rounds; medians; ratios are medians of the per-round ratios):\n", dur, rounds)
	for i, cond := range conds {
		fmt.Printf("  %-28s %8.0f/s", cond.name, median(rates[i]))
		if i >= 1 {
			fmt.Printf("   vs 0 policies %.3f", medianRatio(rates[i], rates[1]))
			fmt.Printf("   vs no table %.3f", medianRatio(rates[i], rates[0]))
		}
		fmt.Println()
	}
	fmt.Printf("large table: %d policies, %d isolated pods, %d groups\n", st.Policies, st.ProgrammedPods, st.Groups)
	fmt.Printf("RSS of this process (objects as listers hold them + controller state + Go runtime): %.0f MiB before, %.0f MiB after the large sync\n", rss0, rss)
	return nil
}

// medianRatio is the median over rounds of a[r]/b[r]: each round measures
// every condition within a minute, so its ratio is free of the slow drift of
// the shared machine's load that medians taken apart would keep.
func medianRatio(a, b []float64) float64 {
	var q []float64
	for r := range a {
		if b[r] > 0 {
			q = append(q, a[r]/b[r])
		}
	}
	if len(q) == 0 {
		return 0
	}
	return median(q)
}
