// Package cidr provides operations on lists of address ranges.
package cidr

import (
	"net/netip"
	"sort"
)

// Normalize masks the prefixes, drops invalid ones and those covered by
// another, and sorts the rest. nftables interval sets refuse overlapping
// elements, so every set of ranges the dataplane programs goes through here.
func Normalize(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if p.IsValid() {
			ps = append(ps, p.Masked())
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Addr() != ps[j].Addr() {
			return ps[i].Addr().Less(ps[j].Addr())
		}
		return ps[i].Bits() < ps[j].Bits()
	})
	var out []netip.Prefix
	for _, p := range ps {
		covered := false
		for _, o := range out {
			if o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}
