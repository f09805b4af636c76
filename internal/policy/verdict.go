package policy

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Packet is the first packet of a connection, as the dataplane judges it
// (after the Service proxy's DNAT: Dst is the real backend).
type Packet struct {
	Src, Dst netip.Addr
	Protocol corev1.Protocol // TCP, UDP or SCTP; anything else has no ports
	Port     uint16          // destination port
}

func (p Packet) String() string {
	return fmt.Sprintf("%s -> %s %s/%d", p.Src, p.Dst, strings.ToLower(string(p.Protocol)), p.Port)
}

// RuleRef names one rule of one policy.
type RuleRef struct {
	Policy string // namespace/name
	Rule   int    // index in spec.ingress or spec.egress
}

func (r RuleRef) String() string { return fmt.Sprintf("%s rule %d", r.Policy, r.Rule) }

// Direction is the verdict of one direction: egress of the source pod or
// ingress of the destination pod.
type Direction struct {
	// Pod is the pod whose policies judge this direction; nil when the
	// address is not a pod (outside the cluster, a node, a host-network pod):
	// nothing is enforced for it.
	Pod *Pod
	// Isolated: some policy selecting Pod has this direction in its
	// policyTypes; otherwise everything is allowed.
	Isolated bool
	Allowed  bool
	// Selecting are the policies that isolate Pod in this direction.
	Selecting []string
	// AllowedBy are the rules that allow the packet (any one suffices).
	AllowedBy []RuleRef
}

// Decision is the verdict for a packet: both directions must allow it.
type Decision struct {
	Allowed         bool
	Egress, Ingress Direction
}

// Deciding lists the policies that decide the verdict: the allowing rules'
// policies when allowed, else the isolating policies of the denying
// direction(s). Empty when no policy applies.
func (d Decision) Deciding() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, dir := range []Direction{d.Egress, d.Ingress} {
		if !dir.Isolated {
			continue
		}
		if d.Allowed {
			for _, r := range dir.AllowedBy {
				add(r.Policy)
			}
		} else if !dir.Allowed {
			for _, p := range dir.Selecting {
				add(p)
			}
		}
	}
	return out
}

// Verdict judges a packet with the exact NetworkPolicy semantics. The
// dataplane's compiled allow-lists (Compile) give the same answer for every
// packet; tests check it.
func (s *Snapshot) Verdict(pkt Packet) Decision {
	var d Decision
	src, dst := s.PodByIP(pkt.Src), s.PodByIP(pkt.Dst)
	d.Egress = s.judge(src, pkt.Dst, dst, pkt, false)
	d.Ingress = s.judge(dst, pkt.Src, dst, pkt, true)
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
	return d
}

// judge decides one direction for pod (the source for egress, the
// destination for ingress); peer is the other end's address; target is the
// destination pod, on which named ports are resolved.
func (s *Snapshot) judge(pod *Pod, peer netip.Addr, target *Pod, pkt Packet, ingress bool) Direction {
	dir := Direction{Pod: pod, Allowed: true}
	if pod == nil {
		return dir
	}
	for _, cp := range s.compiled {
		if !cp.selects(pod) {
			continue
		}
		rules := cp.out
		if ingress {
			if !cp.ingress {
				continue
			}
			rules = cp.in
		} else if !cp.egress {
			continue
		}
		dir.Isolated = true
		dir.Selecting = append(dir.Selecting, cp.key)
		for _, r := range rules {
			if r.allows(cp.np.Namespace, peer, target, pkt, s) {
				dir.AllowedBy = append(dir.AllowedBy, RuleRef{cp.key, r.index})
			}
		}
	}
	dir.Allowed = !dir.Isolated || len(dir.AllowedBy) > 0
	return dir
}

func (r *compiledRule) allows(policyNS string, peer netip.Addr, target *Pod, pkt Packet, s *Snapshot) bool {
	if !portsMatch(r.ports, pkt.Protocol, pkt.Port, target) {
		return false
	}
	if r.everyone {
		return true
	}
	for i := range r.peers {
		if r.peers[i].matchesAddr(policyNS, peer, s) {
			return true
		}
	}
	return false
}

// Problems lists what could not be parsed in the policies (those parts allow
// nothing).
func (s *Snapshot) Problems() []string {
	var out []string
	for _, cp := range s.compiled {
		for _, p := range cp.problems {
			out = append(out, cp.key+": "+p)
		}
	}
	return out
}
