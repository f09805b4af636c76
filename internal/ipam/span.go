package ipam

import (
	"math"
	"net/netip"
)

// span is a validated pod range and the block of addresses it may hand out:
// everything from the address after the gateway up to the last address (IPv6)
// or the one before the broadcast address (IPv4).
type span struct {
	prefix  netip.Prefix
	gateway netip.Addr // network address + 1; reserved
	first   netip.Addr // gateway + 1
	last    netip.Addr // the last address (IPv6) or broadcast - 1 (IPv4)
	count   uint64     // number of addresses in [first, last], saturated at MaxUint64
}

// newSpan computes the usable block of a range that passed validateRanges.
func newSpan(p netip.Prefix) span {
	gw := GatewayOf(p)
	last := lastAddr(p)
	hostBits := p.Addr().BitLen() - p.Bits()
	reserved := uint64(2) // network, gateway
	if p.Addr().Is4() {
		last = last.Prev() // broadcast
		reserved++
	}
	count := uint64(math.MaxUint64)
	if hostBits < 64 {
		count = uint64(1)<<hostBits - reserved
	}
	return span{prefix: p, gateway: gw, first: gw.Next(), last: last, count: count}
}

// lastAddr returns the highest address in p (the IPv4 broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// usable reports whether a may be handed out from this range.
func (s span) usable(a netip.Addr) bool {
	return a.Is4() == s.first.Is4() && s.first.Compare(a) <= 0 && a.Compare(s.last) <= 0
}

// next returns the usable address after a, wrapping from the last to the first.
func (s span) next(a netip.Addr) netip.Addr {
	if a.Compare(s.last) >= 0 || a.Compare(s.first) < 0 {
		return s.first
	}
	return a.Next()
}

// allocation describes address a of this range.
func (s span) allocation(a netip.Addr) Allocation {
	return Allocation{Addr: a, Range: s.prefix, Gateway: s.gateway}
}
