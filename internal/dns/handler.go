package dns

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// ednsSize is the UDP payload size this server offers and uses upstream:
// 1232 bytes avoids IP fragmentation on any path (DNS flag day 2020).
const ednsSize = 1232

// maxCNAMEChain bounds the in-zone chase of ExternalName targets.
const maxCNAMEChain = 8

// PodIndex answers questions about pod addresses from the Pod informer cache.
// Host-network pods are left out: their address is the node's, shared by many.
type PodIndex interface {
	// Namespace of the pod with this address.
	Namespace(ip netip.Addr) (string, bool)
	// InNamespace reports whether a pod of namespace ns has this address.
	InNamespace(ns string, ip netip.Addr) bool
}

// Handler answers DNS queries. The request path, in order:
//
//  1. malformed or unsupported requests are refused by the server's accept
//     function (acceptRequest) before they reach ServeDNS;
//  2. a bad EDNS version gets BADVERS, a class other than IN or a zone
//     transfer gets REFUSED; before the zone's first sync, SERVFAIL;
//  3. autopath (autopath.go) may answer a first-search-domain query with a
//     CNAME to the name the client's search list would end at;
//  4. names of the cluster zone, and reverse names of Services, are answered
//     from the snapshot, authoritatively;
//  5. other names go to the stub domain's servers or the upstreams, through
//     the cache (serve-stale when they fail); without upstreams, REFUSED;
//  6. the reply gets the question as asked (case included), EDNS, compression,
//     and is truncated (TC) to what the client can take over UDP.
type Handler struct {
	zone    *Zone
	pods    PodIndex
	fwd     *Forwarder
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	cfg     atomic.Pointer[Config]
	cache   atomic.Pointer[Cache]
	rotate  atomic.Uint32
	// packed answers of the current snapshot (packed.go), for UDP.
	packed atomic.Pointer[packedCache]
}

// HandlerOption configures a Handler.
type HandlerOption func(*Handler)

// WithClock replaces time.Now (cache expiry in tests).
func WithClock(now func() time.Time) HandlerOption { return func(h *Handler) { h.now = now } }

// NewHandler returns a handler over zone; pods may be nil (no autopath, no
// verified pod records, no per-namespace query log).
func NewHandler(cfg Config, zone *Zone, pods PodIndex, m *Metrics, log *slog.Logger, opts ...HandlerOption) *Handler {
	h := &Handler{zone: zone, pods: pods, fwd: NewForwarder(m), metrics: m, log: log, now: time.Now}
	for _, o := range opts {
		o(h)
	}
	h.SetConfig(cfg)
	return h
}

// SetConfig replaces the configuration for the next queries. The cache is kept
// unless its size changes.
func (h *Handler) SetConfig(cfg Config) {
	old := h.cfg.Swap(&cfg)
	if old == nil || old.CacheSize != cfg.CacheSize || h.cache.Load() == nil {
		h.cache.Store(NewCache(cfg.CacheSize))
	}
	if old != nil && old.Zone != cfg.Zone {
		h.zone.Resync()
	}
}

// Config returns the configuration in use.
func (h *Handler) Config() Config { return *h.cfg.Load() }

// ServeDNS implements mdns.Handler.
func (h *Handler) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	start := h.now()
	tcp := false
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		tcp = true
	}
	var client netip.Addr
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		client, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		client, _ = netip.AddrFromSlice(a.IP)
	}
	client = client.Unmap()
	resp, source := h.Answer(context.Background(), req, client, tcp)
	if err := w.WriteMsg(resp); err != nil {
		h.log.Debug("write answer", "client", client, "err", err)
	}
	h.observe(start, client, req, resp, source, tcp)
}

// observe counts and (when switched on) logs one answered query.
func (h *Handler) observe(start time.Time, client netip.Addr, req, resp *mdns.Msg, source string, tcp bool) {
	took := time.Since(start)
	if h.metrics != nil {
		var qt uint16
		if len(req.Question) == 1 {
			qt = req.Question[0].Qtype
		}
		h.metrics.observe(tcp, qt, resp.Rcode, source, took.Seconds())
	}
	h.logQuery(client, req, resp, took)
}

// Answer computes the reply to req from client (tcp: the transport); source
// says where it came from (zone, cache, upstream, error) for the metrics.
func (h *Handler) Answer(ctx context.Context, req *mdns.Msg, client netip.Addr, tcp bool) (*mdns.Msg, string) {
	cfg := h.cfg.Load()
	resp := new(mdns.Msg)
	if len(req.Question) != 1 {
		resp.SetRcodeFormatError(req)
		return resp, "error"
	}
	resp.SetReply(req)
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		// RFC 6891 §6.1.3: BADVERS, with our OPT saying the version we speak.
		resp.SetRcode(req, mdns.RcodeBadVers)
		resp.SetEdns0(ednsSize, false)
		return resp, "error"
	}
	q := req.Question[0]
	source := "zone"
	switch {
	case q.Qclass != mdns.ClassINET || q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR:
		resp.Rcode = mdns.RcodeRefused
		source = "error"
	case !h.zone.Synced():
		// Until the informers have synced, a negative answer would be a lie.
		resp.Rcode = mdns.RcodeServerFailure
		source = "error"
	default:
		qlower := strings.ToLower(q.Name)
		snap := h.zone.snapshot()
		done := false
		if cfg.Autopath {
			done = h.autopath(ctx, cfg, snap, req, resp, qlower, client)
			if done {
				source = "autopath"
			}
		}
		if !done {
			source = h.resolve(ctx, cfg, snap, req, resp, q.Name, qlower, q.Qtype)
		}
	}
	h.finish(cfg, req, resp, opt, tcp)
	return resp, source
}

// resolve fills resp for one name from the zone, or from upstream.
func (h *Handler) resolve(ctx context.Context, cfg *Config, snap *zoneData, req, resp *mdns.Msg, qname, qlower string, qtype uint16) string {
	n, res := snap.lookup(qlower, cfg.Zone, cfg.Pods, h.isPod)
	if res == outside {
		return h.forward(ctx, cfg, req, resp, qname, qtype)
	}
	resp.Authoritative = true
	if res == nxdomain {
		resp.Rcode = mdns.RcodeNameError
		resp.Ns = []mdns.RR{h.soa(cfg, snap)}
		return "zone"
	}
	h.fill(ctx, cfg, snap, req, resp, qname, n, qtype, 0)
	return "zone"
}

// fill adds the records of n (the node named qname) for qtype.
func (h *Handler) fill(ctx context.Context, cfg *Config, snap *zoneData, req, resp *mdns.Msg, qname string, n node, qtype uint16, depth int) {
	hdr := func(t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: qname, Rrtype: t, Class: mdns.ClassINET, Ttl: cfg.TTL}
	}
	if n.cname != "" {
		resp.Answer = append(resp.Answer, &mdns.CNAME{Hdr: hdr(mdns.TypeCNAME), Target: n.cname})
		if qtype == mdns.TypeCNAME || depth >= maxCNAMEChain {
			return
		}
		h.chase(ctx, cfg, snap, req, resp, n.cname, qtype, depth+1)
		return
	}
	before := len(resp.Answer)
	any := qtype == mdns.TypeANY
	if qtype == mdns.TypeA || any {
		for _, a := range h.rotated(ctx, n.a) {
			resp.Answer = append(resp.Answer, &mdns.A{Hdr: hdr(mdns.TypeA), A: a.AsSlice()})
		}
	}
	if qtype == mdns.TypeAAAA || any {
		for _, a := range h.rotated(ctx, n.aaaa) {
			resp.Answer = append(resp.Answer, &mdns.AAAA{Hdr: hdr(mdns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	if qtype == mdns.TypeSRV || any {
		seen := map[string]bool{}
		for _, s := range n.srv {
			resp.Answer = append(resp.Answer, &mdns.SRV{Hdr: hdr(mdns.TypeSRV), Priority: 0, Weight: 100, Port: s.port, Target: s.target})
			if seen[s.target] {
				continue
			}
			seen[s.target] = true
			// §2.3.2/§2.4.2: the Additional section may hold the targets' addresses.
			if t, res := snap.lookup(s.target, cfg.Zone, cfg.Pods, h.isPod); res == found {
				for _, a := range t.a {
					resp.Extra = append(resp.Extra, &mdns.A{Hdr: mdns.RR_Header{Name: s.target, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: cfg.TTL}, A: a.AsSlice()})
				}
				for _, a := range t.aaaa {
					resp.Extra = append(resp.Extra, &mdns.AAAA{Hdr: mdns.RR_Header{Name: s.target, Rrtype: mdns.TypeAAAA, Class: mdns.ClassINET, Ttl: cfg.TTL}, AAAA: a.AsSlice()})
				}
			}
		}
	}
	if qtype == mdns.TypePTR || any {
		for _, p := range n.ptr {
			resp.Answer = append(resp.Answer, &mdns.PTR{Hdr: hdr(mdns.TypePTR), Ptr: p})
		}
	}
	if (qtype == mdns.TypeTXT || any) && n.txt != "" {
		resp.Answer = append(resp.Answer, &mdns.TXT{Hdr: hdr(mdns.TypeTXT), Txt: []string{n.txt}})
	}
	if (qtype == mdns.TypeSOA || any) && n.apex {
		soa := h.soa(cfg, snap)
		soa.Hdr.Name = qname
		resp.Answer = append(resp.Answer, soa)
	}
	if len(resp.Answer) == before {
		// NODATA (RFC 2308 §2.2): NOERROR, no answer, the SOA for the negative TTL.
		resp.Ns = append(resp.Ns, h.soa(cfg, snap))
	}
}

// chase follows a CNAME target: in the zone from the snapshot, outside through
// the upstreams when there are any (else the client follows it itself).
func (h *Handler) chase(ctx context.Context, cfg *Config, snap *zoneData, req, resp *mdns.Msg, target string, qtype uint16, depth int) {
	n, res := snap.lookup(target, cfg.Zone, cfg.Pods, h.isPod)
	switch res {
	case found:
		h.fill(ctx, cfg, snap, req, resp, target, n, qtype, depth)
	case nxdomain:
		// RFC 6604: the rcode is the last name's.
		resp.Rcode = mdns.RcodeNameError
		resp.Ns = append(resp.Ns, h.soa(cfg, snap))
	case outside:
		if len(h.servers(cfg, target)) == 0 {
			return
		}
		sub := new(mdns.Msg)
		sub.SetReply(req)
		h.forward(ctx, cfg, req, sub, target, qtype)
		if sub.Rcode == mdns.RcodeSuccess || sub.Rcode == mdns.RcodeNameError {
			resp.Answer = append(resp.Answer, sub.Answer...)
			resp.Rcode = sub.Rcode
		}
	}
}

// rotated returns the addresses starting at a moving offset, so that clients
// that take the first address spread over headless endpoints. The packed
// answer cache (packed.go) builds one answer per offset, fixed through ctx.
func (h *Handler) rotated(ctx context.Context, in []netip.Addr) []netip.Addr {
	if len(in) < 2 {
		return in
	}
	var k int
	if r, ok := ctx.Value(rotationKey{}).(int); ok {
		k = r % len(in)
	} else {
		k = int(h.rotate.Add(1)) % len(in)
	}
	out := make([]netip.Addr, 0, len(in))
	return append(append(out, in[k:]...), in[:k]...)
}

func (h *Handler) isPod(ns string, ip netip.Addr) bool {
	return h.pods != nil && h.pods.InNamespace(ns, ip)
}

// soa is the zone's SOA, whose TTL and minimum are the negative TTL.
func (h *Handler) soa(cfg *Config, snap *zoneData) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: cfg.Zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: cfg.NegativeTTL},
		Ns:      "ns.dns." + cfg.Zone,
		Mbox:    "hostmaster." + cfg.Zone,
		Serial:  snap.serial,
		Refresh: 7200, Retry: 1800, Expire: 86400,
		Minttl: cfg.NegativeTTL,
	}
}

// finish sets what every reply carries, then truncates it to the client's size.
func (h *Handler) finish(cfg *Config, req, resp *mdns.Msg, opt *mdns.OPT, tcp bool) {
	resp.RecursionAvailable = len(cfg.Upstreams) > 0
	resp.Compress = true
	size := mdns.MinMsgSize
	if opt != nil {
		size = int(min(max(opt.UDPSize(), mdns.MinMsgSize), ednsSize))
		o := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
		o.SetUDPSize(ednsSize)
		o.SetDo(opt.Do())
		resp.Extra = append(resp.Extra, o)
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	resp.Truncate(size)
	resp.Compress = true
}

// logQuery logs a query when its client's namespace is switched on.
func (h *Handler) logQuery(client netip.Addr, req, resp *mdns.Msg, took time.Duration) {
	cfg := h.cfg.Load()
	if len(cfg.LogNamespaces) == 0 || len(req.Question) != 1 {
		return
	}
	ns := ""
	if h.pods != nil {
		ns, _ = h.pods.Namespace(client)
	}
	if !cfg.LogNamespaces["*"] && (ns == "" || !cfg.LogNamespaces[ns]) {
		return
	}
	q := req.Question[0]
	h.log.Info("query", "client", client, "namespace", ns, "name", q.Name, "type", mdns.TypeToString[q.Qtype],
		"rcode", mdns.RcodeToString[resp.Rcode], "answers", len(resp.Answer), "took", took)
}

// acceptRequest is the server's first check, before a message is parsed
// further: responses are dropped, opcodes other than QUERY get NOTIMP (RFC
// 1035 §4.1.1), anything but one question FORMERR.
func acceptRequest(dh mdns.Header) mdns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 {
		return mdns.MsgIgnore
	}
	if op := int(dh.Bits>>11) & 0xF; op != mdns.OpcodeQuery {
		return mdns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 || dh.Ancount > 0 || dh.Nscount > 0 || dh.Arcount > 2 {
		return mdns.MsgReject
	}
	return mdns.MsgAccept
}
