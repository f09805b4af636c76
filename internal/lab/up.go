package lab

import (
	"amime.dev/amime/internal/atomicfile"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Lab is a lab on this machine, described by its configuration and found through
// its state directory.
type Lab struct {
	Config
	// Bin is the amime binary (node runtime, pod shim, built-in images).
	Bin string
	// ControlPlaneBin is the amime-controlplane binary.
	ControlPlaneBin string
	// DeployDir holds the add-on manifests applied on `lab up`.
	DeployDir string
	Out       io.Writer
}

func (l *Lab) path(p ...string) string { return filepath.Join(append([]string{l.Dir()}, p...)...) }

// KubeconfigPath is the admin kubeconfig of the lab.
func (l *Lab) KubeconfigPath() string { return l.path("kubeconfig") }

func (l *Lab) configPath() string { return l.path("lab.json") }

func (l *Lab) daemons() []daemon {
	d := func(name string, args ...string) daemon {
		return daemon{
			name: name, bin: l.ControlPlaneBin, args: append([]string{name}, args...),
			logPath: l.path("logs", name+".log"), pidPath: l.path("run", name+".pid"),
		}
	}
	pki := l.path("pki")
	p := func(f string) string { return filepath.Join(pki, f) }
	svc := joinPrefixes(l.ServiceCIDRs())
	apiserver := d("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:"+strconv.Itoa(l.EtcdPort),
		"--bind-address="+l.APIServerAddr().String(),
		"--advertise-address="+l.APIServerAddr().String(),
		"--secure-port="+strconv.Itoa(l.APIServerPort),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+p("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc."+l.ClusterDomain,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range="+svc,
		"--service-node-port-range="+l.NodePortRange,
		"--profiling=false",
		"--v=1",
	)
	cm := d("kube-controller-manager",
		"--kubeconfig="+l.path("kubeconfigs", "controller-manager.kubeconfig"),
		"--secure-port=0",
		"--leader-elect=false",
		"--allocate-node-cidrs=true",
		"--cluster-cidr="+joinPrefixes(l.PodCIDRs()),
		"--node-cidr-mask-size-ipv4="+strconv.Itoa(l.NodeMaskV4),
		"--node-cidr-mask-size-ipv6="+strconv.Itoa(l.NodeMaskV6),
		"--service-cluster-ip-range="+svc,
		"--root-ca-file="+p("ca.crt"),
		"--service-account-private-key-file="+p("sa.key"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+p("ca.crt"),
		"--cluster-signing-key-file="+p("ca.key"),
		"--controllers=*",
		// The node runtime renews its Lease every 5s; a node that misses 30s of them
		// goes NotReady through the real node-lifecycle controller.
		"--node-monitor-grace-period=30s",
		"--kube-api-qps=100", "--kube-api-burst=200",
		"--v=1",
	)
	if l.IPFamily == FamilyIPv4 {
		cm.args = removeArg(cm.args, "--node-cidr-mask-size-ipv6=")
	} else if l.IPFamily == FamilyIPv6 {
		cm.args = removeArg(cm.args, "--node-cidr-mask-size-ipv4=")
	}
	sched := d("kube-scheduler",
		"--kubeconfig="+l.path("kubeconfigs", "scheduler.kubeconfig"),
		"--secure-port=0",
		"--leader-elect=false",
		"--v=1",
	)
	etcd := d("etcd",
		"--data-dir="+l.path("etcd"),
		"--listen-client-url=http://127.0.0.1:"+strconv.Itoa(l.EtcdPort),
		"--listen-peer-url=http://127.0.0.1:"+strconv.Itoa(l.EtcdPort+1),
	)
	return []daemon{etcd, apiserver, cm, sched}
}

func (l *Lab) nodeDaemon(i int) daemon {
	name := l.NodeName(i)
	nodeDir := l.path("nodes", name)
	var ips []string
	for _, a := range l.NodeAddrs(i) {
		ips = append(ips, a.Addr().String())
	}
	return daemon{
		name:   name,
		bin:    l.Bin,
		netns:  l.NodeNetns(i),
		newUTS: true,
		newNS:  true,
		// The node runtime pins pod network namespaces in the machine's mount
		// namespace, handed over as fd 3.
		passMountNS: true,
		args: []string{"lab", "node",
			"--private-mounts", "--host-mount-ns-fd=3",
			// Shared by all labs: a mount point one lab created may be in use by
			// another; the last lab down removes them.
			"--created-log=" + filepath.Join(l.StateRoot, "created-paths"),
			"--node-name=" + name,
			"--node-ip=" + strings.Join(ips, ","),
			"--kubeconfig=" + l.path("kubeconfigs", name+".kubeconfig"),
			"--state-dir=" + nodeDir,
			"--tls-cert-file=" + l.path("pki", name+"-serving.crt"),
			"--tls-private-key-file=" + l.path("pki", name+"-serving.key"),
			"--client-ca-file=" + l.path("pki", "ca.crt"),
			"--cluster-dns=" + l.DNSServiceIP().String(),
			"--cluster-domain=" + l.ClusterDomain,
			"--pod-netns-prefix=" + l.PodNetnsPrefix(),
			"--zone=" + zoneOf(i),
		},
		logPath: l.path("logs", name+".log"),
		pidPath: l.path("run", name+".pid"),
	}
}

// zoneOf spreads nodes over two zones so that topology-aware routing can be tested.
func zoneOf(i int) string {
	if i%2 == 1 {
		return "zone-a"
	}
	return "zone-b"
}

func removeArg(args []string, prefix string) []string {
	out := args[:0]
	for _, a := range args {
		if !strings.HasPrefix(a, prefix) {
			out = append(out, a)
		}
	}
	return out
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// step prints one line of progress and times it.
func (l *Lab) step(n, total int, what string, fn func() error) error {
	start := time.Now()
	fmt.Fprintf(l.Out, "[%d/%d] %s ...", n, total, what)
	err := fn()
	if err != nil {
		fmt.Fprintf(l.Out, " failed\n")
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(l.Out, " done (%.1fs)\n", time.Since(start).Seconds())
	return nil
}

// Up brings the lab up and returns once every node is Ready and the add-ons are
// available. On a running lab it only checks health; after a crash it first removes
// what the previous run left behind.
func (l *Lab) Up(ctx context.Context) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if err := Preflight(l.Bin, l.ControlPlaneBin); err != nil {
		return err
	}
	if prev, err := LoadConfig(l.StateRoot, l.Name); err == nil {
		running := l.controlPlaneUp(ctx) == nil
		if running && (prev.Nodes != l.Nodes || prev.IPFamily != l.IPFamily) {
			return fmt.Errorf("lab %q is running with %d nodes (%s); run `amime lab down --name %s` first to change its shape", l.Name, prev.Nodes, prev.IPFamily, l.Name)
		}
		if running {
			l.Config = prev
			return l.repair(ctx)
		}
		fmt.Fprintf(l.Out, "lab %q was left half-running; cleaning up first\n", l.Name)
		old := *l
		old.Config = prev
		if err := old.Down(); err != nil {
			return fmt.Errorf("clean up the previous run: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Only a lab that starts afresh takes ranges; a repaired one keeps its own.
	if err := l.checkOtherLabs(); err != nil {
		return err
	}
	if err := portsFree("127.0.0.1", l.EtcdPort, l.EtcdPort+1); err != nil {
		return err
	}
	if err := ipForwardOff(); err != nil {
		fmt.Fprintf(l.Out, "warning: %v\n", err)
	}
	start := time.Now()
	const total = 7
	var cs *kubernetes.Clientset
	steps := []struct {
		what string
		fn   func() error
	}{
		{"certificates and kubeconfigs", l.writeCredentials},
		{"network namespaces and lab bridge", func() error { return setupUnderlay(l.Config) }},
		{"etcd", func() error { return l.startEtcd(ctx) }},
		{"kube-apiserver", func() (err error) { cs, err = l.startAPIServer(ctx); return err }},
		{"kube-controller-manager and kube-scheduler", func() error { return l.startControllers() }},
		{fmt.Sprintf("%d node runtimes, waiting for the nodes to register", l.Nodes), func() error { return l.startNodes(ctx, cs) }},
		{"add-ons from deploy/ (amime agent), waiting for nodes Ready", func() error { return l.applyAddons(ctx, cs) }},
	}
	for i, s := range steps {
		if err := l.step(i+1, total, s.what, s.fn); err != nil {
			fmt.Fprintf(l.Out, "lab up failed; logs are in %s\n", l.path("logs"))
			return err
		}
	}
	fmt.Fprintf(l.Out, "lab %q is up in %.1fs: %d nodes Ready\nexport KUBECONFIG=%s\n", l.Name, time.Since(start).Seconds(), l.Nodes, l.KubeconfigPath())
	return nil
}

// repair brings a lab whose control plane runs back to full health: node
// runtimes that died are started again (they adopt their running pods). On a
// healthy lab it changes nothing.
func (l *Lab) repair(ctx context.Context) error {
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	restarted := 0
	for i := 1; i <= l.Nodes; i++ {
		d := l.nodeDaemon(i)
		if _, ok := d.running(); !ok {
			fmt.Fprintf(l.Out, "node runtime of %s is not running; starting it\n", l.NodeName(i))
			if err := d.start(); err != nil {
				return err
			}
			restarted++
		}
	}
	if restarted == 0 && l.nodesReady(ctx, cs) == nil {
		fmt.Fprintf(l.Out, "lab %q is already up (%d nodes Ready); nothing to do\nexport KUBECONFIG=%s\n", l.Name, l.Nodes, l.KubeconfigPath())
		return nil
	}
	if err := l.step(1, 2, "waiting for the nodes to register", func() error { return l.startNodes(ctx, cs) }); err != nil {
		return err
	}
	if err := l.step(2, 2, "add-ons from deploy/, waiting for nodes Ready", func() error { return l.applyAddons(ctx, cs) }); err != nil {
		return err
	}
	fmt.Fprintf(l.Out, "lab %q is up: %d nodes Ready\nexport KUBECONFIG=%s\n", l.Name, l.Nodes, l.KubeconfigPath())
	return nil
}

// checkOtherLabs refuses ranges that overlap those of another running lab: the
// root namespace routes every lab's underlay and pod ranges.
func (l *Lab) checkOtherLabs() error {
	entries, err := os.ReadDir(l.StateRoot)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == l.Name {
			continue
		}
		other, err := LoadConfig(l.StateRoot, e.Name())
		if err != nil {
			continue
		}
		o := &Lab{Config: other, ControlPlaneBin: l.ControlPlaneBin}
		if _, running := o.daemons()[1].running(); !running {
			continue
		}
		var pairs [][2]netip.Prefix
		if l.HasV4() && other.HasV4() {
			pairs = append(pairs, [2]netip.Prefix{l.PodCIDRv4, other.PodCIDRv4}, [2]netip.Prefix{l.UnderlayV4, other.UnderlayV4})
		}
		if l.HasV6() && other.HasV6() {
			pairs = append(pairs, [2]netip.Prefix{l.PodCIDRv6, other.PodCIDRv6}, [2]netip.Prefix{l.UnderlayV6, other.UnderlayV6})
		}
		for _, pair := range pairs {
			if pair[0].IsValid() && pair[1].IsValid() && pair[0].Overlaps(pair[1]) {
				return fmt.Errorf("lab %q is running with %s, which overlaps %s of this lab: give this lab other ranges (--pod-cidr, --pod-cidr-v6, --underlay, --underlay-v6) or take the other down", other.Name, pair[1], pair[0])
			}
		}
	}
	return nil
}

// LoadConfig reads the configuration a running (or crashed) lab was started with.
func LoadConfig(stateRoot, name string) (Config, error) {
	b, err := os.ReadFile(filepath.Join(stateRoot, name, "lab.json"))
	if err != nil {
		return Config{}, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("lab %q: malformed lab.json: %w", name, err)
	}
	return c, nil
}

func (l *Lab) writeCredentials() error {
	if err := os.MkdirAll(l.Dir(), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(l.Config, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(l.configPath(), b, 0o644); err != nil {
		return err
	}
	p, err := loadOrCreateCA(l.path("pki"))
	if err != nil {
		return err
	}
	apiIPs := []net.IP{net.ParseIP("127.0.0.1")}
	for _, a := range l.BridgeAddrs() {
		apiIPs = append(apiIPs, a.Addr().AsSlice())
	}
	for _, cidr := range l.ServiceCIDRs() {
		apiIPs = append(apiIPs, hostAddr(cidr, 1).AsSlice())
	}
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true, ips: apiIPs, dns: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + l.ClusterDomain}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
	}
	for i := 1; i <= l.Nodes; i++ {
		name := l.NodeName(i)
		var ips []net.IP
		for _, a := range l.NodeAddrs(i) {
			ips = append(ips, a.Addr().AsSlice())
		}
		specs = append(specs,
			certSpec{name: name, cn: "system:node:" + name, orgs: []string{"system:nodes"}, client: true},
			certSpec{name: name + "-serving", cn: name, server: true, ips: ips, dns: []string{name}})
	}
	for _, s := range specs {
		if err := p.ensure(s); err != nil {
			return err
		}
	}
	if err := p.ensureKey("sa"); err != nil {
		return err
	}
	server := l.APIServerURL()
	kc := func(file, cert string) error { return p.writeKubeconfig(file, server, cert) }
	if err := kc(l.KubeconfigPath(), "admin"); err != nil {
		return err
	}
	for _, pair := range [][2]string{{"controller-manager.kubeconfig", "controller-manager"}, {"scheduler.kubeconfig", "scheduler"}} {
		if err := kc(l.path("kubeconfigs", pair[0]), pair[1]); err != nil {
			return err
		}
	}
	for i := 1; i <= l.Nodes; i++ {
		if err := kc(l.path("kubeconfigs", l.NodeName(i)+".kubeconfig"), l.NodeName(i)); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) startEtcd(ctx context.Context) error {
	etcd := l.daemons()[0]
	if err := portFree("127.0.0.1", l.EtcdPort, etcd); err != nil {
		return err
	}
	if err := etcd.start(); err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/health", l.EtcdPort)
	return waitFor(ctx, 60*time.Second, etcd, func() error {
		out, err := exec.CommandContext(ctx, "curl", "-sf", "--max-time", "2", url).Output()
		if err != nil || !strings.Contains(string(out), `"true"`) {
			return fmt.Errorf("etcd not healthy at %s", url)
		}
		return nil
	})
}

func (l *Lab) adminClient() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.KubeconfigPath())
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (l *Lab) startAPIServer(ctx context.Context) (*kubernetes.Clientset, error) {
	api := l.daemons()[1]
	if err := portFree(l.APIServerAddr().String(), l.APIServerPort, api); err != nil {
		return nil, err
	}
	if err := api.start(); err != nil {
		return nil, err
	}
	cs, err := l.adminClient()
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 120*time.Second, api, func() error {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("apiserver not ready: %v %s", err, body)
		}
		return nil
	})
	return cs, err
}

func (l *Lab) startControllers() error {
	for _, d := range l.daemons()[2:] {
		if err := d.start(); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) startNodes(ctx context.Context, cs *kubernetes.Clientset) error {
	for i := 1; i <= l.Nodes; i++ {
		if err := os.MkdirAll(l.path("nodes", l.NodeName(i)), 0o755); err != nil {
			return err
		}
		if err := l.nodeDaemon(i).start(); err != nil {
			return err
		}
	}
	return waitFor(ctx, 120*time.Second, daemon{}, func() error {
		for i := 1; i <= l.Nodes; i++ {
			if _, ok := l.nodeDaemon(i).running(); !ok {
				return fmt.Errorf("node runtime of %s exited; see %s", l.NodeName(i), l.nodeDaemon(i).logPath)
			}
		}
		if err := l.nodesRegistered(ctx, cs); err != nil {
			return err
		}
		return l.routeControlPlaneToPods(ctx, cs)
	})
}

// routeControlPlaneToPods lets the control plane, which runs in the root
// namespace, answer pods: pods reach the apiserver through the "kubernetes"
// Service with their own address, and on a real cluster the control-plane
// machines are nodes of the pod network. Each node's pod ranges are routed via
// that node's address on the lab bridge. These routes only serve replies the
// root namespace sends itself: its ip_forward stays off, and they vanish with
// the bridge.
func (l *Lab) routeControlPlaneToPods(ctx context.Context, cs *kubernetes.Clientset) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	br, err := netlink.LinkByName(l.BridgeName())
	if err != nil {
		return err
	}
	for _, n := range nodes.Items {
		for _, c := range n.Spec.PodCIDRs {
			dst, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			for _, a := range n.Status.Addresses {
				gw, err := netip.ParseAddr(a.Address)
				if a.Type != corev1.NodeInternalIP || err != nil || gw.Is4() != dst.Addr().Is4() {
					continue
				}
				r := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}, Gw: gw.AsSlice()}
				if err := netlink.RouteReplace(r); err != nil {
					return fmt.Errorf("route %s via %s: %w", dst, gw, err)
				}
			}
		}
	}
	return nil
}

// nodesRegistered checks that every node exists and has its pod ranges; the
// nodes become Ready once the amime agent wrote their CNI configuration.
func (l *Lab) nodesRegistered(ctx context.Context, cs *kubernetes.Clientset) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	n := 0
	for _, node := range nodes.Items {
		if len(node.Spec.PodCIDRs) > 0 {
			n++
		}
	}
	if n < l.Nodes {
		return fmt.Errorf("%d of %d nodes registered with pod ranges", n, l.Nodes)
	}
	return nil
}

// nodesReady checks that every node of the lab is Ready and has its pod ranges.
func (l *Lab) nodesReady(ctx context.Context, cs *kubernetes.Clientset) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := 0
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && len(n.Spec.PodCIDRs) > 0 {
				ready++
			}
		}
	}
	if ready < l.Nodes {
		return fmt.Errorf("%d of %d nodes Ready", ready, l.Nodes)
	}
	return nil
}

// waitFor polls check until it succeeds, the timeout passes, or the daemon dies.
func waitFor(ctx context.Context, timeout time.Duration, d daemon, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if d.pidPath != "" {
			if _, ok := d.running(); !ok {
				return fmt.Errorf("%s exited: see %s (last: %v)", d.name, d.logPath, last)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// portFree fails with a clear message when something else holds a port the lab needs.
func portFree(host string, port int, d daemon) error {
	if _, ok := d.running(); ok {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d on %s is in use by another program (the lab's %s needs it): stop that program or run `amime lab down` if it is an old lab", port, host, d.name)
	}
	return ln.Close()
}
