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

	"amime.dev/amime/internal/netns"
)

// The program is tested in the kernel (BPF_PROG_TEST_RUN): the verifier
// accepts it, and each crafted frame comes back redirected with its next
// hop's MACs and a lower hop limit, or untouched for the stack.

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

// loadForTest loads the program, or skips where this user cannot.
func loadForTest(t *testing.T) *Kernel {
	t.Helper()
	skipUnlessRoot(t)
	k, err := LoadKernel()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

func skipUnlessRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
}

type frame struct {
	srcMAC, dstMAC MAC
	src, dst       netip.Addr
	proto          byte
	hops           byte
	sport, dport   uint16
	options        bool // an IPv4 header with options
	fragment       bool // an IPv4 fragment
}

// bytes lays the frame out with a valid IPv4 header checksum and eight bytes
// of payload.
func (f frame) bytes() []byte {
	var b bytes.Buffer
	b.Write(f.dstMAC[:])
	b.Write(f.srcMAC[:])
	l4 := make([]byte, 8+8)
	binary.BigEndian.PutUint16(l4[0:], f.sport)
	binary.BigEndian.PutUint16(l4[2:], f.dport)
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

// runRole runs the program of a role once on a frame that came in on lo.
func runRole(k *Kernel, role Role, in []byte) (uint32, []byte, error) {
	out := make([]byte, len(in)+256)
	ret, err := k.coll.Programs[programNames[role]].Run(&ebpf.RunOptions{Data: in, DataOut: out, Context: skbContext{IfIndex: loIndex}})
	return ret, out[:len(in)], err
}

// run runs the pod program.
func run(t *testing.T, k *Kernel, in []byte) (uint32, []byte) {
	t.Helper()
	ret, out, err := runRole(k, FromPod, in)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, out
}

func TestProgramDecides(t *testing.T) {
	k := loadForTest(t)
	for a, e := range map[netip.Addr]Endpoint{podA: epA, podB: epB, podA6: epA, podB6: epB,
		netip.MustParseAddr("10.44.0.9"): {IfIndex: 99, PodMAC: MAC{0x0a, 0x58, 10, 44, 0, 9}}} {
		if err := k.Put(a, e); err != nil {
			t.Fatal(err)
		}
	}
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
			ret, out := run(t, k, in)
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
		{"ipv6 without ports", ab6.bytes()[:14+40+2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ret, _ := run(t, k, tc.in); ret != tcActOK {
				t.Fatalf("returned %d, want %d (the stack)", ret, tcActOK)
			}
		})
	}
	counters, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if counters["redirected"] != 5 || counters["nat"] != 0 || counters["stack"] != 16 {
		t.Errorf("counters %v, want 5 redirected, 16 to the stack", counters)
	}
}

// TestProgramLeavesNATConnectionsToTheStack creates, in a throwaway
// namespace, a connection whose destination nftables rewrites (as the Service
// proxy does) and one it does not; packets of the first, in either direction,
// go to the stack, those of the second are redirected.
func TestProgramLeavesNATConnectionsToTheStack(t *testing.T) {
	skipUnlessRoot(t)
	name := testNetns(t, "nat", []string{"ip", "link", "set", "lo", "up"}, []string{"ip", "route", "add", "local", "10.96.0.0/24", "dev", "lo"})
	nft := `table ip fastpathtest {
	chain out { type nat hook output priority -100; udp dport 9999 dnat to 127.0.0.1:9998; }
}`
	cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nft)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	// No t.Fatal in there: it runs on a goroutine of its own.
	err := netns.Do(netns.Path(name), func() error {
		k, err := LoadKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		lo := netip.MustParseAddr("127.0.0.1")
		svc := netip.MustParseAddr("10.96.0.5")
		for _, a := range []netip.Addr{lo, svc} {
			if err := k.Put(a, Endpoint{IfIndex: 1, PodMAC: macA, HostMAC: hostA}); err != nil {
				return err
			}
		}
		// Two connections from one socket: to the Service port (rewritten)
		// and to a plain port.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer c.Close()
		for _, to := range []*net.UDPAddr{{IP: svc.AsSlice(), Port: 9999}, {IP: net.IPv4(127, 0, 0, 1), Port: 9997}} {
			if _, err := c.WriteToUDP([]byte("x"), to); err != nil {
				return err
			}
		}
		time.Sleep(50 * time.Millisecond)
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		f := frame{srcMAC: macA, dstMAC: hostA, proto: protoUDP, hops: 64}
		for _, tc := range []struct {
			name         string
			src, dst     netip.Addr
			sport, dport uint16
			want         uint32
		}{
			{"the rewritten connection's reply", lo, lo, 9998, port, tcActOK},
			{"the rewritten connection's request", lo, svc, port, 9999, tcActOK},
			{"the plain connection's reply", lo, lo, 9997, port, tcActRedirect},
			{"a packet of no connection", lo, lo, 9996, port, tcActRedirect},
		} {
			f.src, f.dst, f.sport, f.dport = tc.src, tc.dst, tc.sport, tc.dport
			ret, _, err := runRole(k, FromPod, f.bytes())
			if err != nil {
				return err
			}
			if ret != tc.want {
				t.Errorf("%s: returned %d, want %d", tc.name, ret, tc.want)
			}
		}
		counters, err := k.Counters()
		if err != nil {
			return err
		}
		if counters["nat"] != 2 {
			t.Errorf("counters %v, want 2 nat", counters)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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
	for _, args := range cmds {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	return name
}

// TestProgramFromOtherNodes: on a device other nodes' packets come in on,
// packets for a pod of this node go into it, whatever their source; the rest
// goes to the stack.
func TestProgramFromOtherNodes(t *testing.T) {
	k := loadForTest(t)
	if err := k.Put(podB, epB); err != nil {
		t.Fatal(err)
	}
	remotePod := netip.MustParseAddr("10.45.0.7")
	vtep := MAC{0x0e, 0, 0, 0, 0, 1}
	in := frame{srcMAC: vtep, dstMAC: hostA, src: remotePod, dst: podB, proto: protoTCP, hops: 63, sport: 40000, dport: 8080}
	ret, out, err := runRole(k, FromNodes, in.bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.dstMAC, want.srcMAC, want.hops = macB, hostB, 62
	if ret != tcActRedirect || !bytes.Equal(out, want.bytes()) {
		t.Errorf("to a local pod: returned %d\n got %x\nwant %x", ret, out, want.bytes())
	}
	for _, dst := range []netip.Addr{netip.MustParseAddr("10.45.0.8"), podA} {
		f := in
		f.dst = dst
		if ret, _, err := runRole(k, FromNodes, f.bytes()); err != nil || ret != tcActOK {
			t.Errorf("to %s (no endpoint): returned %d, %v; want the stack", dst, ret, err)
		}
	}
}

// TestProgramForwardsToOtherNodes: from a pod, a packet for another node's
// pod range leaves through the device and with the MACs the FIB gives (a
// throwaway namespace with a route and a permanent neighbour); this node's own
// range, addresses outside the cluster and destinations without a complete
// FIB answer go to the stack.
func TestProgramForwardsToOtherNodes(t *testing.T) {
	skipUnlessRoot(t)
	name := testNetns(t, "fib",
		[]string{"ip", "link", "set", "lo", "up"},
		[]string{"ip", "link", "add", "fp0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "fp1"},
		[]string{"ip", "link", "set", "fp0", "up"},
		[]string{"ip", "link", "set", "fp1", "up"},
		[]string{"ip", "addr", "add", "192.168.77.1/24", "dev", "fp0"},
		[]string{"ip", "neigh", "replace", "192.168.77.2", "lladdr", "02:00:00:00:00:02", "dev", "fp0", "nud", "permanent"},
		[]string{"ip", "route", "add", "10.45.0.0/24", "via", "192.168.77.2"},
		[]string{"ip", "route", "add", "10.46.0.0/24", "via", "192.168.77.3"}, // no neighbour yet
		[]string{"sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"},
		[]string{"sysctl", "-qw", "net.ipv4.conf.lo.forwarding=1"},
	)
	err := netns.Do(netns.Path(name), func() error {
		k, err := LoadKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		if err := k.Put(podA, epA); err != nil {
			return err
		}
		for p, remote := range map[string]bool{"10.40.0.0/13": true, "10.44.0.0/24": false} {
			if err := k.PutRange(netip.MustParsePrefix(p), remote); err != nil {
				return err
			}
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
			ret, out, err := runRole(k, FromPod, f.bytes())
			if err != nil {
				return err
			}
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
		counters, err := k.Counters()
		if err != nil {
			return err
		}
		if counters["forwarded"] != 1 {
			t.Errorf("counters %v, want 1 forwarded", counters)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
