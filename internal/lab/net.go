package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/netns"
)

// setupUnderlay creates the lab bridge in the root namespace, one namespace per node
// and the external namespace, each linked to the bridge by a veth pair. Every step
// accepts what already exists, so a half-finished run can be repeated. The root
// namespace only bridges: its ip_forward stays off and no lab namespace gets a
// route towards the machine's uplink.
func setupUnderlay(c Config) error {
	br, err := ensureBridge(c.BridgeName(), c.BridgeAddrs())
	if err != nil {
		return err
	}
	for i := 0; i <= c.Nodes; i++ {
		name, addrs := c.ExternalNetns(), c.ExternalAddrs()
		if i > 0 {
			name, addrs = c.NodeNetns(i), c.NodeAddrs(i)
		}
		if err := netns.Add(name); err != nil {
			return err
		}
		if err := ensureUplink(br, c.VethName(i), name, addrs); err != nil {
			return fmt.Errorf("link %s to the lab bridge: %w", name, err)
		}
		// A node's underlay link stands for a NIC, and NICs aggregate received
		// segments (GRO): veths do not by default, which would leave every
		// encapsulated packet of the overlay to be handled one by one.
		if out, err := exec.Command("nsenter", "--net="+netns.Path(name), "ethtool", "-K", "eth0", "gro", "on", "rx-udp-gro-forwarding", "on").CombinedOutput(); err != nil {
			return fmt.Errorf("enable GRO on eth0 of %s: %v: %s", name, err, out)
		}
	}
	return setupOutside(c)
}

// setupOutside gives the external namespace the "outside world" addresses and
// routes them from every node via the external namespace, so that traffic from
// pods to the outside (and its masquerade) stays inside the lab.
func setupOutside(c Config) error {
	ext, err := vnetns.GetFromPath(netns.Path(c.ExternalNetns()))
	if err != nil {
		return err
	}
	defer ext.Close()
	h, err := netlink.NewHandleAt(ext)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := addAddrs(func(...int) (*netlink.Handle, error) { return netlink.NewHandleAt(ext) }, lo, c.OutsideAddrs()); err != nil {
		return err
	}
	for i := 1; i <= c.Nodes; i++ {
		nsh, err := vnetns.GetFromPath(netns.Path(c.NodeNetns(i)))
		if err != nil {
			return err
		}
		nh, err := netlink.NewHandleAt(nsh)
		if err != nil {
			nsh.Close()
			return err
		}
		for _, gw := range c.ExternalAddrs() {
			dst := OutsideV4
			if gw.Addr().Is6() {
				dst = OutsideV6
			}
			r := &netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}, Gw: gw.Addr().AsSlice()}
			if err := nh.RouteReplace(r); err != nil {
				nh.Close()
				nsh.Close()
				return fmt.Errorf("route to the outside from %s: %w", c.NodeNetns(i), err)
			}
		}
		nh.Close()
		nsh.Close()
	}
	return nil
}

func ensureBridge(name string, addrs []netip.Prefix) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	if err == nil {
		if link.Type() != "bridge" {
			return nil, fmt.Errorf("interface %s exists but is a %s, not a bridge; remove it or pick another lab name", name, link.Type())
		}
	} else {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1500}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find bridge %s: %w", name, err)
		}
	}
	// The root namespace must never route lab traffic; make sure v6 forwarding on
	// the bridge is off too and the bridge does not accept router advertisements.
	_ = netns.Sysctl("", "net.ipv6.conf."+name+".accept_ra", "0")
	if err := addAddrs(netlink.NewHandle, link, addrs); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return link, nil
}

// ensureUplink links namespace ns to the bridge: hostName stays in the root
// namespace as a bridge port, the peer becomes eth0 inside ns.
func ensureUplink(br netlink.Link, hostName, ns string, addrs []netip.Prefix) error {
	nsh, err := vnetns.GetFromPath(netns.Path(ns))
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	if _, err := netlink.LinkByName(hostName); err != nil {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: 1500, MasterIndex: br.Attrs().Index},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(int(nsh)),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", hostName, err)
		}
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return fmt.Errorf("attach %s to %s: %w", hostName, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("eth0 in %s: %w", ns, err)
	}
	if err := addAddrs(func(...int) (*netlink.Handle, error) { return netlink.NewHandleAt(nsh) }, eth0, addrs); err != nil {
		return err
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return err
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	return nil
}

func addAddrs(newHandle func(...int) (*netlink.Handle, error), link netlink.Link, addrs []netip.Prefix) error {
	h, err := newHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			// Skip duplicate address detection: the lab owns the whole underlay, and
			// a tentative address would make the apiserver's bind fail for seconds.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, link.Attrs().Name, err)
		}
	}
	return nil
}

// teardownUnderlay removes every namespace and link of the lab, including pod
// namespaces left behind by a crashed node runtime. Missing pieces are fine.
func teardownUnderlay(c Config) error {
	var errs []error
	names, err := netns.List()
	if err != nil {
		errs = append(errs, err)
	}
	prefix := "amime-" + c.Name + "-"
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			if err := netns.Delete(n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := 0; i <= c.Nodes; i++ {
		if l, err := netlink.LinkByName(c.VethName(i)); err == nil {
			// The kernel destroys a deleted namespace's veths, and their peers
			// here, in the background: the link may vanish between the lookup
			// and the delete.
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", c.VethName(i), err))
			}
		}
	}
	if l, err := netlink.LinkByName(c.BridgeName()); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", c.BridgeName(), err))
		}
	}
	return errors.Join(errs...)
}

// ipForwardOff checks the safety rule that the root namespace never forwards.
func ipForwardOff() error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "0" {
		return errors.New("the root namespace has net.ipv4.ip_forward=1; the lab requires it off so that lab traffic can never reach the uplink")
	}
	return nil
}
