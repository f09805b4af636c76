package proxy

import (
	"net/netip"
	"strings"
	"testing"
)

// e builds an Endpoint: flags is a string of r (ready), s (serving), t
// (terminating); node, zone and the hinted zones follow.
func e(ip, flags, node, zone string, hints ...string) Endpoint {
	return Endpoint{
		IP: netip.MustParseAddr(ip), Port: 80,
		Ready: strings.Contains(flags, "r"), Serving: strings.Contains(flags, "s"), Terminating: strings.Contains(flags, "t"),
		NodeName: node, Zone: zone, ForZones: hints,
	}
}

func ips(eps []Endpoint) string {
	var s []string
	for _, e := range eps {
		s = append(s, e.IP.String())
	}
	return strings.Join(s, " ")
}

func TestSelect(t *testing.T) {
	const node, zone = "node-a", "zone-a"
	for _, tc := range []struct {
		name string
		sp   ServicePort
		// Expected addresses, space-separated, for each list of the Selection.
		cluster, local, internal, external string
	}{
		{
			name: "ready-only",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "rs", "node-a", "zone-a"),
				e("10.0.0.2", "", "node-a", "zone-a"),   // neither ready nor serving
				e("10.0.0.3", "st", "node-b", "zone-b"), // terminating, ignored while any is ready
				e("10.0.0.4", "rs", "node-b", "zone-b"),
				e("10.0.0.5", "s", "node-b", "zone-b"), // serving, not ready, not terminating
			}},
			cluster: "10.0.0.1 10.0.0.4", local: "10.0.0.1", internal: "10.0.0.1 10.0.0.4", external: "10.0.0.1 10.0.0.4",
		},
		{
			name: "terminating-fallback",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "st", "node-a", ""),
				e("10.0.0.2", "t", "node-b", ""), // terminating, not serving: never
				e("10.0.0.3", "st", "node-b", ""),
				e("10.0.0.4", "", "node-b", ""),
			}},
			cluster: "10.0.0.1 10.0.0.3", local: "10.0.0.1", internal: "10.0.0.1 10.0.0.3", external: "10.0.0.1 10.0.0.3",
		},
		{
			name: "only-not-serving-terminating",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.2", "t", "node-a", ""),
				e("10.0.0.3", "", "node-a", ""),
			}},
		},
		{
			name: "no-endpoints",
			sp:   ServicePort{},
		},
		{
			name: "hints-all-hinted",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-b", "zone-a"), // hinted for us though in zone-b
				e("10.0.0.2", "r", "node-a", "zone-a", "zone-c"),
				e("10.0.0.3", "r", "node-c", "zone-c", "zone-a", "zone-c"),
			}},
			cluster: "10.0.0.1 10.0.0.3", local: "10.0.0.2", internal: "10.0.0.1 10.0.0.3", external: "10.0.0.1 10.0.0.3",
		},
		{
			name: "hints-incomplete",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-b", "zone-b"),
				e("10.0.0.2", "r", "node-a", "zone-a"),
				e("10.0.0.3", "r", "node-c", "zone-c", "zone-a"),
			}},
			cluster: "10.0.0.1 10.0.0.2 10.0.0.3", local: "10.0.0.2", internal: "10.0.0.1 10.0.0.2 10.0.0.3", external: "10.0.0.1 10.0.0.2 10.0.0.3",
		},
		{
			name: "hints-none-for-zone",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-b", "zone-b"),
				e("10.0.0.3", "r", "node-c", "zone-c", "zone-c"),
			}},
			cluster: "10.0.0.1 10.0.0.3", internal: "10.0.0.1 10.0.0.3", external: "10.0.0.1 10.0.0.3",
		},
		{
			name: "hints-ignore-not-ready",
			// Hints of endpoints that are not used do not count: the ready
			// ones are all hinted.
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-b", "zone-a"),
				e("10.0.0.2", "r", "node-c", "zone-c", "zone-c"),
				e("10.0.0.3", "", "node-c", "zone-c"),
			}},
			cluster: "10.0.0.1", internal: "10.0.0.1", external: "10.0.0.1",
		},
		{
			name: "prefer-close-no-hints",
			sp: ServicePort{PreferClose: true, Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-a"),
				e("10.0.0.2", "r", "node-c", "zone-b"),
				e("10.0.0.3", "r", "node-a", "zone-a"),
			}},
			cluster: "10.0.0.1 10.0.0.3", local: "10.0.0.3", internal: "10.0.0.1 10.0.0.3", external: "10.0.0.1 10.0.0.3",
		},
		{
			name: "prefer-close-none-in-zone",
			sp: ServicePort{PreferClose: true, Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-b"),
				e("10.0.0.2", "r", "node-c", "zone-c"),
			}},
			cluster: "10.0.0.1 10.0.0.2", internal: "10.0.0.1 10.0.0.2", external: "10.0.0.1 10.0.0.2",
		},
		{
			name: "no-prefer-close-zones-ignored",
			sp: ServicePort{Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-b", "zone-a"),
				e("10.0.0.2", "r", "node-c", "zone-b"),
			}},
			cluster: "10.0.0.1 10.0.0.2", internal: "10.0.0.1 10.0.0.2", external: "10.0.0.1 10.0.0.2",
		},
		{
			name: "internal-local",
			sp: ServicePort{InternalLocal: true, Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-a", ""),
				e("10.0.0.2", "r", "node-b", ""),
				e("10.0.0.3", "r", "node-a", ""),
			}},
			cluster: "10.0.0.1 10.0.0.2 10.0.0.3", local: "10.0.0.1 10.0.0.3", internal: "10.0.0.1 10.0.0.3", external: "10.0.0.1 10.0.0.2 10.0.0.3",
		},
		{
			name: "external-local",
			sp: ServicePort{ExternalLocal: true, NodePort: 30000, Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-a", ""),
				e("10.0.0.2", "r", "node-b", ""),
			}},
			cluster: "10.0.0.1 10.0.0.2", local: "10.0.0.1", internal: "10.0.0.1 10.0.0.2", external: "10.0.0.1",
		},
		{
			name: "local-terminating-fallback",
			// Ready endpoints elsewhere, only a terminating one here: the
			// local policy falls back among the local endpoints.
			sp: ServicePort{InternalLocal: true, ExternalLocal: true, Endpoints: []Endpoint{
				e("10.0.0.1", "st", "node-a", ""),
				e("10.0.0.2", "rs", "node-b", ""),
				e("10.0.0.3", "t", "node-a", ""),
			}},
			cluster: "10.0.0.2", local: "10.0.0.1", internal: "10.0.0.1", external: "10.0.0.1",
		},
		{
			name: "local-none",
			sp: ServicePort{InternalLocal: true, ExternalLocal: true, Endpoints: []Endpoint{
				e("10.0.0.2", "r", "node-b", ""),
				e("10.0.0.3", "r", "node-c", ""),
			}},
			cluster: "10.0.0.2 10.0.0.3",
		},
		{
			name: "local-ignores-topology",
			sp: ServicePort{InternalLocal: true, Endpoints: []Endpoint{
				e("10.0.0.1", "r", "node-a", "zone-a", "zone-b"),
				e("10.0.0.2", "r", "node-b", "zone-b", "zone-a"),
			}},
			cluster: "10.0.0.2", local: "10.0.0.1", internal: "10.0.0.1", external: "10.0.0.2",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Select(&tc.sp, node, zone)
			for _, c := range []struct {
				what string
				got  []Endpoint
				want string
			}{{"Cluster", s.Cluster, tc.cluster}, {"Local", s.Local, tc.local}, {"Internal", s.Internal, tc.internal}, {"External", s.External, tc.external}} {
				if got := ips(c.got); got != c.want {
					t.Errorf("%s = [%s], want [%s]", c.what, got, c.want)
				}
			}
		})
	}
}

// Without a zone for the node, topology is ignored.
func TestSelectNoZone(t *testing.T) {
	sp := ServicePort{PreferClose: true, Endpoints: []Endpoint{
		e("10.0.0.1", "r", "node-b", "zone-a", "zone-a"),
		e("10.0.0.2", "r", "node-c", "zone-b", "zone-b"),
	}}
	if got := ips(Select(&sp, "node-a", "").Cluster); got != "10.0.0.1 10.0.0.2" {
		t.Errorf("Cluster = %s", got)
	}
}
