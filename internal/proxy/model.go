// Package proxy is amime's Service proxy, run by the agent in place of
// kube-proxy. It reads Services and EndpointSlices, computes for its node the
// whole set of Service ports with the endpoints each may use (this file and
// endpoints.go, pure), and programs one nftables table whose packet path costs
// one map lookup per packet whatever the number of Services (nftables.go).
package proxy

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Labels that hand a Service to another proxy, as kube-proxy honours them.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = "service.kubernetes.io/headless"
)

// Endpoint is one backend of a Service port.
type Endpoint struct {
	IP          netip.Addr
	Port        int32
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
	Zone        string
	ForZones    []string // topology hints
}

func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, uint16(e.Port)).String() }

// ServicePort is one port of one Service in one IP family: the unit the proxy
// programs.
type ServicePort struct {
	Namespace, Name, PortName string
	Protocol                  corev1.Protocol
	IPv6                      bool
	ClusterIPs                []netip.Addr
	Port                      int32
	NodePort                  int32
	// ExternalIPs are spec.externalIPs and status.loadBalancer.ingress IPs: they
	// are served like the ClusterIP, but follow externalTrafficPolicy.
	ExternalIPs         []netip.Addr
	ExternalLocal       bool // externalTrafficPolicy: Local
	InternalLocal       bool // internalTrafficPolicy: Local
	PreferClose         bool // trafficDistribution: PreferClose
	AffinityTimeout     int32
	HealthCheckNodePort int32
	Endpoints           []Endpoint
}

// Key names the Service port uniquely: namespace/name:port/protocol/family.
func (s *ServicePort) Key() string {
	fam := "v4"
	if s.IPv6 {
		fam = "v6"
	}
	return fmt.Sprintf("%s/%s:%s/%s/%s", s.Namespace, s.Name, s.PortName, s.Protocol, fam)
}

// Skip reports why the proxy leaves a Service alone, or "" when it programs it.
func Skip(svc *corev1.Service) string {
	// kube-proxy skips a Service carrying either label whatever its value (a
	// DoesNotExist selector); the headless label's value is usually empty.
	proxyName, hasProxyName := svc.Labels[LabelServiceProxyName]
	_, headless := svc.Labels[LabelHeadless]
	switch {
	case hasProxyName:
		return "handled by proxy " + proxyName
	case headless:
		return "labelled headless"
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return "ExternalName"
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		return "headless"
	case svc.Spec.ClusterIP == "":
		return "no ClusterIP"
	}
	return ""
}

// BuildServicePorts turns a Service and its EndpointSlices into ServicePorts,
// one per port and IP family. Addresses of a family the cluster does not serve,
// or that do not parse, are skipped and reported in problems.
func BuildServicePorts(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) (out []*ServicePort, problems []string) {
	if Skip(svc) != "" {
		return nil, nil
	}
	// External IPs are parsed once, so that a bad one is reported once and not
	// once per IP family.
	var externalIPs []netip.Addr
	for _, s := range svc.Spec.ExternalIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("externalIP %q does not parse", s))
			continue
		}
		externalIPs = append(externalIPs, ip)
	}
	for _, fam := range []bool{false, true} {
		var cips []netip.Addr
		for _, s := range svc.Spec.ClusterIPs {
			if ip, err := netip.ParseAddr(s); err == nil && ip.Is6() == fam {
				cips = append(cips, ip)
			}
		}
		if len(cips) == 0 {
			continue
		}
		var ext []netip.Addr
		for _, ip := range externalIPs {
			if ip.Is6() == fam {
				ext = append(ext, ip)
			}
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				if ing.IP == "" {
					continue
				}
				// ipMode Proxy means the load balancer delivers to the node itself.
				if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
					continue
				}
				if ip, err := netip.ParseAddr(ing.IP); err == nil && ip.Is6() == fam {
					ext = append(ext, ip)
				}
			}
		}
		for _, p := range svc.Spec.Ports {
			sp := &ServicePort{
				Namespace: svc.Namespace, Name: svc.Name, PortName: p.Name,
				Protocol: p.Protocol, IPv6: fam, ClusterIPs: cips, Port: p.Port,
				ExternalIPs: ext,
			}
			if sp.Protocol == "" {
				sp.Protocol = corev1.ProtocolTCP
			}
			if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
				sp.NodePort = p.NodePort
			}
			externalish := sp.NodePort != 0 || len(ext) > 0
			sp.ExternalLocal = externalish && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
			if sp.ExternalLocal {
				sp.HealthCheckNodePort = svc.Spec.HealthCheckNodePort
			}
			sp.InternalLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
			sp.PreferClose = svc.Spec.TrafficDistribution != nil && *svc.Spec.TrafficDistribution == corev1.ServiceTrafficDistributionPreferClose
			if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
				sp.AffinityTimeout = corev1.DefaultClientIPServiceAffinitySeconds
				if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
					sp.AffinityTimeout = *c.ClientIP.TimeoutSeconds
				}
			}
			sp.Endpoints = endpointsFor(slices, p, fam)
			out = append(out, sp)
		}
	}
	return out, problems
}

// endpointsFor collects the endpoints of one Service port from the slices of
// its family, resolving the port by name as the EndpointSlice controller wrote
// it for each endpoint (named targetPorts may differ from pod to pod).
func endpointsFor(slices []*discoveryv1.EndpointSlice, p corev1.ServicePort, v6 bool) []Endpoint {
	want := discoveryv1.AddressTypeIPv4
	if v6 {
		want = discoveryv1.AddressTypeIPv6
	}
	proto := p.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	// The caches list slices in no particular order: go through them by name
	// so that, of two copies of an endpoint, the same one wins every sync.
	slices = append([]*discoveryv1.EndpointSlice(nil), slices...)
	sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })
	seen := map[string]bool{}
	var out []Endpoint
	for _, sl := range slices {
		if sl.AddressType != want {
			continue
		}
		var port int32 = -1
		for _, sp := range sl.Ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			pr := corev1.ProtocolTCP
			if sp.Protocol != nil {
				pr = *sp.Protocol
			}
			if name == p.Name && pr == proto && sp.Port != nil {
				port = *sp.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil || ip.Is6() != v6 {
				continue
			}
			e := Endpoint{
				IP: ip, Port: port,
				Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				Serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			if ep.NodeName != nil {
				e.NodeName = *ep.NodeName
			}
			if ep.Zone != nil {
				e.Zone = *ep.Zone
			}
			if ep.Hints != nil {
				for _, z := range ep.Hints.ForZones {
					e.ForZones = append(e.ForZones, z.Name)
				}
			}
			key := e.String()
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].IP != out[j].IP {
			return out[i].IP.Less(out[j].IP)
		}
		return out[i].Port < out[j].Port
	})
	return out
}

type netipAddr = netip.Addr
