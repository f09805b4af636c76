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
