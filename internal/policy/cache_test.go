package policy

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// world is the input of a sync; tests change it the way informers do:
// objects are replaced, never modified in place.
type world struct {
	pods     []*Pod
	nss      map[string]map[string]string
	policies []*networkingv1.NetworkPolicy
}

func policyPool() []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for i, tc := range truthCases() {
		for _, np := range tc.policies {
			np = np.DeepCopy()
			np.Name = fmt.Sprintf("c%d-%s", i, np.Name)
			out = append(out, np)
		}
	}
	return out
}

var nodes = []string{"node-1", "node-2", "node-3"}

// checkSameAsFresh renders w for every node through each node's cache and
// afresh, and fails when they differ.
func checkSameAsFresh(t *testing.T, step string, caches map[string]*Cache, w *world) map[string]*Desired {
	t.Helper()
	out := map[string]*Desired{}
	for _, n := range nodes {
		cfg := RenderConfig{NodeName: n, LogGroup: DefaultLogGroup}
		got := Render(caches[n].Snapshot(w.pods, w.nss, w.policies), cfg, nil)
		want := Render(NewSnapshot(w.pods, w.nss, w.policies), cfg, nil)
		if !reflect.DeepEqual(normalize(got), normalize(want)) {
			t.Fatalf("%s: node %s: incremental render differs from a fresh one:\nincremental %v\nfresh       %v", step, n, got.Verdicts, want.Verdicts)
		}
		out[n] = want
	}
	return out
}

// normalize makes empty and nil maps and slices alike.
func normalize(d *Desired) *Desired {
	c := *d
	if len(c.SetElements) == 0 {
		c.SetElements = nil
	}
	return &c
}

func newCaches() map[string]*Cache {
	m := map[string]*Cache{}
	for _, n := range nodes {
		m[n] = &Cache{}
	}
	return m
}

func clonePod(p *Pod) *Pod {
	c := *p
	c.Labels = map[string]string{}
	for k, v := range p.Labels {
		c.Labels[k] = v
	}
	c.IPs = slices.Clone(p.IPs)
	c.Ports = slices.Clone(p.Ports)
	return &c
}

func (w *world) replacePod(i int, f func(*Pod)) {
	p := clonePod(w.pods[i])
	f(p)
	w.pods = slices.Clone(w.pods)
	w.pods[i] = p
}

func (w *world) setNS(name string, labels map[string]string) {
	nss := map[string]map[string]string{}
	for k, v := range w.nss {
		nss[k] = v
	}
	if labels == nil {
		delete(nss, name)
	} else {
		nss[name] = labels
	}
	w.nss = nss
}

func podIndex(w *world, key string) int {
	for i, p := range w.pods {
		if p.Key() == key {
			return i
		}
	}
	panic(key)
}

// TestCacheFollowsEachKindOfChange: each change that alters the rules is
// followed by the incremental render exactly.
func TestCacheFollowsEachKindOfChange(t *testing.T) {
	w := &world{pods: modelPods(), nss: modelNamespaces(), policies: []*networkingv1.NetworkPolicy{
		newPolicy("x", "in-from-y-b", selecting(), types(in, eg),
			ingressRule(ports(namedPort(tcp, "serve-81-tcp")), bothPeer(labelsSel("ns", "y"), labelsSel("pod", "b"))),
			egressRule(ports(namedPort(udp, "serve-80-udp")), bothPeer(labelsSel("ns", "z"), labelsSel("pod", "c")))),
		newPolicy("y", "in-80-from-x", selecting(), types(in, eg),
			ingressRule(ports(port(tcp, 80)), nsPeer(labelsSel("ns", "x"))),
			egressRule(nil, ipPeer("10.0.0.0/16", "10.0.3.0/24"))),
		newPolicy("z", "in-from-own-a", selecting(), ingressRule(nil, podPeer(labelsSel("pod", "a")))),
	}}
	caches := newCaches()
	prev := checkSameAsFresh(t, "start", caches, w)
	steps := []struct {
		name   string
		change func(w *world)
	}{
		{"named port renumbered", func(w *world) {
			w.replacePod(podIndex(w, "x/a"), func(p *Pod) {
				for i := range p.Ports {
					if p.Ports[i].ContainerPort == 81 {
						p.Ports[i].ContainerPort = 8181
					}
				}
			})
		}},
		{"pod label change", func(w *world) {
			w.replacePod(podIndex(w, "y/b"), func(p *Pod) { p.Labels["pod"] = "c" })
		}},
		{"pod label added", func(w *world) {
			w.replacePod(podIndex(w, "z/a"), func(p *Pod) { p.Labels["pod"] = "b" })
		}},
		{"namespace label change", func(w *world) {
			w.setNS("y", map[string]string{"ns": "z", "kubernetes.io/metadata.name": "y"})
		}},
		{"pod IP change", func(w *world) {
			w.replacePod(podIndex(w, "x/b"), func(p *Pod) { p.IPs[0] = netip.MustParseAddr("10.0.9.9") })
		}},
		{"named port renamed on a peer", func(w *world) {
			w.replacePod(podIndex(w, "z/c"), func(p *Pod) {
				for i := range p.Ports {
					p.Ports[i].Name += "-x"
				}
			})
		}},
		{"pod deleted", func(w *world) {
			i := podIndex(w, "y/c")
			w.pods = slices.Delete(slices.Clone(w.pods), i, i+1)
		}},
		{"pod added", func(w *world) {
			w.pods = append(slices.Clone(w.pods), &Pod{Namespace: "y", Name: "d", Node: "node-2", Labels: map[string]string{"pod": "a"},
				IPs: []netip.Addr{netip.MustParseAddr("10.0.2.9")}, Ports: []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: 80, Protocol: tcp}}})
		}},
		{"policy selector changed", func(w *world) {
			w.policies = slices.Clone(w.policies)
			for i, np := range w.policies {
				if np.Namespace == "x" {
					np = np.DeepCopy()
					np.Spec.PodSelector = *labelsSel("pod", "b")
					w.policies[i] = np
				}
			}
		}},
		{"policy deleted", func(w *world) {
			w.policies = slices.Delete(slices.Clone(w.policies), 2, 3)
		}},
		{"namespace deleted", func(w *world) { w.setNS("x", nil) }},
	}
	for _, st := range steps {
		st.change(w)
		cur := checkSameAsFresh(t, st.name, caches, w)
		if reflect.DeepEqual(cur, prev) {
			t.Errorf("%s: the rules did not change; the step tests nothing", st.name)
		}
		prev = cur
	}
}

// TestCacheEqualsFreshUnderRandomChanges: a long random sequence of changes
// of every kind; after each, the incremental render equals a fresh one.
func TestCacheEqualsFreshUnderRandomChanges(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	pool := policyPool()
	w := &world{pods: modelPods(), nss: modelNamespaces(), policies: pool[:len(pool)/2]}
	caches := newCaches()
	checkSameAsFresh(t, "start", caches, w)
	labelsOf := []string{"a", "b", "c", "d"}
	nsOf := []string{"x", "y", "z", "w"}
	for step := 0; step < 400; step++ {
		var what string
		switch k := rng.Intn(9); k {
		case 0:
			i := rng.Intn(len(w.pods))
			v := labelsOf[rng.Intn(len(labelsOf))]
			what = fmt.Sprintf("pod %s label pod=%s", w.pods[i].Key(), v)
			w.replacePod(i, func(p *Pod) { p.Labels["pod"] = v })
		case 1:
			n := nsOf[rng.Intn(3)]
			v := nsOf[rng.Intn(len(nsOf))]
			what = fmt.Sprintf("namespace %s label ns=%s", n, v)
			w.setNS(n, map[string]string{"ns": v, "kubernetes.io/metadata.name": n})
		case 2:
			i := rng.Intn(len(w.pods))
			a := netip.AddrFrom4([4]byte{10, 0, byte(rng.Intn(4)), byte(1 + rng.Intn(12))})
			what = fmt.Sprintf("pod %s address %s", w.pods[i].Key(), a)
			w.replacePod(i, func(p *Pod) { p.IPs[0] = a })
		case 3:
			i := rng.Intn(len(w.pods))
			j := rng.Intn(len(w.pods[i].Ports))
			what = fmt.Sprintf("pod %s port %d changed", w.pods[i].Key(), j)
			w.replacePod(i, func(p *Pod) {
				if rng.Intn(2) == 0 {
					p.Ports[j].ContainerPort = int32(80 + rng.Intn(3))
				} else {
					p.Ports[j].Name = fmt.Sprintf("serve-%d-tcp", 80+rng.Intn(3))
				}
			})
		case 4:
			if len(w.pods) > 3 {
				i := rng.Intn(len(w.pods))
				what = "pod deleted " + w.pods[i].Key()
				w.pods = slices.Delete(slices.Clone(w.pods), i, i+1)
			}
		case 5:
			n := nsOf[rng.Intn(len(nsOf))]
			name := fmt.Sprintf("p%d", step)
			what = "pod added " + n + "/" + name
			w.pods = append(slices.Clone(w.pods), &Pod{Namespace: n, Name: name, Node: nodes[rng.Intn(len(nodes))],
				Labels: map[string]string{"pod": labelsOf[rng.Intn(len(labelsOf))]},
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(rng.Intn(4)), byte(1 + rng.Intn(12))})},
				Ports:  []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: int32(80 + rng.Intn(2)), Protocol: tcp}}})
		case 6:
			np := pool[rng.Intn(len(pool))]
			i := slices.IndexFunc(w.policies, func(p *networkingv1.NetworkPolicy) bool { return policyKey(p) == policyKey(np) })
			if i >= 0 {
				what = "policy deleted " + policyKey(np)
				w.policies = slices.Delete(slices.Clone(w.policies), i, i+1)
			} else {
				what = "policy added " + policyKey(np)
				w.policies = append(slices.Clone(w.policies), np)
			}
		case 7:
			if len(w.policies) > 0 {
				i := rng.Intn(len(w.policies))
				np := w.policies[i].DeepCopy()
				np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"pod": labelsOf[rng.Intn(len(labelsOf))]}}
				what = "policy selector changed " + policyKey(np)
				w.policies = slices.Clone(w.policies)
				w.policies[i] = np
			}
		case 8:
			n := nsOf[rng.Intn(len(nsOf))]
			if _, ok := w.nss[n]; ok && rng.Intn(2) == 0 {
				what = "namespace deleted " + n
				w.setNS(n, nil)
			} else {
				what = "namespace added " + n
				w.setNS(n, map[string]string{"ns": n, "kubernetes.io/metadata.name": n})
			}
		}
		checkSameAsFresh(t, fmt.Sprintf("step %d (%s)", step, what), caches, w)
	}
}
