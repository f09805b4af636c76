// Command cnibench measures CNI ADD latency of the amime plugin over many pods,
// called through libcni as a runtime does, with Debian's bridge + host-local
// plugins measured in the same run as the baseline. Everything happens in
// throwaway network namespaces named amime-bench-cni-*.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/containernetworking/cni/libcni"

	"amime.dev/amime/internal/netns"
)

func main() {
	bin := flag.String("amime", "bin/amime", "amime binary (the plugin)")
	n := flag.Int("pods", 200, "ADDs per plugin")
	flag.Parse()
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		os.Exit(1)
	}
}

func run(bin string, n int) error {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "cnibench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	binDir := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	if err := os.Symlink(abs, filepath.Join(binDir, "amime")); err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, "/usr/lib/cni"}, filepath.Join(tmp, "cache"), nil)
	configs := []struct{ name, conf string }{
		{"amime", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bench-amime","plugins":[{"type":"amime","podCIDRs":["10.251.0.0/16"],"mtu":1450,"dataDir":%q}]}`, filepath.Join(tmp, "ipam"))},
		{"bridge+host-local (baseline)", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench-bridge","plugins":[{"type":"bridge","bridge":"benchbr0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.252.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(tmp, "hl"))},
	}
	node := "amime-bench-cni-node"
	_ = netns.Delete(node)
	if err := netns.Add(node); err != nil {
		return err
	}
	defer netns.Delete(node)
	results := map[string][]time.Duration{}
	for ci, c := range configs {
		list, err := libcni.ConfListFromBytes([]byte(c.conf))
		if err != nil {
			return err
		}
		var pods []string
		for i := 0; i < n; i++ {
			pod := fmt.Sprintf("amime-bench-cni-%d-%d", ci, i)
			_ = netns.Delete(pod)
			if err := netns.Add(pod); err != nil {
				return err
			}
			pods = append(pods, pod)
			rt := &libcni.RuntimeConf{ContainerID: pod, NetNS: netns.Path(pod), IfName: "eth0"}
			var d time.Duration
			err := netns.Do(netns.Path(node), func() error {
				start := time.Now()
				_, err := cni.AddNetworkList(context.Background(), list, rt)
				d = time.Since(start)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s ADD %d: %w", c.name, i, err)
			}
			results[c.name] = append(results[c.name], d)
		}
		for _, pod := range pods {
			rt := &libcni.RuntimeConf{ContainerID: pod, NetNS: netns.Path(pod), IfName: "eth0"}
			_ = netns.Do(netns.Path(node), func() error { return cni.DelNetworkList(context.Background(), list, rt) })
			_ = netns.Delete(pod)
		}
	}
	fmt.Printf("CNI ADD latency over %d pods each, through libcni, one at a time:\n", n)
	var base []time.Duration
	for _, c := range configs {
		r := results[c.name]
		sort.Slice(r, func(i, j int) bool { return r[i] < r[j] })
		fmt.Printf("  %-30s p50 %6.1f ms   p99 %6.1f ms\n", c.name, ms(pct(r, 50)), ms(pct(r, 99)))
		if base == nil && c.name != "amime" {
			base = r
		}
	}
	a := results["amime"]
	fmt.Printf("  ratio amime/baseline: p50 %.2f, p99 %.2f (target: amime p99 < 50 ms)\n", ms(pct(a, 50))/ms(pct(base, 50)), ms(pct(a, 99))/ms(pct(base, 99)))
	return nil
}

func pct(v []time.Duration, p int) time.Duration { return v[(len(v)-1)*p/100] }
func ms(d time.Duration) float64                 { return float64(d.Microseconds()) / 1000 }
