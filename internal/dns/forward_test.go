package dns

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeUpstream is a DNS server on loopback that answers from a table and
// counts what it is asked; failing makes it answer SERVFAIL.
type fakeUpstream struct {
	addr    string
	mu      sync.Mutex
	asked   map[string]int // "name type"
	failing atomic.Bool
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{asked: map[string]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	srv := &mdns.Server{PacketConn: pc, Handler: u}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	time.Sleep(10 * time.Millisecond)
	return u
}

func (u *fakeUpstream) count(name string, qtype uint16) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.asked[name+" "+mdns.TypeToString[qtype]]
}

func (u *fakeUpstream) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	q := r.Question[0]
	u.mu.Lock()
	u.asked[q.Name+" "+mdns.TypeToString[q.Qtype]]++
	u.mu.Unlock()
	m := new(mdns.Msg)
	m.SetReply(r)
	if u.failing.Load() {
		m.Rcode = mdns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	}
	soa := &mdns.SOA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 300},
		Ns: "ns.example.com.", Mbox: "h.example.com.", Serial: 1, Minttl: 30}
	switch {
	case q.Name == "www.example.com." && q.Qtype == mdns.TypeA:
		m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
	case q.Name == "www.example.com.":
		m.Ns = []mdns.RR{soa}
	case q.Name == "db.corp.internal.":
		m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 9)}}
	default:
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{soa}
	}
	_ = w.WriteMsg(m)
}

// clock is a settable time for cache expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestForwardCacheServeStale: upstream answers are cached for their TTL
// (negative ones for the SOA minimum), asked again after, and served stale with
// a 30 s TTL when the upstream fails, until the stale window ends.
func TestForwardCacheServeStale(t *testing.T) {
	up := newFakeUpstream(t)
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	cfg := Defaults()
	cfg.Upstreams = []string{up.addr}
	cfg.ServeStale = 10 * time.Minute
	h := newTestHandler(t, specCluster(), specPods, cfg, WithClock(clk.Now))

	r := query(h, "www.example.com.", mdns.TypeA, "")
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Authoritative || !r.RecursionAvailable {
		t.Fatalf("first answer: %v", r)
	}
	clk.Add(20 * time.Second)
	r = query(h, "www.example.com.", mdns.TypeA, "")
	if n := up.count("www.example.com.", mdns.TypeA); n != 1 {
		t.Errorf("upstream asked %d times within the TTL, want 1", n)
	}
	if ttl := r.Answer[0].Header().Ttl; ttl != 40 {
		t.Errorf("cached TTL %d, want 60-20 = 40", ttl)
	}
	// Negative: NXDOMAIN cached for min(SOA TTL, minimum) = 30 s.
	query(h, "nope.example.com.", mdns.TypeA, "")
	clk.Add(10 * time.Second)
	if r := query(h, "nope.example.com.", mdns.TypeA, ""); r.Rcode != mdns.RcodeNameError || up.count("nope.example.com.", mdns.TypeA) != 1 {
		t.Errorf("negative answer not cached: %s, upstream asked %d", mdns.RcodeToString[r.Rcode], up.count("nope.example.com.", mdns.TypeA))
	}
	// NODATA is cached too.
	query(h, "www.example.com.", mdns.TypeAAAA, "")
	query(h, "www.example.com.", mdns.TypeAAAA, "")
	if n := up.count("www.example.com.", mdns.TypeAAAA); n != 1 {
		t.Errorf("NODATA asked %d times, want 1", n)
	}
	// Past the TTL: asked again.
	clk.Add(60 * time.Second)
	query(h, "www.example.com.", mdns.TypeA, "")
	if n := up.count("www.example.com.", mdns.TypeA); n != 2 {
		t.Errorf("upstream asked %d times after expiry, want 2", n)
	}
	// Upstream down: the stale answer, with TTL 30.
	up.failing.Store(true)
	clk.Add(2 * time.Minute)
	r = query(h, "www.example.com.", mdns.TypeA, "")
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
		t.Errorf("stale answer: %v", r)
	}
	// Beyond the stale window: SERVFAIL.
	clk.Add(15 * time.Minute)
	if r := query(h, "www.example.com.", mdns.TypeA, ""); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("past the stale window: %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
}

// TestCacheBounded: the cache never holds more than its size.
func TestCacheBounded(t *testing.T) {
	c := NewCache(3)
	now := time.Now()
	for i := 0; i < 10; i++ {
		m := new(mdns.Msg)
		m.SetQuestion("x.", mdns.TypeA)
		m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: "x.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(1, 1, 1, byte(i))}}
		c.put(cacheKey{name: string(rune('a'+i)) + ".", qtype: mdns.TypeA}, m, now, time.Hour, time.Hour)
	}
	if c.Len() != 3 {
		t.Errorf("%d entries, want 3", c.Len())
	}
	// Not cached: SERVFAIL, truncated, negative without SOA.
	for _, m := range []*mdns.Msg{{MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeServerFailure}}, {MsgHdr: mdns.MsgHdr{Truncated: true}}, {MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeNameError}}} {
		c2 := NewCache(10)
		c2.put(cacheKey{name: "y."}, m, now, time.Hour, time.Hour)
		if c2.Len() != 0 {
			t.Errorf("cached %v", m.MsgHdr)
		}
	}
}

// TestStubDomainsAndNoUpstream: a stub domain's names go to its servers; with
// no upstream other names are REFUSED and nothing is sent anywhere.
func TestStubDomainsAndNoUpstream(t *testing.T) {
	stub := newFakeUpstream(t)
	cfg := Defaults()
	cfg.StubDomains = map[string][]string{"corp.internal.": {stub.addr}}
	h := newTestHandler(t, specCluster(), specPods, cfg)
	if r := query(h, "db.corp.internal.", mdns.TypeA, ""); len(r.Answer) != 1 || stub.count("db.corp.internal.", mdns.TypeA) != 1 {
		t.Errorf("stub domain: %v", r)
	}
	if r := query(h, "www.example.com.", mdns.TypeA, ""); r.Rcode != mdns.RcodeRefused || stub.count("www.example.com.", mdns.TypeA) != 0 {
		t.Errorf("no upstream: %s", mdns.RcodeToString[r.Rcode])
	}
}

// TestUpstreamFailover: a dead upstream is skipped for the next one.
func TestUpstreamFailover(t *testing.T) {
	up := newFakeUpstream(t)
	dead, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	cfg := Defaults()
	cfg.Upstreams = []string{dead.LocalAddr().String(), up.addr}
	cfg.UpstreamTimeout = 200 * time.Millisecond
	h := newTestHandler(t, specCluster(), specPods, cfg)
	for i := 0; i < 2; i++ { // either order of the rotation
		if r := query(h, "x"+string(rune('a'+i))+".example.com.", mdns.TypeA, ""); r.Rcode != mdns.RcodeNameError {
			t.Errorf("with one dead upstream: %s", mdns.RcodeToString[r.Rcode])
		}
	}
}

// TestAutopath: a pod's first-search-domain query is answered with a CNAME to
// the name its search list would reach, in the zone or upstream; others are
// left alone.
func TestAutopath(t *testing.T) {
	up := newFakeUpstream(t)
	cfg := Defaults()
	cfg.Upstreams = []string{up.addr}
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	h := newTestHandler(t, specCluster(), specPods, cfg, WithClock(clk.Now))
	const client = "10.244.1.50" // a pod of ns1
	for _, tc := range []struct {
		name, qname, client string
		rcode               int
		answer              []string
	}{
		{"another namespace's Service", "kubernetes.default.ns1.svc.cluster.local.", client, mdns.RcodeSuccess, []string{
			"kubernetes.default.ns1.svc.cluster.local. 5 IN CNAME kubernetes.default.svc.cluster.local.",
			"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"}},
		{"external name", "www.example.com.ns1.svc.cluster.local.", client, mdns.RcodeSuccess, []string{
			"www.example.com. 60 IN A 192.0.2.1",
			"www.example.com.ns1.svc.cluster.local. 5 IN CNAME www.example.com."}},
		{"case kept", "WWW.example.com.NS1.svc.cluster.local.", client, mdns.RcodeSuccess, []string{
			"WWW.example.com.NS1.svc.cluster.local. 5 IN CNAME WWW.example.com.",
			"www.example.com. 60 IN A 192.0.2.1"}},
		{"own Service: normal answer", "web.ns1.svc.cluster.local.", client, mdns.RcodeSuccess, []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{"nothing exists: NXDOMAIN", "nope.invalid.ns1.svc.cluster.local.", client, mdns.RcodeNameError, nil},
		{"not a pod: no autopath", "kubernetes.default.ns1.svc.cluster.local.", "10.9.9.9", mdns.RcodeNameError, nil},
		{"pod of ns1 asking under ns2", "kubernetes.default.ns2.svc.cluster.local.", client, mdns.RcodeNameError, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := query(h, tc.qname, mdns.TypeA, tc.client)
			if r.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
			if got := rrs(r.Answer); !equal(got, tc.answer) {
				t.Errorf("answer %q, want %q", got, tc.answer)
			}
		})
	}
	// Without autopath the same query is NXDOMAIN.
	cfg.Autopath = false
	h.SetConfig(cfg)
	if r := query(h, "kubernetes.default.ns1.svc.cluster.local.", mdns.TypeA, client); r.Rcode != mdns.RcodeNameError {
		t.Errorf("autopath off: %s", mdns.RcodeToString[r.Rcode])
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
