package fastpath

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Names of the maps.
const (
	mapEndpoints4 = "endpoints4"
	mapEndpoints6 = "endpoints6"
	mapRanges4    = "ranges4"
	mapRanges6    = "ranges6"
	mapFlows      = "flows"
	mapStats      = "stats"
	mapTunnel     = "tunnel"
	mapVTEPs      = "vteps"
	mapTimeouts   = "cttimeouts"
)

// Role is where a program is attached.
type Role int

const (
	// FromPod: the node-side veth of a pod. Its packets may go to a pod of
	// this node or, through the FIB, to the device that reaches another
	// node's pods.
	FromPod Role = iota
	// FromNodes: a device packets from other nodes come in on (the VXLAN
	// device, or the underlay in native mode). Its packets may go to a pod of
	// this node.
	FromNodes
	// FromTunnel: the underlay device the overlay's VXLAN packets come in
	// on. It takes the VXLAN packets addressed to this node apart itself and
	// delivers their inner packet to a pod of this node, when the inner
	// packet qualifies as one from FromNodes would.
	FromTunnel
)

func (r Role) String() string { return [...]string{"pod", "nodes", "tunnel"}[r] }

// programNames are the programs by role.
var programNames = [...]string{FromPod: "amime_fp_pod", FromNodes: "amime_fp_nodes", FromTunnel: "amime_fp_tunnel"}

// Counters of the stats map (per CPU), in the order of their indexes.
var counterNames = []string{"redirected", "forwarded", "nat", "stack", "encapsulated", "decapsulated"}

const (
	counterRedirected = iota
	counterForwarded
	counterNAT
	counterStack
	counterEncapsulated
	counterDecapsulated
)

// valueSize is the size of an endpoint: ifindex (u32), the pod's MAC, the
// node-side veth's MAC, two bytes of padding.
const valueSize = 16

// Offsets in struct __sk_buff (uapi, stable).
const (
	skbLen         = 0
	skbPktType     = 4
	skbVlanPresent = 20
	skbIfindex     = 40
	skbData        = 76
	skbGSOSize     = 176
	skbDataEnd     = 80
)

// Offsets in the frame, counted from the start of the Ethernet header.
const (
	ethLen   = 14
	ip4Len   = 20
	ip6Len   = 40
	ip4TTL   = ethLen + 8
	ip4Proto = ethLen + 9
	ip4Check = ethLen + 10
	ip4Src   = ethLen + 12
	ip4Dst   = ethLen + 16
	ip6Next  = ethLen + 6
	ip6Hops  = ethLen + 7
	ip6Src   = ethLen + 8
	ip6Dst   = ethLen + 24
)

// Stack slots, below the frame pointer: the conntrack tuple (struct
// bpf_sock_tuple, 36 bytes), its options (struct bpf_ct_opts, 16 bytes), the
// key of a counter, the FIB lookup's parameters (struct bpf_fib_lookup, 64
// bytes) and the key of a range lookup (prefix length and address).
const (
	stackTuple   = -40
	stackOpts    = -56
	stackCounter = -64
	stackFIB     = -128
	stackRange   = -152
	stackVTEP    = -160 // the peer VTEP's MAC, zero-padded to 8 bytes: the key of the vteps map
	stackPeer    = -168 // the peer VTEP's underlay address
	stackMTU     = -176 // bpf_check_mtu's length in and MTU out
	stackDest    = -184 // R9, the destination endpoint, while R9 holds the conntrack entry
	ctOptsSize   = 16
	fibSize      = 64
)

// Offsets in struct bpf_fib_lookup (uapi).
const (
	fibFamily  = 0
	fibProto   = 1
	fibPorts   = 2
	fibIfindex = 8
	fibSrc     = 16
	fibDst     = 32
	fibSMAC    = 52
	fibDMAC    = 58
)

const (
	tcActOK          = 0
	ipsNATMask       = 0x30 // IPS_SRC_NAT | IPS_DST_NAT: the connection's addresses are rewritten
	ipsSeenReply     = 0x02 // IPS_SEEN_REPLY: the stack has let a reply through
	ipsAssured       = 0x04 // IPS_ASSURED: the connection is established, early drop spares it
	tcpEstablished   = 3    // TCP_CONNTRACK_ESTABLISHED
	tcpFinSynRst     = 0x07
	currentNetns     = -1 // BPF_F_CURRENT_NETNS
	ethPIPv4LE       = 0x0008
	ethPIPv6LE       = 0xdd86
	ip4FragLE        = 0xff3f // the fragment offset and MF bits, read as a little-endian half word
	protoTCP         = 6
	protoUDP         = 17
	maxEndpoints     = 65536
	maxRanges        = 1024
	maxFlows         = 65536
	flowTTL          = 1_000_000_000 // ns a flow's conntrack verdict is reused
	programLicense   = "GPL"         // bpf_redirect_peer and the conntrack kfuncs are GPL-only
	checksumOverflow = 0xffff
	tcActShot        = 2
	packetHost       = 0 // PACKET_HOST: the frame is addressed to the device's MAC
	maxVTEPs         = 4096
)

// The overlay's encapsulation, as the kernel's VXLAN device writes it over an
// IPv4 underlay: outer Ethernet, IPv4 (20), UDP (8), VXLAN (8), then the inner
// frame with its own Ethernet header.
const (
	tunnelLen       = ip4Len + 8 + 8 + ethLen // the room the encapsulation adds, and where the inner frame starts
	outerUDP        = ethLen + ip4Len
	outerVXLAN      = outerUDP + 8
	vxlanFlagsLE    = 0x08   // the VXLAN header's first word with the I flag alone (a valid VNI), read little-endian
	outerIPHeadLE   = 0x0045 // version 4, 20 bytes, TOS 0
	outerDFLE       = 0x0040 // don't fragment, offset 0: the segments are checked against the tunnel's MTU
	outerTTLUDPLE   = 0x1140 // TTL 64, protocol UDP
	tunnelPortMask  = 0x3fff // outer source ports 49152-65535, from the flow's hash, as ECMP and RSS expect
	tunnelPortBase  = 0xc000
	adjRoomMAC      = 1 // BPF_ADJ_ROOM_MAC: right after the Ethernet header
	adjFixedGSO     = 1 << 0
	adjEncapL3IPv4  = 1 << 1
	adjEncapL4UDP   = 1 << 4
	adjEncapL2Eth   = 1 << 6
	adjDecapL3IPv4  = 1 << 7
	adjDecapL3IPv6  = 1 << 8
	adjEncapL2Shift = 56
	mtuCheckSegs    = 1 // BPF_MTU_CHK_SEGS: check each segment of a GSO packet
	// encapFlags: keep the segment size, mark the packet UDP-tunnelled with an
	// inner Ethernet header, so that segmentation (where any) writes both
	// headers per segment.
	encapFlags = adjFixedGSO | adjEncapL3IPv4 | adjEncapL4UDP | adjEncapL2Eth | ethLen<<adjEncapL2Shift
)

// Offsets in the tunnel map's one value: the VXLAN device the FIB names for
// other nodes' pods (0: no tunnel the program may take over), this node's
// underlay address, the VNI as the VXLAN header carries it, the UDP port and
// the device's MAC.
const (
	tunnelIfindex = 0
	tunnelLocal   = 4
	tunnelVNI     = 8
	tunnelPort    = 12
	tunnelMAC     = 16
	tunnelSize    = 24
)

// Offsets in the conntrack timeouts map's one value, in milliseconds: what the
// stack gives an established TCP connection, a UDP stream, and a UDP flow
// younger than a stream (0: leave the entry's timeout alone).
const (
	timeoutTCPEstablished = 0
	timeoutUDPStream      = 4
	timeoutUDP            = 8
	timeoutsSize          = 12
)

// kernelSymbols are what the program needs from the running kernel's BTF: the
// conntrack kfuncs and where struct nf_conn keeps its status bits, its TCP
// state and when a UDP flow becomes a stream.
type kernelSymbols struct {
	ctLookup, ctRelease, ctChangeTimeout, ctChangeStatus btf.TypeID
	statusOffset, tcpStateOffset, udpStreamOffset        int16
}

// lookupKernelSymbols reads them from the kernel's BTF.
func lookupKernelSymbols() (kernelSymbols, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return kernelSymbols{}, fmt.Errorf("kernel BTF: %w", err)
	}
	var syms kernelSymbols
	kfuncs := map[string]*btf.TypeID{
		"bpf_skb_ct_lookup":     &syms.ctLookup,
		"bpf_ct_release":        &syms.ctRelease,
		"bpf_ct_change_timeout": &syms.ctChangeTimeout,
		"bpf_ct_change_status":  &syms.ctChangeStatus,
	}
	for name, id := range kfuncs {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			return kernelSymbols{}, fmt.Errorf("kfunc %s (conntrack built in or loaded?): %w", name, err)
		}
		if *id, err = spec.TypeID(fn); err != nil {
			return kernelSymbols{}, err
		}
	}
	var conn *btf.Struct
	if err := spec.TypeByName("nf_conn", &conn); err != nil {
		return kernelSymbols{}, fmt.Errorf("struct nf_conn: %w", err)
	}
	for off, path := range map[*int16][]string{
		&syms.statusOffset:    {"status"},
		&syms.tcpStateOffset:  {"proto", "tcp", "state"},
		&syms.udpStreamOffset: {"proto", "udp", "stream_ts"},
	} {
		if *off, err = memberOffset(conn, path); err != nil {
			return kernelSymbols{}, err
		}
	}
	return syms, nil
}

// memberOffset is where the member at path (a member of a member ...) starts
// in t, in bytes.
func memberOffset(t btf.Type, path []string) (int16, error) {
	var bytes uint32
	for i, name := range path {
		var members []btf.Member
		switch c := btf.UnderlyingType(t).(type) {
		case *btf.Struct:
			members = c.Members
		case *btf.Union:
			members = c.Members
		}
		found := false
		for _, m := range members {
			if m.Name == name {
				bytes += m.Offset.Bytes()
				t, found = m.Type, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("struct nf_conn has no %s", strings.Join(path[:i+1], "."))
		}
	}
	return int16(bytes), nil
}

// collectionSpec is the programs and their maps.
func collectionSpec(syms kernelSymbols) *ebpf.CollectionSpec {
	endpoints := func(name string, keySize uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: keySize, ValueSize: valueSize, MaxEntries: maxEndpoints}
	}
	// The pod ranges: 1 for other nodes' (the cluster's), 0 for this node's
	// (more specific, so they win the longest-prefix match).
	ranges := func(name string, addrLen uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: ebpf.LPMTrie, KeySize: 4 + addrLen, ValueSize: 4, MaxEntries: maxRanges, Flags: unixNoPrealloc}
	}
	spec := &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			mapEndpoints4: endpoints(mapEndpoints4, 4),
			mapEndpoints6: endpoints(mapEndpoints6, 16),
			mapRanges4:    ranges(mapRanges4, 4),
			mapRanges6:    ranges(mapRanges6, 16),
			// Flows conntrack has judged fast, with when that verdict
			// expires: per CPU, so that the two directions of a connection,
			// handled on two CPUs, share no cache line.
			mapFlows:    {Name: mapFlows, Type: ebpf.LRUCPUHash, KeySize: 40, ValueSize: 8, MaxEntries: maxFlows},
			mapStats:    {Name: mapStats, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(len(counterNames))},
			mapTunnel:   {Name: mapTunnel, Type: ebpf.Array, KeySize: 4, ValueSize: tunnelSize, MaxEntries: 1},
			mapTimeouts: {Name: mapTimeouts, Type: ebpf.Array, KeySize: 4, ValueSize: timeoutsSize, MaxEntries: 1},
			// The other nodes' VTEPs: MAC (zero-padded) → underlay IPv4
			// address, the VXLAN device's forwarding database.
			mapVTEPs: {Name: mapVTEPs, Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: maxVTEPs},
		},
		Programs: map[string]*ebpf.ProgramSpec{},
	}
	for role, name := range programNames {
		spec.Programs[name] = &ebpf.ProgramSpec{Name: name, Type: ebpf.SchedCLS, License: programLicense, Instructions: program(syms, Role(role))}
	}
	return spec
}

// unixNoPrealloc is BPF_F_NO_PREALLOC, which LPM tries require.
const unixNoPrealloc = 1

// family is what differs between the IPv4 and the IPv6 halves of the program.
type family struct {
	suffix            string
	minLen            int16 // Ethernet + IP header + the ports
	src, dst, ports   int16 // offsets in the frame
	addrLen           int16
	endpoints, ranges string
	af                int32 // AF_INET or AF_INET6, for the FIB lookup
	tupleSize         int32
	proto, hops       int16
	ethType           int64                   // the Ethernet type, as a little-endian half word
	decapFlags        int32                   // bpf_skb_adjust_room's flags that take the tunnel off a packet of this family
	header            func() asm.Instructions // checks of the IP header beyond its length (R8: the frame)
	decrementHopLimit func() asm.Instructions // R8: the frame
}

var (
	ipv4 = family{suffix: "4", minLen: ethLen + ip4Len + 4, src: ip4Src, dst: ip4Dst, ports: ethLen + ip4Len, addrLen: 4,
		endpoints: mapEndpoints4, ranges: mapRanges4, af: 2, tupleSize: 12, proto: ip4Proto, hops: ip4TTL,
		ethType: ethPIPv4LE, decapFlags: adjFixedGSO | adjDecapL3IPv4,
		header: func() asm.Instructions {
			return asm.Instructions{
				// No options (their length would move the ports), no fragments.
				asm.LoadMem(asm.R5, asm.R8, ethLen, asm.Byte),
				asm.JNE.Imm(asm.R5, 0x45, "stack"),
				asm.LoadMem(asm.R5, asm.R8, ethLen+6, asm.Half),
				asm.And.Imm(asm.R5, ip4FragLE),
				asm.JNE.Imm(asm.R5, 0, "stack"),
			}
		},
		decrementHopLimit: func() asm.Instructions {
			// As ip_decrease_ttl: the checksum grows by htons(0x0100), with
			// the end-around carry.
			return asm.Instructions{
				asm.LoadMem(asm.R1, asm.R8, ip4Check, asm.Half),
				asm.Add.Imm(asm.R1, 1),
				asm.JLT.Imm(asm.R1, checksumOverflow, "ttl-checked"),
				asm.Add.Imm(asm.R1, 1),
				asm.StoreMem(asm.R8, ip4Check, asm.R1, asm.Half).WithSymbol("ttl-checked"),
				asm.LoadMem(asm.R1, asm.R8, ip4TTL, asm.Byte),
				asm.Sub.Imm(asm.R1, 1),
				asm.StoreMem(asm.R8, ip4TTL, asm.R1, asm.Byte),
			}
		}}
	ipv6 = family{suffix: "6", minLen: ethLen + ip6Len + 4, src: ip6Src, dst: ip6Dst, ports: ethLen + ip6Len, addrLen: 16,
		endpoints: mapEndpoints6, ranges: mapRanges6, af: 10, tupleSize: 36, proto: ip6Next, hops: ip6Hops,
		ethType: ethPIPv6LE, decapFlags: adjFixedGSO | adjDecapL3IPv6,
		header: func() asm.Instructions { return nil }, // extension headers end on a protocol other than TCP or UDP
		decrementHopLimit: func() asm.Instructions {
			return asm.Instructions{
				asm.LoadMem(asm.R1, asm.R8, ip6Hops, asm.Byte),
				asm.Sub.Imm(asm.R1, 1),
				asm.StoreMem(asm.R8, ip6Hops, asm.R1, asm.Byte),
			}
		}}
)

// program is the tc program of a role. It hands a packet on, skipping the
// node's routing, conntrack and nftables, only when the stack would do
// nothing to it but forward it:
//   - IPv4 without options or fragments, or IPv6 without extension headers;
//     TCP or UDP; hop limit above 1;
//   - from a pod (FromPod): the source address belongs to the veth the packet
//     came in on and the frame's source MAC is that pod's (anything else is
//     judged by the stack, which drops spoofed sources), and the pod is in
//     the endpoint maps;
//   - the destination is a pod of this node in the endpoint maps, or (from a
//     pod only) an address of another node's pod range whose next hop the
//     FIB knows with its MAC;
//   - the endpoint maps hold only pods no NetworkPolicy selects (the agent
//     removes a pod before its policy rules are programmed);
//   - TCP without SYN, FIN or RST;
//   - conntrack has an entry for the packet's connection, and the stack has
//     let a reply of it through: every connection starts in the stack, where
//     the policy rules judge it in its true direction, and conntrack keeps
//     that direction for the day a policy selects one of its pods and its
//     packets meet the rules again;
//   - that entry rewrites no address: the packets of Service connections go
//     through the stack for their NAT.
//
// It then does what routing would have done: the MACs of the next hop, a hop
// limit one lower; into a local pod with bpf_redirect_peer, to another node
// out of the FIB's device with bpf_redirect. Everything else goes on into the
// stack unchanged (TC_ACT_OK).
//
// From the tunnel (FromTunnel), the frame is first checked to be a VXLAN
// packet the node's VXLAN device would take: to this node's underlay address
// and MAC, IPv4 without options or fragments and with a valid header
// checksum, the overlay's UDP port without a UDP checksum, the VXLAN header
// with the overlay's VNI and no other flag, an inner frame to the device's
// MAC from a VTEP MAC the forwarding entries give the outer source address,
// and not a GSO packet (tunnelHeaders says why). The inner packet is
// then judged as one from FromNodes; when it goes fast, the program takes the
// encapsulation off and delivers it.
//
// From a pod to another node's pod whose next hop the FIB says is the VXLAN
// device, the program encapsulates the packet as that device would (its MAC
// and the peer's from the FIB and the neighbour entry, the peer's underlay
// address from the forwarding database the agent programs, mirrored in the
// vteps map) and sends it out of the underlay device the FIB names for the
// peer, when every segment fits the VXLAN device's MTU.
func program(syms kernelSymbols, role Role) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // R6: the skb, throughout
		asm.LoadMem(asm.R0, asm.R6, skbVlanPresent, asm.Word),
		asm.JNE.Imm(asm.R0, 0, "stack"),
		asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethLen),
		asm.JGT.Reg(asm.R4, asm.R3, "stack"),
	}
	if role == FromTunnel {
		insns = append(insns, tunnelHeaders()...)
	}
	insns = append(insns,
		asm.LoadMem(asm.R5, asm.R2, int16(role.inner())+12, asm.Half),
		asm.JEq.Imm(asm.R5, ethPIPv4LE, "ipv4"),
		asm.JEq.Imm(asm.R5, ethPIPv6LE, "ipv6"),
		asm.Ja.Label("stack"),
	)
	insns = append(insns, familyPath(ipv4, syms, role)...)
	insns = append(insns, familyPath(ipv6, syms, role)...)
	insns = append(insns, count(counterNAT, "nat")...)
	insns = append(insns, asm.Ja.Label("ok"))
	insns = append(insns, count(counterStack, "stack")...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("ok"),
		asm.Return(),
	)
	if role == FromPod { // the verifier refuses unreachable code
		insns = append(insns, asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"), asm.Return())
	}
	return insns
}

// inner is where the frame the program judges starts: after the tunnel's
// headers on the tunnel's device.
func (r Role) inner() int16 {
	if r == FromTunnel {
		return tunnelLen
	}
	return 0
}

// tunnelHeaders checks the outer headers of a frame from the underlay (R2:
// the frame, R3: its end); anything but the overlay's VXLAN packets to this
// node goes to the stack. R9 is the tunnel map's value on the way.
func tunnelHeaders() asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, tunnelLen+ethLen),
		asm.JGT.Reg(asm.R4, asm.R3, "stack"),
		asm.Mov.Reg(asm.R8, asm.R2),
		asm.LoadMem(asm.R1, asm.R6, skbPktType, asm.Word),
		asm.JNE.Imm(asm.R1, packetHost, "stack"),
		// GSO packets are the device's: unwrapped here they would keep their
		// tunnel GSO type (this kernel's bpf_skb_adjust_room cannot clear
		// it), and a pod that forwards them would hand a NIC a tunnel
		// segmentation job without a tunnel.
		asm.LoadMem(asm.R1, asm.R6, skbGSOSize, asm.Word),
		asm.JNE.Imm(asm.R1, 0, "stack"),
		asm.LoadMem(asm.R1, asm.R8, 12, asm.Half),
		asm.JNE.Imm(asm.R1, ethPIPv4LE, "stack"),
		asm.LoadMem(asm.R1, asm.R8, ethLen, asm.Byte),
		asm.JNE.Imm(asm.R1, 0x45, "stack"),
		asm.LoadMem(asm.R1, asm.R8, ethLen+6, asm.Half),
		asm.And.Imm(asm.R1, ip4FragLE),
		asm.JNE.Imm(asm.R1, 0, "stack"),
		asm.LoadMem(asm.R1, asm.R8, ip4Proto, asm.Byte),
		asm.JNE.Imm(asm.R1, protoUDP, "stack"),
		// The whole frame is the outer packet (no padding to trim).
		asm.LoadMem(asm.R1, asm.R8, ethLen+2, asm.Half),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.LoadMem(asm.R2, asm.R6, skbLen, asm.Word),
		asm.Sub.Imm(asm.R2, ethLen),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
	}
	insns = append(insns, ipv4HeaderSum()...)
	insns = append(insns,
		asm.JNE.Imm(asm.R1, 0xffff, "stack"),
		asm.LoadMapValue(asm.R9, 0, 0).WithReference(mapTunnel),
		asm.LoadMem(asm.R1, asm.R9, tunnelLocal, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, ip4Dst, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
		asm.LoadMem(asm.R1, asm.R9, tunnelPort, asm.Half),
		asm.LoadMem(asm.R2, asm.R8, outerUDP+2, asm.Half),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
		asm.LoadMem(asm.R2, asm.R8, outerUDP+6, asm.Half),
		asm.JNE.Imm(asm.R2, 0, "stack"),
		asm.LoadMem(asm.R2, asm.R8, outerVXLAN, asm.Word),
		asm.JNE.Imm(asm.R2, vxlanFlagsLE, "stack"),
		asm.LoadMem(asm.R1, asm.R9, tunnelVNI, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, outerVXLAN+4, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
		asm.LoadMem(asm.R1, asm.R9, tunnelMAC, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, tunnelLen, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
		asm.LoadMem(asm.R1, asm.R9, tunnelMAC+4, asm.Half),
		asm.LoadMem(asm.R2, asm.R8, tunnelLen+4, asm.Half),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
	)
	// From the node that owns the inner frame's source VTEP MAC, by the
	// forwarding entries: stricter than the device, which takes any source,
	// because this program runs before the node's nftables.
	insns = append(insns, lookupVTEP(asm.R8, tunnelLen+6)...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, ip4Src, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "stack"),
		asm.Mov.Reg(asm.R2, asm.R8),
	)
}

// ipv4HeaderSum leaves in R1 the folded ones' complement sum of the IPv4
// header (without options) of the frame at R8: 0xffff when its checksum is
// right, the checksum's complement when the checksum field is zero. Summing
// little-endian half words gives the byte-swapped sum, which is what storing
// the result as one writes back.
func ipv4HeaderSum() asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	for off := int16(0); off < ip4Len; off += 2 {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R8, ethLen+off, asm.Half),
			asm.Add.Reg(asm.R1, asm.R2))
	}
	for range 2 {
		insns = append(insns,
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.RSh.Imm(asm.R2, 16),
			asm.And.Imm(asm.R1, 0xffff),
			asm.Add.Reg(asm.R1, asm.R2))
	}
	return insns
}

// familyPath is the program's path for one address family, from the label
// "ipv4" or "ipv6". Registers: R6 the skb, R7 the protocol and then the
// connection's status, R8 the frame, R9 the destination endpoint (0: another
// node's pod).
func familyPath(f family, syms kernelSymbols, role Role) asm.Instructions {
	l := func(name string) string { return name + f.suffix }
	insns := loadFrame(f, l("ipv"), role.inner())
	insns = append(insns, f.header()...)
	insns = append(insns,
		asm.LoadMem(asm.R5, asm.R8, f.hops, asm.Byte),
		asm.JLE.Imm(asm.R5, 1, "stack"),
		asm.LoadMem(asm.R7, asm.R8, f.proto, asm.Byte),
		asm.JEq.Imm(asm.R7, protoUDP, l("l4-")),
		asm.JNE.Imm(asm.R7, protoTCP, "stack"),
		// TCP: the opening, closing and resetting segments are the stack's,
		// so that conntrack follows every connection from start to end.
		asm.Mov.Reg(asm.R4, asm.R8),
		asm.Add.Imm(asm.R4, int32(f.ports+14)),
		asm.JGT.Reg(asm.R4, asm.R3, "stack"),
		asm.LoadMem(asm.R5, asm.R8, f.ports+13, asm.Byte),
		asm.And.Imm(asm.R5, tcpFinSynRst),
		asm.JNE.Imm(asm.R5, 0, "stack"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(l("l4-")), // a landing place
	)
	if role == FromPod {
		// The source: this veth's pod, with its own MAC.
		insns = append(insns,
			asm.LoadMapPtr(asm.R1, 0).WithReference(f.endpoints),
			asm.Mov.Reg(asm.R2, asm.R8),
			asm.Add.Imm(asm.R2, int32(f.src)),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "stack"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
			asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word),
			asm.JNE.Reg(asm.R1, asm.R2, "stack"),
			asm.LoadMem(asm.R1, asm.R0, 4, asm.Word),
			asm.LoadMem(asm.R2, asm.R8, 6, asm.Word),
			asm.JNE.Reg(asm.R1, asm.R2, "stack"),
			asm.LoadMem(asm.R1, asm.R0, 8, asm.Half),
			asm.LoadMem(asm.R2, asm.R8, 10, asm.Half),
			asm.JNE.Reg(asm.R1, asm.R2, "stack"),
		)
	}
	// The destination: a pod of this node...
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, 0).WithReference(f.endpoints),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.Add.Imm(asm.R2, int32(f.dst)),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.JNE.Imm(asm.R0, 0, l("conntrack")),
	)
	if role == FromPod {
		// ... or one of another node's pod range.
		insns = append(insns, asm.StoreImm(asm.RFP, stackRange, int64(8*f.addrLen), asm.Word))
		for off := int16(0); off < f.addrLen; off += 4 {
			insns = append(insns,
				asm.LoadMem(asm.R1, asm.R8, f.dst+off, asm.Word),
				asm.StoreMem(asm.RFP, stackRange+4+off, asm.R1, asm.Word))
		}
		insns = append(insns,
			asm.LoadMapPtr(asm.R1, 0).WithReference(f.ranges),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, stackRange),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "stack"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
			asm.JEq.Imm(asm.R1, 0, "stack"),
			asm.Mov.Imm(asm.R9, 0),
		)
	} else {
		insns = append(insns, asm.Ja.Label("stack"))
	}

	// Conntrack: the tuple (addresses, then both ports) and the options.
	insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol(l("conntrack")))
	for off := int16(0); off < 2*f.addrLen; off += 4 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R8, f.src+off, asm.Word),
			asm.StoreMem(asm.RFP, stackTuple+off, asm.R1, asm.Word))
	}
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R8, f.ports, asm.Word),
		asm.StoreMem(asm.RFP, stackTuple+2*f.addrLen, asm.R1, asm.Word))
	// The flow cache's key: the tuple, zero-padded to IPv6's, and the
	// protocol. A verdict younger than flowTTL spares the conntrack lookup,
	// whose reference counting makes the CPUs of both directions contend.
	for off := 2*f.addrLen + 4; off < 36; off += 4 {
		insns = append(insns, asm.StoreImm(asm.RFP, stackTuple+off, 0, asm.Word))
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, stackTuple+36, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapFlows),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackTuple),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, l("ct-lookup")),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, stackOpts, asm.R1, asm.DWord),
		asm.FnKtimeGetNs.Call(),
		asm.LoadMem(asm.R1, asm.RFP, stackOpts, asm.DWord),
		asm.JGT.Reg(asm.R1, asm.R0, l("forward")),
		asm.StoreImm(asm.RFP, stackOpts, currentNetns, asm.Word).WithSymbol(l("ct-lookup")),
		asm.StoreImm(asm.RFP, stackOpts+4, 0, asm.Word),
		asm.StoreImm(asm.RFP, stackOpts+8, 0, asm.Word),
		asm.StoreImm(asm.RFP, stackOpts+12, 0, asm.Word),
		asm.StoreMem(asm.RFP, stackOpts+8, asm.R7, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackTuple),
		asm.Mov.Imm(asm.R3, f.tupleSize),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, stackOpts),
		asm.Mov.Imm(asm.R5, ctOptsSize),
		kfuncCall(syms.ctLookup),
		asm.JEq.Imm(asm.R0, 0, "stack"),
		asm.StoreMem(asm.RFP, stackDest, asm.R9, asm.DWord),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.LoadMem(asm.R7, asm.R9, syms.statusOffset, asm.DWord),
	)
	insns = append(insns, refreshConntrack(syms, l)...)
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R9).WithSymbol(l("ct-release")),
		kfuncCall(syms.ctRelease),
		asm.LoadMem(asm.R9, asm.RFP, stackDest, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.And.Imm(asm.R1, ipsNATMask),
		asm.JNE.Imm(asm.R1, 0, "nat"),
		asm.And.Imm(asm.R7, ipsSeenReply),
		asm.JEq.Imm(asm.R7, 0, "stack"),
		// Fast: remember it.
		asm.FnKtimeGetNs.Call(),
		asm.Add.Imm(asm.R0, flowTTL),
		asm.StoreMem(asm.RFP, stackOpts, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapFlows),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackTuple),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackOpts),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
	)

	// Forward: the frame again.
	insns = append(insns, loadFrame(f, l("forward"), role.inner())...)
	if role == FromPod {
		insns = append(insns, asm.JNE.Imm(asm.R9, 0, l("local")))
		insns = append(insns, remote(f, l)...)
	}
	delivered := counterRedirected
	if role == FromTunnel {
		insns = append(insns, decapsulate(f)...)
		delivered = counterDecapsulated
	}
	// Into a pod of this node: its MACs, the hop limit.
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R9, 4, asm.Word).WithSymbol(l("local")),
		asm.StoreMem(asm.R8, 0, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R9, 8, asm.Half),
		asm.StoreMem(asm.R8, 4, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R9, 10, asm.Half),
		asm.StoreMem(asm.R8, 6, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R9, 12, asm.Word),
		asm.StoreMem(asm.R8, 8, asm.R1, asm.Word),
	)
	insns = append(insns, relabelAll(f.decrementHopLimit(), f.suffix+"l")...)
	insns = append(insns, count(delivered, l("redirect"))...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.R9, 0, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
	)
}

// refreshConntrack does for a connection the fast path takes what its
// packets would have done in conntrack: it keeps the entry from timing out.
// Otherwise a fast TCP connection's entry would expire after the days an
// established one lives, a UDP flow's after 30 seconds, and the next packet
// would open a new one in the stack, with a stream's replies as its opening
// side. As the stack does: an established TCP connection gets the established
// timeout; a replied UDP flow the UDP timeout until it has lived two seconds,
// then the stream timeout and the ASSURED bit. Other TCP states are left to
// the stack's packets that lead to them. R9: the entry (referenced), R7: its
// status; to l("ct-release") when done.
func refreshConntrack(syms kernelSymbols, l func(string) string) asm.Instructions {
	return asm.Instructions{
		// Only what the fast path takes: replied, no address rewritten.
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.And.Imm(asm.R1, ipsNATMask|ipsSeenReply),
		asm.JNE.Imm(asm.R1, ipsSeenReply, l("ct-release")),
		asm.LoadMem(asm.R1, asm.RFP, stackTuple+36, asm.Word), // the protocol
		asm.JEq.Imm(asm.R1, protoUDP, l("ct-udp")),
		asm.LoadMem(asm.R1, asm.R9, syms.tcpStateOffset, asm.Byte),
		asm.JNE.Imm(asm.R1, tcpEstablished, l("ct-release")),
		asm.LoadMapValue(asm.R2, 0, 0).WithReference(mapTimeouts),
		asm.LoadMem(asm.R2, asm.R2, timeoutTCPEstablished, asm.Word),
		asm.Ja.Label(l("ct-timeout")),
		// UDP: a stream once past the time conntrack set on its first packet.
		asm.FnJiffies64.Call().WithSymbol(l("ct-udp")),
		asm.LoadMem(asm.R1, asm.R9, syms.udpStreamOffset, asm.DWord),
		asm.LoadMapValue(asm.R2, 0, 0).WithReference(mapTimeouts),
		asm.JGT.Reg(asm.R0, asm.R1, l("ct-stream")),
		asm.LoadMem(asm.R2, asm.R2, timeoutUDP, asm.Word),
		asm.Ja.Label(l("ct-timeout")),
		asm.LoadMem(asm.R2, asm.R2, timeoutUDPStream, asm.Word).WithSymbol(l("ct-stream")),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.And.Imm(asm.R1, ipsAssured),
		asm.JNE.Imm(asm.R1, 0, l("ct-timeout")),
		asm.StoreMem(asm.RFP, stackOpts, asm.R2, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R9),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Or.Imm(asm.R2, ipsAssured),
		kfuncCall(syms.ctChangeStatus),
		asm.LoadMem(asm.R2, asm.RFP, stackOpts, asm.Word),
		// A zero timeout would expire the entry: unset, leave it.
		asm.JEq.Imm(asm.R2, 0, l("ct-release")).WithSymbol(l("ct-timeout")),
		asm.Mov.Reg(asm.R1, asm.R9),
		kfuncCall(syms.ctChangeTimeout),
	}
}

// remote sends a packet to another node's pod out of the device the FIB
// names, with the next hop's MACs; without a complete answer (no neighbour
// yet, too big for the device, no route) the stack takes it. R8: the frame.
func remote(f family, l func(string) string) asm.Instructions {
	insns := clearFIB()
	insns = append(insns,
		asm.StoreImm(asm.RFP, stackFIB+fibFamily, int64(f.af), asm.Byte),
		asm.LoadMem(asm.R1, asm.R8, f.proto, asm.Byte),
		asm.StoreMem(asm.RFP, stackFIB+fibProto, asm.R1, asm.Byte),
		asm.LoadMem(asm.R1, asm.R8, f.ports, asm.Half),
		asm.StoreMem(asm.RFP, stackFIB+fibPorts, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R8, f.ports+2, asm.Half),
		asm.StoreMem(asm.RFP, stackFIB+fibPorts+2, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R6, skbIfindex, asm.Word),
		asm.StoreMem(asm.RFP, stackFIB+fibIfindex, asm.R1, asm.Word),
	)
	for off := int16(0); off < f.addrLen; off += 4 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R8, f.src+off, asm.Word),
			asm.StoreMem(asm.RFP, stackFIB+fibSrc+off, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R8, f.dst+off, asm.Word),
			asm.StoreMem(asm.RFP, stackFIB+fibDst+off, asm.R1, asm.Word))
	}
	insns = append(insns, fibLookup()...)
	insns = append(insns,
		// Through the VXLAN device: the program encapsulates.
		asm.LoadMapValue(asm.R9, 0, 0).WithReference(mapTunnel),
		asm.LoadMem(asm.R1, asm.R9, tunnelIfindex, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, stackFIB+fibIfindex, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R2, l("encap")),
	)
	insns = append(insns, loadFrame(f, "", 0)...)
	insns = append(insns, macsFromFIB()...)
	insns = append(insns, relabelAll(f.decrementHopLimit(), f.suffix+"r")...)
	insns = append(insns, count(counterForwarded, l("forwarded"))...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, stackFIB+fibIfindex, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	)
	return append(insns, encapsulate(f, l)...)
}

// encapsulate sends a packet to another node's pod through the overlay,
// writing the VXLAN device's encapsulation itself (R9: the tunnel map's value;
// the FIB's answer for the inner packet on the stack). It leaves the packet to
// the stack, unchanged, when a segment would not fit the VXLAN device (the
// stack answers with ICMP), when the forwarding database has no underlay
// address for the next hop's MAC, or when the FIB has no complete answer for
// that address.
func encapsulate(f family, l func(string) string) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, stackMTU, 0, asm.Word).WithSymbol(l("encap")),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMem(asm.R2, asm.R9, tunnelIfindex, asm.Word),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackMTU),
		asm.Mov.Imm(asm.R4, 0),
		asm.Mov.Imm(asm.R5, mtuCheckSegs),
		asm.FnCheckMtu.Call(),
		asm.JNE.Imm(asm.R0, 0, "stack"),
	}
	// The peer VTEP's underlay address, by the next hop's MAC.
	insns = append(insns, lookupVTEP(asm.RFP, stackFIB+fibDMAC)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.StoreMem(asm.RFP, stackPeer, asm.R1, asm.Word),
	)
	// The underlay's next hop towards it.
	insns = append(insns, clearFIB()...)
	insns = append(insns,
		asm.StoreImm(asm.RFP, stackFIB+fibFamily, int64(ipv4.af), asm.Byte),
		asm.StoreImm(asm.RFP, stackFIB+fibProto, protoUDP, asm.Byte),
		asm.LoadMem(asm.R1, asm.R6, skbIfindex, asm.Word),
		asm.StoreMem(asm.RFP, stackFIB+fibIfindex, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R9, tunnelLocal, asm.Word),
		asm.StoreMem(asm.RFP, stackFIB+fibSrc, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, stackPeer, asm.Word),
		asm.StoreMem(asm.RFP, stackFIB+fibDst, asm.R1, asm.Word),
	)
	insns = append(insns, fibLookup()...)
	insns = append(insns,
		// The outer source port spreads flows as the device's does.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetHashRecalc.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		// Room for the outer IPv4, UDP and VXLAN headers and the inner
		// Ethernet header, after the frame's Ethernet header (now the
		// outer one). On failure the packet is as it was.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, tunnelLen),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.LoadImm(asm.R4, encapFlags, asm.DWord),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "stack"),
		asm.LoadMem(asm.R8, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R8),
		asm.Add.Imm(asm.R4, int32(tunnelLen+f.minLen)),
		asm.JGT.Reg(asm.R4, asm.R3, "drop"), // cannot happen: the room is linear
	)
	// Outer Ethernet: the underlay's next hop.
	insns = append(insns, macsFromFIB()...)
	insns = append(insns,
		asm.StoreImm(asm.R8, 12, ethPIPv4LE, asm.Half),
		// Outer IPv4.
		asm.StoreImm(asm.R8, ethLen, outerIPHeadLE, asm.Half),
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.Sub.Imm(asm.R1, ethLen),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.StoreMem(asm.R8, ethLen+2, asm.R1, asm.Half),
		asm.StoreImm(asm.R8, ethLen+4, 0, asm.Half),
		asm.StoreImm(asm.R8, ethLen+6, outerDFLE, asm.Half),
		asm.StoreImm(asm.R8, ip4TTL, outerTTLUDPLE, asm.Half),
		asm.StoreImm(asm.R8, ip4Check, 0, asm.Half),
		asm.LoadMem(asm.R1, asm.R9, tunnelLocal, asm.Word),
		asm.StoreMem(asm.R8, ip4Src, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, stackPeer, asm.Word),
		asm.StoreMem(asm.R8, ip4Dst, asm.R1, asm.Word),
		// UDP, without a checksum (as the device sends over IPv4).
		asm.And.Imm(asm.R7, tunnelPortMask),
		asm.Or.Imm(asm.R7, tunnelPortBase),
		asm.HostTo(asm.BE, asm.R7, asm.Half),
		asm.StoreMem(asm.R8, outerUDP, asm.R7, asm.Half),
		asm.LoadMem(asm.R1, asm.R9, tunnelPort, asm.Half),
		asm.StoreMem(asm.R8, outerUDP+2, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.Sub.Imm(asm.R1, outerUDP),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.StoreMem(asm.R8, outerUDP+4, asm.R1, asm.Half),
		asm.StoreImm(asm.R8, outerUDP+6, 0, asm.Half),
		// VXLAN.
		asm.StoreImm(asm.R8, outerVXLAN, vxlanFlagsLE, asm.Word),
		asm.LoadMem(asm.R1, asm.R9, tunnelVNI, asm.Word),
		asm.StoreMem(asm.R8, outerVXLAN+4, asm.R1, asm.Word),
	)
	// Inner Ethernet: to the peer's VTEP MAC, from this node's.
	insns = append(insns, copyMAC(asm.R8, tunnelLen, asm.RFP, stackVTEP)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R9, tunnelMAC, asm.Word),
		asm.StoreMem(asm.R8, tunnelLen+6, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R9, tunnelMAC+4, asm.Half),
		asm.StoreMem(asm.R8, tunnelLen+10, asm.R1, asm.Half),
		asm.StoreImm(asm.R8, tunnelLen+12, f.ethType, asm.Half),
	)
	insns = append(insns, ipv4HeaderSum()...)
	insns = append(insns,
		asm.Xor.Imm(asm.R1, 0xffff),
		asm.StoreMem(asm.R8, ip4Check, asm.R1, asm.Half),
		// The inner packet's hop limit, as the node's routing would.
		asm.Add.Imm(asm.R8, tunnelLen),
	)
	insns = append(insns, relabelAll(f.decrementHopLimit(), f.suffix+"e")...)
	insns = append(insns, count(counterEncapsulated, l("encapsulated"))...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, stackFIB+fibIfindex, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	)
}

// decapsulate takes the tunnel's headers off a packet from the tunnel (the
// outer Ethernet header stays, with the inner packet's type) and points R8 at
// the frame again.
func decapsulate(f family) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -tunnelLen),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.Mov.Imm(asm.R4, f.decapFlags),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "stack"), // unchanged: the VXLAN device takes it
	}
	insns = append(insns, loadFrame(f, "", 0)...)
	return append(insns, asm.StoreImm(asm.R8, 12, f.ethType, asm.Half))
}

// copyMAC copies a MAC from src+srcOff to dst+dstOff through R1, in half
// words: the FIB's answer keeps its MACs at offsets that are not
// word-aligned.
func copyMAC(dst asm.Register, dstOff int16, src asm.Register, srcOff int16) asm.Instructions {
	var insns asm.Instructions
	for off := int16(0); off < 6; off += 2 {
		insns = append(insns,
			asm.LoadMem(asm.R1, src, srcOff+off, asm.Half),
			asm.StoreMem(dst, dstOff+off, asm.R1, asm.Half))
	}
	return insns
}

// macsFromFIB writes the FIB's answer, the next hop's MAC and the device's,
// into the frame at R8 as its destination and source.
func macsFromFIB() asm.Instructions {
	return append(copyMAC(asm.R8, 0, asm.RFP, stackFIB+fibDMAC), copyMAC(asm.R8, 6, asm.RFP, stackFIB+fibSMAC)...)
}

// lookupVTEP looks the VTEP MAC at src+off up in the vteps map: R0 points at
// its node's underlay address; an unknown MAC leaves the packet to the stack.
func lookupVTEP(src asm.Register, off int16) asm.Instructions {
	insns := copyMAC(asm.RFP, stackVTEP, src, off)
	return append(insns,
		asm.StoreImm(asm.RFP, stackVTEP+6, 0, asm.Half),
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapVTEPs),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackVTEP),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "stack"),
	)
}

// clearFIB zeroes the FIB lookup's parameters on the stack.
func clearFIB() asm.Instructions {
	var insns asm.Instructions
	for off := int16(0); off < fibSize; off += 4 {
		insns = append(insns, asm.StoreImm(asm.RFP, stackFIB+off, 0, asm.Word))
	}
	return insns
}

// fibLookup asks the FIB with the parameters on the stack, where the answer
// comes back; anything but a complete answer leaves the packet to the stack.
func fibLookup() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackFIB),
		asm.Mov.Imm(asm.R3, fibSize),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnFibLookup.Call(),
		asm.JNE.Imm(asm.R0, 0, "stack"),
	}
}

// loadFrame points R8 at the frame (inner bytes into the packet) and R3 at its end, and leaves frames too
// short for the family's headers and ports to the stack; its first
// instruction carries symbol, if any. Helper calls invalidate packet
// pointers, so the program loads the frame again after them.
func loadFrame(f family, symbol string, inner int16) asm.Instructions {
	first := asm.LoadMem(asm.R8, asm.R6, skbData, asm.Word)
	if symbol != "" {
		first = first.WithSymbol(symbol)
	}
	insns := asm.Instructions{first}
	if inner != 0 {
		insns = append(insns, asm.Add.Imm(asm.R8, int32(inner)))
	}
	return append(insns,
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R8),
		asm.Add.Imm(asm.R4, int32(f.minLen)),
		asm.JGT.Reg(asm.R4, asm.R3, "stack"),
	)
}

// count adds one to a counter; the first instruction carries label.
func count(counter int, label string) asm.Instructions {
	done := label + "-counted"
	return asm.Instructions{
		asm.StoreImm(asm.RFP, stackCounter, int64(counter), asm.Word).WithSymbol(label),
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapStats),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackCounter),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, done),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(done), // a landing place; R0 is set again before use
	}
}

// kfuncCall calls a kernel function by its BTF ID in vmlinux.
func kfuncCall(id btf.TypeID) asm.Instruction {
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(id)}
}

// relabelAll suffixes every local label (symbols and jumps to them) of insns,
// so that a sequence with inner jumps can appear once per family.
func relabelAll(insns asm.Instructions, suffix string) asm.Instructions {
	local := map[string]bool{}
	for _, ins := range insns {
		if s := ins.Symbol(); s != "" {
			local[s] = true
		}
	}
	out := make(asm.Instructions, len(insns))
	for i, ins := range insns {
		if s := ins.Symbol(); s != "" {
			ins = ins.WithSymbol(s + suffix)
		}
		if r := ins.Reference(); local[r] {
			ins = ins.WithReference(r + suffix)
		}
		out[i] = ins
	}
	return out
}
