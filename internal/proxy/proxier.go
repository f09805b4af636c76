package proxy

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
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

	mu       sync.Mutex
	needFull bool
	// What is programmed (as of the last successful sync): chains by name,
	// sets by name, elements by claim (map or set and key).
	chains   map[string][]rule
	elements map[string]element
	sets     map[string]string
	// want is the desired content, kept up to date by each sync.
	want      *desiredTable
	udpEps    map[string]map[string]bool // UDP Service port → endpoints, for conntrack cleanup
	lastSync  time.Time
	lastOK    time.Time // last sync that succeeded, for /status
	lastError error
	lastOps   int // operations of the last transaction
	ports     []*ServicePort
	local     map[string]int // health check node port → local endpoints
	changedAt time.Time      // oldest unsynced change, for programming latency

	// rendered caches each Service's computed ports and rules by the resource
	// versions they came from, so that a sync recomputes only what changed.
	rendered map[string]renderedService
	// slots places each chain's endpoints in the endpoint maps.
	slots *endpointSlots
	// netlink: program through nftbatch instead of the nft binary.
	netlink bool
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
		chains: map[string][]rule{}, elements: map[string]element{}, sets: map[string]string{}, udpEps: map[string]map[string]bool{},
		want:     newDesiredTable(),
		rendered: map[string]renderedService{}, refused: map[string]string{}, slots: newEndpointSlots()}
}

// UseNetlink makes the proxier program the kernel through netlink batches
// (nftbatch) instead of the nft binary; the static chains of a full sync still
// go through knftables. The agent does this; unit tests keep the knftables
// fake.
func (p *Proxier) UseNetlink() {
	p.mu.Lock()
	p.netlink = true
	p.mu.Unlock()
}

func (p *Proxier) newWriter() writer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.netlink {
		return newNetlinkWriter(p.nft)
	}
	return newKnftWriter(p.nft)
}

// LastSyncOperations is the number of operations of the last sync's
// transaction (benchmarks report it).
func (p *Proxier) LastSyncOperations() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastOps
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
	syncloop.Signal(p.kick)
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
func (p *Proxier) desiredState(cfg Config) ([]renderedService, []delta, []string, error) {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return nil, nil, nil, err
	}
	all, err := p.slices.List(labels.Everything())
	if err != nil {
		return nil, nil, nil, err
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
	var deltas []delta
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
		old, had := p.rendered[key]
		if had && version != "" && old.version == version && old.zone == cfg.Zone {
			old.fresh = false
			next[key] = old
			out = append(out, old)
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
			r.progs = append(r.progs, renderPort(sp, sel, cfg, p.slots))
		}
		next[key] = r
		out = append(out, r)
		d := delta{new: &r}
		if had {
			d.old = &old
		}
		deltas = append(deltas, d)
	}
	for key, old := range p.rendered {
		if _, ok := next[key]; !ok {
			deltas = append(deltas, delta{old: &old})
		}
	}
	p.rendered = next
	return out, deltas, problems, nil
}

// delta is a Service whose contribution to the table changed: old (nil when
// new) is replaced by new (nil when gone).
type delta struct{ old, new *renderedService }

// resourceVersions identifies the state a Service was computed from: its
// resource version and a sum of hashes of its slices' names and versions (the
// sum does not depend on the order the cache lists them in, and needs no
// sorting or string building: this runs for every Service on every sync).
// Objects without resource versions (tests) are never cached.
func resourceVersions(svcRV string, slices []*discoveryv1.EndpointSlice) string {
	if svcRV == "" {
		return ""
	}
	var sum uint64
	for _, sl := range slices {
		if sl.ResourceVersion == "" {
			return ""
		}
		h := fnv.New64a()
		h.Write([]byte(sl.Name))
		h.Write([]byte{0})
		h.Write([]byte(sl.ResourceVersion))
		sum += h.Sum64()
	}
	return svcRV + "/" + strconv.Itoa(len(slices)) + "/" + strconv.FormatUint(sum, 36)
}

// Program renders the full desired table contents: chains and elements.
func Program(ports []*ServicePort, cfg Config) (chains map[string][]rule, elements map[string]element, sets map[string]string, local map[string]int) {
	var rs []renderedService
	slots := newEndpointSlots()
	for _, sp := range ports {
		sel := Select(sp, cfg.NodeName, cfg.Zone)
		rs = append(rs, renderedService{ports: []*ServicePort{sp}, sels: []Selection{sel}, progs: []programmed{renderPort(sp, sel, cfg, slots)}})
	}
	return merge(rs)
}

// merge combines rendered Services into the table's contents, elements by id
// (Program and the check of a refused Service; a sync keeps its desiredTable
// up to date instead of merging everything).
func merge(rs []renderedService) (chains map[string][]rule, elements map[string]element, sets map[string]string, local map[string]int) {
	d := newDesiredTable()
	for i := range rs {
		d.add(&rs[i])
	}
	elements = make(map[string]element, len(d.claims))
	for c := range d.claims {
		e, _ := d.elem(c)
		elements[e.id()] = e
	}
	return d.chains, elements, d.sets, d.local
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
	rendered, deltas, problems, err := p.desiredState(cfg)
	if err != nil {
		return err
	}
	for _, pr := range problems {
		p.log.Warn("service skipped in part", "problem", pr)
	}
	want := p.want
	for _, d := range deltas {
		if d.old != nil {
			want.remove(d.old)
		}
		if d.new != nil {
			want.add(d.new)
		}
	}
	for name := range want.dirtyChains {
		if _, ok := want.chains[name]; !ok {
			p.slots.release(name)
		}
	}
	var ports []*ServicePort
	for _, r := range rendered {
		ports = append(ports, r.ports...)
	}

	p.mu.Lock()
	full := p.needFull
	changedAt := p.changedAt
	p.changedAt = time.Time{}
	p.mu.Unlock()

	// A partial sync looks only at what the changes touched.
	chainNames, setNames, claimKeys := want.dirtyChains, want.dirtySets, want.dirtyClaims
	if full {
		chainNames, setNames, claimKeys = keySet(want.chains), keySet(want.sets), keySet(want.claims)
	}
	tx := p.newWriter()
	var stale []string
	if full {
		tx.static(cfg)
		for _, m := range []string{"service-ips-v4", "service-ips-v6", "no-endpoint-services-v4", "no-endpoint-services-v6",
			"service-nodeports-v4", "service-nodeports-v6", "no-endpoint-nodeports-v4", "no-endpoint-nodeports-v6",
			"hairpin-v4", "hairpin-v6"} {
			tx.flushSet(m)
		}
		for _, names := range endpointMapNames {
			for _, m := range names {
				tx.flushSet(m)
			}
		}
		// Whatever a previous process programmed and is no longer wanted.
		existing, err := p.nft.List(ctx, "chains")
		if err == nil {
			for _, c := range existing {
				if (strings.HasPrefix(c, "svc-") || strings.HasPrefix(c, "ext-")) && want.chains[c] == nil {
					stale = append(stale, c)
				}
			}
		}
		existingSets, err := p.nft.List(ctx, "sets")
		if err == nil {
			for _, s := range existingSets {
				if _, ok := want.sets[s]; strings.Contains(s, "-aff") && !ok {
					stale = append(stale, "set:"+s)
				}
			}
		}
	}
	// Add sets, then chains, then the elements that point at them; remove old
	// elements before the chains and sets they point at.
	for _, name := range slices.Sorted(maps.Keys(setNames)) {
		spec, ok := want.sets[name]
		_, had := p.sets[name]
		switch {
		case ok && (full || p.sets[name] != spec):
			tx.addSet(name, spec)
		case !ok && had && !full:
			stale = append(stale, "set:"+name)
		}
	}
	var changed []string
	for name := range chainNames {
		rules, ok := want.chains[name]
		_, had := p.chains[name]
		switch {
		case ok && (full || !slices.Equal(p.chains[name], rules)):
			changed = append(changed, name)
		case !ok && had && !full:
			stale = append(stale, name)
		}
	}
	writeChains(tx, want.chains, changed)
	var gone []element
	for c := range claimKeys {
		e, ok := want.elem(c)
		old, had := p.elements[c]
		switch {
		case full:
			if ok {
				tx.addElement(e)
			}
		case ok && had && e.equal(old):
		case ok:
			// A changed value for the same key replaces the element.
			if had {
				tx.deleteElement(old)
			}
			tx.addElement(e)
		case had:
			gone = append(gone, old)
		}
	}
	for _, e := range gone {
		tx.deleteElement(e)
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
			tx.deleteSet(name)
		} else {
			tx.deleteChain(s)
		}
	}
	err = tx.run(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastOps = tx.numOperations()
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
		return fmt.Errorf("program table %s (%d operations): %w", Table, tx.numOperations(), err)
	}
	p.needFull = false
	if full {
		p.chains, p.sets = maps.Clone(want.chains), maps.Clone(want.sets)
		p.elements = make(map[string]element, len(want.claims))
	}
	syncMap(p.chains, want.chains, chainNames)
	syncMap(p.sets, want.sets, setNames)
	for c := range claimKeys {
		if e, ok := want.elem(c); ok {
			p.elements[c] = e
		} else {
			delete(p.elements, c)
		}
	}
	want.clearDirty()
	p.ports, p.local = ports, want.localCopy()
	p.metrics.synced(full, time.Since(start), changedAt, ports)
	p.cleanupConntrack(ports)
	if full && tx.numOperations() > 10000 {
		// A large full sync leaves tens of megabytes of garbage (the batch
		// above all) that the runtime would hand back to the system only
		// over minutes; the agent's steady memory is what the node pays.
		debug.FreeOSMemory()
	}
	return nil
}

func keySet[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// syncMap makes dst[k] = src[k] (or absent) for the keys given.
func syncMap[V any](dst, src map[string]V, keys map[string]bool) {
	for k := range keys {
		if v, ok := src[k]; ok {
			dst[k] = v
		} else {
			delete(dst, k)
		}
	}
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
		w := newKnftWriter(p.nft)
		w.static(cfg)
		chains, elements, sets, _ := merge([]renderedService{r})
		for name, spec := range sets {
			w.addSet(name, spec)
		}
		names := make([]string, 0, len(chains))
		for name := range chains {
			names = append(names, name)
		}
		writeChains(w, chains, names)
		for _, e := range elements {
			w.addElement(e)
		}
		if err := p.nft.Check(ctx, w.tx); err != nil {
			p.refused[r.key] = r.version
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
	typ, timeout := affinitySpec(spec)
	return &knftables.Set{Name: name, Type: typ, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: knftables.PtrTo(timeout)}
}

// affinitySpec reads the "type|timeout seconds" the renderer writes for an
// affinity set.
func affinitySpec(spec string) (typ string, timeout time.Duration) {
	typ, secs, _ := strings.Cut(spec, "|")
	n, _ := strconv.Atoi(secs)
	return typ, time.Duration(n) * time.Second
}

// writeChains (re)writes the named chains, in name order. Every chain exists
// before any rule jumps to it (affinity chains point at their per-endpoint
// chains), so all are added before any is filled.
func writeChains(tx writer, chains map[string][]rule, names []string) {
	sort.Strings(names)
	for _, name := range names {
		tx.addChain(name)
	}
	for _, name := range names {
		tx.flushChain(name)
		for _, r := range chains[name] {
			tx.addRule(name, r)
		}
	}
}
