package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"amime.dev/amime/internal/fastpath"
	"amime.dev/amime/internal/netns"
)

// runAmime programs amime's fast path in namespace ns for the pods of spec
// (VETH=POD-NETNS,...) and keeps it attached until SIGINT or SIGTERM. As the
// agent does, it lets conntrack follow connections whose middle it skips.
func runAmime(ns, spec string) error {
	eps := map[netip.Addr]fastpath.Endpoint{}
	for _, item := range strings.Split(spec, ",") {
		veth, pod, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("-amime %q: want VETH=POD-NETNS", item)
		}
		var ep fastpath.Endpoint
		var addrs []netip.Addr
		err := netns.Do(netns.Path(pod), func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return fmt.Errorf("eth0 of %s: %w", pod, err)
			}
			copy(ep.PodMAC[:], l.Attrs().HardwareAddr)
			as, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, a := range as {
				if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
					addrs = append(addrs, ip)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = netns.Do(netns.Path(ns), func() error {
			l, err := netlink.LinkByName(veth)
			if err != nil {
				return fmt.Errorf("%s: %w", veth, err)
			}
			ep.IfIndex = l.Attrs().Index
			copy(ep.HostMAC[:], l.Attrs().HardwareAddr)
			return nil
		})
		if err != nil {
			return err
		}
		for _, a := range addrs {
			eps[a] = ep
		}
	}
	const liberal = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"
	var k *fastpath.Kernel
	err := netns.Do(netns.Path(ns), func() error {
		if err := os.WriteFile(liberal, []byte("1"), 0o644); err != nil {
			return err
		}
		var err error
		if k, err = fastpath.LoadKernel(); err != nil {
			return err
		}
		for a, ep := range eps {
			if err := k.Put(a, ep); err != nil {
				return err
			}
			if err := k.Attach(ep.IfIndex, fastpath.FromPod); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer k.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c, err := k.Counters()
	if err == nil {
		fmt.Fprintf(os.Stderr, "fastpathprobe: amime fast path counters %v\n", c)
	}
	return nil
}
