// Command proxydp measures the Service proxy's packet path: the rate of new TCP
// connections (one HTTP request each) from a client to a ClusterIP with 10,
// 1,000 and 10,000 other Services installed, against the same server addressed
// directly, and beside it the same for a kube-proxy-style iptables ruleset (one
// KUBE-SERVICES rule per Service, then KUBE-SVC and KUBE-SEP chains) in the same
// run. Three throwaway namespaces: client — node (the proxy) — server.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/proxy"
)

const (
	client, node, server = "amime-bench-dp-c", "amime-bench-dp-n", "amime-bench-dp-s"
	serverIP             = "10.250.2.2"
	targetIP             = "10.96.255.250" // the ClusterIP under test
)

func main() {
	podBin := flag.String("amime-pod", "bin/amime-pod", "amime-pod binary (the server)")
	dur := flag.Int("duration", 5, "seconds per measurement")
	flag.Parse()
	if err := run(*podBin, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "proxydp:", err)
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
		{"ip", "link", "add", "bdp-c", "netns", client, "type", "veth", "peer", "name", "bdp-nc", "netns", node},
		{"ip", "link", "add", "bdp-s", "netns", server, "type", "veth", "peer", "name", "bdp-ns", "netns", node},
		{"ip", "-n", client, "addr", "add", "10.250.1.2/24", "dev", "bdp-c"},
		{"ip", "-n", node, "addr", "add", "10.250.1.1/24", "dev", "bdp-nc"},
		{"ip", "-n", node, "addr", "add", "10.250.2.1/24", "dev", "bdp-ns"},
		{"ip", "-n", server, "addr", "add", serverIP + "/24", "dev", "bdp-s"},
		{"ip", "-n", client, "link", "set", "bdp-c", "up"},
		{"ip", "-n", node, "link", "set", "bdp-nc", "up"},
		{"ip", "-n", node, "link", "set", "bdp-ns", "up"},
		{"ip", "-n", server, "link", "set", "bdp-s", "up"},
		{"ip", "-n", client, "route", "add", "default", "via", "10.250.1.1"},
		{"ip", "-n", server, "route", "add", "default", "via", "10.250.2.1"},
		{"ip", "-n", node, "route", "add", "10.96.0.0/16", "dev", "bdp-ns"},
		{"ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// Hundreds of thousands of short connections: without these, TIME_WAIT
		// sockets from one measurement make the next stall on reused ports.
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

// services returns n Services: the last one is the target, the others point at
// endpoints that do not exist (they are never hit).
func services(n int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%d", i)
		ip, ep := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), fmt.Sprintf("10.251.%d.%d", i/250, i%250+1)
		if i == n-1 {
			ip, ep = targetIP, serverIP
		}
		svcs = append(svcs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: name, ResourceVersion: "1"},
			Spec:       corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		})
		port, proto, ready := int32(8080), corev1.ProtocolTCP, true
		slices = append(slices, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "b", Name: name + "-x", ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: &port, Protocol: &proto}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ep}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		})
	}
	return svcs, slices
}

func ptr[T any](v T) *T { return &v }

// programAmime programs the proxy table in the node namespace.
func programAmime(n int) error {
	svcIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	sliceIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	svcs, slices := services(n)
	for i := range svcs {
		_ = svcIdx.Add(svcs[i])
		_ = sliceIdx.Add(slices[i])
	}
	nft, err := knftables.New(knftables.InetFamily, proxy.Table)
	if err != nil {
		return err
	}
	// The client's subnet stands for the pod range: pod-to-Service traffic keeps
	// its source address (no masquerade), as in a cluster.
	p := proxy.NewProxier(proxy.Config{NodeName: "n", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.1.0/24")}}, nft, corelisters.NewServiceLister(svcIdx), discoverylisters.NewEndpointSliceLister(sliceIdx),
		nil, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	return netns.Do(netns.Path(node), func() error {
		_ = proxy.DeleteTable(context.Background(), nft)
		return p.Sync(context.Background())
	})
}

// programIPTables writes a kube-proxy-style ruleset (iptables-legacy) for n
// Services, the target last in KUBE-SERVICES as the worst case of a linear scan.
func programIPTables(n int) error {
	svcs, slices := services(n)
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n")
	for i := range svcs {
		fmt.Fprintf(&b, ":KUBE-SVC-%d - [0:0]\n:KUBE-SEP-%d - [0:0]\n", i, i)
	}
	b.WriteString("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	for i, s := range svcs {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"b/%s:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-%d\n", s.Spec.ClusterIP, s.Name, i)
		fmt.Fprintf(&b, "-A KUBE-SVC-%d -m comment --comment \"b/%s:http -> %s:8080\" -j KUBE-SEP-%d\n", i, s.Name, slices[i].Endpoints[0].Addresses[0], i)
		fmt.Fprintf(&b, "-A KUBE-SEP-%d -p tcp -m tcp -j DNAT --to-destination %s:8080\n", i, slices[i].Endpoints[0].Addresses[0])
	}
	b.WriteString("COMMIT\n")
	f := filepath.Join(os.TempDir(), "proxydp-iptables.rules")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		return err
	}
	defer os.Remove(f)
	return sh("ip", "netns", "exec", node, "sh", "-c", "iptables-legacy-restore < "+f)
}

func clearIPTables() error {
	return sh("ip", "netns", "exec", node, "sh", "-c", "iptables-legacy -t nat -F && iptables-legacy -t nat -X")
}

// rate runs wrk with a new connection per request and returns requests/s. The
// node's conntrack table is flushed first, so that one measurement's TIME_WAIT
// entries do not weigh on the next.
func rate(target string, dur int) (float64, error) {
	_ = sh("ip", "netns", "exec", node, "conntrack", "-F")
	time.Sleep(200 * time.Millisecond)
	out, err := exec.Command("ip", "netns", "exec", client, "wrk", "-t1", "-c16", fmt.Sprintf("-d%ds", dur),
		"-H", "Connection: close", "http://"+target+"/").CombinedOutput()
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

func median3(f func() (float64, error)) (float64, error) {
	var v []float64
	for i := 0; i < 3; i++ {
		r, err := f()
		if err != nil {
			return 0, err
		}
		v = append(v, r)
	}
	sort.Float64s(v)
	return v[1], nil
}

func run(podBin string, dur int) error {
	defer teardown()
	if err := setup(); err != nil {
		return err
	}
	var srv *exec.Cmd
	startServer := func() error {
		if srv != nil {
			_ = srv.Process.Kill()
			_ = srv.Wait()
		}
		srv = exec.Command("ip", "netns", "exec", server, podBin, "workload", "netexec", "--http-port=8080", "--udp-port=-1")
		if err := srv.Start(); err != nil {
			return err
		}
		time.Sleep(time.Second)
		return nil
	}
	defer func() {
		if srv != nil {
			_ = srv.Process.Kill()
			_ = srv.Wait()
		}
	}()
	if err := startServer(); err != nil {
		return err
	}
	fmt.Printf("new connections/s (wrk, 16 connections, Connection: close, %d s each; median of 3)\n", dur)
	// amime first; the iptables rulesets get namespaces of their own afterwards,
	// because a legacy iptables nat table stays registered once loaded and would
	// skew every later nftables measurement.
	type row struct{ direct, amime, iptDirect, ipt float64 }
	rows := map[int]*row{}
	sizes := []int{10, 1000, 10000}
	for _, n := range sizes {
		if err := programAmime(n); err != nil {
			return err
		}
		r := &row{}
		rows[n] = r
		var err error
		// The baseline: the same server by its own address, with the proxy table
		// (and so connection tracking) in place.
		if r.direct, err = median3(func() (float64, error) { return rate(serverIP+":8080", dur) }); err != nil {
			return err
		}
		if r.amime, err = median3(func() (float64, error) { return rate(targetIP, dur) }); err != nil {
			return err
		}
	}
	for _, n := range sizes {
		teardown()
		if err := setup(); err != nil {
			return err
		}
		if err := startServer(); err != nil {
			return err
		}
		if err := programIPTables(n); err != nil {
			return err
		}
		r := rows[n]
		var err error
		if r.iptDirect, err = median3(func() (float64, error) { return rate(serverIP+":8080", dur) }); err != nil {
			return err
		}
		if r.ipt, err = median3(func() (float64, error) { return rate(targetIP, dur) }); err != nil {
			return err
		}
	}
	for _, n := range sizes {
		r := rows[n]
		fmt.Printf("  %5d Services: amime ClusterIP %7.0f vs pod IP %7.0f (%.2f×), %.2f× amime at 10 | iptables kube-proxy style %7.0f vs pod IP %7.0f (%.2f×)\n",
			n, r.amime, r.direct, r.amime/r.direct, r.amime/rows[10].amime, r.ipt, r.iptDirect, r.ipt/r.iptDirect)
	}
	return nil
}
