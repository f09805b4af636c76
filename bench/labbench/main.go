// Command labbench measures the lab: time from `amime lab up` to all nodes Ready,
// pod start latency (create → Ready) over many pods, and the memory of an idle
// lab. Each figure comes with a baseline measured in the same run (see
// bench/RESULTS.md), because the machine is shared and only ratios are stable.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"amime.dev/amime/internal/proc"
)

func main() {
	bin := flag.String("amime", "bin/amime", "amime binary")
	rounds := flag.Int("up-rounds", 3, "lab up measurements")
	pods := flag.Int("pods", 100, "pods for the start latency measurement")
	parallel := flag.Int("parallel", 10, "pods in flight (created and not yet Ready) at once; 1 measures latency without load")
	kubeconfig := flag.String("kubeconfig", "", "only measure pod start, on the running lab of this kubeconfig")
	flag.Parse()
	if *kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err == nil {
			cfg.QPS, cfg.Burst = 200, 400
			var sched, ready []float64
			sched, ready, err = podStart(kubernetes.NewForConfigOrDie(cfg), *pods, *parallel)
			if err == nil {
				report(*pods, *parallel, sched, ready)
				return
			}
		}
		fmt.Fprintln(os.Stderr, "labbench:", err)
		os.Exit(1)
	}
	if err := run(*bin, *rounds, *pods, *parallel); err != nil {
		fmt.Fprintln(os.Stderr, "labbench:", err)
		os.Exit(1)
	}
}

var labFlags = []string{"--name", "bench"}
var upFlags = []string{"--nodes", "3", "--pod-cidr", "10.249.0.0/16", "--pod-cidr-v6", "fd00:10:249::/56", "--underlay", "172.30.7.0/24", "--underlay-v6", "fd00:a:e7::/64", "--etcd-port", "12679"}

func amime(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("amime %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var stepRE = regexp.MustCompile(`\[(\d)/7\] ([^.]+) \.\.\. done \(([\d.]+)s\)`)

func run(bin string, rounds, npods, parallel int) error {
	down := func() { _, _ = amime(bin, append([]string{"lab", "down"}, labFlags...)...) }
	down()
	defer down()
	var total, controlPlane []float64
	for i := 0; i < rounds; i++ {
		if i > 0 {
			down()
		}
		start := time.Now()
		out, err := amime(bin, append(append([]string{"lab", "up"}, labFlags...), upFlags...)...)
		if err != nil {
			return err
		}
		total = append(total, time.Since(start).Seconds())
		cp := 0.0
		for _, m := range stepRE.FindAllStringSubmatch(out, -1) {
			if m[1] == "3" || m[1] == "4" { // etcd, kube-apiserver
				v, _ := strconv.ParseFloat(m[3], 64)
				cp += v
			}
		}
		controlPlane = append(controlPlane, cp)
	}
	fmt.Printf("lab up → 3 nodes Ready: %s s (median of %d: %.2f s)\n", floats(total), rounds, median(total))
	fmt.Printf("  baseline, etcd + kube-apiserver ready within it: %s s (median %.2f s); ratio total/baseline %.2f\n",
		floats(controlPlane), median(controlPlane), median(total)/median(controlPlane))

	kc := "/var/lib/amime-lab/bench/kubeconfig"
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)

	// Memory of the idle lab, after the controllers settled.
	time.Sleep(20 * time.Second)
	cpRSS, nodeRSS, err := labRSS("/var/lib/amime-lab/bench/run")
	if err != nil {
		return err
	}
	fmt.Printf("idle lab memory (RSS): control plane %.0f MiB, 3 node runtimes %.0f MiB, total %.0f MiB; node runtimes / control plane %.3f\n",
		cpRSS, nodeRSS, cpRSS+nodeRSS, nodeRSS/cpRSS)

	for _, inflight := range []int{1, parallel} {
		sched, ready, err := podStart(cs, npods, inflight)
		if err != nil {
			return err
		}
		report(npods, inflight, sched, ready)
	}
	_, nodeRSSLoaded, _ := labRSS("/var/lib/amime-lab/bench/run")
	fmt.Printf("node runtimes with %d pods: %.0f MiB RSS\n", npods, nodeRSSLoaded)
	return nil
}

func report(npods, parallel int, sched, ready []float64) {
	fmt.Printf("pod start over %d pods (%d in flight at once): create → Ready p50 %.0f ms, p99 %.0f ms\n", npods, parallel, pct(ready, 50), pct(ready, 99))
	fmt.Printf("  baseline, create → scheduled (control plane only): p50 %.0f ms, p99 %.0f ms; ratio of p50 %.2f, of p99 %.2f\n",
		pct(sched, 50), pct(sched, 99), pct(ready, 50)/pct(sched, 50), pct(ready, 99)/pct(sched, 99))
}

// labRSS sums the resident memory of the control plane and of the node runtimes.
func labRSS(runDir string) (cp, nodes float64, err error) {
	files, err := filepath.Glob(filepath.Join(runDir, "*.pid"))
	if err != nil {
		return 0, 0, err
	}
	for _, f := range files {
		r, err := proc.ReadFile(f)
		if err != nil || !r.Alive() {
			continue
		}
		mib := rssMiB(r.Pid)
		if strings.Contains(filepath.Base(f), "-node-") {
			nodes += mib
		} else {
			cp += mib
		}
	}
	return cp, nodes, nil
}

func rssMiB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(sc.Text())[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// podStart creates pods and records, per pod, when the watch saw it scheduled and
// when it saw it Ready, relative to the moment its create call was sent.
func podStart(cs *kubernetes.Clientset, n, parallel int) (sched, ready []float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := fmt.Sprintf("podstart-%d", parallel)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, nil, err
	}
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	created := map[string]time.Time{}
	schedAt := map[string]time.Time{}
	readyAt := map[string]time.Time{}
	done := make(chan struct{})
	sem := make(chan struct{}, parallel)
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			now := time.Now()
			mu.Lock()
			if _, ok := schedAt[p.Name]; !ok && p.Spec.NodeName != "" {
				schedAt[p.Name] = now
			}
			if _, ok := readyAt[p.Name]; !ok {
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						readyAt[p.Name] = now
						<-sem // one more pod may start
					}
				}
			}
			finished := len(readyAt) == n
			mu.Unlock()
			if finished {
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		go func(i int) {
			name := fmt.Sprintf("p%03d", i)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64),
					Containers:                    []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
				},
			}
			mu.Lock()
			created[name] = time.Now()
			mu.Unlock()
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				fmt.Fprintln(os.Stderr, "create:", err)
			}
		}(i)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("pods not Ready in time: %d of %d", len(readyAt), n)
	}
	w.Stop()
	for name, c := range created {
		sched = append(sched, float64(schedAt[name].Sub(c).Milliseconds()))
		ready = append(ready, float64(readyAt[name].Sub(c).Milliseconds()))
	}
	_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	return sched, ready, nil
}

func pct(v []float64, p float64) float64 {
	s := append([]float64{}, v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func median(v []float64) float64 { return pct(v, 50) }

func floats(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = strconv.FormatFloat(f, 'f', 2, 64)
	}
	return strings.Join(s, ", ")
}
