package fastpath

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeDataplane records what the controller programs.
type fakeDataplane struct {
	endpoints map[netip.Addr]Endpoint
	ranges    map[netip.Prefix]bool
	attached  map[int]Role
	tunnel    Tunnel
	vteps     map[MAC]netip.Addr
	failPut   bool
}

func newFake() *fakeDataplane {
	return &fakeDataplane{endpoints: map[netip.Addr]Endpoint{}, ranges: map[netip.Prefix]bool{}, attached: map[int]Role{},
		vteps: map[MAC]netip.Addr{}}
}

func (f *fakeDataplane) Tunnel() (Tunnel, error)  { return f.tunnel, nil }
func (f *fakeDataplane) SetTunnel(t Tunnel) error { f.tunnel = t; return nil }
func (f *fakeDataplane) DeleteVTEP(m MAC) error   { delete(f.vteps, m); return nil }
func (f *fakeDataplane) VTEPs() (map[MAC]netip.Addr, error) {
	return maps.Clone(f.vteps), nil
}
func (f *fakeDataplane) PutVTEP(m MAC, a netip.Addr) error {
	if f.tunnel.IfIndex != 0 {
		return errors.New("VTEP written after the tunnel was turned on")
	}
	f.vteps[m] = a
	return nil
}

func (f *fakeDataplane) Endpoints() (map[netip.Addr]Endpoint, error) {
	return maps.Clone(f.endpoints), nil
}

func (f *fakeDataplane) Put(a netip.Addr, e Endpoint) error {
	if f.failPut {
		return errors.New("injected failure")
	}
	f.endpoints[a] = e
	return nil
}

func (f *fakeDataplane) Delete(a netip.Addr) error { delete(f.endpoints, a); return nil }
func (f *fakeDataplane) Ranges() (map[netip.Prefix]bool, error) {
	return maps.Clone(f.ranges), nil
}
func (f *fakeDataplane) PutRange(p netip.Prefix, remote bool) error { f.ranges[p] = remote; return nil }
func (f *fakeDataplane) DeleteRange(p netip.Prefix) error           { delete(f.ranges, p); return nil }
func (f *fakeDataplane) Attached() map[int]Role                     { return maps.Clone(f.attached) }
func (f *fakeDataplane) Attach(idx int, r Role) error               { f.attached[idx] = r; return nil }
func (f *fakeDataplane) Detach(idx int) error                       { delete(f.attached, idx); return nil }
func (f *fakeDataplane) addrs() map[netip.Addr]int                  { return addrsOf(f.endpoints) }
func addrsOf(m map[netip.Addr]Endpoint) map[netip.Addr]int {
	out := map[netip.Addr]int{}
	for a, e := range m {
		out[a] = e.IfIndex
	}
	return out
}

var (
	a4, a6 = netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("fd00::1:2")
	b4     = netip.MustParseAddr("10.0.1.3")
	c4     = netip.MustParseAddr("10.0.1.4")
)

// node is a node's pods as discovery finds them; the node has one uplink
// (interface 2) and the ranges of clusterRanges.
type node map[netip.Addr]Endpoint

var clusterRanges = map[netip.Prefix]bool{netip.MustParsePrefix("10.0.0.0/16"): true, netip.MustParsePrefix("10.0.1.0/24"): false}

func (n node) discover() (Local, error) {
	return Local{Endpoints: maps.Clone(n), Uplinks: map[int]bool{2: true}, Ranges: clusterRanges}, nil
}

func newNode() node {
	return node{a4: {IfIndex: 10}, a6: {IfIndex: 10}, b4: {IfIndex: 11}, c4: {IfIndex: 12}}
}

func syncOnce(t *testing.T, c *Controller) {
	t.Helper()
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func check(t *testing.T, step string, f *fakeDataplane, want map[netip.Addr]int) {
	t.Helper()
	if diff := cmp.Diff(want, f.addrs()); diff != "" {
		t.Errorf("%s: endpoints (-want +got):\n%s", step, diff)
	}
}

func TestControllerWithoutPolicy(t *testing.T) {
	f, n := newFake(), newNode()
	c := NewController(f, n.discover, slog.Default())
	syncOnce(t, c)
	check(t, "first sync", f, map[netip.Addr]int{a4: 10, a6: 10, b4: 11, c4: 12})
	if diff := cmp.Diff(map[int]Role{2: FromNodes, 10: FromPod, 11: FromPod, 12: FromPod}, f.attached); diff != "" {
		t.Errorf("attached (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(clusterRanges, f.ranges); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
	// A pod goes, its address comes back on another veth, a stale entry of
	// an earlier agent is in the map.
	delete(n, b4)
	n[c4] = Endpoint{IfIndex: 13}
	f.endpoints[netip.MustParseAddr("10.0.1.99")] = Endpoint{IfIndex: 5}
	f.ranges[netip.MustParsePrefix("10.9.0.0/16")] = true
	f.attached[11] = FromNodes
	syncOnce(t, c)
	check(t, "after changes", f, map[netip.Addr]int{a4: 10, a6: 10, c4: 13})
	if diff := cmp.Diff(map[int]Role{2: FromNodes, 10: FromPod, 13: FromPod}, f.attached); diff != "" {
		t.Errorf("attached (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(clusterRanges, f.ranges); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
	if st := c.Status(); st.Endpoints != 3 || st.Interfaces != 3 || st.LastError != "" {
		t.Errorf("status %+v", st)
	}
}

func TestControllerFollowsPolicy(t *testing.T) {
	f, n := newFake(), newNode()
	c := NewController(f, n.discover, slog.Default())
	c.Gate()
	syncOnce(t, c)
	check(t, "before the policy controller's first report", f, map[netip.Addr]int{})
	if len(f.attached) != 4 {
		t.Errorf("attached %v: the programs belong on every pod veth and the uplink", f.attached)
	}

	unselected := map[netip.Addr]bool{a4: true, a6: true, b4: true}
	if err := c.Narrow(unselected); err != nil {
		t.Fatal(err)
	}
	syncOnce(t, c)
	check(t, "narrowed before the first rules", f, map[netip.Addr]int{})
	c.Widen(unselected)
	syncOnce(t, c)
	check(t, "widened", f, map[netip.Addr]int{a4: 10, a6: 10, b4: 11})

	// A policy selects b: b leaves the fast path in Narrow, before any sync.
	next := map[netip.Addr]bool{a4: true, a6: true}
	if err := c.Narrow(next); err != nil {
		t.Fatal(err)
	}
	check(t, "narrowed", f, map[netip.Addr]int{a4: 10, a6: 10})
	// The rules fail to program (no Widen): a sync keeps b out.
	syncOnce(t, c)
	check(t, "narrowed, rules not programmed", f, map[netip.Addr]int{a4: 10, a6: 10})
	// A narrowing never adds: c, unselected now, waits for Widen.
	if err := c.Narrow(map[netip.Addr]bool{a4: true, a6: true, c4: true}); err != nil {
		t.Fatal(err)
	}
	syncOnce(t, c)
	check(t, "narrowed with a new address", f, map[netip.Addr]int{a4: 10, a6: 10})
	c.Widen(map[netip.Addr]bool{a4: true, a6: true, c4: true})
	syncOnce(t, c)
	check(t, "widened again", f, map[netip.Addr]int{a4: 10, a6: 10, c4: 12})
}

func TestControllerReportsFailures(t *testing.T) {
	f, n := newFake(), newNode()
	f.failPut = true
	c := NewController(f, n.discover, slog.Default())
	if err := c.Sync(context.Background()); err == nil {
		t.Fatal("a failed put went unreported")
	}
	if comp := c.Component(); comp.LastError == "" || !comp.LastSync.IsZero() {
		t.Errorf("component %+v: want the error and no sync time", comp)
	}
}

func TestEndpoints(t *testing.T) {
	hostMAC := MAC{0xee, 1, 2, 3, 4, 5}
	veths := map[int]MAC{10: hostMAC, 11: hostMAC}
	ranges := []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("fd00::1:0/112")}
	routes := []hostRoute{
		{a6, 10}, {a4, 10}, // one dual-stack pod: one MAC from its IPv4 address
		{netip.MustParseAddr("fd00::1:3"), 11}, // an IPv6-only pod
		{netip.MustParseAddr("10.0.2.7"), 11},  // another node's range
		{netip.MustParseAddr("10.0.1.0"), 10},  // the range's own address
		{netip.MustParseAddr("10.0.1.5"), 3},   // not through a pod veth
	}
	want := map[netip.Addr]Endpoint{
		a4:                               {IfIndex: 10, PodMAC: MAC{0x0a, 0x58, 10, 0, 1, 2}, HostMAC: hostMAC},
		a6:                               {IfIndex: 10, PodMAC: MAC{0x0a, 0x58, 10, 0, 1, 2}, HostMAC: hostMAC},
		netip.MustParseAddr("fd00::1:3"): {IfIndex: 11, PodMAC: MAC{0x0a, 0x58, 0, 1, 0, 3}, HostMAC: hostMAC},
	}
	if diff := cmp.Diff(want, endpoints(routes, veths, ranges)); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
}

// TestControllerTakesOverTheTunnel: in overlay mode the controller programs
// the VTEPs before the tunnel, attaches the tunnel program to the underlay,
// follows the forwarding entries, and turns it all off when the tunnel goes.
func TestControllerTakesOverTheTunnel(t *testing.T) {
	f := newFake()
	peer1, peer2 := MAC{0x0e, 0, 0, 0, 0, 1}, MAC{0x0e, 0, 0, 0, 0, 2}
	tun := Tunnel{IfIndex: 2, Local: netip.MustParseAddr("192.168.1.1"), VNI: 1, Port: 8472, MAC: MAC{0x0e, 0, 0, 0, 0, 9}}
	local := Local{Endpoints: newNode(), Uplinks: map[int]bool{2: true}, Ranges: clusterRanges, Tunnel: tun, Underlay: 3,
		VTEPs: map[MAC]netip.Addr{peer1: netip.MustParseAddr("192.168.1.2")}}
	c := NewController(f, func() (Local, error) { return local, nil }, slog.New(slog.DiscardHandler))
	syncOnce(t, c)
	if f.tunnel != tun || f.attached[3] != FromTunnel || f.attached[2] != FromNodes || len(f.vteps) != 1 {
		t.Fatalf("tunnel %+v, attached %v, VTEPs %v", f.tunnel, f.attached, f.vteps)
	}
	// A node joins, another leaves: the VTEPs follow. (The fake refuses VTEP
	// writes once the tunnel is on, so lift it for this step.)
	local.VTEPs = map[MAC]netip.Addr{peer2: netip.MustParseAddr("192.168.1.3")}
	f.tunnel = Tunnel{}
	syncOnce(t, c)
	if want := (map[MAC]netip.Addr{peer2: netip.MustParseAddr("192.168.1.3")}); !maps.Equal(f.vteps, want) || f.tunnel != tun {
		t.Errorf("VTEPs %v (want %v), tunnel %+v", f.vteps, want, f.tunnel)
	}
	// Native mode: no tunnel, no tunnel program, no VTEPs.
	local.Tunnel, local.Underlay, local.VTEPs = Tunnel{}, 0, nil
	syncOnce(t, c)
	if f.tunnel != (Tunnel{}) || len(f.vteps) != 0 {
		t.Errorf("after the tunnel went: tunnel %+v, VTEPs %v", f.tunnel, f.vteps)
	}
	if _, ok := f.attached[3]; ok {
		t.Errorf("the tunnel program is still attached: %v", f.attached)
	}
}
