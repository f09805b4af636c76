package policy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// AllowList is what one direction of one isolated pod allows, as the
// dataplane matches it: peers allowed on every protocol and port, and
// peer . protocol . port-range elements. Both are disjoint and sorted, so that
// two pods with the same allowances have equal lists (and share one chain).
type AllowList struct {
	All   []Range
	Ports []PortElem
}

// PortElem allows one address range on a protocol and port range.
type PortElem struct {
	Addr   Range
	Proto  corev1.Protocol
	Lo, Hi uint16
}

func (e PortElem) String() string {
	return fmt.Sprintf("%s . %s . %s", e.Addr, strings.ToLower(string(e.Proto)), portString(e.Lo, e.Hi))
}

func portString(lo, hi uint16) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// Allows reports whether the list admits a packet from (ingress) or to
// (egress) peer on proto/port: the dataplane's decision, in Go.
func (l *AllowList) Allows(peer netip.Addr, proto corev1.Protocol, port uint16) bool {
	if l == nil {
		return true
	}
	for _, r := range l.All {
		if r.contains(peer) {
			return true
		}
	}
	for _, e := range l.Ports {
		if e.Proto == proto && port >= e.Lo && port <= e.Hi && e.Addr.contains(peer) {
			return true
		}
	}
	return false
}

// Key identifies the list's contents.
func (l *AllowList) Key() string {
	var b strings.Builder
	for _, r := range l.All {
		b.WriteString(r.String())
		b.WriteByte(',')
	}
	b.WriteByte('|')
	for _, e := range l.Ports {
		b.WriteString(e.String())
		b.WriteByte(',')
	}
	return b.String()
}

func hashName(prefix, key string) string {
	h := sha256.Sum256([]byte(key))
	return prefix + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(h[:])[:16])
}

type podAddr struct {
	pod *Pod
	ip  netip.Addr
}

// Compile computes the allow-lists of a pod: nil for a direction in which the
// pod is not isolated (everything allowed).
func (s *Snapshot) Compile(pod *Pod) (ingress, egress *AllowList) {
	if pod.HostNetwork {
		return nil, nil
	}
	ingress, _ = s.compileDir(pod, true)
	egress, _ = s.compileDir(pod, false)
	return ingress, egress
}

// compileDir computes one direction's allow-list and its signature: a string
// that names every input the list was computed from (the selecting policies'
// compiled versions, the generation of each peer's selected addresses, the
// pod's container ports when a named port is resolved on it). Equal
// signatures mean equal lists, so the list is computed once per signature and
// reused, in this sync and in the next ones while the signature holds.
func (s *Snapshot) compileDir(pod *Pod, ingress bool) (*AllowList, string) {
	var sel []*compiledPolicy
	for _, cp := range s.policiesByNS[pod.Namespace] {
		if (ingress && !cp.ingress) || (!ingress && !cp.egress) || !cp.selects(pod) {
			continue
		}
		sel = append(sel, cp)
	}
	if len(sel) == 0 {
		return nil, ""
	}
	sig := make([]byte, 0, 64)
	if ingress {
		sig = append(sig, 'i')
	} else {
		sig = append(sig, 'e')
	}
	named := false
	for _, cp := range sel {
		sig = append(sig, '|')
		sig = strconv.AppendUint(sig, cp.id, 36)
		rules := cp.out
		if ingress {
			rules = cp.in
		}
		for ri := range rules {
			r := &rules[ri]
			sig = append(sig, ';')
			namedEgress := !ingress && r.hasNamedPort()
			named = named || (ingress && r.hasNamedPort())
			if r.everyone {
				sig = append(sig, '*')
				if namedEgress {
					sig = strconv.AppendUint(sig, s.peerEntry(cp, nil, true).gen, 36)
				}
				continue
			}
			for pi := range r.peers {
				if e := s.peerEntry(cp, &r.peers[pi], namedEgress); e != nil {
					sig = strconv.AppendUint(sig, e.gen, 36)
				}
				sig = append(sig, ',')
			}
		}
	}
	if named {
		// Named ports of ingress rules are resolved on this pod.
		sig = append(sig, '#')
		for _, p := range pod.Ports {
			sig = fmt.Appendf(sig, "%s/%s/%d,", p.Name, p.Protocol, p.ContainerPort)
		}
	}
	key := string(sig)
	if l := s.st.getList(key); l != nil {
		return l, key
	}
	l := s.buildList(pod, ingress, sel)
	s.st.putList(key, l)
	return l, key
}

// buildList computes the allow-list of one direction from the selecting
// policies.
func (s *Snapshot) buildList(pod *Pod, ingress bool, sel []*compiledPolicy) *AllowList {
	var all []Range
	var ports []PortElem
	for _, cp := range sel {
		rules := cp.out
		if ingress {
			rules = cp.in
		}
		for ri := range rules {
			r := &rules[ri]
			addrs := s.ruleAddrs(cp, r)
			if len(r.ports) == 0 {
				all = append(all, addrs...)
				continue
			}
			for _, pp := range r.ports {
				if !ingress && pp.Port != nil && pp.Port.Type == intstr.String {
					// A named port of an egress rule is resolved on each
					// destination pod: the peer pods, each with its own port.
					for _, pa := range s.rulePods(cp, r) {
						for _, pr := range resolvePort(pp, pa.pod) {
							ports = append(ports, PortElem{single(pa.ip), pr.Proto, pr.Lo, pr.Hi})
						}
					}
					continue
				}
				var target *Pod
				if ingress {
					target = pod
				}
				for _, pr := range resolvePort(pp, target) {
					for _, a := range addrs {
						ports = append(ports, PortElem{a, pr.Proto, pr.Lo, pr.Hi})
					}
				}
			}
		}
	}
	return &AllowList{All: mergeRanges(all), Ports: normalizePorts(ports)}
}

// hasNamedPort reports whether one of the rule's ports is named.
func (r *compiledRule) hasNamedPort() bool {
	for _, pp := range r.ports {
		if pp.Port != nil && pp.Port.Type == intstr.String {
			return true
		}
	}
	return false
}

// ruleAddrs are the addresses a rule's peers select.
func (s *Snapshot) ruleAddrs(cp *compiledPolicy, r *compiledRule) []Range {
	if r.everyone {
		return []Range{allV4, allV6}
	}
	var out []Range
	for i := range r.peers {
		if e := s.peerEntry(cp, &r.peers[i], false); e != nil {
			out = append(out, e.addrs...)
		}
	}
	return mergeRanges(out)
}

// rulePods are the pods (and which of their addresses) a rule's peers select,
// ipBlocks included, for named ports of egress rules.
func (s *Snapshot) rulePods(cp *compiledPolicy, r *compiledRule) []podAddr {
	if r.everyone {
		return s.peerEntry(cp, nil, true).pods
	}
	var out []podAddr
	for i := range r.peers {
		if e := s.peerEntry(cp, &r.peers[i], true); e != nil {
			out = append(out, e.pods...)
		}
	}
	return out
}

// normalizePorts makes the elements disjoint (the kernel refuses overlapping
// elements in an interval set): per protocol, the ports are cut into the
// intervals between all range boundaries, each gets the union of the
// addresses allowed on it, and neighbouring intervals with the same addresses
// are joined again.
func normalizePorts(in []PortElem) []PortElem {
	byProto := map[corev1.Protocol][]PortElem{}
	for _, e := range in {
		byProto[e.Proto] = append(byProto[e.Proto], e)
	}
	protos := make([]string, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, string(p))
	}
	sort.Strings(protos)
	var out []PortElem
	for _, ps := range protos {
		es := byProto[corev1.Protocol(ps)]
		bounds := map[int]bool{}
		for _, e := range es {
			bounds[int(e.Lo)] = true
			bounds[int(e.Hi)+1] = true
		}
		bs := make([]int, 0, len(bounds))
		for b := range bounds {
			bs = append(bs, b)
		}
		sort.Ints(bs)
		type seg struct {
			lo, hi int
			addrs  []Range
			key    string
		}
		var segs []seg
		for i := 0; i+1 < len(bs); i++ {
			lo, hi := bs[i], bs[i+1]-1
			var addrs []Range
			for _, e := range es {
				if int(e.Lo) <= lo && hi <= int(e.Hi) {
					addrs = append(addrs, e.Addr)
				}
			}
			if len(addrs) == 0 {
				continue
			}
			addrs = mergeRanges(addrs)
			var k strings.Builder
			for _, a := range addrs {
				k.WriteString(a.String() + ",")
			}
			if n := len(segs); n > 0 && segs[n-1].hi+1 == lo && segs[n-1].key == k.String() {
				segs[n-1].hi = hi
				continue
			}
			segs = append(segs, seg{lo, hi, addrs, k.String()})
		}
		for _, sg := range segs {
			for _, a := range sg.addrs {
				out = append(out, PortElem{a, corev1.Protocol(ps), uint16(sg.lo), uint16(sg.hi)})
			}
		}
	}
	return out
}
