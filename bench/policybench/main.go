// Command policybench measures how fast the policy controller computes and
// programs a node's NetworkPolicy rules: a full sync from scratch, then the
// partial sync of one changed policy, at a small scale (the baseline) and at
// a large one in the same run. It feeds the pure code straight from memory (no
// apiserver) and programs real nftables in a throwaway network namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/policy"
)

func main() {
	pols := flag.Int("policies", 1000, "policies in the large run")
	pods := flag.Int("pods", 5000, "pods in the large run")
	nodes := flag.Int("nodes", 50, "nodes the pods are spread over (the measured node has pods/nodes)")
	flag.Parse()
	ns := "amime-bench-policy"
	_ = netns.Delete(ns)
	if err := netns.Add(ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer netns.Delete(ns)
	err := netns.Do(netns.Path(ns), func() error {
		for _, sc := range [][2]int{{10, 50}, {*pols, *pods}} {
			if err := measure(sc[0], sc[1], *nodes); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// model: pods in 50 namespaces with app and tier labels; each policy selects
// one app in its namespace and allows, on every port, another app from a
// namespace selector OR an ipBlock with an except.
func model(nPol, nPod, nodes int) ([]*policy.Pod, map[string]map[string]string, []*networkingv1.NetworkPolicy) {
	nss := map[string]map[string]string{}
	var pods []*policy.Pod
	for i := 0; i < nPod; i++ {
		n := fmt.Sprintf("ns-%d", i%50)
		nss[n] = map[string]string{"team": fmt.Sprintf("t%d", i%7)}
		pods = append(pods, &policy.Pod{Namespace: n, Name: fmt.Sprintf("p-%d", i), Node: fmt.Sprintf("node-%d", i%nodes),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%97), "tier": fmt.Sprintf("tier-%d", i%3)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}})
	}
	var nps []*networkingv1.NetworkPolicy
	for i := 0; i < nPol; i++ {
		nps = append(nps, bigPolicy(i, fmt.Sprintf("app-%d", (i+1)%97)))
	}
	return pods, nss, nps
}

func bigPolicy(i int, from string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("np-%d", i)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%97)}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%7)}},
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": from}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}},
				},
			}},
		},
	}
}

func measure(nPol, nPod, nodes int) error {
	ctx := context.Background()
	pods, nss, nps := model(nPol, nPod, nodes)
	nft, err := knftables.New(knftables.InetFamily, policy.Table)
	if err != nil {
		return err
	}
	_ = policy.DeleteTable(ctx, nft)
	defer policy.DeleteTable(ctx, nft)
	// All pods are on node-0, in one range (a node's range is smaller; the
	// known-address set holds every local pod either way).
	cfg := policy.RenderConfig{NodeName: "node-0", LogGroup: policy.DefaultLogGroup, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}
	dp := policy.NewDataplane(nft, policy.DefaultLogGroup)
	runtime.GC()
	// The controller's cache: the full sync computes everything, the next
	// one reuses what the changed policy did not touch.
	var cache policy.Cache
	start := time.Now()
	s := cache.Snapshot(pods, nss, nps)
	d := policy.Render(s, cfg, nil)
	compute := time.Since(start)
	_, ops, err := dp.Apply(ctx, d)
	if err != nil {
		return err
	}
	full := time.Since(start)
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	// One changed policy: np-0 now allows another app (a new object, as
	// informers deliver it). Repeated, alternating, to take a median.
	var ones, computes []time.Duration
	var ops2 int
	for i := 0; i < 7; i++ {
		from := "app-50"
		if i%2 == 1 {
			from = "app-1"
		}
		nps[0] = bigPolicy(0, from)
		start = time.Now()
		s = cache.Snapshot(pods, nss, nps)
		d2 := policy.Render(s, cfg, nil)
		computes = append(computes, time.Since(start))
		if _, ops2, err = dp.Apply(ctx, d2); err != nil {
			return err
		}
		ones = append(ones, time.Since(start))
		// The same change computed afresh must give the same table.
		if fresh := policy.Render(policy.NewSnapshot(pods, nss, nps), cfg, nil); !reflect.DeepEqual(fresh.Verdicts, d2.Verdicts) || !reflect.DeepEqual(fresh.Chains, d2.Chains) {
			return fmt.Errorf("incremental render differs from a fresh one")
		}
	}
	slices.Sort(ones)
	slices.Sort(computes)
	one, compute2 := ones[len(ones)/2], computes[len(computes)/2]
	fmt.Printf("policies=%d pods=%d node-pods=%d isolated=%d groups=%d: full sync %v (compute %v, %d ops); one changed policy median of 7 %v (compute %v, %d ops; max %v); heap after full sync %.1f MiB\n",
		nPol, nPod, nPod/nodes, d.Pods, len(d.Chains), full.Round(time.Millisecond), compute.Round(time.Millisecond), ops, one.Round(time.Millisecond), compute2.Round(100*time.Microsecond), ops2, ones[len(ones)-1].Round(time.Millisecond),
		float64(m1.HeapAlloc)/(1<<20))
	return nil
}
