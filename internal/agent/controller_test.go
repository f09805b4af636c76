package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"amime.dev/amime/internal/routing"
)

func k8sNode(name string, podCIDR string, podCIDRs []string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: podCIDRs},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
}

func internalIP(a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a}
}

func TestToNode(t *testing.T) {
	tests := []struct {
		name string
		node *corev1.Node
		want string
	}{
		{
			name: "dual-stack",
			node: k8sNode("n1", "10.244.1.0/24", []string{"10.244.1.0/24", "fd00:10:244:1::/64"},
				internalIP("192.168.1.11"), internalIP("fd00:1::11")),
			want: "n1 pods [10.244.1.0/24 fd00:10:244:1::/64] ips [192.168.1.11 fd00:1::11]",
		},
		{
			name: "ipv6 primary",
			node: k8sNode("n1", "fd00:10:244:1::/64", []string{"fd00:10:244:1::/64", "10.244.1.0/24"},
				internalIP("fd00:1::11"), internalIP("192.168.1.11")),
			want: "n1 pods [fd00:10:244:1::/64 10.244.1.0/24] ips [fd00:1::11 192.168.1.11]",
		},
		{
			// Older clusters set only spec.podCIDR.
			name: "podCIDR fallback",
			node: k8sNode("n1", "10.244.1.0/24", nil, internalIP("192.168.1.11")),
			want: "n1 pods [10.244.1.0/24] ips [192.168.1.11]",
		},
		{
			name: "podCIDRs win over podCIDR",
			node: k8sNode("n1", "10.244.9.0/24", []string{"10.244.1.0/24"}, internalIP("192.168.1.11")),
			want: "n1 pods [10.244.1.0/24] ips [192.168.1.11]",
		},
		{
			name: "no podCIDR yet",
			node: k8sNode("n1", "", nil, internalIP("192.168.1.11")),
			want: "n1 pods [] ips [192.168.1.11]",
		},
		{
			name: "bad podCIDRs skipped",
			node: k8sNode("n1", "", []string{"garbage", "fd00:10:244:1::/64"}, internalIP("192.168.1.11")),
			want: "n1 pods [fd00:10:244:1::/64] ips [192.168.1.11]",
		},
		{
			name: "only bad podCIDRs: fallback",
			node: k8sNode("n1", "10.244.1.0/24", []string{"garbage"}, internalIP("192.168.1.11")),
			want: "n1 pods [10.244.1.0/24] ips [192.168.1.11]",
		},
		{
			name: "bad podCIDR",
			node: k8sNode("n1", "10.244.1.0", nil),
			want: "n1 pods [] ips []",
		},
		{
			name: "InternalIPs only",
			node: k8sNode("n1", "10.244.1.0/24", nil,
				corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"},
				corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"},
				internalIP("192.168.1.11"),
				corev1.NodeAddress{Type: corev1.NodeInternalDNS, Address: "n1.internal"},
				corev1.NodeAddress{Type: corev1.NodeExternalDNS, Address: "n1.example.com"},
				internalIP("not-an-ip"),
				internalIP("fd00:1::11")),
			want: "n1 pods [10.244.1.0/24] ips [192.168.1.11 fd00:1::11]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(toNode(tt.node)); got != tt.want {
				t.Errorf("toNode = %s\nwant     %s", got, tt.want)
			}
		})
	}
}

func render(n routing.Node) string {
	pods := []string{}
	for _, p := range n.PodCIDRs {
		pods = append(pods, p.String())
	}
	ips := []string{}
	for _, a := range n.InternalIPs {
		ips = append(ips, a.String())
	}
	return fmt.Sprintf("%s pods [%s] ips [%s]", n.Name, strings.Join(pods, " "), strings.Join(ips, " "))
}

func TestNetworkAvailable(t *testing.T) {
	cond := func(typ corev1.NodeConditionType, s corev1.ConditionStatus) corev1.NodeCondition {
		return corev1.NodeCondition{Type: typ, Status: s}
	}
	tests := []struct {
		name  string
		conds []corev1.NodeCondition
		want  bool
	}{
		{"no conditions", nil, false},
		{"only Ready", []corev1.NodeCondition{cond(corev1.NodeReady, corev1.ConditionTrue)}, false},
		{"NetworkUnavailable False", []corev1.NodeCondition{cond(corev1.NodeReady, corev1.ConditionTrue), cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse)}, true},
		{"NetworkUnavailable True", []corev1.NodeCondition{cond(corev1.NodeNetworkUnavailable, corev1.ConditionTrue)}, false},
		{"NetworkUnavailable Unknown", []corev1.NodeCondition{cond(corev1.NodeNetworkUnavailable, corev1.ConditionUnknown)}, false},
	}
	for _, tt := range tests {
		n := &corev1.Node{Status: corev1.NodeStatus{Conditions: tt.conds}}
		if got := networkAvailable(n); got != tt.want {
			t.Errorf("%s: networkAvailable = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{NodeName: "n1", Mode: routing.Overlay, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	}
	tests := []struct {
		name   string
		modify func(*Config)
		// want are substrings of the error, one per problem; none for a valid configuration.
		want []string
	}{
		{"valid", func(*Config) {}, nil},
		{"native", func(c *Config) { c.Mode = routing.Native }, nil},
		{"dual-stack", func(c *Config) {
			c.ClusterCIDRs = append(c.ClusterCIDRs, netip.MustParsePrefix("fd00:10:244::/56"))
		}, nil},
		{"no node name", func(c *Config) { c.NodeName = "" }, []string{"--node-name (or NODE_NAME) is required"}},
		{"bad mode", func(c *Config) { c.Mode = "bgp" }, []string{`routing mode "bgp"`}},
		{"no mode", func(c *Config) { c.Mode = "" }, []string{`routing mode ""`}},
		{"no cluster CIDR", func(c *Config) { c.ClusterCIDRs = nil }, []string{"--cluster-cidr is required"}},
		{"host bits", func(c *Config) {
			c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::1/56")}
		}, []string{"--cluster-cidr fd00:10:244::1/56: host bits set"}},
		{"everything wrong", func(c *Config) {
			*c = Config{Mode: "vxlan", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.1/16")}}
		}, []string{"--node-name", `routing mode "vxlan"`, "--cluster-cidr 10.244.1.1/16: host bits set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want %q", tt.want)
			}
			// Every problem at once, one per line.
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{NodeName: "n1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Errorf("defaulted configuration invalid: %v", err)
	}
	got := fmt.Sprintf("%s %s %s %s %s %s %v %v", c.Mode, c.CNIConfDir, c.CNIBinDir, c.IPAMDir, c.ProcSysNet, c.Listen, c.ResyncPeriod, c.Logger != nil)
	want := "overlay /etc/cni/net.d /opt/cni/bin /var/lib/amime/ipam /proc/sys/net :9962 1m0s true"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	// Set fields are kept.
	c = Config{Mode: routing.Native, CNIConfDir: "/c", CNIBinDir: "/b", IPAMDir: "/i", ProcSysNet: "/p", Listen: ":1", ResyncPeriod: time.Second}
	c.Defaults()
	got = fmt.Sprintf("%s %s %s %s %s %s %v", c.Mode, c.CNIConfDir, c.CNIBinDir, c.IPAMDir, c.ProcSysNet, c.Listen, c.ResyncPeriod)
	if want := "native /c /b /i /p :1 1s"; got != want {
		t.Errorf("Defaults changed set fields: %s, want %s", got, want)
	}
}
