package policy

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// nextID numbers compiled policies and peer entries, so that a signature
// (compileDir) never names two different inputs alike.
var nextID atomic.Uint64

// Cache carries what a sync computed over to the next one, so that the cost
// of a sync follows what changed rather than the size of the cluster (#7:
// one changed policy < 100 ms with 5,000 pods on the node). Three things are
// reused:
//
//   - compiled policies, for the very same API objects (informers replace an
//     object on every change and never modify one in place);
//   - peer entries: the pods and addresses one distinct peer (ipBlock, or
//     namespace and pod selectors with the policy's namespace) selects. An
//     entry is dropped when a pod it selected, or now selects, changed (added,
//     deleted, labels, addresses or ports), or when the labels of a namespace
//     its namespace selector matched, or now matches, changed;
//   - allow-lists and rendered groups, by signature (see compileDir): a
//     signature names the compiled policies and peer entries it was computed
//     from, so it cannot outlive them.
//
// Only what the previous sync used is carried over. The result is the same
// as computing afresh (NewSnapshot, Render); the unit tests check it.
type Cache struct {
	mu   sync.Mutex
	last *Snapshot
}

// maxChanges is how many changed pods and namespaces a sync carries the
// cache over; beyond it (a first sync, a node full of pods restarting)
// checking every entry against every change costs more than starting afresh.
const maxChanges = 256

// Snapshot builds a snapshot like NewSnapshot, reusing what is still valid
// from the previous one built by this cache.
func (c *Cache) Snapshot(pods []*Pod, namespaces map[string]map[string]string, policies []*networkingv1.NetworkPolicy) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := newSnapshot(pods, namespaces, policies, c.last)
	if c.last != nil {
		s.st = newStore(carry(c.last, s))
	}
	c.last = s
	return s
}

// Reset drops everything cached (the next snapshot is computed afresh).
func (c *Cache) Reset() {
	c.mu.Lock()
	c.last = nil
	c.mu.Unlock()
}

// podChange is a pod of the old snapshot and of the new one (either nil)
// that differ in something a peer entry depends on.
type podChange struct{ old, new *Pod }

func samePod(a, b *Pod) bool {
	return maps.Equal(a.Labels, b.Labels) && slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports)
}

// carry returns the entries of old's store that are still valid for s, or
// nil when too much changed.
func carry(old, s *Snapshot) *store {
	var pods []podChange
	for k, np := range s.byKey {
		if op := old.byKey[k]; op == nil || !samePod(op, np) {
			pods = append(pods, podChange{op, np})
		}
	}
	for k, op := range old.byKey {
		if s.byKey[k] == nil {
			pods = append(pods, podChange{op, nil})
		}
	}
	var nss []string
	for n, l := range s.Namespaces {
		if ol, ok := old.Namespaces[n]; !ok || !maps.Equal(ol, l) {
			nss = append(nss, n)
		}
	}
	for n := range old.Namespaces {
		if _, ok := s.Namespaces[n]; !ok {
			nss = append(nss, n)
		}
	}
	if len(pods)+len(nss) > maxChanges {
		return nil
	}
	st := old.st
	st.mu.Lock()
	defer st.mu.Unlock()
	out := &store{peers: map[string]*peerEntry{}, lists: st.lists, groups: st.groups}
	for k, e := range st.peers {
		if !e.affected(pods, nss, old.Namespaces, s.Namespaces) {
			out.peers[k] = e
		}
	}
	return out
}

// peerEntry is what one distinct peer selects. Entries are never modified
// once made; gen tells entries apart in signatures.
type peerEntry struct {
	gen   uint64
	addrs []Range   // addresses allowed (pods' addresses, or the ipBlock)
	pods  []podAddr // pods and their addresses (for named egress ports)
	// dependsOn reports whether the entry depends on pod p, given the
	// namespaces' labels (nil: on no pod).
	dependsOn func(p *Pod, namespaces map[string]map[string]string) bool
	// nsSel is the namespace selector the entry depends on (nil: none).
	nsSel labels.Selector
}

func (e *peerEntry) affected(pods []podChange, nss []string, oldNS, newNS map[string]map[string]string) bool {
	if e.dependsOn != nil {
		for _, c := range pods {
			if (c.old != nil && e.dependsOn(c.old, oldNS)) || (c.new != nil && e.dependsOn(c.new, newNS)) {
				return true
			}
		}
	}
	if e.nsSel != nil {
		for _, n := range nss {
			ol, had := oldNS[n]
			nl, has := newNS[n]
			if (had && e.nsSel.Matches(labels.Set(ol))) || (has && e.nsSel.Matches(labels.Set(nl))) {
				return true
			}
		}
	}
	return false
}

// store holds the entries of one snapshot; prev the candidates carried over
// from the previous one (taken over when used, so that a store holds only
// what its sync used).
type store struct {
	mu     sync.Mutex
	peers  map[string]*peerEntry
	lists  map[string]*AllowList
	groups map[string]*group
	prev   *store
}

func newStore(prev *store) *store {
	return &store{peers: map[string]*peerEntry{}, lists: map[string]*AllowList{}, groups: map[string]*group{}, prev: prev}
}

func (st *store) getList(sig string) *AllowList {
	st.mu.Lock()
	defer st.mu.Unlock()
	if l := st.lists[sig]; l != nil {
		return l
	}
	if st.prev != nil {
		if l := st.prev.lists[sig]; l != nil {
			st.lists[sig] = l
			return l
		}
	}
	return nil
}

func (st *store) putList(sig string, l *AllowList) {
	st.mu.Lock()
	st.lists[sig] = l
	st.mu.Unlock()
}

func (st *store) getGroup(key string) *group {
	st.mu.Lock()
	defer st.mu.Unlock()
	if g := st.groups[key]; g != nil {
		return g
	}
	if st.prev != nil {
		if g := st.prev.groups[key]; g != nil {
			st.groups[key] = g
			return g
		}
	}
	return nil
}

func (st *store) putGroup(key string, g *group) {
	st.mu.Lock()
	st.groups[key] = g
	st.mu.Unlock()
}

// peerEntry returns the entry of a peer of a policy (nil for a peer that
// selects nothing). p nil is the peer of a rule without peers (everyone);
// withPods asks for the pods an ipBlock or everyone covers too.
func (s *Snapshot) peerEntry(cp *compiledPolicy, p *compiledPeer, withPods bool) *peerEntry {
	if p != nil && p.invalid {
		return nil
	}
	if p != nil && p.cidr != nil && !withPods {
		// What an ipBlock allows depends on the policy alone.
		return &peerEntry{addrs: p.blockRanges()}
	}
	key := peerKey(cp.np.Namespace, p)
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := st.peers[key]; e != nil {
		return e
	}
	if st.prev != nil {
		if e := st.prev.peers[key]; e != nil {
			st.peers[key] = e
			return e
		}
	}
	e := s.computePeer(cp.np.Namespace, p)
	st.peers[key] = e
	return e
}

func peerKey(policyNS string, p *compiledPeer) string {
	switch {
	case p == nil:
		return "all"
	case p.cidr != nil:
		var b strings.Builder
		b.WriteString("ip|" + p.cidr.String())
		for _, e := range p.except {
			b.WriteString("|" + e.String())
		}
		return b.String()
	}
	k := "own:" + policyNS
	if p.namespaces != nil {
		k = "ns:" + p.namespaces.String()
	}
	if p.pods != nil {
		k += "|pods:" + p.pods.String()
	}
	return k
}

// blockRanges are the addresses of an ipBlock peer.
func (c *compiledPeer) blockRanges() []Range {
	rs := []Range{prefixRange(*c.cidr)}
	for _, e := range c.except {
		rs = subtract(rs, prefixRange(e))
	}
	return rs
}

func (c *compiledPeer) blockContains(a netip.Addr) bool {
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

func (s *Snapshot) computePeer(policyNS string, p *compiledPeer) *peerEntry {
	e := &peerEntry{gen: nextID.Add(1)}
	switch {
	case p == nil:
		e.addrs = []Range{allV4, allV6}
		e.dependsOn = func(*Pod, map[string]map[string]string) bool { return true }
		for _, pod := range s.Pods {
			for _, ip := range pod.IPs {
				e.pods = append(e.pods, podAddr{pod, ip})
			}
		}
	case p.cidr != nil:
		e.addrs = p.blockRanges()
		e.dependsOn = func(pod *Pod, _ map[string]map[string]string) bool {
			return slices.ContainsFunc(pod.IPs, p.blockContains)
		}
		for _, pod := range s.Pods {
			for _, ip := range pod.IPs {
				if p.blockContains(ip) {
					e.pods = append(e.pods, podAddr{pod, ip})
				}
			}
		}
	default:
		e.nsSel = p.namespaces
		e.dependsOn = func(pod *Pod, nss map[string]map[string]string) bool { return p.matchesPodIn(policyNS, pod, nss) }
		add := func(pods []*Pod) {
			for _, pod := range pods {
				if p.pods == nil || p.pods.Matches(labels.Set(pod.Labels)) {
					for _, ip := range pod.IPs {
						e.pods = append(e.pods, podAddr{pod, ip})
						e.addrs = append(e.addrs, single(ip))
					}
				}
			}
		}
		if p.namespaces == nil {
			add(s.byNS[policyNS])
		} else {
			for _, n := range sortedKeys(s.byNS) {
				if l, ok := s.Namespaces[n]; ok && p.namespaces.Matches(labels.Set(l)) {
					add(s.byNS[n])
				}
			}
		}
		e.addrs = mergeRanges(e.addrs)
	}
	return e
}
