package fastpath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/netns"
)

// The program is tested in the kernel (BPF_PROG_TEST_RUN): the verifier
// accepts it, and each crafted frame comes back redirected with its next
// hop's MACs and a lower hop limit, or untouched for the stack. Frames run in
// a throwaway namespace where real connections between the test's addresses
// have left conntrack entries, as the stack leaves them on a node.

const tcActRedirect = 7

var (
	podA    = netip.MustParseAddr("10.44.0.2")
	podB    = netip.MustParseAddr("10.44.0.3")
	podA6   = netip.MustParseAddr("fd00:44::2")
	podB6   = netip.MustParseAddr("fd00:44::3")
	macA    = MAC{0x0a, 0x58, 10, 44, 0, 2}
	macB    = MAC{0x0a, 0x58, 10, 44, 0, 3}
	hostA   = MAC{0xee, 0, 0, 0, 0, 0xa}
	hostB   = MAC{0xee, 0, 0, 0, 0, 0xb}
	epA     = Endpoint{IfIndex: 1, PodMAC: macA, HostMAC: hostA} // the test run's packets come in on lo
	epB     = Endpoint{IfIndex: 77, PodMAC: macB, HostMAC: hostB}
	loIndex = uint32(1)
)

// skbContext is the start of struct __sk_buff up to ifindex, the field
// BPF_PROG_TEST_RUN takes the device from.
type skbContext struct {
	_       [40]byte
	IfIndex uint32
}

func skipUnlessRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
}

// fixture is the program loaded, and a namespace to run it in.
type fixture struct {
	k  *Kernel
	ns string
}

// newFixture loads the program, makes a namespace with cmds run in it, and
// programs the endpoints.
func newFixture(t *testing.T, name string, endpoints map[netip.Addr]Endpoint, cmds ...[]string) *fixture {
	t.Helper()
	skipUnlessRoot(t)
	k, err := LoadKernel()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })
	for a, e := range endpoints {
		if err := k.Put(a, e); err != nil {
			t.Fatal(err)
		}
	}
	// Conntrack runs in a namespace once a rule there uses it, as the
	// node's tables do.
	cmds = append(cmds, []string{"nft", "add table inet fptest { chain c { type filter hook prerouting priority 0; ct state established accept; }; }"})
	return &fixture{k: k, ns: testNetns(t, name, cmds...)}
}

// run runs the program of a role once, in the fixture's namespace, on a frame
// that came in on lo.
func (fx *fixture) run(t *testing.T, role Role, in []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Context: skbContext{IfIndex: loIndex}}
	var ret uint32
	err := netns.Do(netns.Path(fx.ns), func() (err error) {
		// The verdict cache is per CPU, so every run happens on CPU 0: a
		// run that migrated would miss the verdict the previous one left.
		var was, cpu0 unix.CPUSet
		if err := unix.SchedGetaffinity(0, &was); err != nil {
			return fmt.Errorf("read CPU affinity: %w", err)
		}
		cpu0.Set(0)
		if err := unix.SchedSetaffinity(0, &cpu0); err != nil {
			return fmt.Errorf("pin to CPU 0: %w", err)
		}
		defer unix.SchedSetaffinity(0, &was)
		ret, err = fx.k.coll.Programs[programNames[role]].Run(opts)
		return err
	})
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

// connect makes a real connection in the fixture's namespace from src to dst
// (both local there) and exchanges one message each way, so that conntrack
// has a replied entry for it; the sockets stay open until the test ends.
func (fx *fixture) connect(t *testing.T, network string, src, dst netip.AddrPort) {
	t.Helper()
	err := netns.Do(netns.Path(fx.ns), func() error {
		switch network {
		case "tcp":
			l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() })
				buf := make([]byte, 4)
				if _, err := c.Read(buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: 2 * time.Second}
			c, err := d.Dial("tcp", dst.String())
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			return echo(c)
		default:
			if err := serveUDPEcho(t, dst); err != nil {
				return err
			}
			c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			return echo(c)
		}
	})
	if err != nil {
		t.Fatalf("%s %s → %s: %v", network, src, dst, err)
	}
}

// serveUDPEcho answers one datagram at addr, from a socket made in the
// current namespace.
func serveUDPEcho(t *testing.T, addr netip.AddrPort) error {
	srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 4)
		if n, from, err := srv.ReadFromUDPAddrPort(buf); err == nil {
			_, _ = srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return nil
}

// echo sends four bytes and waits for them back.
func echo(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	_, err := c.Read(make([]byte, 4))
	return err
}

func (fx *fixture) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	c, err := fx.k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type frame struct {
	srcMAC, dstMAC MAC
	src, dst       netip.Addr
	proto          byte
	hops           byte
	sport, dport   uint16
	tcpFlags       byte // 0: ACK
	options        bool // an IPv4 header with options
	fragment       bool // an IPv4 fragment
}

// bytes lays the frame out with a valid IPv4 header checksum and eight bytes
// of payload.
func (f frame) bytes() []byte {
	var b bytes.Buffer
	b.Write(f.dstMAC[:])
	b.Write(f.srcMAC[:])
	l4 := make([]byte, 20+8)
	binary.BigEndian.PutUint16(l4[0:], f.sport)
	binary.BigEndian.PutUint16(l4[2:], f.dport)
	if f.proto == protoTCP {
		l4[12], l4[13] = 0x50, 0x10
		if f.tcpFlags != 0 {
			l4[13] = f.tcpFlags
		}
	}
	if f.src.Is4() {
		b.Write([]byte{0x08, 0x00})
		hl := 20
		if f.options {
			hl = 24
		}
		ip := make([]byte, hl)
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(l4)))
		if f.fragment {
			ip[6] = 0x20 // more fragments
		}
		ip[8], ip[9] = f.hops, f.proto
		copy(ip[12:], f.src.AsSlice())
		copy(ip[16:], f.dst.AsSlice())
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		b.Write(ip)
	} else {
		b.Write([]byte{0x86, 0xdd})
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = f.proto, f.hops
		copy(ip[8:], f.src.AsSlice())
		copy(ip[24:], f.dst.AsSlice())
		b.Write(ip)
	}
	b.Write(l4)
	return b.Bytes()
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// podsNetns are the commands that give a namespace the test pods' addresses.
var podsNetns = [][]string{
	{"ip", "link", "set", "lo", "up"},
	{"ip", "addr", "add", "10.44.0.2/32", "dev", "lo"},
	{"ip", "addr", "add", "10.44.0.3/32", "dev", "lo"},
	{"ip", "addr", "add", "10.45.0.7/32", "dev", "lo"},
	{"ip", "addr", "add", "fd00:44::2/128", "dev", "lo", "nodad"},
	{"ip", "addr", "add", "fd00:44::3/128", "dev", "lo", "nodad"},
}

func TestProgramDecides(t *testing.T) {
	fx := newFixture(t, "decides", map[netip.Addr]Endpoint{podA: epA, podB: epB, podA6: epA, podB6: epB,
		netip.MustParseAddr("10.44.0.9"): {IfIndex: 99, PodMAC: MAC{0x0a, 0x58, 10, 44, 0, 9}}}, podsNetns...)
	ap := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	fx.connect(t, "tcp", ap(podA, 40000), ap(podB, 8080))
	fx.connect(t, "udp", ap(podA, 40000), ap(podB, 8080))
	fx.connect(t, "udp", ap(podA6, 40000), ap(podB6, 53))
	fx.connect(t, "tcp", ap(podA6, 40000), ap(podB6, 53))
	ab := frame{srcMAC: macA, dstMAC: hostA, src: podA, dst: podB, proto: protoTCP, hops: 64, sport: 40000, dport: 8080}
	ab6 := frame{srcMAC: macA, dstMAC: hostA, src: podA6, dst: podB6, proto: protoUDP, hops: 64, sport: 40000, dport: 53}
	with := func(f frame, change func(*frame)) frame { change(&f); return f }
	for _, tc := range []struct {
		name     string
		frame    frame
		redirect bool
	}{
		{"tcp between two pods", ab, true},
		{"udp between two pods", with(ab, func(f *frame) { f.proto = protoUDP }), true},
		{"ipv6 udp between two pods", ab6, true},
		{"ipv6 tcp between two pods", with(ab6, func(f *frame) { f.proto = protoTCP }), true},
		{"a reply", with(ab, func(f *frame) {
			f.src, f.dst, f.sport, f.dport, f.srcMAC, f.dstMAC = podB, podA, 8080, 40000, macB, hostB
		}), false}, // pod B's packets come in on its own veth, not lo
		{"a connection conntrack has not seen", with(ab, func(f *frame) { f.sport = 40001 }), false},
		{"syn", with(ab, func(f *frame) { f.tcpFlags = 0x02 }), false},
		{"fin", with(ab, func(f *frame) { f.tcpFlags = 0x11 }), false},
		{"rst", with(ab, func(f *frame) { f.tcpFlags = 0x04 }), false},
		{"icmp goes to the stack", with(ab, func(f *frame) { f.proto = 1 }), false},
		{"icmpv6 goes to the stack", with(ab6, func(f *frame) { f.proto = 58 }), false},
		{"sctp goes to the stack", with(ab, func(f *frame) { f.proto = 132 }), false},
		{"a source address of another veth", with(ab, func(f *frame) { f.src = netip.MustParseAddr("10.44.0.9") }), false},
		{"an unknown source address", with(ab, func(f *frame) { f.src = netip.MustParseAddr("10.44.0.200") }), false},
		{"the pod's address with another MAC", with(ab, func(f *frame) { f.srcMAC = MAC{0x0a, 0x58, 1, 2, 3, 4} }), false},
		{"ipv6 with another MAC", with(ab6, func(f *frame) { f.srcMAC[5]++ }), false},
		{"a destination off the node", with(ab, func(f *frame) { f.dst = netip.MustParseAddr("10.45.0.3") }), false},
		{"a Service address", with(ab, func(f *frame) { f.dst = netip.MustParseAddr("10.96.0.10") }), false},
		{"ttl 1 (the stack answers time exceeded)", with(ab, func(f *frame) { f.hops = 1 }), false},
		{"hop limit 1", with(ab6, func(f *frame) { f.hops = 1 }), false},
		{"ttl 2", with(ab, func(f *frame) { f.hops = 2 }), true},
		{"ip options", with(ab, func(f *frame) { f.options = true }), false},
		{"a fragment", with(ab, func(f *frame) { f.fragment = true }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.frame.bytes()
			ret, out := fx.run(t, FromPod, in)
			if !tc.redirect {
				if ret != tcActOK {
					t.Fatalf("returned %d, want %d (the stack)", ret, tcActOK)
				}
				if !bytes.Equal(in, out) {
					t.Fatalf("a frame for the stack was changed:\n in %x\nout %x", in, out)
				}
				return
			}
			if ret != tcActRedirect {
				t.Fatalf("returned %d, want %d (redirected)", ret, tcActRedirect)
			}
			want := tc.frame
			want.dstMAC, want.srcMAC, want.hops = macB, hostB, tc.frame.hops-1
			if w := want.bytes(); !bytes.Equal(out, w) {
				t.Fatalf("redirected frame:\n got %x\nwant %x", out, w)
			}
		})
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"arp", append(append(append([]byte{}, hostA[:]...), macA[:]...), append([]byte{0x08, 0x06}, make([]byte, 28)...)...)},
		// (BPF_PROG_TEST_RUN itself refuses frames with a truncated IP header.)
		{"ipv4 without ports", ab.bytes()[:14+20+2]},
		{"tcp without flags", ab.bytes()[:14+20+12]},
		{"ipv6 without ports", ab6.bytes()[:14+40+2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ret, _ := fx.run(t, FromPod, tc.in); ret != tcActOK {
				t.Fatalf("returned %d, want %d (the stack)", ret, tcActOK)
			}
		})
	}
	if c := fx.counters(t); c["redirected"] != 5 || c["nat"] != 0 || c["stack"] != 22 {
		t.Errorf("counters %v, want 5 redirected, 22 to the stack", c)
	}
}

// TestProgramLeavesNATConnectionsToTheStack: packets of a connection whose
// destination nftables rewrites (as the Service proxy does), in either
// direction, go to the stack; those of a plain one are redirected.
func TestProgramLeavesNATConnectionsToTheStack(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	svc := netip.MustParseAddr("10.96.0.5")
	ep := Endpoint{IfIndex: 1, PodMAC: macA, HostMAC: hostA}
	fx := newFixture(t, "nat", map[netip.Addr]Endpoint{lo: ep, svc: ep},
		[]string{"ip", "link", "set", "lo", "up"}, []string{"ip", "route", "add", "local", "10.96.0.0/24", "dev", "lo"})
	cmd := exec.Command("ip", "netns", "exec", fx.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table ip fastpathtest {
	chain out { type nat hook output priority -100; udp dport 9999 dnat to 127.0.0.1:9998; }
}`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	// The Service connection: to 10.96.0.5:9999, rewritten to 127.0.0.1:9998.
	err := netns.Do(netns.Path(fx.ns), func() error {
		if err := serveUDPEcho(t, netip.AddrPortFrom(lo, 9998)); err != nil {
			return err
		}
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41000}, &net.UDPAddr{IP: svc.AsSlice(), Port: 9999})
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		return echo(c)
	})
	if err != nil {
		t.Fatal(err)
	}
	fx.connect(t, "udp", netip.AddrPortFrom(lo, 41001), netip.AddrPortFrom(lo, 9997))
	f := frame{srcMAC: macA, dstMAC: hostA, proto: protoUDP, hops: 64}
	for _, tc := range []struct {
		name         string
		src, dst     netip.Addr
		sport, dport uint16
		want         uint32
	}{
		{"the rewritten connection's reply", lo, lo, 9998, 41000, tcActOK},
		{"the rewritten connection's request", lo, svc, 41000, 9999, tcActOK},
		{"the plain connection's request", lo, lo, 41001, 9997, tcActRedirect},
		{"the plain connection's reply", lo, lo, 9997, 41001, tcActRedirect},
	} {
		f.src, f.dst, f.sport, f.dport = tc.src, tc.dst, tc.sport, tc.dport
		if ret, _ := fx.run(t, FromPod, f.bytes()); ret != tc.want {
			t.Errorf("%s: returned %d, want %d", tc.name, ret, tc.want)
		}
	}
	if c := fx.counters(t); c["nat"] != 2 {
		t.Errorf("counters %v, want 2 nat", c)
	}
}

// testNetns makes a network namespace for one test, runs the commands in it
// and removes it at the end.
func testNetns(t *testing.T, name string, cmds ...[]string) string {
	t.Helper()
	name = fmt.Sprintf("amime-fptest-%s-%d", name, os.Getpid())
	_ = netns.Delete(name)
	if err := netns.Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(name) })
	inNetns(t, name, cmds...)
	return name
}

// inNetns runs commands in a namespace.
func inNetns(t *testing.T, name string, cmds ...[]string) {
	t.Helper()
	for _, args := range cmds {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
}

// TestProgramFromOtherNodes: on a device other nodes' packets come in on,
// packets for a pod of this node go into it, whatever their source; the rest
// goes to the stack.
func TestProgramFromOtherNodes(t *testing.T) {
	fx := newFixture(t, "nodes", map[netip.Addr]Endpoint{podB: epB}, podsNetns...)
	remotePod := netip.MustParseAddr("10.45.0.7")
	fx.connect(t, "tcp", netip.AddrPortFrom(remotePod, 40000), netip.AddrPortFrom(podB, 8080))
	vtep := MAC{0x0e, 0, 0, 0, 0, 1}
	in := frame{srcMAC: vtep, dstMAC: hostA, src: remotePod, dst: podB, proto: protoTCP, hops: 63, sport: 40000, dport: 8080}
	ret, out := fx.run(t, FromNodes, in.bytes())
	want := in
	want.dstMAC, want.srcMAC, want.hops = macB, hostB, 62
	if ret != tcActRedirect || !bytes.Equal(out, want.bytes()) {
		t.Errorf("to a local pod: returned %d\n got %x\nwant %x", ret, out, want.bytes())
	}
	for _, dst := range []netip.Addr{netip.MustParseAddr("10.45.0.8"), podA} {
		f := in
		f.dst = dst
		if ret, _ := fx.run(t, FromNodes, f.bytes()); ret != tcActOK {
			t.Errorf("to %s (no endpoint): returned %d; want the stack", dst, ret)
		}
	}
}

// TestProgramForwardsToOtherNodes: from a pod, a packet for another node's
// pod range leaves through the device and with the MACs the FIB gives (a
// namespace routing to a second one that plays the other node); this node's
// own range, addresses outside the cluster and destinations without a
// complete FIB answer go to the stack.
func TestProgramForwardsToOtherNodes(t *testing.T) {
	other := testNetns(t, "fib-other", []string{"ip", "link", "set", "lo", "up"})
	fx := newFixture(t, "fib", map[netip.Addr]Endpoint{podA: epA},
		[]string{"ip", "link", "set", "lo", "up"},
		[]string{"ip", "addr", "add", "10.44.0.2/32", "dev", "lo"},
		[]string{"ip", "link", "add", "fp0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "fp1", "address", "02:00:00:00:00:02", "netns", other},
		[]string{"ip", "link", "set", "fp0", "up"},
		[]string{"ip", "addr", "add", "192.168.77.1/24", "dev", "fp0"},
		[]string{"ip", "neigh", "replace", "192.168.77.2", "lladdr", "02:00:00:00:00:02", "dev", "fp0", "nud", "permanent"},
		[]string{"ip", "route", "add", "10.45.0.0/24", "via", "192.168.77.2"},
		[]string{"ip", "route", "add", "10.46.0.0/24", "via", "192.168.77.3"}, // no neighbour yet
		[]string{"sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"},
		[]string{"sysctl", "-qw", "net.ipv4.conf.lo.forwarding=1"},
	)
	inNetns(t, other,
		[]string{"ip", "link", "set", "fp1", "up"},
		[]string{"ip", "addr", "add", "192.168.77.2/24", "dev", "fp1"},
		[]string{"ip", "addr", "add", "10.45.0.7/32", "dev", "lo"},
		[]string{"ip", "route", "add", "10.44.0.0/24", "via", "192.168.77.1"},
	)
	for p, remote := range map[string]bool{"10.40.0.0/13": true, "10.44.0.0/24": false} {
		if err := fx.k.PutRange(netip.MustParsePrefix(p), remote); err != nil {
			t.Fatal(err)
		}
	}
	// A UDP exchange with the other node's pod: its server listens there.
	remotePod := netip.AddrPortFrom(netip.MustParseAddr("10.45.0.7"), 53)
	err := netns.Do(netns.Path(other), func() error { return serveUDPEcho(t, remotePod) })
	if err != nil {
		t.Fatal(err)
	}
	err = netns.Do(netns.Path(fx.ns), func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: podA.AsSlice(), Port: 40000}, net.UDPAddrFromAddrPort(remotePod))
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		return echo(c)
	})
	if err != nil {
		t.Fatalf("exchange with the other node's pod: %v", err)
	}
	f := frame{srcMAC: macA, dstMAC: hostA, src: podA, proto: protoUDP, hops: 64, sport: 40000, dport: 53}
	for _, tc := range []struct {
		dst  string
		want uint32
	}{
		{"10.45.0.7", tcActRedirect},
		{"10.44.0.77", tcActOK}, // this node's range, no such pod
		{"10.46.0.7", tcActOK},  // no neighbour yet: the stack resolves it
		{"10.47.0.7", tcActOK},  // no route
		{"192.168.77.2", tcActOK},
		{"8.8.8.8", tcActOK},
	} {
		f.dst = netip.MustParseAddr(tc.dst)
		ret, out := fx.run(t, FromPod, f.bytes())
		if ret != tc.want {
			t.Errorf("to %s: returned %d, want %d", tc.dst, ret, tc.want)
			continue
		}
		want := f
		if ret == tcActRedirect {
			want.dstMAC, want.srcMAC, want.hops = MAC{2, 0, 0, 0, 0, 2}, MAC{2, 0, 0, 0, 0, 1}, 63
		}
		if !bytes.Equal(out, want.bytes()) {
			t.Errorf("to %s:\n got %x\nwant %x", tc.dst, out, want.bytes())
		}
	}
	if c := fx.counters(t); c["forwarded"] != 1 {
		t.Errorf("counters %v, want 1 forwarded", c)
	}
}

// twoFlows connects podA:40000 to podB:8080 over TCP and UDP and returns
// frames of both flows from podA.
func (fx *fixture) twoFlows(t *testing.T) (tcp, udp frame) {
	t.Helper()
	fx.connect(t, "tcp", netip.AddrPortFrom(podA, 40000), netip.AddrPortFrom(podB, 8080))
	fx.connect(t, "udp", netip.AddrPortFrom(podA, 40000), netip.AddrPortFrom(podB, 8080))
	tcp = frame{srcMAC: macA, dstMAC: hostA, src: podA, dst: podB, proto: protoTCP, hops: 64, sport: 40000, dport: 8080}
	udp = tcp
	udp.proto = protoUDP
	return tcp, udp
}

// TestProgramReusesVerdicts: a flow conntrack judged fast stays fast for
// flowTTL without asking conntrack again, and then asks it again.
func TestProgramReusesVerdicts(t *testing.T) {
	fx := newFixture(t, "flows", map[netip.Addr]Endpoint{podA: epA, podB: epB}, podsNetns...)
	tcp, udp := fx.twoFlows(t)
	if ret, _ := fx.run(t, FromPod, tcp.bytes()); ret != tcActRedirect {
		t.Fatalf("first packet: returned %d, want %d", ret, tcActRedirect)
	}
	// Conntrack forgets both connections.
	if err := netns.Do(netns.Path(fx.ns), func() error {
		return netlink.ConntrackTableFlush(netlink.ConntrackTable)
	}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := fx.run(t, FromPod, tcp.bytes()); ret != tcActRedirect {
		t.Errorf("within the verdict's lifetime: returned %d, want %d", ret, tcActRedirect)
	}
	if ret, _ := fx.run(t, FromPod, udp.bytes()); ret != tcActOK {
		t.Errorf("a flow never judged, its entry gone: returned %d, want the stack", ret)
	}
	time.Sleep(time.Duration(flowTTL) + 100*time.Millisecond)
	if ret, _ := fx.run(t, FromPod, tcp.bytes()); ret != tcActOK {
		t.Errorf("after the verdict's lifetime, its entry gone: returned %d, want the stack", ret)
	}
}

// TestKernelMaps: what the controller writes into the maps reads back the
// same, in both families, and deleting what is absent is fine.
func TestKernelMaps(t *testing.T) {
	fx := newFixture(t, "maps", map[netip.Addr]Endpoint{podA: epA, podB6: epB})
	ranges := map[netip.Prefix]bool{netip.MustParsePrefix("10.40.0.0/13"): true, netip.MustParsePrefix("fd00:44::/64"): false}
	for p, remote := range ranges {
		if err := fx.k.PutRange(p, remote); err != nil {
			t.Fatal(err)
		}
	}
	eps, err := fx.k.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[netip.Addr]Endpoint{podA: epA, podB6: epB}, eps); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	got, err := fx.k.Ranges()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ranges, got); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
	for range 2 {
		if err := fx.k.Delete(podB6); err != nil {
			t.Fatal(err)
		}
		if err := fx.k.DeleteRange(netip.MustParsePrefix("fd00:44::/64")); err != nil {
			t.Fatal(err)
		}
	}
	if eps, _ := fx.k.Endpoints(); len(eps) != 1 {
		t.Errorf("endpoints after a delete: %v", eps)
	}
	if got, _ := fx.k.Ranges(); len(got) != 1 {
		t.Errorf("ranges after a delete: %v", got)
	}
}
