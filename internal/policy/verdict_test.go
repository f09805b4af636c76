package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	tcp  = corev1.ProtocolTCP
	udp  = corev1.ProtocolUDP
	sctp = corev1.ProtocolSCTP
	in   = networkingv1.PolicyTypeIngress
	eg   = networkingv1.PolicyTypeEgress
)

// A truth-table case: policies, and for each probe (protocol/port) which of
// the 9×9 pairs (plus the external address, "ext") may connect. Traffic of a
// pod to itself is not judged (it never leaves the pod), as upstream.
type probe struct {
	proto corev1.Protocol
	port  uint16
	want  func(from, to string) bool
}

type truthCase struct {
	name     string
	policies []*networkingv1.NetworkPolicy
	probes   []probe
}

func all(string, string) bool { return true }

func ns(p string) string { n, _, _ := strings.Cut(p, "/"); return n }

// into: traffic into the pods in to... is allowed only from the sources for
// which from returns true; other traffic is allowed.
func into(to []string, from func(string) bool) func(string, string) bool {
	return func(f, t string) bool {
		for _, x := range to {
			if t == x || x == ns(t)+"/*" {
				return from(f)
			}
		}
		return true
	}
}

// outOf: traffic from the pods in from... is allowed only to the destinations
// for which to returns true.
func outOf(from []string, to func(string) bool) func(string, string) bool {
	return func(f, t string) bool {
		for _, x := range from {
			if f == x || x == ns(f)+"/*" {
				return to(t)
			}
		}
		return true
	}
}

func and(a, b func(string, string) bool) func(string, string) bool {
	return func(f, t string) bool { return a(f, t) && b(f, t) }
}

func oneOf(names ...string) func(string) bool {
	return func(p string) bool {
		for _, n := range names {
			if p == n || n == ns(p)+"/*" {
				return true
			}
		}
		return false
	}
}

func none(string) bool { return false }

func truthCases() []truthCase {
	denyX := newPolicy("x", "deny-ingress", types(in))
	return []truthCase{
		{name: "no policies", probes: []probe{{tcp, 80, all}, {udp, 81, all}, {sctp, 80, all}}},
		{name: "default deny ingress", policies: []*networkingv1.NetworkPolicy{denyX},
			probes: []probe{{tcp, 80, into([]string{"x/*"}, none)}, {udp, 80, into([]string{"x/*"}, none)}}},
		{name: "default deny ingress by defaulted policyTypes", policies: []*networkingv1.NetworkPolicy{newPolicy("x", "deny")},
			probes: []probe{{tcp, 80, into([]string{"x/*"}, none)}}},
		{name: "allow all ingress", policies: []*networkingv1.NetworkPolicy{newPolicy("x", "allow-all", ingressRule(nil))},
			probes: []probe{{tcp, 80, all}}},
		{name: "default deny egress", policies: []*networkingv1.NetworkPolicy{newPolicy("x", "deny-egress", types(eg))},
			probes: []probe{{tcp, 80, outOf([]string{"x/*"}, none)}, {udp, 81, outOf([]string{"x/*"}, none)}}},
		{name: "deny both directions", policies: []*networkingv1.NetworkPolicy{newPolicy("x", "deny-all", types(in, eg))},
			probes: []probe{{tcp, 80, and(into([]string{"x/*"}, none), outOf([]string{"x/*"}, none))}}},
		{name: "egress rules without policyTypes isolate egress too",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "egress-to-y", selecting("pod", "a"), egressRule(nil, nsPeer(labelsSel("ns", "y"))))},
			probes:   []probe{{tcp, 80, and(into([]string{"x/a"}, none), outOf([]string{"x/a"}, oneOf("y/*")))}}},
		{name: "policyTypes Ingress ignores egress rules",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "ingress-only", selecting("pod", "a"), types(in), ingressRule(nil), egressRule(nil, nsPeer(labelsSel("ns", "y"))))},
			probes:   []probe{{tcp, 80, all}}},
		{name: "allow from pod selector in the same namespace",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-b", selecting("pod", "a"), ingressRule(nil, podPeer(labelsSel("pod", "b"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("x/b"))}}},
		{name: "allow from namespace selector",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-y", selecting("pod", "a"), ingressRule(nil, nsPeer(labelsSel("ns", "y"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("y/*"))}}},
		{name: "empty namespace selector: every pod, no external",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-pods", selecting("pod", "a"), ingressRule(nil, nsPeer(labelsSel())))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, func(f string) bool { return f != "ext" })}}},
		{name: "empty pod selector: the policy's namespace",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-x", ingressRule(nil, podPeer(labelsSel())))},
			probes:   []probe{{tcp, 80, into([]string{"x/*"}, oneOf("x/*"))}}},
		{name: "namespace AND pod selector in one peer",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-y-b", selecting("pod", "a"), ingressRule(nil, bothPeer(labelsSel("ns", "y"), labelsSel("pod", "b"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("y/b"))}}},
		{name: "namespace OR pod selector as two peers",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-y-or-b", selecting("pod", "a"), ingressRule(nil, nsPeer(labelsSel("ns", "y")), podPeer(labelsSel("pod", "b"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("y/*", "x/b"))}}},
		{name: "matchExpressions NotIn on namespaces",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "not-from-y", selecting("pod", "a"), ingressRule(nil, nsPeer(expr("ns", metav1.LabelSelectorOpNotIn, "y"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("x/*", "z/*"))}}},
		{name: "matchExpressions In on pods of all namespaces",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "from-bc", selecting("pod", "a"), ingressRule(nil, bothPeer(labelsSel(), expr("pod", metav1.LabelSelectorOpIn, "b", "c"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("x/b", "x/c", "y/b", "y/c", "z/b", "z/c"))}}},
		{name: "matchExpressions Exists and DoesNotExist",
			policies: []*networkingv1.NetworkPolicy{
				newPolicy("x", "exists", selecting("pod", "a"), ingressRule(nil, nsPeer(expr("ns", metav1.LabelSelectorOpExists)))),
				newPolicy("x", "missing", selecting("pod", "b"), ingressRule(nil, nsPeer(expr("ns", metav1.LabelSelectorOpDoesNotExist)))),
			},
			probes: []probe{{tcp, 80, and(into([]string{"x/a"}, func(f string) bool { return f != "ext" }), into([]string{"x/b"}, none))}}},
		{name: "policy selecting by matchExpressions",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "deny-not-a", func(np *networkingv1.NetworkPolicy) {
				np.Spec.PodSelector = *expr("pod", metav1.LabelSelectorOpNotIn, "a")
			}, types(in))},
			probes: []probe{{tcp, 80, into([]string{"x/b", "x/c"}, none)}}},
		{name: "numeric port",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "port-81", selecting("pod", "a"), ingressRule(ports(port(tcp, 81))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, none)}, {tcp, 81, all}, {udp, 81, into([]string{"x/a"}, none)}}},
		{name: "named port",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "named", selecting("pod", "a"), ingressRule(ports(namedPort(tcp, "serve-80-tcp")), nsPeer(labelsSel("ns", "y"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("y/*"))}, {tcp, 81, into([]string{"x/a"}, none)}}},
		{name: "named port no pod has allows nothing",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "named-missing", selecting("pod", "a"), ingressRule(ports(namedPort(tcp, "nothing"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, none)}, {tcp, 81, into([]string{"x/a"}, none)}}},
		{name: "named port with the wrong protocol",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "named-udp", selecting("pod", "a"), ingressRule(ports(namedPort(udp, "serve-80-tcp"))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, none)}, {udp, 80, into([]string{"x/a"}, none)}}},
		{name: "endPort range",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "range", selecting("pod", "a"), ingressRule(ports(portRangeOf(tcp, 81, 90))))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, none)}, {tcp, 81, all}, {tcp, 90, all}, {tcp, 91, into([]string{"x/a"}, none)}}},
		{name: "protocol without port",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "udp-only", selecting("pod", "a"), ingressRule(ports(networkingv1.NetworkPolicyPort{Protocol: func() *corev1.Protocol { p := udp; return &p }()})))},
			probes:   []probe{{udp, 80, all}, {udp, 81, all}, {tcp, 80, into([]string{"x/a"}, none)}}},
		{name: "SCTP port",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "sctp", selecting("pod", "a"), ingressRule(ports(port(sctp, 80))))},
			probes:   []probe{{sctp, 80, all}, {tcp, 80, into([]string{"x/a"}, none)}}},
		{name: "union of policies",
			policies: []*networkingv1.NetworkPolicy{
				newPolicy("x", "from-y-80", selecting("pod", "a"), ingressRule(ports(port(tcp, 80)), nsPeer(labelsSel("ns", "y")))),
				newPolicy("x", "from-z-81", selecting("pod", "a"), ingressRule(ports(port(tcp, 81)), nsPeer(labelsSel("ns", "z")))),
			},
			probes: []probe{{tcp, 80, into([]string{"x/a"}, oneOf("y/*"))}, {tcp, 81, into([]string{"x/a"}, oneOf("z/*"))}}},
		{name: "union of rules in one policy",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "two-rules", selecting("pod", "a"),
				ingressRule(ports(port(tcp, 80)), podPeer(labelsSel("pod", "b"))), ingressRule(ports(port(tcp, 81)), podPeer(labelsSel("pod", "c"))))},
			probes: []probe{{tcp, 80, into([]string{"x/a"}, oneOf("x/b"))}, {tcp, 81, into([]string{"x/a"}, oneOf("x/c"))}}},
		{name: "ipBlock with except",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "cidr", selecting("pod", "a"), ingressRule(nil, ipPeer("192.168.0.0/16", "192.168.5.0/24")))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, none)}}},
		{name: "ipBlock allows the external address",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "cidr", selecting("pod", "a"), ingressRule(nil, ipPeer("192.168.0.0/16", "192.168.6.0/24")))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("ext"))}}},
		{name: "ipBlock matches pod addresses too",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "cidr-pods", selecting("pod", "a"), ingressRule(nil, ipPeer("10.0.2.0/24", "10.0.2.3/32")))},
			probes:   []probe{{tcp, 80, into([]string{"x/a"}, oneOf("y/a", "y/b"))}}},
		{name: "egress to a namespace and DNS on any address",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "egress", selecting("pod", "a"), types(eg),
				egressRule(nil, nsPeer(labelsSel("ns", "y"))), egressRule(ports(port(udp, 53), port(tcp, 53))))},
			probes: []probe{{tcp, 80, outOf([]string{"x/a"}, oneOf("y/*"))}, {udp, 53, all}}},
		{name: "egress named port resolved on the destination",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "egress-named", selecting("pod", "a"), types(eg), egressRule(ports(namedPort(tcp, "serve-81-tcp"))))},
			probes:   []probe{{tcp, 81, outOf([]string{"x/a"}, func(t string) bool { return t != "ext" })}, {tcp, 80, outOf([]string{"x/a"}, none)}}},
		{name: "egress ipBlock with except",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "egress-cidr", selecting("pod", "a"), types(eg), egressRule(nil, ipPeer("10.0.0.0/16", "10.0.3.0/24")))},
			probes:   []probe{{tcp, 80, outOf([]string{"x/a"}, oneOf("x/*", "y/*"))}}},
		{name: "ingress and egress of two namespaces",
			policies: []*networkingv1.NetworkPolicy{
				newPolicy("x", "deny-in", types(in)),
				newPolicy("y", "deny-out", types(eg)),
				newPolicy("x", "from-y", ingressRule(nil, nsPeer(labelsSel("ns", "y")))),
				newPolicy("y", "to-x", egressRule(nil, nsPeer(labelsSel("ns", "x"))), types(eg)),
			},
			probes: []probe{{tcp, 80, and(into([]string{"x/*"}, oneOf("y/*")), outOf([]string{"y/*"}, oneOf("x/*")))}}},
		{name: "policy in another namespace does not apply",
			policies: []*networkingv1.NetworkPolicy{newPolicy("y", "deny", selecting("pod", "a"), types(in))},
			probes:   []probe{{tcp, 80, into([]string{"y/a"}, none)}}},
		{name: "policy selecting nothing",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "nobody", selecting("pod", "nobody"), types(in, eg))},
			probes:   []probe{{tcp, 80, all}}},
		{name: "invalid selector selects nothing",
			policies: []*networkingv1.NetworkPolicy{newPolicy("x", "bad", func(np *networkingv1.NetworkPolicy) {
				np.Spec.PodSelector = *expr("pod", "Bogus", "a")
			}, types(in))},
			probes: []probe{{tcp, 80, all}}},
	}
}

func endpoints() []string {
	var out []string
	for _, n := range nsNames {
		for _, p := range podNames {
			out = append(out, n+"/"+p)
		}
	}
	return append(out, "ext")
}

func addrOf(p string) netip.Addr {
	if p == "ext" {
		return external
	}
	n, pod, _ := strings.Cut(p, "/")
	return modelPodIP(n, pod)
}

// TestTruthTables checks Verdict against the expected reachability of every
// pair, and that the compiled allow-lists (what the dataplane programs) give
// the same answer for every pair, in both families where both ends are pods.
func TestTruthTables(t *testing.T) {
	for _, tc := range truthCases() {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSnapshot(modelPods(), modelNamespaces(), tc.policies)
			lists := map[string][2]*AllowList{}
			for _, p := range s.Pods {
				i, e := s.Compile(p)
				lists[p.Key()] = [2]*AllowList{i, e}
			}
			for _, pr := range tc.probes {
				var wrong []string
				for _, from := range endpoints() {
					for _, to := range endpoints() {
						if from == to || (from == "ext" && to == "ext") {
							continue
						}
						pkt := Packet{Src: addrOf(from), Dst: addrOf(to), Protocol: pr.proto, Port: pr.port}
						d := s.Verdict(pkt)
						if want := pr.want(from, to); d.Allowed != want {
							wrong = append(wrong, fmt.Sprintf("%s -> %s: allowed %t, want %t", from, to, d.Allowed, want))
						}
						if got := simulate(lists, s, pkt); got != d.Allowed {
							wrong = append(wrong, fmt.Sprintf("%s -> %s: compiled lists say %t, Verdict %t", from, to, got, d.Allowed))
						}
					}
				}
				if len(wrong) > 0 {
					t.Errorf("%s/%d:\n%s", pr.proto, pr.port, strings.Join(wrong, "\n"))
				}
			}
		})
	}
}

// simulate judges a packet with the compiled allow-lists only, as the
// dataplane does: the source pod's egress list, then the destination pod's
// ingress list.
func simulate(lists map[string][2]*AllowList, s *Snapshot, pkt Packet) bool {
	if src := s.PodByIP(pkt.Src); src != nil && !lists[src.Key()][1].Allows(pkt.Dst, pkt.Protocol, pkt.Port) {
		return false
	}
	if dst := s.PodByIP(pkt.Dst); dst != nil && !lists[dst.Key()][0].Allows(pkt.Src, pkt.Protocol, pkt.Port) {
		return false
	}
	return true
}

func TestVerdictNamesDecidingPolicies(t *testing.T) {
	s := NewSnapshot(modelPods(), modelNamespaces(), []*networkingv1.NetworkPolicy{
		newPolicy("x", "deny", types(in)),
		newPolicy("x", "from-y", selecting("pod", "a"), ingressRule(ports(port(tcp, 80)), nsPeer(labelsSel("ns", "y")))),
	})
	d := s.Verdict(Packet{Src: modelPodIP("y", "b"), Dst: modelPodIP("x", "a"), Protocol: tcp, Port: 80})
	if !d.Allowed || fmt.Sprint(d.Ingress.AllowedBy) != "[x/from-y rule 0]" || fmt.Sprint(d.Deciding()) != "[x/from-y]" {
		t.Errorf("allowed: %+v deciding %v", d.Ingress, d.Deciding())
	}
	d = s.Verdict(Packet{Src: modelPodIP("z", "b"), Dst: modelPodIP("x", "a"), Protocol: tcp, Port: 80})
	if d.Allowed || fmt.Sprint(d.Deciding()) != "[x/deny x/from-y]" {
		t.Errorf("denied: %+v deciding %v", d.Ingress, d.Deciding())
	}
	if d.Egress.Isolated || d.Egress.Pod == nil || d.Egress.Pod.Key() != "z/b" {
		t.Errorf("egress of z/b: %+v", d.Egress)
	}
}

func TestIPv6(t *testing.T) {
	s := NewSnapshot(modelPods(), modelNamespaces(), []*networkingv1.NetworkPolicy{
		newPolicy("x", "from-y", selecting("pod", "a"), ingressRule(nil, nsPeer(labelsSel("ns", "y")), ipPeer("fd00:99::/64"))),
	})
	xa := s.PodByName("x", "a")
	i, _ := s.Compile(xa)
	for _, c := range []struct {
		src  string
		want bool
	}{{"fd00::2:1", true}, {"fd00::3:1", false}, {"fd00:99::5", true}, {"fd00:98::5", false}} {
		pkt := Packet{Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr("fd00::1:1"), Protocol: tcp, Port: 80}
		if got := s.Verdict(pkt).Allowed; got != c.want {
			t.Errorf("%s: %t, want %t", pkt, got, c.want)
		}
		if got := i.Allows(pkt.Src, tcp, 80); got != c.want {
			t.Errorf("%s compiled: %t, want %t", pkt, got, c.want)
		}
	}
}

func TestHostNetworkPodsNotSelected(t *testing.T) {
	pods := modelPods()
	node := &Pod{Namespace: "x", Name: "host", Labels: map[string]string{"pod": "a"}, IPs: []netip.Addr{netip.MustParseAddr("172.16.0.1")}, HostNetwork: true}
	s := NewSnapshot(append(pods, node), modelNamespaces(), []*networkingv1.NetworkPolicy{
		newPolicy("x", "deny-a", selecting("pod", "a"), types(in, eg)),
		newPolicy("y", "from-a", selecting("pod", "a"), ingressRule(nil, nsPeer(labelsSel("ns", "x")))),
	})
	if i, e := s.Compile(node); i != nil || e != nil {
		t.Errorf("host-network pod compiled: %v %v", i, e)
	}
	// As a peer, the host-network pod is its node: not matched by pod selectors.
	if s.Verdict(Packet{Src: node.IPs[0], Dst: modelPodIP("y", "a"), Protocol: tcp, Port: 80}).Allowed {
		t.Errorf("host-network pod matched a namespace selector as a peer")
	}
	if !s.Verdict(Packet{Src: modelPodIP("x", "b"), Dst: modelPodIP("y", "a"), Protocol: tcp, Port: 80}).Allowed {
		t.Errorf("x/b to y/a denied")
	}
}
