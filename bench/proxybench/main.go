// Command proxybench measures how fast the Service proxy programs the kernel:
// a full sync of N Services × E endpoints, then the sync of one endpoint
// change, at a small and at a large N in the same run (the small one is the
// baseline: the claim is that cost does not grow with the number of Services).
// It feeds the proxy's sync straight from in-memory listers (no apiserver) and
// programs real nftables in a throwaway network namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
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

func main() {
	small := flag.Int("small", 10, "Services in the baseline run")
	large := flag.Int("services", 10000, "Services in the large run")
	eps := flag.Int("endpoints", 10, "endpoints per Service")
	backend := flag.String("backend", "netlink", "how the proxy programs the kernel: netlink (as the agent does) or nft (the nft binary)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the large run here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ns := "amime-bench-proxy"
	_ = netns.Delete(ns)
	if err := netns.Add(ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer netns.Delete(ns)
	fmt.Printf("proxy programming through %s, %d endpoints per Service, real nftables in a throwaway namespace\n", *backend, *eps)
	var base result
	for i, n := range []int{*small, *large} {
		r, err := measure(ns, n, *eps, *backend == "netlink")
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxybench:", err)
			os.Exit(1)
		}
		fmt.Printf("  %6d Services: full sync %8.1f ms, one endpoint change %6.1f ms (transaction of %d operations), heap %5.0f MiB, RSS %5.0f MiB\n",
			n, ms(r.full), ms(r.change), r.ops, r.heapMiB, r.rssMiB)
		if i == 0 {
			base = r
		} else {
			fmt.Printf("  ratio %d / %d Services: full sync %.1f, one change %.2f\n", n, *small, ms(r.full)/ms(base.full), ms(r.change)/ms(base.change))
		}
	}
}

type result struct {
	full, change    time.Duration
	ops             int
	heapMiB, rssMiB float64
}

// countingNFT prints the small transactions that go through the nft binary, and
// how long each took, when PROXYBENCH_DUMP is set (with -backend netlink only
// the static part of a full sync does).
type countingNFT struct {
	knftables.Interface
	last int
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.last = tx.NumOperations()
	if os.Getenv("PROXYBENCH_DUMP") != "" && c.last < 50 {
		fmt.Fprintln(os.Stderr, tx.String())
	}
	start := time.Now()
	err := c.Interface.Run(ctx, tx)
	if os.Getenv("PROXYBENCH_DUMP") != "" {
		fmt.Fprintf(os.Stderr, "nft run of %d operations: %s\n", c.last, time.Since(start))
	}
	return err
}

func measure(ns string, n, eps int, useNetlink bool) (result, error) {
	var r result
	svcIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	sliceIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%d", i)
		ip := fmt.Sprintf("10.96.%d.%d", (i/250)%250, i%250+1)
		if i >= 62500 {
			return r, fmt.Errorf("too many Services for the address plan")
		}
		_ = svcIdx.Add(&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name, ResourceVersion: "1"},
			Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Type: corev1.ServiceTypeClusterIP,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		})
		_ = sliceIdx.Add(slice(name, i, eps, 0))
	}
	nft, err := knftables.New(knftables.InetFamily, proxy.Table)
	if err != nil {
		return r, err
	}
	c := &countingNFT{Interface: nft}
	p := proxy.NewProxier(proxy.Config{NodeName: "bench-node"}, c, corelisters.NewServiceLister(svcIdx),
		discoverylisters.NewEndpointSliceLister(sliceIdx), nil, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if useNetlink {
		p.UseNetlink()
	}
	ctx := context.Background()
	err = netns.Do(netns.Path(ns), func() error {
		// Start from an empty table, as a new node would.
		_ = proxy.DeleteTable(ctx, nft)
		start := time.Now()
		if err := p.Sync(ctx); err != nil {
			return err
		}
		r.full = time.Since(start)
		// One endpoint of one Service changes.
		_ = sliceIdx.Update(slice("svc-0", 0, eps, 1))
		start = time.Now()
		if err := p.Sync(ctx); err != nil {
			return err
		}
		r.change = time.Since(start)
		r.ops = p.LastSyncOperations()
		return proxy.DeleteTable(ctx, nft)
	})
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	r.heapMiB = float64(m.HeapAlloc) / (1 << 20)
	r.rssMiB = rss()
	return r, err
}

func slice(svc string, i, eps, gen int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: svc + "-abc", ResourceVersion: fmt.Sprint(gen + 1), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for e := 0; e < eps; e++ {
		ip := fmt.Sprintf("10.%d.%d.%d", 128+(i/250)%100, i%250, e+1+gen)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func rss() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb float64
			fmt.Sscanf(strings.TrimPrefix(l, "VmRSS:"), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
