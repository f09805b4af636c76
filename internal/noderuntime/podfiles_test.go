package noderuntime

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func strPtr(s string) *string { return &s }

func TestPodDNS(t *testing.T) {
	node := dnsSettings{
		Nameservers: []string{"192.168.1.1", "192.168.1.2"},
		Searches:    []string{"example.com"},
		Options:     []string{"edns0"},
	}
	clusterDNS := []string{"10.96.0.10"}
	clusterSearches := []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	many := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	tests := []struct {
		name        string
		policy      corev1.DNSPolicy
		hostNetwork bool
		config      *corev1.PodDNSConfig
		clusterDNS  []string // default: clusterDNS
		noCluster   bool     // use no cluster DNS at all
		node        *dnsSettings
		want        dnsSettings
	}{
		{
			name: "empty policy is ClusterFirst",
			want: dnsSettings{Nameservers: clusterDNS, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots:5"}},
		},
		{
			name:   "ClusterFirst",
			policy: corev1.DNSClusterFirst,
			want:   dnsSettings{Nameservers: clusterDNS, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots:5"}},
		},
		{
			name:   "ClusterFirst node without searches",
			policy: corev1.DNSClusterFirst,
			node:   &dnsSettings{Nameservers: []string{"1.1.1.1"}},
			want:   dnsSettings{Nameservers: clusterDNS, Searches: clusterSearches, Options: []string{"ndots:5"}},
		},
		{
			name:       "ClusterFirst dual-stack cluster DNS",
			policy:     corev1.DNSClusterFirst,
			clusterDNS: []string{"10.96.0.10", "fd00:10:96::a"},
			want:       dnsSettings{Nameservers: []string{"10.96.0.10", "fd00:10:96::a"}, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots:5"}},
		},
		{
			name:        "ClusterFirst with hostNetwork falls back to Default",
			policy:      corev1.DNSClusterFirst,
			hostNetwork: true,
			want:        node,
		},
		{
			name:        "empty policy with hostNetwork falls back to Default",
			hostNetwork: true,
			want:        node,
		},
		{
			name:        "ClusterFirstWithHostNet with hostNetwork",
			policy:      corev1.DNSClusterFirstWithHostNet,
			hostNetwork: true,
			want:        dnsSettings{Nameservers: clusterDNS, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots:5"}},
		},
		{
			name:   "ClusterFirstWithHostNet without hostNetwork",
			policy: corev1.DNSClusterFirstWithHostNet,
			want:   dnsSettings{Nameservers: clusterDNS, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots:5"}},
		},
		{
			name:   "Default",
			policy: corev1.DNSDefault,
			want:   node,
		},
		{
			name:   "None without dnsConfig is empty",
			policy: corev1.DNSNone,
			want:   dnsSettings{},
		},
		{
			name:   "None with dnsConfig",
			policy: corev1.DNSNone,
			config: &corev1.PodDNSConfig{
				Nameservers: []string{"1.1.1.1"},
				Searches:    []string{"a.example"},
				Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: strPtr("2")}, {Name: "edns0"}},
			},
			want: dnsSettings{Nameservers: []string{"1.1.1.1"}, Searches: []string{"a.example"}, Options: []string{"ndots:2", "edns0"}},
		},
		{
			name:   "ClusterFirst merged with dnsConfig",
			policy: corev1.DNSClusterFirst,
			config: &corev1.PodDNSConfig{
				Nameservers: []string{"8.8.8.8"},
				Searches:    []string{"my.example"},
				Options: []corev1.PodDNSConfigOption{
					{Name: "ndots", Value: strPtr("2")}, // overrides ndots:5 in place
					{Name: "timeout", Value: strPtr("1")},
					{Name: "single-request-reopen"},
					{Name: "attempts", Value: strPtr("")}, // empty value: the bare name, as the kubelet
				},
			},
			want: dnsSettings{
				Nameservers: []string{"10.96.0.10", "8.8.8.8"},
				Searches:    []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local", "example.com", "my.example"},
				Options:     []string{"ndots:2", "timeout:1", "single-request-reopen", "attempts"},
			},
		},
		{
			name:   "dnsConfig options repeated: the last wins",
			policy: corev1.DNSClusterFirst,
			config: &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{
				{Name: "timeout", Value: strPtr("1")},
				{Name: "timeout", Value: strPtr("3")},
				{Name: "ndots"},
			}},
			want: dnsSettings{Nameservers: clusterDNS, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots", "timeout:3"}},
		},
		{
			name:   "dnsConfig duplicates are dropped",
			policy: corev1.DNSClusterFirst,
			config: &corev1.PodDNSConfig{
				Nameservers: []string{"10.96.0.10", "8.8.8.8", "8.8.8.8"},
				Searches:    []string{"cluster.local", "example.com", "x.example"},
			},
			want: dnsSettings{
				Nameservers: []string{"10.96.0.10", "8.8.8.8"},
				Searches:    []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local", "example.com", "x.example"},
				Options:     []string{"ndots:5"},
			},
		},
		{
			name:   "Default merged with dnsConfig overrides node option",
			policy: corev1.DNSDefault,
			node:   &dnsSettings{Nameservers: []string{"192.168.1.1"}, Options: []string{"edns0", "ndots:1"}},
			config: &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: strPtr("3")}}},
			want:   dnsSettings{Nameservers: []string{"192.168.1.1"}, Options: []string{"edns0", "ndots:3"}},
		},
		{
			name:   "at most 3 nameservers",
			policy: corev1.DNSClusterFirst,
			config: &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8", "9.9.9.9"}},
			want:   dnsSettings{Nameservers: []string{"10.96.0.10", "1.1.1.1", "8.8.8.8"}, Searches: append(clusterSearches, "example.com"), Options: []string{"ndots:5"}},
		},
		{
			name:   "at most 3 nameservers and 32 searches",
			policy: corev1.DNSNone,
			config: &corev1.PodDNSConfig{Nameservers: many("10.0.0.", 5), Searches: many("s", 40)},
			want:   dnsSettings{Nameservers: many("10.0.0.", 3), Searches: many("s", 32)},
		},
		{
			name:      "ClusterFirst without cluster DNS falls back to the node",
			policy:    corev1.DNSClusterFirst,
			noCluster: true,
			want:      node,
		},
		{
			name:      "ClusterFirst without cluster DNS, with dnsConfig",
			policy:    corev1.DNSClusterFirst,
			noCluster: true,
			config:    &corev1.PodDNSConfig{Nameservers: []string{"8.8.8.8"}, Options: []corev1.PodDNSConfigOption{{Name: "edns0"}, {Name: "rotate"}}},
			want:      dnsSettings{Nameservers: []string{"192.168.1.1", "192.168.1.2", "8.8.8.8"}, Searches: []string{"example.com"}, Options: []string{"edns0", "rotate"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "web"},
				Spec:       corev1.PodSpec{DNSPolicy: tt.policy, HostNetwork: tt.hostNetwork, DNSConfig: tt.config},
			}
			n := node
			if tt.node != nil {
				n = *tt.node
			}
			cd := clusterDNS
			if tt.clusterDNS != nil {
				cd = tt.clusterDNS
			}
			if tt.noCluster {
				cd = nil
			}
			got := podDNS(pod, cd, "cluster.local", n)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("podDNS() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodDNSDoesNotModifyInputs(t *testing.T) {
	node := dnsSettings{Nameservers: []string{"192.168.1.1"}, Searches: []string{"example.com"}, Options: []string{"ndots:1"}}
	clusterDNS := []string{"10.96.0.10"}
	for _, policy := range []corev1.DNSPolicy{corev1.DNSClusterFirst, corev1.DNSDefault, corev1.DNSNone} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web"}, Spec: corev1.PodSpec{
			DNSPolicy: policy,
			DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{"8.8.8.8"}, Searches: []string{"x"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: strPtr("4")}}},
		}}
		d := podDNS(pod, clusterDNS, "cluster.local", node)
		d.Nameservers[0], d.Searches[0], d.Options[0] = "changed", "changed", "changed"
		if diff := cmp.Diff(dnsSettings{Nameservers: []string{"192.168.1.1"}, Searches: []string{"example.com"}, Options: []string{"ndots:1"}}, node); diff != "" {
			t.Errorf("%s: node settings changed (-want +got):\n%s", policy, diff)
		}
		if diff := cmp.Diff([]string{"10.96.0.10"}, clusterDNS); diff != "" {
			t.Errorf("%s: cluster DNS changed (-want +got):\n%s", policy, diff)
		}
	}
}

func TestDNSSettingsString(t *testing.T) {
	tests := []struct {
		name string
		d    dnsSettings
		want string
	}{
		{
			name: "cluster first",
			d: dnsSettings{
				Nameservers: []string{"10.96.0.10"},
				Searches:    []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
				Options:     []string{"ndots:5"},
			},
			want: "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
		},
		{name: "empty", d: dnsSettings{}, want: ""},
		{
			name: "nameservers only",
			d:    dnsSettings{Nameservers: []string{"10.96.0.10", "fd00:10:96::a"}},
			want: "nameserver 10.96.0.10\nnameserver fd00:10:96::a\n",
		},
		{
			name: "several options",
			d:    dnsSettings{Options: []string{"ndots:2", "edns0", "timeout:1"}},
			want: "options ndots:2 edns0 timeout:1\n",
		},
		{
			name: "search only",
			d:    dnsSettings{Searches: []string{"a"}},
			want: "search a\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseResolvConf(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    dnsSettings
	}{
		{name: "empty", content: "", want: dnsSettings{}},
		{
			name:    "systemd-resolved stub",
			content: "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n# Do not edit.\n\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
			want:    dnsSettings{Nameservers: []string{"127.0.0.53"}, Searches: []string{"lan"}, Options: []string{"edns0", "trust-ad"}},
		},
		{
			name:    "several nameservers and searches",
			content: "nameserver 10.0.0.2\nnameserver fd00::2\nsearch a.example b.example\n",
			want:    dnsSettings{Nameservers: []string{"10.0.0.2", "fd00::2"}, Searches: []string{"a.example", "b.example"}},
		},
		{
			name:    "last search or domain line wins",
			content: "domain corp.example\nsearch a.example b.example\n",
			want:    dnsSettings{Searches: []string{"a.example", "b.example"}},
		},
		{
			name:    "domain after search",
			content: "search a.example b.example\ndomain corp.example\n",
			want:    dnsSettings{Searches: []string{"corp.example"}},
		},
		{
			name:    "options lines accumulate",
			content: "options ndots:2\noptions rotate timeout:1\n",
			want:    dnsSettings{Options: []string{"ndots:2", "rotate", "timeout:1"}},
		},
		{
			name:    "comments and odd whitespace",
			content: "; comment\n  nameserver\t1.1.1.1   # cloudflare\nnameserver 9.9.9.9;quad9\r\n#nameserver 8.8.8.8\nnameserver\nsortlist 130.155.160.0/255.255.240.0\n",
			want:    dnsSettings{Nameservers: []string{"1.1.1.1", "9.9.9.9"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseResolvConf(tt.content)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("parseResolvConf() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseResolvConfRoundTrip(t *testing.T) {
	d := dnsSettings{
		Nameservers: []string{"10.96.0.10", "fd00:10:96::a"},
		Searches:    []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Options:     []string{"ndots:5", "edns0"},
	}
	if diff := cmp.Diff(d, parseResolvConf(d.String())); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestPodHostname(t *testing.T) {
	long := strings.Repeat("a", 70)
	tests := []struct {
		name      string
		podName   string
		hostname  string
		subdomain string
		domain    string
		want      string
		wantFQDN  string
	}{
		{name: "pod name", podName: "web-0", want: "web-0"},
		{name: "spec.hostname", podName: "web-0", hostname: "custom", want: "custom"},
		{name: "subdomain", podName: "web-0", subdomain: "web", want: "web-0", wantFQDN: "web-0.web.ns1.svc.cluster.local"},
		{name: "hostname and subdomain", podName: "web-0", hostname: "db", subdomain: "backend", want: "db", wantFQDN: "db.backend.ns1.svc.cluster.local"},
		{name: "other cluster domain", podName: "p", subdomain: "s", domain: "lab.internal", want: "p", wantFQDN: "p.s.ns1.svc.lab.internal"},
		{name: "exactly 63", podName: strings.Repeat("b", 63), want: strings.Repeat("b", 63)},
		{name: "truncated to 63", podName: long, want: strings.Repeat("a", 63)},
		{name: "truncation trims dashes", podName: strings.Repeat("a", 61) + "--bbbb", want: strings.Repeat("a", 61)},
		{name: "truncation trims dots and dashes", podName: strings.Repeat("a", 60) + ".-.cccc", want: strings.Repeat("a", 60)},
		{name: "dash before the cut is kept", podName: strings.Repeat("a", 61) + "-bcd", want: strings.Repeat("a", 61) + "-b"},
		{name: "long spec.hostname truncated", podName: "p", hostname: long + "x", want: strings.Repeat("a", 63)},
		{name: "truncated hostname in FQDN", podName: long, subdomain: "s", want: strings.Repeat("a", 63), wantFQDN: strings.Repeat("a", 63) + ".s.ns1.svc.cluster.local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: tt.podName, Namespace: "ns1"},
				Spec:       corev1.PodSpec{Hostname: tt.hostname, Subdomain: tt.subdomain},
			}
			domain := tt.domain
			if domain == "" {
				domain = "cluster.local"
			}
			h, fqdn := podHostname(pod, domain)
			if h != tt.want || fqdn != tt.wantFQDN {
				t.Errorf("podHostname() = (%q, %q), want (%q, %q)", h, fqdn, tt.want, tt.wantFQDN)
			}
		})
	}
}

const hostsHeader = "# Kubernetes-managed hosts file.\n" +
	"127.0.0.1\tlocalhost\n" +
	"::1\tlocalhost ip6-localhost ip6-loopback\n" +
	"fe00::0\tip6-localnet\n" +
	"fe00::0\tip6-mcastprefix\n" +
	"fe00::1\tip6-allnodes\n" +
	"fe00::2\tip6-allrouters\n"

func TestPodHostsFile(t *testing.T) {
	tests := []struct {
		name      string
		hostname  string
		subdomain string
		aliases   []corev1.HostAlias
		ips       []string
		want      string
	}{
		{name: "no IPs", want: hostsHeader},
		{name: "one IP", ips: []string{"10.244.1.5"}, want: hostsHeader + "10.244.1.5\tweb-0\n"},
		{
			name: "dual stack with FQDN", subdomain: "web", ips: []string{"10.244.1.5", "fd00:10:244:1::5"},
			want: hostsHeader + "10.244.1.5\tweb-0.web.ns1.svc.cluster.local\tweb-0\nfd00:10:244:1::5\tweb-0.web.ns1.svc.cluster.local\tweb-0\n",
		},
		{
			name: "spec.hostname", hostname: "db", ips: []string{"10.244.1.5"},
			want: hostsHeader + "10.244.1.5\tdb\n",
		},
		{
			name: "hostAliases",
			ips:  []string{"10.244.1.5"},
			aliases: []corev1.HostAlias{
				{IP: "127.0.0.1", Hostnames: []string{"foo.local", "bar.local"}},
				{IP: "10.1.2.3", Hostnames: []string{"foo.remote"}},
			},
			want: hostsHeader + "10.244.1.5\tweb-0\n" +
				"\n# Entries added by HostAliases.\n" +
				"127.0.0.1\tfoo.local\tbar.local\n" +
				"10.1.2.3\tfoo.remote\n",
		},
		{
			name: "hostAliases and FQDN", subdomain: "s", ips: []string{"10.244.1.5"},
			aliases: []corev1.HostAlias{{IP: "fd00::1", Hostnames: []string{"six"}}},
			want: hostsHeader + "10.244.1.5\tweb-0.s.ns1.svc.cluster.local\tweb-0\n" +
				"\n# Entries added by HostAliases.\n" +
				"fd00::1\tsix\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns1"},
				Spec:       corev1.PodSpec{Hostname: tt.hostname, Subdomain: tt.subdomain, HostAliases: tt.aliases},
			}
			got := podHostsFile(pod, tt.ips, "cluster.local")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("podHostsFile() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func svc(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports},
	}
}

func port(name string, p int32, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: p, Protocol: proto}
}

// envStrings renders env vars as NAME=VALUE for readable diffs.
func envStrings(env []corev1.EnvVar) []string {
	var out []string
	for _, e := range env {
		out = append(out, e.Name+"="+e.Value)
	}
	return out
}

func TestServiceEnv(t *testing.T) {
	kubernetes := svc("default", "kubernetes", "10.96.0.1", port("https", 443, corev1.ProtocolTCP))
	kubernetesEnv := []string{
		"KUBERNETES_SERVICE_HOST=10.96.0.1",
		"KUBERNETES_SERVICE_PORT=443",
		"KUBERNETES_SERVICE_PORT_HTTPS=443",
		"KUBERNETES_PORT=tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO=tcp",
		"KUBERNETES_PORT_443_TCP_PORT=443",
		"KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
	}
	redis := svc("web", "redis-primary", "10.96.12.34", port("redis", 6379, corev1.ProtocolTCP))
	redisEnv := []string{
		"REDIS_PRIMARY_SERVICE_HOST=10.96.12.34",
		"REDIS_PRIMARY_SERVICE_PORT=6379",
		"REDIS_PRIMARY_SERVICE_PORT_REDIS=6379",
		"REDIS_PRIMARY_PORT=tcp://10.96.12.34:6379",
		"REDIS_PRIMARY_PORT_6379_TCP=tcp://10.96.12.34:6379",
		"REDIS_PRIMARY_PORT_6379_TCP_PROTO=tcp",
		"REDIS_PRIMARY_PORT_6379_TCP_PORT=6379",
		"REDIS_PRIMARY_PORT_6379_TCP_ADDR=10.96.12.34",
	}
	kubeDNS := svc("kube-system", "kube-dns", "10.96.0.10",
		port("dns", 53, corev1.ProtocolUDP), port("dns-tcp", 53, corev1.ProtocolTCP), port("metrics", 9153, corev1.ProtocolTCP))
	kubeDNSEnv := []string{
		"KUBE_DNS_SERVICE_HOST=10.96.0.10",
		"KUBE_DNS_SERVICE_PORT=53",
		"KUBE_DNS_SERVICE_PORT_DNS=53",
		"KUBE_DNS_SERVICE_PORT_DNS_TCP=53",
		"KUBE_DNS_SERVICE_PORT_METRICS=9153",
		"KUBE_DNS_PORT=udp://10.96.0.10:53",
		"KUBE_DNS_PORT_53_UDP=udp://10.96.0.10:53",
		"KUBE_DNS_PORT_53_UDP_PROTO=udp",
		"KUBE_DNS_PORT_53_UDP_PORT=53",
		"KUBE_DNS_PORT_53_UDP_ADDR=10.96.0.10",
		"KUBE_DNS_PORT_53_TCP=tcp://10.96.0.10:53",
		"KUBE_DNS_PORT_53_TCP_PROTO=tcp",
		"KUBE_DNS_PORT_53_TCP_PORT=53",
		"KUBE_DNS_PORT_53_TCP_ADDR=10.96.0.10",
		"KUBE_DNS_PORT_9153_TCP=tcp://10.96.0.10:9153",
		"KUBE_DNS_PORT_9153_TCP_PROTO=tcp",
		"KUBE_DNS_PORT_9153_TCP_PORT=9153",
		"KUBE_DNS_PORT_9153_TCP_ADDR=10.96.0.10",
	}
	headless := svc("web", "headless", corev1.ClusterIPNone, port("http", 80, corev1.ProtocolTCP))
	external := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "ext"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
	}
	otherNS := svc("other", "elsewhere", "10.96.1.1", port("", 80, corev1.ProtocolTCP))
	localKubernetes := svc("web", "kubernetes", "10.96.5.5", port("", 8080, corev1.ProtocolTCP))
	localKubernetesEnv := []string{
		"KUBERNETES_SERVICE_HOST=10.96.5.5",
		"KUBERNETES_SERVICE_PORT=8080",
		"KUBERNETES_PORT=tcp://10.96.5.5:8080",
		"KUBERNETES_PORT_8080_TCP=tcp://10.96.5.5:8080",
		"KUBERNETES_PORT_8080_TCP_PROTO=tcp",
		"KUBERNETES_PORT_8080_TCP_PORT=8080",
		"KUBERNETES_PORT_8080_TCP_ADDR=10.96.5.5",
	}
	concat := func(lists ...[]string) []string {
		var out []string
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}

	tests := []struct {
		name     string
		ns       string
		links    *bool
		services []*corev1.Service
		want     []string
	}{
		{name: "no services", ns: "web", want: nil},
		{name: "kubernetes only", ns: "web", services: []*corev1.Service{kubernetes}, want: kubernetesEnv},
		{
			name:     "namespace services sorted by name, other namespaces skipped",
			ns:       "web",
			services: []*corev1.Service{redis, otherNS, kubernetes, kubeDNS},
			want:     concat(kubernetesEnv, redisEnv),
		},
		{
			name:     "multi-port UDP first",
			ns:       "kube-system",
			services: []*corev1.Service{kubeDNS},
			want:     kubeDNSEnv,
		},
		{
			name:     "headless and ExternalName skipped",
			ns:       "web",
			services: []*corev1.Service{headless, external, redis},
			want:     redisEnv,
		},
		{
			name:     "enableServiceLinks=false keeps only kubernetes",
			ns:       "web",
			links:    ptrBool(false),
			services: []*corev1.Service{redis, kubernetes},
			want:     kubernetesEnv,
		},
		{
			name:     "enableServiceLinks=true explicit",
			ns:       "web",
			links:    ptrBool(true),
			services: []*corev1.Service{redis, kubernetes},
			want:     concat(kubernetesEnv, redisEnv),
		},
		{
			name:     "enableServiceLinks=false in namespace default",
			ns:       "default",
			links:    ptrBool(false),
			services: []*corev1.Service{svc("default", "web", "10.96.3.3", port("", 80, "")), kubernetes},
			want:     kubernetesEnv,
		},
		{
			name:     "namespace default with links",
			ns:       "default",
			services: []*corev1.Service{kubernetes, svc("default", "web", "10.96.3.3", port("", 80, ""))},
			want: concat(kubernetesEnv, []string{
				"WEB_SERVICE_HOST=10.96.3.3",
				"WEB_SERVICE_PORT=80",
				"WEB_PORT=tcp://10.96.3.3:80",
				"WEB_PORT_80_TCP=tcp://10.96.3.3:80",
				"WEB_PORT_80_TCP_PROTO=tcp",
				"WEB_PORT_80_TCP_PORT=80",
				"WEB_PORT_80_TCP_ADDR=10.96.3.3",
			}),
		},
		{
			name:     "kubernetes Service of the pod's namespace wins (listed first)",
			ns:       "web",
			services: []*corev1.Service{localKubernetes, kubernetes},
			want:     localKubernetesEnv,
		},
		{
			name:     "kubernetes Service of the pod's namespace wins (listed last)",
			ns:       "web",
			services: []*corev1.Service{kubernetes, localKubernetes},
			want:     localKubernetesEnv,
		},
		{
			name:     "kubernetes Service of the pod's namespace ignored without links",
			ns:       "web",
			links:    ptrBool(false),
			services: []*corev1.Service{localKubernetes, kubernetes},
			want:     kubernetesEnv,
		},
		{
			name:     "IPv6 ClusterIP bracketed in URLs only",
			ns:       "web",
			services: []*corev1.Service{svc("web", "v6", "fd00:10:96::1234", port("http", 80, corev1.ProtocolTCP))},
			want: []string{
				"V6_SERVICE_HOST=fd00:10:96::1234",
				"V6_SERVICE_PORT=80",
				"V6_SERVICE_PORT_HTTP=80",
				"V6_PORT=tcp://[fd00:10:96::1234]:80",
				"V6_PORT_80_TCP=tcp://[fd00:10:96::1234]:80",
				"V6_PORT_80_TCP_PROTO=tcp",
				"V6_PORT_80_TCP_PORT=80",
				"V6_PORT_80_TCP_ADDR=fd00:10:96::1234",
			},
		},
		{
			name:     "SCTP and dashed port names",
			ns:       "web",
			services: []*corev1.Service{svc("web", "my-sctp-svc", "10.96.7.7", port("sig-tran", 2905, corev1.ProtocolSCTP))},
			want: []string{
				"MY_SCTP_SVC_SERVICE_HOST=10.96.7.7",
				"MY_SCTP_SVC_SERVICE_PORT=2905",
				"MY_SCTP_SVC_SERVICE_PORT_SIG_TRAN=2905",
				"MY_SCTP_SVC_PORT=sctp://10.96.7.7:2905",
				"MY_SCTP_SVC_PORT_2905_SCTP=sctp://10.96.7.7:2905",
				"MY_SCTP_SVC_PORT_2905_SCTP_PROTO=sctp",
				"MY_SCTP_SVC_PORT_2905_SCTP_PORT=2905",
				"MY_SCTP_SVC_PORT_2905_SCTP_ADDR=10.96.7.7",
			},
		},
		{
			name:     "service without ports has only the host",
			ns:       "web",
			services: []*corev1.Service{svc("web", "noports", "10.96.8.8")},
			want:     []string{"NOPORTS_SERVICE_HOST=10.96.8.8"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: tt.ns},
				Spec:       corev1.PodSpec{EnableServiceLinks: tt.links},
			}
			got := envStrings(serviceEnv(pod, tt.services))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("serviceEnv() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": "", "B": "$(A)", "SVC_HOST": "10.96.0.1"}
	lookup := func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"plain", "plain"},
		{"$(A)", "a"},
		{"x$(A)y$(A)z", "xayaz"},
		{"http://$(SVC_HOST):443/", "http://10.96.0.1:443/"},
		{"$(EMPTY)", ""},
		{"[$(EMPTY)]", "[]"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$(UNKNOWN)$(A)", "$(UNKNOWN)a"},
		{"$$(A)", "$(A)"},
		{"$$$(A)", "$a"},
		{"$$", "$"},
		{"$$$$", "$$"},
		{"$", "$"},
		{"a$", "a$"},
		{"$A", "$A"},
		{"cost: 100$ and $(A)", "cost: 100$ and a"},
		{"$(B)", "$(A)"}, // no recursive expansion
		{"$()", "$()"},
		// Unterminated references are kept; expansion continues after them.
		{"$(", "$("},
		{"$(A", "$(A"},
		{"$(A)$(", "a$("},
		{"$(A $$", "$(A $"},
		{"$(A $(", "$(A $("},
		// A reference ends at the first ')'.
		{"$(a$(A))", "$(a$(A))"},
	}
	for _, tt := range tests {
		if got := expandVars(tt.in, lookup); got != tt.want {
			t.Errorf("expandVars(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
