package proxy

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/nftbatch"
)

// writer collects the operations of one sync and applies them as one
// transaction. knftWriter goes through knftables (the nft binary, or the fake
// in unit tests); netlinkWriter sends the Service-dependent part straight to
// the kernel (nftbatch), which at 10,000 Services is what keeps a full sync
// under two seconds and a change in milliseconds (bench/RESULTS.md).
type writer interface {
	// static adds the table, its base chains, the maps and the static rules
	// (a full sync); it goes first.
	static(cfg Config)
	flushSet(name string) // a map or set
	addSet(name, spec string)
	deleteSet(name string)
	addChain(name string)
	flushChain(name string)
	deleteChain(name string)
	addRule(chain string, r rule)
	addElement(e element)
	deleteElement(e element)
	numOperations() int
	run(ctx context.Context) error
}

// knftWriter is one knftables transaction.
type knftWriter struct {
	nft knftables.Interface
	tx  *knftables.Transaction
}

func newKnftWriter(nft knftables.Interface) *knftWriter {
	return &knftWriter{nft: nft, tx: nft.NewTransaction()}
}

func (w *knftWriter) static(cfg Config)             { staticObjects(w.tx, cfg) }
func (w *knftWriter) addSet(name, spec string)      { w.tx.Add(affinitySet(name, spec)) }
func (w *knftWriter) deleteSet(name string)         { w.tx.Delete(&knftables.Set{Name: name}) }
func (w *knftWriter) addChain(name string)          { w.tx.Add(&knftables.Chain{Name: name}) }
func (w *knftWriter) flushChain(name string)        { w.tx.Flush(&knftables.Chain{Name: name}) }
func (w *knftWriter) deleteChain(name string)       { w.tx.Delete(&knftables.Chain{Name: name}) }
func (w *knftWriter) addElement(e element)          { w.tx.Add(elementObj(e)) }
func (w *knftWriter) deleteElement(e element)       { w.tx.Delete(elementObj(e)) }
func (w *knftWriter) numOperations() int            { return w.tx.NumOperations() }
func (w *knftWriter) run(ctx context.Context) error { return w.nft.Run(ctx, w.tx) }
func (w *knftWriter) addRule(chain string, r rule) {
	w.tx.Add(&knftables.Rule{Chain: chain, Rule: r.String()})
}
func (w *knftWriter) flushSet(name string) {
	if isMap(name) {
		w.tx.Flush(&knftables.Map{Name: name})
	} else {
		w.tx.Flush(&knftables.Set{Name: name})
	}
}

// netlinkWriter applies the static part of a full sync through knftables
// first (the table, base chains, maps and interval sets: a few dozen
// operations, rewritten identically), then everything that depends on
// Services as one netlink batch. Between the two the table holds the previous
// Service rules under the same static rules, so traffic never sees a gap.
type netlinkWriter struct {
	nft      knftables.Interface
	staticTx *knftables.Transaction
	b        *nftbatch.Batch
	ops      int
	err      error
	// Elements go out in one message per map and operation: adds and deletes
	// by set, in the order the sync asked for them (deletes of a key before
	// its re-add).
	pending []pendingElems
}

type pendingElems struct {
	add   bool
	set   string
	elems []nftbatch.Elem
}

func newNetlinkWriter(nft knftables.Interface) *netlinkWriter {
	return &netlinkWriter{nft: nft, b: nftbatch.New(unix.NFPROTO_INET, Table)}
}

func (w *netlinkWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *netlinkWriter) static(cfg Config) {
	w.staticTx = w.nft.NewTransaction()
	staticObjects(w.staticTx, cfg)
}

func (w *netlinkWriter) flushPending() {
	for _, p := range w.pending {
		if p.add {
			w.b.AddElements(p.set, p.elems)
		} else {
			w.b.DeleteElements(p.set, p.elems)
		}
	}
	w.pending = w.pending[:0]
}

func (w *netlinkWriter) flushSet(name string) { w.ops++; w.flushPending(); w.b.FlushSet(name) }

func (w *netlinkWriter) addSet(name, spec string) {
	w.ops++
	w.flushPending()
	typ, timeout := affinitySpec(spec)
	s := nftbatch.SetSpec{Name: name, KeyType: 7, KeyLen: 4, Dynamic: true, Timeout: timeout}
	if typ == "ipv6_addr" {
		s.KeyType, s.KeyLen = 8, 16
	}
	w.b.AddSet(s)
}

func (w *netlinkWriter) deleteSet(name string)   { w.ops++; w.flushPending(); w.b.DeleteSet(name) }
func (w *netlinkWriter) addChain(name string)    { w.ops++; w.flushPending(); w.b.AddChain(name) }
func (w *netlinkWriter) flushChain(name string)  { w.ops++; w.flushPending(); w.b.FlushChain(name) }
func (w *netlinkWriter) deleteChain(name string) { w.ops++; w.flushPending(); w.b.DeleteChain(name) }

func (w *netlinkWriter) addRule(chain string, r rule) {
	w.ops++
	w.flushPending()
	exprs, err := r.exprs()
	if err != nil {
		w.fail(fmt.Errorf("chain %s: rule %q: %w", chain, r, err))
		return
	}
	w.b.AddRule(chain, exprs)
}

func (w *netlinkWriter) addElement(e element)    { w.element(true, e) }
func (w *netlinkWriter) deleteElement(e element) { w.element(false, e) }

func (w *netlinkWriter) element(add bool, e element) {
	w.ops++
	key, err := elementKey(e)
	if err != nil {
		w.fail(err)
		return
	}
	el := nftbatch.Elem{Key: key}
	switch {
	case add && strings.HasPrefix(e.set, "endpoints-"):
		if el.Data, err = elementData(e); err != nil {
			w.fail(err)
			return
		}
	case add && len(e.value) > 0:
		chain, ok := strings.CutPrefix(e.value[0], "goto ")
		if !ok || len(e.value) != 1 {
			w.fail(fmt.Errorf("element of %s: value %q is not a goto", e.set, e.value))
			return
		}
		el.Goto = chain
	}
	if n := len(w.pending); n > 0 && w.pending[n-1].add == add && w.pending[n-1].set == e.set {
		w.pending[n-1].elems = append(w.pending[n-1].elems, el)
		return
	}
	// A key deleted and re-added in one sync must be deleted first: keep the
	// order once the operation or the set changes.
	for i := range w.pending {
		if w.pending[i].add == add && w.pending[i].set == e.set && !w.laterOpposite(i, e.set) {
			w.pending[i].elems = append(w.pending[i].elems, el)
			return
		}
	}
	w.pending = append(w.pending, pendingElems{add: add, set: e.set, elems: []nftbatch.Elem{el}})
}

// laterOpposite reports whether a group after i works on the same set with the
// opposite operation (so that appending to i would reorder the two).
func (w *netlinkWriter) laterOpposite(i int, set string) bool {
	for _, p := range w.pending[i+1:] {
		if p.set == set && p.add != w.pending[i].add {
			return true
		}
	}
	return false
}

func (w *netlinkWriter) numOperations() int {
	if w.staticTx != nil {
		return w.ops + w.staticTx.NumOperations()
	}
	return w.ops
}

func (w *netlinkWriter) run(ctx context.Context) error {
	w.flushPending()
	if w.err != nil {
		return w.err
	}
	if w.staticTx != nil {
		if err := w.nft.Run(ctx, w.staticTx); err != nil {
			return fmt.Errorf("static chains and maps: %w", err)
		}
	}
	return w.b.Commit()
}
