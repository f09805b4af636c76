package dns

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// specCluster is the cluster the specification tables are written against.
func specCluster() *fakeSource {
	src := newFakeSource()
	src.add(svc("default", "kubernetes", clusterIP("10.96.0.1"), port("https", corev1.ProtocolTCP, 443)))
	src.add(svc("ns1", "web", clusterIP("10.96.0.20"), port("http", corev1.ProtocolTCP, 80),
		port("dns", corev1.ProtocolUDP, 53), port("", corev1.ProtocolTCP, 8080)))
	src.add(svc("ns1", "dual", clusterIP("10.96.0.30", "fd00:10:96::30"), port("http", corev1.ProtocolTCP, 80)))
	src.add(svc("ns1", "six", clusterIP("fd00:10:96::31")))
	src.add(svc("ns1", "headless", headless(), port("http", corev1.ProtocolTCP, 80)))
	src.addSlice(slice("ns1", "headless", "headless-v4", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
		ep{ip: "10.244.1.5", host: "pet-0"}, ep{ip: "10.244.1.6", ready: bp(true)}, ep{ip: "10.244.1.7", host: "sick", ready: bp(false)}))
	src.addSlice(slice("ns1", "headless", "headless-v6", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 8080},
		ep{ip: "fd00:10:244::5", host: "pet-0"}))
	src.add(svc("ns1", "unready", headless(), publishNotReady()))
	src.addSlice(slice("ns1", "unready", "unready-1", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.2.9", ready: bp(false)}))
	src.add(svc("ns1", "empty", headless()))
	src.addSlice(slice("ns1", "empty", "empty-1", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.2.10", ready: bp(false)}))
	src.add(svc("ns1", "ext", externalName("www.Example.com")))
	src.add(svc("ns1", "alias", externalName("web.ns1.svc.cluster.local")))
	src.add(svc("ns1", "dangling", externalName("gone.ns1.svc.cluster.local")))
	return src
}

var specPods = fakePods{netip.MustParseAddr("10.244.1.50"): "ns1", netip.MustParseAddr("fd00:10:244::50"): "ns1"}

type specCase struct {
	name      string
	qname     string
	qtype     uint16
	rcode     int
	answer    []string
	extra     []string
	authority []string // "SOA <ttl> <minttl>"
	noAA      bool
}

func authority(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			out = append(out, fmt.Sprintf("SOA %s %d %d", soa.Hdr.Name, soa.Hdr.Ttl, soa.Minttl))
		} else {
			out = append(out, rr.String())
		}
	}
	return out
}

func runSpec(t *testing.T, h *Handler, cases []specCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := query(h, tc.qname, tc.qtype, "")
			if resp.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tc.rcode])
			}
			if diff := cmp.Diff(tc.answer, rrs(resp.Answer)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if tc.extra != nil {
				if diff := cmp.Diff(tc.extra, rrs(resp.Extra)); diff != "" {
					t.Errorf("additional (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tc.authority, authority(resp)); diff != "" {
				t.Errorf("authority (-want +got):\n%s", diff)
			}
			if resp.Authoritative == tc.noAA {
				t.Errorf("AA = %v, want %v", resp.Authoritative, !tc.noAA)
			}
			if len(resp.Question) != 1 || resp.Question[0].Name != tc.qname {
				t.Errorf("question %v, want %s as asked", resp.Question, tc.qname)
			}
		})
	}
}

const soa5 = "SOA cluster.local. 5 5"

// TestSpecification: one row per record of the Kubernetes DNS-Based Service
// Discovery specification 1.1.0 (names and answers written from the spec's
// record formats), and the negative answers around them.
func TestSpecification(t *testing.T) {
	h := newTestHandler(t, specCluster(), specPods, Defaults())
	runSpec(t, h, []specCase{
		// §2.2 schema version.
		{name: "dns-version TXT", qname: "dns-version.cluster.local.", qtype: mdns.TypeTXT,
			answer: []string{`dns-version.cluster.local. 5 IN TXT "1.1.0"`}},
		{name: "dns-version A is NODATA", qname: "dns-version.cluster.local.", qtype: mdns.TypeA, authority: []string{soa5}},
		// §2.3.1 A/AAAA of a ClusterIP Service.
		{name: "ClusterIP A", qname: "kubernetes.default.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"}},
		{name: "IPv4 Service AAAA is NODATA", qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeAAAA, authority: []string{soa5}},
		{name: "dual-stack A", qname: "dual.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"dual.ns1.svc.cluster.local. 5 IN A 10.96.0.30"}},
		{name: "dual-stack AAAA", qname: "dual.ns1.svc.cluster.local.", qtype: mdns.TypeAAAA,
			answer: []string{"dual.ns1.svc.cluster.local. 5 IN AAAA fd00:10:96::30"}},
		{name: "IPv6 Service AAAA", qname: "six.ns1.svc.cluster.local.", qtype: mdns.TypeAAAA,
			answer: []string{"six.ns1.svc.cluster.local. 5 IN AAAA fd00:10:96::31"}},
		{name: "IPv6 Service A is NODATA", qname: "six.ns1.svc.cluster.local.", qtype: mdns.TypeA, authority: []string{soa5}},
		{name: "Service MX is NODATA", qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeMX, authority: []string{soa5}},
		// §2.3.2 SRV per named port.
		{name: "SRV named TCP port", qname: "_https._tcp.kubernetes.default.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{"_https._tcp.kubernetes.default.svc.cluster.local. 5 IN SRV 0 100 443 kubernetes.default.svc.cluster.local."},
			extra:  []string{"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"}},
		{name: "SRV named UDP port", qname: "_dns._udp.web.ns1.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{"_dns._udp.web.ns1.svc.cluster.local. 5 IN SRV 0 100 53 web.ns1.svc.cluster.local."}},
		{name: "SRV wrong protocol", qname: "_http._udp.web.ns1.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "SRV unknown port", qname: "_nope._tcp.web.ns1.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "protocol label is an empty non-terminal", qname: "_tcp.web.ns1.svc.cluster.local.", qtype: mdns.TypeSRV, authority: []string{soa5}},
		{name: "unnamed port has no SRV", qname: "_._tcp.web.ns1.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "SRV name A is NODATA", qname: "_http._tcp.web.ns1.svc.cluster.local.", qtype: mdns.TypeA, authority: []string{soa5}},
		// §2.3.3 PTR of ClusterIPs.
		{name: "PTR IPv4 ClusterIP", qname: "20.0.96.10.in-addr.arpa.", qtype: mdns.TypePTR,
			answer: []string{"20.0.96.10.in-addr.arpa. 5 IN PTR web.ns1.svc.cluster.local."}},
		{name: "PTR IPv6 ClusterIP", qname: "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.", qtype: mdns.TypePTR,
			answer: []string{"0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual.ns1.svc.cluster.local."}},
		// §2.4.1 headless: A/AAAA per ready endpoint, hostname records.
		{name: "headless A: ready endpoints only", qname: "headless.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"headless.ns1.svc.cluster.local. 5 IN A 10.244.1.5", "headless.ns1.svc.cluster.local. 5 IN A 10.244.1.6"}},
		{name: "headless AAAA", qname: "headless.ns1.svc.cluster.local.", qtype: mdns.TypeAAAA,
			answer: []string{"headless.ns1.svc.cluster.local. 5 IN AAAA fd00:10:244::5"}},
		{name: "headless hostname A", qname: "pet-0.headless.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"pet-0.headless.ns1.svc.cluster.local. 5 IN A 10.244.1.5"}},
		{name: "headless hostname AAAA", qname: "pet-0.headless.ns1.svc.cluster.local.", qtype: mdns.TypeAAAA,
			answer: []string{"pet-0.headless.ns1.svc.cluster.local. 5 IN AAAA fd00:10:244::5"}},
		{name: "headless endpoint without hostname: dashed address", qname: "10-244-1-6.headless.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"10-244-1-6.headless.ns1.svc.cluster.local. 5 IN A 10.244.1.6"}},
		{name: "not-ready endpoint has no hostname record", qname: "sick.headless.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "publishNotReadyAddresses", qname: "unready.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"unready.ns1.svc.cluster.local. 5 IN A 10.244.2.9"}},
		{name: "headless without ready endpoints is NXDOMAIN", qname: "empty.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		// §2.4.2 SRV per ready endpoint and named port.
		{name: "headless SRV", qname: "_http._tcp.headless.ns1.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{
				"_http._tcp.headless.ns1.svc.cluster.local. 5 IN SRV 0 100 8080 10-244-1-6.headless.ns1.svc.cluster.local.",
				"_http._tcp.headless.ns1.svc.cluster.local. 5 IN SRV 0 100 8080 pet-0.headless.ns1.svc.cluster.local.",
			},
			extra: []string{
				"10-244-1-6.headless.ns1.svc.cluster.local. 5 IN A 10.244.1.6",
				"pet-0.headless.ns1.svc.cluster.local. 5 IN A 10.244.1.5",
				"pet-0.headless.ns1.svc.cluster.local. 5 IN AAAA fd00:10:244::5",
			}},
		// §2.4.3 PTR of headless endpoints.
		{name: "PTR headless endpoint with hostname", qname: "5.1.244.10.in-addr.arpa.", qtype: mdns.TypePTR,
			answer: []string{"5.1.244.10.in-addr.arpa. 5 IN PTR pet-0.headless.ns1.svc.cluster.local."}},
		{name: "PTR not-ready endpoint is not ours", qname: "7.1.244.10.in-addr.arpa.", qtype: mdns.TypePTR, rcode: mdns.RcodeRefused, noAA: true},
		// §2.5 ExternalName.
		{name: "ExternalName CNAME (no upstream: the client follows it)", qname: "ext.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com."}},
		{name: "ExternalName CNAME query", qname: "ext.ns1.svc.cluster.local.", qtype: mdns.TypeCNAME,
			answer: []string{"ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com."}},
		{name: "ExternalName to a Service in the zone is chased", qname: "alias.ns1.svc.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"alias.ns1.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.", "web.ns1.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "ExternalName to a missing name in the zone", qname: "dangling.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError,
			answer: []string{"dangling.ns1.svc.cluster.local. 5 IN CNAME gone.ns1.svc.cluster.local."}, authority: []string{soa5}},
		// §2.6 pod records, verified: only addresses of pods of that namespace.
		{name: "pod A", qname: "10-244-1-50.ns1.pod.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"10-244-1-50.ns1.pod.cluster.local. 5 IN A 10.244.1.50"}},
		{name: "pod AAAA", qname: "fd00-10-244--50.ns1.pod.cluster.local.", qtype: mdns.TypeAAAA,
			answer: []string{"fd00-10-244--50.ns1.pod.cluster.local. 5 IN AAAA fd00:10:244::50"}},
		{name: "pod of another namespace", qname: "10-244-1-50.ns2.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "address of no pod", qname: "10-244-9-9.ns1.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "not an address", qname: "web.ns1.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		// Negative answers: NXDOMAIN for names that do not exist, NODATA for
		// names that exist (empty non-terminals included), with the SOA.
		{name: "unknown Service", qname: "nope.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "namespace with Services", qname: "ns1.svc.cluster.local.", qtype: mdns.TypeA, authority: []string{soa5}},
		{name: "namespace without Services", qname: "ns9.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "svc label", qname: "svc.cluster.local.", qtype: mdns.TypeA, authority: []string{soa5}},
		{name: "too deep", qname: "a.b.web.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "other label under the zone", qname: "foo.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{soa5}},
		{name: "apex SOA", qname: "cluster.local.", qtype: mdns.TypeSOA, answer: []string{"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. " + fmt.Sprint(h.zone.snapshot().serial) + " 7200 1800 86400 5"}},
		{name: "apex A is NODATA", qname: "cluster.local.", qtype: mdns.TypeA, authority: []string{soa5}},
		{name: "outside the zone, no upstream: REFUSED", qname: "example.com.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused, noAA: true},
		// Case: compared without case, the question echoed as asked.
		{name: "mixed case", qname: "WeB.Ns1.SVC.Cluster.LOCAL.", qtype: mdns.TypeA,
			answer: []string{"WeB.Ns1.SVC.Cluster.LOCAL. 5 IN A 10.96.0.20"}},
	})
}

// TestConfiguredTTLsAndZone: TTLs and the zone come from the configuration.
func TestConfiguredTTLsAndZone(t *testing.T) {
	cfg := Defaults()
	cfg.Zone, cfg.TTL, cfg.NegativeTTL = "k8s.example.", 30, 12
	h := newTestHandler(t, specCluster(), specPods, cfg)
	runSpec(t, h, []specCase{
		{name: "A", qname: "web.ns1.svc.k8s.example.", qtype: mdns.TypeA, answer: []string{"web.ns1.svc.k8s.example. 30 IN A 10.96.0.20"}},
		{name: "NXDOMAIN", qname: "nope.ns1.svc.k8s.example.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, authority: []string{"SOA k8s.example. 12 12"}},
		{name: "old zone is outside", qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused, noAA: true},
		{name: "version", qname: "dns-version.k8s.example.", qtype: mdns.TypeTXT, answer: []string{`dns-version.k8s.example. 30 IN TXT "1.1.0"`}},
	})
}

// TestPodModes: disabled answers no pod name, insecure any address.
func TestPodModes(t *testing.T) {
	for _, tc := range []struct {
		mode  PodMode
		rcode int
	}{{PodsDisabled, mdns.RcodeNameError}, {PodsInsecure, mdns.RcodeSuccess}, {PodsVerified, mdns.RcodeNameError}} {
		cfg := Defaults()
		cfg.Pods = tc.mode
		h := newTestHandler(t, specCluster(), specPods, cfg)
		if r := query(h, "10-1-2-3.ns1.pod.cluster.local.", mdns.TypeA, ""); r.Rcode != tc.rcode {
			t.Errorf("%s: rcode %s, want %s", tc.mode, mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
		}
	}
}
