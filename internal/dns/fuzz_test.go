package dns

import (
	"context"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzAnswer feeds arbitrary packets through the parser and the answer path:
// whatever parses must get an answer that packs, within the client's size,
// with the question echoed; nothing may panic. Run with
// go test -fuzz FuzzAnswer ./internal/dns/ (the corpus is in testdata/fuzz).
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"web.ns1.svc.cluster.local.", mdns.TypeA, false},
		{"_http._tcp.headless.ns1.svc.cluster.local.", mdns.TypeSRV, true},
		{"big.ns1.svc.cluster.local.", mdns.TypeA, false},
		{"5.1.244.10.in-addr.arpa.", mdns.TypePTR, true},
		{"kubernetes.default.ns1.svc.cluster.local.", mdns.TypeAAAA, false},
		{"10-244-1-50.ns1.pod.cluster.local.", mdns.TypeANY, true},
		{"alias.ns1.svc.cluster.local.", mdns.TypeA, false},
	} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		if q.edns {
			m.SetEdns0(4096, true)
		}
		b, _ := m.Pack()
		f.Add(b, false)
	}
	// A compression pointer to itself.
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, true)
	h := newFuzzHandler(f)
	client := netip.MustParseAddr("10.244.1.50")
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		req := new(mdns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		if len(req.Question) != 1 {
			return // the server's accept function answers these before the handler
		}
		resp, _ := h.Answer(context.Background(), req, client, tcp)
		out, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
		limit := mdns.MaxMsgSize
		if !tcp {
			limit = ednsSize
			if req.IsEdns0() == nil {
				limit = mdns.MinMsgSize
			}
		}
		if len(out) > limit {
			t.Fatalf("answer of %d bytes over a limit of %d", len(out), limit)
		}
		if resp.Id != req.Id || (resp.Rcode != mdns.RcodeFormatError && len(resp.Question) == 1 && resp.Question[0] != req.Question[0]) {
			t.Fatalf("question or ID not echoed: %v for %v", resp.MsgHdr, req.Question)
		}
	})
}

func newFuzzHandler(f *testing.F) *Handler {
	z := NewZone(bigCluster(100), nil, quietLog())
	if err := z.Sync(); err != nil {
		f.Fatal(err)
	}
	cfg := Defaults()
	cfg.Pods = PodsInsecure
	return NewHandler(cfg, z, specPods, nil, quietLog())
}

// FuzzPacked: whatever the packed cache answers for a packet is what the full
// path answers (records compared as sets: headless answers rotate), with the
// packet's ID, RD and CD. Run with go test -fuzz FuzzPacked ./internal/dns/.
func FuzzPacked(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"web.ns1.svc.cluster.local.", mdns.TypeA, false},
		{"WEB.ns1.svc.cluster.local.", mdns.TypeA, true},
		{"headless.ns1.svc.cluster.local.", mdns.TypeA, false},
		{"big.ns1.svc.cluster.local.", mdns.TypeA, true},
		{"_http._tcp.web.ns1.svc.cluster.local.", mdns.TypeSRV, true},
		{"nope.ns1.svc.cluster.local.", mdns.TypeA, false},
		{"20.0.96.10.in-addr.arpa.", mdns.TypePTR, false},
	} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		if q.edns {
			m.SetEdns0(4096, true)
		}
		b, _ := m.Pack()
		f.Add(b)
	}
	h := newFuzzHandler(f)
	client := netip.MustParseAddr("192.0.2.9")
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(b); err != nil || len(req.Question) != 1 || acceptRequest(mdns.Header{
			Bits: uint16(b[2])<<8 | uint16(b[3]), Qdcount: 1, Ancount: uint16(len(req.Answer)),
			Nscount: uint16(len(req.Ns)), Arcount: uint16(len(req.Extra)),
		}) != mdns.MsgAccept {
			return
		}
		snap, cfg := h.zone.snapshot(), h.cfg.Load()
		full, source := h.Answer(context.Background(), req, client, false)
		h.storePacked(b, req, full, source, client, snap, cfg)
		out, _, ok := h.fastAnswer(b, client, nil, nil)
		if !ok {
			return
		}
		got := new(mdns.Msg)
		if err := got.Unpack(out); err != nil {
			t.Fatalf("cached answer does not unpack: %v", err)
		}
		if got.Id != req.Id || got.RecursionDesired != req.RecursionDesired || got.CheckingDisabled != req.CheckingDisabled {
			t.Fatalf("header %v for request %v", got.MsgHdr, req.MsgHdr)
		}
		if got.Rcode != full.Rcode || got.Authoritative != full.Authoritative || got.Truncated != full.Truncated ||
			len(got.Question) != 1 || got.Question[0] != req.Question[0] ||
			!equal(rrs(got.Answer), rrs(full.Answer)) || !equal(rrs(got.Ns), rrs(full.Ns)) || !equal(rrs(got.Extra), rrs(full.Extra)) {
			t.Fatalf("cached:\n%v\nfull path:\n%v", got, full)
		}
	})
}
