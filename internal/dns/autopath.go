package dns

import (
	"context"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
)

// autopath completes a pod's search path on the server. A pod with ndots:5
// asks for "example.com" first as example.com.<ns>.svc.<zone>, then under
// svc.<zone>, <zone>, the node's search domains, and finally as is: five round
// trips (ten with A and AAAA) for a name outside the cluster. When a query is
// for the first search domain of the pod that sent it (known from its address
// through the Pod cache), the server walks the rest of the list itself and
// answers with a CNAME from the asked name to the first one that exists, and
// that name's records: one round trip.
//
// It returns false, leaving resp untouched, when the query is not such a query,
// when the asked name exists, or when no candidate exists (the client then
// gets the NXDOMAIN it expects and carries on). An upstream failure also
// returns false: the client's own walk will meet it and retry.
func (h *Handler) autopath(ctx context.Context, cfg *Config, snap *zoneData, req, resp *mdns.Msg, qlower string, client netip.Addr) bool {
	// Cheap checks first: most queries are not under <something>.svc.<zone>.
	if h.pods == nil || !client.IsValid() || !strings.HasSuffix(qlower, ".svc."+cfg.Zone) {
		return false
	}
	ns, ok := h.pods.Namespace(client)
	if !ok {
		return false
	}
	first := "." + ns + ".svc." + cfg.Zone
	if !strings.HasSuffix(qlower, first) || len(qlower) == len(first) {
		return false
	}
	if _, res := snap.lookup(qlower, cfg.Zone, cfg.Pods, h.isPod); res != nxdomain {
		return false
	}
	q := req.Question[0]
	if len(q.Name) != len(qlower) {
		return false
	}
	base := q.Name[:len(q.Name)-len(first)] // as asked, case included
	candidates := make([]string, 0, 3+len(cfg.AutopathSearch))
	candidates = append(candidates, base+".svc."+cfg.Zone, base+"."+cfg.Zone)
	for _, s := range cfg.AutopathSearch {
		candidates = append(candidates, base+"."+s)
	}
	candidates = append(candidates, base+".")
	for _, c := range candidates {
		cl := strings.ToLower(c)
		try := new(mdns.Msg)
		try.SetReply(req)
		n, res := snap.lookup(cl, cfg.Zone, cfg.Pods, h.isPod)
		switch res {
		case nxdomain:
			continue
		case found:
			try.Authoritative = true
			h.fill(ctx, cfg, snap, req, try, c, n, q.Qtype, 0)
		case outside:
			if len(h.servers(cfg, cl)) == 0 {
				return false
			}
			h.forward(ctx, cfg, req, try, c, q.Qtype)
			switch try.Rcode {
			case mdns.RcodeNameError:
				continue
			case mdns.RcodeSuccess:
			default:
				return false
			}
		}
		if try.Rcode != mdns.RcodeSuccess {
			continue
		}
		resp.Authoritative = try.Authoritative
		resp.Answer = append([]mdns.RR{&mdns.CNAME{
			Hdr:    mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeCNAME, Class: mdns.ClassINET, Ttl: cfg.TTL},
			Target: mdns.Fqdn(c),
		}}, try.Answer...)
		resp.Ns = try.Ns
		resp.Extra = try.Extra
		if h.metrics != nil {
			h.metrics.autopath.Inc()
		}
		return true
	}
	return false
}
