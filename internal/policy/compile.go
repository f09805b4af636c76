package policy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

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

// ruleCache holds what a rule allows independently of the pod it applies to.
type ruleCache struct {
	mu    sync.Mutex
	addrs map[string][]Range
	pods  map[string][]podAddr
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
	return s.compileDir(pod, true), s.compileDir(pod, false)
}

func (s *Snapshot) compileDir(pod *Pod, ingress bool) *AllowList {
	var all []Range
	var ports []PortElem
	isolated := false
	for ci, cp := range s.compiled {
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
		isolated = true
		for ri := range rules {
			r := &rules[ri]
			key := fmt.Sprintf("%d/%t/%d", ci, ingress, ri)
			addrs := s.ruleAddrs(key, cp, r)
			if len(r.ports) == 0 {
				all = append(all, addrs...)
				continue
			}
			for _, pp := range r.ports {
				if !ingress && pp.Port != nil && pp.Port.Type == intstr.String {
					// A named port of an egress rule is resolved on each
					// destination pod: the peer pods, each with its own port.
					for _, pa := range s.rulePods(key, cp, r) {
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
	if !isolated {
		return nil
	}
	return &AllowList{All: mergeRanges(all), Ports: normalizePorts(ports)}
}

// ruleAddrs are the addresses a rule's peers select.
func (s *Snapshot) ruleAddrs(key string, cp *compiledPolicy, r *compiledRule) []Range {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	if a, ok := s.cache.addrs[key]; ok {
		return a
	}
	var out []Range
	if r.everyone {
		out = []Range{allV4, allV6}
	}
	for i := range r.peers {
		p := &r.peers[i]
		switch {
		case r.everyone || p.invalid:
		case p.cidr != nil:
			rs := []Range{prefixRange(*p.cidr)}
			for _, e := range p.except {
				rs = subtract(rs, prefixRange(e))
			}
			out = append(out, rs...)
		default:
			cands := s.Pods
			if p.namespaces == nil {
				cands = s.byNS[cp.np.Namespace]
			}
			for _, pod := range cands {
				if p.matchesPod(cp.np.Namespace, pod, s) {
					for _, ip := range pod.IPs {
						out = append(out, single(ip))
					}
				}
			}
		}
	}
	out = mergeRanges(out)
	s.cache.addrs[key] = out
	return out
}

// rulePods are the pods (and which of their addresses) a rule's peers select,
// ipBlocks included, for named ports of egress rules.
func (s *Snapshot) rulePods(key string, cp *compiledPolicy, r *compiledRule) []podAddr {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	if a, ok := s.cache.pods[key]; ok {
		return a
	}
	var out []podAddr
	for _, pod := range s.Pods {
		for _, ip := range pod.IPs {
			ok := r.everyone
			for i := range r.peers {
				ok = ok || r.peers[i].matchesAddr(cp.np.Namespace, ip, s)
			}
			if ok {
				out = append(out, podAddr{pod, ip})
			}
		}
	}
	s.cache.pods[key] = out
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
