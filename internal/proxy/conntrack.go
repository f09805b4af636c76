package proxy

import (
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Conntrack deletes conntrack entries through netlink (no conntrack binary).
type Conntrack struct{}

// udpFlowFilter matches UDP flows that were sent to a Service (by IP and port,
// or to any address on its NodePort) and answered by one endpoint.
type udpFlowFilter struct {
	serviceIPs map[string]bool
	port       uint16
	nodePort   uint16
	endpoint   net.IP
}

func (f udpFlowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP || !flow.Reverse.SrcIP.Equal(f.endpoint) {
		return false
	}
	if f.serviceIPs[flow.Forward.DstIP.String()] && flow.Forward.DstPort == f.port {
		return true
	}
	return f.nodePort != 0 && flow.Forward.DstPort == f.nodePort
}

// DeleteUDPFlows removes the UDP flows from clients to the Service that were
// DNATed to endpoint, so that the next packet picks a live endpoint instead of
// being sent into the old flow until it times out.
func (Conntrack) DeleteUDPFlows(serviceIPs []string, port, nodePort int32, endpoint string) (int, error) {
	ep := net.ParseIP(endpoint)
	f := udpFlowFilter{serviceIPs: map[string]bool{}, port: uint16(port), nodePort: uint16(nodePort), endpoint: ep}
	for _, ip := range serviceIPs {
		f.serviceIPs[ip] = true
	}
	family := netlink.InetFamily(unix.AF_INET)
	if ep.To4() == nil {
		family = unix.AF_INET6
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, f)
	return int(n), err
}
