package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/cidr"
)

// Table is the nftables table the proxy owns. Static chains hold a handful of
// rules each; everything that changes with Services lives in maps and sets, and
// in one small chain per Service port reached through a verdict map, so the cost
// of a packet does not grow with the number of Services.
//
//	nat-prerouting, nat-output (dstnat)  → services
//	services: ip daddr . l4proto . dport  vmap @service-ips-v4/v6   (ClusterIPs, external and LB IPs)
//	          fib daddr type local . l4proto . dport vmap @service-nodeports-v4/v6
//	svc-<hash>: masquerade mark for off-cluster sources, DNAT to an endpoint
//	            chosen by numgen (one rule per endpoint of this Service), or
//	            per-endpoint chains when the Service has ClientIP affinity
//	ext-<hash>: external traffic (NodePort, external/LB IPs): policy Cluster
//	            masquerades and uses all endpoints, policy Local uses only this
//	            node's and keeps the client address
//	filter-input/forward/output (before dstnat) → endpoints-check: new
//	            connections to a Service port without endpoints are rejected
//	nat-postrouting: masquerade marked packets and hairpin (a pod reaching
//	            itself through its Service)
const Table = "amime-proxy"

// markMasq is the packet mark that asks nat-postrouting to masquerade.
const markMasq = "0x4000"

// chainName returns a stable, short chain name for a Service port.
func chainName(prefix, key string) string {
	h := sha256.Sum256([]byte(key))
	return prefix + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(h[:])[:16])
}

func fam(v6 bool) string {
	if v6 {
		return "v6"
	}
	return "v4"
}

func ipKw(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

func l4(p string) string { return strings.ToLower(p) }

// Config is what the program needs beyond the Service ports.
type Config struct {
	NodeName string
	Zone     string
	// ClusterCIDRs: traffic to a ClusterIP from outside them is masqueraded.
	ClusterCIDRs []netip.Prefix
}

// staticObjects are the chains, maps and sets that do not depend on Services.
func staticObjects(tx *knftables.Transaction, cfg Config) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("amime: Service proxy")})
	for _, v6 := range []bool{false, true} {
		addrType := "ipv4_addr"
		if v6 {
			addrType = "ipv6_addr"
		}
		f := fam(v6)
		tx.Add(&knftables.Map{Name: "service-ips-" + f, Type: addrType + " . inet_proto . inet_service : verdict",
			Comment: knftables.PtrTo("ClusterIPs, external IPs and load-balancer IPs to their Service chain")})
		tx.Add(&knftables.Map{Name: "no-endpoint-services-" + f, Type: addrType + " . inet_proto . inet_service : verdict",
			Comment: knftables.PtrTo("Service IPs and ports without usable endpoints")})
		tx.Add(&knftables.Set{Name: "cluster-cidrs-" + f, Type: addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		tx.Add(&knftables.Set{Name: "hairpin-" + f, Type: addrType + " . " + addrType,
			Comment: knftables.PtrTo("endpoint . endpoint: a pod that reached itself through its Service")})
		// NodePorts per family too: the two halves of a dual-stack Service
		// have one key (protocol . port) but different chains (the kernel
		// refuses a second value for a key, and an ip DNAT rule does nothing
		// to an IPv6 packet).
		tx.Add(&knftables.Map{Name: "service-nodeports-" + f, Type: "inet_proto . inet_service : verdict"})
		for _, proto := range endpointProtocols {
			for _, name := range endpointMaps(v6, proto) {
				tx.Add(&knftables.Map{Name: name, TypeOf: "numgen random mod 1 : " + ipKw(v6) + " daddr . " + proto + " dport",
					Comment: knftables.PtrTo("slot : endpoint; a Service chain's numgen picks the slot")})
			}
		}
		tx.Add(&knftables.Map{Name: "no-endpoint-nodeports-" + f, Type: "inet_proto . inet_service : verdict"})
	}

	for _, c := range []struct {
		name, typ, hook string
		prio            knftables.BaseChainPriority
	}{
		{"nat-prerouting", "nat", "prerouting", knftables.DNATPriority},
		{"nat-output", "nat", "output", knftables.DNATPriority},
		{"nat-postrouting", "nat", "postrouting", knftables.SNATPriority},
		{"filter-input", "filter", "input", "-110"},
		{"filter-forward", "filter", "forward", "-110"},
		{"filter-output", "filter", "output", "-110"},
	} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.BaseChainType(c.typ)),
			Hook: knftables.PtrTo(knftables.BaseChainHook(c.hook)), Priority: knftables.PtrTo(c.prio)})
		tx.Flush(&knftables.Chain{Name: c.name})
	}
	for _, c := range []string{"services", "endpoints-check", "reject-chain", "drop-chain"} {
		tx.Add(&knftables.Chain{Name: c})
		tx.Flush(&knftables.Chain{Name: c})
	}
	rule := func(chain string, parts ...string) {
		tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(parts)})
	}
	rule("nat-prerouting", "jump services")
	rule("nat-output", "jump services")
	rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips-v4")
	rule("services", "ip6 daddr . meta l4proto . th dport vmap @service-ips-v6")
	rule("services", "meta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4")
	rule("services", "meta nfproto ipv6 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v6")
	for _, c := range []string{"filter-input", "filter-forward", "filter-output"} {
		rule(c, "ct state new jump endpoints-check")
	}
	rule("endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services-v4")
	rule("endpoints-check", "ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services-v6")
	rule("endpoints-check", "meta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports-v4")
	rule("endpoints-check", "meta nfproto ipv6 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports-v6")
	// A TCP reset makes connect() fail at once; other protocols get ICMP port
	// unreachable.
	rule("reject-chain", "meta l4proto tcp reject with tcp reset")
	rule("reject-chain", "reject")
	rule("drop-chain", "drop")
	rule("nat-postrouting", "ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade")
	rule("nat-postrouting", "ct status dnat ip6 saddr . ip6 daddr @hairpin-v6 masquerade")
	rule("nat-postrouting", "meta mark & "+markMasq+" == "+markMasq, "meta mark set meta mark ^ "+markMasq, "masquerade fully-random")
	for _, v6 := range []bool{false, true} {
		tx.Flush(&knftables.Set{Name: "cluster-cidrs-" + fam(v6)})
	}
	for _, p := range cidr.Normalize(cfg.ClusterCIDRs) {
		tx.Add(&knftables.Element{Set: "cluster-cidrs-" + fam(p.Addr().Is6()), Key: []string{p.String()}})
	}
}

// programmed is what the proxy wrote for one Service port, so that a later sync
// changes only what differs.
type programmed struct {
	chains   map[string][]rule // chain name → rules
	elements []element         // map and set elements
	sets     []string          // affinity sets
	// Computed once per render, so that a sync that reuses a cached render
	// does no string building for it:
	claims  []string // the set and key of elements[i]
	portKey string   // the Service port's Key()
}

// index fills the claims the desired table needs.
func (p *programmed) index(portKey string) {
	p.portKey = portKey
	p.claims = make([]string, len(p.elements))
	for i, e := range p.elements {
		p.claims[i] = e.claim()
	}
}

type element struct {
	set   string
	key   []string
	value []string
}

// equal reports whether two elements are the same key and value.
func (e element) equal(o element) bool {
	return e.set == o.set && slices.Equal(e.key, o.key) && slices.Equal(e.value, o.value)
}

// splitSet splits an affinity set's "name|type|timeout".
func splitSet(s string) (name, spec string) {
	name, spec, _ = strings.Cut(s, "|")
	return name, spec
}

// claim is the map or set and key an element occupies: one value per claim.
func (e element) claim() string { return e.set + "|" + strings.Join(e.key, " . ") }

func (e element) id() string {
	return e.set + "|" + strings.Join(e.key, " . ") + "|" + strings.Join(e.value, " ")
}

// renderPort computes the chains and elements of one Service port; slots gives
// each chain that spreads over endpoints its place in the endpoint maps.
func renderPort(sp *ServicePort, sel Selection, cfg Config, slots *endpointSlots) programmed {
	key := sp.Key()
	v6 := sp.IPv6
	f := fam(v6)
	proto := l4(string(sp.Protocol))
	port := fmt.Sprint(sp.Port)
	p := programmed{chains: map[string][]rule{}}
	svcChain := chainName("svc", key)
	extChain := chainName("ext", key)
	hasExternal := sp.NodePort != 0 || len(sp.ExternalIPs) > 0

	// Internal path: the ClusterIPs.
	for _, ip := range sp.ClusterIPs {
		k := []string{ip.String(), proto, port}
		if len(sel.Internal) == 0 {
			p.elements = append(p.elements, element{set: "no-endpoint-services-" + f, key: k, value: []string{noEndpointVerdict(sp, false)}})
		} else {
			p.elements = append(p.elements, element{set: "service-ips-" + f, key: k, value: []string{"goto " + svcChain}})
		}
	}
	if len(sel.Internal) > 0 {
		rules := []rule{{v6: v6, saddrSet: "cluster-cidrs-" + f, notInSet: true, markMasq: true}}
		rules = append(rules, dnatRules(&p, sp, svcChain, sel.Internal, slots)...)
		p.chains[svcChain] = rules
	}
	// External path: NodePort, external IPs, load-balancer IPs.
	// With policy Local, traffic from this node's pods and from the node itself
	// is not external: as kube-proxy does, it short-circuits to the cluster-wide
	// chain (and is masqueraded there when it comes from the node), so a pod
	// reaching a load-balancer IP is served even when no endpoint is local.
	shortCircuit := sp.ExternalLocal && len(sel.Internal) > 0
	if hasExternal {
		for _, ip := range sp.ExternalIPs {
			k := []string{ip.String(), proto, port}
			if len(sel.External) == 0 && !shortCircuit {
				p.elements = append(p.elements, element{set: "no-endpoint-services-" + f, key: k, value: []string{noEndpointVerdict(sp, true)}})
			} else {
				p.elements = append(p.elements, element{set: "service-ips-" + f, key: k, value: []string{"goto " + extChain}})
			}
		}
		if sp.NodePort != 0 {
			k := []string{proto, fmt.Sprint(sp.NodePort)}
			if len(sel.External) == 0 && !shortCircuit {
				p.elements = append(p.elements, element{set: "no-endpoint-nodeports-" + f, key: k, value: []string{noEndpointVerdict(sp, true)}})
			} else {
				p.elements = append(p.elements, element{set: "service-nodeports-" + f, key: k, value: []string{"goto " + extChain}})
			}
		}
		var rules []rule
		if shortCircuit {
			rules = append(rules,
				rule{v6: v6, saddrSet: "cluster-cidrs-" + f, gotoChain: svcChain},
				rule{v6: v6, fibLocal: true, gotoChain: svcChain})
		}
		switch {
		case len(sel.External) > 0:
			if !sp.ExternalLocal {
				// Policy Cluster: the endpoint may be on another node, so the reply
				// must come back through this one.
				rules = append(rules, rule{v6: v6, markMasq: true})
			}
			rules = append(rules, dnatRules(&p, sp, extChain, sel.External, slots)...)
		case shortCircuit:
			// No local endpoint: clients from outside are dropped (the load
			// balancer's health check steers them to other nodes).
			rules = append(rules, rule{v6: v6, gotoChain: "drop-chain"})
		}
		if len(rules) > 0 {
			p.chains[extChain] = rules
		}
	}
	// Hairpin: a pod that reaches its own Service lands on itself; masquerade
	// so that its reply goes back through the node. That happens only on the
	// endpoint's own node, so only local endpoints are listed.
	for _, e := range sp.Endpoints {
		if e.NodeName == cfg.NodeName {
			p.elements = append(p.elements, element{set: "hairpin-" + f, key: []string{e.IP.String(), e.IP.String()}})
		}
	}
	p.index(key)
	return p
}

// noEndpointVerdict: a Service port without any endpoint refuses connections at
// once; one whose endpoints all live on other nodes while its traffic policy is
// Local drops them instead, as kube-proxy does (for external traffic, the load
// balancer's health check steers clients to nodes that have endpoints).
func noEndpointVerdict(sp *ServicePort, external bool) string {
	local := sp.InternalLocal
	if external {
		local = sp.ExternalLocal
	}
	if local && len(sp.Endpoints) > 0 {
		return "goto drop-chain"
	}
	return "goto reject-chain"
}

// dnatRules spreads new connections over the endpoints. The chain's one rule
// picks a slot with numgen (`numgen random mod N offset K`) and looks the slot
// up in an endpoint map (slot → address . port), so replacing an endpoint
// changes map elements only. That matters at scale: the kernel re-validates
// every chain reachable from the base chains whenever a rule or a verdict-map
// element changes (about 40 ms at 10,000 Services), but not when the elements
// of a plain map change (under a millisecond). The slots of all chains are
// spread over endpointShards maps per family: the kernel checks every element
// of a map against every rule that looks it up, so one shared map would make
// loading quadratic, and a map per Service costs a set per Service.
//
// With ClientIP affinity each endpoint gets a chain that records the client in
// a timed set, and known clients go straight to their endpoint.
func dnatRules(p *programmed, sp *ServicePort, chain string, eps []Endpoint, slots *endpointSlots) []rule {
	proto := l4(string(sp.Protocol))
	dnat := func(e Endpoint) rule {
		return rule{v6: sp.IPv6, proto: proto, dest: netip.AddrPortFrom(e.IP, uint16(e.Port))}
	}
	pick := func(i int) int {
		if i == len(eps)-1 {
			return 0
		}
		return len(eps) - i
	}
	var rules []rule
	if sp.AffinityTimeout > 0 {
		var spread []rule
		for i, e := range eps {
			// Named after the endpoint, not its position, so that clients keep
			// their endpoint when others come and go.
			epChain := chainName(chain+"-ep", e.String())
			set := chainName(chain+"-aff", e.String())
			p.sets = append(p.sets, fmt.Sprintf("%s|%s|%d", set, addrType(sp.IPv6), sp.AffinityTimeout))
			rules = append(rules, rule{v6: sp.IPv6, saddrSet: set, gotoChain: epChain})
			spread = append(spread, rule{v6: sp.IPv6, pick: pick(i), gotoChain: epChain})
			p.chains[epChain] = []rule{{v6: sp.IPv6, update: set}, dnat(e)}
		}
		return append(rules, spread...)
	}
	if len(eps) > maxSlots {
		eps = eps[:maxSlots] // 65,536 endpoints on one Service port: the rest wait
	}
	m, offset := slots.get(chain, endpointMaps(sp.IPv6, proto))
	for i, e := range eps {
		p.elements = append(p.elements, element{set: m, key: []string{fmt.Sprint(offset + uint32(i))},
			value: []string{e.IP.String(), fmt.Sprint(e.Port)}})
	}
	return []rule{{v6: sp.IPv6, proto: proto, epMap: m, epMod: len(eps), epOffset: offset}}
}

// endpointShards is the number of endpoint maps per family and protocol. The
// maps are per protocol because nft (1.0.6) refuses a rule with `meta l4proto
// tcp` against a map whose value is typed `th dport` once the map comes from
// the kernel rather than the same transaction.
const endpointShards = 32

// maxSlots is the number of endpoints a chain can spread over: a chain's slots
// are offset + 0 … offset + maxSlots-1.
const maxSlots = 1 << 16

var endpointProtocols = []string{"tcp", "udp", "sctp"}

var endpointMapNames = func() map[string][]string {
	out := map[string][]string{}
	for _, f := range []string{"v4", "v6"} {
		for _, proto := range endpointProtocols {
			for i := range endpointShards {
				out[f+"-"+proto] = append(out[f+"-"+proto], fmt.Sprintf("endpoints-%s-%s-%02d", f, proto, i))
			}
		}
	}
	return out
}()

// endpointMaps lists the endpoint maps of a family and protocol.
func endpointMaps(v6 bool, proto string) []string { return endpointMapNames[fam(v6)+"-"+proto] }

// endpointSlots gives each chain that spreads over endpoints a map (by a hash
// of its name) and a range of slots in it (offset = an id << 16, the id the
// smallest free one of that map), stable for as long as the chain exists, so
// that an endpoint change rewrites map elements and not the chain's rule.
type endpointSlots struct {
	byChain map[string]slot
	next    map[string]uint32 // per map: ids below are in use or free
	free    map[string][]uint32
}

type slot struct {
	m      string
	offset uint32
}

func newEndpointSlots() *endpointSlots {
	return &endpointSlots{byChain: map[string]slot{}, next: map[string]uint32{}, free: map[string][]uint32{}}
}

func (s *endpointSlots) get(chain string, maps []string) (m string, offset uint32) {
	if sl, ok := s.byChain[chain]; ok {
		return sl.m, sl.offset
	}
	h := fnv.New32a()
	h.Write([]byte(chain))
	m = maps[h.Sum32()%uint32(len(maps))]
	var id uint32
	if n := len(s.free[m]); n > 0 {
		id = s.free[m][n-1]
		s.free[m] = s.free[m][:n-1]
	} else {
		// 65,536 ids per map: two million chains per family and protocol.
		id = s.next[m]
		s.next[m]++
	}
	s.byChain[chain] = slot{m, id << 16}
	return m, id << 16
}

// release frees the slots of a chain that is gone.
func (s *endpointSlots) release(chain string) {
	if sl, ok := s.byChain[chain]; ok {
		delete(s.byChain, chain)
		s.free[sl.m] = append(s.free[sl.m], sl.offset>>16)
	}
}

func addrType(v6 bool) string {
	if v6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}
