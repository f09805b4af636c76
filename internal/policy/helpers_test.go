package policy

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The upstream e2e model: namespaces x, y, z (labelled ns=<name>), pods a, b,
// c in each (labelled pod=<name>), each serving TCP and UDP on 80 and 81 with
// named container ports serve-<port>-<proto>. Pod n/p has 10.0.<n>.<p>
// (x=1, a=1) and fd00::<n>:<p>; the pods of x are on node-1.

var (
	nsNames  = []string{"x", "y", "z"}
	podNames = []string{"a", "b", "c"}
	external = netip.MustParseAddr("192.168.5.5")
)

func modelPodIP(ns, pod string) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("10.0.%d.%d", indexOf(nsNames, ns)+1, indexOf(podNames, pod)+1))
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	panic(v)
}

func modelPods() []*Pod {
	var out []*Pod
	for i, ns := range nsNames {
		for _, p := range podNames {
			pod := &Pod{Namespace: ns, Name: p, Node: fmt.Sprintf("node-%d", i+1), Labels: map[string]string{"pod": p},
				IPs: []netip.Addr{modelPodIP(ns, p), netip.MustParseAddr(fmt.Sprintf("fd00::%d:%d", i+1, indexOf(podNames, p)+1))}}
			for _, port := range []int32{80, 81} {
				for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
					pod.Ports = append(pod.Ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, lower(proto)), ContainerPort: port, Protocol: proto})
				}
			}
			out = append(out, pod)
		}
	}
	return out
}

func lower(p corev1.Protocol) string {
	switch p {
	case corev1.ProtocolUDP:
		return "udp"
	case corev1.ProtocolSCTP:
		return "sctp"
	}
	return "tcp"
}

func modelNamespaces() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, ns := range nsNames {
		out[ns] = map[string]string{"ns": ns, "kubernetes.io/metadata.name": ns}
	}
	return out
}

// Builders for policies.

type npOpt func(*networkingv1.NetworkPolicy)

func newPolicy(ns, name string, opts ...npOpt) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, o := range opts {
		o(np)
	}
	return np
}

func selecting(kv ...string) npOpt {
	return func(np *networkingv1.NetworkPolicy) { np.Spec.PodSelector = *labelsSel(kv...) }
}

func types(ts ...networkingv1.PolicyType) npOpt {
	return func(np *networkingv1.NetworkPolicy) { np.Spec.PolicyTypes = ts }
}

func ingressRule(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) npOpt {
	return func(np *networkingv1.NetworkPolicy) {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports})
	}
}

func egressRule(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) npOpt {
	return func(np *networkingv1.NetworkPolicy) {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports})
	}
}

func labelsSel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func podPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func nsPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func bothPeer(ns, pod *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pod}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func port(proto corev1.Protocol, p int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(proto), Port: ptr.To(intstr.FromInt32(p))}
}

func portRangeOf(proto corev1.Protocol, lo, hi int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(proto), Port: ptr.To(intstr.FromInt32(lo)), EndPort: ptr.To(hi)}
}

func namedPort(proto corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(proto), Port: ptr.To(intstr.FromString(name))}
}

func ports(ps ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return ps }
