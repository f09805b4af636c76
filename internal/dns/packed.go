package dns

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The packed answer cache: the hot path of UDP queries for names of the zone.
//
// The first query for a (question as asked, EDNS size class) is answered by
// the full path (Handler.Answer); when that answer came from the zone alone
// and is the same for every client, its packed wire form is kept. The next
// identical question is answered by copying those bytes and patching the ID
// and the RD and CD flags the reply echoes: no unpacking, no records, no
// allocation. The key is the question's wire bytes, case included, so the
// echoed case and the names compressed against it are exactly what the full
// path writes; a client that randomises case (0x20) only misses more often.
//
// The cache belongs to one zone snapshot and one configuration: any sync or
// reload replaces it, so an answer never outlives the data it came from.
// Headless answers rotate: such a name keeps one packed answer per rotation.

// rotationKey fixes the rotation offset of an Answer through its context.
type rotationKey struct{}

const (
	// packedMaxBytes bounds the cache of one snapshot (answers are a few
	// hundred bytes: some 100,000 of them).
	packedMaxBytes = 32 << 20
	// packedMaxRotations: names with more addresses than this rotate on the
	// full path only.
	packedMaxRotations = 32
)

type packedCache struct {
	snap *zoneData
	cfg  *Config

	mu    sync.RWMutex
	m     map[string]*packedAnswer
	bytes int
}

type packedAnswer struct {
	variants [][]byte // one per rotation offset
	// svcPrefix is set when the answer is NXDOMAIN under svc.<zone>: a pod
	// whose first search domain this name is under gets autopath instead.
	// It holds the lower-case name without ".svc.<zone>".
	svcPrefix string
	autopath  bool
	// metrics children, resolved once
	req, rcode prometheus.Counter
	obs        prometheus.Observer
}

// wireQuestion is what the hot path reads of a request without unpacking it.
type wireQuestion struct {
	end   int // offset after the question (name, type, class)
	qtype uint16
	// class of the client's EDNS: 0 none, 1 EDNS, 3 EDNS with DO; size is the
	// UDP size the reply is cut to.
	edns byte
	size uint16
}

// parseWireQuestion accepts only the plain case: a query (QR 0, opcode
// QUERY), one uncompressed question, no answer or authority records, and at
// most an OPT record of version 0 as the only additional record, ending the
// packet. Anything else takes the full path.
func parseWireQuestion(b []byte) (wireQuestion, bool) {
	var q wireQuestion
	if len(b) < 17 || b[2]&0xF8 != 0 { // QR and opcode
		return q, false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return q, false
	}
	off := 12
	for {
		if off >= len(b) {
			return q, false
		}
		l := int(b[off])
		if l == 0 {
			off++
			break
		}
		if l&0xC0 != 0 {
			return q, false
		}
		off += 1 + l
		if off-12 > 255 {
			return q, false
		}
	}
	if off+4 > len(b) {
		return q, false
	}
	q.qtype = binary.BigEndian.Uint16(b[off:])
	off += 4
	q.end = off
	q.size = mdns.MinMsgSize
	if ar == 0 {
		return q, off == len(b)
	}
	// The OPT record: root name, type, class = UDP size, TTL = extended
	// rcode, version, flags; then the options, which the reply does not echo.
	if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != mdns.TypeOPT || b[off+6] != 0 {
		return q, false
	}
	size := binary.BigEndian.Uint16(b[off+3:])
	q.size = min(max(size, mdns.MinMsgSize), ednsSize)
	q.edns = 1
	if b[off+7]&0x80 != 0 {
		q.edns = 3
	}
	rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
	return q, off+11+rdlen == len(b)
}

// appendKey appends the cache key of a request parsed by parseWireQuestion.
func appendKey(key, b []byte, q wireQuestion) []byte {
	key = append(key, b[12:q.end]...)
	return append(key, q.edns, byte(q.size>>8), byte(q.size))
}

// packedFor returns the cache for the current snapshot and configuration, or
// nil when there is none yet.
func (h *Handler) packedFor(snap *zoneData, cfg *Config) *packedCache {
	pc := h.packed.Load()
	if pc == nil || pc.snap != snap || pc.cfg != cfg {
		return nil
	}
	return pc
}

// fastAnswer appends to out the cached reply to the UDP request b from client;
// ok is false when the full path must answer. key is scratch space.
func (h *Handler) fastAnswer(b []byte, client netip.Addr, key, out []byte) (reply, keyBuf []byte, ok bool) {
	cfg := h.cfg.Load()
	pc := h.packedFor(h.zone.snapshot(), cfg)
	if pc == nil || len(cfg.LogNamespaces) > 0 {
		return out, key, false
	}
	start := time.Now()
	q, ok := parseWireQuestion(b)
	if !ok {
		return out, key, false
	}
	key = appendKey(key[:0], b, q)
	pc.mu.RLock()
	e := pc.m[string(key)]
	pc.mu.RUnlock()
	if e == nil {
		return out, key, false
	}
	if e.autopath && h.pods != nil {
		// Autopath answers a pod whose namespace's search domain this is.
		if ns, ok := h.pods.Namespace(client); ok && strings.HasSuffix(e.svcPrefix, ns) &&
			len(e.svcPrefix) > len(ns) && e.svcPrefix[len(e.svcPrefix)-len(ns)-1] == '.' {
			return out, key, false
		}
	}
	v := e.variants[0]
	if len(e.variants) > 1 {
		v = e.variants[int(h.rotate.Add(1))%len(e.variants)]
	}
	out = append(out[:0], v...)
	out[0], out[1] = b[0], b[1]
	out[2] = out[2]&^0x01 | b[2]&0x01 // RD
	out[3] = out[3]&^0x10 | b[3]&0x10 // CD
	if e.req != nil {
		e.req.Inc()
		e.rcode.Inc()
		e.obs.Observe(time.Since(start).Seconds())
	}
	return out, key, true
}

// storePacked keeps the reply to a UDP request when every client would get
// the same one (up to ID and flags) from this snapshot and configuration:
// answers of the zone, not of upstreams, not of pod names (the Pod cache
// changes without the zone), not through CNAMEs (which may have gone upstream),
// not for ANY. snap and cfg are what the handler used, read before Answer.
func (h *Handler) storePacked(b []byte, req, resp *mdns.Msg, source string, client netip.Addr, snap *zoneData, cfg *Config) {
	if source != "zone" || len(cfg.LogNamespaces) > 0 || len(req.Question) != 1 {
		return
	}
	q, ok := parseWireQuestion(b)
	if !ok || q.qtype == mdns.TypeANY {
		return
	}
	qlower := strings.ToLower(req.Question[0].Name)
	if podSuffix := "pod." + cfg.Zone; qlower == podSuffix || strings.HasSuffix(qlower, "."+podSuffix) {
		return
	}
	rotations := 0
	for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		n := 0
		for _, rr := range resp.Answer {
			switch rr.Header().Rrtype {
			case mdns.TypeCNAME:
				return
			case t:
				n++
			}
		}
		rotations = max(rotations, n)
	}
	if rotations > packedMaxRotations || (rotations > 1 && resp.Truncated) {
		return
	}
	e := &packedAnswer{}
	if resp.Rcode == mdns.RcodeNameError && cfg.Autopath {
		if suffix := ".svc." + cfg.Zone; strings.HasSuffix(qlower, suffix) {
			e.autopath, e.svcPrefix = true, strings.TrimSuffix(qlower, suffix)
		}
	}
	size := 0
	pack := func(m *mdns.Msg) bool {
		out, err := m.Pack()
		if err != nil {
			return false
		}
		e.variants = append(e.variants, out)
		size += len(out) + 64
		return true
	}
	if rotations < 2 {
		if !pack(resp) {
			return
		}
	} else {
		for i := range rotations {
			r, src := h.Answer(context.WithValue(context.Background(), rotationKey{}, i), req, client, false)
			if src != "zone" || !pack(r) {
				return
			}
		}
	}
	// Nothing changed while the answers were computed.
	if h.zone.snapshot() != snap || h.cfg.Load() != cfg {
		return
	}
	if h.metrics != nil {
		e.req, e.rcode, e.obs = h.metrics.children(false, q.qtype, resp.Rcode, source)
	}
	key := string(appendKey(make([]byte, 0, q.end+3), b, q))
	for {
		pc := h.packed.Load()
		if pc != nil && pc.snap == snap && pc.cfg == cfg {
			pc.mu.Lock()
			if pc.bytes+size+len(key) <= packedMaxBytes {
				if _, dup := pc.m[key]; !dup {
					pc.m[key] = e
					pc.bytes += size + len(key)
				}
			}
			pc.mu.Unlock()
			return
		}
		next := &packedCache{snap: snap, cfg: cfg, m: map[string]*packedAnswer{}}
		if h.packed.CompareAndSwap(pc, next) {
			continue
		}
		if cur := h.packed.Load(); cur != nil && (cur.snap != snap || cur.cfg != cfg) {
			return // replaced by a newer generation meanwhile
		}
	}
}
