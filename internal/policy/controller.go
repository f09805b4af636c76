package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"

	"amime.dev/amime/internal/status"
	"amime.dev/amime/internal/syncloop"
)

// Controller enforces NetworkPolicy for the pods of one node. Informer events
// only mark it dirty; a rate-limited loop computes the whole desired state
// from the caches and applies the difference (Dataplane).
type Controller struct {
	cfg        RenderConfig
	dp         *Dataplane
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	policies   networkinglisters.NetworkPolicyLister
	log        *slog.Logger
	metrics    *Metrics
	kick       chan struct{}
	urgent     chan struct{} // Attach: end the loop's pause
	// cache carries allow-lists over from sync to sync; only Sync uses it.
	cache Cache

	mu        sync.Mutex
	snapshot  *Snapshot
	status    Status
	changedAt time.Time
	// podCIDRs returns the node's pod ranges (nil: none known yet).
	podCIDRs func() []netip.Prefix
	// gate, when set, is told around each sync which local pods no policy
	// selects (SetGate).
	gate Gate
	// attached are addresses the CNI plugin reported for pods whose status
	// does not show them yet (Attach), by namespace/name.
	attached map[string]attachment
	// started counts syncs begun; synced is the number of the last one that
	// succeeded; syncedCh is closed (and replaced) when one succeeds.
	started, synced uint64
	syncedCh        chan struct{}
}

// attachment is a pod's addresses as the CNI plugin reported them.
type attachment struct {
	uid string
	ips []netip.Addr
	at  time.Time
}

// attachmentTTL bounds how long a reported address stands in for the pod's
// status (which normally follows within a second).
const attachmentTTL = 2 * time.Minute

// Status is what `amime status` shows of policy enforcement on a node.
type Status struct {
	Policies       int       `json:"policies"`
	ProgrammedPods int       `json:"programmedPods"` // local pods isolated in some direction
	Groups         int       `json:"groups"`
	LastSync       time.Time `json:"lastSync"`
	LastError      string    `json:"lastError,omitempty"`
}

// NewController returns a controller; metrics may be nil.
func NewController(cfg RenderConfig, dp *Dataplane, pods corelisters.PodLister, namespaces corelisters.NamespaceLister,
	policies networkinglisters.NetworkPolicyLister, m *Metrics, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, dp: dp, pods: pods, namespaces: namespaces, policies: policies, metrics: m, log: log, kick: make(chan struct{}, 1), urgent: make(chan struct{}, 1),
		attached: map[string]attachment{}, syncedCh: make(chan struct{})}
}

// Gate is something that skips this table for the packets of unselected pods
// (the agent's fast path). It must never skip it for a pod the rules being
// programmed select.
type Gate interface {
	// Narrow is called before the rules are programmed with the local pods
	// they leave unselected: every other pod must be out of the gate when it
	// returns; an error fails the sync.
	Narrow(unselected map[netip.Addr]bool) error
	// Widen is called once the rules are programmed: exactly those pods may
	// skip the table now.
	Widen(unselected map[netip.Addr]bool)
}

// SetGate sets the gate told about unselected pods.
func (c *Controller) SetGate(g Gate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate = g
}

// SetPodCIDRs makes every sync read the node's pod ranges from fn (they may
// be allocated after the agent starts); without it the configured ones stay.
func (c *Controller) SetPodCIDRs(fn func() []netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.podCIDRs = fn
}

// Attach records the addresses the CNI plugin gave a pod of this node before
// its status shows them, and returns once a sync that includes them has been
// programmed (or ctx ends). The caller has checked that the pod is on this
// node and the addresses are in its ranges.
func (c *Controller) Attach(ctx context.Context, namespace, name, uid string, ips []netip.Addr) error {
	c.mu.Lock()
	c.attached[namespace+"/"+name] = attachment{uid: uid, ips: ips, at: time.Now()}
	need := c.started + 1
	c.mu.Unlock()
	c.OnChange()
	syncloop.Signal(c.urgent)
	for {
		c.mu.Lock()
		done, ch, lastErr := c.synced >= need, c.syncedCh, c.status.LastError
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if lastErr != "" {
				return fmt.Errorf("pod %s/%s not programmed: %s", namespace, name, lastErr)
			}
			return fmt.Errorf("pod %s/%s not programmed: %w", namespace, name, ctx.Err())
		}
	}
}

// withAttached returns pods with the reported addresses of pods whose status
// has none yet (copies; the cache's objects are not modified), and forgets
// attachments the status has taken over or that are stale.
func (c *Controller) withAttached(pods []*corev1.Pod) []*corev1.Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.attached) == 0 {
		return pods
	}
	byKey := make(map[string]int, len(c.attached))
	for i, p := range pods {
		if _, ok := c.attached[p.Namespace+"/"+p.Name]; ok {
			byKey[p.Namespace+"/"+p.Name] = i
		}
	}
	var out []*corev1.Pod
	for key, a := range c.attached {
		i, ok := byKey[key]
		if !ok || time.Since(a.at) > attachmentTTL {
			delete(c.attached, key)
			continue
		}
		p := pods[i]
		if (a.uid != "" && string(p.UID) != a.uid) || len(p.Status.PodIPs) > 0 || p.Status.PodIP != "" {
			delete(c.attached, key)
			continue
		}
		if out == nil {
			out = slices.Clone(pods)
		}
		cp := p.DeepCopy()
		for _, ip := range a.ips {
			cp.Status.PodIPs = append(cp.Status.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		out[i] = cp
	}
	if out == nil {
		return pods
	}
	return out
}

// OnChange marks the controller dirty (informer event handlers call it).
func (c *Controller) OnChange() {
	c.mu.Lock()
	if c.changedAt.IsZero() {
		c.changedAt = time.Now()
	}
	c.mu.Unlock()
	syncloop.Signal(c.kick)
}

// Run syncs on changes, at most every minInterval, and every resync.
func (c *Controller) Run(ctx context.Context, minInterval, resync time.Duration) {
	syncloop.Loop{MinInterval: minInterval, Resync: resync, MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second,
		Sync: c.Sync, Kick: c.OnChange, Urgent: c.urgent,
		Failed: func(err error) { c.log.Warn("policy sync failed; the previous rules stay in place", "err", err) },
	}.Run(ctx, c.kick)
}

// BuildSnapshot reads the caches. It also returns each namespace's log mode.
func BuildSnapshot(pods []*corev1.Pod, namespaces []*corev1.Namespace, policies []*networkingv1.NetworkPolicy) (*Snapshot, map[string]string) {
	ps, nsLabels, logModes := fromAPI(pods, namespaces)
	return NewSnapshot(ps, nsLabels, policies), logModes
}

// fromAPI converts the cached objects.
func fromAPI(pods []*corev1.Pod, namespaces []*corev1.Namespace) ([]*Pod, map[string]map[string]string, map[string]string) {
	var ps []*Pod
	for _, p := range pods {
		if pp, ok := PodFromAPI(p); ok {
			ps = append(ps, pp)
		}
	}
	nsLabels := make(map[string]map[string]string, len(namespaces))
	logModes := map[string]string{}
	for _, n := range namespaces {
		nsLabels[n.Name] = n.Labels
		switch n.Annotations[LogAnnotation] {
		case logAll:
			logModes[n.Name] = logAll
		case logDeny, "true":
			logModes[n.Name] = logDeny
		}
	}
	return ps, nsLabels, logModes
}

// Sync computes the desired state and applies it.
func (c *Controller) Sync(ctx context.Context) error {
	start := time.Now()
	c.mu.Lock()
	c.started++
	seq := c.started
	cfg := c.cfg
	gate := c.gate
	if c.podCIDRs != nil {
		cfg.PodCIDRs = c.podCIDRs()
	}
	c.mu.Unlock()
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	pods = c.withAttached(pods)
	nss, err := c.namespaces.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	nps, err := c.policies.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list network policies: %w", err)
	}
	ps, nsLabels, logModes := fromAPI(pods, nss)
	s := c.cache.Snapshot(ps, nsLabels, nps)
	for _, p := range s.Problems() {
		c.log.Warn("network policy part ignored (it allows nothing)", "problem", p)
	}
	d := Render(s, cfg, logModes)
	c.mu.Lock()
	changedAt := c.changedAt
	c.changedAt = time.Time{}
	c.mu.Unlock()
	// A pod the new rules select leaves the gate before they are programmed.
	var full bool
	var ops int
	if gate != nil {
		err = gate.Narrow(d.Unselected)
	}
	if err == nil {
		full, ops, err = c.dp.Apply(ctx, d)
	}
	if err == nil && gate != nil {
		gate.Widen(d.Unselected)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.LastSync = time.Now()
	if err != nil {
		c.status.LastError = err.Error()
		c.metrics.syncError()
		// The next sync is full: computed afresh, and programmed afresh.
		c.cache.Reset()
		return err
	}
	c.snapshot = s
	c.synced = seq
	close(c.syncedCh)
	c.syncedCh = make(chan struct{})
	c.status = Status{Policies: len(nps), ProgrammedPods: d.Pods, Groups: len(d.Chains), LastSync: c.status.LastSync}
	c.metrics.synced(full, time.Since(start), changedAt, c.status)
	if ops > 0 {
		c.log.Debug("policy synced", "full", full, "operations", ops, "state", d.describe(), "took", time.Since(start))
	}
	return nil
}

// Status returns the counts of the last sync.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Healthy fails until the first sync and while the last one failed.
func (c *Controller) Healthy() error {
	st := c.Status()
	if st.LastSync.IsZero() {
		return fmt.Errorf("network policy has not synced yet")
	}
	if st.LastError != "" {
		return fmt.Errorf("network policy: %s", st.LastError)
	}
	return nil
}

// Snapshot is the state the programmed rules were computed from (nil before
// the first successful sync); the verdict log judges packets with it.
func (c *Controller) Snapshot() *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snapshot
}

// Component is the policy part of the agent's /status document.
func (c *Controller) Component() status.Component {
	st := c.Status()
	comp := status.Component{Name: "policy", LastError: st.LastError,
		Programmed: map[string]int{"policies": st.Policies, "pods": st.ProgrammedPods, "groups": st.Groups}}
	if st.LastError == "" {
		comp.LastSync = st.LastSync
	}
	return comp
}
