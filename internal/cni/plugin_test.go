package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"amime.dev/amime/internal/golden"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"

	"amime.dev/amime/internal/ipam"
)

const podNetns = "/var/run/netns/cni-1234"

var (
	alloc4 = ipam.Allocation{
		Addr:    netip.MustParseAddr("10.244.1.5"),
		Range:   netip.MustParsePrefix("10.244.1.0/24"),
		Gateway: netip.MustParseAddr("10.244.1.1"),
	}
	alloc6 = ipam.Allocation{
		Addr:    netip.MustParseAddr("fd00:10:244:1::5"),
		Range:   netip.MustParsePrefix("fd00:10:244:1::/64"),
		Gateway: netip.MustParseAddr("fd00:10:244:1::1"),
	}
	testLinks = podLinks{
		podName: "eth0", podMAC: "0a:58:0a:f4:01:05",
		hostName: HostVethName("c1", "eth0"), hostMAC: "ee:ee:ee:ee:ee:01",
	}
)

// summary renders a result's interfaces, IPs and routes one per line.
func summary(r *current.Result) []string {
	var out []string
	for i, intf := range r.Interfaces {
		out = append(out, fmt.Sprintf("interface %d %s mac %s mtu %d sandbox %q", i, intf.Name, intf.Mac, intf.Mtu, intf.Sandbox))
	}
	for _, ip := range r.IPs {
		idx := "none"
		if ip.Interface != nil {
			idx = fmt.Sprint(*ip.Interface)
		}
		out = append(out, fmt.Sprintf("ip %s gateway %s interface %s", ip.Address.String(), ip.Gateway, idx))
	}
	for _, rt := range r.Routes {
		out = append(out, fmt.Sprintf("route %s via %s", rt.Dst.String(), rt.GW))
	}
	return out
}

func mustConf(t *testing.T, stdin []byte) *parsedConf {
	t.Helper()
	c, cerr := parseConf(stdin)
	if cerr != nil {
		t.Fatal(cerr)
	}
	return c
}

func TestBuildResult(t *testing.T) {
	hostIf := fmt.Sprintf("interface %%d %s mac ee:ee:ee:ee:ee:01 mtu 1450 sandbox \"\"", testLinks.hostName)
	podIf := "interface %d eth0 mac 0a:58:0a:f4:01:05 mtu 1450 sandbox \"" + podNetns + "\""
	tests := []struct {
		name   string
		conf   []byte
		allocs []ipam.Allocation
		want   []string
	}{
		{
			name:   "ipv4",
			conf:   conf(`"podCIDRs": ["10.244.1.0/24"]`, `"mtu": 1450`),
			allocs: []ipam.Allocation{alloc4},
			want: []string{
				fmt.Sprintf(hostIf, 0), fmt.Sprintf(podIf, 1),
				"ip 10.244.1.5/32 gateway 10.244.1.1 interface 1",
				"route 0.0.0.0/0 via 10.244.1.1",
			},
		},
		{
			name:   "ipv6",
			conf:   conf(`"podCIDRs": ["fd00:10:244:1::/64"]`, `"mtu": 1450`),
			allocs: []ipam.Allocation{alloc6},
			want: []string{
				fmt.Sprintf(hostIf, 0), fmt.Sprintf(podIf, 1),
				// The IPv6 gateway is the node end's link-local address, not the range's.
				"ip fd00:10:244:1::5/128 gateway fe80::1 interface 1",
				"route ::/0 via fe80::1",
			},
		},
		{
			name:   "dual-stack",
			conf:   conf(`"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]`, `"mtu": 1450`),
			allocs: []ipam.Allocation{alloc4, alloc6},
			want: []string{
				fmt.Sprintf(hostIf, 0), fmt.Sprintf(podIf, 1),
				"ip 10.244.1.5/32 gateway 10.244.1.1 interface 1",
				"ip fd00:10:244:1::5/128 gateway fe80::1 interface 1",
				"route 0.0.0.0/0 via 10.244.1.1",
				"route ::/0 via fe80::1",
			},
		},
		{
			// Chained after a plugin that made bond0: its entries stay first, ours
			// are appended and our IPs point at our pod interface (index 2).
			name:   "prevResult",
			conf:   conf(`"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]`, `"mtu": 1450`, prevResult),
			allocs: []ipam.Allocation{alloc4, alloc6},
			want: []string{
				`interface 0 bond0 mac 02:00:00:00:00:01 mtu 0 sandbox ""`,
				fmt.Sprintf(hostIf, 1), fmt.Sprintf(podIf, 2),
				"ip 192.0.2.10/24 gateway 192.0.2.1 interface 0",
				"ip 10.244.1.5/32 gateway 10.244.1.1 interface 2",
				"ip fd00:10:244:1::5/128 gateway fe80::1 interface 2",
				"route 198.51.100.0/24 via 192.0.2.1",
				"route 0.0.0.0/0 via 10.244.1.1",
				"route ::/0 via fe80::1",
			},
		},
		{
			// A runtime speaking an older version gets the result in its format.
			name:   "cni-0.4.0",
			conf:   conf(`"cniVersion": "0.4.0"`, `"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]`, `"mtu": 1450`),
			allocs: []ipam.Allocation{alloc4, alloc6},
			want: []string{
				fmt.Sprintf(hostIf, 0), fmt.Sprintf(podIf, 1),
				"ip 10.244.1.5/32 gateway 10.244.1.1 interface 1",
				"ip fd00:10:244:1::5/128 gateway fe80::1 interface 1",
				"route 0.0.0.0/0 via 10.244.1.1",
				"route ::/0 via fe80::1",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustConf(t, tt.conf)
			res := buildResult(c, testLinks, podNetns, tt.allocs)
			if diff := cmp.Diff(tt.want, summary(res)); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if res.CNIVersion != current.ImplementedSpecVersion {
				t.Errorf("result version %q", res.CNIVersion)
			}
			// The result as the runtime gets it.
			out, err := res.GetAsVersion(c.CNIVersion)
			if err != nil {
				t.Fatalf("convert to %s: %v", c.CNIVersion, err)
			}
			b, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, "result-"+tt.name, string(b)+"\n")

			// CHECK reads the result back (as prevResult) and finds what ADD made.
			back := mustConf(t, conf(`"cniVersion": "`+c.CNIVersion+`"`, `"prevResult": `+string(b)))
			prev, err := current.NewResultFromResult(back.PrevResult)
			if err != nil {
				t.Fatal(err)
			}
			wantBack := summary(res)
			if !strings.HasPrefix(c.CNIVersion, "1.") {
				// Interfaces have no MTU before CNI 1.0.
				for i := range wantBack {
					wantBack[i] = strings.Replace(wantBack[i], " mtu 1450 ", " mtu 0 ", 1)
				}
			}
			if diff := cmp.Diff(wantBack, summary(prev)); diff != "" {
				t.Errorf("result read back as prevResult (-want +got):\n%s", diff)
			}
			e, err := expectedFromResult(prev, podNetns, "eth0")
			if err != nil {
				t.Fatalf("expectedFromResult: %v", err)
			}
			// CHECK looks for our addresses and every route of the result.
			var wantAddrs []netip.Prefix
			for _, a := range tt.allocs {
				wantAddrs = append(wantAddrs, netip.PrefixFrom(a.Addr, a.Addr.BitLen()))
			}
			var wantRoutes []expectedRoute
			for _, w := range tt.want {
				var dst, gw string
				if _, err := fmt.Sscanf(w, "route %s via %s", &dst, &gw); err == nil {
					wantRoutes = append(wantRoutes, expectedRoute{dst: netip.MustParsePrefix(dst), gw: netip.MustParseAddr(gw)})
				}
			}
			if !slices.Equal(e.addrs, wantAddrs) || !slices.Equal(e.routes, wantRoutes) {
				t.Errorf("expected from the result: addrs %v routes %v; want %v %v", e.addrs, e.routes, wantAddrs, wantRoutes)
			}
		})
	}
}

func intp(i int) *int { return &i }

func ipnet(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	// As the CNI types decode it: the address with the prefix's mask.
	return net.IPNet{IP: ip, Mask: n.Mask}
}

func TestExpectedFromResult(t *testing.T) {
	base := func() *current.Result {
		return &current.Result{
			CNIVersion: "1.1.0",
			Interfaces: []*current.Interface{
				{Name: "amv0123456789ab"},
				{Name: "eth0", Sandbox: podNetns},
				{Name: "eth1", Sandbox: podNetns},
			},
			IPs: []*current.IPConfig{
				{Interface: intp(1), Address: ipnet("10.244.1.5/32"), Gateway: net.ParseIP("10.244.1.1")},
				{Interface: intp(1), Address: ipnet("fd00:10:244:1::5/128"), Gateway: net.ParseIP("fe80::1")},
				{Interface: intp(0), Address: ipnet("169.254.1.1/32")},
				{Interface: intp(2), Address: ipnet("10.99.0.5/24"), Gateway: net.ParseIP("10.99.0.1")},
				{Address: ipnet("10.98.0.5/24")},
			},
			Routes: []*types.Route{
				{Dst: ipnet("0.0.0.0/0"), GW: net.ParseIP("10.244.1.1")},
				{Dst: ipnet("fd00::/8")},
				{Dst: ipnet("10.200.0.0/16"), GW: net.ParseIP("10.99.0.1"), Table: intp(100)},
			},
		}
	}
	routes := []string{"route 0.0.0.0/0 via 10.244.1.1", "route fd00::/8", "route 10.200.0.0/16 via 10.99.0.1 table 100"}
	tests := []struct {
		name    string
		result  func() *current.Result
		sandbox string
		ifname  string
		want    []string
		wantErr string
	}{
		{
			name: "pod interface", result: base, sandbox: podNetns, ifname: "eth0",
			want: append([]string{"addr 10.244.1.5/32", "addr fd00:10:244:1::5/128"}, routes...),
		},
		{
			name: "second interface", result: base, sandbox: podNetns, ifname: "eth1",
			want: append([]string{"addr 10.99.0.5/24"}, routes...),
		},
		{
			name: "4-byte addresses and no gateway",
			result: func() *current.Result {
				r := base()
				r.IPs = []*current.IPConfig{{Interface: intp(1), Address: net.IPNet{IP: net.IP{10, 244, 1, 5}, Mask: net.CIDRMask(32, 32)}}}
				return r
			},
			sandbox: podNetns, ifname: "eth0",
			want: append([]string{"addr 10.244.1.5/32"}, routes...),
		},
		{
			name: "no IPs", result: func() *current.Result { r := base(); r.IPs = nil; return r },
			sandbox: podNetns, ifname: "eth0", want: routes,
		},
		{
			name: "unknown interface", result: base, sandbox: podNetns, ifname: "net1",
			wantErr: "prevResult has no interface net1 in " + podNetns,
		},
		{
			name: "interface in another namespace", result: base, sandbox: "/var/run/netns/other", ifname: "eth0",
			wantErr: "no interface eth0 in /var/run/netns/other",
		},
		{
			name: "host interface, outside any sandbox", result: base, sandbox: "", ifname: "amv0123456789ab",
			want: append([]string{"addr 169.254.1.1/32"}, routes...),
		},
		{
			name: "bad address",
			result: func() *current.Result {
				r := base()
				r.IPs = append(r.IPs, &current.IPConfig{Interface: intp(1), Address: net.IPNet{IP: net.IP{1, 2, 3}}})
				return r
			},
			sandbox: podNetns, ifname: "eth0",
			wantErr: "bad address",
		},
		{
			name: "bad route",
			result: func() *current.Result {
				r := base()
				r.Routes = append(r.Routes, &types.Route{GW: net.ParseIP("10.244.1.1")})
				return r
			},
			sandbox: podNetns, ifname: "eth0",
			wantErr: "bad route destination",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := expectedFromResult(tt.result(), tt.sandbox, tt.ifname)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range e.addrs {
				got = append(got, "addr "+a.String())
			}
			for _, r := range e.routes {
				got = append(got, "route "+r.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("expected (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodOf(t *testing.T) {
	ns, name, uid := podOf("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u-1")
	if ns != "x" || name != "a" || uid != "u-1" {
		t.Errorf("podOf: %q %q %q", ns, name, uid)
	}
	if ns, name, _ := podOf(""); ns != "" || name != "" {
		t.Errorf("podOf of no arguments: %q %q", ns, name)
	}
}
