package dns

import (
	"context"
	"strings"

	mdns "github.com/miekg/dns"
)

// servers are where a name outside the zone goes: the longest stub domain that
// contains it, else the upstreams.
func (h *Handler) servers(cfg *Config, qlower string) []string {
	best := ""
	for d := range cfg.StubDomains {
		if (qlower == d || strings.HasSuffix(qlower, "."+d)) && len(d) > len(best) {
			best = d
		}
	}
	if best != "" {
		return cfg.StubDomains[best]
	}
	return cfg.Upstreams
}

// forward fills resp with the upstream answer for (qname, qtype), from the cache
// when fresh; when every upstream fails, from the cache past expiry (serve-stale,
// RFC 8767) or else SERVFAIL. Without any server for the name: REFUSED.
func (h *Handler) forward(ctx context.Context, cfg *Config, req, resp *mdns.Msg, qname string, qtype uint16) string {
	qlower := strings.ToLower(qname)
	servers := h.servers(cfg, qlower)
	if len(servers) == 0 {
		resp.Rcode = mdns.RcodeRefused
		return "error"
	}
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	k := cacheKey{name: qlower, qtype: qtype, qclass: mdns.ClassINET, do: do}
	cache := h.cache.Load()
	now := h.now()
	cached, fresh, negative, ok := cache.get(k, now, cfg.ServeStale)
	if ok && fresh {
		h.countHit(negative, false)
		copyAnswer(resp, cached)
		return "cache"
	}
	if h.metrics != nil {
		h.metrics.cacheMisses.Inc()
	}
	up := new(mdns.Msg)
	up.SetQuestion(qname, qtype)
	up.RecursionDesired = true
	up.CheckingDisabled = req.CheckingDisabled
	up.SetEdns0(ednsSize, do)
	r, err := h.fwd.Exchange(ctx, up, servers, cfg.UpstreamTimeout)
	if err != nil {
		if ok {
			h.countHit(negative, true)
			copyAnswer(resp, cached)
			return "cache"
		}
		h.log.Debug("forward", "name", qname, "err", err)
		resp.Rcode = mdns.RcodeServerFailure
		return "error"
	}
	cache.put(k, r, now, cfg.CacheMaxTTL, cfg.CacheNegativeMaxTTL)
	if h.metrics != nil {
		h.metrics.cacheEntries.Set(float64(cache.Len()))
	}
	copyAnswer(resp, r)
	return "upstream"
}

func (h *Handler) countHit(negative, stale bool) {
	if h.metrics == nil {
		return
	}
	kind := "positive"
	switch {
	case stale:
		kind = "stale"
	case negative:
		kind = "negative"
	}
	h.metrics.cacheHits.WithLabelValues(kind).Inc()
}

// copyAnswer takes an upstream answer's rcode and sections into resp (the
// question and ID stay the client's; the upstream's OPT is not passed on).
func copyAnswer(resp, from *mdns.Msg) {
	resp.Rcode = from.Rcode
	resp.Authoritative = false
	resp.AuthenticatedData = from.AuthenticatedData
	resp.Answer = append(resp.Answer, from.Answer...)
	resp.Ns = append(resp.Ns, from.Ns...)
	for _, rr := range from.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			resp.Extra = append(resp.Extra, rr)
		}
	}
}
