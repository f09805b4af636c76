package dns

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// TestPackedAnswers: a question asked again over UDP is answered from the
// packed cache with the same bytes as the full path, up to the ID and the RD
// and CD flags; rotation goes on over every address; a sync and a reload
// invalidate; a pod asking its first search domain still gets autopath.
func TestPackedAnswers(t *testing.T) {
	src := specCluster()
	loop := netip.MustParseAddr("127.0.0.1")
	pods := &lockedPods{m: fakePods{}}
	h := newTestHandler(t, src, pods, Defaults())
	addr := serve(t, h)
	ask := func(name string, qtype uint16, edns bool, tweak func(*mdns.Msg)) *mdns.Msg {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		if edns {
			m.SetEdns0(4096, true)
		}
		if tweak != nil {
			tweak(m)
		}
		r := exchange(t, "udp", addr, m)
		if r.Id != m.Id || r.RecursionDesired != m.RecursionDesired || r.CheckingDisabled != m.CheckingDisabled {
			t.Errorf("%s: id %d/%d RD %v/%v CD %v/%v", name, r.Id, m.Id, r.RecursionDesired, m.RecursionDesired, r.CheckingDisabled, m.CheckingDisabled)
		}
		return r
	}
	cached := func() int {
		pc := h.packed.Load()
		if pc == nil {
			return 0
		}
		pc.mu.RLock()
		defer pc.mu.RUnlock()
		return len(pc.m)
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"Web.NS1.svc.cluster.local.", mdns.TypeA, false},
		{"web.ns1.svc.cluster.local.", mdns.TypeA, true},
		{"_http._tcp.headless.ns1.svc.cluster.local.", mdns.TypeSRV, true},
		{"nope.ns1.svc.cluster.local.", mdns.TypeA, false},
		{"web.ns1.svc.cluster.local.", mdns.TypeAAAA, false},
		{"20.0.96.10.in-addr.arpa.", mdns.TypePTR, false},
		{"dns-version.cluster.local.", mdns.TypeTXT, false},
	} {
		first := ask(tc.name, tc.qtype, tc.edns, nil)
		n := cached()
		second := ask(tc.name, tc.qtype, tc.edns, func(m *mdns.Msg) { m.RecursionDesired = false; m.CheckingDisabled = true })
		if cached() != n {
			t.Errorf("%s %s: the second query was not answered from the cache", tc.name, mdns.TypeToString[tc.qtype])
		}
		first.Id, second.Id = 0, 0
		first.RecursionDesired, second.RecursionDesired = false, false
		second.CheckingDisabled = false
		if first.String() != second.String() {
			t.Errorf("%s: cached answer differs:\n%v\nfull path:\n%v", tc.name, second, first)
		}
		if second.Question[0].Name != tc.name {
			t.Errorf("question %q, want %q as asked", second.Question[0].Name, tc.name)
		}
	}
	if cached() == 0 {
		t.Fatal("nothing cached")
	}

	// Rotation: every endpoint comes first in turn.
	firsts := map[string]bool{}
	for range 8 {
		r := ask("headless.ns1.svc.cluster.local.", mdns.TypeA, false, nil)
		if len(r.Answer) != 2 {
			t.Fatalf("headless: %v", r.Answer)
		}
		firsts[r.Answer[0].(*mdns.A).A.String()] = true
	}
	if len(firsts) != 2 {
		t.Errorf("first addresses %v; want both endpoints in turn", firsts)
	}

	// A sync invalidates: a new endpoint shows at once.
	src.addSlice(slice("ns1", "empty", "empty-2", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.3.3"}))
	ask("empty.ns1.svc.cluster.local.", mdns.TypeA, false, nil)
	ask("empty.ns1.svc.cluster.local.", mdns.TypeA, false, nil)
	h.zone.MarkService("ns1", "empty")
	if err := h.zone.Sync(); err != nil {
		t.Fatal(err)
	}
	if r := ask("empty.ns1.svc.cluster.local.", mdns.TypeA, false, nil); len(r.Answer) != 1 {
		t.Errorf("after a sync: %v", r)
	}

	// Autopath: the NXDOMAIN cached for a non-pod client is not what a pod of
	// ns1 gets for its first search domain.
	name := "kubernetes.default.ns1.svc.cluster.local."
	if r := ask(name, mdns.TypeA, false, nil); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("not a pod: %v", r)
	}
	ask(name, mdns.TypeA, false, nil)
	pods.set(loop, "ns1")
	if r := ask(name, mdns.TypeA, false, nil); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 2 {
		t.Errorf("a pod of ns1 after a cached NXDOMAIN: %v", r)
	}

	// A reload invalidates.
	cfg := Defaults()
	cfg.TTL = 42
	h.SetConfig(cfg)
	if r := ask("web.ns1.svc.cluster.local.", mdns.TypeA, false, nil); r.Answer[0].Header().Ttl != 42 {
		t.Errorf("after a reload: %v", r.Answer)
	}
}

// TestPackedNoAllocs: a cached answer costs no allocation.
func TestPackedNoAllocs(t *testing.T) {
	h := newTestHandler(t, specCluster(), nil, Defaults())
	m := new(mdns.Msg)
	m.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
	b, _ := m.Pack()
	client := netip.MustParseAddr("127.0.0.1")
	snap, cfg := h.zone.snapshot(), h.cfg.Load()
	resp, source := h.Answer(t.Context(), m, client, false)
	h.storePacked(b, m, resp, source, client, snap, cfg)
	key, out := make([]byte, 0, 300), make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		var ok bool
		out, key, ok = h.fastAnswer(b, client, key, out)
		if !ok {
			t.Fatal("not cached")
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per cached answer", allocs)
	}
}

// lockedPods is a PodIndex the test changes while the server reads it.
type lockedPods struct {
	mu sync.Mutex
	m  fakePods
}

func (p *lockedPods) set(ip netip.Addr, ns string) { p.mu.Lock(); p.m[ip] = ns; p.mu.Unlock() }
func (p *lockedPods) Namespace(ip netip.Addr) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m.Namespace(ip)
}
func (p *lockedPods) InNamespace(ns string, ip netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m.InNamespace(ns, ip)
}

// BenchmarkUDPCached: one client over loopback asking a cached question, the
// whole server path (socket, packed cache, metrics). Profile with
// go test -run x -bench UDPCached -cpuprofile cpu.out ./internal/dns/.
func BenchmarkUDPCached(b *testing.B) {
	z := NewZone(specCluster(), nil, quietLog())
	if err := z.Sync(); err != nil {
		b.Fatal(err)
	}
	h := NewHandler(Defaults(), z, nil, NewMetrics(prometheus.NewRegistry()), quietLog())
	servers, err := listen("127.0.0.1:0", 2, h)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = servers.udp.Serve() }()
	defer shutdown(servers)
	conn, err := net.Dial("udp", servers.udp.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	m := new(mdns.Msg)
	m.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
	q, _ := m.Pack()
	buf := make([]byte, 1500)
	b.ResetTimer()
	for range b.N {
		if _, err := conn.Write(q); err != nil {
			b.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
