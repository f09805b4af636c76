package dns

import (
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// serviceRecords are the names one Service contributes to the zone, relative to
// <service>.<ns>.svc.<zone> (spec 1.1.0 §2.3–2.5). They hold data, not RRs: the
// owner name, TTL and case come from the query.
type serviceRecords struct {
	// external is the ExternalName target (FQDN, lower case); when set the
	// Service has no other records.
	external string
	// ips are the ClusterIPs, or for a headless Service its ready endpoints.
	ips []netip.Addr
	// hosts are the headless endpoints by hostname (the endpoint's hostname, or
	// the dashed address when it has none): <hostname>.<service>...
	hosts map[string][]netip.Addr
	// srv by "_<port>._<proto>", lower case.
	srv map[string][]srvData
	// ptrs are the reverse names this Service owns: ClusterIPs → the Service,
	// headless endpoints → their hostname name.
	ptrs []ptrData
}

type srvData struct {
	port uint16
	// target relative to the Service name: "" for the Service itself, else a
	// hostname of hosts.
	host string
}

type ptrData struct {
	ip   netip.Addr
	host string // "" for the Service name
}

// exists says whether the Service's own name exists (spec §2.4.1: a headless
// Service with no ready endpoint is NXDOMAIN).
func (r *serviceRecords) exists() bool { return r.external != "" || len(r.ips) > 0 }

// hasProto says whether "_<proto>.<service>..." is an empty non-terminal.
func (r *serviceRecords) hasProto(label string) bool {
	for k := range r.srv {
		if strings.HasSuffix(k, "."+label) {
			return true
		}
	}
	return false
}

// buildService computes a Service's records from it and its EndpointSlices.
// It returns nil when the Service contributes no name.
func buildService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) *serviceRecords {
	r := &serviceRecords{srv: map[string][]srvData{}}
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		if svc.Spec.ExternalName == "" {
			return nil
		}
		r.external = strings.ToLower(strings.TrimSuffix(svc.Spec.ExternalName, ".")) + "."
		return r
	case isHeadless(svc):
		buildHeadless(r, svc, slices)
	default:
		for _, s := range clusterIPs(svc) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			a = a.Unmap()
			r.ips = append(r.ips, a)
			r.ptrs = append(r.ptrs, ptrData{ip: a})
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == "" {
				continue // §2.3.2: unnamed ports have no SRV record
			}
			k := srvKey(p.Name, p.Protocol)
			r.srv[k] = append(r.srv[k], srvData{port: uint16(p.Port)})
		}
	}
	if !r.exists() {
		return nil
	}
	return r
}

func isHeadless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone
}

func clusterIPs(svc *corev1.Service) []string {
	if len(svc.Spec.ClusterIPs) > 0 {
		return svc.Spec.ClusterIPs
	}
	if svc.Spec.ClusterIP != "" {
		return []string{svc.Spec.ClusterIP}
	}
	return nil
}

func srvKey(port string, proto corev1.Protocol) string {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return "_" + strings.ToLower(port) + "._" + strings.ToLower(string(proto))
}

// buildHeadless adds one record per ready endpoint (§2.4): A/AAAA on the
// Service name and on the endpoint's hostname, SRV per named port and endpoint,
// PTR per endpoint address. "Ready" is the slice's ready condition (nil counts
// as ready, as the API says), or any endpoint with publishNotReadyAddresses.
func buildHeadless(r *serviceRecords, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) {
	r.hosts = map[string][]netip.Addr{}
	seen := map[netip.Addr]bool{}
	seenHost := map[string]map[netip.Addr]bool{}
	type srvSeen struct {
		key, host string
		port      uint16
	}
	seenSRV := map[srvSeen]bool{}
	// Slices in name order so answers are stable.
	sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if !svc.Spec.PublishNotReadyAddresses && ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, s := range ep.Addresses {
				a, err := netip.ParseAddr(s)
				if err != nil {
					continue
				}
				a = a.Unmap()
				host := ""
				if ep.Hostname != nil && *ep.Hostname != "" {
					host = strings.ToLower(*ep.Hostname)
				} else {
					// §2.1: a system-assigned identifier when the endpoint has no
					// hostname; the dashed address is unique within the Service.
					host = dashed(a)
				}
				if !seen[a] {
					seen[a] = true
					r.ips = append(r.ips, a)
				}
				if seenHost[host] == nil {
					seenHost[host] = map[netip.Addr]bool{}
				}
				if !seenHost[host][a] {
					seenHost[host][a] = true
					r.hosts[host] = append(r.hosts[host], a)
					r.ptrs = append(r.ptrs, ptrData{ip: a, host: host})
				}
				for _, p := range sl.Ports {
					if p.Name == nil || *p.Name == "" || p.Port == nil {
						continue
					}
					proto := corev1.ProtocolTCP
					if p.Protocol != nil {
						proto = *p.Protocol
					}
					k := srvKey(*p.Name, proto)
					id := srvSeen{k, host, uint16(*p.Port)}
					if !seenSRV[id] {
						seenSRV[id] = true
						r.srv[k] = append(r.srv[k], srvData{port: uint16(*p.Port), host: host})
					}
				}
			}
		}
	}
}

// dashed writes an address as one DNS label: 10-244-1-5, fd00-10-244--5.
func dashed(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// undashed parses a label written by dashed.
func undashed(label string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ".")); err == nil && a.Is4() {
		return a, true
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":"))
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}
