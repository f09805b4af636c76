// Package agent wires `amime agent`, the per-node daemon: it shares one set of
// informers between independent controllers, each of which computes the whole
// desired state of its part of the node from the caches and applies the
// difference. In this version it owns pod routing (overlay or native),
// masquerade of traffic leaving the cluster, the node's CNI configuration and
// plugin binary, and the node's NetworkUnavailable condition.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/attach"
	"amime.dev/amime/internal/policy"
	"amime.dev/amime/internal/proxy"
	"amime.dev/amime/internal/routing"
	"amime.dev/amime/internal/status"
)

// Config of the agent. Defaults suit a real cluster; the lab passes the same
// flags through the DaemonSet in deploy/.
type Config struct {
	NodeName   string
	Kubeconfig string // empty: in-cluster
	Mode       routing.Mode
	// ClusterCIDRs are the cluster's pod ranges (masquerade sources).
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs are the cluster's Service ranges (routed onto the underlay).
	ServiceCIDRs []netip.Prefix
	// Proxy runs the Service proxy in place of kube-proxy.
	Proxy bool
	// NetworkPolicy enforces NetworkPolicies for the node's pods.
	NetworkPolicy bool
	// FastPath moves the established connections of pods no NetworkPolicy
	// selects past the node's stack (internal/fastpath).
	FastPath bool
	// PolicyLogGroup is the NFLOG group of the policy verdict log.
	PolicyLogGroup uint16
	// NonMasquerade are extra destinations reached without masquerade; the pod
	// ranges and the node's connected networks are always included.
	NonMasquerade []netip.Prefix
	CNIConfDir    string
	CNIBinDir     string
	IPAMDir       string
	// AttachSocket is where the CNI plugin reports new pods (internal/attach);
	// it is written into the node's CNI configuration.
	AttachSocket string
	ProcSysNet   string // where the node's /proc/sys/net is mounted
	Listen       string // health and metrics
	ResyncPeriod time.Duration
	Version      string // shown in /status
	Logger       *slog.Logger
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Mode == "" {
		c.Mode = routing.Overlay
	}
	if c.CNIConfDir == "" {
		c.CNIConfDir = "/etc/cni/net.d"
	}
	if c.CNIBinDir == "" {
		c.CNIBinDir = "/opt/cni/bin"
	}
	if c.IPAMDir == "" {
		c.IPAMDir = "/var/lib/amime/ipam"
	}
	if c.AttachSocket == "" {
		c.AttachSocket = "/var/lib/amime/agent.sock"
	}
	if c.ProcSysNet == "" {
		c.ProcSysNet = "/proc/sys/net"
	}
	if c.Listen == "" {
		c.Listen = ":9962"
	}
	if c.PolicyLogGroup == 0 {
		c.PolicyLogGroup = policy.DefaultLogGroup
	}
	if c.ResyncPeriod == 0 {
		c.ResyncPeriod = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// sysctl sets one of the node's network sysctls (key relative to
// /proc/sys/net).
func (c *Config) sysctl(key, value string) error {
	return os.WriteFile(filepath.Join(c.ProcSysNet, key), []byte(value), 0o644)
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or NODE_NAME) is required"))
	}
	if _, err := routing.ParseMode(string(c.Mode)); err != nil {
		errs = append(errs, err)
	}
	if len(c.ClusterCIDRs) == 0 {
		errs = append(errs, errors.New("--cluster-cidr is required (the cluster's pod ranges, for masquerade)"))
	}
	for _, p := range c.ClusterCIDRs {
		if p.Masked() != p {
			errs = append(errs, fmt.Errorf("--cluster-cidr %s: host bits set", p))
		}
	}
	return errors.Join(errs...)
}

// Run runs the agent until ctx ends. It never flushes what it programmed: on the
// next start the controllers reconcile the kernel state with the desired one.
func Run(ctx context.Context, cfg Config) error {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger.With("node", cfg.NodeName)
	var restCfg *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		restCfg, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		restCfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	restCfg.UserAgent = "amime-agent/" + cfg.NodeName
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	for _, key := range []string{"ipv4/ip_forward", "ipv6/conf/all/forwarding"} {
		if err := cfg.sysctl(key, "1"); err != nil {
			log.Warn("enable forwarding", "sysctl", key, "err", err)
		}
	}
	if err := installPlugin(cfg.CNIBinDir); err != nil {
		return fmt.Errorf("install the CNI plugin: %w", err)
	}
	m := newMetrics()
	factory := informers.NewSharedInformerFactory(client, 0)
	nodes := factory.Core().V1().Nodes()
	var proxier *proxy.Proxier
	if cfg.Proxy {
		nft, err := knftables.New(knftables.InetFamily, proxy.Table)
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		svcs := factory.Core().V1().Services()
		slices := factory.Discovery().V1().EndpointSlices()
		proxier = proxy.NewProxier(proxy.Config{NodeName: cfg.NodeName, ClusterCIDRs: cfg.ClusterCIDRs}, nft,
			svcs.Lister(), slices.Lister(), proxy.Conntrack{}, proxy.NewMetrics(m.reg), log.With("controller", "proxy"))
		proxier.UseNetlink()
		broadcaster := record.NewBroadcaster(record.WithContext(ctx))
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		proxier.SetEventRecorder(broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "amime-proxy", Host: cfg.NodeName}))
		h := cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { proxier.OnChange() },
			UpdateFunc: func(_, _ any) { proxier.OnChange() },
			DeleteFunc: func(any) { proxier.OnChange() },
		}
		if _, err := svcs.Informer().AddEventHandler(h); err != nil {
			return err
		}
		if _, err := slices.Informer().AddEventHandler(h); err != nil {
			return err
		}
	}
	var pol *policy.Controller
	if cfg.NetworkPolicy {
		if pol, err = startPolicyInformers(cfg, factory, m, log); err != nil {
			return err
		}
	}
	att := &attacher{node: cfg.NodeName, pods: factory.Core().V1().Pods().Lister(), nodes: nodes.Lister(), lookupWait: 2 * time.Second}
	if pol != nil {
		pol.SetPodCIDRs(att.podCIDRs)
		att.program = pol.Attach
	}
	rc := &routingController{cfg: cfg, log: log, client: client, nodes: nodes.Lister(), dp: routing.Netlink{}, metrics: m, kick: make(chan struct{}, 1)}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { rc.enqueue() },
		UpdateFunc: func(old, cur any) { rc.enqueue() },
		DeleteFunc: func(any) { rc.enqueue() },
	}); err != nil {
		return err
	}
	if pol != nil {
		// The policy table drops unknown addresses of the node's pod ranges:
		// it follows this node's ranges.
		if _, err := nodes.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
			FilterFunc: func(obj any) bool { n, ok := obj.(*corev1.Node); return ok && n.Name == cfg.NodeName },
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc: func(any) { pol.OnChange() },
				UpdateFunc: func(old, cur any) {
					o, ok1 := old.(*corev1.Node)
					n, ok2 := cur.(*corev1.Node)
					if !ok1 || !ok2 || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) || o.Spec.PodCIDR != n.Spec.PodCIDR {
						pol.OnChange()
					}
				},
			},
		}); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v informer", typ)
		}
	}
	ready := rc.ready
	if proxier != nil {
		if self, err := nodes.Lister().Get(cfg.NodeName); err == nil {
			proxier.SetZone(self.Labels["topology.kubernetes.io/zone"])
		}
		go proxier.Run(ctx, 50*time.Millisecond, cfg.ResyncPeriod)
		go proxy.NewHealthChecks(proxier, log).Run(ctx)
		ready = func() error {
			if err := rc.ready(); err != nil {
				return err
			}
			return proxier.Healthy()
		}
	}
	sources := []func() status.Component{rc.status}
	if proxier != nil {
		sources = append(sources, proxier.Status)
	}
	// Before the policy loop starts: its first sync already tells the fast
	// path which pods it may take.
	if cfg.FastPath {
		if fp := startFastPath(ctx, cfg, att.podCIDRs, pol, m, log); fp != nil {
			sources = append(sources, fp.Component)
		}
	}
	if pol != nil {
		sources = append(sources, pol.Component)
		go pol.Run(ctx, 100*time.Millisecond, cfg.ResyncPeriod)
		prev := ready
		ready = func() error {
			if err := prev(); err != nil {
				return err
			}
			return pol.Healthy()
		}
	}
	srv := newServer(cfg.Listen, m, ready)
	if pol != nil {
		ring := policy.NewLogRing(1000)
		srv.extra["GET /policy/log"] = ring
		go func() {
			if err := policy.RunLog(ctx, pol, cfg.NodeName, cfg.PolicyLogGroup, ring, log.With("controller", "policy-log")); err != nil {
				log.Warn("policy verdict log unavailable", "err", err)
			}
		}()
	}
	srv.status = func() status.Agent {
		a := status.Agent{Node: cfg.NodeName, Version: cfg.Version, RoutingMode: string(cfg.Mode), Ready: true}
		if err := ready(); err != nil {
			a.Ready, a.NotReady = false, err.Error()
		}
		for _, src := range sources {
			a.Components = append(a.Components, src())
		}
		return a
	}
	go func() {
		if err := srv.run(ctx); err != nil {
			log.Error("health and metrics server", "err", err)
		}
	}()
	go func() {
		if err := attach.Serve(ctx, cfg.AttachSocket, attach.Handler(func(ctx context.Context, req attach.Request) error {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err := att.attach(ctx, req)
			if err != nil {
				log.Warn("pod attachment", "pod", req.Namespace+"/"+req.Name, "err", err)
			}
			return err
		})); err != nil {
			log.Error("CNI attachment socket", "err", err)
		}
	}()
	log.Info("agent started", "mode", cfg.Mode, "listen", cfg.Listen, "attachSocket", cfg.AttachSocket)
	rc.run(ctx)
	return nil
}
