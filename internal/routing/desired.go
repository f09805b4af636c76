// Package routing computes and programs how pods on one node reach pods on the
// others: a VXLAN overlay (the default) or native routes over a shared link.
//
// The desired state is computed from Node objects alone (podCIDRs and
// InternalIPs), so every node derives the same picture without coordination:
// each node's VTEP MAC is a hash of its name, and its VTEP address is the
// network address of its pod range (as Flannel does). The Reconciler diffs the
// desired state against what is programmed and changes only the difference, so
// an agent restart never interrupts traffic.
package routing

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// Mode is how traffic crosses nodes.
type Mode string

// Modes.
const (
	Overlay Mode = "overlay"
	Native  Mode = "native"
)

// ParseMode validates a mode name.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case Overlay, Native:
		return Mode(s), nil
	}
	return "", fmt.Errorf("routing mode %q: must be overlay or native", s)
}

// PodVethPrefix starts the name of every node-side pod veth: the CNI plugin's
// HostVethName spells it too (the lean plugin does not import this package).
const PodVethPrefix = "amv"

// VXLAN constants: the device, its VNI and UDP port (Flannel's, 8472, so that the
// IANA port 4789 stays free for other users), and encapsulation overhead.
const (
	VXLANDevice   = "amime.vxlan"
	VXLANID       = 1
	VXLANPort     = 8472
	vxlanOverhead = 50 // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
	vxlanOverhd6  = 70 // outer IPv6 40 instead of 20
	// RouteProtocol marks the routes this package owns (rtm_protocol), so that
	// reconciliation never touches anyone else's routes.
	RouteProtocol = 0xa1
)

// Node is what routing needs to know about a node.
type Node struct {
	Name        string
	PodCIDRs    []netip.Prefix
	InternalIPs []netip.Addr
}

// Link is an underlay interface of this node with its connected prefixes.
type Link struct {
	Name     string
	Index    int
	MTU      int
	Prefixes []netip.Prefix
}

// Route is one route this package owns.
type Route struct {
	Dst    netip.Prefix
	Gw     netip.Addr // zero for none
	Dev    string
	OnLink bool
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += " dev " + r.Dev
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// Neighbor is a permanent neighbour entry on the VXLAN device: remote VTEP
// address to remote VTEP MAC.
type Neighbor struct {
	IP  netip.Addr
	MAC string
}

// FDB is a forwarding entry on the VXLAN device: remote VTEP MAC to the remote
// node's underlay address.
type FDB struct {
	MAC string
	Dst netip.Addr
}

// VXLAN is the overlay device of this node.
type VXLAN struct {
	Name     string
	VNI      int
	Port     int
	Local    netip.Addr // this node's underlay address
	Parent   string     // the underlay link
	MTU      int
	MAC      string
	Addrs    []netip.Prefix // this node's VTEP addresses (pod range network address, /32 or /128)
	Disabled bool
}

// Desired is the complete routing state of one node.
type Desired struct {
	Mode      Mode
	VXLAN     *VXLAN // nil in native mode
	Routes    []Route
	Neighbors []Neighbor
	FDB       []FDB
	// PodMTU is the MTU of pod interfaces on this node (the CNI
	// configuration's mtu): the underlay's, so that pods of one node talk to
	// each other in full-size packets.
	PodMTU int
	// RouteMTU, when not zero, is the MTU of pods' routes off the node (the
	// CNI configuration's routeMTU): the tunnel's, smaller than PodMTU.
	RouteMTU int
}

// VTEPMAC derives a node's VTEP MAC from its name: locally administered, unicast.
func VTEPMAC(node string) string {
	h := sha256.Sum256([]byte(node))
	mac := net.HardwareAddr{0x0e, h[0], h[1], h[2], h[3], h[4]}
	return mac.String()
}

// underlayOf picks this node's underlay link and address: the link whose
// connected prefix holds one of the node's InternalIPs (primary family first).
func underlayOf(self Node, links []Link) (Link, netip.Addr, error) {
	for _, ip := range self.InternalIPs {
		for _, l := range links {
			for _, p := range l.Prefixes {
				if p.Addr() == ip {
					return l, ip, nil
				}
			}
		}
	}
	return Link{}, netip.Addr{}, fmt.Errorf("node %s: none of its InternalIPs %v is on a local link", self.Name, self.InternalIPs)
}

// Compute returns the desired routing state of node self given all other nodes.
// Problems with single remote nodes (unreachable in native mode, no podCIDR
// yet) are returned as errors next to a state that covers every other node.
func Compute(mode Mode, self Node, others []Node, links []Link) (Desired, []error) {
	var errs []error
	d := Desired{Mode: mode}
	under, local, err := underlayOf(self, links)
	if err != nil {
		return d, []error{err}
	}
	mtu := under.MTU
	if mtu == 0 {
		mtu = 1500
	}
	sorted := append([]Node(nil), others...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	switch mode {
	case Overlay:
		over := vxlanOverhead
		if local.Is6() {
			over = vxlanOverhd6
		}
		v := &VXLAN{Name: VXLANDevice, VNI: VXLANID, Port: VXLANPort, Local: local, Parent: under.Name, MTU: mtu - over, MAC: VTEPMAC(self.Name)}
		for _, c := range self.PodCIDRs {
			v.Addrs = append(v.Addrs, netip.PrefixFrom(c.Addr(), c.Addr().BitLen()))
		}
		d.VXLAN = v
		d.PodMTU, d.RouteMTU = mtu, v.MTU
		for _, n := range sorted {
			if n.Name == self.Name {
				continue
			}
			if len(n.PodCIDRs) == 0 {
				errs = append(errs, fmt.Errorf("node %s has no podCIDR yet", n.Name))
				continue
			}
			dst, ok := sameFamily(n.InternalIPs, local)
			if !ok {
				errs = append(errs, fmt.Errorf("node %s has no InternalIP of the underlay's family (%v)", n.Name, n.InternalIPs))
				continue
			}
			mac := VTEPMAC(n.Name)
			d.FDB = append(d.FDB, FDB{MAC: mac, Dst: dst})
			for _, c := range n.PodCIDRs {
				vtep := c.Addr()
				d.Neighbors = append(d.Neighbors, Neighbor{IP: vtep, MAC: mac})
				d.Routes = append(d.Routes, Route{Dst: c, Gw: vtep, Dev: VXLANDevice, OnLink: true})
			}
		}
	case Native:
		d.PodMTU = mtu
		for _, n := range sorted {
			if n.Name == self.Name {
				continue
			}
			if len(n.PodCIDRs) == 0 {
				errs = append(errs, fmt.Errorf("node %s has no podCIDR yet", n.Name))
				continue
			}
			for _, c := range n.PodCIDRs {
				gw, ok := sameFamily(n.InternalIPs, c.Addr())
				if !ok {
					errs = append(errs, fmt.Errorf("node %s: no InternalIP of the family of %s to route it via", n.Name, c))
					continue
				}
				link, ok := connectedLink(links, gw)
				if !ok {
					errs = append(errs, fmt.Errorf("node %s (%s) is not directly reachable from node %s: native routing needs all nodes on one link; use overlay mode", n.Name, gw, self.Name))
					continue
				}
				d.Routes = append(d.Routes, Route{Dst: c, Gw: gw, Dev: link.Name})
			}
		}
	default:
		return d, []error{fmt.Errorf("unknown routing mode %q", mode)}
	}
	return d, errs
}

// ServiceRoutes route the Service ranges onto the node's underlay link, so that a
// packet to a ClusterIP always has a route: with endpoints the Service proxy
// rewrites it before the routing decision matters, without them its filter
// chains refuse it at once (nodes need no default route for either).
func ServiceRoutes(self Node, links []Link, serviceCIDRs []netip.Prefix) []Route {
	under, _, err := underlayOf(self, links)
	if err != nil {
		return nil
	}
	var out []Route
	for _, c := range serviceCIDRs {
		out = append(out, Route{Dst: c.Masked(), Dev: under.Name})
	}
	return out
}

func sameFamily(ips []netip.Addr, like netip.Addr) (netip.Addr, bool) {
	for _, ip := range ips {
		if ip.Is4() == like.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func connectedLink(links []Link, ip netip.Addr) (Link, bool) {
	for _, l := range links {
		for _, p := range l.Prefixes {
			if p.Masked().Contains(ip) && p.Bits() < ip.BitLen() {
				return l, true
			}
		}
	}
	return Link{}, false
}

// String renders the desired state deterministically (golden files, `amime status`).
func (d Desired) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s, pod MTU %d", d.Mode, d.PodMTU)
	if d.RouteMTU != 0 {
		fmt.Fprintf(&b, ", route MTU %d", d.RouteMTU)
	}
	b.WriteString("\n")
	if v := d.VXLAN; v != nil {
		fmt.Fprintf(&b, "vxlan %s id %d dstport %d local %s dev %s mtu %d address %s", v.Name, v.VNI, v.Port, v.Local, v.Parent, v.MTU, v.MAC)
		for _, a := range v.Addrs {
			fmt.Fprintf(&b, " inet %s", a)
		}
		b.WriteString("\n")
	}
	for _, r := range d.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, n := range d.Neighbors {
		fmt.Fprintf(&b, "neigh %s lladdr %s dev %s nud permanent\n", n.IP, n.MAC, VXLANDevice)
	}
	for _, f := range d.FDB {
		fmt.Fprintf(&b, "fdb %s dev %s dst %s self permanent\n", f.MAC, VXLANDevice, f.Dst)
	}
	return b.String()
}
