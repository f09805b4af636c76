package fastpath

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net"
	"net/netip"
	"testing"

	"amime.dev/amime/internal/netns"
)

var (
	vtepHere  = MAC{0x0e, 0, 0, 0, 0, 1}
	vtepThere = MAC{0x0e, 0, 0, 0, 0, 2}
	underHere = netip.MustParseAddr("192.168.77.1")
	underPeer = netip.MustParseAddr("192.168.77.2")
)

// vxlanPacket is a VXLAN packet as the kernel's device sends it over IPv4:
// outer Ethernet and IPv4 (DF, TTL 64, a valid checksum), UDP without a
// checksum, the VXLAN header with the I flag, then inner.
type vxlanPacket struct {
	dstMAC, srcMAC MAC
	src, dst       netip.Addr
	sport, dport   uint16
	vni            uint32
	flags          byte // 0: the I flag alone
	udpChecksum    uint16
	badChecksum    bool
	inner          []byte
}

func (p vxlanPacket) bytes() []byte {
	var b bytes.Buffer
	b.Write(p.dstMAC[:])
	b.Write(p.srcMAC[:])
	b.Write([]byte{0x08, 0x00})
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+8+len(p.inner)))
	ip[6] = 0x40
	ip[8], ip[9] = 64, protoUDP
	copy(ip[12:], p.src.AsSlice())
	copy(ip[16:], p.dst.AsSlice())
	sum := ipChecksum(ip)
	if p.badChecksum {
		sum++
	}
	binary.BigEndian.PutUint16(ip[10:], sum)
	b.Write(ip)
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], p.sport)
	binary.BigEndian.PutUint16(udp[2:], p.dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+8+len(p.inner)))
	binary.BigEndian.PutUint16(udp[6:], p.udpChecksum)
	b.Write(udp)
	vx := make([]byte, 8)
	vx[0] = 0x08
	if p.flags != 0 {
		vx[0] = p.flags
	}
	binary.BigEndian.PutUint32(vx[4:], p.vni<<8)
	b.Write(vx)
	b.Write(p.inner)
	return b.Bytes()
}

// TestProgramEncapsulates: from a pod, a packet the FIB sends into the VXLAN
// device leaves encapsulated as the device would, out of the underlay, with
// the MACs of the underlay's next hop. Two namespaces joined by a veth, with a
// real VXLAN device on each, play two nodes; the stack's own path across them
// leaves the conntrack entry. Without a forwarding entry for the next hop, or
// with a packet too big for the tunnel, the stack takes the packet.
func TestProgramEncapsulates(t *testing.T) {
	other := testNetns(t, "vx-other", []string{"ip", "link", "set", "lo", "up"})
	// overlay is a node's VXLAN device, as the agent programs it, towards
	// the one other node.
	overlay := func(local string, mac MAC, vtep, peerVTEP string, peerMAC MAC, peer string) [][]string {
		return [][]string{
			{"ip", "link", "add", "vx", "address", mac.String(), "mtu", "1450", "type", "vxlan", "id", "1", "dstport", "8472", "local", local, "dev", "fp", "nolearning"},
			{"ip", "link", "set", "vx", "up"},
			{"ip", "addr", "add", vtep + "/32", "dev", "vx"},
			{"ip", "neigh", "replace", peerVTEP, "lladdr", peerMAC.String(), "dev", "vx", "nud", "permanent"},
			{"bridge", "fdb", "append", peerMAC.String(), "dev", "vx", "dst", peer},
			{"ip", "route", "add", peerVTEP + "/24", "via", peerVTEP, "dev", "vx", "onlink"},
		}
	}
	here := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "10.44.0.2/32", "dev", "lo"},
		{"ip", "link", "add", "fp", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "fp-peer", "address", "02:00:00:00:00:02", "netns", other},
		{"ip", "link", "set", "fp", "up"},
		{"ip", "addr", "add", "192.168.77.1/24", "dev", "fp"},
		{"ip", "neigh", "replace", "192.168.77.2", "lladdr", "02:00:00:00:00:02", "dev", "fp", "nud", "permanent"},
	}
	here = append(here, overlay("192.168.77.1", vtepHere, "10.44.0.0", "10.45.0.0", vtepThere, "192.168.77.2")...)
	here = append(here,
		[]string{"sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"},
		[]string{"sysctl", "-qw", "net.ipv4.conf.lo.forwarding=1"},
	)
	fx := newFixture(t, "vx", map[netip.Addr]Endpoint{podA: epA}, here...)
	there := [][]string{
		{"ip", "link", "set", "fp-peer", "name", "fp"},
		{"ip", "link", "set", "fp", "up"},
		{"ip", "addr", "add", "192.168.77.2/24", "dev", "fp"},
		{"ip", "addr", "add", "10.45.0.7/32", "dev", "lo"},
	}
	there = append(there, overlay("192.168.77.2", vtepThere, "10.45.0.0", "10.44.0.0", vtepHere, "192.168.77.1")...)
	inNetns(t, other, there...)
	var vxIndex int
	if err := netns.Do(netns.Path(fx.ns), func() error {
		l, err := net.InterfaceByName("vx")
		if err == nil {
			vxIndex = l.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := fx.k.PutRange(netip.MustParsePrefix("10.40.0.0/13"), true); err != nil {
		t.Fatal(err)
	}
	if err := fx.k.PutRange(netip.MustParsePrefix("10.44.0.0/24"), false); err != nil {
		t.Fatal(err)
	}
	if err := fx.k.SetTunnel(Tunnel{IfIndex: vxIndex, Local: underHere, VNI: 1, Port: 8472, MAC: vtepHere}); err != nil {
		t.Fatal(err)
	}
	remotePod := netip.AddrPortFrom(netip.MustParseAddr("10.45.0.7"), 53)
	if err := netns.Do(netns.Path(other), func() error { return serveUDPEcho(t, remotePod) }); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(netns.Path(fx.ns), func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: podA.AsSlice(), Port: 40000}, net.UDPAddrFromAddrPort(remotePod))
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		return echo(c)
	}); err != nil {
		t.Fatalf("exchange with the other node's pod through the VXLAN devices: %v", err)
	}
	f := frame{srcMAC: macA, dstMAC: hostA, src: podA, dst: remotePod.Addr(), proto: protoUDP, hops: 64, sport: 40000, dport: 53}

	if ret, out := fx.run(t, FromPod, f.bytes()); ret != tcActOK || !bytes.Equal(out, f.bytes()) {
		t.Errorf("without the peer's VTEP: returned %d, want the stack with the frame untouched", ret)
	}
	if err := fx.k.PutVTEP(vtepThere, underPeer); err != nil {
		t.Fatal(err)
	}
	ret, out := fx.run(t, FromPod, f.bytes())
	if ret != tcActRedirect {
		t.Fatalf("returned %d, want %d", ret, tcActRedirect)
	}
	if len(out) < 36 {
		t.Fatalf("output of %d bytes", len(out))
	}
	inner := f
	inner.dstMAC, inner.srcMAC, inner.hops = vtepThere, vtepHere, 63
	sport := binary.BigEndian.Uint16(out[34:])
	want := vxlanPacket{dstMAC: MAC{2, 0, 0, 0, 0, 2}, srcMAC: MAC{2, 0, 0, 0, 0, 1}, src: underHere, dst: underPeer,
		sport: sport, dport: 8472, vni: 1, inner: inner.bytes()}
	if !bytes.Equal(out, want.bytes()) {
		t.Errorf("encapsulated:\n got %x\nwant %x", out, want.bytes())
	}
	if sport < tunnelPortBase {
		t.Errorf("outer source port %d, want one of 49152-65535", sport)
	}
	if c := fx.counters(t); c["encapsulated"] != 1 || c["forwarded"] != 0 {
		t.Errorf("counters %v, want 1 encapsulated", c)
	}

	// 1,450 bytes of IPv4 fit the tunnel; one more does not.
	for size, want := range map[int]uint32{1450: tcActRedirect, 1451: tcActOK} {
		big := append(f.bytes(), make([]byte, size-20-28)...)
		binary.BigEndian.PutUint16(big[ethLen+2:], uint16(size))
		big[ethLen+10], big[ethLen+11] = 0, 0
		binary.BigEndian.PutUint16(big[ethLen+10:], ipChecksum(big[ethLen:ethLen+20]))
		if ret, _ := fx.run(t, FromPod, big); ret != want {
			t.Errorf("%d bytes of IPv4: returned %d, want %d", size, ret, want)
		}
	}
	// Without a tunnel the FIB's device is left to itself: the plain path.
	if err := fx.k.SetTunnel(Tunnel{}); err != nil {
		t.Fatal(err)
	}
	if ret, out := fx.run(t, FromPod, f.bytes()); ret != tcActRedirect || len(out) != len(f.bytes()) {
		t.Errorf("without a tunnel: returned %d with %d bytes, want the plain redirect of %d", ret, len(out), len(f.bytes()))
	}
}

// TestProgramDecapsulates: on the underlay, a VXLAN packet for this node whose
// inner packet qualifies loses its tunnel headers and goes into the pod, in
// both inner families; anything the VXLAN device would not take as it is,
// packets from another address than their VTEP's node, and inner packets that
// do not qualify, go to the stack untouched. (A test
// run cannot give a packet a GSO type: e2e TestFastPath shows that GSO
// packets are left to the device.)
func TestProgramDecapsulates(t *testing.T) {
	fx := newFixture(t, "decap", map[netip.Addr]Endpoint{podB: epB, podB6: epB}, podsNetns...)
	remotePod := netip.MustParseAddr("10.45.0.7")
	fx.connect(t, "tcp", netip.AddrPortFrom(remotePod, 40000), netip.AddrPortFrom(podB, 8080))
	fx.connect(t, "tcp", netip.AddrPortFrom(podA6, 40000), netip.AddrPortFrom(podB6, 8080))
	if err := fx.k.SetTunnel(Tunnel{IfIndex: 99, Local: underHere, VNI: 1, Port: 8472, MAC: vtepHere}); err != nil {
		t.Fatal(err)
	}
	if err := fx.k.PutVTEP(vtepThere, underPeer); err != nil {
		t.Fatal(err)
	}
	inner4 := frame{srcMAC: vtepThere, dstMAC: vtepHere, src: remotePod, dst: podB, proto: protoTCP, hops: 63, sport: 40000, dport: 8080}
	inner6 := frame{srcMAC: vtepThere, dstMAC: vtepHere, src: podA6, dst: podB6, proto: protoTCP, hops: 63, sport: 40000, dport: 8080}
	// The test run's device is lo, whose MAC is all zeros: frames to it are
	// the host's.
	packet := func(inner frame) vxlanPacket {
		return vxlanPacket{srcMAC: MAC{2, 0, 0, 0, 0, 2}, src: underPeer, dst: underHere, sport: 50000, dport: 8472, vni: 1, inner: inner.bytes()}
	}
	for name, inner := range map[string]frame{"IPv4": inner4, "IPv6": inner6} {
		ret, out := fx.run(t, FromTunnel, packet(inner).bytes())
		want := inner
		want.dstMAC, want.srcMAC, want.hops = macB, hostB, 62
		if ret != tcActRedirect || !bytes.Equal(out, want.bytes()) {
			t.Errorf("%s: returned %d\n got %x\nwant %x", name, ret, out, want.bytes())
		}
	}
	if c := fx.counters(t); c["decapsulated"] != 2 {
		t.Errorf("counters %v, want 2 decapsulated", c)
	}
	for name, mutate := range map[string]func(*vxlanPacket){
		"another node's address":        func(p *vxlanPacket) { p.dst = underPeer },
		"another port":                  func(p *vxlanPacket) { p.dport = 4789 },
		"another VNI":                   func(p *vxlanPacket) { p.vni = 2 },
		"a flag beside I":               func(p *vxlanPacket) { p.flags = 0x88 },
		"a UDP checksum":                func(p *vxlanPacket) { p.udpChecksum = 0x1234 },
		"a bad IPv4 checksum":           func(p *vxlanPacket) { p.badChecksum = true },
		"another host's MAC":            func(p *vxlanPacket) { p.dstMAC = MAC{2, 0, 0, 0, 0, 9} },
		"an inner frame to another MAC": func(p *vxlanPacket) { f := inner4; f.dstMAC = vtepThere; p.inner = f.bytes() },
		"another node than the VTEP's":  func(p *vxlanPacket) { p.src = netip.MustParseAddr("192.168.77.9") },
		"an unknown VTEP":               func(p *vxlanPacket) { f := inner4; f.srcMAC = MAC{0x0e, 0, 0, 0, 0, 7}; p.inner = f.bytes() },
		"an inner SYN":                  func(p *vxlanPacket) { f := inner4; f.tcpFlags = 0x02; p.inner = f.bytes() },
		"an inner packet for no pod here": func(p *vxlanPacket) {
			f := inner4
			f.dst = netip.MustParseAddr("10.44.0.9")
			p.inner = f.bytes()
		},
		"an inner connection conntrack does not know": func(p *vxlanPacket) { f := inner4; f.sport = 40001; p.inner = f.bytes() },
	} {
		p := packet(inner4)
		mutate(&p)
		if ret, out := fx.run(t, FromTunnel, p.bytes()); ret != tcActOK || !bytes.Equal(out, p.bytes()) {
			t.Errorf("%s: returned %d, want the stack with the packet untouched", name, ret)
		}
	}
	short := packet(inner4).bytes()[:60]
	if ret, _ := fx.run(t, FromTunnel, short); ret != tcActOK {
		t.Errorf("a truncated packet: returned %d, want the stack", ret)
	}
	if err := fx.k.SetTunnel(Tunnel{}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := fx.run(t, FromTunnel, packet(inner4).bytes()); ret != tcActOK {
		t.Errorf("without a tunnel: returned %d, want the stack", ret)
	}
}

// TestKernelTunnelMaps: the tunnel and the VTEPs read back as written.
func TestKernelTunnelMaps(t *testing.T) {
	fx := newFixture(t, "tunmaps", nil)
	tun := Tunnel{IfIndex: 7, Local: underHere, VNI: 0x123456, Port: 8472, MAC: vtepHere}
	if err := fx.k.SetTunnel(tun); err != nil {
		t.Fatal(err)
	}
	if got, err := fx.k.Tunnel(); err != nil || got != tun {
		t.Errorf("tunnel %+v (%v), want %+v", got, err, tun)
	}
	if err := fx.k.SetTunnel(Tunnel{IfIndex: 7, Local: netip.MustParseAddr("fd00::1")}); err == nil {
		t.Error("an IPv6 underlay was accepted")
	}
	if err := fx.k.PutVTEP(vtepThere, underPeer); err != nil {
		t.Fatal(err)
	}
	if err := fx.k.PutVTEP(vtepHere, netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("an IPv6 VTEP was accepted")
	}
	got, err := fx.k.VTEPs()
	if err != nil {
		t.Fatal(err)
	}
	if want := (map[MAC]netip.Addr{vtepThere: underPeer}); !maps.Equal(got, want) {
		t.Errorf("VTEPs %v, want %v", got, want)
	}
	for range 2 {
		if err := fx.k.DeleteVTEP(vtepThere); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := fx.k.VTEPs(); len(got) != 0 {
		t.Errorf("VTEPs after a delete: %v", got)
	}
}

// TestDiscoverTunnel: discovery takes the VXLAN device the routes to other
// nodes' pods go into, its underlay and its unicast forwarding entries (not
// the all-zero flooding ones, nor multicast ones), and leaves a device
// whose encapsulation the programs would not write alike to itself.
func TestDiscoverTunnel(t *testing.T) {
	skipUnlessRoot(t)
	vxlanCmds := func(extra ...string) [][]string {
		return [][]string{
			append([]string{"ip", "link", "add", "amime.vxlan", "address", vtepHere.String(), "type", "vxlan", "id", "1", "dstport", "8472",
				"local", "192.168.88.1", "dev", "eth0", "nolearning"}, extra...),
			{"ip", "link", "set", "amime.vxlan", "up"},
			{"bridge", "fdb", "append", vtepThere.String(), "dev", "amime.vxlan", "dst", "192.168.88.2"},
			{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "amime.vxlan", "dst", "192.168.88.3"},
			{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "amime.vxlan", "dst", "192.168.88.4"},
			{"bridge", "fdb", "append", "01:00:5e:00:00:01", "dev", "amime.vxlan", "dst", "192.168.88.5"},
			{"ip", "route", "add", "10.45.0.0/24", "via", "10.45.0.0", "dev", "amime.vxlan", "onlink", "proto", "161"},
		}
	}
	ns := testNetns(t, "discover", append([][]string{
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "add", "192.168.88.1/24", "dev", "eth0"},
	}, vxlanCmds()...)...)
	discover := Discover([]netip.Prefix{netip.MustParsePrefix("10.44.0.0/14")}, func() []netip.Prefix {
		return []netip.Prefix{netip.MustParsePrefix("10.44.0.0/24")}
	})
	read := func() (local Local, vx, eth0 int) {
		t.Helper()
		err := netns.Do(netns.Path(ns), func() (err error) {
			if local, err = discover(); err != nil {
				return err
			}
			for name, idx := range map[string]*int{"amime.vxlan": &vx, "eth0": &eth0} {
				l, err := net.InterfaceByName(name)
				if err != nil {
					return err
				}
				*idx = l.Index
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return local, vx, eth0
	}
	local, vx, eth0 := read()
	want := Tunnel{IfIndex: vx, Local: netip.MustParseAddr("192.168.88.1"), VNI: 1, Port: 8472, MAC: vtepHere}
	if local.Tunnel != want || local.Underlay != eth0 || !local.Uplinks[vx] {
		t.Errorf("tunnel %+v on %d, uplinks %v; want %+v on %d", local.Tunnel, local.Underlay, local.Uplinks, want, eth0)
	}
	if vteps := (map[MAC]netip.Addr{vtepThere: netip.MustParseAddr("192.168.88.2")}); !maps.Equal(local.VTEPs, vteps) {
		t.Errorf("VTEPs %v, want %v", local.VTEPs, vteps)
	}
	// A fixed TTL is not what the programs write.
	inNetns(t, ns, append([][]string{{"ip", "link", "del", "amime.vxlan"}}, vxlanCmds("ttl", "10")...)...)
	if local, _, _ := read(); local.Tunnel != (Tunnel{}) || local.Underlay != 0 || local.VTEPs != nil {
		t.Errorf("a VXLAN device with a fixed TTL was taken over: %+v on %d, VTEPs %v", local.Tunnel, local.Underlay, local.VTEPs)
	}
}
