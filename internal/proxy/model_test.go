package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	v4 = discoveryv1.AddressTypeIPv4
	v6 = discoveryv1.AddressTypeIPv6
)

func TestSkip(t *testing.T) {
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want string
	}{
		{"clusterip", newService("ns", "a", []string{"10.96.0.10"}), ""},
		{"nodeport", newService("ns", "a", []string{"10.96.0.10"}, withType(corev1.ServiceTypeNodePort)), ""},
		{"headless", newService("ns", "a", []string{"None"}), "headless"},
		{"no-clusterip", newService("ns", "a", nil), "no ClusterIP"},
		{"externalname", newService("ns", "a", nil, withType(corev1.ServiceTypeExternalName)), "ExternalName"},
		{"proxy-name-label", newService("ns", "a", []string{"10.96.0.10"}, withLabels(LabelServiceProxyName, "other")), "handled by proxy other"},
		// kube-proxy skips a Service that carries the label at all (a
		// DoesNotExist selector), whatever its value; the EndpointSlice
		// controller writes the headless label with an empty value.
		{"proxy-name-label-empty", newService("ns", "a", []string{"10.96.0.10"}, withLabels(LabelServiceProxyName, "")), "handled by proxy "},
		{"headless-label", newService("ns", "a", []string{"10.96.0.10"}, withLabels(LabelHeadless, "true")), "labelled headless"},
		{"headless-label-empty", newService("ns", "a", []string{"10.96.0.10"}, withLabels(LabelHeadless, "")), "labelled headless"},
		{"unrelated-label", newService("ns", "a", []string{"10.96.0.10"}, withLabels("app", "x")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Skip(tc.svc); got != tc.want {
				t.Errorf("Skip = %q, want %q", got, tc.want)
			}
			ports, problems := BuildServicePorts(tc.svc, nil)
			if tc.want != "" && (ports != nil || problems != nil) {
				t.Errorf("BuildServicePorts of a skipped Service = %v, %v; want nothing", ports, problems)
			}
		})
	}
}

// buildCase is one Service shape for BuildServicePorts; its result is compared
// with testdata/build/<name>.golden and checked by check.
type buildCase struct {
	name   string
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	check  func(t *testing.T, ports []*ServicePort, problems []string)
}

func buildCases() []buildCase {
	httpPort := []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolTCP, 8080)}
	return []buildCase{
		{
			name: "clusterip-single-port",
			svc:  newService("default", "web", []string{"10.96.0.10"}),
			slices: []*discoveryv1.EndpointSlice{
				// Unsorted on purpose, and a port without a protocol (TCP).
				newSlice("default", "web-1", "web", v4, []discoveryv1.EndpointPort{slicePort("", "", 8080)},
					ep("10.244.2.5"), ep("10.244.1.7"), ep("10.244.1.10")),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if got := epStrings(ports[0].Endpoints); got != "10.244.1.7:8080 10.244.1.10:8080 10.244.2.5:8080" {
					t.Errorf("endpoints = %s, want sorted by address", got)
				}
				sp := ports[0]
				if sp.Key() != "default/web:/TCP/v4" || sp.NodePort != 0 || sp.ExternalIPs != nil || sp.ExternalLocal || sp.InternalLocal || sp.AffinityTimeout != 0 {
					t.Errorf("unexpected ServicePort %+v", sp)
				}
			},
		},
		{
			name: "multi-port-named",
			svc: newService("kube-system", "multi", []string{"10.96.0.11"}, withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)},
				corev1.ServicePort{Name: "sctp", Port: 9, Protocol: corev1.ProtocolSCTP, TargetPort: intstr.FromInt32(9999)},
				// No protocol: TCP.
				corev1.ServicePort{Name: "metrics", Port: 9153, TargetPort: intstr.FromInt32(9153)},
			)),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("kube-system", "multi-1", "multi", v4, []discoveryv1.EndpointPort{
					slicePort("http", corev1.ProtocolTCP, 8080),
					slicePort("dns", corev1.ProtocolUDP, 5353),
					slicePort("sctp", corev1.ProtocolSCTP, 9999),
					slicePort("metrics", corev1.ProtocolTCP, 9153),
					// Same name, other protocol: not the dns port's.
					slicePort("dns", corev1.ProtocolTCP, 1),
				}, ep("10.244.1.2")),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 4)
				want := map[string]string{
					"kube-system/multi:http/TCP/v4":    "10.244.1.2:8080",
					"kube-system/multi:dns/UDP/v4":     "10.244.1.2:5353",
					"kube-system/multi:sctp/SCTP/v4":   "10.244.1.2:9999",
					"kube-system/multi:metrics/TCP/v4": "10.244.1.2:9153",
				}
				for _, sp := range ports {
					if got := epStrings(sp.Endpoints); got != want[sp.Key()] {
						t.Errorf("%s endpoints = %q, want %q", sp.Key(), got, want[sp.Key()])
					}
				}
			},
		},
		{
			name: "named-target-port",
			svc:  newService("default", "named", []string{"10.96.0.12"}, withPorts(tcpPort("http", 80, intstr.FromString("web")))),
			slices: []*discoveryv1.EndpointSlice{
				// The two versions of a Deployment name the container port "web"
				// with different numbers.
				newSlice("default", "named-a", "named", v4, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080)},
					ep("10.244.1.2"), ep("10.244.1.3")),
				newSlice("default", "named-b", "named", v4, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 9090)},
					ep("10.244.2.2")),
				// A slice without the port name contributes nothing.
				newSlice("default", "named-c", "named", v4, []discoveryv1.EndpointPort{slicePort("other", corev1.ProtocolTCP, 7070)},
					ep("10.244.3.3")),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if got := epStrings(ports[0].Endpoints); got != "10.244.1.2:8080 10.244.1.3:8080 10.244.2.2:9090" {
					t.Errorf("endpoints = %s", got)
				}
			},
		},
		{
			name: "dual-stack",
			svc: newService("default", "dual", []string{"10.96.0.13", "fd00:96::13"}, withPorts(
				tcpPort("http", 80, intstr.FromInt32(8080)),
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
			)),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "dual-v4", "dual", v4, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080), slicePort("dns", corev1.ProtocolUDP, 53)},
					ep("10.244.1.2"), ep("fd00:244::99") /* wrong family: ignored */, ep("not-an-ip")),
				newSlice("default", "dual-v6", "dual", v6, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080), slicePort("dns", corev1.ProtocolUDP, 53)},
					ep("fd00:244::2"), ep("10.244.9.9") /* wrong family: ignored */),
				// FQDN slices are not for the proxy.
				newSlice("default", "dual-fqdn", "dual", discoveryv1.AddressTypeFQDN, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080)},
					ep("example.com")),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 4)
				for _, sp := range ports {
					want := "10.244.1.2"
					if sp.IPv6 {
						want = "[fd00:244::2]"
					}
					if got := epStrings(sp.Endpoints); !strings.HasPrefix(got, want+":") || strings.Contains(got, " ") {
						t.Errorf("%s endpoints = %s, want only %s", sp.Key(), got, want)
					}
					if len(sp.ClusterIPs) != 1 || sp.ClusterIPs[0].Is6() != sp.IPv6 {
						t.Errorf("%s ClusterIPs = %v", sp.Key(), sp.ClusterIPs)
					}
				}
			},
		},
		{
			name: "ipv6-single-stack",
			svc:  newService("default", "six", []string{"fd00:96::14"}),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "six-1", "six", v6, httpPort, ep("fd00:244::3"), ep("fd00:244::1")),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if !ports[0].IPv6 || epStrings(ports[0].Endpoints) != "[fd00:244::1]:8080 [fd00:244::3]:8080" {
					t.Errorf("unexpected %+v", ports[0])
				}
			},
		},
		{
			name: "clusterip-nodeport-field-ignored",
			// A nodePort on a ClusterIP Service (left over from a type change)
			// is not served.
			svc: newService("default", "cip", []string{"10.96.0.15"}, withNodePort(30015)),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if ports[0].NodePort != 0 || len(ports[0].Endpoints) != 0 {
					t.Errorf("unexpected %+v", ports[0])
				}
			},
		},
		{
			name: "nodeport-cluster",
			svc:  newService("default", "np", []string{"10.96.0.16"}, withType(corev1.ServiceTypeNodePort), withNodePort(30016), withETPCluster()),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "np-1", "np", v4, httpPort, ep("10.244.1.2", onNode("node-a"))),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if sp := ports[0]; sp.NodePort != 30016 || sp.ExternalLocal || sp.HealthCheckNodePort != 0 {
					t.Errorf("unexpected %+v", sp)
				}
			},
		},
		{
			name: "nodeport-local",
			svc:  newService("default", "npl", []string{"10.96.0.17"}, withType(corev1.ServiceTypeNodePort), withNodePort(30017), withETPLocal(32017)),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "npl-1", "npl", v4, httpPort, ep("10.244.1.2", onNode("node-a")), ep("10.244.2.2", onNode("node-b"))),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if sp := ports[0]; sp.NodePort != 30017 || !sp.ExternalLocal || sp.HealthCheckNodePort != 32017 {
					t.Errorf("unexpected %+v", sp)
				}
			},
		},
		{
			name: "clusterip-etp-local-not-external",
			// externalTrafficPolicy only matters for a Service reachable from
			// outside; a bare ClusterIP keeps using all endpoints.
			svc: newService("default", "cetp", []string{"10.96.0.18"}, withETPLocal(0)),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if ports[0].ExternalLocal {
					t.Errorf("ExternalLocal on a ClusterIP Service without external IPs")
				}
			},
		},
		{
			name: "loadbalancer",
			svc: newService("default", "lb", []string{"10.96.0.19", "fd00:96::19"}, withType(corev1.ServiceTypeLoadBalancer), withNodePort(30019),
				withExternalIPs("192.0.2.10", "2001:db8::10", "not-an-ip"),
				withIngress(
					corev1.LoadBalancerIngress{IP: "198.51.100.1"},
					corev1.LoadBalancerIngress{IP: "198.51.100.2", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)},
					corev1.LoadBalancerIngress{IP: "198.51.100.3", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
					corev1.LoadBalancerIngress{IP: "2001:db8::1"},
					corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
				)),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "lb-1", "lb", v4, httpPort, ep("10.244.1.2")),
				newSlice("default", "lb-2", "lb", v6, httpPort, ep("fd00:244::2")),
			},
			check: func(t *testing.T, ports []*ServicePort, problems []string) {
				wantPorts(t, ports, 2)
				want := map[bool]string{false: "192.0.2.10 198.51.100.1 198.51.100.2", true: "2001:db8::10 2001:db8::1"}
				for _, sp := range ports {
					if got := addrStrings(sp.ExternalIPs); got != want[sp.IPv6] {
						t.Errorf("%s ExternalIPs = %s, want %s (ipMode Proxy excluded)", sp.Key(), got, want[sp.IPv6])
					}
					if sp.NodePort != 30019 {
						t.Errorf("%s NodePort = %d", sp.Key(), sp.NodePort)
					}
				}
				// One problem for the one bad address, not one per IP family.
				if diff := cmp.Diff([]string{`externalIP "not-an-ip" does not parse`}, problems); diff != "" {
					t.Errorf("problems (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "loadbalancer-ingress-ignored-unless-loadbalancer",
			svc: newService("default", "lbip", []string{"10.96.0.20"}, withType(corev1.ServiceTypeNodePort), withNodePort(30020),
				withIngress(corev1.LoadBalancerIngress{IP: "198.51.100.9"})),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if ports[0].ExternalIPs != nil {
					t.Errorf("ExternalIPs = %v", ports[0].ExternalIPs)
				}
			},
		},
		{
			name: "externalips-clusterip-etp-local",
			svc:  newService("default", "ext", []string{"10.96.0.21"}, withExternalIPs("192.0.2.21"), withETPLocal(0)),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if sp := ports[0]; !sp.ExternalLocal || sp.NodePort != 0 || addrStrings(sp.ExternalIPs) != "192.0.2.21" {
					t.Errorf("unexpected %+v", sp)
				}
			},
		},
		{
			name: "loadbalancer-local",
			svc: newService("default", "lbl", []string{"10.96.0.22"}, withType(corev1.ServiceTypeLoadBalancer), withNodePort(30022), withETPLocal(32022),
				withIngress(corev1.LoadBalancerIngress{IP: "198.51.100.22"})),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if sp := ports[0]; !sp.ExternalLocal || sp.HealthCheckNodePort != 32022 {
					t.Errorf("unexpected %+v", sp)
				}
			},
		},
		{
			name: "internal-local",
			svc:  newService("default", "itp", []string{"10.96.0.23"}, withITPLocal()),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if !ports[0].InternalLocal || ports[0].ExternalLocal {
					t.Errorf("unexpected %+v", ports[0])
				}
			},
		},
		{
			name: "prefer-close",
			svc:  newService("default", "pc", []string{"10.96.0.24"}, withPreferClose()),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if !ports[0].PreferClose {
					t.Errorf("PreferClose not set")
				}
			},
		},
		{
			name: "affinity-default-timeout",
			svc:  newService("default", "aff", []string{"10.96.0.25"}, withAffinity(nil)),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if ports[0].AffinityTimeout != 10800 {
					t.Errorf("AffinityTimeout = %d, want 10800", ports[0].AffinityTimeout)
				}
			},
		},
		{
			name: "affinity-explicit-timeout",
			svc:  newService("default", "aff", []string{"10.96.0.25"}, withAffinity(ptr.To[int32](60))),
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if ports[0].AffinityTimeout != 60 {
					t.Errorf("AffinityTimeout = %d, want 60", ports[0].AffinityTimeout)
				}
			},
		},
		{
			name: "endpoint-conditions",
			svc:  newService("default", "cond", []string{"10.96.0.26"}),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "cond-1", "cond", v4, httpPort,
					// All conditions unset: ready, serving, not terminating.
					ep("10.244.1.1", onNode("node-a"), inZone("zone-a"), hinted("zone-a", "zone-b")),
					ep("10.244.1.2", terminating(), onNode("node-b"), inZone("zone-b")),
					ep("10.244.1.3", notReady()),
					// Ready explicitly false, serving unset (true).
					ep("10.244.1.4", conditions(ptr.To(false), nil, nil)),
					// An endpoint without addresses is ignored.
					discoveryv1.Endpoint{},
				),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				want := []Endpoint{
					{IP: addrs("10.244.1.1")[0], Port: 8080, Ready: true, Serving: true, NodeName: "node-a", Zone: "zone-a", ForZones: []string{"zone-a", "zone-b"}},
					{IP: addrs("10.244.1.2")[0], Port: 8080, Serving: true, Terminating: true, NodeName: "node-b", Zone: "zone-b"},
					{IP: addrs("10.244.1.3")[0], Port: 8080},
					{IP: addrs("10.244.1.4")[0], Port: 8080, Serving: true},
				}
				if diff := cmp.Diff(want, ports[0].Endpoints, cmpAddr); diff != "" {
					t.Errorf("endpoints (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "duplicate-endpoints",
			svc:  newService("default", "dup", []string{"10.96.0.27"}),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("default", "dup-1", "dup", v4, httpPort, ep("10.244.1.2", onNode("node-a")), ep("10.244.1.1", onNode("node-a"))),
				// The same endpoint in another slice (the EndpointSlice
				// controller moving it): one endpoint.
				newSlice("default", "dup-2", "dup", v4, httpPort, ep("10.244.1.2", onNode("node-a")), ep("10.244.1.3", onNode("node-b"))),
				// Same address on another port: another endpoint.
				newSlice("default", "dup-3", "dup", v4, []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolTCP, 9090)}, ep("10.244.1.2", onNode("node-a"))),
			},
			check: func(t *testing.T, ports []*ServicePort, _ []string) {
				wantPorts(t, ports, 1)
				if got := epStrings(ports[0].Endpoints); got != "10.244.1.1:8080 10.244.1.2:8080 10.244.1.2:9090 10.244.1.3:8080" {
					t.Errorf("endpoints = %s", got)
				}
			},
		},
	}
}

func TestBuildServicePorts(t *testing.T) {
	for _, tc := range buildCases() {
		t.Run(tc.name, func(t *testing.T) {
			ports, problems := BuildServicePorts(tc.svc, tc.slices)
			goldenJSON(t, "build/"+tc.name, struct {
				Ports    []*ServicePort
				Problems []string `json:",omitempty"`
			}{ports, problems})
			if tc.check != nil {
				tc.check(t, ports, problems)
			}
			// The order of the slices never matters.
			rev := append([]*discoveryv1.EndpointSlice(nil), tc.slices...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			ports2, _ := BuildServicePorts(tc.svc, rev)
			if diff := cmp.Diff(ports, ports2, cmpAddr); diff != "" {
				t.Errorf("result depends on the order of the slices (-forward +reversed):\n%s", diff)
			}
		})
	}
}

// Conflicting copies of one endpoint in two slices give the same result
// whatever order the informer cache lists the slices in.
func TestBuildServicePortsDuplicateConflictDeterministic(t *testing.T) {
	svc := newService("default", "dup", []string{"10.96.0.27"})
	port := []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolTCP, 8080)}
	a := newSlice("default", "dup-a", "dup", v4, port, ep("10.244.1.2", onNode("node-a")))
	b := newSlice("default", "dup-b", "dup", v4, port, ep("10.244.1.2", notReady(), onNode("node-a")))
	p1, _ := BuildServicePorts(svc, []*discoveryv1.EndpointSlice{a, b})
	p2, _ := BuildServicePorts(svc, []*discoveryv1.EndpointSlice{b, a})
	if diff := cmp.Diff(p1, p2, cmpAddr); diff != "" {
		t.Errorf("(-a,b +b,a):\n%s", diff)
	}
	if len(p1) != 1 || len(p1[0].Endpoints) != 1 {
		t.Fatalf("got %v", p1)
	}
}

func TestServicePortKey(t *testing.T) {
	sp := &ServicePort{Namespace: "ns", Name: "svc", PortName: "dns", Protocol: corev1.ProtocolUDP, IPv6: true}
	if got := sp.Key(); got != "ns/svc:dns/UDP/v6" {
		t.Errorf("Key = %q", got)
	}
	if got := (Endpoint{IP: addrs("fd00::1")[0], Port: 53}).String(); got != "[fd00::1]:53" {
		t.Errorf("Endpoint.String = %q", got)
	}
}

func wantPorts(t *testing.T, ports []*ServicePort, n int) {
	t.Helper()
	if len(ports) != n {
		var keys []string
		for _, sp := range ports {
			keys = append(keys, sp.Key())
		}
		t.Fatalf("%d ServicePorts %v, want %d", len(ports), keys, n)
	}
}

func epStrings(eps []Endpoint) string {
	var s []string
	for _, e := range eps {
		s = append(s, e.String())
	}
	return strings.Join(s, " ")
}

func addrStrings[T fmt.Stringer](as []T) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}
