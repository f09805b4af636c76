package routing

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// compute is Compute for states that must have no problems.
func compute(t *testing.T, mode Mode, self Node, others []Node, links ...Link) Desired {
	t.Helper()
	d, errs := Compute(mode, self, others, links)
	if len(errs) > 0 {
		t.Fatalf("Compute: %v", errs)
	}
	return d
}

// canon sorts the lines of a rendered state: the fake lists its entries in its
// own order.
func canon(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// checkState verifies that the fake holds exactly d.
func checkState(t *testing.T, f *Fake, d Desired) {
	t.Helper()
	if diff := cmp.Diff(canon(d.String()), canon(f.Dump(d.Mode, d.PodMTU, d.RouteMTU))); diff != "" {
		t.Errorf("programmed state differs from the desired one (-want +got):\n%s", diff)
	}
	if d.VXLAN != nil && (f.Device == nil || !reflect.DeepEqual(*f.Device, *d.VXLAN)) {
		t.Errorf("VXLAN device %+v, want %+v", f.Device, d.VXLAN)
	}
}

func apply(t *testing.T, f *Fake, d Desired, want Changes) {
	t.Helper()
	ch, err := Apply(f, d)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if ch != want {
		t.Errorf("Apply changes = %+v, want %+v", ch, want)
	}
	checkState(t, f, d)
}

func TestApplyFromEmpty(t *testing.T) {
	tests := []struct {
		name string
		d    Desired
		want Changes
	}{
		// 4 routes, 4 neighbours, 2 FDB entries.
		{"overlay-dual", compute(t, Overlay, node(1, dual), nodes(dual, 2, 3), eth0dual), Changes{Added: 10}},
		// 4 routes, 4 neighbours, 4 FDB entries.
		{"overlay-v4-5nodes", compute(t, Overlay, node(1, v4), nodes(v4, 2, 3, 4, 5), eth0v4), Changes{Added: 12}},
		{"overlay-alone", compute(t, Overlay, node(1, v4), nil, eth0v4), Changes{}},
		{"native-dual", compute(t, Native, node(1, dual), nodes(dual, 2, 3), eth0dual), Changes{Added: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(eth0dual)
			apply(t, f, tt.d, tt.want)
			if tt.d.VXLAN == nil && f.Device != nil {
				t.Errorf("native mode created a VXLAN device")
			}
		})
	}
}

func TestApplyUnchangedIsNoop(t *testing.T) {
	tests := []struct {
		name string
		d    Desired
	}{
		{"overlay", compute(t, Overlay, node(1, dual), nodes(dual, 2, 3, 4), eth0dual)},
		{"native", compute(t, Native, node(1, dual), nodes(dual, 2, 3, 4), eth0dual)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(eth0dual)
			if _, err := Apply(f, tt.d); err != nil {
				t.Fatal(err)
			}
			calls := f.Calls
			for range 3 {
				// A desired state computed again (new slices, same content) changes nothing.
				d := tt.d
				if d.VXLAN != nil {
					v := *d.VXLAN
					v.Addrs = slices.Clone(v.Addrs)
					d.VXLAN = &v
				}
				apply(t, f, d, Changes{})
				if f.Calls != calls {
					t.Fatalf("Apply of an unchanged state made %d calls that change the dataplane", f.Calls-calls)
				}
			}
		})
	}
}

func TestApplyRemoveNode(t *testing.T) {
	tests := []struct {
		name        string
		mode        Mode
		stack       stack
		wantRemoved int
	}{
		// node-3's 2 routes, 2 neighbours and 1 FDB entry.
		{"overlay-dual", Overlay, dual, 5},
		// node-3's route, neighbour and FDB entry.
		{"overlay-v4", Overlay, v4, 3},
		{"native-dual", Native, dual, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(eth0dual)
			before := compute(t, tt.mode, node(1, tt.stack), nodes(tt.stack, 2, 3, 4), eth0dual)
			if _, err := Apply(f, before); err != nil {
				t.Fatal(err)
			}
			after := compute(t, tt.mode, node(1, tt.stack), nodes(tt.stack, 2, 4), eth0dual)
			calls := f.Calls
			apply(t, f, after, Changes{Removed: tt.wantRemoved})
			if got := f.Calls - calls; got != tt.wantRemoved {
				t.Errorf("%d calls to remove %d entries", got, tt.wantRemoved)
			}
			// Nothing of node-3 is left, and nothing else was lost.
			dump := f.Dump(after.Mode, after.PodMTU, after.RouteMTU)
			for _, s := range []string{"10.244.3.", "fd00:10:244:3:", VTEPMAC("node-3"), "192.168.1.13"} {
				if strings.Contains(dump, s) {
					t.Errorf("%s of the removed node is still programmed:\n%s", s, dump)
				}
			}
		})
	}
}

func TestApplyModeSwitch(t *testing.T) {
	overlay := compute(t, Overlay, node(1, dual), nodes(dual, 2, 3), eth0dual)
	native := compute(t, Native, node(1, dual), nodes(dual, 2, 3), eth0dual)
	f := NewFake(eth0dual)
	apply(t, f, overlay, Changes{Added: 10})

	// Overlay to native: the device goes, with its neighbour and FDB entries; the
	// 4 routes through it are replaced by 4 native ones.
	apply(t, f, native, Changes{Added: 4, Removed: 4})
	if f.Device != nil || len(f.NeighSet) != 0 || len(f.FDBSet) != 0 {
		t.Errorf("after the switch to native: device %v, %d neighbours, %d FDB entries", f.Device, len(f.NeighSet), len(f.FDBSet))
	}
	for _, r := range f.RouteSet {
		if r.Dev == VXLANDevice {
			t.Errorf("route %s through the deleted device", r)
		}
	}
	calls := f.Calls
	apply(t, f, native, Changes{})
	if f.Calls != calls {
		t.Errorf("native Apply after the switch made %d calls", f.Calls-calls)
	}

	// And back.
	apply(t, f, overlay, Changes{Added: 10, Removed: 4})
}

// A node replaced by one of another name that gets the freed pod range: the
// VTEP address stays, its MAC changes.
func TestApplyPodRangeReused(t *testing.T) {
	f := NewFake(eth0v4)
	apply(t, f, compute(t, Overlay, node(1, v4), nodes(v4, 2, 3), eth0v4), Changes{Added: 6})
	n9 := node(3, v4)
	n9.Name = "node-9"
	n9.InternalIPs = []netip.Addr{netip.MustParseAddr("192.168.1.19")}
	d := compute(t, Overlay, node(1, v4), []Node{node(2, v4), n9}, eth0v4)
	// New neighbour (same IP, new MAC) and FDB entry; old FDB entry removed; the
	// route is the same.
	apply(t, f, d, Changes{Added: 2, Removed: 1})
	if n, ok := f.NeighSet["10.244.3.0"]; !ok || n.MAC != VTEPMAC("node-9") {
		t.Errorf("neighbour 10.244.3.0 = %+v (present %v), want MAC %s", n, ok, VTEPMAC("node-9"))
	}
	// And it stays so.
	apply(t, f, d, Changes{})
}

// A node whose underlay address changes: its FDB entry moves.
func TestApplyNodeAddressChange(t *testing.T) {
	f := NewFake(eth0v4)
	apply(t, f, compute(t, Overlay, node(1, v4), nodes(v4, 2, 3), eth0v4), Changes{Added: 6})
	moved := node(3, v4)
	moved.InternalIPs = []netip.Addr{netip.MustParseAddr("192.168.1.99")}
	apply(t, f, compute(t, Overlay, node(1, v4), []Node{node(2, v4), moved}, eth0v4), Changes{Added: 1, Removed: 1})

	// In native mode the route changes its gateway.
	f = NewFake(eth0v4)
	apply(t, f, compute(t, Native, node(1, v4), nodes(v4, 2, 3), eth0v4), Changes{Added: 2})
	apply(t, f, compute(t, Native, node(1, v4), []Node{node(2, v4), moved}, eth0v4), Changes{Added: 1, Removed: 1})
}

func TestApplyDeviceUpdate(t *testing.T) {
	f := NewFake(eth0v4)
	apply(t, f, compute(t, Overlay, node(1, v4), nodes(v4, 2), eth0v4), Changes{Added: 3})
	jumbo := link("eth0", 2, 9000, "192.168.1.11/24")
	calls := f.Calls
	d := compute(t, Overlay, node(1, v4), nodes(v4, 2), jumbo)
	apply(t, f, d, Changes{})
	if f.Device == nil || f.Device.MTU != 8950 {
		t.Errorf("device after an MTU change: %+v", f.Device)
	}
	if f.Calls != calls+1 {
		t.Errorf("%d calls for an MTU change, want 1", f.Calls-calls)
	}
}

func TestApplyRouteError(t *testing.T) {
	boom := errors.New("boom")
	d := compute(t, Overlay, node(1, dual), nodes(dual, 2, 3), eth0dual)
	f := NewFake(eth0dual)
	f.FailRoute = boom
	ch, err := Apply(f, d)
	if !errors.Is(err, boom) {
		t.Fatalf("Apply error = %v, want %v", err, boom)
	}
	// The 4 neighbour and 2 FDB entries are programmed, no route is.
	if want := (Changes{Added: 6}); ch != want {
		t.Errorf("changes = %+v, want %+v", ch, want)
	}
	if f.Device == nil || len(f.NeighSet) != 4 || len(f.FDBSet) != 2 || len(f.RouteSet) != 0 {
		t.Errorf("after a route error: device %v, %d neighbours, %d FDB entries, %d routes",
			f.Device, len(f.NeighSet), len(f.FDBSet), len(f.RouteSet))
	}
	// Once the error is gone, the next Apply adds the routes and only them.
	f.FailRoute = nil
	apply(t, f, d, Changes{Added: 4})

	// Removing a node adds no route: a failing ReplaceRoute is not even called.
	f.FailRoute = boom
	after := compute(t, Overlay, node(1, dual), nodes(dual, 2), eth0dual)
	ch, err = Apply(f, after)
	if err != nil {
		t.Errorf("Apply failed although no route had to be added: %v", err)
	}
	if want := (Changes{Removed: 5}); ch != want {
		t.Errorf("changes = %+v, want %+v", ch, want)
	}
	checkState(t, f, after)
}

// failing makes chosen calls of a Fake fail.
type failing struct {
	*Fake
	ensure, del error
}

func (f failing) EnsureVXLAN(v VXLAN) error {
	if f.ensure != nil {
		return f.ensure
	}
	return f.Fake.EnsureVXLAN(v)
}

func (f failing) DeleteNeighbor(dev string, n Neighbor) error {
	if f.del != nil {
		return f.del
	}
	return f.Fake.DeleteNeighbor(dev, n)
}

func TestApplyDeviceError(t *testing.T) {
	boom := errors.New("no vxlan module")
	f := failing{Fake: NewFake(eth0v4), ensure: boom}
	ch, err := Apply(f, compute(t, Overlay, node(1, v4), nodes(v4, 2), eth0v4))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "vxlan device") {
		t.Errorf("Apply error = %v, want the device error", err)
	}
	// Routes through a device that could not be made are not added.
	if ch != (Changes{}) || len(f.RouteSet)+len(f.NeighSet)+len(f.FDBSet) != 0 {
		t.Errorf("Apply without a device changed %+v: %s", ch, f.Dump(Overlay, 0, 0))
	}
}

func TestApplyDeleteError(t *testing.T) {
	boom := errors.New("busy")
	f := failing{Fake: NewFake(eth0v4)}
	if _, err := Apply(f, compute(t, Overlay, node(1, v4), nodes(v4, 2, 3), eth0v4)); err != nil {
		t.Fatal(err)
	}
	f.del = boom
	after := compute(t, Overlay, node(1, v4), nodes(v4, 2), eth0v4)
	ch, err := Apply(f, after)
	if !errors.Is(err, boom) {
		t.Errorf("Apply error = %v, want %v", err, boom)
	}
	// The route and FDB entry are removed; the neighbour is not, and not counted.
	if want := (Changes{Removed: 2}); ch != want {
		t.Errorf("changes = %+v, want %+v", ch, want)
	}
	f.del = nil
	apply(t, f.Fake, after, Changes{Removed: 1})
}

func TestDiff(t *testing.T) {
	key := func(s string) string { return s }
	tests := []struct {
		have, want []string
		add, del   []string
	}{
		{nil, nil, nil, nil},
		{nil, []string{"a", "b"}, []string{"a", "b"}, nil},
		{[]string{"a", "b"}, nil, nil, []string{"a", "b"}},
		{[]string{"a", "b"}, []string{"b", "c"}, []string{"c"}, []string{"a"}},
		{[]string{"a", "b"}, []string{"b", "a"}, nil, nil},
	}
	for _, tt := range tests {
		add, del := diff(tt.have, tt.want, key)
		if !slices.Equal(add, tt.add) || !slices.Equal(del, tt.del) {
			t.Errorf("diff(%v, %v) = %v, %v; want %v, %v", tt.have, tt.want, add, del, tt.add, tt.del)
		}
	}
}
