package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/golden"
)

// failingFake fails Run while fail is set (the kernel refusing a transaction).
type failingFake struct {
	*knftables.Fake
	fail bool
}

func (f *failingFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail {
		return errors.New("injected failure")
	}
	return f.Fake.Run(ctx, tx)
}

func goldenPolicies() []*networkingv1.NetworkPolicy {
	return []*networkingv1.NetworkPolicy{
		newPolicy("x", "deny", types(in, eg)),
		newPolicy("x", "from-y", selecting("pod", "a"), ingressRule(ports(port(tcp, 80), portRangeOf(udp, 80, 81), port(sctp, 80)), nsPeer(labelsSel("ns", "y")))),
		newPolicy("x", "from-outside", selecting("pod", "b"), ingressRule(nil, ipPeer("192.168.0.0/16", "192.168.5.0/24"), ipPeer("fd00:99::/64"))),
		newPolicy("x", "egress", types(eg), egressRule(ports(namedPort(tcp, "serve-81-tcp")), nsPeer(labelsSel("ns", "z"))), egressRule(ports(port(udp, 53), port(tcp, 53)))),
	}
}

func render(pols []*networkingv1.NetworkPolicy, logModes map[string]string) (*Snapshot, *Desired) {
	s := NewSnapshot(modelPods(), modelNamespaces(), pols)
	return s, Render(s, node1Config(), logModes)
}

// node1Config renders for node-1, whose pods are x/a, x/b and x/c.
func node1Config() RenderConfig {
	return RenderConfig{NodeName: "node-1", LogGroup: DefaultLogGroup,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("fd00::1:0/112")}}
}

// unknownLocal is an address in node-1's pod range that is no pod (a pod
// whose address the controller has not seen yet).
var unknownLocal = netip.MustParseAddr("10.0.1.9")

func TestRenderGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		log  map[string]string
	}{{"table", nil}, {"table-log", map[string]string{"x": logAll}}} {
		t.Run(c.name, func(t *testing.T) {
			_, d := render(goldenPolicies(), c.log)
			fake := knftables.NewFake(knftables.InetFamily, Table)
			if _, _, err := fixedGen(NewDataplane(fake, DefaultLogGroup)).Apply(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, c.name, fake.Dump())
		})
	}
}

// TestPartialSyncsEqualFull: after a series of changes applied as partial
// syncs, the table equals a full sync of the last state, and each partial
// sync sends only what changed.
func TestPartialSyncsEqualFull(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	dp := NewDataplane(fake, DefaultLogGroup)
	steps := [][]*networkingv1.NetworkPolicy{
		nil,
		goldenPolicies(),
		goldenPolicies()[:2],
		append(goldenPolicies()[1:], newPolicy("x", "c-only", selecting("pod", "c"), types(in))),
		nil,
	}
	for i, pols := range steps {
		_, d := render(pols, nil)
		full, _, err := dp.Apply(ctx, d)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if full != (i == 0) {
			t.Errorf("step %d: full %t", i, full)
		}
		ref := knftables.NewFake(knftables.InetFamily, Table)
		if _, _, err := NewDataplane(ref, DefaultLogGroup).Apply(ctx, d); err != nil {
			t.Fatal(err)
		}
		if got, want := sortedDump(fake), sortedDump(ref); got != want {
			t.Errorf("step %d: partial syncs left\n%s\nwant\n%s", i, got, want)
		}
	}
	// An unchanged state sends nothing and keeps the generation.
	gen := dp.gen
	_, d := render(nil, nil)
	if _, ops, err := dp.Apply(ctx, d); err != nil || ops != 0 || dp.gen != gen {
		t.Errorf("unchanged state: %d operations, %v, generation %d → %d", ops, err, gen, dp.gen)
	}
	// A change moves to a new generation, written in both base chains, so
	// that established connections are judged again once.
	_, d = render(goldenPolicies(), nil)
	if _, _, err := dp.Apply(ctx, d); err != nil || dp.gen == gen || dp.gen == 0 {
		t.Fatalf("changed state: %v, generation %d → %d", err, gen, dp.gen)
	}
	want := fmt.Sprintf("ct mark and 0xff000000 == 0x%02x000000 accept", dp.gen)
	for _, c := range []string{"forward", "input"} {
		found := false
		for _, r := range fake.Table.Chains[c].Rules {
			found = found || r.Rule == want
		}
		if !found {
			t.Errorf("chain %s lacks %q", c, want)
		}
	}
}

// TestFailureKeepsRulesAndNextSyncIsFull: a refused transaction leaves the
// previous rules; the next sync is full and cleans up.
func TestFailureKeepsRulesAndNextSyncIsFull(t *testing.T) {
	ctx := context.Background()
	f := &failingFake{Fake: knftables.NewFake(knftables.InetFamily, Table)}
	dp := NewDataplane(f, DefaultLogGroup)
	_, d1 := render(goldenPolicies(), nil)
	if _, _, err := dp.Apply(ctx, d1); err != nil {
		t.Fatal(err)
	}
	before := f.Dump()
	f.fail = true
	_, d2 := render(nil, nil)
	if _, _, err := dp.Apply(ctx, d2); err == nil {
		t.Fatal("no error")
	}
	if f.Dump() != before {
		t.Errorf("a failed sync changed the table")
	}
	f.fail = false
	full, _, err := dp.Apply(ctx, d2)
	if err != nil || !full {
		t.Fatalf("sync after failure: full %t, %v", full, err)
	}
	if strings.Contains(f.Dump(), "chain in-") {
		t.Errorf("stale groups left after the full sync:\n%s", f.Dump())
	}
}

// TestRestartReplacesInOneTransaction: a new process (new Dataplane) over a
// table a previous one programmed replaces it in a single transaction that
// never deletes the table or the maps.
func TestRestartReplacesInOneTransaction(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	_, d1 := render(goldenPolicies(), nil)
	if _, _, err := NewDataplane(fake, DefaultLogGroup).Apply(ctx, d1); err != nil {
		t.Fatal(err)
	}
	_, d2 := render(goldenPolicies()[:2], nil)
	full, _, err := NewDataplane(fake, DefaultLogGroup).Apply(ctx, d2)
	if err != nil || !full {
		t.Fatalf("full %t: %v", full, err)
	}
	tx := fake.LastTransaction.String()
	if strings.Contains(tx, "delete table") || strings.Contains(tx, "delete map") {
		t.Errorf("restart transaction deletes the table or a map:\n%s", tx)
	}
	ref := knftables.NewFake(knftables.InetFamily, Table)
	_, _, _ = NewDataplane(ref, DefaultLogGroup).Apply(ctx, d2)
	if sortedDump(fake) != sortedDump(ref) {
		t.Errorf("after restart:\n%s\nwant\n%s", fake.Dump(), ref.Dump())
	}
}

// TestPacketsThroughTheFake traces packets through the programmed fake table
// (vmaps, group chains, set elements as nft text) and compares with Verdict,
// for every truth-table case, for the pods of node-1.
func TestPacketsThroughTheFake(t *testing.T) {
	for _, tc := range truthCases() {
		t.Run(tc.name, func(t *testing.T) {
			s, d := render(tc.policies, nil)
			fake := knftables.NewFake(knftables.InetFamily, Table)
			if _, _, err := fixedGen(NewDataplane(fake, DefaultLogGroup)).Apply(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			for _, pr := range tc.probes {
				for _, from := range append(endpoints(), "unknown") {
					for _, to := range append(endpoints(), "unknown") {
						if from == to || (from == "ext" && to == "ext") {
							continue
						}
						pkt := Packet{Src: traceAddr(from), Dst: traceAddr(to), Protocol: pr.proto, Port: pr.port}
						if from == "unknown" || to == "unknown" {
							// Not judged by any policy: dropped whatever the policies.
							if trace(t, fake, pkt) {
								t.Errorf("%s/%d %s -> %s: an unknown address of the node's pod range passed", pr.proto, pr.port, from, to)
							}
							continue
						}
						want := s.Verdict(pkt)
						// node-1 judges only its own pods' directions.
						local := true
						if src := s.PodByIP(pkt.Src); src != nil && src.Node == "node-1" {
							local = local && want.Egress.Allowed
						}
						if dst := s.PodByIP(pkt.Dst); dst != nil && dst.Node == "node-1" {
							local = local && want.Ingress.Allowed
						}
						if got := trace(t, fake, pkt); got != local {
							t.Errorf("%s/%d %s -> %s: fake table %t, verdict %t", pr.proto, pr.port, from, to, got, local)
						}
					}
				}
			}
		})
	}
}

func traceAddr(p string) netip.Addr {
	if p == "unknown" {
		return unknownLocal
	}
	return addrOf(p)
}

// trace runs the first packet of a new connection through the forward chain:
// its vmaps, the group chains they jump to and the unknown-address rules.
func trace(t *testing.T, fake *knftables.Fake, pkt Packet) bool {
	t.Helper()
	tbl := fake.Table
	kw := "ip"
	if pkt.Src.Is6() {
		kw = "ip6"
	}
	for _, r := range tbl.Chains["forward"].Rules {
		f := strings.Fields(r.Rule)
		switch {
		case f[0] == "ct": // replies, related, the generation: a new connection matches none
		case f[0] != kw: // the other family
		case len(f) == 4 && f[2] == "vmap":
			key, peer := pkt.Src, pkt.Dst
			if f[1] == "daddr" {
				key, peer = pkt.Dst, pkt.Src
			}
			e := tbl.Maps[f[3][1:]].FindElement(key.String())
			if e == nil {
				continue
			}
			chain, ok := strings.CutPrefix(e.Value[0], "jump ")
			if !ok {
				t.Fatalf("verdict %q", e.Value[0])
			}
			if !traceChain(t, tbl, chain, peer, pkt) {
				return false
			}
		case len(f) == 8 && f[5] == "!=" && f[7] == "drop": // ip saddr RANGE ip saddr != @known-v4 drop
			a := pkt.Src
			if f[1] == "daddr" {
				a = pkt.Dst
			}
			if netip.MustParsePrefix(f[2]).Contains(a) && tbl.Sets[f[6][1:]].FindElement(a.String()) == nil {
				return false
			}
		default:
			t.Fatalf("forward rule the tracer does not know: %q", r.Rule)
		}
	}
	return true
}

func traceChain(t *testing.T, tbl *knftables.FakeTable, chain string, peer netip.Addr, pkt Packet) bool {
	for _, r := range tbl.Chains[chain].Rules {
		f := strings.Fields(r.Rule)
		switch {
		case len(f) == 1 && f[0] == "drop":
			return false
		case len(f) == 4 && strings.HasPrefix(f[2], "@"): // ip saddr @set return
			if (f[0] == "ip") == peer.Is4() && setHas(t, tbl, f[2][1:], peer.String()) {
				return true
			}
		case len(f) == 10 && strings.HasPrefix(f[8], "@"): // ip saddr . meta l4proto . th dport @set return
			if (f[0] == "ip") == peer.Is4() && setHas(t, tbl, f[8][1:], peer.String(), strings.ToLower(string(pkt.Protocol)), fmt.Sprint(pkt.Port)) {
				return true
			}
		default:
			t.Fatalf("rule the tracer does not know: %q", r.Rule)
		}
	}
	t.Fatalf("chain %s has no final verdict", chain)
	return false
}

// setHas matches a key against the set's interval elements.
func setHas(t *testing.T, tbl *knftables.FakeTable, set string, key ...string) bool {
	for _, e := range tbl.Sets[set].Elements {
		ok := true
		for i, part := range e.Key {
			ok = ok && partHas(t, part, key[i])
		}
		if ok {
			return true
		}
	}
	return false
}

func partHas(t *testing.T, part, v string) bool {
	if a, err := netip.ParseAddr(v); err == nil {
		if p, err := netip.ParsePrefix(part); err == nil {
			return p.Contains(a)
		}
		lo, hi, found := strings.Cut(part, "-")
		if !found {
			hi = lo
		}
		return !a.Less(netip.MustParseAddr(lo)) && !netip.MustParseAddr(hi).Less(a)
	}
	if n, err := strconv.Atoi(v); err == nil {
		lo, hi, found := strings.Cut(part, "-")
		if !found {
			hi = lo
		}
		l, _ := strconv.Atoi(lo)
		h, _ := strconv.Atoi(hi)
		return n >= l && n <= h
	}
	return part == v
}

// fixedGen makes the dataplane's first generation 1, for golden files.
func fixedGen(dp *Dataplane) *Dataplane {
	dp.gen = 0
	return dp
}

// genRE finds the policy generation in the base chains' rules.
var genRE = regexp.MustCompile(`(== |or )0x[0-9a-f]{2}000000`)

// sortedDump is the fake's dump with its lines sorted (the fake keeps
// elements in the order they were added) and the policy generation left out
// (dataplanes that reached the same state by different paths differ in it).
func sortedDump(f *knftables.Fake) string {
	lines := strings.Split(genRE.ReplaceAllString(f.Dump(), "${1}GEN"), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestKnownAddresses: every pod of the node is known whether or not a policy
// selects it, with the node's own addresses in its ranges; a pod that only
// changes what is known adds or removes its element and keeps the
// generation (no connection of an unknown address was ever let through); a
// change of the node's ranges rewrites the base chains.
func TestKnownAddresses(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	dp := NewDataplane(fake, DefaultLogGroup)
	_, d := render(nil, nil)
	if _, _, err := dp.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3"}
	if got := elementsOf(fake, "known-v4"); !slices.Equal(got, want) {
		t.Errorf("known-v4 %v, want %v (node-1's pods and its own addresses, no policy)", got, want)
	}
	if got := elementsOf(fake, "known-v6"); !slices.Equal(got, []string{"fd00::1:0", "fd00::1:1", "fd00::1:2", "fd00::1:3"}) {
		t.Errorf("known-v6 %v", got)
	}

	gen := dp.gen
	pods := append(modelPods(), &Pod{Namespace: "x", Name: "new", Node: "node-1", IPs: []netip.Addr{netip.MustParseAddr("10.0.1.7")}},
		&Pod{Namespace: "x", Name: "host", Node: "node-1", HostNetwork: true, IPs: []netip.Addr{netip.MustParseAddr("10.0.1.8")}},
		&Pod{Namespace: "y", Name: "elsewhere", Node: "node-2", IPs: []netip.Addr{netip.MustParseAddr("10.0.1.9")}})
	d = Render(NewSnapshot(pods, modelNamespaces(), nil), node1Config(), nil)
	_, ops, err := dp.Apply(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if ops != 1 || dp.gen != gen {
		t.Errorf("new non-isolated pod: %d operations, generation %d → %d; want 1 element, same generation", ops, gen, dp.gen)
	}
	if got := elementsOf(fake, "known-v4"); !slices.Contains(got, "10.0.1.7") || slices.Contains(got, "10.0.1.8") || slices.Contains(got, "10.0.1.9") {
		t.Errorf("known-v4 %v: want the new local pod, not the host-network pod nor another node's", got)
	}

	cfg := node1Config()
	cfg.PodCIDRs = cfg.PodCIDRs[:1]
	d = Render(NewSnapshot(pods, modelNamespaces(), nil), cfg, nil)
	if _, _, err := dp.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fake.Dump(), "ip6 saddr fd00::1:0/112") || dp.gen == gen {
		t.Errorf("the dropped IPv6 range is still in the base chains (generation %d → %d):\n%s", gen, dp.gen, fake.Dump())
	}
	ref := knftables.NewFake(knftables.InetFamily, Table)
	if _, _, err := NewDataplane(ref, DefaultLogGroup).Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got, want := sortedDump(fake), sortedDump(ref); got != want {
		t.Errorf("partial syncs left\n%s\nwant\n%s", got, want)
	}
}

// elementsOf lists a fake set's elements, sorted.
func elementsOf(f *knftables.Fake, set string) []string {
	var out []string
	for _, e := range f.Table.Sets[set].Elements {
		out = append(out, e.Key[0])
	}
	sort.Strings(out)
	return out
}

// TestRenderUnselected: the fast path may take exactly the local pods no
// policy selects in either direction.
func TestRenderUnselected(t *testing.T) {
	pols := goldenPolicies()
	for _, c := range []struct {
		name     string
		pols     []*networkingv1.NetworkPolicy
		selected []string
	}{
		{"no policies", nil, nil},
		{"ingress of one pod", pols[1:2], []string{"a"}},
		{"egress of every pod", pols[3:4], []string{"a", "b", "c"}},
		{"all", pols, []string{"a", "b", "c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, d := render(c.pols, nil)
			want := map[netip.Addr]bool{}
			for _, p := range s.Pods {
				if p.Node == "node-1" && !slices.Contains(c.selected, p.Name) {
					for _, ip := range p.IPs {
						want[ip] = true
					}
				}
			}
			if len(want) == 0 && len(c.selected) < 3 {
				t.Fatal("the model has no pods on node-1")
			}
			if diff := cmp.Diff(want, d.Unselected); diff != "" {
				t.Errorf("unselected (-want +got):\n%s", diff)
			}
		})
	}
}
