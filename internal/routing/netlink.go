package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink programs the node's kernel in the current network namespace.
type Netlink struct{}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Links lists the node's interfaces with their connected prefixes (not the
// overlay device, veths or the gateway dummy).
func (Netlink) Links() ([]Link, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var out []Link
	for _, l := range ls {
		a := l.Attrs()
		if a.Name == VXLANDevice || a.Name == "lo" || strings.HasPrefix(a.Name, PodVethPrefix) || l.Type() == "dummy" {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		link := Link{Name: a.Name, Index: a.Index, MTU: a.MTU}
		for _, ad := range addrs {
			p := prefixOf(ad.IPNet)
			if p.Addr().IsLinkLocalUnicast() {
				continue
			}
			link.Prefixes = append(link.Prefixes, p)
		}
		out = append(out, link)
	}
	return out, nil
}

func (Netlink) EnsureVXLAN(v VXLAN) error {
	parent, err := netlink.LinkByName(v.Parent)
	if err != nil {
		return fmt.Errorf("underlay link %s: %w", v.Parent, err)
	}
	mac, err := net.ParseMAC(v.MAC)
	if err != nil {
		return err
	}
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: v.Name, MTU: v.MTU, HardwareAddr: mac},
		VxlanId:      v.VNI,
		VtepDevIndex: parent.Attrs().Index,
		SrcAddr:      v.Local.AsSlice(),
		Port:         v.Port,
		Learning:     false,
	}
	existing, err := netlink.LinkByName(v.Name)
	if err == nil {
		cur, ok := existing.(*netlink.Vxlan)
		same := ok && cur.VxlanId == v.VNI && cur.Port == v.Port && cur.VtepDevIndex == parent.Attrs().Index &&
			net.IP(cur.SrcAddr).Equal(v.Local.AsSlice()) && !cur.Learning
		if !same {
			// Immutable attributes differ: only then is the device replaced.
			if err := netlink.LinkDel(existing); err != nil {
				return fmt.Errorf("replace %s: %w", v.Name, err)
			}
			existing = nil
		}
	}
	if existing == nil || err != nil {
		if err := netlink.LinkAdd(want); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create %s: %w", v.Name, err)
		}
		if existing, err = netlink.LinkByName(v.Name); err != nil {
			return err
		}
	}
	if existing.Attrs().MTU != v.MTU {
		if err := netlink.LinkSetMTU(existing, v.MTU); err != nil {
			return err
		}
	}
	if existing.Attrs().HardwareAddr.String() != v.MAC {
		if err := netlink.LinkSetHardwareAddr(existing, mac); err != nil {
			return err
		}
	}
	for _, a := range v.Addrs {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(existing, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", a, v.Name, err)
		}
	}
	return netlink.LinkSetUp(existing)
}

func (Netlink) DeleteVXLAN(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(l)
}

func (Netlink) Routes() ([]Route, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range rs {
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		rt := Route{Dst: prefixOf(r.Dst), Dev: l.Attrs().Name, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			rt.Gw = gw.Unmap()
		}
		out = append(out, rt)
	}
	return out, nil
}

func toNetlinkRoute(r Route) (*netlink.Route, error) {
	l, err := netlink.LinkByName(r.Dev)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", r, err)
	}
	nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(r.Dst), Protocol: RouteProtocol}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

func (Netlink) ReplaceRoute(r Route) error {
	nr, err := toNetlinkRoute(r)
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(nr); err != nil {
		return fmt.Errorf("route %s: %w", r, err)
	}
	return nil
}

func (Netlink) DeleteRoute(r Route) error {
	nr, err := toNetlinkRoute(r)
	if err != nil {
		return nil // the device is gone, and the route with it
	}
	if err := netlink.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

func (Netlink) Neighbors(dev string) ([]Neighbor, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, nil
	}
	ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []Neighbor
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		out = append(out, Neighbor{IP: ip.Unmap(), MAC: n.HardwareAddr.String()})
	}
	return out, nil
}

func neigh(dev string, ip netip.Addr, mac string, fdb bool) (*netlink.Neigh, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, err
	}
	n := &netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: hw}
	if fdb {
		n.Family = unix.AF_BRIDGE
		n.Flags = netlink.NTF_SELF
	} else if ip.Is4() {
		n.Family = unix.AF_INET
	} else {
		n.Family = unix.AF_INET6
	}
	return n, nil
}

func (Netlink) ReplaceNeighbor(dev string, n Neighbor) error {
	nn, err := neigh(dev, n.IP, n.MAC, false)
	if err != nil {
		return err
	}
	return netlink.NeighSet(nn)
}

func (Netlink) DeleteNeighbor(dev string, n Neighbor) error {
	nn, err := neigh(dev, n.IP, n.MAC, false)
	if err != nil {
		return nil
	}
	if err := netlink.NeighDel(nn); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func (Netlink) FDB(dev string) ([]FDB, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, nil
	}
	ns, err := netlink.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, n := range ns {
		if n.IP == nil || n.HardwareAddr == nil || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		out = append(out, FDB{MAC: n.HardwareAddr.String(), Dst: ip.Unmap()})
	}
	return out, nil
}

func (Netlink) ReplaceFDB(dev string, f FDB) error {
	n, err := neigh(dev, f.Dst, f.MAC, true)
	if err != nil {
		return err
	}
	// NeighAppend: the kernel keeps one entry per (MAC, dst) for VXLAN devices.
	return netlink.NeighAppend(n)
}

func (Netlink) DeleteFDB(dev string, f FDB) error {
	n, err := neigh(dev, f.Dst, f.MAC, true)
	if err != nil {
		return nil
	}
	if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
