package policy

import (
	"context"
	"fmt"
	"log/slog"
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
	// cache carries allow-lists over from sync to sync; only Sync uses it.
	cache Cache

	mu        sync.Mutex
	snapshot  *Snapshot
	status    Status
	changedAt time.Time
}

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
	return &Controller{cfg: cfg, dp: dp, pods: pods, namespaces: namespaces, policies: policies, metrics: m, log: log, kick: make(chan struct{}, 1)}
}

// OnChange marks the controller dirty (informer event handlers call it).
func (c *Controller) OnChange() {
	c.mu.Lock()
	if c.changedAt.IsZero() {
		c.changedAt = time.Now()
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run syncs on changes, at most every minInterval, and every resync.
func (c *Controller) Run(ctx context.Context, minInterval, resync time.Duration) {
	syncloop.Loop{MinInterval: minInterval, Resync: resync, MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second,
		Sync: c.Sync, Kick: c.OnChange,
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
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
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
	d := Render(s, c.cfg, logModes)
	c.mu.Lock()
	changedAt := c.changedAt
	c.changedAt = time.Time{}
	c.mu.Unlock()
	full, ops, err := c.dp.Apply(ctx, d)
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
