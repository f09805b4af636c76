package policy

import (
	"net/netip"
	"sort"
)

// Range is an inclusive range of addresses of one family.
type Range struct{ From, To netip.Addr }

func single(a netip.Addr) Range { return Range{a, a} }

// prefixRange is the range a prefix covers.
func prefixRange(p netip.Prefix) Range {
	p = p.Masked()
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return Range{first, last}
}

var (
	allV4 = prefixRange(netip.MustParsePrefix("0.0.0.0/0"))
	allV6 = prefixRange(netip.MustParsePrefix("::/0"))
)

// subtract removes cut from every range.
func subtract(rs []Range, cut Range) []Range {
	var out []Range
	for _, r := range rs {
		if r.From.Is4() != cut.From.Is4() || cut.To.Less(r.From) || r.To.Less(cut.From) {
			out = append(out, r)
			continue
		}
		if r.From.Less(cut.From) {
			out = append(out, Range{r.From, cut.From.Prev()})
		}
		if cut.To.Less(r.To) {
			out = append(out, Range{cut.To.Next(), r.To})
		}
	}
	return out
}

// mergeRanges sorts the ranges and joins those that overlap or touch, so that
// an interval set gets disjoint elements (the kernel refuses overlaps).
func mergeRanges(rs []Range) []Range {
	if len(rs) == 0 {
		return nil
	}
	s := append([]Range(nil), rs...)
	sort.Slice(s, func(i, j int) bool {
		if c := s[i].From.Compare(s[j].From); c != 0 {
			return c < 0
		}
		return s[i].To.Less(s[j].To)
	})
	out := []Range{s[0]}
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		next := last.To.Next()
		if r.From.Is4() == last.To.Is4() && (!last.To.Less(r.From) || (next.IsValid() && next == r.From)) {
			if last.To.Less(r.To) {
				last.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// String is the range as nftables writes it: an address, a prefix when the
// range is one, else first-last.
func (r Range) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	bits := r.From.BitLen()
	for l := 0; l <= bits; l++ {
		p := netip.PrefixFrom(r.From, l)
		if p.Masked().Addr() == r.From && prefixRange(p).To == r.To {
			return p.String()
		}
	}
	return r.From.String() + "-" + r.To.String()
}

func (r Range) contains(a netip.Addr) bool {
	return a.Is4() == r.From.Is4() && !a.Less(r.From) && !r.To.Less(a)
}
