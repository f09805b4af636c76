package lab

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultsValid(t *testing.T) {
	for _, family := range []string{FamilyIPv4, FamilyIPv6, FamilyDual} {
		c := Defaults()
		c.IPFamily = family
		if err := c.Validate(); err != nil {
			t.Errorf("Defaults() with family %s: %v", family, err)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error, each must appear
	}{
		{name: "uppercase name", mutate: func(c *Config) { c.Name = "Lab" },
			want: []string{`lab name "Lab": must be 1-8 lowercase letters or digits, starting with a letter`}},
		{name: "name too long", mutate: func(c *Config) { c.Name = "labnumber9" }, want: []string{`lab name "labnumber9"`}},
		{name: "name starts with a digit", mutate: func(c *Config) { c.Name = "1lab" }, want: []string{`lab name "1lab"`}},
		{name: "empty name", mutate: func(c *Config) { c.Name = "" }, want: []string{`lab name ""`}},
		{name: "name with a dash", mutate: func(c *Config) { c.Name = "my-lab" }, want: []string{`lab name "my-lab"`}},
		{name: "0 nodes", mutate: func(c *Config) { c.Nodes = 0 }, want: []string{"nodes 0: must be between 1 and 50"}},
		{name: "51 nodes", mutate: func(c *Config) { c.Nodes = 51 }, want: []string{"nodes 51: must be between 1 and 50"}},
		{name: "unknown family", mutate: func(c *Config) { c.IPFamily = "ipv5" }, want: []string{`ip family "ipv5": must be ipv4, ipv6 or dual`}},
		{name: "relative state root", mutate: func(c *Config) { c.StateRoot = "var/lib/lab" }, want: []string{`state root "var/lib/lab": must be an absolute path`}},
		{name: "pod CIDR host bits", mutate: func(c *Config) { c.PodCIDRv4 = pfx("10.244.1.0/16") },
			want: []string{"IPv4 pod CIDR 10.244.1.0/16: host bits set (did you mean 10.244.0.0/16?)"}},
		{name: "service CIDR host bits", mutate: func(c *Config) { c.ServiceCIDRv4 = pfx("10.96.0.1/16") },
			want: []string{"IPv4 service CIDR 10.96.0.1/16: host bits set (did you mean 10.96.0.0/16?)"}},
		{name: "IPv6 underlay host bits", mutate: func(c *Config) { c.IPFamily = FamilyDual; c.UnderlayV6 = pfx("fd00:a:e::1/64") },
			want: []string{"IPv6 underlay fd00:a:e::1/64: host bits set (did you mean fd00:a:e::/64?)"}},
		{name: "underlay not set", mutate: func(c *Config) { c.UnderlayV4 = netip.Prefix{} }, want: []string{"IPv4 underlay: not set"}},
		{name: "IPv4 range given IPv6", mutate: func(c *Config) { c.ServiceCIDRv4 = pfx("fd00:10:96::/112") },
			want: []string{"IPv4 service CIDR fd00:10:96::/112: wrong address family"}},
		{name: "IPv6 range given IPv4", mutate: func(c *Config) { c.IPFamily = FamilyIPv6; c.PodCIDRv6 = pfx("10.244.0.0/16") },
			want: []string{"IPv6 pod CIDR 10.244.0.0/16: wrong address family"}},
		{name: "underlay too small", mutate: func(c *Config) { c.UnderlayV4 = pfx("172.30.0.0/25") },
			want: []string{"IPv4 underlay 172.30.0.0/25: too small, need at least a /24"}},
		{name: "service CIDR too small", mutate: func(c *Config) { c.ServiceCIDRv4 = pfx("10.96.0.0/29") },
			want: []string{"IPv4 service CIDR 10.96.0.0/29: too small, need at least a /28"}},
		{name: "overlapping pod and service ranges", mutate: func(c *Config) { c.ServiceCIDRv4 = pfx("10.244.128.0/20") },
			want: []string{"IPv4 pod CIDR 10.244.0.0/16, service CIDR 10.244.128.0/20 and underlay 172.30.0.0/24 must not overlap"}},
		{name: "pod range overlapping the underlay", mutate: func(c *Config) { c.UnderlayV4 = pfx("10.244.7.0/24") },
			want: []string{"IPv4 pod CIDR 10.244.0.0/16, service CIDR 10.96.0.0/16 and underlay 10.244.7.0/24 must not overlap"}},
		{name: "overlapping IPv6 ranges", mutate: func(c *Config) { c.IPFamily = FamilyDual; c.ServiceCIDRv6 = pfx("fd00:10:244::/112") },
			want: []string{"IPv6 pod CIDR fd00:10:244::/56, service CIDR fd00:10:244::/112 and underlay fd00:a:e::/64 must not overlap"}},
		{name: "too many nodes for the pod CIDR", mutate: func(c *Config) { c.PodCIDRv4 = pfx("10.244.0.0/24"); c.NodeMaskV4 = 26; c.Nodes = 5 },
			want: []string{"IPv4 pod CIDR 10.244.0.0/24 holds only 4 node ranges of /26, lab wants 5"}},
		{name: "too many nodes for the IPv6 pod CIDR", mutate: func(c *Config) { c.IPFamily = FamilyIPv6; c.PodCIDRv6 = pfx("fd00:10:244::/62"); c.Nodes = 5 },
			want: []string{"IPv6 pod CIDR fd00:10:244::/62 has too few /64 node ranges for 5 nodes"}},
		{name: "node mask wider than the pod CIDR", mutate: func(c *Config) { c.NodeMaskV4 = 12 },
			want: []string{"IPv4 node mask /12: must be within the pod CIDR and at most /28", "IPv4 pod CIDR 10.244.0.0/16: too small, need at least a /12"}},
		{name: "node mask too narrow", mutate: func(c *Config) { c.NodeMaskV4 = 29 },
			want: []string{"IPv4 node mask /29: must be within the pod CIDR and at most /28"}},
		{name: "IPv6 node mask too narrow", mutate: func(c *Config) { c.IPFamily = FamilyDual; c.NodeMaskV6 = 121 },
			want: []string{"IPv6 node mask /121: must be within the pod CIDR and at most /120"}},
		{name: "IPv6 service range larger than /108", mutate: func(c *Config) { c.IPFamily = FamilyDual; c.ServiceCIDRv6 = pfx("fd00:10:96::/100") },
			want: []string{"IPv6 service CIDR fd00:10:96::/100: must be /108 or smaller"}},
		{name: "IPv6 service range /107", mutate: func(c *Config) { c.IPFamily = FamilyIPv6; c.ServiceCIDRv6 = pfx("fd00:10:96::/107") },
			want: []string{"IPv6 service CIDR fd00:10:96::/107: must be /108 or smaller"}},
		{name: "empty cluster domain", mutate: func(c *Config) { c.ClusterDomain = "" }, want: []string{"cluster domain: must not be empty"}},
		{name: "apiserver port 0", mutate: func(c *Config) { c.APIServerPort = 0 }, want: []string{"apiserver port 0: out of range"}},
		{name: "etcd port 65535", mutate: func(c *Config) { c.EtcdPort = 65535 }, want: []string{"etcd port 65535: out of range"}},
		{name: "every problem at once", mutate: func(c *Config) { c.Name = "X"; c.Nodes = 0; c.ClusterDomain = "" },
			want: []string{`lab name "X"`, "nodes 0", "cluster domain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if got, want := strings.Count(err.Error(), "\n")+1, len(tt.want); got != want {
				t.Errorf("got %d problems, want %d:\n%v", got, want, err)
			}
		})
	}
}

func TestValidateIgnoresTheUnusedFamily(t *testing.T) {
	c := Defaults()
	c.UnderlayV6, c.PodCIDRv6, c.ServiceCIDRv6 = netip.Prefix{}, netip.Prefix{}, netip.Prefix{}
	if err := c.Validate(); err != nil {
		t.Errorf("IPv4 lab without IPv6 ranges: %v", err)
	}
	c = Defaults()
	c.IPFamily = FamilyIPv6
	c.UnderlayV4, c.PodCIDRv4, c.ServiceCIDRv4 = netip.Prefix{}, netip.Prefix{}, netip.Prefix{}
	if err := c.Validate(); err != nil {
		t.Errorf("IPv6 lab without IPv4 ranges: %v", err)
	}
}

func TestValidateAccepts(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"one node", func(c *Config) { c.Nodes = 1 }},
		{"50 nodes", func(c *Config) { c.Nodes = 50 }},
		{"8-character name", func(c *Config) { c.Name = "abcdefg8" }},
		{"exactly enough node ranges", func(c *Config) { c.PodCIDRv4 = pfx("10.244.0.0/24"); c.NodeMaskV4 = 26; c.Nodes = 4 }},
		{"IPv6 service range /108", func(c *Config) { c.IPFamily = FamilyDual; c.ServiceCIDRv6 = pfx("fd00:10:96::/108") }},
		{"port 65534", func(c *Config) { c.APIServerPort = 65534 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.mutate(&c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	pfxs := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := []struct {
		family       string
		node1        []netip.Prefix
		node50       []netip.Prefix
		bridge       []netip.Prefix
		external     []netip.Prefix
		apiURL       string
		kubernetesIP string
		dnsIP        string
		serviceCIDRs []netip.Prefix
		podCIDRs     []netip.Prefix
	}{
		{
			family:       FamilyIPv4,
			node1:        pfxs("172.30.0.11/24"),
			node50:       pfxs("172.30.0.60/24"),
			bridge:       pfxs("172.30.0.1/24"),
			external:     pfxs("172.30.0.200/24"),
			apiURL:       "https://172.30.0.1:6443",
			kubernetesIP: "10.96.0.1",
			dnsIP:        "10.96.0.10",
			serviceCIDRs: pfxs("10.96.0.0/16"),
			podCIDRs:     pfxs("10.244.0.0/16"),
		},
		{
			family:       FamilyIPv6,
			node1:        pfxs("fd00:a:e::b/64"),
			node50:       pfxs("fd00:a:e::3c/64"),
			bridge:       pfxs("fd00:a:e::1/64"),
			external:     pfxs("fd00:a:e::c8/64"),
			apiURL:       "https://[fd00:a:e::1]:6443",
			kubernetesIP: "fd00:10:96::1",
			dnsIP:        "fd00:10:96::a",
			serviceCIDRs: pfxs("fd00:10:96::/112"),
			podCIDRs:     pfxs("fd00:10:244::/56"),
		},
		{
			family:       FamilyDual,
			node1:        pfxs("172.30.0.11/24", "fd00:a:e::b/64"),
			node50:       pfxs("172.30.0.60/24", "fd00:a:e::3c/64"),
			bridge:       pfxs("172.30.0.1/24", "fd00:a:e::1/64"),
			external:     pfxs("172.30.0.200/24", "fd00:a:e::c8/64"),
			apiURL:       "https://172.30.0.1:6443",
			kubernetesIP: "10.96.0.1",
			dnsIP:        "10.96.0.10",
			serviceCIDRs: pfxs("10.96.0.0/16", "fd00:10:96::/112"),
			podCIDRs:     pfxs("10.244.0.0/16", "fd00:10:244::/56"),
		},
	}
	cmpPrefix := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			c := Defaults()
			c.IPFamily = tt.family
			for what, pair := range map[string][2][]netip.Prefix{
				"NodeAddrs(1)":    {tt.node1, c.NodeAddrs(1)},
				"NodeAddrs(50)":   {tt.node50, c.NodeAddrs(50)},
				"BridgeAddrs()":   {tt.bridge, c.BridgeAddrs()},
				"ExternalAddrs()": {tt.external, c.ExternalAddrs()},
				"ServiceCIDRs()":  {tt.serviceCIDRs, c.ServiceCIDRs()},
				"PodCIDRs()":      {tt.podCIDRs, c.PodCIDRs()},
			} {
				if diff := cmp.Diff(pair[0], pair[1], cmpPrefix); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
				}
			}
			if got := c.APIServerURL(); got != tt.apiURL {
				t.Errorf("APIServerURL() = %q, want %q", got, tt.apiURL)
			}
			if got := c.APIServerAddr().String(); got != strings.Split(tt.bridge[0].String(), "/")[0] {
				t.Errorf("APIServerAddr() = %s, want the first bridge address %s", got, tt.bridge[0])
			}
			if got := c.KubernetesServiceIP().String(); got != tt.kubernetesIP {
				t.Errorf("KubernetesServiceIP() = %s, want %s", got, tt.kubernetesIP)
			}
			if got := c.DNSServiceIP().String(); got != tt.dnsIP {
				t.Errorf("DNSServiceIP() = %s, want %s", got, tt.dnsIP)
			}
		})
	}
}

func TestAPIServerURLPort(t *testing.T) {
	c := Defaults()
	c.APIServerPort = 16443
	if got := c.APIServerURL(); got != "https://172.30.0.1:16443" {
		t.Errorf("APIServerURL() = %q", got)
	}
}

func TestHostAddr(t *testing.T) {
	tests := []struct {
		prefix string
		n      int
		want   string
	}{
		{"10.0.0.0/16", 0, "10.0.0.0"},
		{"10.0.0.0/16", 1, "10.0.0.1"},
		{"10.0.0.0/16", 255, "10.0.0.255"},
		{"10.0.0.0/16", 256, "10.0.1.0"},
		{"10.0.0.0/16", 300, "10.0.1.44"},
		{"10.0.0.0/8", 65536 + 2, "10.1.0.2"},
		{"fd00::/64", 255, "fd00::ff"},
		{"fd00::/64", 256, "fd00::100"},
		{"fd00::/64", 65536, "fd00::1:0"},
	}
	for _, tt := range tests {
		if got := hostAddr(netip.MustParsePrefix(tt.prefix), tt.n).String(); got != tt.want {
			t.Errorf("hostAddr(%s, %d) = %s, want %s", tt.prefix, tt.n, got, tt.want)
		}
	}
}

func TestNames(t *testing.T) {
	c := Defaults()
	c.Name = "dev"
	c.StateRoot = "/var/lib/amime-lab"
	for got, want := range map[string]string{
		c.Dir():            "/var/lib/amime-lab/dev",
		c.NodeName(3):      "dev-node-3",
		c.NodeNetns(3):     "amime-dev-node-3",
		c.ExternalNetns():  "amime-dev-external",
		c.PodNetnsPrefix(): "amime-dev-pod-",
		c.BridgeName():     "am-dev",
		c.VethName(0):      "am-dev-x",
		c.VethName(7):      "am-dev-7",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestInterfaceNamesFitIFNAMSIZ(t *testing.T) {
	// Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
	const maxIfName = 15
	names := []string{"a", "lab", "abcdefgh", "z9999999"}
	for _, name := range names {
		for nodes := 1; nodes <= 50; nodes++ {
			c := Defaults()
			c.Name = name
			c.Nodes = nodes
			if err := c.Validate(); err != nil {
				t.Fatalf("name %q, %d nodes: %v", name, nodes, err)
			}
			ifnames := []string{c.BridgeName(), c.VethName(0)}
			for i := 1; i <= nodes; i++ {
				ifnames = append(ifnames, c.VethName(i))
			}
			seen := map[string]bool{}
			for _, n := range ifnames {
				if len(n) > maxIfName {
					t.Errorf("name %q, %d nodes: interface %q is %d bytes, more than %d", name, nodes, n, len(n), maxIfName)
				}
				if seen[n] {
					t.Errorf("name %q: interface name %q used twice", name, n)
				}
				seen[n] = true
			}
		}
	}
	// The longest possible names, spelled out.
	c := Defaults()
	c.Name = "abcdefgh"
	if got := fmt.Sprint(len(c.BridgeName()), len(c.VethName(0)), len(c.VethName(50))); got != "11 13 14" {
		t.Errorf("lengths of bridge, external veth, node 50 veth = %s, want 11 13 14", got)
	}
}

func TestPortsFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	if err := portsFree("127.0.0.1", busy); err == nil || !strings.Contains(err.Error(), "--etcd-port") {
		t.Errorf("portsFree(busy port) = %v, want an error that says what to do", err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()
	if err := portsFree("127.0.0.1", free); err != nil {
		t.Errorf("portsFree(free port) = %v", err)
	}
}
