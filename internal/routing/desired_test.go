package routing

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"amime.dev/amime/internal/golden"
)

type stack int

const (
	v4 stack = iota
	dual
	v6
)

// node returns node-i: pod ranges 10.244.i.0/24 and fd00:10:244:i::/64,
// InternalIPs 192.168.1.(10+i) and fd00:1::(10+i), of the families asked for
// (IPv4 first in dual-stack).
func node(i int, s stack) Node {
	n := Node{Name: fmt.Sprintf("node-%d", i)}
	if s != v6 {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)))
		n.InternalIPs = append(n.InternalIPs, netip.MustParseAddr(fmt.Sprintf("192.168.1.%d", 10+i)))
	}
	if s != v4 {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i)))
		n.InternalIPs = append(n.InternalIPs, netip.MustParseAddr(fmt.Sprintf("fd00:1::%d", 10+i)))
	}
	return n
}

func nodes(s stack, ids ...int) []Node {
	var out []Node
	for _, i := range ids {
		out = append(out, node(i, s))
	}
	return out
}

func link(name string, index, mtu int, prefixes ...string) Link {
	l := Link{Name: name, Index: index, MTU: mtu}
	for _, p := range prefixes {
		l.Prefixes = append(l.Prefixes, netip.MustParsePrefix(p))
	}
	return l
}

// The links of node-1 (192.168.1.11, fd00:1::11).
var (
	eth0v4   = link("eth0", 2, 1500, "192.168.1.11/24")
	eth0dual = link("eth0", 2, 1500, "192.168.1.11/24", "fd00:1::11/64")
	eth0v6   = link("eth0", 2, 1500, "fd00:1::11/64")
)

func with(n Node, f func(*Node)) Node {
	f(&n)
	return n
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name   string
		mode   Mode
		self   Node
		others []Node
		links  []Link
		// wantErrs holds, per expected problem in order, substrings its message must contain.
		wantErrs [][]string
		// wantMTU is the MTU of pods' routes off the node: the tunnel's in
		// overlay mode, the interface's in native mode (checked here as well
		// as in the golden file).
		wantMTU int
		// wantRoutes is the number of routes.
		wantRoutes int
	}{
		{
			name: "overlay-v4-1node", mode: Overlay, self: node(1, v4),
			others: nodes(v4, 1), // self in the list is skipped
			links:  []Link{link("lo", 1, 65536, "127.0.0.1/8"), eth0v4}, wantMTU: 1450,
		},
		{
			name: "overlay-v4-3nodes", mode: Overlay, self: node(1, v4),
			others: nodes(v4, 1, 3, 2), links: []Link{eth0v4}, wantMTU: 1450, wantRoutes: 2,
		},
		{
			name: "overlay-v4-5nodes", mode: Overlay, self: node(1, v4),
			others: nodes(v4, 5, 3, 2, 4), links: []Link{eth0v4}, wantMTU: 1450, wantRoutes: 4,
		},
		{
			name: "overlay-dual-v4underlay-1node", mode: Overlay, self: node(1, dual),
			links: []Link{eth0dual}, wantMTU: 1450,
		},
		{
			name: "overlay-dual-v4underlay-3nodes", mode: Overlay, self: node(1, dual),
			others: nodes(dual, 2, 3), links: []Link{eth0dual}, wantMTU: 1450, wantRoutes: 4,
		},
		{
			name: "overlay-dual-v4underlay-5nodes", mode: Overlay, self: node(1, dual),
			others: nodes(dual, 2, 3, 4, 5), links: []Link{eth0dual}, wantMTU: 1450, wantRoutes: 8,
		},
		{
			name: "overlay-v6underlay-1node", mode: Overlay, self: node(1, v6),
			links: []Link{eth0v6}, wantMTU: 1430,
		},
		{
			name: "overlay-v6underlay-3nodes", mode: Overlay, self: node(1, v6),
			others: nodes(v6, 2, 3), links: []Link{eth0v6}, wantMTU: 1430, wantRoutes: 2,
		},
		{
			name: "overlay-v6underlay-5nodes", mode: Overlay, self: node(1, v6),
			others: nodes(v6, 2, 3, 4, 5), links: []Link{eth0v6}, wantMTU: 1430, wantRoutes: 4,
		},
		{
			// Dual-stack pods over an IPv6 underlay: the primary InternalIP picks the underlay.
			name: "overlay-dual-v6underlay-3nodes", mode: Overlay,
			self: with(node(1, dual), func(n *Node) { n.InternalIPs = []netip.Addr{n.InternalIPs[1], n.InternalIPs[0]} }),
			others: []Node{
				with(node(2, dual), func(n *Node) { n.InternalIPs = []netip.Addr{n.InternalIPs[1], n.InternalIPs[0]} }),
				node(3, dual), // IPv4 first: the IPv6 one is still used
			},
			links: []Link{eth0dual}, wantMTU: 1430, wantRoutes: 4,
		},
		{
			name: "overlay-jumbo", mode: Overlay, self: node(1, v4), others: nodes(v4, 2),
			links: []Link{link("eth0", 2, 9000, "192.168.1.11/24")}, wantMTU: 8950, wantRoutes: 1,
		},
		{
			name: "overlay-mtu-unknown", mode: Overlay, self: node(1, v4), others: nodes(v4, 2),
			links: []Link{link("eth0", 2, 0, "192.168.1.11/24")}, wantMTU: 1450, wantRoutes: 1,
		},
		{
			name: "overlay-no-podcidr", mode: Overlay, self: node(1, v4),
			others: []Node{node(2, v4), with(node(3, v4), func(n *Node) { n.PodCIDRs = nil }), node(4, v4)},
			links:  []Link{eth0v4}, wantMTU: 1450, wantRoutes: 2,
			wantErrs: [][]string{{"node node-3 has no podCIDR yet"}},
		},
		{
			name: "overlay-family-mismatch", mode: Overlay, self: node(1, v4),
			others: []Node{node(2, v4), with(node(3, dual), func(n *Node) { n.InternalIPs = n.InternalIPs[1:] }), node(4, v4)},
			links:  []Link{eth0v4}, wantMTU: 1450, wantRoutes: 2,
			wantErrs: [][]string{{"node node-3", "no InternalIP of the underlay's family", "fd00:1::13"}},
		},
		{
			name: "native-v4-3nodes", mode: Native, self: node(1, v4),
			others: nodes(v4, 3, 2, 1), links: []Link{eth0v4}, wantMTU: 1500, wantRoutes: 2,
		},
		{
			name: "native-dual-5nodes", mode: Native, self: node(1, dual),
			others: nodes(dual, 2, 3, 4, 5), links: []Link{eth0dual}, wantMTU: 1500, wantRoutes: 8,
		},
		{
			name: "native-v6-3nodes", mode: Native, self: node(1, v6),
			others: nodes(v6, 2, 3), links: []Link{link("eth0", 2, 9000, "fd00:1::11/64")}, wantMTU: 9000, wantRoutes: 2,
		},
		{
			// Nodes on a second link are routed through it.
			name: "native-two-links", mode: Native, self: node(1, v4),
			others: []Node{node(2, v4), with(node(3, v4), func(n *Node) { n.InternalIPs = []netip.Addr{netip.MustParseAddr("10.0.0.13")} })},
			links:  []Link{eth0v4, link("eth1", 3, 1500, "10.0.0.11/24")}, wantMTU: 1500, wantRoutes: 2,
		},
		{
			name: "native-one-off-link", mode: Native, self: node(1, v4),
			others: []Node{node(2, v4), with(node(3, v4), func(n *Node) { n.InternalIPs = []netip.Addr{netip.MustParseAddr("192.168.2.13")} }), node(4, v4)},
			links:  []Link{eth0v4}, wantMTU: 1500, wantRoutes: 2,
			wantErrs: [][]string{{"node node-3 (192.168.2.13) is not directly reachable from node node-1", "use overlay mode"}},
		},
		{
			// A host prefix (/32) is not a connected network, even when it holds
			// the remote node's address.
			name: "native-host-prefix-only", mode: Native, self: node(1, v4),
			others: []Node{node(2, v4), with(node(3, v4), func(n *Node) { n.InternalIPs = []netip.Addr{netip.MustParseAddr("10.0.0.13")} })},
			links:  []Link{link("eth0", 2, 1500, "192.168.1.11/32"), link("wg0", 3, 1420, "10.0.0.13/32")}, wantMTU: 1500,
			wantErrs: [][]string{
				{"node node-2 (192.168.1.12) is not directly reachable", "use overlay mode"},
				{"node node-3 (10.0.0.13) is not directly reachable", "use overlay mode"},
			},
		},
		{
			name: "native-no-podcidr", mode: Native, self: node(1, v4),
			others: []Node{with(node(2, v4), func(n *Node) { n.PodCIDRs = nil }), node(3, v4)},
			links:  []Link{eth0v4}, wantMTU: 1500, wantRoutes: 1,
			wantErrs: [][]string{{"node node-2 has no podCIDR yet"}},
		},
		{
			// node-3 has no IPv6 InternalIP to route its IPv6 pod range via: its
			// IPv4 range is still routed.
			name: "native-family-mismatch", mode: Native, self: node(1, dual),
			others: []Node{node(2, dual), with(node(3, dual), func(n *Node) { n.InternalIPs = n.InternalIPs[:1] })},
			links:  []Link{eth0dual}, wantMTU: 1500, wantRoutes: 3,
			wantErrs: [][]string{{"node node-3", "no InternalIP of the family of fd00:10:244:3::/64"}},
		},
		{
			name: "overlay-self-not-on-link", mode: Overlay,
			self:   with(node(1, v4), func(n *Node) { n.InternalIPs = []netip.Addr{netip.MustParseAddr("192.168.9.11")} }),
			others: nodes(v4, 2), links: []Link{eth0v4},
			wantErrs: [][]string{{"node node-1", "192.168.9.11", "is on a local link"}},
		},
		{
			// Being in a connected prefix is not enough: the address must be on the link.
			name: "native-self-not-on-link", mode: Native,
			self:   with(node(1, v4), func(n *Node) { n.InternalIPs = []netip.Addr{netip.MustParseAddr("192.168.1.99")} }),
			others: nodes(v4, 2), links: []Link{eth0v4},
			wantErrs: [][]string{{"node node-1", "is on a local link"}},
		},
		{
			name: "unknown-mode", mode: "bgp", self: node(1, v4), others: nodes(v4, 2), links: []Link{eth0v4},
			wantErrs: [][]string{{`unknown routing mode "bgp"`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, errs := Compute(tt.mode, tt.self, tt.others, tt.links)
			var b strings.Builder
			b.WriteString(d.String())
			for _, err := range errs {
				fmt.Fprintf(&b, "problem: %v\n", err)
			}
			golden.Check(t, "compute-"+tt.name, b.String())

			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("got %d problems %v, want %d", len(errs), errs, len(tt.wantErrs))
			}
			for i, subs := range tt.wantErrs {
				for _, s := range subs {
					if !strings.Contains(errs[i].Error(), s) {
						t.Errorf("problem %d %q does not contain %q", i, errs[i], s)
					}
				}
			}
			offNode := d.PodMTU
			if d.RouteMTU != 0 {
				offNode = d.RouteMTU
			}
			if offNode != tt.wantMTU {
				t.Errorf("MTU off the node = %d (pod %d, route %d), want %d", offNode, d.PodMTU, d.RouteMTU, tt.wantMTU)
			}
			if len(d.Routes) != tt.wantRoutes {
				t.Errorf("%d routes, want %d", len(d.Routes), tt.wantRoutes)
			}
			checkInvariants(t, tt.self, d)
		})
	}
}

// checkInvariants verifies what must hold for every computed state.
func checkInvariants(t *testing.T, self Node, d Desired) {
	t.Helper()
	switch {
	case d.PodMTU == 0:
		// No usable state (self not on a link, unknown mode).
		if d.VXLAN != nil || len(d.Routes)+len(d.Neighbors)+len(d.FDB) != 0 {
			t.Errorf("state without a pod MTU is not empty:\n%s", d)
		}
		return
	case d.Mode == Overlay:
		if d.VXLAN == nil {
			t.Fatal("overlay without a VXLAN device")
		}
		if d.VXLAN.MTU != d.RouteMTU || d.RouteMTU >= d.PodMTU {
			t.Errorf("VXLAN MTU %d, route MTU %d, pod MTU %d: want the route MTU the tunnel's, below the pod's", d.VXLAN.MTU, d.RouteMTU, d.PodMTU)
		}
		if d.VXLAN.MAC != VTEPMAC(self.Name) {
			t.Errorf("VXLAN MAC %s, want VTEPMAC(%s) = %s", d.VXLAN.MAC, self.Name, VTEPMAC(self.Name))
		}
		if len(d.VXLAN.Addrs) != len(self.PodCIDRs) {
			t.Errorf("VXLAN addresses %v for pod ranges %v", d.VXLAN.Addrs, self.PodCIDRs)
		}
		neigh := map[netip.Addr]string{}
		for _, n := range d.Neighbors {
			neigh[n.IP] = n.MAC
		}
		fdb := map[string]bool{}
		for _, f := range d.FDB {
			fdb[f.MAC] = true
		}
		for _, r := range d.Routes {
			if r.Dev != VXLANDevice || !r.OnLink || r.Gw != r.Dst.Addr() {
				t.Errorf("overlay route %s: want onlink via the range's network address on %s", r, VXLANDevice)
			}
			mac, ok := neigh[r.Gw]
			if !ok {
				t.Errorf("route %s: no neighbour entry for its gateway", r)
			} else if !fdb[mac] {
				t.Errorf("route %s: no FDB entry for %s", r, mac)
			}
		}
		if len(d.Neighbors) != len(d.Routes) {
			t.Errorf("%d neighbours for %d routes", len(d.Neighbors), len(d.Routes))
		}
	case d.Mode == Native:
		if d.VXLAN != nil || len(d.Neighbors) != 0 || len(d.FDB) != 0 {
			t.Errorf("native state with overlay parts:\n%s", d)
		}
		for _, r := range d.Routes {
			if r.OnLink || !r.Gw.IsValid() || r.Gw.Is4() != r.Dst.Addr().Is4() {
				t.Errorf("native route %s: want a gateway of the range's family, not onlink", r)
			}
		}
	}
	for _, r := range d.Routes {
		for _, c := range self.PodCIDRs {
			if r.Dst == c {
				t.Errorf("route to the node's own pod range %s", r)
			}
		}
	}
}

func TestComputeDeterministic(t *testing.T) {
	a, _ := Compute(Overlay, node(1, dual), nodes(dual, 5, 4, 3, 2), []Link{eth0dual})
	b, _ := Compute(Overlay, node(1, dual), nodes(dual, 2, 3, 4, 5), []Link{eth0dual})
	if a.String() != b.String() {
		t.Errorf("order of the nodes changes the state:\n%s\nvs\n%s", a, b)
	}
}

func TestVTEPMAC(t *testing.T) {
	seen := map[string]string{}
	for i := range 200 {
		name := fmt.Sprintf("node-%d", i)
		mac := VTEPMAC(name)
		if again := VTEPMAC(name); again != mac {
			t.Fatalf("VTEPMAC(%q) = %s, then %s", name, mac, again)
		}
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			t.Fatalf("VTEPMAC(%q) = %q: not an Ethernet MAC (%v)", name, mac, err)
		}
		if hw[0] != 0x0e {
			t.Errorf("VTEPMAC(%q) = %s: first octet %#x, want 0x0e", name, mac, hw[0])
		}
		if hw[0]&0x01 != 0 || hw[0]&0x02 == 0 {
			t.Errorf("VTEPMAC(%q) = %s: not locally administered unicast", name, mac)
		}
		if other, ok := seen[mac]; ok {
			t.Errorf("VTEPMAC(%q) = VTEPMAC(%q) = %s", name, other, mac)
		}
		seen[mac] = name
	}
	// Every node derives the MACs of all nodes: pin one value (0x0e, then the
	// first five bytes of sha256("node-1")) so that a change of the derivation,
	// which would break clusters running mixed versions, is noticed.
	if got, want := VTEPMAC("node-1"), "0e:35:97:1b:e6:e9"; got != want {
		t.Errorf("VTEPMAC(node-1) = %s, want %s", got, want)
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"overlay", Overlay, false},
		{"native", Native, false},
		{"", "", true},
		{"Overlay", "", true},
		{"vxlan", "", true},
		{"native ", "", true},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
			t.Errorf("ParseMode(%q) error %q does not name the input", tt.in, err)
		}
	}
}

func TestRouteString(t *testing.T) {
	tests := []struct {
		r    Route
		want string
	}{
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), Dev: VXLANDevice, OnLink: true}, "10.244.2.0/24 via 10.244.2.0 dev amime.vxlan onlink"},
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.168.1.12"), Dev: "eth0"}, "10.244.2.0/24 via 192.168.1.12 dev eth0"},
		{Route{Dst: netip.MustParsePrefix("fd00::/64"), Dev: "eth0"}, "fd00::/64 dev eth0"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
