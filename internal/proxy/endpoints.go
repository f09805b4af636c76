package proxy

// Selection decides which endpoints one node uses for one Service port, the way
// kube-proxy does (pkg/proxy/topology.go):
//
//   - Ready endpoints; when none is ready, the serving-but-terminating ones, so
//     that a rolling update never has a moment without a backend.
//   - Topology: with trafficDistribution PreferClose or zone hints on every
//     endpoint, the endpoints hinted for (or in) this node's zone, when any.
//   - Traffic policy Local: only endpoints on this node, with the same
//     terminating fallback among them; none at all means traffic is dropped
//     (internal) or refused so the load balancer skips the node (external).
type Selection struct {
	// Cluster serves traffic from inside the cluster to ClusterIPs (unless
	// internalTrafficPolicy is Local) and external traffic with policy Cluster.
	Cluster []Endpoint
	// Local are the usable endpoints on this node.
	Local []Endpoint
	// Internal and External are what the two kinds of traffic actually use.
	Internal, External []Endpoint
}

// Select computes the selection for the node nodeName in zone.
func Select(sp *ServicePort, nodeName, zone string) Selection {
	usable := func(eps []Endpoint) []Endpoint {
		var ready, term []Endpoint
		for _, e := range eps {
			switch {
			case e.Ready && !e.Terminating:
				ready = append(ready, e)
			case e.Serving && e.Terminating:
				term = append(term, e)
			}
		}
		if len(ready) > 0 {
			return ready
		}
		return term
	}
	var s Selection
	s.Cluster = topologyFilter(sp, usable(sp.Endpoints), zone)
	var onNode []Endpoint
	for _, e := range sp.Endpoints {
		if e.NodeName == nodeName {
			onNode = append(onNode, e)
		}
	}
	s.Local = usable(onNode)
	s.Internal = s.Cluster
	if sp.InternalLocal {
		s.Internal = s.Local
	}
	s.External = s.Cluster
	if sp.ExternalLocal {
		s.External = s.Local
	}
	return s
}

// topologyFilter keeps the endpoints for this zone when the Service asks for
// it and every endpoint carries hints (an incomplete set of hints, as
// kube-proxy, means the hints are ignored).
func topologyFilter(sp *ServicePort, eps []Endpoint, zone string) []Endpoint {
	if zone == "" || len(eps) == 0 {
		return eps
	}
	allHinted := true
	for _, e := range eps {
		if len(e.ForZones) == 0 {
			allHinted = false
		}
	}
	var out []Endpoint
	switch {
	case allHinted:
		for _, e := range eps {
			for _, z := range e.ForZones {
				if z == zone {
					out = append(out, e)
					break
				}
			}
		}
	case sp.PreferClose:
		// Without hints (no slice controller support), prefer the node's zone.
		for _, e := range eps {
			if e.Zone == zone {
				out = append(out, e)
			}
		}
	default:
		return eps
	}
	if len(out) == 0 {
		return eps
	}
	return out
}
