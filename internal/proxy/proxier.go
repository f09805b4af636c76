package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/syncloop"
)

// Proxier programs the Service proxy table from the informer caches. Events only
// mark it dirty; a rate-limited loop computes the whole desired state and
// applies the difference in one transaction. After any failure the next sync
// is full, and the first sync of a process replaces the table's contents in
// one transaction (nothing is flushed on its own, so traffic keeps flowing
// through an agent restart).
type Proxier struct {
	cfg      Config
	nft      knftables.Interface
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	log      *slog.Logger
	ct       ConntrackCleaner
	metrics  *Metrics
	events   EventRecorder // nil: log only

	kick chan struct{}

	mu        sync.Mutex
	needFull  bool
	chains    map[string][]string
	elements  map[string]element
	owner     map[string]string // element claim → id of the element programmed for it
	sets      map[string]string
	udpEps    map[string]map[string]bool // UDP Service port → endpoints, for conntrack cleanup
	lastSync  time.Time
	lastOK    time.Time // last sync that succeeded, for /status
	lastError error
	ports     []*ServicePort
	local     map[string]int // health check node port → local endpoints
	changedAt time.Time      // oldest unsynced change, for programming latency

	// rendered caches each Service's computed ports and rules by the resource
	// versions they came from, so that a sync recomputes only what changed.
	rendered map[string]renderedService
	// refused holds the Services whose rules the kernel refused, by the
	// version it refused; they stay out of the table until they change.
	refused map[string]string
}

type renderedService struct {
	key     string
	fresh   bool // computed in this sync, not taken from the cache
	version string
	zone    string
	ports   []*ServicePort
	progs   []programmed
	sels    []Selection
}

// EventRecorder is the part of client-go's record.EventRecorder the proxier
// uses: a Service the kernel refuses gets a Warning Event its owner can see.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// SetEventRecorder makes the proxier report refused Services as Events.
func (p *Proxier) SetEventRecorder(r EventRecorder) {
	p.mu.Lock()
	p.events = r
	p.mu.Unlock()
}

// ConntrackCleaner deletes stale UDP flows (see conntrack.go).
type ConntrackCleaner interface {
	DeleteUDPFlows(serviceIPs []string, port int32, nodePort int32, endpoint string) (int, error)
}

// NewProxier returns a proxier; Run starts it.
func NewProxier(cfg Config, nft knftables.Interface, svcs corelisters.ServiceLister, slices discoverylisters.EndpointSliceLister, ct ConntrackCleaner, m *Metrics, log *slog.Logger) *Proxier {
	return &Proxier{cfg: cfg, nft: nft, services: svcs, slices: slices, ct: ct, metrics: m, log: log,
		kick: make(chan struct{}, 1), needFull: true,
		chains: map[string][]string{}, elements: map[string]element{}, sets: map[string]string{}, udpEps: map[string]map[string]bool{},
		rendered: map[string]renderedService{}, refused: map[string]string{}}
}

// SetZone sets the node's topology zone before the first sync.
func (p *Proxier) SetZone(zone string) {
	p.mu.Lock()
	p.cfg.Zone = zone
	p.mu.Unlock()
}

// OnChange marks the proxier dirty (informer event handlers call it).
func (p *Proxier) OnChange() {
	p.mu.Lock()
	if p.changedAt.IsZero() {
		p.changedAt = time.Now()
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run syncs on changes (at most every minInterval) and periodically.
func (p *Proxier) Run(ctx context.Context, minInterval, resync time.Duration) {
	syncloop.Loop{MinInterval: minInterval, Resync: resync, MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second,
		Sync: p.Sync, Kick: p.OnChange,
		Failed: func(err error) { p.log.Warn("service proxy sync failed; the previous rules stay in place", "err", err) },
	}.Run(ctx, p.kick)
}

// Healthy reports the last sync's result (for /healthz and /readyz).
func (p *Proxier) Healthy() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastSync.IsZero() {
		return fmt.Errorf("service proxy has not synced yet")
	}
	return p.lastError
}

// LocalEndpoints returns the number of local endpoints of the Service whose
// healthCheckNodePort is port (for the health check server).
func (p *Proxier) LocalEndpoints(port int32) (ns, name string, n int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sp := range p.ports {
		if sp.HealthCheckNodePort == port {
			return sp.Namespace, sp.Name, p.local[sp.Namespace+"/"+sp.Name], true
		}
	}
	return "", "", 0, false
}

// HealthCheckPorts lists the healthCheckNodePorts of the programmed Services.
func (p *Proxier) HealthCheckPorts() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[int32]bool{}
	var out []int32
	for _, sp := range p.ports {
		if sp.HealthCheckNodePort != 0 && !seen[sp.HealthCheckNodePort] {
			seen[sp.HealthCheckNodePort] = true
			out = append(out, sp.HealthCheckNodePort)
		}
	}
	return out
}

// desiredState computes every Service port and its rules from the caches. The
// slices are listed once and grouped by Service, and a Service whose object and
// slices did not change since the last sync reuses what was computed then, so
// the cost of a sync follows what changed, not the number of Services.
func (p *Proxier) desiredState(cfg Config) ([]renderedService, []string, error) {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return nil, nil, err
	}
	all, err := p.slices.List(labels.Everything())
	if err != nil {
		return nil, nil, err
	}
	byService := make(map[string][]*discoveryv1.EndpointSlice, len(svcs))
	for _, sl := range all {
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" {
			key := sl.Namespace + "/" + name
			byService[key] = append(byService[key], sl)
		}
	}
	out := make([]renderedService, 0, len(svcs))
	var problems []string
	next := make(map[string]renderedService, len(svcs))
	for _, svc := range svcs {
		if Skip(svc) != "" {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		slices := byService[key]
		version := resourceVersions(svc.ResourceVersion, slices)
		if v, ok := p.refused[key]; ok {
			if v == version && version != "" {
				problems = append(problems, fmt.Sprintf("service %s: its rules were refused by the kernel; left out until it changes", key))
				continue
			}
			delete(p.refused, key)
		}
		if r, ok := p.rendered[key]; ok && version != "" && r.version == version && r.zone == cfg.Zone {
			r.fresh = false
			next[key] = r
			out = append(out, r)
			continue
		}
		sps, probs := BuildServicePorts(svc, slices)
		for _, pr := range probs {
			problems = append(problems, fmt.Sprintf("service %s: %s", key, pr))
		}
		r := renderedService{key: key, fresh: true, version: version, zone: cfg.Zone, ports: sps}
		for _, sp := range sps {
			sel := Select(sp, cfg.NodeName, cfg.Zone)
			r.sels = append(r.sels, sel)
			r.progs = append(r.progs, renderPort(sp, sel, cfg))
		}
		next[key] = r
		out = append(out, r)
	}
	p.rendered = next
	return out, problems, nil
}

// resourceVersions identifies the state a Service was computed from; objects
// without resource versions (tests) are never cached.
func resourceVersions(svcRV string, slices []*discoveryv1.EndpointSlice) string {
	if svcRV == "" {
		return ""
	}
	parts := []string{svcRV}
	for _, sl := range slices {
		if sl.ResourceVersion == "" {
			return ""
		}
		parts = append(parts, sl.Name+"@"+sl.ResourceVersion)
	}
	sort.Strings(parts[1:])
	return strings.Join(parts, ",")
}

// Program renders the full desired table contents: chains and elements.
func Program(ports []*ServicePort, cfg Config) (chains map[string][]string, elements map[string]element, sets map[string]string, local map[string]int) {
	var rs []renderedService
	for _, sp := range ports {
		sel := Select(sp, cfg.NodeName, cfg.Zone)
		rs = append(rs, renderedService{ports: []*ServicePort{sp}, sels: []Selection{sel}, progs: []programmed{renderPort(sp, sel, cfg)}})
	}
	chains, elements, sets, local, _ = merge(rs)
	return chains, elements, sets, local
}

// merge combines the rendered Services into the table's contents; owner maps
// each element claim (map or set and key) to the id of the element kept for it.
func merge(rs []renderedService) (chains map[string][]string, elements map[string]element, sets map[string]string, local map[string]int, owner map[string]string) {
	chains, elements, sets, local = map[string][]string{}, map[string]element{}, map[string]string{}, map[string]int{}
	type claim struct{ id, port string }
	claimed := map[string]claim{} // set and key → element and its Service port
	for _, r := range rs {
		for i, pr := range r.progs {
			sp := r.ports[i]
			if len(pr.ids) != len(pr.elements) {
				pr.index(sp.Key())
			}
			for name, rules := range pr.chains {
				chains[name] = rules
			}
			for j, e := range pr.elements {
				// One key, one value: when two Services claim an address and
				// port (externalIPs are free-form), the port first by key keeps
				// it, whatever the order of the caches; the kernel would refuse
				// the whole transaction.
				id, k := pr.ids[j], pr.claims[j]
				if c, ok := claimed[k]; ok && c.id != id {
					if c.port < pr.portKey {
						continue
					}
					delete(elements, c.id)
				}
				claimed[k] = claim{id, pr.portKey}
				elements[id] = e
			}
			for _, s := range pr.sets {
				name, rest, _ := strings.Cut(s, "|")
				sets[name] = rest
			}
			key := sp.Namespace + "/" + sp.Name
			local[key] = max(local[key], len(r.sels[i].Local))
		}
	}
	owner = make(map[string]string, len(claimed))
	for k, c := range claimed {
		owner[k] = c.id
	}
	return chains, elements, sets, local, owner
}

// isMap tells maps from sets among the proxy's element containers.
func isMap(name string) bool { return !strings.HasPrefix(name, "hairpin-") }

func elementObj(e element) *knftables.Element {
	if isMap(e.set) {
		return &knftables.Element{Map: e.set, Key: e.key, Value: e.value}
	}
	return &knftables.Element{Set: e.set, Key: e.key}
}

// Sync computes the desired state and applies it.
func (p *Proxier) Sync(ctx context.Context) error {
	start := time.Now()
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	rendered, problems, err := p.desiredState(cfg)
	if err != nil {
		return err
	}
	for _, pr := range problems {
		p.log.Warn("service skipped in part", "problem", pr)
	}
	chains, elements, sets, local, owner := merge(rendered)
	var ports []*ServicePort
	for _, r := range rendered {
		ports = append(ports, r.ports...)
	}

	p.mu.Lock()
	full := p.needFull
	changedAt := p.changedAt
	p.changedAt = time.Time{}
	p.mu.Unlock()

	tx := p.nft.NewTransaction()
	var stale []string
	if full {
		staticObjects(tx, cfg)
		for _, m := range []string{"service-ips-v4", "service-ips-v6", "no-endpoint-services-v4", "no-endpoint-services-v6",
			"service-nodeports-v4", "service-nodeports-v6", "no-endpoint-nodeports-v4", "no-endpoint-nodeports-v6"} {
			tx.Flush(&knftables.Map{Name: m})
		}
		tx.Flush(&knftables.Set{Name: "hairpin-v4"})
		tx.Flush(&knftables.Set{Name: "hairpin-v6"})
		// Whatever a previous process programmed and is no longer wanted.
		existing, err := p.nft.List(ctx, "chains")
		if err == nil {
			for _, c := range existing {
				if (strings.HasPrefix(c, "svc-") || strings.HasPrefix(c, "ext-")) && chains[c] == nil {
					stale = append(stale, c)
				}
			}
		}
		existingSets, err := p.nft.List(ctx, "sets")
		if err == nil {
			for _, s := range existingSets {
				if strings.Contains(s, "-aff") && sets[s] == "" {
					stale = append(stale, "set:"+s)
				}
			}
		}
	}
	// Add sets, then chains, then the elements that point at them; remove old
	// elements before the chains and sets they point at.
	for name, spec := range sets {
		if !full && p.sets[name] == spec {
			continue
		}
		tx.Add(affinitySet(name, spec))
	}
	var changed []string
	for name, rules := range chains {
		if full || !equalRules(p.chains[name], rules) {
			changed = append(changed, name)
		}
	}
	writeChains(tx, chains, changed)
	for id, e := range elements {
		if full {
			tx.Add(elementObj(e))
			continue
		}
		if _, ok := p.elements[id]; !ok {
			// A changed verdict for the same key replaces the element.
			if oid, ok := p.owner[e.claim()]; ok && oid != id {
				tx.Delete(elementObj(p.elements[oid]))
			}
			tx.Add(elementObj(e))
		}
	}
	if !full {
		for id, e := range p.elements {
			if _, ok := elements[id]; !ok && owner[e.claim()] == "" {
				tx.Delete(elementObj(e))
			}
		}
		for name := range p.chains {
			if _, ok := chains[name]; !ok {
				stale = append(stale, name)
			}
		}
		for name := range p.sets {
			if _, ok := sets[name]; !ok {
				stale = append(stale, "set:"+name)
			}
		}
	}
	// Chains first (they reference the affinity sets), then sets; by name, so
	// that a Service chain goes before the per-endpoint chains it jumps to
	// (svc-X-ep-…): the kernel refuses to delete a chain still referenced.
	sort.Slice(stale, func(i, j int) bool {
		si, sj := strings.HasPrefix(stale[i], "set:"), strings.HasPrefix(stale[j], "set:")
		if si != sj {
			return sj
		}
		return stale[i] < stale[j]
	})
	for _, s := range stale {
		if name, ok := strings.CutPrefix(s, "set:"); ok {
			tx.Delete(&knftables.Set{Name: name})
		} else {
			tx.Delete(&knftables.Chain{Name: s})
		}
	}
	err = p.nft.Run(ctx, tx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastSync = time.Now()
	p.lastError = err
	if err == nil {
		p.lastOK = p.lastSync
	}
	if err != nil {
		p.needFull = true
		p.metrics.syncError()
		if bad := p.findRefused(ctx, cfg, rendered); len(bad) > 0 {
			// Program everything else at once; the refused ones wait for a change.
			go p.OnChange()
		}
		return fmt.Errorf("program table %s (%d operations): %w", Table, tx.NumOperations(), err)
	}
	p.needFull = false
	p.chains, p.elements, p.owner, p.sets, p.ports, p.local = chains, elements, owner, sets, ports, local
	p.metrics.synced(full, time.Since(start), changedAt, ports)
	p.cleanupConntrack(ports)
	return nil
}

// findRefused checks, after a failed transaction, each Service computed in this
// sync on its own (nft --check against the table as it is) and records those
// the kernel refuses, so that one bad Service never keeps all the others from
// being programmed. Callers hold p.mu.
func (p *Proxier) findRefused(ctx context.Context, cfg Config, rendered []renderedService) []string {
	var bad []string
	for _, r := range rendered {
		if !r.fresh || r.version == "" {
			continue
		}
		tx := p.nft.NewTransaction()
		staticObjects(tx, cfg)
		chains, elements, sets, _, _ := merge([]renderedService{r})
		for name, spec := range sets {
			tx.Add(affinitySet(name, spec))
		}
		names := make([]string, 0, len(chains))
		for name := range chains {
			names = append(names, name)
		}
		writeChains(tx, chains, names)
		for _, e := range elements {
			tx.Add(elementObj(e))
		}
		if err := p.nft.Check(ctx, tx); err != nil {
			p.refused[r.key] = r.version
			delete(p.rendered, r.key)
			p.log.Warn("service left out of the proxy: the kernel refuses its rules", "service", r.key, "err", err)
			bad = append(bad, r.key)
			if p.events != nil {
				ns, name, _ := strings.Cut(r.key, "/")
				if svc, gerr := p.services.Services(ns).Get(name); gerr == nil {
					p.events.Eventf(svc, corev1.EventTypeWarning, "FailedToProgram",
						"amime proxy on node %s: the kernel refused this Service's rules, so it is left out until it changes: %v", cfg.NodeName, err)
				}
			}
		}
	}
	return bad
}

func equalRules(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func parseSeconds(s string) time.Duration {
	n, _ := strconv.Atoi(s)
	return time.Duration(n) * time.Second
}

// cleanupConntrack deletes UDP conntrack entries to endpoints that went away, so
// that clients (DNS above all) do not keep sending into a dead flow.
func (p *Proxier) cleanupConntrack(ports []*ServicePort) {
	now := map[string]map[string]bool{}
	for _, sp := range ports {
		if sp.Protocol != corev1.ProtocolUDP {
			continue
		}
		eps := map[string]bool{}
		for _, e := range sp.Endpoints {
			// An endpoint that stops serving (but stays in its slice) is as
			// stale as a removed one, as for kube-proxy.
			if e.Serving {
				eps[e.IP.String()] = true
			}
		}
		now[sp.Key()] = eps
		if p.ct == nil {
			continue
		}
		var ips []string
		for _, ip := range append(append([]netipAddr{}, sp.ClusterIPs...), sp.ExternalIPs...) {
			ips = append(ips, ip.String())
		}
		for ep := range p.udpEps[sp.Key()] {
			if !eps[ep] {
				n, err := p.ct.DeleteUDPFlows(ips, sp.Port, sp.NodePort, ep)
				if err != nil {
					p.log.Warn("delete stale UDP conntrack entries", "service", sp.Key(), "endpoint", ep, "err", err)
				} else if n > 0 {
					p.log.Info("deleted stale UDP conntrack entries", "service", sp.Key(), "endpoint", ep, "flows", n)
				}
			}
		}
	}
	p.udpEps = now
}

// DeleteTable removes the proxy's table (benchmarks and tests start clean).
func DeleteTable(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	return nft.Run(ctx, tx)
}

// affinitySet is the timed set of a ClientIP affinity, from its spec
// ("type|timeout seconds").
func affinitySet(name, spec string) *knftables.Set {
	typ, timeout, _ := strings.Cut(spec, "|")
	return &knftables.Set{Name: name, Type: typ, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: knftables.PtrTo(parseSeconds(timeout))}
}

// writeChains (re)writes the named chains, in name order. Every chain exists
// before any rule jumps to it (affinity chains point at their per-endpoint
// chains), so all are added before any is filled.
func writeChains(tx *knftables.Transaction, chains map[string][]string, names []string) {
	sort.Strings(names)
	for _, name := range names {
		tx.Add(&knftables.Chain{Name: name})
	}
	for _, name := range names {
		tx.Flush(&knftables.Chain{Name: name})
		for _, r := range chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
}
