// Package podmac derives the MAC of a pod's interface from its addresses. The
// CNI plugin gives the pod end of the veth this MAC, so that the agent, which
// delivers frames into pods on its fast path, knows it without entering the
// pod's namespace or waiting for a neighbour entry.
package podmac

import (
	"net"
	"net/netip"
)

// For returns 0a:58 followed by the pod's IPv4 address, or by the last four
// bytes of its IPv6 address when it has no IPv4 one. The first byte marks a
// locally administered unicast address; a node's pod addresses are distinct,
// and so are their MACs. Nil when addrs is empty.
func For(addrs []netip.Addr) net.HardwareAddr {
	var pick netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			pick = a
			break
		}
		if !pick.IsValid() {
			pick = a
		}
	}
	if !pick.IsValid() {
		return nil
	}
	b := pick.AsSlice()
	return append(net.HardwareAddr{0x0a, 0x58}, b[len(b)-4:]...)
}
