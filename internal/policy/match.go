package policy

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// compiledPolicy is a NetworkPolicy with its selectors parsed once.
type compiledPolicy struct {
	np  *networkingv1.NetworkPolicy
	key string
	// id is unique to this compilation in the process: allow-list
	// signatures name the policy by it.
	id uint64
	// selector picks the pods of the policy's namespace it applies to; nil
	// when it does not parse (the policy then selects nothing).
	selector        labels.Selector
	ingress, egress bool // policyTypes after defaulting
	in, out         []compiledRule
	problems        []string
}

type compiledRule struct {
	index int
	// everyone: the rule lists no peers, so it allows every source
	// (destination), pod or not.
	everyone bool
	peers    []compiledPeer
	ports    []networkingv1.NetworkPolicyPort
}

type compiledPeer struct {
	// ipBlock peers match by address, whoever holds it (see README.md).
	cidr   *netip.Prefix
	except []netip.Prefix
	// pods and namespaces select pods; a nil namespaces selector means the
	// policy's own namespace. nil pods with non-nil namespaces means every pod
	// of those namespaces.
	pods, namespaces labels.Selector
	// invalid peers (unparsable selectors, a peer with nothing set) match nothing.
	invalid bool
}

// policyTypes applies the API's defaulting: with no policyTypes a policy is an
// Ingress policy, and an Egress one too when it has egress rules.
func policyTypes(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

func compilePolicy(np *networkingv1.NetworkPolicy) *compiledPolicy {
	cp := &compiledPolicy{np: np, key: policyKey(np), id: nextID.Add(1)}
	cp.ingress, cp.egress = policyTypes(np)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		cp.problems = append(cp.problems, fmt.Sprintf("podSelector: %v (the policy selects no pod)", err))
	} else {
		cp.selector = sel
	}
	for i, r := range np.Spec.Ingress {
		cp.in = append(cp.in, cp.compileRule(i, r.From, r.Ports))
	}
	for i, r := range np.Spec.Egress {
		cp.out = append(cp.out, cp.compileRule(i, r.To, r.Ports))
	}
	return cp
}

func (cp *compiledPolicy) compileRule(i int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) compiledRule {
	r := compiledRule{index: i, everyone: len(peers) == 0, ports: ports}
	for _, p := range peers {
		var c compiledPeer
		switch {
		case p.IPBlock != nil:
			pfx, err := netip.ParsePrefix(p.IPBlock.CIDR)
			if err != nil {
				cp.problems = append(cp.problems, fmt.Sprintf("rule %d: ipBlock %q: %v", i, p.IPBlock.CIDR, err))
				c.invalid = true
				break
			}
			pfx = pfx.Masked()
			c.cidr = &pfx
			for _, e := range p.IPBlock.Except {
				ep, err := netip.ParsePrefix(e)
				if err != nil {
					cp.problems = append(cp.problems, fmt.Sprintf("rule %d: ipBlock except %q: %v", i, e, err))
					continue
				}
				c.except = append(c.except, ep.Masked())
			}
		case p.PodSelector != nil || p.NamespaceSelector != nil:
			if p.PodSelector != nil {
				s, err := metav1.LabelSelectorAsSelector(p.PodSelector)
				if err != nil {
					cp.problems = append(cp.problems, fmt.Sprintf("rule %d: podSelector: %v", i, err))
					c.invalid = true
				}
				c.pods = s
			}
			if p.NamespaceSelector != nil {
				s, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
				if err != nil {
					cp.problems = append(cp.problems, fmt.Sprintf("rule %d: namespaceSelector: %v", i, err))
					c.invalid = true
				}
				c.namespaces = s
			}
		default:
			c.invalid = true
		}
		r.peers = append(r.peers, c)
	}
	return r
}

// selects reports whether the policy applies to pod.
func (cp *compiledPolicy) selects(p *Pod) bool {
	return cp.selector != nil && !p.HostNetwork && p.Namespace == cp.np.Namespace && cp.selector.Matches(labels.Set(p.Labels))
}

// matchesPod reports whether a pod peer (not ipBlock) selects pod.
func (c *compiledPeer) matchesPod(policyNS string, p *Pod, s *Snapshot) bool {
	return c.matchesPodIn(policyNS, p, s.Namespaces)
}

// matchesPodIn is matchesPod with the namespaces' labels given.
func (c *compiledPeer) matchesPodIn(policyNS string, p *Pod, namespaces map[string]map[string]string) bool {
	if c.invalid || c.cidr != nil {
		return false
	}
	if c.namespaces == nil {
		if p.Namespace != policyNS {
			return false
		}
	} else {
		nsLabels, ok := namespaces[p.Namespace]
		if !ok || !c.namespaces.Matches(labels.Set(nsLabels)) {
			return false
		}
	}
	return c.pods == nil || c.pods.Matches(labels.Set(p.Labels))
}

// matchesAddr reports whether the peer selects the address: an ipBlock by
// address, pod selectors by the pod that holds it (if any).
func (c *compiledPeer) matchesAddr(policyNS string, a netip.Addr, s *Snapshot) bool {
	if c.invalid {
		return false
	}
	if c.cidr != nil {
		if !c.cidr.Contains(a) {
			return false
		}
		for _, e := range c.except {
			if e.Contains(a) {
				return false
			}
		}
		return true
	}
	p := s.PodByIP(a)
	return p != nil && c.matchesPod(policyNS, p, s)
}

// portRange is one protocol and an inclusive range of ports.
type portRange struct {
	Proto  corev1.Protocol
	Lo, Hi uint16
}

// resolvePort turns a policy port into protocol and port ranges; named ports
// are resolved on target, the pod the traffic goes to (nil: not a pod, so a
// named port matches nothing). A port without a number means every port of
// its protocol.
func resolvePort(pp networkingv1.NetworkPolicyPort, target *Pod) []portRange {
	proto := corev1.ProtocolTCP
	if pp.Protocol != nil {
		proto = *pp.Protocol
	}
	if pp.Port == nil {
		return []portRange{{proto, 0, 65535}}
	}
	if pp.Port.Type == intstr.Int {
		lo := pp.Port.IntVal
		hi := lo
		if pp.EndPort != nil && *pp.EndPort >= lo {
			hi = *pp.EndPort
		}
		if lo < 0 || hi > 65535 {
			return nil
		}
		return []portRange{{proto, uint16(lo), uint16(hi)}}
	}
	if target == nil {
		return nil
	}
	var out []portRange
	for _, cp := range target.Ports {
		cproto := cp.Protocol
		if cproto == "" {
			cproto = corev1.ProtocolTCP
		}
		if cp.Name == pp.Port.StrVal && cproto == proto && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
			out = append(out, portRange{proto, uint16(cp.ContainerPort), uint16(cp.ContainerPort)})
		}
	}
	return out
}

// portsMatch reports whether a rule's ports allow proto/port to target.
func portsMatch(ports []networkingv1.NetworkPolicyPort, proto corev1.Protocol, port uint16, target *Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		for _, r := range resolvePort(pp, target) {
			if r.Proto == proto && port >= r.Lo && port <= r.Hi {
				return true
			}
		}
	}
	return false
}
