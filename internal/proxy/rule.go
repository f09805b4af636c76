package proxy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// rule is one rule of a Service chain, kept as data so that it can be written
// both as nft text (golden files, the nft binary, `nft --check` of a refused
// Service) and as netlink expressions (the sync's fast path, see writer.go).
// A rule is a match, then actions, in this order:
//
//	[ip saddr [!=] @set | fib saddr type local] [numgen random mod N == 0]
//	[meta mark set meta mark | 0x4000] [update @set { ip saddr }]
//	[meta l4proto P dnat ip to A:P |
//	 meta l4proto P dnat ip to numgen random mod N offset K map @endpoints-…]
//	[goto chain]
//
// It is comparable, so a sync compares a chain's rules with ==.
type rule struct {
	v6        bool
	saddrSet  string // match: source address in this set
	notInSet  bool   // match: not in it
	fibLocal  bool   // match: source address is local to the node
	pick      int    // match: numgen random mod pick == 0 (0: always)
	markMasq  bool   // ask nat-postrouting to masquerade
	update    string // record the source address in this timed set
	proto     string // DNAT: tcp, udp or sctp
	dest      netip.AddrPort
	epMap     string // or DNAT to the endpoint in this map at slot
	epMod     int    // numgen random mod epMod
	epOffset  uint32 // offset epOffset
	gotoChain string
}

// String is the rule in nft syntax.
func (r rule) String() string {
	var parts []string
	ipkw := ipKw(r.v6)
	switch {
	case r.saddrSet != "" && r.notInSet:
		parts = append(parts, fmt.Sprintf("%s saddr != @%s", ipkw, r.saddrSet))
	case r.saddrSet != "":
		parts = append(parts, fmt.Sprintf("%s saddr @%s", ipkw, r.saddrSet))
	case r.fibLocal:
		parts = append(parts, "fib saddr type local")
	}
	if r.pick > 0 {
		parts = append(parts, fmt.Sprintf("numgen random mod %d == 0", r.pick))
	}
	if r.markMasq {
		parts = append(parts, "meta mark set meta mark | "+markMasq)
	}
	if r.update != "" {
		parts = append(parts, fmt.Sprintf("update @%s { %s saddr }", r.update, ipkw))
	}
	switch {
	case r.epMap != "":
		pick := fmt.Sprintf("numgen random mod %d", r.epMod)
		if r.epOffset != 0 {
			pick += fmt.Sprintf(" offset %d", r.epOffset)
		}
		parts = append(parts, fmt.Sprintf("meta l4proto %s dnat %s to %s map @%s", r.proto, ipkw, pick, r.epMap))
	case r.proto != "":
		dest := r.dest.String() // [v6]:port for IPv6
		parts = append(parts, fmt.Sprintf("meta l4proto %s dnat %s to %s", r.proto, ipkw, dest))
	}
	if r.gotoChain != "" {
		parts = append(parts, "goto "+r.gotoChain)
	}
	return strings.Join(parts, " ")
}

const markMasqBit = 0x4000

// exprs is the rule as netlink expressions: the same bytecode nft compiles
// from String() (a test in a network namespace compares the two).
func (r rule) exprs() ([]expr.Any, error) {
	var out []expr.Any
	nfproto, addrOff, addrLen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if r.v6 {
		nfproto, addrOff, addrLen = unix.NFPROTO_IPV6, 8, 16
	}
	saddr := func() {
		// In an inet table, an IPv4 or IPv6 header field needs the family
		// checked first, as nft adds it.
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen})
	}
	switch {
	case r.saddrSet != "":
		saddr()
		out = append(out, &expr.Lookup{SourceRegister: 1, SetName: r.saddrSet, Invert: r.notInSet})
	case r.fibLocal:
		out = append(out,
			&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)})
	}
	if r.pick > 0 {
		out = append(out,
			&expr.Numgen{Register: 1, Modulus: uint32(r.pick), Type: unix.NFT_NG_RANDOM},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}})
	}
	if r.markMasq {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, ^uint32(markMasqBit)),
				Xor:  binary.NativeEndian.AppendUint32(nil, markMasqBit)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	}
	if r.update != "" {
		saddr()
		out = append(out, &expr.Dynset{SrcRegKey: 1, SetName: r.update, Operation: unix.NFT_DYNSET_OP_UPDATE})
	}
	if r.proto != "" {
		proto, ok := l4protoNumbers[r.proto]
		if !ok {
			return nil, fmt.Errorf("unknown protocol %q", r.proto)
		}
		family, portReg := uint32(unix.NFPROTO_IPV4), uint32(2)
		if r.v6 {
			family = unix.NFPROTO_IPV6
		}
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}})
		if r.epMap != "" {
			// The map's value is address . port, each padded to four bytes:
			// an IPv4 address fills the first 32-bit register and the port
			// follows in the next (9, NFT_REG32_01); an IPv6 address fills the
			// whole 128-bit register 1 and the port starts register 2.
			if !r.v6 {
				portReg = unix.NFT_REG32_01
			}
			out = append(out,
				&expr.Numgen{Register: 1, Modulus: uint32(r.epMod), Type: unix.NFT_NG_RANDOM, Offset: r.epOffset},
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: r.epMap})
		} else {
			if r.dest.Addr().Is6() != r.v6 {
				return nil, fmt.Errorf("DNAT to %s in an IPv%s rule", r.dest, map[bool]string{false: "4", true: "6"}[r.v6])
			}
			out = append(out,
				&expr.Immediate{Register: 1, Data: r.dest.Addr().AsSlice()},
				&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, r.dest.Port())})
		}
		out = append(out, &expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: 1, RegAddrMax: 1,
			RegProtoMin: portReg, RegProtoMax: portReg, Specified: true})
	}
	if r.gotoChain != "" {
		out = append(out, &expr.Verdict{Kind: expr.VerdictGoto, Chain: r.gotoChain})
	}
	return out, nil
}

var l4protoNumbers = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// elementKey encodes an element's key as the kernel stores it: the fields of a
// concatenation each padded to four bytes (addresses, then protocol, then port
// in network order), by the types of the proxy's maps and sets; the slots of
// the endpoint maps are numgen's 32-bit numbers in host order.
func elementKey(e element) ([]byte, error) {
	if strings.HasPrefix(e.set, "endpoints-") {
		if len(e.key) != 1 {
			return nil, fmt.Errorf("element of %s: key %q is not one slot", e.set, e.key)
		}
		n, err := strconv.ParseUint(e.key[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("element of %s: slot %q: %w", e.set, e.key[0], err)
		}
		return binary.NativeEndian.AppendUint32(nil, uint32(n)), nil
	}
	return concat(e.set, e.key)
}

// elementData encodes the value of an endpoint map's element (address . port).
func elementData(e element) ([]byte, error) {
	if len(e.value) != 2 {
		return nil, fmt.Errorf("element of %s: value %q is not address . port", e.set, e.value)
	}
	return concat(e.set, e.value)
}

func concat(set string, fields []string) ([]byte, error) {
	var key []byte
	for _, f := range fields {
		if a, err := netip.ParseAddr(f); err == nil {
			key = append(key, a.AsSlice()...)
			continue
		}
		if p, ok := l4protoNumbers[f]; ok {
			key = append(key, p, 0, 0, 0)
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("element %s of %s: field %q is no address, protocol or port", strings.Join(fields, " . "), set, f)
		}
		key = binary.BigEndian.AppendUint16(key, uint16(n))
		key = append(key, 0, 0)
	}
	return key, nil
}
