package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"amime.dev/amime/internal/golden"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"
)

// recordingNFT is the knftables fake with the last transaction kept and a
// failure that can be injected into the next Run.
type recordingNFT struct {
	*knftables.Fake
	txs      []*knftables.Transaction
	failNext error
	// refuse makes Run and Check fail for every transaction that mentions it,
	// as the kernel refuses rules it cannot take.
	refuse string
}

func (r *recordingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	r.txs = append(r.txs, tx)
	if err := r.failNext; err != nil {
		r.failNext = nil
		return err
	}
	if r.refuse != "" && strings.Contains(tx.String(), r.refuse) {
		return fmt.Errorf("refused: %s", r.refuse)
	}
	return r.Fake.Run(ctx, tx)
}

func (r *recordingNFT) Check(ctx context.Context, tx *knftables.Transaction) error {
	if r.refuse != "" && strings.Contains(tx.String(), r.refuse) {
		return fmt.Errorf("refused: %s", r.refuse)
	}
	return r.Fake.Check(ctx, tx)
}

func (r *recordingNFT) last() *knftables.Transaction { return r.txs[len(r.txs)-1] }

type ctCall struct {
	IPs            []string
	Port, NodePort int32
	Endpoint       string
}

// fakeConntrack records the UDP flow deletions asked of it.
type fakeConntrack struct {
	mu    sync.Mutex
	calls []ctCall
}

func (f *fakeConntrack) DeleteUDPFlows(ips []string, port, nodePort int32, endpoint string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ctCall{append([]string(nil), ips...), port, nodePort, endpoint})
	return 1, nil
}

// env is a proxier over informer-like caches, the knftables fake and fake
// conntrack.
type env struct {
	t       *testing.T
	svcs    cache.Indexer
	slices  cache.Indexer
	nft     *recordingNFT
	ct      *fakeConntrack
	metrics *Metrics
	p       *Proxier
	// versioned: add and update give objects a new resourceVersion, as the
	// API server does (the proxier caches what it computed per version).
	versioned bool
	rv        int
}

func newEnv(t *testing.T, objs ...any) *env {
	t.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	e := &env{t: t, svcs: idx(), slices: idx(), nft: &recordingNFT{Fake: knftables.NewFake(knftables.InetFamily, Table)}, ct: &fakeConntrack{},
		metrics: NewMetrics(prometheus.NewRegistry())}
	e.p = NewProxier(testConfig, e.nft, corelisters.NewServiceLister(e.svcs), discoverylisters.NewEndpointSliceLister(e.slices),
		e.ct, e.metrics, slog.New(slog.DiscardHandler))
	for _, o := range objs {
		e.add(o)
	}
	return e
}

func (e *env) indexer(o any) cache.Indexer {
	switch o.(type) {
	case *corev1.Service:
		return e.svcs
	case *discoveryv1.EndpointSlice:
		return e.slices
	}
	e.t.Fatalf("unexpected object %T", o)
	return nil
}

func (e *env) bump(o any) {
	if !e.versioned {
		return
	}
	e.rv++
	switch o := o.(type) {
	case *corev1.Service:
		o.ResourceVersion = fmt.Sprint(e.rv)
	case *discoveryv1.EndpointSlice:
		o.ResourceVersion = fmt.Sprint(e.rv)
	}
}

func (e *env) add(o any) {
	e.t.Helper()
	e.bump(o)
	if err := e.indexer(o).Add(o); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) update(o any) {
	e.t.Helper()
	e.bump(o)
	if err := e.indexer(o).Update(o); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) delete(o any) {
	e.t.Helper()
	if err := e.indexer(o).Delete(o); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) sync() {
	e.t.Helper()
	if err := e.p.Sync(context.Background()); err != nil {
		e.t.Fatalf("Sync: %v", err)
	}
}

func (e *env) dump() string { return normalizeDump(e.nft.Dump()) }

// all returns every object of the caches.
func (e *env) all() []any { return append(e.svcs.List(), e.slices.List()...) }

// scratchDump is the table a new proxier programs from the same caches.
func (e *env) scratchDump() string {
	e.t.Helper()
	fresh := newEnv(e.t, e.all()...)
	fresh.sync()
	return fresh.dump()
}

// normalizeDump sorts the element lines of a fake dump (the fake keeps them in
// insertion order, which follows map iteration); chains and rules keep theirs.
// A rule that picks its endpoint from an endpoint map shows the endpoints of
// its slots instead, and the endpoint maps' elements go: where a chain's slots
// lie depends on the order in which chains came and went, what they hold must
// not.
func normalizeDump(d string) string {
	var other, elems []string
	slots := map[string]string{} // "map slot" → endpoint
	for _, l := range strings.Split(strings.TrimSuffix(d, "\n"), "\n") {
		if m := endpointElementRE.FindStringSubmatch(l); m != nil {
			slots[m[1]+" "+m[2]] = m[3]
			continue
		}
		if strings.HasPrefix(l, "add element ") {
			elems = append(elems, l)
		} else {
			other = append(other, l)
		}
	}
	for i, l := range other {
		other[i] = endpointRuleRE.ReplaceAllStringFunc(l, func(r string) string {
			m := endpointRuleRE.FindStringSubmatch(r)
			n, _ := strconv.Atoi(m[1])
			off, _ := strconv.Atoi(m[2])
			var eps []string
			for k := off; k < off+n; k++ {
				eps = append(eps, slots[fmt.Sprintf("%s %d", m[3], k)])
			}
			return "{ " + strings.Join(eps, ", ") + " }"
		})
	}
	sort.Strings(elems)
	return strings.Join(append(other, elems...), "\n") + "\n"
}

var (
	endpointElementRE = regexp.MustCompile(`^add element \S+ \S+ (endpoints-\S+) \{ (\d+) : (.*) \}$`)
	endpointRuleRE    = regexp.MustCompile(`numgen random mod (\d+)(?: offset (\d+))? map @(endpoints-\S+)`)
)

var tcpPorts = []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolTCP, 8080)}

// clusterServices are a variety of Services and their slices, as the caches
// hold them.
func clusterServices() []any {
	np := func(name, ip string, port int32, opts ...svcOpt) *corev1.Service {
		return newService("default", name, []string{ip}, append([]svcOpt{withType(corev1.ServiceTypeNodePort), withNodePort(port)}, opts...)...)
	}
	return []any{
		newService("default", "web", []string{"10.96.0.10"}),
		newSlice("default", "web-1", "web", v4, tcpPorts,
			ep("10.244.1.2", onNode("node-a")), ep("10.244.2.2", onNode("node-b")), ep("10.244.3.2", onNode("node-c"))),

		newService("kube-system", "kube-dns", []string{"10.96.0.53"}, withPorts(
			corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
			corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
		)),
		newSlice("kube-system", "kube-dns-1", "kube-dns", v4,
			[]discoveryv1.EndpointPort{slicePort("dns", corev1.ProtocolUDP, 53), slicePort("dns-tcp", corev1.ProtocolTCP, 53)},
			ep("10.244.1.5", onNode("node-a")), ep("10.244.2.5", onNode("node-b"))),

		np("np", "10.96.0.11", 30011),
		newSlice("default", "np-1", "np", v4, tcpPorts, ep("10.244.2.3", onNode("node-b"))),

		np("npl", "10.96.0.12", 30012, withETPLocal(32012)),
		newSlice("default", "npl-1", "npl", v4, tcpPorts, ep("10.244.1.4", onNode("node-a")), ep("10.244.2.4", onNode("node-b"))),

		newService("default", "lb", []string{"10.96.0.13"}, withType(corev1.ServiceTypeLoadBalancer), withNodePort(30013), withETPLocal(32013),
			withExternalIPs("192.0.2.13"), withIngress(corev1.LoadBalancerIngress{IP: "198.51.100.13"})),
		newSlice("default", "lb-1", "lb", v4, tcpPorts, ep("10.244.2.6", onNode("node-b"))),

		newService("default", "aff", []string{"10.96.0.14"}, withAffinity(ptr.To[int32](300))),
		newSlice("default", "aff-1", "aff", v4, tcpPorts, ep("10.244.1.7", onNode("node-a")), ep("10.244.3.7", onNode("node-c"))),

		newService("default", "empty", []string{"10.96.0.15"}),

		newService("default", "dual", []string{"10.96.0.16", "fd00:96::16"}, withType(corev1.ServiceTypeNodePort), withNodePort(30016)),
		newSlice("default", "dual-4", "dual", v4, tcpPorts, ep("10.244.1.8", onNode("node-a"))),
		newSlice("default", "dual-6", "dual", v6, tcpPorts, ep("fd00:244:1::8", onNode("node-a"))),

		newService("default", "headless", []string{"None"}),
		newSlice("default", "headless-1", "headless", v4, tcpPorts, ep("10.244.1.9")),
		newService("default", "other-proxy", []string{"10.96.0.17"}, withLabels(LabelServiceProxyName, "other")),
		newSlice("default", "other-proxy-1", "other-proxy", v4, tcpPorts, ep("10.244.1.10")),
	}
}

// touches lists the chain names, sets and addresses of a Service's ports, so
// that a transaction can be checked to be about it alone.
func touches(slots map[string]slot, ns, name string, ports []*ServicePort) []string {
	var out []string
	for _, sp := range ports {
		if sp.Namespace != ns || sp.Name != name {
			continue
		}
		out = append(out, chainName("svc", sp.Key()), chainName("ext", sp.Key()))
		for _, c := range []string{chainName("svc", sp.Key()), chainName("ext", sp.Key())} {
			if sl, ok := slots[c]; ok {
				for i := range len(sp.Endpoints) {
					out = append(out, fmt.Sprintf("%s { %d ", sl.m, sl.offset+uint32(i)))
				}
			}
		}
		for _, ip := range append(append([]netipAddr(nil), sp.ClusterIPs...), sp.ExternalIPs...) {
			out = append(out, "{ "+ip.String()+" . ")
		}
		if sp.NodePort != 0 {
			out = append(out, fmt.Sprintf(" . %d ", sp.NodePort))
		}
		for _, e := range sp.Endpoints {
			out = append(out, "{ "+e.IP.String()+" . "+e.IP.String()+" }")
		}
	}
	return out
}

// checkOnly fails unless every operation of tx mentions one of allowed.
func checkOnly(t *testing.T, tx *knftables.Transaction, allowed []string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSpace(tx.String()), "\n") {
		ok := false
		for _, a := range allowed {
			if strings.Contains(l, a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("partial sync touches something else: %s", l)
		}
	}
}

func isFull(tx *knftables.Transaction) bool {
	return strings.HasPrefix(tx.String(), "add table ")
}

func TestSyncFullAndIncremental(t *testing.T) {
	// Objects without resource versions are recomputed every sync; with them,
	// the proxier reuses what it computed for unchanged Services. Both give the
	// same tables.
	t.Run("unversioned", func(t *testing.T) { testSyncFullAndIncremental(t, false) })
	t.Run("versioned", func(t *testing.T) { testSyncFullAndIncremental(t, true) })
}

func testSyncFullAndIncremental(t *testing.T, versioned bool) {
	e := newEnv(t)
	e.versioned = versioned
	for _, o := range clusterServices() {
		e.add(o)
	}
	if err := e.p.Healthy(); err == nil {
		t.Errorf("Healthy before the first sync = nil")
	}
	e.sync()
	if err := e.p.Healthy(); err != nil {
		t.Errorf("Healthy after a sync = %v", err)
	}
	if !isFull(e.nft.last()) {
		t.Errorf("first sync is not full")
	}
	golden.Check(t, "sync/full", e.dump())

	// Nothing changed: an empty transaction.
	e.sync()
	if tx := e.nft.last(); isFull(tx) || tx.NumOperations() != 0 {
		t.Errorf("sync without change: %d operations:\n%s", tx.NumOperations(), tx)
	}

	for _, s := range changeSteps(e) {
		t.Run(s.name, func(t *testing.T) {
			before, beforeSlots := e.p.ports, maps.Clone(e.p.slots.byChain)
			s.change()
			e.sync()
			tx := e.nft.last()
			if isFull(tx) {
				t.Fatalf("sync after a change is full")
			}
			if tx.NumOperations() == 0 {
				t.Errorf("no operation for a change")
			}
			checkOnly(t, tx, append(touches(beforeSlots, s.ns, s.svc, before), touches(e.p.slots.byChain, s.ns, s.svc, e.p.ports)...))
			golden.Check(t, "sync/"+s.name, e.dump())
			if diff := cmp.Diff(e.scratchDump(), e.dump()); diff != "" {
				t.Errorf("incremental result differs from a sync from scratch (-scratch +incremental):\n%s", diff)
			}
		})
	}
}

// A partial sync's transaction is about the changed Service, whatever the
// number of other Services.
func TestPartialSyncSize(t *testing.T) {
	ops := map[int]int{}
	for _, others := range []int{0, 50, 51} {
		var objs []any
		for i := range others {
			name := fmt.Sprintf("svc-%d", i)
			objs = append(objs,
				newService("bulk", name, []string{fmt.Sprintf("10.96.1.%d", i)}),
				newSlice("bulk", name+"-1", name, v4, tcpPorts, ep(fmt.Sprintf("10.244.9.%d", i), onNode("node-b")), ep(fmt.Sprintf("10.244.8.%d", i), onNode("node-c"))))
		}
		objs = append(objs,
			newService("default", "web", []string{"10.96.0.10"}),
			newSlice("default", "web-1", "web", v4, tcpPorts, ep("10.244.1.2", onNode("node-a")), ep("10.244.2.2", onNode("node-b"))))
		e := newEnv(t)
		e.versioned = others == 51
		for _, o := range objs {
			e.add(o)
		}
		e.sync()
		before, beforeSlots := e.p.ports, maps.Clone(e.p.slots.byChain)
		e.update(newSlice("default", "web-1", "web", v4, tcpPorts, ep("10.244.1.2", onNode("node-a")), ep("10.244.2.3", onNode("node-b"))))
		e.sync()
		tx := e.nft.last()
		ops[others] = tx.NumOperations()
		if tx.NumOperations() >= 10 {
			t.Errorf("with %d other Services, one endpoint change takes %d operations:\n%s", others, tx.NumOperations(), tx)
		}
		checkOnly(t, tx, append(touches(beforeSlots, "default", "web", before), touches(e.p.slots.byChain, "default", "web", e.p.ports)...))
	}
	if ops[0] != ops[50] || ops[0] != ops[51] {
		t.Errorf("operations depend on the number of other Services: %v", ops)
	}
}

func TestSyncAfterFailureIsFull(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(e *env)
	}{
		{"no-change", func(*env) {}},
		{"service-deleted", func(e *env) { e.delete(newService("default", "aff", nil)) }},
		{"endpoint-changed", func(e *env) {
			e.update(newSlice("default", "web-1", "web", v4, tcpPorts, ep("10.244.1.2", onNode("node-a"))))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, clusterServices()...)
			e.sync()
			tc.change(e)
			e.nft.failNext = errors.New("netlink: something went wrong")
			if err := e.p.Sync(context.Background()); err == nil {
				t.Fatalf("Sync did not report the failure")
			}
			if err := e.p.Healthy(); err == nil {
				t.Errorf("Healthy after a failed sync = nil")
			}
			if got := metricValue(t, e.metrics.syncErrors); got != 1 {
				t.Errorf("sync errors metric = %v", got)
			}
			e.sync()
			if !isFull(e.nft.last()) {
				t.Errorf("sync after a failure is not full")
			}
			if err := e.p.Healthy(); err != nil {
				t.Errorf("Healthy after recovery = %v", err)
			}
			if diff := cmp.Diff(e.scratchDump(), e.dump()); diff != "" {
				t.Errorf("(-scratch +after failure):\n%s", diff)
			}
		})
	}
}

// A new process finds the table of the previous one: its first (full) sync
// removes what is no longer wanted and gives the table a new proxier would.
func TestFullSyncOverPreviousTable(t *testing.T) {
	e := newEnv(t, clusterServices()...)
	e.sync()
	e.delete(newService("default", "aff", nil))
	e.delete(newService("default", "web", nil))
	restarted := NewProxier(testConfig, e.nft, corelisters.NewServiceLister(e.svcs), discoverylisters.NewEndpointSliceLister(e.slices),
		e.ct, nil, slog.New(slog.DiscardHandler))
	if err := restarted.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e.scratchDump(), e.dump()); diff != "" {
		t.Errorf("(-scratch +restarted):\n%s", diff)
	}
}

// Stale chains are deleted before the chains they jump to, and stale sets after
// the chains that use them: the kernel refuses to delete a chain or set still
// referenced (EBUSY), which the fake does not check.
func TestStaleDeletionOrder(t *testing.T) {
	for range 20 { // map iteration order varies
		e := newEnv(t, clusterServices()...)
		e.sync()
		e.delete(newService("default", "aff", nil))
		e.sync()
		checkDeletionOrder(t, e.nft.last())
		// The same through a full sync (a restart).
		e2 := newEnv(t, clusterServices()...)
		e2.sync()
		e2.delete(newService("default", "aff", nil))
		restarted := NewProxier(testConfig, e2.nft, corelisters.NewServiceLister(e2.svcs), discoverylisters.NewEndpointSliceLister(e2.slices),
			nil, nil, slog.New(slog.DiscardHandler))
		if err := restarted.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkDeletionOrder(t, e2.nft.last())
	}
}

func checkDeletionOrder(t *testing.T, tx *knftables.Transaction) {
	t.Helper()
	deleted := map[string]bool{}
	var ops []string
	for _, l := range strings.Split(strings.TrimSpace(tx.String()), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && f[0] == "delete" && (f[1] == "chain" || f[1] == "set") {
			name := f[4]
			ops = append(ops, f[1]+" "+name)
			for d := range deleted {
				// d was deleted before name: d must not be referenced by name.
				if strings.HasPrefix(d, "chain ") && strings.HasPrefix(strings.TrimPrefix(d, "chain "), name+"-") {
					t.Errorf("chain %s deleted before %s, which jumps to it", d, name)
				}
				if strings.HasPrefix(d, "set ") && f[1] == "chain" {
					t.Errorf("%s deleted before chain %s", d, name)
				}
			}
			deleted[f[1]+" "+name] = true
		}
	}
	if len(ops) == 0 {
		t.Errorf("no deletion in\n%s", tx)
	}
}

func TestConntrackCleanup(t *testing.T) {
	dns := newService("kube-system", "kube-dns", []string{"10.96.0.53"}, withType(corev1.ServiceTypeNodePort), withExternalIPs("192.0.2.53"),
		withPorts(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053},
			corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, NodePort: 30054}))
	ports := []discoveryv1.EndpointPort{slicePort("dns", corev1.ProtocolUDP, 53), slicePort("dns-tcp", corev1.ProtocolTCP, 53)}
	e := newEnv(t, dns, newSlice("kube-system", "dns-1", "kube-dns", v4, ports,
		ep("10.244.1.5", onNode("node-a")), ep("10.244.2.5", onNode("node-b")), ep("10.244.3.5", onNode("node-c"))))
	e.sync()
	if len(e.ct.calls) != 0 {
		t.Errorf("first sync cleaned conntrack: %v", e.ct.calls)
	}
	// One endpoint removed, one no longer serving (a crashed pod keeps its
	// place in the slice): flows to both are stale.
	e.update(newSlice("kube-system", "dns-1", "kube-dns", v4, ports,
		ep("10.244.1.5", onNode("node-a")), ep("10.244.3.5", notReady(), onNode("node-c"))))
	e.sync()
	want := []ctCall{
		{IPs: []string{"10.96.0.53", "192.0.2.53"}, Port: 53, NodePort: 30053, Endpoint: "10.244.2.5"},
		{IPs: []string{"10.96.0.53", "192.0.2.53"}, Port: 53, NodePort: 30053, Endpoint: "10.244.3.5"},
	}
	sort.Slice(e.ct.calls, func(i, j int) bool { return e.ct.calls[i].Endpoint < e.ct.calls[j].Endpoint })
	if diff := cmp.Diff(want, e.ct.calls); diff != "" {
		t.Errorf("conntrack cleanups (-want +got):\n%s", diff)
	}
	// Nothing more changes: no more cleanup.
	e.ct.calls = nil
	e.sync()
	if len(e.ct.calls) != 0 {
		t.Errorf("cleanup without change: %v", e.ct.calls)
	}
	// A TCP endpoint removal never cleans (TCP flows end by themselves).
	e.update(newSlice("kube-system", "dns-1", "kube-dns", v4, []discoveryv1.EndpointPort{slicePort("dns", corev1.ProtocolUDP, 53)},
		ep("10.244.1.5", onNode("node-a")), ep("10.244.3.5", notReady(), onNode("node-c"))))
	e.sync()
	if len(e.ct.calls) != 0 {
		t.Errorf("cleanup for TCP: %v", e.ct.calls)
	}
}

// A nil cleaner (no conntrack support) is fine.
func TestConntrackNil(t *testing.T) {
	svc := newService("default", "u", []string{"10.96.0.30"}, withPorts(corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP}))
	ports := []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolUDP, 53)}
	e := newEnv(t, svc, newSlice("default", "u-1", "u", v4, ports, ep("10.244.1.5"), ep("10.244.1.6")))
	e.p.ct = nil
	e.sync()
	e.update(newSlice("default", "u-1", "u", v4, ports, ep("10.244.1.5")))
	e.sync()
}

func TestLocalEndpointsAndHealthCheckPorts(t *testing.T) {
	e := newEnv(t, clusterServices()...)
	if got := e.p.HealthCheckPorts(); len(got) != 0 {
		t.Errorf("HealthCheckPorts before a sync = %v", got)
	}
	e.sync()
	got := e.p.HealthCheckPorts()
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	if diff := cmp.Diff([]int32{32012, 32013}, got); diff != "" {
		t.Errorf("HealthCheckPorts (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		port     int32
		ns, name string
		n        int
		ok       bool
	}{
		{32012, "default", "npl", 1, true},
		{32013, "default", "lb", 0, true},
		{32099, "", "", 0, false},
	} {
		ns, name, n, ok := e.p.LocalEndpoints(tc.port)
		if ns != tc.ns || name != tc.name || n != tc.n || ok != tc.ok {
			t.Errorf("LocalEndpoints(%d) = %q %q %d %v, want %q %q %d %v", tc.port, ns, name, n, ok, tc.ns, tc.name, tc.n, tc.ok)
		}
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, clusterServices()...)
	e.p.OnChange()
	e.sync()
	// web, kube-dns x2, np, npl, lb, aff, empty, dual x2.
	if got := metricValue(t, e.metrics.services); got != 10 {
		t.Errorf("service ports = %v", got)
	}
	if got := metricCount(e.metrics.syncDuration); got != 1 {
		t.Errorf("sync duration series = %d", got)
	}
	if got := metricCount(e.metrics.programLatency); got != 1 {
		t.Errorf("programming latency series = %d", got)
	}
}

func TestRun(t *testing.T) {
	e := newEnv(t, clusterServices()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.p.Run(ctx, time.Millisecond, time.Hour); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for e.p.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatal("Run did not sync")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// metricValue returns the value of the single counter or gauge of c.
func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 10)
	c.Collect(ch)
	close(ch)
	var vals []float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		switch {
		case d.Counter != nil:
			vals = append(vals, d.Counter.GetValue())
		case d.Gauge != nil:
			vals = append(vals, d.Gauge.GetValue())
		}
	}
	if len(vals) != 1 {
		t.Fatalf("%d values", len(vals))
	}
	return vals[0]
}

// metricCount returns the number of series c exports.
func metricCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 10)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

// A zone learnt after the first sync re-selects the endpoints of topology-aware
// Services, cached or not.
func TestSetZone(t *testing.T) {
	for _, versioned := range []bool{false, true} {
		e := newEnv(t)
		e.versioned = versioned
		e.add(newService("default", "pc", []string{"10.96.0.50"}, withPreferClose()))
		e.add(newSlice("default", "pc-1", "pc", v4, tcpPorts,
			ep("10.244.1.50", onNode("node-a"), inZone("zone-a")), ep("10.244.2.50", onNode("node-b"), inZone("zone-b"))))
		e.sync()
		chain := chainName("svc", "default/pc:/TCP/v4")
		rules := func() string {
			var s []string
			for _, l := range strings.Split(e.dump(), "\n") {
				if strings.HasPrefix(l, "add rule inet "+Table+" "+chain+" ") {
					s = append(s, l)
				}
			}
			return strings.Join(s, "\n")
		}
		if r := rules(); !strings.Contains(r, "10.244.1.50") || strings.Contains(r, "10.244.2.50") {
			t.Errorf("versioned=%v, zone-a: %s", versioned, r)
		}
		e.p.SetZone("zone-b")
		e.sync()
		if r := rules(); strings.Contains(r, "10.244.1.50") || !strings.Contains(r, "10.244.2.50") {
			t.Errorf("versioned=%v, zone-b: %s", versioned, r)
		}
	}
}

// TestRefusedServiceLeftOut: a Service whose rules the kernel refuses is left
// out, the others are programmed at the next sync, and the Service comes back
// once it changes into something the kernel takes.
func TestRefusedServiceLeftOut(t *testing.T) {
	good := newService("ns", "good", []string{"10.96.0.10"}, withPorts(tcpPort("http", 80, intstr.FromInt32(8080))))
	bad := newService("ns", "bad", []string{"10.96.66.66"}, withPorts(tcpPort("http", 80, intstr.FromInt32(8080))))
	e := newEnv(t)
	e.versioned = true
	e.add(good)
	e.add(bad)
	e.add(newSlice("ns", "good-1", "good", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080)}, ep("10.244.1.5")))
	e.add(newSlice("ns", "bad-1", "bad", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080)}, ep("10.244.1.6")))
	e.nft.refuse = "10.96.66.66"
	events := record.NewFakeRecorder(10)
	e.p.SetEventRecorder(events)
	if err := e.p.Sync(context.Background()); err == nil {
		t.Fatal("the sync with a refused Service should fail")
	}
	select {
	case ev := <-events.Events:
		if !strings.HasPrefix(ev, "Warning FailedToProgram amime proxy on node") {
			t.Errorf("event %q, want a Warning FailedToProgram naming the node", ev)
		}
	default:
		t.Error("no Event for the refused Service")
	}
	if len(events.Events) != 0 {
		t.Errorf("%d more events, want one for the refused Service only", len(events.Events))
	}
	if err := e.p.Sync(context.Background()); err != nil {
		t.Fatalf("the next sync should program the other Services: %v", err)
	}
	dump := e.nft.Dump()
	if !strings.Contains(dump, "10.96.0.10 . tcp . 80") || strings.Contains(dump, "10.96.66.66") {
		t.Fatalf("want the good Service programmed and the refused one left out:\n%s", dump)
	}
	// The Service changes into something the kernel takes: it comes back.
	fixed := bad.DeepCopy()
	fixed.Spec.ClusterIP, fixed.Spec.ClusterIPs = "10.96.0.20", []string{"10.96.0.20"}
	e.update(fixed)
	if err := e.p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dump := e.nft.Dump(); !strings.Contains(dump, "10.96.0.20 . tcp . 80") {
		t.Errorf("the changed Service is not programmed:\n%s", dump)
	}
}

// changeStep is one kind of change to clusterServices' caches.
type changeStep struct {
	name   string
	change func()
	// The Service the partial transaction may touch, before and after.
	ns, svc string
}

// changeSteps are the changes the sync tests apply in turn to e.
func changeSteps(e *env) []changeStep {
	return []changeStep{
		{"add-service", func() {
			e.add(newService("default", "new", []string{"10.96.0.20"}))
			e.add(newSlice("default", "new-1", "new", v4, tcpPorts, ep("10.244.1.20", onNode("node-a")), ep("10.244.2.20", onNode("node-b"))))
		}, "default", "new"},
		{"change-endpoint", func() {
			e.update(newSlice("default", "web-1", "web", v4, tcpPorts,
				ep("10.244.1.2", onNode("node-a")), ep("10.244.2.9", onNode("node-b")), ep("10.244.3.2", onNode("node-c"))))
		}, "default", "web"},
		{"affinity-endpoint-added", func() {
			e.update(newSlice("default", "aff-1", "aff", v4, tcpPorts,
				ep("10.244.1.6", onNode("node-a")), ep("10.244.1.7", onNode("node-a")), ep("10.244.3.7", onNode("node-c"))))
		}, "default", "aff"},
		{"local-endpoint-gone", func() {
			e.update(newSlice("default", "npl-1", "npl", v4, tcpPorts, ep("10.244.2.4", onNode("node-b"))))
		}, "default", "npl"},
		{"endpoints-appear", func() {
			e.add(newSlice("default", "empty-1", "empty", v4, tcpPorts, ep("10.244.3.15", onNode("node-c"))))
		}, "default", "empty"},
		{"delete-affinity-service", func() {
			e.delete(newService("default", "aff", []string{"10.96.0.14"}))
		}, "default", "aff"},
		{"delete-dual-stack-service", func() {
			e.delete(newService("default", "dual", nil))
		}, "default", "dual"},
	}
}
