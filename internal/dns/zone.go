package dns

import (
	"maps"
	"net/netip"
	"strings"
)

// SchemaVersion is the version of the Kubernetes DNS-Based Service Discovery
// specification served in the dns-version TXT record (§2.2).
const SchemaVersion = "1.1.0"

// zoneData is one immutable snapshot of the cluster's names. Queries read it
// without locks; a sync builds the next one from the previous (copy on write)
// and publishes it atomically.
type zoneData struct {
	// services by "<service>.<ns>" (lower case).
	services map[string]*serviceRecords
	// namespaces count the Services with names per namespace, so that
	// <ns>.svc.<zone> is an empty non-terminal exactly when one exists.
	namespaces map[string]int
	// reverse maps an address to the names it points back to.
	reverse map[netip.Addr][]ptrRef
	// serial of the SOA: the time of the sync that built the snapshot.
	serial uint32
}

type ptrRef struct {
	key  string // "<service>.<ns>"
	host string // "" for the Service name
}

func emptyZone() *zoneData {
	return &zoneData{services: map[string]*serviceRecords{}, namespaces: map[string]int{}, reverse: map[netip.Addr][]ptrRef{}}
}

// with returns a new snapshot with the given Services replaced (nil: removed).
// It copies the maps once per sync, not per change.
func (z *zoneData) with(changes map[string]*serviceRecords) *zoneData {
	n := &zoneData{services: maps.Clone(z.services), namespaces: maps.Clone(z.namespaces), reverse: maps.Clone(z.reverse)}
	for key, rec := range changes {
		ns := key[strings.IndexByte(key, '.')+1:]
		if old, ok := n.services[key]; ok {
			for _, p := range old.ptrs {
				refs := n.reverse[p.ip]
				out := make([]ptrRef, 0, len(refs))
				for _, r := range refs {
					if r.key != key {
						out = append(out, r)
					}
				}
				if len(out) == 0 {
					delete(n.reverse, p.ip)
				} else {
					n.reverse[p.ip] = out
				}
			}
			delete(n.services, key)
			if n.namespaces[ns]--; n.namespaces[ns] <= 0 {
				delete(n.namespaces, ns)
			}
		}
		if rec == nil {
			continue
		}
		n.services[key] = rec
		n.namespaces[ns]++
		seen := map[ptrRef]map[netip.Addr]bool{}
		for _, p := range rec.ptrs {
			ref := ptrRef{key: key, host: p.host}
			if seen[ref] == nil {
				seen[ref] = map[netip.Addr]bool{}
			}
			if seen[ref][p.ip] {
				continue
			}
			seen[ref][p.ip] = true
			n.reverse[p.ip] = append(n.reverse[p.ip][:len(n.reverse[p.ip]):len(n.reverse[p.ip])], ref)
		}
	}
	return n
}

// node is what one name holds, as the handler needs it.
type node struct {
	a, aaaa []netip.Addr
	srv     []srvRR
	cname   string
	txt     string
	ptr     []string
	apex    bool
}

type srvRR struct {
	port   uint16
	target string
}

// lookupResult says what the zone knows about a name.
type lookupResult int

const (
	// outside: the name is not in the zone (nor a reverse name the zone owns).
	outside lookupResult = iota
	// nxdomain: in the zone, and no such name.
	nxdomain
	// found: the name exists (it may have no data of the asked type, or be an
	// empty non-terminal).
	found
)

// podLookup answers whether ip is a pod of namespace ns (verified pod records).
type podLookup func(ns string, ip netip.Addr) bool

// lookup finds qname (lower case, FQDN) in the snapshot. origin is the zone
// (lower case FQDN).
func (z *zoneData) lookup(qname, origin string, pods PodMode, isPod podLookup) (node, lookupResult) {
	if qname == origin {
		return node{apex: true}, found
	}
	if !strings.HasSuffix(qname, "."+origin) {
		if a, ok := reverseAddr(qname); ok {
			refs := z.reverse[a]
			if len(refs) == 0 {
				return node{}, outside
			}
			var n node
			for _, r := range refs {
				n.ptr = append(n.ptr, z.name(r.key, r.host, origin))
			}
			return n, found
		}
		return node{}, outside
	}
	rest := qname[:len(qname)-len(origin)-1]
	labels := strings.Split(rest, ".")
	last := len(labels) - 1
	switch labels[last] {
	case "dns-version":
		if last == 0 {
			return node{txt: SchemaVersion}, found
		}
	case "svc":
		return z.lookupSvc(labels[:last], origin)
	case "pod":
		return lookupPod(labels[:last], pods, isPod)
	}
	return node{}, nxdomain
}

// name is the FQDN of a Service (host "") or of one of its headless hostnames.
func (z *zoneData) name(key, host, origin string) string {
	if host == "" {
		return key + ".svc." + origin
	}
	return host + "." + key + ".svc." + origin
}

// lookupSvc resolves the labels before "svc": [..., <service>, <ns>].
func (z *zoneData) lookupSvc(l []string, origin string) (node, lookupResult) {
	switch len(l) {
	case 0: // svc.<zone>
		if len(z.services) > 0 {
			return node{}, found
		}
		return node{}, nxdomain
	case 1: // <ns>.svc.<zone>
		if z.namespaces[l[0]] > 0 {
			return node{}, found
		}
		return node{}, nxdomain
	}
	n := len(l)
	key := l[n-2] + "." + l[n-1]
	rec := z.services[key]
	if rec == nil {
		return node{}, nxdomain
	}
	switch n {
	case 2: // <service>.<ns>.svc.<zone>
		if rec.external != "" {
			return node{cname: rec.external}, found
		}
		var out node
		splitFamilies(rec.ips, &out)
		return out, found
	case 3: // <hostname>.<service>... or _<proto>.<service>...
		if rec.external != "" {
			return node{}, nxdomain
		}
		if ips, ok := rec.hosts[l[0]]; ok {
			var out node
			splitFamilies(ips, &out)
			return out, found
		}
		if strings.HasPrefix(l[0], "_") && rec.hasProto(l[0]) {
			return node{}, found
		}
	case 4: // _<port>._<proto>.<service>...
		srv := rec.srv[l[0]+"."+l[1]]
		if len(srv) == 0 {
			return node{}, nxdomain
		}
		out := node{srv: make([]srvRR, 0, len(srv))}
		for _, s := range srv {
			out.srv = append(out.srv, srvRR{port: s.port, target: z.name(key, s.host, origin)})
		}
		return out, found
	}
	return node{}, nxdomain
}

func splitFamilies(ips []netip.Addr, out *node) {
	for _, a := range ips {
		if a.Is4() {
			out.a = append(out.a, a)
		} else {
			out.aaaa = append(out.aaaa, a)
		}
	}
}

// lookupPod resolves [<dashed-ip>, <ns>] before "pod" (§2.6).
func lookupPod(l []string, mode PodMode, isPod podLookup) (node, lookupResult) {
	if mode == PodsDisabled {
		return node{}, nxdomain
	}
	switch len(l) {
	case 0, 1: // pod.<zone>, <ns>.pod.<zone>: empty non-terminals
		return node{}, found
	case 2:
		a, ok := undashed(l[0])
		if !ok {
			return node{}, nxdomain
		}
		if mode == PodsVerified && (isPod == nil || !isPod(l[1], a)) {
			return node{}, nxdomain
		}
		var out node
		splitFamilies([]netip.Addr{a}, &out)
		return out, found
	}
	return node{}, nxdomain
}

// reverseAddr parses a full in-addr.arpa or ip6.arpa name (lower case FQDN).
func reverseAddr(name string) (netip.Addr, bool) {
	switch {
	case strings.HasSuffix(name, ".in-addr.arpa."):
		l := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
		if len(l) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(l[3] + "." + l[2] + "." + l[1] + "." + l[0])
		return a, err == nil
	case strings.HasSuffix(name, ".ip6.arpa."):
		l := strings.Split(strings.TrimSuffix(name, ".ip6.arpa."), ".")
		if len(l) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, s := range l {
			if len(s) != 1 {
				return netip.Addr{}, false
			}
			v := strings.IndexByte("0123456789abcdef", s[0])
			if v < 0 {
				return netip.Addr{}, false
			}
			pos := 31 - i // nibbles are written least significant first
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
