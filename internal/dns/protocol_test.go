package dns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// bigCluster has a headless Service with n ready endpoints.
func bigCluster(n int) *fakeSource {
	src := specCluster()
	src.add(svc("ns1", "big", headless()))
	var eps []ep
	for i := 0; i < n; i++ {
		eps = append(eps, ep{ip: fmt.Sprintf("10.244.%d.%d", 100+i/250, 1+i%250)})
	}
	src.addSlice(slice("ns1", "big", "big-1", discoveryv1.AddressTypeIPv4, nil, eps...))
	return src
}

// serve runs h on loopback (UDP and TCP) for the test.
func serve(t *testing.T, h *Handler) string {
	t.Helper()
	servers, err := listen("127.0.0.1:0", 2, h)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = servers.udp.Serve() }()
	go func() { _ = servers.tcp.ActivateAndServe() }()
	t.Cleanup(func() { shutdown(servers) })
	time.Sleep(20 * time.Millisecond)
	return servers.udp.LocalAddr().String()
}

func exchange(t *testing.T, net, addr string, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: net, Timeout: 2 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange: %v", net, err)
	}
	return r
}

// TestTruncationAndTCP: an answer larger than the client's UDP size is cut with
// TC set; over TCP it is whole. EDNS0 raises the size up to 1232 bytes.
func TestTruncationAndTCP(t *testing.T) {
	h := newTestHandler(t, bigCluster(200), specPods, Defaults())
	addr := serve(t, h)
	name := "big.ns1.svc.cluster.local."

	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeA)
	udp := exchange(t, "udp", addr, m)
	if !udp.Truncated || len(udp.Answer) == 0 || len(udp.Answer) >= 200 {
		t.Errorf("UDP without EDNS: TC=%v with %d answers; want TC and a partial answer", udp.Truncated, len(udp.Answer))
	}
	udp.Compress = true
	if b, _ := udp.Pack(); len(b) > 512 {
		t.Errorf("UDP without EDNS: %d bytes, more than 512", len(b))
	}

	m.SetEdns0(4096, false)
	edns := exchange(t, "udp", addr, m)
	edns.Compress = true
	b, _ := edns.Pack()
	if !edns.Truncated || len(b) > ednsSize || len(edns.Answer) <= len(udp.Answer) {
		t.Errorf("UDP with EDNS 4096: TC=%v, %d bytes, %d answers; want TC, at most %d bytes, more answers than without", edns.Truncated, len(b), len(edns.Answer), ednsSize)
	}
	if opt := edns.IsEdns0(); opt == nil || opt.UDPSize() != ednsSize {
		t.Errorf("reply OPT %v; want one offering %d", opt, ednsSize)
	}

	tcp := exchange(t, "tcp", addr, m)
	if tcp.Truncated || len(tcp.Answer) != 200 {
		t.Errorf("TCP: TC=%v, %d answers; want all 200", tcp.Truncated, len(tcp.Answer))
	}
}

// TestCompression: the reply compresses names (200 owner names the same).
func TestCompression(t *testing.T) {
	h := newTestHandler(t, bigCluster(20), specPods, Defaults())
	addr := serve(t, h)
	m := new(mdns.Msg)
	m.SetQuestion("big.ns1.svc.cluster.local.", mdns.TypeA)
	c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
	conn, err := c.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(mdns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	r.Compress = false
	plain, _ := r.Pack()
	if len(r.Answer) != 20 || n >= len(plain)/2 {
		t.Errorf("reply %d bytes for %d answers, uncompressed %d: not compressed", n, len(r.Answer), len(plain))
	}
}

// TestCaseEchoed: 0x20 — the question comes back exactly as asked.
func TestCaseEchoed(t *testing.T) {
	h := newTestHandler(t, specCluster(), specPods, Defaults())
	addr := serve(t, h)
	m := new(mdns.Msg)
	m.SetQuestion("kUbErNeTeS.DeFaUlT.sVc.ClUsTeR.lOcAl.", mdns.TypeA)
	r := exchange(t, "udp", addr, m)
	if r.Question[0].Name != m.Question[0].Name || len(r.Answer) != 1 || r.Answer[0].Header().Name != m.Question[0].Name {
		t.Errorf("question %q answer %v; want the name as asked", r.Question[0].Name, r.Answer)
	}
	if !r.Authoritative || r.Id != m.Id {
		t.Errorf("AA=%v id %d/%d", r.Authoritative, r.Id, m.Id)
	}
}

// TestBadRequests: wrong opcodes, several questions, bad EDNS versions,
// other classes and zone transfers get the RFCs' rcodes; garbage gets no answer
// and the server keeps serving.
func TestBadRequests(t *testing.T) {
	h := newTestHandler(t, specCluster(), specPods, Defaults())
	addr := serve(t, h)
	q := func(tweak func(*mdns.Msg)) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetQuestion("kubernetes.default.svc.cluster.local.", mdns.TypeA)
		tweak(m)
		return m
	}
	for _, tc := range []struct {
		name  string
		msg   *mdns.Msg
		rcode int
	}{
		{"UPDATE is not implemented", q(func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate }), mdns.RcodeNotImplemented},
		{"NOTIFY is not implemented", q(func(m *mdns.Msg) { m.Opcode = mdns.OpcodeNotify }), mdns.RcodeNotImplemented},
		{"IQUERY is not implemented", q(func(m *mdns.Msg) { m.Opcode = mdns.OpcodeIQuery }), mdns.RcodeNotImplemented},
		{"two questions", q(func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) }), mdns.RcodeFormatError},
		{"records in the answer section", q(func(m *mdns.Msg) {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: "x.", Rrtype: mdns.TypeA, Class: mdns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}}
		}), mdns.RcodeFormatError},
		{"EDNS version 1", q(func(m *mdns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }), mdns.RcodeBadVers},
		{"CHAOS class", q(func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS }), mdns.RcodeRefused},
		{"AXFR", q(func(m *mdns.Msg) { m.Question[0].Qtype = mdns.TypeAXFR }), mdns.RcodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := exchange(t, "tcp", addr, tc.msg)
			if r.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
		})
	}
	// Garbage over UDP: nothing comes back (answering would amplify), and the
	// server still answers the next query.
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, junk := range [][]byte{{1}, {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, []byte(strings.Repeat("\xff", 600))} {
		_, _ = conn.Write(junk)
	}
	good := new(mdns.Msg)
	good.SetQuestion("kubernetes.default.svc.cluster.local.", mdns.TypeA)
	if r := exchange(t, "udp", addr, good); len(r.Answer) != 1 {
		t.Errorf("after garbage: %v", r)
	}
}

// TestServfailUntilSynced: before the first sync every query is SERVFAIL.
func TestServfailUntilSynced(t *testing.T) {
	z := NewZone(specCluster(), nil, quietLog())
	h := NewHandler(Defaults(), z, specPods, nil, quietLog())
	if r := query(h, "kubernetes.default.svc.cluster.local.", mdns.TypeA, ""); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("before sync: %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
	if err := z.Sync(); err != nil {
		t.Fatal(err)
	}
	if r := query(h, "kubernetes.default.svc.cluster.local.", mdns.TypeA, ""); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after sync: %v", r)
	}
}

// TestPartialSync: a change to one Service (and to its slices) is published by
// the next sync; a deleted Service is gone, with its PTR.
func TestPartialSync(t *testing.T) {
	src := specCluster()
	h := newTestHandler(t, src, specPods, Defaults())
	src.addSlice(slice("ns1", "empty", "empty-2", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.3.3"}))
	h.zone.MarkService("ns1", "empty")
	delete(src.svcs, "ns1/web")
	h.zone.MarkService("ns1", "web")
	if err := h.zone.Sync(); err != nil {
		t.Fatal(err)
	}
	if r := query(h, "empty.ns1.svc.cluster.local.", mdns.TypeA, ""); len(r.Answer) != 1 {
		t.Errorf("new ready endpoint: %v", r.Answer)
	}
	if r := query(h, "web.ns1.svc.cluster.local.", mdns.TypeA, ""); r.Rcode != mdns.RcodeNameError {
		t.Errorf("deleted Service: %s", mdns.RcodeToString[r.Rcode])
	}
	if r := query(h, "20.0.96.10.in-addr.arpa.", mdns.TypePTR, ""); r.Rcode != mdns.RcodeRefused {
		t.Errorf("PTR of a deleted Service: %s %v", mdns.RcodeToString[r.Rcode], r.Answer)
	}
	if r := query(h, "kubernetes.default.svc.cluster.local.", mdns.TypeA, ""); len(r.Answer) != 1 {
		t.Errorf("unchanged Service lost: %v", r)
	}
}

// TestReverseAddr: reverse names parse back to the address; partial ones do not.
func TestReverseAddr(t *testing.T) {
	for _, ip := range []string{"10.96.0.10", "fd00:10:96::a", "2001:db8::1"} {
		a := netip.MustParseAddr(ip)
		name, _ := mdns.ReverseAddr(ip)
		got, ok := reverseAddr(name)
		if !ok || got != a {
			t.Errorf("reverseAddr(%s) = %v %v, want %s", name, got, ok, a)
		}
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa.", "x.1.2.3.in-addr.arpa.", "1.ip6.arpa.", "example.com."} {
		if _, ok := reverseAddr(bad); ok {
			t.Errorf("reverseAddr(%s) accepted", bad)
		}
	}
}
