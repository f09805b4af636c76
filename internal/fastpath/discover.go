package fastpath

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/podmac"
	"amime.dev/amime/internal/routing"
)

// hostRoute is a host route of the node: a /32 or /128 to an address through
// an interface.
type hostRoute struct {
	dst     netip.Addr
	ifindex int
}

// endpoints pairs the node's host routes into its pod ranges with the pod
// veths they point at (veths: ifindex → the veth's MAC); the pod's MAC is
// derived from all its addresses, as the CNI plugin set it.
func endpoints(routes []hostRoute, veths map[int]MAC, podCIDRs []netip.Prefix) map[netip.Addr]Endpoint {
	byVeth := map[int][]netip.Addr{}
	for _, r := range routes {
		if _, ok := veths[r.ifindex]; !ok {
			continue
		}
		for _, p := range podCIDRs {
			if p.Contains(r.dst) && r.dst != p.Masked().Addr() {
				byVeth[r.ifindex] = append(byVeth[r.ifindex], r.dst)
				break
			}
		}
	}
	out := map[netip.Addr]Endpoint{}
	for idx, addrs := range byVeth {
		var mac MAC
		copy(mac[:], podmac.For(addrs))
		for _, a := range addrs {
			out[a] = Endpoint{IfIndex: idx, PodMAC: mac, HostMAC: veths[idx]}
		}
	}
	return out
}

// Discover reads the node from the current namespace: its pods from the
// host routes into its pod ranges (podCIDRs) through pod veths, its uplinks
// from the routes the routing controller programs, and the ranges: the
// cluster's (clusterCIDRs) and the node's.
func Discover(clusterCIDRs []netip.Prefix, podCIDRs func() []netip.Prefix) func() (Local, error) {
	return func() (Local, error) {
		links, err := netlink.LinkList()
		if err != nil {
			return Local{}, fmt.Errorf("list links: %w", err)
		}
		veths := map[int]MAC{}
		vxlans := map[int]*netlink.Vxlan{}
		for _, l := range links {
			a := l.Attrs()
			if vx, ok := l.(*netlink.Vxlan); ok {
				vxlans[a.Index] = vx
			}
			if l.Type() != "veth" || !strings.HasPrefix(a.Name, routing.PodVethPrefix) || len(a.HardwareAddr) != 6 {
				continue
			}
			var mac MAC
			copy(mac[:], a.HardwareAddr)
			veths[a.Index] = mac
		}
		var routes []hostRoute
		uplinks := map[int]bool{}
		for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return Local{}, fmt.Errorf("list routes: %w", err)
			}
			for _, r := range rs {
				if r.Dst == nil || r.LinkIndex == 0 {
					continue
				}
				ones, bits := r.Dst.Mask.Size()
				dst, ok := netip.AddrFromSlice(r.Dst.IP)
				if !ok {
					continue
				}
				dst = dst.Unmap()
				if r.Protocol == routing.RouteProtocol {
					// To another node's pod range (not to the Service ranges).
					if slices.ContainsFunc(clusterCIDRs, func(c netip.Prefix) bool { return c.Overlaps(netip.PrefixFrom(dst, ones)) }) {
						uplinks[r.LinkIndex] = true
					}
					continue
				}
				if ones != bits {
					continue
				}
				routes = append(routes, hostRoute{dst: dst, ifindex: r.LinkIndex})
			}
		}
		own := podCIDRs()
		local := Local{Endpoints: endpoints(routes, veths, own), Uplinks: uplinks, Ranges: ranges(clusterCIDRs, own)}
		for idx := range uplinks {
			if vx := vxlans[idx]; vx != nil {
				if err := discoverTunnel(vx, &local); err != nil {
					return Local{}, err
				}
			}
		}
		return local, nil
	}
}

// discoverTunnel sets the tunnel of local from the VXLAN device the routes to
// other nodes' pods go into, when the programs write its encapsulation as it
// does: an IPv4 underlay through a given device, one VNI, no TOS, the default
// TTL, no extensions. (The programs send no UDP checksum whatever the
// device's udpcsum: RFC 7348 recommends zero, and receivers must accept it.)
// Its unicast forwarding entries become the VTEPs.
func discoverTunnel(vx *netlink.Vxlan, local *Local) error {
	src, ok := netip.AddrFromSlice(vx.SrcAddr)
	if !ok || !src.Unmap().Is4() || vx.VtepDevIndex == 0 || vx.Port == 0 || vx.FlowBased || vx.GBP ||
		vx.TOS != 0 || vx.TTL != 0 || len(vx.HardwareAddr) != 6 {
		return nil
	}
	entries, err := netlink.NeighList(vx.Index, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list the forwarding entries of %s: %w", vx.Name, err)
	}
	vteps := map[MAC]netip.Addr{}
	for _, n := range entries {
		dst, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) != 6 {
			continue
		}
		var m MAC
		copy(m[:], n.HardwareAddr)
		// The all-zero MAC's entries flood unknown destinations; only they
		// (and multicast MACs) may have more than one destination.
		if dst = dst.Unmap(); !dst.Is4() || m == (MAC{}) || m[0]&1 != 0 {
			continue
		}
		vteps[m] = dst
	}
	local.Tunnel = Tunnel{IfIndex: vx.Index, Local: src.Unmap(), VNI: uint32(vx.VxlanId), Port: uint16(vx.Port)}
	copy(local.Tunnel.MAC[:], vx.HardwareAddr)
	local.Underlay, local.VTEPs = vx.VtepDevIndex, vteps
	return nil
}

// ranges marks the cluster's pod ranges remote and the node's own local.
func ranges(cluster, own []netip.Prefix) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, p := range cluster {
		out[p.Masked()] = true
	}
	for _, p := range own {
		out[p.Masked()] = false
	}
	return out
}

// Watch calls changed whenever a route, a link or a forwarding entry of the
// current namespace changes, until ctx ends.
func Watch(ctx context.Context, changed func()) error {
	routes := make(chan netlink.RouteUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	neighbours := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	if err := netlink.RouteSubscribe(routes, done); err != nil {
		return fmt.Errorf("watch routes: %w", err)
	}
	if err := netlink.LinkSubscribe(links, done); err != nil {
		return fmt.Errorf("watch links: %w", err)
	}
	if err := netlink.NeighSubscribe(neighbours, done); err != nil {
		return fmt.Errorf("watch forwarding entries: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-routes:
			if !ok {
				return fmt.Errorf("route watch ended")
			}
		case _, ok := <-links:
			if !ok {
				return fmt.Errorf("link watch ended")
			}
		case u, ok := <-neighbours:
			if !ok {
				return fmt.Errorf("forwarding entry watch ended")
			}
			if u.Family != unix.AF_BRIDGE {
				continue // ARP and NDP: the programs' FIB lookups follow them
			}
		}
		changed()
	}
}
