package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"amime.dev/amime/internal/masq"
	"amime.dev/amime/internal/routing"
	"amime.dev/amime/internal/status"
	"amime.dev/amime/internal/syncloop"
)

// routingController keeps the node's routes, overlay, masquerade and CNI
// configuration in line with the Node objects.
type routingController struct {
	cfg     Config
	log     *slog.Logger
	client  kubernetes.Interface
	nodes   corelisters.NodeLister
	dp      routing.Dataplane
	metrics *metrics
	kick    chan struct{}

	synced      atomic.Bool
	conditionOK bool
	lastConf    string

	mu          sync.Mutex // guards the fields below, read by /status
	lastSync    time.Time
	lastError   error
	remoteNodes int
	routes      int
}

func (c *routingController) enqueue() {
	syncloop.Signal(c.kick)
}

func (c *routingController) ready() error {
	if !c.synced.Load() {
		return fmt.Errorf("routing not synced yet")
	}
	return nil
}

// run syncs on every change, at most every 100 ms, at least every resync
// period, and retries failures with back-off.
func (c *routingController) run(ctx context.Context) {
	syncloop.Loop{MinInterval: 100 * time.Millisecond, Resync: c.cfg.ResyncPeriod, MinBackoff: time.Second, MaxBackoff: 30 * time.Second,
		Sync: c.sync, Kick: c.enqueue,
		Failed: func(err error) { c.log.Warn("routing sync", "err", err) },
	}.Run(ctx, c.kick)
}

func toNode(n *corev1.Node) routing.Node {
	out := routing.Node{Name: n.Name}
	for _, s := range n.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(s); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p)
		}
	}
	if len(out.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
		if p, err := netip.ParsePrefix(n.Spec.PodCIDR); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p)
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out.InternalIPs = append(out.InternalIPs, ip)
		}
	}
	return out
}

func (c *routingController) sync(ctx context.Context) error {
	start := time.Now()
	err := c.syncOnce(ctx)
	c.metrics.observeSync(time.Since(start), err)
	c.mu.Lock()
	c.lastError = err
	if err == nil {
		c.lastSync = time.Now()
	}
	c.mu.Unlock()
	return err
}

// status reports the controller's part of the agent's /status.
func (c *routingController) status() status.Component {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := status.Component{Name: "routing", LastSync: c.lastSync,
		Programmed: map[string]int{"remoteNodes": c.remoteNodes, "routes": c.routes}}
	if c.lastError != nil {
		s.LastError = c.lastError.Error()
	}
	return s
}

func (c *routingController) syncOnce(ctx context.Context) error {
	selfObj, err := c.nodes.Get(c.cfg.NodeName)
	if err != nil {
		return fmt.Errorf("own node %s: %w", c.cfg.NodeName, err)
	}
	self := toNode(selfObj)
	if len(self.PodCIDRs) == 0 {
		return fmt.Errorf("node %s has no podCIDR yet (is the controller-manager running with --allocate-node-cidrs?)", self.Name)
	}
	all, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	var others []routing.Node
	for _, n := range all {
		if n.Name != self.Name {
			others = append(others, toNode(n))
		}
	}
	links, err := c.dp.Links()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	desired, problems := routing.Compute(c.cfg.Mode, self, others, links)
	for _, p := range problems {
		c.log.Warn("routing", "problem", p)
	}
	if desired.PodMTU == 0 {
		return fmt.Errorf("routing: %v", problems)
	}
	desired.Routes = append(desired.Routes, routing.ServiceRoutes(self, links, c.cfg.ServiceCIDRs)...)
	ch, err := routing.Apply(c.dp, desired)
	if err != nil {
		return fmt.Errorf("apply routes: %w", err)
	}
	if ch.Added+ch.Removed > 0 {
		c.log.Info("routing updated", "added", ch.Added, "removed", ch.Removed, "remoteNodes", len(others))
	}
	c.metrics.remoteNodes.Set(float64(len(others)))
	c.metrics.routes.Set(float64(len(desired.Routes)))
	c.mu.Lock()
	c.remoteNodes, c.routes = len(others), len(desired.Routes)
	c.mu.Unlock()

	nonMasq := append([]netip.Prefix{}, c.cfg.NonMasquerade...)
	for _, l := range links {
		for _, p := range l.Prefixes {
			nonMasq = append(nonMasq, p.Masked())
		}
	}
	nft, err := masq.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	mc := masq.Config{PodCIDRs: c.cfg.ClusterCIDRs, NonMasquerade: nonMasq}
	if desired.VXLAN != nil {
		mc.TunnelPort = uint16(desired.VXLAN.Port)
	}
	if err := masq.Sync(ctx, nft, mc); err != nil {
		return err
	}
	conf, err := writeConflist(c.cfg.CNIConfDir, self.PodCIDRs, desired.PodMTU, desired.RouteMTU, c.cfg.IPAMDir, c.cfg.AttachSocket)
	if err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	if conf != c.lastConf {
		c.log.Info("CNI configuration written", "dir", c.cfg.CNIConfDir, "podCIDRs", self.PodCIDRs, "mtu", desired.PodMTU, "routeMTU", desired.RouteMTU)
		c.lastConf = conf
	}
	if !c.conditionOK || !networkAvailable(selfObj) {
		if err := c.setNetworkAvailable(ctx); err != nil {
			return fmt.Errorf("node condition: %w", err)
		}
		c.conditionOK = true
	}
	c.synced.Store(true)
	return nil
}

func networkAvailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status == corev1.ConditionFalse
		}
	}
	return false
}

// setNetworkAvailable reports NetworkUnavailable=False, as network plugins do.
func (c *routingController) setNetworkAvailable(ctx context.Context) error {
	now := metav1.Now()
	patch := map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "AmimeIsUp", Message: fmt.Sprintf("amime agent programs %s routing", c.cfg.Mode),
		LastTransitionTime: now, LastHeartbeatTime: now,
	}}}}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Nodes().Patch(ctx, c.cfg.NodeName, types.StrategicMergePatchType, b, metav1.PatchOptions{}, "status")
	return err
}
