// Package policy enforces Kubernetes NetworkPolicy (networking.k8s.io/v1) for
// the pods of one node. The semantics are pure (model.go, match.go,
// verdict.go, compile.go: policies, pods and namespaces in, verdicts and
// per-pod allow-lists out); the nftables table is rendered from the compiled
// allow-lists (render.go) and programmed by the controller (controller.go).
// See README.md for the layout of the table and why.
package policy

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Pod is what policy needs to know of a pod.
type Pod struct {
	Namespace, Name string
	Node            string
	Labels          map[string]string
	IPs             []netip.Addr
	// Ports are the container ports, by which named ports are resolved.
	Ports       []corev1.ContainerPort
	HostNetwork bool
}

// Key is namespace/name.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Snapshot is the cluster state a verdict is computed from. Build it with
// NewSnapshot (everything computed afresh) or Cache.Snapshot (reusing what the
// previous sync computed and is still valid); it is read-only afterwards.
type Snapshot struct {
	Pods       []*Pod
	Namespaces map[string]map[string]string // name → labels
	Policies   []*networkingv1.NetworkPolicy
	byIP       map[netip.Addr]*Pod
	byNS       map[string][]*Pod
	byKey      map[string]*Pod
	compiled   []*compiledPolicy
	// policiesByNS are the compiled policies of each namespace, in the order
	// of compiled (a policy selects only pods of its own namespace).
	policiesByNS  map[string][]*compiledPolicy
	compiledByKey map[string]*compiledPolicy
	st            *store
}

// NewSnapshot indexes pods by address and namespace and parses every
// policy's selectors once. Pods on the host network are left out: they share
// the node's address, are never selected by a policy, and as peers they are
// the node (matched only by ipBlock), as the API says.
func NewSnapshot(pods []*Pod, namespaces map[string]map[string]string, policies []*networkingv1.NetworkPolicy) *Snapshot {
	return newSnapshot(pods, namespaces, policies, nil)
}

// newSnapshot builds a snapshot; compiled policies of prev are reused for the
// very same objects (informer caches replace objects, never modify them).
func newSnapshot(pods []*Pod, namespaces map[string]map[string]string, policies []*networkingv1.NetworkPolicy, prev *Snapshot) *Snapshot {
	s := &Snapshot{Namespaces: namespaces, byIP: map[netip.Addr]*Pod{}, byNS: map[string][]*Pod{}, byKey: map[string]*Pod{},
		policiesByNS: map[string][]*compiledPolicy{}, compiledByKey: map[string]*compiledPolicy{}, st: newStore(nil)}
	if s.Namespaces == nil {
		s.Namespaces = map[string]map[string]string{}
	}
	for _, p := range pods {
		if p.HostNetwork || len(p.IPs) == 0 {
			continue
		}
		s.Pods = append(s.Pods, p)
	}
	sortByKey(s.Pods, (*Pod).Key)
	for _, p := range s.Pods {
		for _, ip := range p.IPs {
			s.byIP[ip.Unmap()] = p
		}
		s.byNS[p.Namespace] = append(s.byNS[p.Namespace], p)
		s.byKey[p.Key()] = p
	}
	s.Policies = append([]*networkingv1.NetworkPolicy(nil), policies...)
	sortByKey(s.Policies, policyKey)
	for _, np := range s.Policies {
		var cp *compiledPolicy
		if prev != nil {
			if old := prev.compiledByKey[policyKey(np)]; old != nil && old.np == np {
				cp = old
			}
		}
		if cp == nil {
			cp = compilePolicy(np)
		}
		s.compiled = append(s.compiled, cp)
		s.compiledByKey[cp.key] = cp
		s.policiesByNS[np.Namespace] = append(s.policiesByNS[np.Namespace], cp)
	}
	return s
}

// PodByIP returns the (non host-network) pod with this address.
func (s *Snapshot) PodByIP(ip netip.Addr) *Pod { return s.byIP[ip.Unmap()] }

// PodByName returns the pod namespace/name, host-network pods included.
func (s *Snapshot) PodByName(ns, name string) *Pod {
	for _, p := range s.byNS[ns] {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// sortByKey sorts xs by key(x), computing each key once.
func sortByKey[T any](xs []T, key func(T) string) {
	type kx struct {
		k string
		x T
	}
	tmp := make([]kx, len(xs))
	for i, x := range xs {
		tmp[i] = kx{key(x), x}
	}
	sort.Slice(tmp, func(i, j int) bool { return tmp[i].k < tmp[j].k })
	for i := range tmp {
		xs[i] = tmp[i].x
	}
}

func policyKey(np *networkingv1.NetworkPolicy) string { return np.Namespace + "/" + np.Name }

// PodFromAPI converts a pod; ok is false for pods that take no part in policy
// (finished, or without an address yet).
func PodFromAPI(p *corev1.Pod) (*Pod, bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil, false
	}
	out := &Pod{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, Labels: p.Labels, HostNetwork: p.Spec.HostNetwork}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	if len(out.IPs) == 0 {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	for _, c := range p.Spec.InitContainers {
		// Restartable init containers (sidecars) serve ports too.
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out.Ports = append(out.Ports, c.Ports...)
		}
	}
	for _, c := range p.Spec.Containers {
		out.Ports = append(out.Ports, c.Ports...)
	}
	return out, len(out.IPs) > 0
}
