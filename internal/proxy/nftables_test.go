package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"amime.dev/amime/internal/cidr"
	"amime.dev/amime/internal/golden"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"
)

var testConfig = Config{
	NodeName:     "node-a",
	Zone:         "zone-a",
	ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/48")},
}

// ep4 and ep6 are ready endpoints on port 8080 of node.
func ep4(ip, node string) Endpoint {
	return Endpoint{IP: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true, NodeName: node}
}

func sport(name string, proto corev1.Protocol, v6 bool, cip string, eps ...Endpoint) *ServicePort {
	return &ServicePort{Namespace: "default", Name: name, Protocol: proto, IPv6: v6, ClusterIPs: addrs(cip), Port: 80, Endpoints: eps}
}

func withSP(sp *ServicePort, f func(*ServicePort)) *ServicePort { f(sp); return sp }

// programCases are the Service shapes rendered by Program, one golden file each
// under testdata/program/.
func programCases() []struct {
	name  string
	ports []*ServicePort
} {
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	return []struct {
		name  string
		ports []*ServicePort
	}{
		{"clusterip-1-endpoint", []*ServicePort{sport("web", tcp, false, "10.96.0.10", ep4("10.244.1.2", "node-b"))}},
		{"clusterip-3-endpoints", []*ServicePort{sport("web", tcp, false, "10.96.0.10",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b"), ep4("10.244.3.2", "node-c"))}},
		{"clusterip-0-endpoints", []*ServicePort{sport("web", tcp, false, "10.96.0.10")}},
		{"clusterip-not-ready-only", []*ServicePort{sport("web", tcp, false, "10.96.0.10",
			Endpoint{IP: netip.MustParseAddr("10.244.1.2"), Port: 8080, NodeName: "node-a"})}},
		{"nodeport-cluster", []*ServicePort{withSP(sport("np", tcp, false, "10.96.0.11",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b")), func(sp *ServicePort) { sp.NodePort = 30011 })}},
		{"nodeport-0-endpoints", []*ServicePort{withSP(sport("np", tcp, false, "10.96.0.11"), func(sp *ServicePort) { sp.NodePort = 30011 })}},
		{"nodeport-local-with-local", []*ServicePort{withSP(sport("npl", tcp, false, "10.96.0.12",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b")), func(sp *ServicePort) {
			sp.NodePort, sp.ExternalLocal, sp.HealthCheckNodePort = 30012, true, 32012
		})}},
		{"nodeport-local-remote-only", []*ServicePort{withSP(sport("npl", tcp, false, "10.96.0.12",
			ep4("10.244.2.2", "node-b")), func(sp *ServicePort) {
			sp.NodePort, sp.ExternalLocal, sp.HealthCheckNodePort = 30012, true, 32012
		})}},
		{"nodeport-local-0-endpoints", []*ServicePort{withSP(sport("npl", tcp, false, "10.96.0.12"), func(sp *ServicePort) {
			sp.NodePort, sp.ExternalLocal, sp.HealthCheckNodePort = 30012, true, 32012
		})}},
		{"internal-local-remote-only", []*ServicePort{withSP(sport("itp", tcp, false, "10.96.0.13",
			ep4("10.244.2.2", "node-b")), func(sp *ServicePort) { sp.InternalLocal = true })}},
		{"internal-local-with-local", []*ServicePort{withSP(sport("itp", tcp, false, "10.96.0.13",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b")), func(sp *ServicePort) { sp.InternalLocal = true })}},
		{"externalips-and-lb", []*ServicePort{withSP(sport("lb", tcp, false, "10.96.0.14",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b")), func(sp *ServicePort) {
			sp.NodePort = 30014
			sp.ExternalIPs = addrs("192.0.2.14", "198.51.100.14")
		})}},
		{"externalips-local-remote-only", []*ServicePort{withSP(sport("lb", tcp, false, "10.96.0.14",
			ep4("10.244.2.2", "node-b")), func(sp *ServicePort) {
			sp.ExternalIPs = addrs("192.0.2.14")
			sp.ExternalLocal = true
		})}},
		{"affinity", []*ServicePort{withSP(sport("aff", tcp, false, "10.96.0.15",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b")), func(sp *ServicePort) { sp.AffinityTimeout = 10800 })}},
		{"affinity-nodeport", []*ServicePort{withSP(sport("aff", tcp, false, "10.96.0.15",
			ep4("10.244.1.2", "node-a")), func(sp *ServicePort) { sp.AffinityTimeout = 60; sp.NodePort = 30015 })}},
		{"udp", []*ServicePort{withSP(sport("dns", udp, false, "10.96.0.10",
			ep4("10.244.1.2", "node-a"), ep4("10.244.2.2", "node-b")), func(sp *ServicePort) { sp.Port = 53; sp.PortName = "dns" })}},
		{"sctp", []*ServicePort{withSP(sport("sctp", sctp, false, "10.96.0.16",
			ep4("10.244.1.2", "node-a")), func(sp *ServicePort) { sp.Port = 9 })}},
		{"ipv6-1-endpoint", []*ServicePort{sport("six", tcp, true, "fd00:96::10", ep4("fd00:244::2", "node-b"))}},
		{"ipv6-2-endpoints-nodeport-affinity", []*ServicePort{withSP(sport("six", tcp, true, "fd00:96::10",
			ep4("fd00:244::2", "node-b"), ep4("fd00:244::3", "node-a")), func(sp *ServicePort) {
			sp.NodePort = 30010
			sp.ExternalIPs = addrs("2001:db8::10")
		}), withSP(sport("six-aff", tcp, true, "fd00:96::11",
			ep4("fd00:244::2", "node-b"), ep4("fd00:244::3", "node-a")), func(sp *ServicePort) { sp.AffinityTimeout = 30 })}},
		{"dual-stack-nodeport", []*ServicePort{
			withSP(sport("dual", tcp, false, "10.96.0.17", ep4("10.244.1.2", "node-a")), func(sp *ServicePort) { sp.NodePort = 30017 }),
			withSP(sport("dual", tcp, true, "fd00:96::17", ep4("fd00:244::2", "node-a")), func(sp *ServicePort) { sp.NodePort = 30017 }),
		}},
		{"hairpin-shared-endpoint", []*ServicePort{
			sport("a", tcp, false, "10.96.0.18", ep4("10.244.1.2", "node-a")),
			sport("b", udp, false, "10.96.0.19", ep4("10.244.1.2", "node-a"), ep4("10.244.1.3", "node-a")),
		}},
		{"externalip-collision", []*ServicePort{
			// Two Services claim the same external IP and port: the first (by
			// key) keeps it, and the table stays loadable.
			withSP(sport("a", tcp, false, "10.96.0.20", ep4("10.244.1.2", "node-a")), func(sp *ServicePort) { sp.ExternalIPs = addrs("192.0.2.20") }),
			withSP(sport("b", tcp, false, "10.96.0.21", ep4("10.244.1.3", "node-a")), func(sp *ServicePort) { sp.ExternalIPs = addrs("192.0.2.20") }),
		}},
	}
}

func TestProgram(t *testing.T) {
	for _, tc := range programCases() {
		t.Run(tc.name, func(t *testing.T) {
			chains, elements, sets, local := Program(tc.ports, testConfig)
			golden.Check(t, "program/"+tc.name, renderProgram(chains, elements, sets, local))
			checkProgram(t, chains, elements, sets)
		})
	}
}

// renderProgram writes Program's output in a stable text form.
func renderProgram(chains map[string][]rule, elements map[string]element, sets map[string]string, local map[string]int) string {
	var b strings.Builder
	for _, name := range sortedKeys(chains) {
		fmt.Fprintf(&b, "chain %s\n", name)
		for _, r := range chains[name] {
			fmt.Fprintf(&b, "\t%s\n", r)
		}
	}
	for _, name := range sortedKeys(sets) {
		fmt.Fprintf(&b, "set %s %s\n", name, sets[name])
	}
	var els []string
	for _, e := range elements {
		s := fmt.Sprintf("element %s { %s", e.set, strings.Join(e.key, " . "))
		if len(e.value) > 0 {
			s += " : " + strings.Join(e.value, " ")
		}
		els = append(els, s+" }")
	}
	sort.Strings(els)
	for _, s := range els {
		b.WriteString(s + "\n")
	}
	for _, k := range sortedKeys(local) {
		fmt.Fprintf(&b, "local %s %d\n", k, local[k])
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// staticTable returns the table staticObjects creates, from the fake.
func staticTable(t *testing.T) *knftables.FakeTable {
	t.Helper()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	staticObjects(tx, testConfig)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	return fake.Table
}

// checkProgram checks what the kernel would refuse in a transaction: two
// elements with one key in one map (EEXIST), references to chains, sets or maps
// that do not exist.
func checkProgram(t *testing.T, chains map[string][]rule, elements map[string]element, sets map[string]string) {
	t.Helper()
	st := staticTable(t)
	chainExists := func(n string) bool { _, ok := chains[n]; return ok || st.Chains[n] != nil }
	setExists := func(n string) bool { _, ok := sets[n]; return ok || st.Sets[n] != nil || st.Maps[n] != nil }
	keys := map[string]string{}
	for id, e := range elements {
		if st.Sets[e.set] == nil && st.Maps[e.set] == nil {
			t.Errorf("element %s: no set or map %q", id, e.set)
		}
		if (st.Maps[e.set] != nil) != (len(e.value) > 0) {
			t.Errorf("element %s: value and container kind disagree", id)
		}
		k := e.set + " " + strings.Join(e.key, " . ")
		if other, ok := keys[k]; ok {
			t.Errorf("elements %s and %s share key %s (the kernel refuses the transaction)", other, id, k)
		}
		keys[k] = id
		for _, ref := range refs(strings.Join(e.value, " "), "goto", "jump") {
			if !chainExists(ref) {
				t.Errorf("element %s: no chain %q", id, ref)
			}
		}
	}
	for name, rules := range chains {
		if !strings.HasPrefix(name, "svc-") && !strings.HasPrefix(name, "ext-") {
			t.Errorf("chain %s: not named svc-/ext- (a full sync would not clean it up)", name)
		}
		for _, rl := range rules {
			r := rl.String()
			for _, ref := range refs(r, "goto", "jump") {
				if !chainExists(ref) {
					t.Errorf("chain %s rule %q: no chain %q", name, r, ref)
				}
			}
			for _, w := range strings.Fields(r) {
				if n, ok := strings.CutPrefix(strings.TrimRight(w, ",}"), "@"); ok && !setExists(n) {
					t.Errorf("chain %s rule %q: no set %q", name, r, n)
				}
			}
		}
	}
	for name := range sets {
		if !strings.Contains(name, "-aff") {
			t.Errorf("set %s: not named -aff (a full sync would not clean it up)", name)
		}
	}
}

// refs returns the words following any of verbs in s.
func refs(s string, verbs ...string) []string {
	w := strings.Fields(s)
	var out []string
	for i := 0; i+1 < len(w); i++ {
		for _, v := range verbs {
			if w[i] == v {
				out = append(out, strings.TrimRight(w[i+1], ",}"))
			}
		}
	}
	return out
}

func TestStaticObjects(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	staticObjects(tx, testConfig)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "static", fake.Dump())
	// Idempotent: a second run (the next full sync) changes nothing.
	before := fake.Dump()
	tx = fake.NewTransaction()
	staticObjects(tx, testConfig)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, fake.Dump()); diff != "" {
		t.Errorf("second staticObjects changed the table (-first +second):\n%s", diff)
	}
}

func TestNormalizePrefixes(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, nil},
		{"masked", []string{"10.244.1.7/16"}, []string{"10.244.0.0/16"}},
		{"sorted-families", []string{"fd00:244::/48", "10.245.0.0/16", "10.244.0.0/16"}, []string{"10.244.0.0/16", "10.245.0.0/16", "fd00:244::/48"}},
		{"covered-dropped", []string{"10.244.3.0/24", "10.0.0.0/8", "10.244.0.0/16"}, []string{"10.0.0.0/8"}},
		{"duplicate", []string{"10.244.0.0/16", "10.244.0.0/16", "10.244.9.9/16"}, []string{"10.244.0.0/16"}},
		{"adjacent-kept", []string{"10.1.0.0/16", "10.0.0.0/16"}, []string{"10.0.0.0/16", "10.1.0.0/16"}},
		{"v6-covered", []string{"fd00:244:0:1::/64", "fd00:244::/48"}, []string{"fd00:244::/48"}},
		{"v6-sibling-kept", []string{"fd00:244:1::/64", "fd00:244::/48"}, []string{"fd00:244::/48", "fd00:244:1::/64"}},
		{"invalid-dropped", []string{"", "10.0.0.0/8"}, []string{"10.0.0.0/8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []netip.Prefix
			for _, s := range tc.in {
				p, _ := netip.ParsePrefix(s) // "" gives the invalid prefix
				in = append(in, p)
			}
			var got []string
			for _, p := range cidr.Normalize(in) {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestChainName(t *testing.T) {
	a := chainName("svc", "default/web:http/TCP/v4")
	if a != chainName("svc", "default/web:http/TCP/v4") {
		t.Errorf("chainName not stable")
	}
	// Golden value: a change renames every chain of a running node.
	if a != "svc-zbx2mwsgpjjozvtb" {
		t.Errorf("chainName = %q", a)
	}
	seen := map[string]string{}
	for _, ns := range []string{"default", "kube-system", "a"} {
		for _, name := range []string{"web", "dns", "b"} {
			for _, port := range []string{"", "http", "dns"} {
				for _, proto := range []string{"TCP", "UDP", "SCTP"} {
					for _, f := range []string{"v4", "v6"} {
						key := fmt.Sprintf("%s/%s:%s/%s/%s", ns, name, port, proto, f)
						for _, prefix := range []string{"svc", "ext"} {
							n := chainName(prefix, key)
							if !strings.HasPrefix(n, prefix+"-") || len(n) != len(prefix)+17 || strings.ContainsAny(n, "=/:") {
								t.Fatalf("chainName(%q, %q) = %q", prefix, key, n)
							}
							if o, ok := seen[n]; ok {
								t.Fatalf("chainName collision: %q and %q", o, prefix+key)
							}
							seen[n] = prefix + key
						}
					}
				}
			}
		}
	}
}

func TestIsMap(t *testing.T) {
	st := staticTable(t)
	for name := range st.Maps {
		if !isMap(name) {
			t.Errorf("isMap(%q) = false for a map", name)
		}
	}
	for _, name := range []string{"hairpin-v4", "hairpin-v6"} {
		if st.Sets[name] == nil || isMap(name) {
			t.Errorf("isMap(%q) = %v, want a set", name, isMap(name))
		}
	}
}

// With ClientIP affinity, a client recorded for an endpoint keeps reaching that
// endpoint when other endpoints come and go: each affinity set stays tied to
// one endpoint.
func TestAffinityFollowsEndpoint(t *testing.T) {
	sp := func(ips ...string) *ServicePort {
		p := sport("aff", corev1.ProtocolTCP, false, "10.96.0.15")
		p.AffinityTimeout, p.NodePort = 10800, 30015
		for _, ip := range ips {
			p.Endpoints = append(p.Endpoints, ep4(ip, "node-a"))
		}
		return p
	}
	// targets maps each affinity set to the endpoint its chain DNATs to.
	targets := func(p *ServicePort) map[string]string {
		chains, _, sets, _ := Program([]*ServicePort{p}, testConfig)
		out := map[string]string{}
		for _, rules := range chains {
			if len(rules) == 2 && rules[0].update != "" {
				set := rules[0].update
				if _, ok := sets[set]; !ok {
					t.Errorf("rule %q: no set %s", rules[0], set)
				}
				out[set] = rules[1].dest.String()
			}
		}
		return out
	}
	for _, tc := range []struct {
		name          string
		before, after []string
	}{
		{"added-first", []string{"10.244.1.2", "10.244.1.3"}, []string{"10.244.1.1", "10.244.1.2", "10.244.1.3"}},
		{"removed-first", []string{"10.244.1.1", "10.244.1.2", "10.244.1.3"}, []string{"10.244.1.2", "10.244.1.3"}},
		{"replaced", []string{"10.244.1.1", "10.244.1.2"}, []string{"10.244.1.0", "10.244.1.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, after := targets(sp(tc.before...)), targets(sp(tc.after...))
			if len(before) != 2*len(tc.before) || len(after) != 2*len(tc.after) {
				t.Fatalf("%d and %d affinity sets, want one per endpoint and chain (svc, ext)", len(before), len(after))
			}
			for set, target := range before {
				if got, ok := after[set]; ok && got != target {
					t.Errorf("set %s led to %s, now to %s: its clients change endpoint", set, target, got)
				}
			}
		})
	}
}
