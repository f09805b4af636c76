// Command cnibench measures CNI ADD latency of the amime plugin over many pods,
// called through libcni as a runtime does, with Debian's bridge + host-local
// plugins measured in the same run as the baseline. Everything happens in
// throwaway network namespaces named amime-bench-cni-*.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"amime.dev/amime/internal/netns"
)

func main() {
	bin := flag.String("amime", "bin/amime-cni", "the amime plugin binary (what the agent installs)")
	full := flag.String("full", "", "also measure this binary as the plugin (the full amime binary, for reference)")
	n := flag.Int("pods", 200, "ADDs per plugin, one at a time")
	burst := flag.Int("burst", 100, "then ADDs started at once per plugin, as a node starting many pods (0: none)")
	rounds := flag.Int("burst-rounds", 3, "bursts per plugin, plugins alternating")
	flag.Parse()
	if err := run(*bin, *full, *n, *burst, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		os.Exit(1)
	}
}

// plugin is one configuration under test, with its own plugin directory so
// that two binaries can both be "type": "amime".
type plugin struct {
	name, conf string
	cni        *libcni.CNIConfig
	list       *libcni.NetworkConfigList
	pods       []string
	took       []time.Duration
	// burst: every ADD's latency over all bursts, and each burst's duration
	burst, walls []time.Duration
}

func run(bin, full string, n, burst, rounds int) error {
	tmp, err := os.MkdirTemp("", "cnibench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// withBin is a plugin directory holding bin as "amime" (none for the baseline).
	withBin := func(name, bin string) (*libcni.CNIConfig, error) {
		dirs := []string{"/usr/lib/cni"}
		if bin != "" {
			abs, err := filepath.Abs(bin)
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(abs); err != nil {
				return nil, fmt.Errorf("plugin binary: %w (run make build)", err)
			}
			dir := filepath.Join(tmp, "bin-"+name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			if err := os.Symlink(abs, filepath.Join(dir, "amime")); err != nil {
				return nil, err
			}
			dirs = append([]string{dir}, dirs...)
		}
		return libcni.NewCNIConfigWithCacheDir(dirs, filepath.Join(tmp, "cache-"+name), nil), nil
	}
	amimeConf := func(name, cidr string) string {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bench-%s","plugins":[{"type":"amime","podCIDRs":[%q],"mtu":1450,"dataDir":%q}]}`, name, cidr, filepath.Join(tmp, "ipam-"+name))
	}
	plugins := []*plugin{
		{name: "amime", conf: amimeConf("amime", "10.251.0.0/16")},
		{name: "bridge+host-local (baseline)", conf: fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench-bridge","plugins":[{"type":"bridge","bridge":"benchbr0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.252.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(tmp, "hl"))},
	}
	bins := []string{bin, ""}
	if full != "" {
		plugins = append(plugins, &plugin{name: "amime, full binary", conf: amimeConf("full", "10.253.0.0/16")})
		bins = append(bins, full)
	}
	for i, p := range plugins {
		if p.cni, err = withBin(fmt.Sprint(i), bins[i]); err != nil {
			return err
		}
		if p.list, err = libcni.ConfListFromBytes([]byte(p.conf)); err != nil {
			return err
		}
	}
	node := "amime-bench-cni-node"
	_ = netns.Delete(node)
	if err := netns.Add(node); err != nil {
		return err
	}
	defer netns.Delete(node)
	defer func() {
		for _, p := range plugins {
			for _, pod := range p.pods {
				rt := &libcni.RuntimeConf{ContainerID: pod, NetNS: netns.Path(pod), IfName: "eth0"}
				_ = netns.Do(netns.Path(node), func() error { return p.cni.DelNetworkList(context.Background(), p.list, rt) })
				_ = netns.Delete(pod)
			}
		}
	}()
	// Interleaved: pod i of every plugin, then pod i+1, so that the machine's
	// load drifts over all of them alike.
	for i := 0; i < n; i++ {
		for pi, p := range plugins {
			pod := fmt.Sprintf("amime-bench-cni-%d-%d", pi, i)
			if err := p.newPod(pod); err != nil {
				return err
			}
			d, err := p.add(pod, node)
			if err != nil {
				return fmt.Errorf("%s ADD %d: %w", p.name, i, err)
			}
			p.took = append(p.took, d)
		}
	}
	fmt.Printf("CNI ADD latency over %d pods each, through libcni, one at a time (plugins interleaved):\n", n)
	for _, p := range plugins {
		sort.Slice(p.took, func(i, j int) bool { return p.took[i] < p.took[j] })
		fmt.Printf("  %-30s p50 %6.1f ms   p99 %6.1f ms\n", p.name, ms(pct(p.took, 50)), ms(pct(p.took, 99)))
	}
	a, base := plugins[0].took, plugins[1].took
	fmt.Printf("  ratio amime/baseline: p50 %.2f, p99 %.2f (target: amime p99 < 50 ms)\n", ms(pct(a, 50))/ms(pct(base, 50)), ms(pct(a, 99))/ms(pct(base, 99)))
	if burst == 0 {
		return nil
	}
	for r := range rounds {
		for k := range plugins {
			// Rotate which plugin goes first from round to round.
			pi := (k + r) % len(plugins)
			if err := runBurst(plugins[pi], pi, r, burst, node); err != nil {
				return err
			}
		}
	}
	fmt.Printf("CNI ADD latency in bursts of %d ADDs started at once, %d bursts per plugin (plugins alternating):\n", burst, rounds)
	for _, p := range plugins {
		sort.Slice(p.burst, func(i, j int) bool { return p.burst[i] < p.burst[j] })
		sort.Slice(p.walls, func(i, j int) bool { return p.walls[i] < p.walls[j] })
		fmt.Printf("  %-30s p50 %6.1f ms   p99 %6.1f ms   burst done in %6.0f ms (median)\n", p.name, ms(pct(p.burst, 50)), ms(pct(p.burst, 99)), ms(pct(p.walls, 50)))
	}
	a, base = plugins[0].burst, plugins[1].burst
	fmt.Printf("  ratio amime/baseline: p50 %.2f, p99 %.2f, burst duration %.2f\n", ms(pct(a, 50))/ms(pct(base, 50)), ms(pct(a, 99))/ms(pct(base, 99)),
		ms(pct(plugins[0].walls, 50))/ms(pct(plugins[1].walls, 50)))
	return nil
}

// newPod makes a fresh namespace for pod, which the deferred clean-up of run
// deletes with the plugin's DEL.
func (p *plugin) newPod(pod string) error {
	_ = netns.Delete(pod)
	if err := netns.Add(pod); err != nil {
		return err
	}
	p.pods = append(p.pods, pod)
	return nil
}

// add runs the plugin's ADD for pod from the node's namespace, as a runtime
// does, and times it.
func (p *plugin) add(pod, node string) (time.Duration, error) {
	rt := &libcni.RuntimeConf{ContainerID: pod, NetNS: netns.Path(pod), IfName: "eth0"}
	var took time.Duration
	err := netns.Do(netns.Path(node), func() error {
		start := time.Now()
		_, err := p.cni.AddNetworkList(context.Background(), p.list, rt)
		took = time.Since(start)
		return err
	})
	return took, err
}

// runBurst starts n ADDs of plugin p at once, each for its own pod namespace
// (made beforehand), and records their latencies and the burst's duration.
func runBurst(p *plugin, pi, round, n int, node string) error {
	pods := make([]string, n)
	for i := range pods {
		pods[i] = fmt.Sprintf("amime-bench-cni-%d-b%d-%d", pi, round, i)
		if err := p.newPod(pods[i]); err != nil {
			return err
		}
	}
	took := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, pod := range pods {
		wg.Go(func() { took[i], errs[i] = p.add(pod, node) })
	}
	wg.Wait()
	p.walls = append(p.walls, time.Since(start))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s burst %d: %w", p.name, round, err)
	}
	p.burst = append(p.burst, took...)
	return nil
}

func pct(v []time.Duration, p int) time.Duration { return v[(len(v)-1)*p/100] }
func ms(d time.Duration) float64                 { return float64(d.Microseconds()) / 1000 }
