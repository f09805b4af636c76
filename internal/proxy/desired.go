package proxy

import (
	"maps"
	"slices"
	"sort"
)

// desiredTable is the whole desired content of the table, kept up to date one
// Service at a time: a sync removes what a changed or deleted Service had
// contributed and adds what it contributes now, and remembers which chains,
// sets and element keys it touched, so that a partial sync compares only those
// with what is programmed. At 10,000 Services re-merging every Service on
// each sync cost a quarter of a second.
type desiredTable struct {
	chains map[string][]rule
	sets   map[string]string
	// Element keys ("claims": a map or set and a key) can be claimed by more
	// than one Service port (externalIPs are free-form); the port first by
	// key keeps it, whatever the order of events.
	// Almost every claim has one candidate: a sorted slice, not a map per
	// claim (130,000 small maps at 10,000 Services were a third of a full
	// sync, most of it in the garbage collector).
	claims map[string][]candidate // claim → candidates by port key; the first owns it
	local  map[string]int         // Service → local endpoints

	dirtyChains, dirtySets, dirtyClaims map[string]bool
}

func newDesiredTable() *desiredTable {
	return &desiredTable{chains: map[string][]rule{}, sets: map[string]string{}, claims: map[string][]candidate{},
		local:       map[string]int{},
		dirtyChains: map[string]bool{}, dirtySets: map[string]bool{}, dirtyClaims: map[string]bool{}}
}

// add records what r contributes.
func (d *desiredTable) add(r *renderedService) {
	for _, pr := range r.progs {
		for name, rules := range pr.chains {
			d.chains[name] = rules
			d.dirtyChains[name] = true
		}
		for _, s := range pr.sets {
			name, spec := splitSet(s)
			d.sets[name] = spec
			d.dirtySets[name] = true
		}
		for j, e := range pr.elements {
			c := pr.claims[j]
			cands := d.claims[c]
			i := sort.Search(len(cands), func(i int) bool { return cands[i].port >= pr.portKey })
			if i < len(cands) && cands[i].port == pr.portKey {
				cands[i].e = e
			} else {
				cands = slices.Insert(cands, i, candidate{pr.portKey, e})
			}
			d.claims[c] = cands
			d.dirtyClaims[c] = true
		}
	}
	if len(r.ports) > 0 {
		key := r.ports[0].Namespace + "/" + r.ports[0].Name
		n := 0
		for _, sel := range r.sels {
			n = max(n, len(sel.Local))
		}
		d.local[key] = max(d.local[key], n) // Program gives a Service's ports one by one
	}
}

// remove takes back what r contributed.
func (d *desiredTable) remove(r *renderedService) {
	for _, pr := range r.progs {
		for name := range pr.chains {
			delete(d.chains, name)
			d.dirtyChains[name] = true
		}
		for _, s := range pr.sets {
			name, _ := splitSet(s)
			delete(d.sets, name)
			d.dirtySets[name] = true
		}
		for _, c := range pr.claims {
			cands := slices.DeleteFunc(d.claims[c], func(x candidate) bool { return x.port == pr.portKey })
			if len(cands) == 0 {
				delete(d.claims, c)
			} else {
				d.claims[c] = cands
			}
			d.dirtyClaims[c] = true
		}
	}
	if len(r.ports) > 0 {
		delete(d.local, r.ports[0].Namespace+"/"+r.ports[0].Name)
	}
}

type candidate struct {
	port string
	e    element
}

// elem returns the element that owns a claim.
func (d *desiredTable) elem(c string) (element, bool) {
	if cands := d.claims[c]; len(cands) > 0 {
		return cands[0].e, true
	}
	return element{}, false
}

func (d *desiredTable) clearDirty() {
	clear(d.dirtyChains)
	clear(d.dirtySets)
	clear(d.dirtyClaims)
}

func (d *desiredTable) localCopy() map[string]int { return maps.Clone(d.local) }
