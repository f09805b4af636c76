// Package ipam is the node-local address allocator the amime CNI plugin uses for
// pod IPs: one address per IP family, from the node's pod ranges.
//
// It is built for a short-lived plugin process that the container runtime runs
// many times in parallel, and that may be killed at any point:
//
//   - Every operation holds an exclusive flock(2) on <dataDir>/lock (and, within
//     one process, a mutex), so concurrent plugin processes are serialised.
//   - Every allocation is its own file, <dataDir>/<range>/<ip>, created with
//     O_CREAT|O_EXCL under the lock and fsync'd together with its directory
//     after the lock is released, before the caller is answered (so that
//     concurrent ADDs do not queue behind each other's disk writes). After a
//     crash an allocation that was reported is on disk. A file that exists but does not name
//     an owner (a crash between create and write) still holds its address, is
//     never handed out again, and is released by GC.
//   - Addresses are handed out round robin from <dataDir>/<range>/last_reserved,
//     so a just-released address is not reused at once.
//
// See the package's on-disk layout in store.go.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Allocation is one address handed to one attachment.
type Allocation struct {
	Addr    netip.Addr   // the pod's address
	Range   netip.Prefix // the node's pod range it came from (e.g. 10.244.1.0/24)
	Gateway netip.Addr   // the range's gateway: the first host address (10.244.1.1, fd00:10:244:1::1); never handed out
}

// Attachment identifies one network attachment as the CNI spec does: a container
// and the name of its interface (CNI_CONTAINERID and CNI_IFNAME).
type Attachment struct{ ContainerID, IfName string }

// String returns "<container ID>/<ifname>".
func (att Attachment) String() string { return att.ContainerID + "/" + att.IfName }

// validate rejects attachments that cannot be stored as the two lines of an
// allocation file.
func (att Attachment) validate() error {
	if att.ContainerID == "" || att.IfName == "" {
		return fmt.Errorf("ipam: attachment %q: container ID and interface name must not be empty", att.String())
	}
	if strings.ContainsAny(att.ContainerID, "\r\n\x00") || strings.ContainsAny(att.IfName, "\r\n\x00") {
		return fmt.Errorf("ipam: attachment %q: container ID and interface name must not contain line breaks or NUL", att.String())
	}
	return nil
}

// ErrExhausted is wrapped by Allocate when a range has no free address.
var ErrExhausted = errors.New("address range exhausted")

// defaultScanLimit caps how many candidate addresses one allocation looks at, so
// a huge range (an IPv6 /64, an IPv4 /8) is never iterated exhaustively. Ranges
// with at most this many usable addresses are always scanned completely.
const defaultScanLimit = 1 << 16

// Allocator hands out addresses from a node's pod ranges (one per IP family).
// It is safe for concurrent use, and any number of Allocators, in this process
// or others, may share one data directory.
type Allocator struct {
	dir       string
	spans     []span // the configured ranges, in the order given to New
	scanLimit uint64 // candidates looked at per range; tests lower it

	mu sync.Mutex // serialises this Allocator's operations; the flock serialises processes
}

// New validates the ranges (at most one per family, masked, IPv4 at most /30 and IPv6 at most /126 so at least
// one address is left after reserving, no overlap) and returns an allocator whose state lives in dataDir
// (created 0700 if missing). Errors name the bad range.
func New(dataDir string, ranges []netip.Prefix) (*Allocator, error) {
	if err := validateRanges(ranges); err != nil {
		return nil, err
	}
	a, err := Open(dataDir)
	if err != nil {
		return nil, err
	}
	for _, p := range ranges {
		a.spans = append(a.spans, newSpan(p))
	}
	return a, nil
}

// Open returns an allocator without ranges over the state in dataDir: it
// releases, collects and lists what is held in every range directory, which
// is what DEL and GC need also on a node whose ranges are not known (yet, or
// any more), but it allocates nothing.
func Open(dataDir string) (*Allocator, error) {
	if dataDir == "" {
		return nil, errors.New("ipam: no data directory")
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("ipam: data directory %s: %w", dataDir, err)
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	return &Allocator{dir: dir, scanLimit: defaultScanLimit}, nil
}

// validateRanges checks the rules documented on New.
func validateRanges(ranges []netip.Prefix) error {
	if len(ranges) == 0 {
		return errors.New("ipam: no pod ranges")
	}
	for _, p := range ranges {
		if !p.IsValid() {
			return fmt.Errorf("ipam: pod range %q is not a valid prefix", p.String())
		}
		if p.Addr().Zone() != "" {
			return fmt.Errorf("ipam: pod range %s: zoned addresses are not allowed", p)
		}
		if p.Addr().Is4In6() {
			return fmt.Errorf("ipam: pod range %s is an IPv4-mapped IPv6 range; use the IPv4 form", p)
		}
		if p != p.Masked() {
			return fmt.Errorf("ipam: pod range %s has host bits set (did you mean %s?)", p, p.Masked())
		}
		if p.Addr().Is4() && p.Bits() > 30 {
			return fmt.Errorf("ipam: pod range %s is too small: an IPv4 range must be /30 or larger "+
				"(the network, gateway and broadcast addresses are reserved)", p)
		}
		if p.Addr().Is6() && p.Bits() > 126 {
			return fmt.Errorf("ipam: pod range %s is too small: an IPv6 range must be /126 or larger "+
				"(the network and gateway addresses are reserved)", p)
		}
	}
	for i, p := range ranges {
		for _, q := range ranges[:i] {
			if p.Overlaps(q) {
				return fmt.Errorf("ipam: pod ranges %s and %s overlap", q, p)
			}
			if p.Addr().Is4() == q.Addr().Is4() {
				return fmt.Errorf("ipam: pod ranges %s and %s are both %s: at most one range per IP family", q, p, family(p))
			}
		}
	}
	return nil
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// GatewayOf returns the gateway (first host address) of a range: 10.244.1.1 for
// 10.244.1.0/24, fd00:10:244:1::1 for fd00:10:244:1::/64. Host bits set in p are
// ignored. It returns the zero Addr if p is invalid or has no address after its
// network address (an IPv4 /32, an IPv6 /128).
func GatewayOf(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	p = p.Masked()
	g := p.Addr().Next()
	if !g.IsValid() || !p.Contains(g) {
		return netip.Addr{}
	}
	return g
}

// Allocate gives the attachment one address per range. It is idempotent: an attachment that already holds
// addresses gets the same ones back. All or nothing: if any range is exhausted, nothing stays allocated and
// the error satisfies errors.Is(err, ErrExhausted) with a message naming the range and how many addresses
// are in use. Never hands out the network address, the IPv4 broadcast address, or the gateway.
//
// The allocations are returned in the order of the ranges given to New. "Nothing
// stays allocated" refers to what this call allocated: addresses the attachment
// already held before the call (from an earlier Allocate) are kept.
func (a *Allocator) Allocate(att Attachment) ([]Allocation, error) {
	if err := att.validate(); err != nil {
		return nil, err
	}
	if len(a.spans) == 0 {
		return nil, errors.New("ipam: no pod ranges to allocate from")
	}
	var out []Allocation
	var created []record
	err := a.locked(func(s *store) error {
		var err error
		out, created, err = a.allocate(s, att)
		return err
	})
	var fe *flushError
	if errors.As(err, &fe) && len(created) > 0 {
		// Written but not durable: hand nothing out.
		if rerr := a.locked(func(s *store) error { return s.removeAll(created) }); rerr != nil {
			err = errors.Join(err, fmt.Errorf("ipam: roll back: %w", rerr))
		}
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// allocate returns the attachment's allocations and those of them it created.
func (a *Allocator) allocate(s *store, att Attachment) ([]Allocation, []record, error) {
	all, err := s.scanAll()
	if err != nil {
		return nil, nil, err
	}
	out := make([]Allocation, 0, len(a.spans))
	var created []record // rolled back if anything fails
	rollback := func(cause error) error {
		if err := s.removeAll(created); err != nil {
			return errors.Join(cause, fmt.Errorf("ipam: roll back: %w", err))
		}
		return cause
	}
	for _, sp := range a.spans {
		if r, ok := held(all[sp.prefix], att); ok {
			out = append(out, sp.allocation(r.Addr))
			continue
		}
		addr, err := a.pick(s, sp, all, att)
		if err != nil {
			return nil, nil, rollback(err)
		}
		created = append(created, record{Addr: addr, Range: sp.prefix, Owner: att})
		out = append(out, sp.allocation(addr))
	}
	// Only now, when every range succeeded, move the round-robin cursors, so a
	// rolled-back attempt leaves no trace.
	for _, r := range created {
		if err := s.writeLastReserved(r.Range, r.Addr); err != nil {
			return nil, nil, rollback(err)
		}
	}
	return out, created, nil
}

// held returns the attachment's allocation among recs (the lowest address, should
// there be several).
func held(recs []record, att Attachment) (record, bool) {
	for _, r := range recs { // sorted by address
		if r.Known && r.Owner == att {
			return r, true
		}
	}
	return record{}, false
}

// pick finds a free address in sp, round robin after the range's last reserved
// address, and creates its allocation file. An address counts as taken if any
// range directory on disk (configured or not) that overlaps sp holds it, so a
// podCIDR change cannot hand out an address a running pod still has.
func (a *Allocator) pick(s *store, sp span, all map[netip.Prefix][]record, att Attachment) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	for p, recs := range all {
		if !p.Overlaps(sp.prefix) {
			continue
		}
		for _, r := range recs {
			if sp.usable(r.Addr) {
				used[r.Addr] = true
			}
		}
	}
	last, err := s.readLastReserved(sp.prefix)
	if err != nil {
		return netip.Addr{}, err
	}
	cur := sp.last // so that the first candidate is sp.first
	if last.IsValid() && sp.usable(last) {
		cur = last
	}
	limit := min(sp.count, a.scanLimit)
	for range limit {
		cur = sp.next(cur)
		if used[cur] {
			continue
		}
		switch err := s.create(record{Addr: cur, Range: sp.prefix, Owner: att}); {
		case err == nil:
			return cur, nil
		case errors.Is(err, errTaken): // appeared behind our back; should not happen under the lock
			used[cur] = true
			continue
		default:
			return netip.Addr{}, err
		}
	}
	if sp.count <= a.scanLimit {
		return netip.Addr{}, fmt.Errorf("ipam: range %s: %d of %d usable addresses in use: %w",
			sp.prefix, len(used), sp.count, ErrExhausted)
	}
	return netip.Addr{}, fmt.Errorf("ipam: range %s: no free address among the %d candidates after %s "+
		"(%d addresses in use; the range is too large to scan completely): %w",
		sp.prefix, limit, startOf(last, sp), len(used), ErrExhausted)
}

func startOf(last netip.Addr, sp span) netip.Addr {
	if last.IsValid() && sp.usable(last) {
		return last
	}
	return sp.gateway
}

// Get returns the attachment's current allocations (empty, no error, if none).
//
// Only the configured ranges are searched, and the allocations come in the order
// of the ranges given to New.
func (a *Allocator) Get(att Attachment) ([]Allocation, error) {
	if err := att.validate(); err != nil {
		return nil, err
	}
	var out []Allocation
	err := a.locked(func(s *store) error {
		for _, sp := range a.spans {
			recs, err := s.scan(sp.prefix)
			if err != nil {
				return err
			}
			for _, r := range recs {
				if r.Known && r.Owner == att {
					out = append(out, sp.allocation(r.Addr))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []Allocation{}
	}
	return out, nil
}

// Release frees the attachment's addresses. Idempotent: releasing an unknown attachment is not an error.
//
// It releases the attachment's addresses in every range directory on disk, also
// in ranges that are no longer configured. Only files owned by exactly this
// container ID and interface name are removed.
func (a *Allocator) Release(att Attachment) error {
	if err := att.validate(); err != nil {
		return err
	}
	return a.locked(func(s *store) error {
		all, err := s.scanAll()
		if err != nil {
			return err
		}
		for _, p := range sortedPrefixes(all) {
			for _, r := range all[p] {
				if r.Known && r.Owner == att {
					if err := s.remove(r); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// GC releases every allocation whose attachment is not in valid, and returns what it released.
//
// It covers every range directory on disk, also ranges that are no longer
// configured, and releases files that name no owner (left by a crash between
// creating and writing them). A file it cannot remove does not stop it: it
// releases all it can, and returns what it released with the failures. The
// result is sorted by address.
func (a *Allocator) GC(valid []Attachment) ([]Allocation, error) {
	keep := make(map[Attachment]bool, len(valid))
	for _, att := range valid {
		keep[att] = true
	}
	var out []Allocation
	err := a.locked(func(s *store) error {
		all, err := s.scanAll()
		if err != nil {
			return err
		}
		var errs []error
		for _, p := range sortedPrefixes(all) {
			for _, r := range all[p] {
				if r.Known && keep[r.Owner] {
					continue
				}
				if err := s.remove(r); err != nil {
					errs = append(errs, err)
					continue
				}
				out = append(out, r.allocation())
			}
		}
		return errors.Join(errs...)
	})
	sortAllocations(out)
	if out == nil {
		out = []Allocation{}
	}
	return out, err
}

// InUse lists all current allocations (sorted by address) — for metrics and `amime status`.
//
// It lists every address held on disk, in every range directory (also ranges no
// longer configured; filter on Range if needed), including files that name no
// owner, since those addresses are not free either.
func (a *Allocator) InUse() ([]Allocation, error) {
	var out []Allocation
	err := a.locked(func(s *store) error {
		all, err := s.scanAll()
		if err != nil {
			return err
		}
		for _, recs := range all {
			for _, r := range recs {
				out = append(out, r.allocation())
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortAllocations(out)
	if out == nil {
		out = []Allocation{}
	}
	return out, nil
}

// locked runs fn with the in-process mutex and the data directory's flock held,
// then, with both released, makes what fn wrote durable (store.flush). A
// failure of that last step alone comes back as a *flushError.
func (a *Allocator) locked(fn func(*store) error) error {
	a.mu.Lock()
	s, err := openStore(a.dir)
	if err != nil {
		a.mu.Unlock()
		return err
	}
	err = errors.Join(fn(s), s.close())
	a.mu.Unlock()
	if ferr := s.flush(); ferr != nil {
		if err != nil {
			return errors.Join(err, ferr)
		}
		return &flushError{ferr}
	}
	return err
}

// flushError is a failure to make a completed operation durable.
type flushError struct{ err error }

func (e *flushError) Error() string { return "ipam: " + e.err.Error() }
func (e *flushError) Unwrap() error { return e.err }

func sortAllocations(as []Allocation) {
	slices.SortFunc(as, func(x, y Allocation) int {
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		return x.Range.Addr().Compare(y.Range.Addr())
	})
}

func sortedPrefixes(m map[netip.Prefix][]record) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return ps
}
