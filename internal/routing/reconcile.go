package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
)

// Dataplane is the narrow kernel interface routing needs. The netlink
// implementation programs the node; Fake records state for tests.
type Dataplane interface {
	Links() ([]Link, error)
	// EnsureVXLAN creates or updates the VXLAN device; a device whose immutable
	// attributes differ is replaced.
	EnsureVXLAN(v VXLAN) error
	DeleteVXLAN(name string) error
	// Routes lists the routes marked with RouteProtocol.
	Routes() ([]Route, error)
	ReplaceRoute(r Route) error
	DeleteRoute(r Route) error
	Neighbors(dev string) ([]Neighbor, error)
	ReplaceNeighbor(dev string, n Neighbor) error
	DeleteNeighbor(dev string, n Neighbor) error
	FDB(dev string) ([]FDB, error)
	ReplaceFDB(dev string, f FDB) error
	DeleteFDB(dev string, f FDB) error
}

// Changes counts what one Apply did.
type Changes struct{ Added, Removed int }

// Apply programs d: it adds what is missing and removes what is programmed but
// no longer desired, and leaves everything else untouched.
func Apply(dp Dataplane, d Desired) (Changes, error) {
	var ch Changes
	var errs []error
	removeStale := func() {}
	if d.VXLAN != nil {
		if err := dp.EnsureVXLAN(*d.VXLAN); err != nil {
			return ch, fmt.Errorf("vxlan device: %w", err)
		}
	} else if err := dp.DeleteVXLAN(VXLANDevice); err != nil {
		errs = append(errs, err)
	}
	// Forwarding entries before routes, so that a new route never points at a VTEP
	// the device cannot reach yet.
	if d.VXLAN != nil {
		haveF, err := dp.FDB(VXLANDevice)
		if err != nil {
			return ch, err
		}
		add, del := diff(haveF, d.FDB, func(f FDB) string { return f.MAC + "|" + f.Dst.String() })
		for _, f := range add {
			errs = appendErr(errs, dp.ReplaceFDB(VXLANDevice, f), &ch.Added)
		}
		haveN, err := dp.Neighbors(VXLANDevice)
		if err != nil {
			return ch, err
		}
		addN, delN := diff(haveN, d.Neighbors, func(n Neighbor) string { return n.IP.String() + "|" + n.MAC })
		for _, n := range addN {
			errs = appendErr(errs, dp.ReplaceNeighbor(VXLANDevice, n), &ch.Added)
		}
		// A neighbour entry is keyed by its address alone: one whose MAC changed
		// (a pod range handed to a new node) was replaced above, and deleting the
		// old one would delete the new one.
		wantIP := make(map[netip.Addr]bool, len(d.Neighbors))
		for _, n := range d.Neighbors {
			wantIP[n.IP] = true
		}
		delN = slices.DeleteFunc(delN, func(n Neighbor) bool { return wantIP[n.IP] })
		// Stale entries go after the routes that use them (below).
		removeStale = func() {
			for _, n := range delN {
				errs = appendErr(errs, dp.DeleteNeighbor(VXLANDevice, n), &ch.Removed)
			}
			for _, f := range del {
				errs = appendErr(errs, dp.DeleteFDB(VXLANDevice, f), &ch.Removed)
			}
		}
	}
	haveR, err := dp.Routes()
	if err != nil {
		return ch, err
	}
	addR, delR := diff(haveR, d.Routes, Route.String)
	for _, r := range delR {
		errs = appendErr(errs, dp.DeleteRoute(r), &ch.Removed)
	}
	for _, r := range addR {
		errs = appendErr(errs, dp.ReplaceRoute(r), &ch.Added)
	}
	removeStale()
	return ch, errors.Join(errs...)
}

func appendErr(errs []error, err error, n *int) []error {
	if err != nil {
		return append(errs, err)
	}
	*n++
	return errs
}

// diff returns the desired items missing from have, and the items of have that
// are not desired, by key.
func diff[T any](have, want []T, key func(T) string) (add, del []T) {
	h := map[string]bool{}
	for _, x := range have {
		h[key(x)] = true
	}
	w := map[string]bool{}
	for _, x := range want {
		w[key(x)] = true
		if !h[key(x)] {
			add = append(add, x)
		}
	}
	for _, x := range have {
		if !w[key(x)] {
			del = append(del, x)
		}
	}
	return add, del
}

// Fake is an in-memory Dataplane whose state tests can inspect.
type Fake struct {
	LinkList  []Link
	Device    *VXLAN
	RouteSet  map[string]Route
	NeighSet  map[string]Neighbor
	FDBSet    map[string]FDB
	Calls     int
	FailRoute error
}

// NewFake returns an empty fake with the given underlay links.
func NewFake(links ...Link) *Fake {
	return &Fake{LinkList: links, RouteSet: map[string]Route{}, NeighSet: map[string]Neighbor{}, FDBSet: map[string]FDB{}}
}

func (f *Fake) Links() ([]Link, error) { return f.LinkList, nil }
func (f *Fake) EnsureVXLAN(v VXLAN) error {
	// Like the netlink implementation, a device that is as desired is left alone.
	if f.Device == nil || !reflect.DeepEqual(*f.Device, v) {
		f.Calls++
	}
	f.Device = &v
	return nil
}
func (f *Fake) DeleteVXLAN(string) error {
	if f.Device != nil {
		f.Calls++
	}
	f.Device = nil
	f.NeighSet, f.FDBSet = map[string]Neighbor{}, map[string]FDB{}
	return nil
}
func (f *Fake) Routes() ([]Route, error) { return sortedValues(f.RouteSet, Route.String), nil }
func (f *Fake) ReplaceRoute(r Route) error {
	f.Calls++
	if f.FailRoute != nil {
		return f.FailRoute
	}
	f.RouteSet[r.String()] = r
	return nil
}
func (f *Fake) DeleteRoute(r Route) error { f.Calls++; delete(f.RouteSet, r.String()); return nil }
func (f *Fake) Neighbors(string) ([]Neighbor, error) {
	return sortedValues(f.NeighSet, func(n Neighbor) string { return n.IP.String() }), nil
}
func (f *Fake) ReplaceNeighbor(_ string, n Neighbor) error {
	f.Calls++
	f.NeighSet[n.IP.String()] = n
	return nil
}
func (f *Fake) DeleteNeighbor(_ string, n Neighbor) error {
	f.Calls++
	delete(f.NeighSet, n.IP.String())
	return nil
}
func (f *Fake) FDB(string) ([]FDB, error) {
	return sortedValues(f.FDBSet, func(x FDB) string { return x.MAC + x.Dst.String() }), nil
}
func (f *Fake) ReplaceFDB(_ string, x FDB) error {
	f.Calls++
	f.FDBSet[x.MAC+x.Dst.String()] = x
	return nil
}
func (f *Fake) DeleteFDB(_ string, x FDB) error {
	f.Calls++
	delete(f.FDBSet, x.MAC+x.Dst.String())
	return nil
}

// Dump renders the fake's state like Desired.String, for golden comparisons.
func (f *Fake) Dump(mode Mode, podMTU, routeMTU int) string {
	d := Desired{Mode: mode, VXLAN: f.Device, PodMTU: podMTU, RouteMTU: routeMTU}
	d.Routes, _ = f.Routes()
	d.Neighbors, _ = f.Neighbors(VXLANDevice)
	d.FDB, _ = f.FDB(VXLANDevice)
	return d.String()
}

func sortedValues[T any](m map[string]T, key func(T) string) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out
}
