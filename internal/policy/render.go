package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"sigs.k8s.io/knftables"
)

// Table is the nftables table policy owns (family inet). Static chains hold a
// handful of rules each; what changes lives in verdict maps keyed by pod
// address and in content-addressed group chains and sets, so the cost of a
// packet does not grow with the number of policies or pods:
//
//	forward, input (filter, priority 0; after the proxy's DNAT):
//	    ct direction reply accept; ct state related accept
//	    ip saddr vmap @egress-v4 / ip6 saddr vmap @egress-v6   (pods isolated for egress)
//	    ip daddr vmap @ingress-v4 / ip6 daddr vmap @ingress-v6  (forward only: pods isolated for ingress)
//	    ip saddr <pod range> ip saddr != @known-v4 drop (and daddr in forward; and v6):
//	        an address of the node's pod ranges that is no pod the controller
//	        knows yet is judged by no policy, so it gets nothing (fail closed)
//	in-<hash>, eg-<hash>: one chain per distinct allow-list (pods with equal
//	    allow-lists share it): peer . l4proto . dport in an interval set, peer
//	    in an interval set of addresses allowed on everything → return; else drop
//	log-*: rate-limited NFLOG of verdicts for namespaces that ask for it
//
// The output hook is left alone: traffic from the node to its pods (kubelet
// probes) is always allowed.
const Table = "amime-policy"

// LogAnnotation on a Namespace switches the verdict log on for its pods:
// "deny" logs denied packets, "all" also new allowed connections.
const LogAnnotation = "policy.amime.dev/log"

// DefaultLogGroup is the NFLOG group verdicts are sent to.
const DefaultLogGroup = 9962

// Log modes of a namespace.
const (
	logOff   = ""
	logDeny  = "deny"
	logAll   = "all"
	logRate  = "20/second burst 40 packets"
	pfxAllow = "amime:allow:"
	pfxDeny  = "amime:deny:"
)

// RenderConfig says what to render for which node.
type RenderConfig struct {
	NodeName string
	LogGroup uint16
	// PodCIDRs are the node's pod ranges. Forwarded traffic from or to an
	// address in them that is not a pod the controller knows is dropped: a
	// new pod is isolated from its first packet, before the controller has
	// seen its address (when its policies are not programmed yet), never
	// open.
	PodCIDRs []netip.Prefix
}

// Desired is the table's changing contents for one node.
type Desired struct {
	// Chains are the group chains by name, with their rules.
	Chains map[string][]string
	// Sets are the group sets by name, with their type.
	Sets map[string]string
	// SetElements are the group sets' elements (each key's parts).
	SetElements map[string][][]string
	// Verdicts are the vmap elements: map name → address → verdict.
	Verdicts map[string]map[string]string
	// Known are the addresses of the node's pods (isolated or not) and the
	// node's own addresses in its pod ranges: set name → addresses.
	Known map[string]map[string]bool
	// Ranges are the node's pod ranges, written into the base chains.
	Ranges []string
	// Pods is the number of local pods isolated in some direction.
	Pods int
	// Unselected are the addresses of local pods no policy selects in either
	// direction: nothing in this table judges their packets to each other.
	Unselected map[netip.Addr]bool
}

var (
	vmaps     = []string{"ingress-v4", "ingress-v6", "egress-v4", "egress-v6"}
	knownSets = []string{"known-v4", "known-v6"}
)

// knownSet is the set of known local addresses of a's family.
func knownSet(a netip.Addr) string {
	if a.Is4() {
		return "known-v4"
	}
	return "known-v6"
}

// Render computes the node's table contents from the snapshot. logModes maps
// a namespace to its log mode (LogAnnotation).
func Render(s *Snapshot, cfg RenderConfig, logModes map[string]string) *Desired {
	d := &Desired{Chains: map[string][]string{}, Sets: map[string]string{}, SetElements: map[string][][]string{}, Verdicts: map[string]map[string]string{},
		Known: map[string]map[string]bool{}, Unselected: map[netip.Addr]bool{}}
	for _, m := range vmaps {
		d.Verdicts[m] = map[string]string{}
	}
	for _, k := range knownSets {
		d.Known[k] = map[string]bool{}
	}
	for _, r := range cfg.PodCIDRs {
		r = r.Masked()
		d.Ranges = append(d.Ranges, r.String())
		// The network address (the VXLAN device's) and the gateway are the
		// node's own.
		d.Known[knownSet(r.Addr())][r.Addr().String()] = true
		if gw := r.Addr().Next(); r.Contains(gw) {
			d.Known[knownSet(gw)][gw.String()] = true
		}
	}
	for _, pod := range s.Pods {
		if pod.Node != cfg.NodeName || pod.HostNetwork {
			continue
		}
		for _, ip := range pod.IPs {
			d.Known[knownSet(ip)][ip.String()] = true
		}
		in, inSig := s.compileDir(pod, true)
		eg, egSig := s.compileDir(pod, false)
		if in == nil && eg == nil {
			for _, ip := range pod.IPs {
				d.Unselected[ip] = true
			}
			continue
		}
		d.Pods++
		mode := logModes[pod.Namespace]
		for _, dir := range []struct {
			list    *AllowList
			sig     string
			ingress bool
		}{{in, inSig, true}, {eg, egSig, false}} {
			if dir.list == nil {
				continue
			}
			g := s.group(dir.list, dir.sig, dir.ingress, mode)
			if _, ok := d.Chains[g.name]; !ok {
				d.Chains[g.name] = g.rules
				for name, typ := range g.sets {
					d.Sets[name] = typ
					d.SetElements[name] = g.elements[name]
				}
			}
			m := "egress-v"
			if dir.ingress {
				m = "ingress-v"
			}
			for _, ip := range pod.IPs {
				f := "4"
				if ip.Is6() {
					f = "6"
				}
				d.Verdicts[m+f][ip.String()] = "jump " + g.name
			}
		}
	}
	return d
}

// group is the chain and sets of one distinct allow-list, named after their
// contents.
type group struct {
	name     string
	rules    []string
	sets     map[string]string     // name → type
	elements map[string][][]string // name → elements
}

// group renders an allow-list, once per signature and log mode.
func (s *Snapshot) group(l *AllowList, sig string, ingress bool, mode string) *group {
	ck := mode + "|" + sig
	if g := s.st.getGroup(ck); g != nil {
		return g
	}
	prefix := "eg"
	if ingress {
		prefix = "in"
	}
	g := &group{name: hashName(prefix, fmt.Sprintf("%t|%s|%s", ingress, mode, l.Key())), sets: map[string]string{}, elements: map[string][][]string{}}
	g.render(l, ingress, mode)
	s.st.putGroup(ck, g)
	return g
}

func (g *group) render(l *AllowList, ingress bool, mode string) {
	name := g.name
	peer, dir := "daddr", "egress"
	if ingress {
		peer, dir = "saddr", "ingress"
	}
	allow, deny := "return", "drop"
	if mode == logAll {
		allow = "goto log-allow-" + dir
	}
	if mode == logAll || mode == logDeny {
		deny = "goto log-deny-" + dir
	}
	var rules []string
	for _, f := range []string{"4", "6"} {
		kw := "ip"
		if f == "6" {
			kw = "ip6"
		}
		var ports, alls [][]string
		for _, e := range l.Ports {
			if e.Addr.From.Is4() == (f == "4") {
				ports = append(ports, []string{e.Addr.String(), strings.ToLower(string(e.Proto)), portString(e.Lo, e.Hi)})
			}
		}
		for _, r := range l.All {
			if r.From.Is4() == (f == "4") {
				alls = append(alls, []string{r.String()})
			}
		}
		if len(ports) > 0 {
			set := name + "-p" + f
			g.sets[set] = addrType(f) + " . inet_proto . inet_service"
			g.elements[set] = ports
			rules = append(rules, fmt.Sprintf("%s %s . meta l4proto . th dport @%s %s", kw, peer, set, allow))
		}
		if len(alls) > 0 {
			set := name + "-a" + f
			g.sets[set] = addrType(f)
			g.elements[set] = alls
			rules = append(rules, fmt.Sprintf("%s %s @%s %s", kw, peer, set, allow))
		}
	}
	g.rules = append(rules, deny)
}

func addrType(f string) string {
	if f == "6" {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// staticObjects adds the table, its maps and its static chains with their
// rules; the base chains are flushed and rewritten, the maps left alone.
func staticObjects(tx *knftables.Transaction, logGroup uint16, gen uint8, ranges []string) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("amime: NetworkPolicy")})
	for _, m := range vmaps {
		typ := "ipv4_addr"
		if strings.HasSuffix(m, "v6") {
			typ = "ipv6_addr"
		}
		tx.Add(&knftables.Map{Name: m, Type: typ + " : verdict"})
	}
	for _, k := range knownSets {
		typ := "ipv4_addr"
		if strings.HasSuffix(k, "v6") {
			typ = "ipv6_addr"
		}
		tx.Add(&knftables.Set{Name: k, Type: typ})
	}
	for _, c := range []struct{ name, hook string }{{"forward", "forward"}, {"input", "input"}} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(knftables.BaseChainHook(c.hook)), Priority: knftables.PtrTo(knftables.FilterPriority)})
		tx.Flush(&knftables.Chain{Name: c.name})
	}
	for _, c := range staticChains() {
		tx.Add(&knftables.Chain{Name: c})
		tx.Flush(&knftables.Chain{Name: c})
	}
	for _, r := range staticRules(logGroup, gen, ranges) {
		tx.Add(r)
	}
}

// genMask is the part of the conntrack mark that holds the policy generation
// under which a connection was last judged allowed (the top byte; the rest of
// the mark is left to others).
const genMask = 0xff000000

// baseRules are the rules of the two base chains for generation gen.
//
// Replies and ICMP errors of a connection whose first packet was allowed
// pass. Original-direction packets of a connection already judged allowed
// under the current generation pass at the cost of one comparison; every sync
// that changes the table moves to a new generation, so the next packet of
// every connection is judged again: a new policy that denies a connection
// cuts it (the and upstream e2e's expectation) and deleting one leaves
// it working. A packet that passes the vmaps records the generation.
//
// After the vmaps, an address of the node's pod ranges that is not a known
// pod is dropped: until the controller has seen a new pod's address, it knows
// neither which policies select it nor whether any does.
func baseRules(gen uint8, ranges []string) []*knftables.Rule {
	g := uint32(gen) << 24
	var out []*knftables.Rule
	add := func(chain, rule string, comment ...string) {
		r := &knftables.Rule{Chain: chain, Rule: rule}
		if len(comment) > 0 {
			r.Comment = &comment[0]
		}
		out = append(out, r)
	}
	for _, c := range []string{"forward", "input"} {
		add(c, "ct direction reply accept")
		add(c, "ct state related accept")
		add(c, fmt.Sprintf("ct mark and 0x%08x == 0x%08x accept", uint32(genMask), g))
		add(c, "ip saddr vmap @egress-v4")
		add(c, "ip6 saddr vmap @egress-v6")
		// Input is traffic to the node's own addresses: only the egress of the
		// sending pod applies.
		if c == "forward" {
			add(c, "ip daddr vmap @ingress-v4")
			add(c, "ip6 daddr vmap @ingress-v6")
		}
		for _, r := range ranges {
			kw, set := "ip", "known-v4"
			if strings.Contains(r, ":") {
				kw, set = "ip6", "known-v6"
			}
			dirs := []string{"saddr", "daddr"}
			if c == "input" {
				dirs = dirs[:1]
			}
			for _, dir := range dirs {
				add(c, fmt.Sprintf("%s %s %s %s %s != @%s drop", kw, dir, r, kw, dir, set), "not a known pod of this node")
			}
		}
		add(c, fmt.Sprintf("ct mark set ct mark and 0x%08x or 0x%08x", uint32(^uint32(genMask)), g))
	}
	return out
}

func staticChains() []string {
	return []string{"log-allow-ingress", "log-allow-egress", "log-deny-ingress", "log-deny-egress"}
}

func staticRules(logGroup uint16, gen uint8, ranges []string) []*knftables.Rule {
	out := baseRules(gen, ranges)
	for _, dir := range []string{"ingress", "egress"} {
		out = append(out,
			&knftables.Rule{Chain: "log-allow-" + dir, Rule: fmt.Sprintf(`ct state new limit rate %s log prefix "%s%s " group %d`, logRate, pfxAllow, dir, logGroup)},
			&knftables.Rule{Chain: "log-deny-" + dir, Rule: fmt.Sprintf(`limit rate %s log prefix "%s%s " group %d`, logRate, pfxDeny, dir, logGroup)},
			&knftables.Rule{Chain: "log-deny-" + dir, Rule: "drop"})
	}
	return out
}

// groupChain tells group chains and sets from the static ones.
func isGroup(name string) bool {
	return strings.HasPrefix(name, "in-") || strings.HasPrefix(name, "eg-")
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
