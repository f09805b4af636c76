package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/ipam"
	"amime.dev/amime/internal/podmac"
)

// GatewayLink holds the IPv4 gateway address of the node's pod range (a /32 on
// the node's loopback; kernels without the dummy driver are common). The pods'
// default route points at it, and the node answers ARP for it on every veth
// because it is a local address.
const GatewayLink = "lo"

type podLinks struct {
	podName, podMAC   string
	hostName, hostMAC string
}

// podLinkExists reports whether ifname exists in the namespace at path.
func podLinkExists(path, ifname string) (bool, error) {
	var exists bool
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		_, err := netlink.LinkByName(ifname)
		exists = err == nil
		return nil
	})
	return exists, err
}

// setupPod creates the veth pair and configures both ends: in the pod, the
// addresses (/32, /128) and the default routes via the node; on the node, the
// gateway, the link-local IPv6 gateway and a host route per pod address.
func setupPod(netnsPath, ifname, hostName string, mtu, routeMTU int, allocs []ipam.Allocation) (podLinks, error) {
	var links podLinks
	hasV6 := false
	var addrs []netip.Addr
	for _, a := range allocs {
		if a.Addr.Is6() {
			hasV6 = true
		}
		addrs = append(addrs, a.Addr)
	}
	// The agent's fast path derives the pod's MAC from its addresses.
	podMAC := podmac.For(addrs).String()
	err := ns.WithNetNSPath(netnsPath, func(hostNS ns.NetNS) error {
		if hasV6 {
			// The pod namespace may start with IPv6 off on new interfaces.
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("0"), 0o644)
		}
		hostVeth, podVeth, err := ip.SetupVethWithName(ifname, hostName, mtu, podMAC, hostNS)
		if err != nil {
			return fmt.Errorf("create veth pair: %w", err)
		}
		links = podLinks{podName: podVeth.Name, podMAC: podVeth.HardwareAddr.String(), hostName: hostVeth.Name, hostMAC: hostVeth.HardwareAddr.String()}
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if hasV6 {
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6", []byte("0"), 0o644)
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/accept_ra", []byte("0"), 0o644)
		}
		for _, a := range allocs {
			bits := a.Addr.BitLen()
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
			if a.Addr.Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("add %s to %s: %w", a.Addr, ifname, err)
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		for _, a := range allocs {
			for _, r := range podRoutes(link.Attrs().Index, a, routeMTU) {
				if r.Priority, err = podRoutePriority(r); err != nil {
					return err
				}
				if err := netlink.RouteReplace(&r); err != nil {
					return fmt.Errorf("pod route %s: %w", r.Dst, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return links, err
	}
	return links, setupHostSide(hostName, allocs)
}

// podRoutes are the routes inside the pod for one of its addresses. With a
// route MTU, the default route carries it and the node's own pod range gets a
// route of its own without it (the interface's MTU).
func podRoutes(linkIndex int, a ipam.Allocation, routeMTU int) []netlink.Route {
	gw := v6Gateway.AsSlice()
	def := &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	var out []netlink.Route
	if a.Addr.Is4() {
		gw = a.Gateway.AsSlice()
		def = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		out = append(out, netlink.Route{LinkIndex: linkIndex, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	}
	out = append(out, netlink.Route{LinkIndex: linkIndex, Dst: def, Gw: gw, MTU: routeMTU})
	if routeMTU != 0 {
		r := a.Range.Masked()
		out = append(out, netlink.Route{LinkIndex: linkIndex, Dst: &net.IPNet{IP: r.Addr().AsSlice(), Mask: net.CIDRMask(r.Bits(), r.Addr().BitLen())}, Gw: gw})
	}
	return out
}

// podRoutePriority is the metric of a new pod route: the kernel's default,
// unless another interface of the pod (an earlier attachment) has a route to the
// same destination. Then it is one more than the highest such metric, so that
// the new route neither replaces that route (which would take it away with this
// attachment's DEL, and fail the other attachment's CHECK) nor wins over it.
func podRoutePriority(r netlink.Route) (int, error) {
	family := netlink.FAMILY_V6
	if r.Dst.IP.To4() != nil {
		family = netlink.FAMILY_V4
	}
	routes, err := netlink.RouteList(nil, family)
	if err != nil {
		return 0, fmt.Errorf("list pod routes: %w", err)
	}
	want, _ := r.Dst.Mask.Size()
	prio := 0
	for _, o := range routes {
		ones, ip := 0, net.IP(nil)
		if o.Dst != nil {
			ones, _ = o.Dst.Mask.Size()
			ip = o.Dst.IP
		}
		same := ones == want && (ip.Equal(r.Dst.IP) || ip == nil && r.Dst.IP.IsUnspecified())
		if same && o.LinkIndex != r.LinkIndex && o.Priority >= prio {
			prio = o.Priority + 1
		}
	}
	return prio, nil
}

func setupHostSide(hostName string, allocs []ipam.Allocation) error {
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("node end %s: %w", hostName, err)
	}
	for _, a := range allocs {
		bits := a.Addr.BitLen()
		if a.Addr.Is4() {
			if err := EnsureGateway(a.Gateway); err != nil {
				return err
			}
		} else {
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+hostName+"/disable_ipv6", []byte("0"), 0o644)
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+hostName+"/accept_ra", []byte("0"), 0o644)
			ll := &netlink.Addr{IPNet: &net.IPNet{IP: v6Gateway.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrReplace(host, ll); err != nil {
				return fmt.Errorf("add %s to %s: %w", v6Gateway, hostName, err)
			}
		}
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: &net.IPNet{IP: a.Addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("host route to %s: %w", a.Addr, err)
		}
	}
	return netlink.LinkSetUp(host)
}

// EnsureGateway puts the IPv4 gateway of the node's pod range on the gateway
// device. Safe to run concurrently.
func EnsureGateway(gw netip.Addr) error {
	link, err := netlink.LinkByName(GatewayLink)
	if err != nil {
		return fmt.Errorf("%s: %w", GatewayLink, err)
	}
	bits := gw.BitLen()
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(bits, bits)}}); err != nil {
		return fmt.Errorf("add %s to %s: %w", gw, GatewayLink, err)
	}
	return netlink.LinkSetUp(link)
}

// teardownPod removes the veth pair. Everything already gone is fine.
func teardownPod(netnsPath, ifname, hostName string) error {
	var podErr error
	if netnsPath != "" {
		err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			link, err := netlink.LinkByName(ifname)
			if err != nil {
				return nil
			}
			if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("delete %s: %w", ifname, err)
			}
			return nil
		})
		var nsErr ns.NSPathNotExistErr
		if err != nil && !errors.As(err, &nsErr) && !strings.Contains(err.Error(), "no such file") {
			podErr = err
		}
	}
	// The node end: deleting it deletes the pod end, also when the pod's
	// namespace could not be entered (a path that is no namespace any more).
	link, err := netlink.LinkByName(hostName)
	if err != nil {
		// No node end, no pair: whatever the pod end was, it is gone, or
		// it was not ours.
		return nil
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return errors.Join(podErr, fmt.Errorf("delete %s: %w", hostName, err))
	}
	return nil
}

// expected is what CHECK verifies, taken from the prevResult: the
// interface's addresses (with their prefix lengths) and every route the
// result lists, which are the sandbox's.
type expected struct {
	addrs  []netip.Prefix
	routes []expectedRoute
}

type expectedRoute struct {
	dst   netip.Prefix
	gw    netip.Addr // invalid: none
	table int        // 0: main
}

func (r expectedRoute) String() string {
	s := r.dst.String()
	if r.gw.IsValid() {
		s += " via " + r.gw.String()
	}
	if r.table != 0 {
		s += fmt.Sprintf(" table %d", r.table)
	}
	return s
}

func expectedFromResult(r *current.Result, netnsPath, ifname string) (expected, error) {
	var e expected
	idx := -1
	for i, intf := range r.Interfaces {
		if intf.Name == ifname && intf.Sandbox == netnsPath {
			idx = i
		}
	}
	if idx < 0 {
		return e, fmt.Errorf("prevResult has no interface %s in %s", ifname, netnsPath)
	}
	for _, c := range r.IPs {
		if c.Interface == nil || *c.Interface != idx {
			continue
		}
		p, err := prefixOf(c.Address)
		if err != nil {
			return e, fmt.Errorf("prevResult: bad address %v", &c.Address)
		}
		e.addrs = append(e.addrs, p)
	}
	for _, rt := range r.Routes {
		if rt == nil {
			continue
		}
		dst, err := prefixOf(rt.Dst)
		if err != nil {
			return e, fmt.Errorf("prevResult: bad route destination %v", &rt.Dst)
		}
		want := expectedRoute{dst: dst.Masked()}
		if rt.Table != nil {
			want.table = *rt.Table
		}
		if g, ok := netip.AddrFromSlice(rt.GW); ok {
			want.gw = g.Unmap()
		}
		e.routes = append(e.routes, want)
	}
	return e, nil
}

// prefixOf is n as a netip.Prefix, IPv4 in its 4-byte form.
func prefixOf(n net.IPNet) (netip.Prefix, error) {
	a, ok := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, errors.New("not an address with a mask")
	}
	if a.Is4In6() && bits == 128 {
		ones -= 96
	}
	a = a.Unmap()
	if ones < 0 || ones > a.BitLen() {
		return netip.Prefix{}, errors.New("mask does not fit the address")
	}
	return netip.PrefixFrom(a, ones), nil
}

// checkPod verifies the pod end (interface, addresses, the result's routes)
// and the node end (veth, host routes).
func checkPod(netnsPath, ifname, hostName string, want expected) error {
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s is missing in the pod", ifname)
		}
		if link.Attrs().OperState == netlink.OperDown {
			return fmt.Errorf("interface %s is down", ifname)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, w := range want.addrs {
			found := false
			for _, a := range addrs {
				if got, err := prefixOf(*a.IPNet); err == nil && got == w {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("address %s is missing on %s", w, ifname)
			}
		}
		for _, w := range want.routes {
			ok, err := hasRoute(w)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("route %s is missing in the pod", w)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("node end %s of the veth pair is missing", hostName)
	}
	for _, p := range want.addrs {
		w := p.Addr()
		bits := w.BitLen()
		dst := &net.IPNet{IP: w.AsSlice(), Mask: net.CIDRMask(bits, bits)}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		found := false
		for _, r := range routes {
			if r.LinkIndex == host.Attrs().Index {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("node route to %s via %s is missing", w, hostName)
		}
	}
	return nil
}

// hasRoute reports whether the namespace the thread is in has route w.
func hasRoute(w expectedRoute) (bool, error) {
	family := netlink.FAMILY_V4
	if w.dst.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	table := w.table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("list routes: %w", err)
	}
	// A default route comes without a destination.
	def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if family == netlink.FAMILY_V6 {
		def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	for _, r := range routes {
		dst := def
		if r.Dst != nil {
			if dst, err = prefixOf(*r.Dst); err != nil {
				continue
			}
		}
		if dst.Masked() != w.dst {
			continue
		}
		if !w.gw.IsValid() {
			return true, nil
		}
		if g, ok := netip.AddrFromSlice(r.Gw); ok && g.Unmap() == w.gw {
			return true, nil
		}
	}
	return false, nil
}

// removeStaleHostVeths deletes node-side veths of attachments not in keep.
func removeStaleHostVeths(keep map[string]bool) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "veth" || !strings.HasPrefix(name, hostVethPrefix) || len(name) != 15 || keep[name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete stale %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
