package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// Dataplane programs desired states into the table, remembering what it
// programmed so that the next apply sends only the difference. The first
// apply of a process, and any apply after a failure, is full: the static
// chains are rewritten, the maps flushed and refilled and leftovers of a
// previous process deleted, all in one transaction. Nothing is ever flushed
// on its own, so an agent restart never opens a window where an isolated pod
// is reachable; a failed transaction changes nothing in the kernel (the
// previous rules stay).
type Dataplane struct {
	nft        knftables.Interface
	logGroup   uint16
	programmed *Desired // nil: the next apply is full
	// gen is the policy generation programmed in the base chains (see
	// baseRules); never 0, the mark of connections no agent has judged.
	gen uint8
}

// NewDataplane returns a dataplane on nft (knftables.New(knftables.InetFamily, Table), or a fake).
func NewDataplane(nft knftables.Interface, logGroup uint16) *Dataplane {
	// A new process starts at a generation its predecessor is unlikely to
	// have left in the conntrack marks, so that its first sync judges every
	// connection again.
	return &Dataplane{nft: nft, logGroup: logGroup, gen: uint8(time.Now().UnixNano()%255) + 1}
}

// nextGen moves to the next generation, skipping 0.
func (dp *Dataplane) nextGen() {
	dp.gen++
	if dp.gen == 0 {
		dp.gen = 1
	}
}

// Apply programs d. It reports whether the sync was full and the number of
// operations sent.
func (dp *Dataplane) Apply(ctx context.Context, d *Desired) (full bool, ops int, err error) {
	full = dp.programmed == nil
	old := dp.programmed
	if full {
		old = &Desired{Chains: map[string][]string{}, Sets: map[string]string{}, Verdicts: map[string]map[string]string{}, Known: map[string]map[string]bool{}}
	}
	tx := dp.nft.NewTransaction()
	if full {
		dp.nextGen()
		staticObjects(tx, dp.logGroup, dp.gen, d.Ranges)
		for _, m := range vmaps {
			tx.Flush(&knftables.Map{Name: m})
		}
		for _, k := range knownSets {
			tx.Flush(&knftables.Set{Name: k})
		}
	}
	// Known addresses first: a new pod's address is known before any verdict
	// names it, and (in the same transaction) never judged as unknown.
	for _, k := range knownSets {
		for _, ip := range sortedKeys(d.Known[k]) {
			if !old.Known[k][ip] {
				tx.Add(&knftables.Element{Set: k, Key: []string{ip}})
			}
		}
		for _, ip := range sortedKeys(old.Known[k]) {
			if !d.Known[k][ip] {
				tx.Delete(&knftables.Element{Set: k, Key: []string{ip}})
			}
		}
	}
	// Known addresses alone need no new generation: no connection from or to
	// an unknown address was ever let through.
	knownOps := tx.NumOperations()
	// New groups: sets, then the chain that matches them. Groups are named
	// after their contents, so a group that exists is never changed.
	for _, name := range sortedKeys(d.Sets) {
		if _, ok := old.Sets[name]; ok {
			continue
		}
		tx.Add(&knftables.Set{Name: name, Type: d.Sets[name], Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		if full {
			tx.Flush(&knftables.Set{Name: name})
		}
		for _, k := range d.SetElements[name] {
			tx.Add(&knftables.Element{Set: name, Key: k})
		}
	}
	for _, name := range sortedKeys(d.Chains) {
		if _, ok := old.Chains[name]; ok {
			continue
		}
		tx.Add(&knftables.Chain{Name: name})
		if full {
			tx.Flush(&knftables.Chain{Name: name})
		}
		for _, r := range d.Chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	// Verdict map elements: changed ones are replaced.
	for _, m := range vmaps {
		for _, ip := range sortedKeys(d.Verdicts[m]) {
			v := d.Verdicts[m][ip]
			ov, had := old.Verdicts[m][ip]
			if had && ov == v {
				continue
			}
			if had {
				tx.Delete(&knftables.Element{Map: m, Key: []string{ip}})
			}
			tx.Add(&knftables.Element{Map: m, Key: []string{ip}, Value: []string{v}})
		}
		for _, ip := range sortedKeys(old.Verdicts[m]) {
			if _, ok := d.Verdicts[m][ip]; !ok {
				tx.Delete(&knftables.Element{Map: m, Key: []string{ip}})
			}
		}
	}
	// Groups no longer used, after the elements that pointed at them: chains
	// first (they reference the sets).
	var staleChains, staleSets []string
	if full {
		if chains, err := dp.nft.List(ctx, "chains"); err == nil {
			for _, c := range chains {
				if isGroup(c) && d.Chains[c] == nil {
					staleChains = append(staleChains, c)
				}
			}
		} else if !knftables.IsNotFound(err) {
			return full, 0, fmt.Errorf("list chains of table %s: %w", Table, err)
		}
		if sets, err := dp.nft.List(ctx, "sets"); err == nil {
			for _, s := range sets {
				if _, ok := d.Sets[s]; isGroup(s) && !ok {
					staleSets = append(staleSets, s)
				}
			}
		} else if !knftables.IsNotFound(err) {
			return full, 0, fmt.Errorf("list sets of table %s: %w", Table, err)
		}
	} else {
		for _, c := range sortedKeys(old.Chains) {
			if _, ok := d.Chains[c]; !ok {
				staleChains = append(staleChains, c)
			}
		}
		for _, s := range sortedKeys(old.Sets) {
			if _, ok := d.Sets[s]; !ok {
				staleSets = append(staleSets, s)
			}
		}
	}
	for _, c := range staleChains {
		tx.Delete(&knftables.Chain{Name: c})
	}
	for _, s := range staleSets {
		tx.Delete(&knftables.Set{Name: s})
	}
	ops = tx.NumOperations()
	if ops == 0 && slices.Equal(d.Ranges, old.Ranges) {
		return full, 0, nil
	}
	if !full && (ops > knownOps || !slices.Equal(d.Ranges, old.Ranges)) {
		// Something changed: every connection is judged again once.
		dp.nextGen()
		for _, c := range []string{"forward", "input"} {
			tx.Flush(&knftables.Chain{Name: c})
		}
		for _, r := range baseRules(dp.gen, d.Ranges) {
			tx.Add(r)
		}
		ops = tx.NumOperations()
	}
	if err := dp.nft.Run(ctx, tx); err != nil {
		dp.programmed = nil
		return full, ops, fmt.Errorf("program table inet %s (%d operations): %w", Table, ops, err)
	}
	dp.programmed = d
	return full, ops, nil
}

// Invalidate makes the next apply full.
func (dp *Dataplane) Invalidate() { dp.programmed = nil }

// DeleteTable removes the table (tests and benchmarks start clean).
func DeleteTable(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete table inet %s: %w", Table, err)
	}
	return nil
}

// describe is a one-line summary for logs.
func (d *Desired) describe() string {
	n := 0
	for _, m := range d.Verdicts {
		n += len(m)
	}
	return strings.Join([]string{fmt.Sprint(d.Pods, " pods"), fmt.Sprint(len(d.Chains), " groups"), fmt.Sprint(n, " addresses")}, ", ")
}
