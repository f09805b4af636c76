package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pfx(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, pfx(t, s))
	}
	return ps
}

func newAllocator(t *testing.T, dir string, ranges ...string) *Allocator {
	t.Helper()
	a, err := New(dir, prefixes(t, ranges...))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func att(id, ifname string) Attachment { return Attachment{ContainerID: id, IfName: ifname} }

func addrsOf(as []Allocation) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.Addr.String())
	}
	return out
}

func mustAllocate(t *testing.T, a *Allocator, at Attachment) []Allocation {
	t.Helper()
	got, err := a.Allocate(at)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", at, err)
	}
	return got
}

func mustInUse(t *testing.T, a *Allocator) []string {
	t.Helper()
	got, err := a.InUse()
	if err != nil {
		t.Fatal(err)
	}
	return addrsOf(got)
}

// writeFile writes an allocation-like file directly, as a crashed or foreign
// process might have left it.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAllocateFirstAddresses(t *testing.T) {
	tests := []struct {
		name   string
		ranges []string
		want   [][]string // per successive attachment
	}{
		{"ipv4 /24 skips network and gateway", []string{"10.244.1.0/24"},
			[][]string{{"10.244.1.2"}, {"10.244.1.3"}, {"10.244.1.4"}}},
		{"ipv4 /30 has exactly one", []string{"10.0.0.0/30"},
			[][]string{{"10.0.0.2"}}},
		{"ipv6 /64 skips :: and ::1", []string{"fd00:10:244:1::/64"},
			[][]string{{"fd00:10:244:1::2"}, {"fd00:10:244:1::3"}}},
		{"ipv6 /126 uses the last address", []string{"fd00::/126"},
			[][]string{{"fd00::2"}, {"fd00::3"}}},
		{"dual-stack, one per range in range order", []string{"10.244.1.0/24", "fd00:10:244:1::/64"},
			[][]string{{"10.244.1.2", "fd00:10:244:1::2"}, {"10.244.1.3", "fd00:10:244:1::3"}}},
		{"dual-stack, IPv6 first", []string{"fd00:10:244:1::/64", "10.244.1.0/24"},
			[][]string{{"fd00:10:244:1::2", "10.244.1.2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ranges := prefixes(t, tt.ranges...)
			a := newAllocator(t, t.TempDir(), tt.ranges...)
			for i, want := range tt.want {
				got := mustAllocate(t, a, att(fmt.Sprintf("c%d", i), "eth0"))
				if !slices.Equal(addrsOf(got), want) {
					t.Fatalf("attachment %d got %v, want %v", i, addrsOf(got), want)
				}
				for j, al := range got {
					if al.Range != ranges[j] {
						t.Errorf("attachment %d: Range = %v, want %v", i, al.Range, ranges[j])
					}
					if al.Gateway != GatewayOf(ranges[j]) || al.Gateway != ranges[j].Addr().Next() {
						t.Errorf("attachment %d: Gateway = %v, want %v", i, al.Gateway, ranges[j].Addr().Next())
					}
				}
			}
		})
	}
}

// TestReservedAddresses fills whole small ranges and wraps large ones around
// their end: the network, gateway and IPv4 broadcast addresses never come out.
func TestReservedAddresses(t *testing.T) {
	tests := []struct {
		name         string
		rng          string
		lastReserved string // preset round-robin cursor; "" for none
		n            int
		want         []string
	}{
		{"ipv4 /29 filled", "10.0.0.0/29", "", 5,
			[]string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{"ipv4 /24 wraps past broadcast, network and gateway", "10.244.1.0/24", "10.244.1.253", 3,
			[]string{"10.244.1.254", "10.244.1.2", "10.244.1.3"}},
		{"ipv4 cursor on the broadcast address", "10.244.1.0/24", "10.244.1.255", 1,
			[]string{"10.244.1.2"}},
		{"ipv6 /64 hands out the last address, then wraps", "fd00::/64", "fd00::ffff:ffff:ffff:fffe", 2,
			[]string{"fd00::ffff:ffff:ffff:ffff", "fd00::2"}},
		{"ipv6 /126 filled", "fd00::/126", "", 2, []string{"fd00::2", "fd00::3"}},
		{"garbled cursor starts over", "10.0.0.0/24", "not an address", 1, []string{"10.0.0.2"}},
		{"cursor outside the range starts over", "10.0.0.0/24", "10.9.9.9", 1, []string{"10.0.0.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newAllocator(t, dir, tt.rng)
			if tt.lastReserved != "" {
				writeFile(t, filepath.Join(dir, rangeDirName(pfx(t, tt.rng)), "last_reserved"), tt.lastReserved)
			}
			var got []string
			for i := range tt.n {
				got = append(got, addrsOf(mustAllocate(t, a, att(fmt.Sprint(i), "eth0")))...)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAllocateIdempotent(t *testing.T) {
	a := newAllocator(t, t.TempDir(), "10.244.1.0/24", "fd00::/64")
	first := mustAllocate(t, a, att("c1", "eth0"))
	again := mustAllocate(t, a, att("c1", "eth0"))
	if !slices.Equal(first, again) {
		t.Errorf("second Allocate = %v, want %v", again, first)
	}
	got, err := a.Get(att("c1", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, first) {
		t.Errorf("Get = %v, want %v", got, first)
	}
	if n := len(mustInUse(t, a)); n != 2 {
		t.Errorf("InUse has %d entries, want 2", n)
	}

	// Other interfaces of the container, and other containers, get other addresses.
	seen := map[netip.Addr]Attachment{}
	for _, at := range []Attachment{att("c1", "eth0"), att("c1", "net1"), att("c1", "net2"), att("c2", "eth0"), att("c2", "net1")} {
		for _, al := range mustAllocate(t, a, at) {
			if prev, dup := seen[al.Addr]; dup {
				t.Errorf("%v got %v, already held by %v", at, al.Addr, prev)
			}
			seen[al.Addr] = at
		}
	}
}

func TestGetUnknown(t *testing.T) {
	a := newAllocator(t, t.TempDir(), "10.244.1.0/24")
	mustAllocate(t, a, att("c1", "eth0"))
	for _, at := range []Attachment{att("c2", "eth0"), att("c1", "eth1")} {
		got, err := a.Get(at)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("Get(%v) = %v, %v; want empty, nil", at, got, err)
		}
	}
}

func TestRelease(t *testing.T) {
	a := newAllocator(t, t.TempDir(), "10.244.1.0/24", "fd00::/64")
	mustAllocate(t, a, att("c1", "eth0")) // .2 ::2
	mustAllocate(t, a, att("c1", "net1")) // .3 ::3
	mustAllocate(t, a, att("c2", "eth0")) // .4 ::4

	steps := []struct {
		release Attachment
		inUse   []string
	}{
		{att("c1", "eth0"), []string{"10.244.1.3", "10.244.1.4", "fd00::3", "fd00::4"}},
		{att("c1", "eth0"), []string{"10.244.1.3", "10.244.1.4", "fd00::3", "fd00::4"}},   // double release
		{att("nope", "eth0"), []string{"10.244.1.3", "10.244.1.4", "fd00::3", "fd00::4"}}, // unknown
		{att("c2", "net1"), []string{"10.244.1.3", "10.244.1.4", "fd00::3", "fd00::4"}},   // container matches, ifname does not
		{att("c3", "net1"), []string{"10.244.1.3", "10.244.1.4", "fd00::3", "fd00::4"}},   // ifname matches, container does not
		{att("c2", "eth0"), []string{"10.244.1.3", "fd00::3"}},
		{att("c1", "net1"), []string{}},
	}
	for i, st := range steps {
		if err := a.Release(st.release); err != nil {
			t.Fatalf("step %d: Release(%v): %v", i, st.release, err)
		}
		if got := mustInUse(t, a); !slices.Equal(got, st.inUse) {
			t.Fatalf("step %d: after Release(%v) InUse = %v, want %v", i, st.release, got, st.inUse)
		}
	}
}

func TestRoundRobin(t *testing.T) {
	a := newAllocator(t, t.TempDir(), "10.0.0.0/29") // .2 to .6
	steps := []struct {
		op   string // "+" allocate, "-" release
		id   string
		want string // for "+"
	}{
		{"+", "a", "10.0.0.2"},
		{"+", "b", "10.0.0.3"},
		{"+", "c", "10.0.0.4"},
		{"-", "a", ""},
		{"+", "d", "10.0.0.5"}, // not the just released .2
		{"-", "d", ""},
		{"+", "e", "10.0.0.6"}, // not the just released .5 either
		{"+", "f", "10.0.0.2"}, // wrapped: .2 is reused
		{"+", "g", "10.0.0.5"}, // .3 and .4 are held
		{"-", "b", ""},
		{"+", "h", "10.0.0.3"},
	}
	for i, st := range steps {
		switch st.op {
		case "+":
			got := addrsOf(mustAllocate(t, a, att(st.id, "eth0")))
			if !slices.Equal(got, []string{st.want}) {
				t.Fatalf("step %d: Allocate(%s) = %v, want %s", i, st.id, got, st.want)
			}
		case "-":
			if err := a.Release(att(st.id, "eth0")); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	ranges := []string{"10.244.1.0/24", "fd00::/64"}
	a := newAllocator(t, dir, ranges...)
	c1 := mustAllocate(t, a, att("c1", "eth0"))
	mustAllocate(t, a, att("c2", "eth0"))
	if err := a.Release(att("c2", "eth0")); err != nil {
		t.Fatal(err)
	}

	// The plugin process exits (or dies); the next one starts from disk alone.
	b := newAllocator(t, dir, ranges...)
	got, err := b.Get(att("c1", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, c1) {
		t.Errorf("Get after restart = %v, want %v", got, c1)
	}
	if got := mustAllocate(t, b, att("c1", "eth0")); !slices.Equal(got, c1) {
		t.Errorf("Allocate after restart = %v, want %v", got, c1)
	}
	if got, want := mustInUse(t, b), []string{"10.244.1.2", "fd00::2"}; !slices.Equal(got, want) {
		t.Errorf("InUse after restart = %v, want %v", got, want)
	}
	// The round-robin cursor survived too: c2's released .3 is not reused.
	if got, want := addrsOf(mustAllocate(t, b, att("c3", "eth0"))), []string{"10.244.1.4", "fd00::4"}; !slices.Equal(got, want) {
		t.Errorf("Allocate after restart = %v, want %v", got, want)
	}
}

// TestCrashLeftovers covers what a killed plugin process can leave behind: a
// complete allocation without a moved cursor, an allocation file that was
// created but never (or only partly) written, a stale temporary cursor file.
func TestCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	rng := "10.244.1.0/24"
	rdir := filepath.Join(dir, "10.244.1.0_24")
	writeFile(t, filepath.Join(rdir, "10.244.1.2"), "c1\neth0\n") // complete, cursor not written
	writeFile(t, filepath.Join(rdir, "10.244.1.3"), "")           // created, not written
	writeFile(t, filepath.Join(rdir, "10.244.1.4"), "c2\neth")    // torn write of "c2\neth0\n"
	writeFile(t, filepath.Join(rdir, "last_reserved.tmp"), "10.244.1.20")

	a := newAllocator(t, dir, rng)
	got, err := a.Get(att("c1", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.244.1.2"}; !slices.Equal(addrsOf(got), want) {
		t.Errorf("Get(c1) = %v, want %v", addrsOf(got), want)
	}
	for _, at := range []Attachment{att("c2", "eth0"), att("c2", "eth"), att("", "")} {
		if got, _ := a.Get(at); len(got) != 0 {
			t.Errorf("Get(%v) = %v, want nothing: a garbled file has no owner", at, got)
		}
	}
	// The garbled files hold their addresses: the retried ADD of c2 gets .5.
	if got, want := addrsOf(mustAllocate(t, a, att("c2", "eth0"))), []string{"10.244.1.5"}; !slices.Equal(got, want) {
		t.Errorf("Allocate(c2) = %v, want %v", got, want)
	}
	if got, want := mustInUse(t, a), []string{"10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5"}; !slices.Equal(got, want) {
		t.Errorf("InUse = %v, want %v", got, want)
	}
	// Release of anyone never removes a garbled file; GC does.
	if err := a.Release(att("c2", "eth0")); err != nil {
		t.Fatal(err)
	}
	if got, want := mustInUse(t, a), []string{"10.244.1.2", "10.244.1.3", "10.244.1.4"}; !slices.Equal(got, want) {
		t.Errorf("InUse after Release = %v, want %v", got, want)
	}
	released, err := a.GC([]Attachment{att("c1", "eth0"), att("c2", "eth0")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := addrsOf(released), []string{"10.244.1.3", "10.244.1.4"}; !slices.Equal(got, want) {
		t.Errorf("GC released %v, want %v", got, want)
	}
	if got, want := mustInUse(t, a), []string{"10.244.1.2"}; !slices.Equal(got, want) {
		t.Errorf("InUse after GC = %v, want %v", got, want)
	}
}

func TestExhaustion(t *testing.T) {
	tests := []struct {
		rng    string
		usable int
	}{
		{"10.0.0.0/29", 5},
		{"10.0.0.0/30", 1},
		{"10.0.0.0/28", 13},
		{"fd00::/126", 2},
		{"fd00::/125", 6},
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			a := newAllocator(t, t.TempDir(), tt.rng)
			for i := range tt.usable {
				mustAllocate(t, a, att(fmt.Sprint(i), "eth0"))
			}
			got, err := a.Allocate(att("one-too-many", "eth0"))
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("Allocate #%d = %v, %v; want ErrExhausted", tt.usable+1, got, err)
			}
			for _, want := range []string{tt.rng, fmt.Sprintf("%d of %d", tt.usable, tt.usable)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if n := len(mustInUse(t, a)); n != tt.usable {
				t.Errorf("InUse has %d entries, want %d", n, tt.usable)
			}
			// Freeing one makes room again.
			if err := a.Release(att("0", "eth0")); err != nil {
				t.Fatal(err)
			}
			mustAllocate(t, a, att("one-too-many", "eth0"))
		})
	}
}

func TestDualStackAllOrNothing(t *testing.T) {
	tests := []struct {
		name   string
		ranges []string // the second one is nearly full
		fill   int      // attachments that fit
	}{
		{"IPv6 range exhausted after IPv4 allocated", []string{"10.244.1.0/24", "fd00::/126"}, 2},
		{"IPv4 range exhausted after IPv6 allocated", []string{"fd00::/64", "10.0.0.0/30"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAllocator(t, t.TempDir(), tt.ranges...)
			for i := range tt.fill {
				mustAllocate(t, a, att(fmt.Sprint(i), "eth0"))
			}
			before := mustInUse(t, a)
			full := att("full", "eth0")
			_, err := a.Allocate(full)
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("Allocate = %v, want ErrExhausted", err)
			}
			if !strings.Contains(err.Error(), tt.ranges[1]) {
				t.Errorf("error %q does not name %s", err, tt.ranges[1])
			}
			if strings.Contains(err.Error(), "sync") {
				t.Errorf("error %q also reports syncing the rolled-back file", err)
			}
			if after := mustInUse(t, a); !slices.Equal(after, before) {
				t.Errorf("InUse after failed Allocate = %v, want %v (the first range's address rolled back)", after, before)
			}
			if got, err := a.Get(full); err != nil || len(got) != 0 {
				t.Errorf("Get = %v, %v; want nothing", got, err)
			}
			// The rollback did not move the first range's cursor either.
			if err := a.Release(att("0", "eth0")); err != nil {
				t.Fatal(err)
			}
			got := mustAllocate(t, a, full)
			first := pfx(t, tt.ranges[0]).Addr()
			for range tt.fill + 2 {
				first = first.Next()
			}
			if got[0].Addr != first {
				t.Errorf("first range address after rollback = %v, want %v", got[0].Addr, first)
			}
		})
	}
}

func TestGC(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator(t, dir, "10.244.1.0/24", "fd00::/64")
	for _, at := range []Attachment{att("keep", "eth0"), att("keep", "net1"), att("gone", "eth0"), att("gone2", "eth0")} {
		mustAllocate(t, a, at) // .2-.5, ::2-::5
	}
	// Garbled files, and an allocation in a range no longer configured.
	rdir := filepath.Join(dir, "10.244.1.0_24")
	writeFile(t, filepath.Join(rdir, "10.244.1.100"), "")
	writeFile(t, filepath.Join(rdir, "10.244.1.101"), "keep\n")
	writeFile(t, filepath.Join(rdir, "10.244.1.102"), "keep\neth0\nextra\n")
	writeFile(t, filepath.Join(rdir, "10.244.1.103"), "keep\neth0") // torn: no final newline
	writeFile(t, filepath.Join(dir, "10.244.7.0_24", "10.244.7.9"), "gone\neth0\n")
	writeFile(t, filepath.Join(dir, "10.244.7.0_24", "10.244.7.10"), "keep\neth0\n")
	// Names that are not allocations are left alone.
	writeFile(t, filepath.Join(rdir, "README"), "x")
	writeFile(t, filepath.Join(rdir, "10.9.9.9"), "") // outside the range
	writeFile(t, filepath.Join(dir, "junk_dir", "10.244.1.7"), "")

	released, err := a.GC([]Attachment{att("keep", "eth0"), att("keep", "net1"), att("other", "eth0")})
	if err != nil {
		t.Fatal(err)
	}
	wantReleased := []string{
		"10.244.1.4", "10.244.1.5", "10.244.1.100", "10.244.1.101", "10.244.1.102", "10.244.1.103",
		"10.244.7.9", "fd00::4", "fd00::5",
	}
	if got := addrsOf(released); !slices.Equal(got, wantReleased) {
		t.Errorf("GC released %v, want %v", got, wantReleased)
	}
	for _, r := range released {
		if r.Gateway != GatewayOf(r.Range) || !r.Range.Contains(r.Addr) {
			t.Errorf("released %+v: inconsistent Range/Gateway", r)
		}
	}
	wantKept := []string{"10.244.1.2", "10.244.1.3", "10.244.7.10", "fd00::2", "fd00::3"}
	if got := mustInUse(t, a); !slices.Equal(got, wantKept) {
		t.Errorf("InUse after GC = %v, want %v", got, wantKept)
	}
	for _, p := range []string{filepath.Join(rdir, "README"), filepath.Join(rdir, "10.9.9.9"), filepath.Join(dir, "junk_dir", "10.244.1.7")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("GC touched %s: %v", p, err)
		}
	}
	// A second GC with the same valid set finds nothing more.
	if released, err := a.GC([]Attachment{att("keep", "eth0"), att("keep", "net1")}); err != nil || len(released) != 0 {
		t.Errorf("second GC = %v, %v; want nothing released", released, err)
	}
}

func TestRangesChanged(t *testing.T) {
	dir := t.TempDir()
	old := newAllocator(t, dir, "10.244.0.0/16", "fd00:1::/64")
	mustAllocate(t, old, att("c1", "eth0")) // 10.244.0.2, fd00:1::2
	writeFile(t, filepath.Join(dir, "10.244.0.0_16", "10.244.1.2"), "c9\neth0\n")

	// The node got new pod ranges; the IPv4 one overlaps the old.
	a := newAllocator(t, dir, "10.244.1.0/24", "fd00:2::/64")
	if got, err := a.Get(att("c1", "eth0")); err != nil || len(got) != 0 {
		t.Errorf("Get in new ranges = %v, %v; want nothing", got, err)
	}
	got := addrsOf(mustAllocate(t, a, att("c1", "eth0")))
	// 10.244.1.2 is still held by c9 in the old range: not handed out again.
	if want := []string{"10.244.1.3", "fd00:2::2"}; !slices.Equal(got, want) {
		t.Errorf("Allocate in new ranges = %v, want %v", got, want)
	}
	if err := a.Release(att("c1", "eth0")); err != nil {
		t.Fatal(err)
	}
	if got, want := mustInUse(t, a), []string{"10.244.1.2"}; !slices.Equal(got, want) {
		t.Errorf("InUse after Release = %v, want %v (old and new ranges released)", got, want)
	}
	released, err := a.GC(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := addrsOf(released), []string{"10.244.1.2"}; !slices.Equal(got, want) {
		t.Errorf("GC released %v, want %v", got, want)
	}
	if released[0].Range != pfx(t, "10.244.0.0/16") {
		t.Errorf("GC released %v from %v, want 10.244.0.0/16", released[0].Addr, released[0].Range)
	}
}

func TestHugeRanges(t *testing.T) {
	tests := []struct {
		name string
		rng  string
		last string // round-robin cursor
		held []string
		want string
	}{
		{"ipv6 /64 skips held addresses", "fd00::/64", "fd00::ff", []string{"fd00::100", "fd00::101"}, "fd00::102"},
		{"ipv6 /64 at the end wraps", "fd00::/64", "fd00::ffff:ffff:ffff:ffff", []string{"fd00::2"}, "fd00::3"},
		{"ipv4 /8", "10.0.0.0/8", "10.200.0.0", nil, "10.200.0.1"},
		{"ipv6 /0", "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", nil, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			rdir := filepath.Join(dir, rangeDirName(pfx(t, tt.rng)))
			writeFile(t, filepath.Join(rdir, "last_reserved"), tt.last)
			for _, h := range tt.held {
				writeFile(t, filepath.Join(rdir, h), "other\neth0\n")
			}
			a := newAllocator(t, dir, tt.rng)
			start := time.Now()
			got := addrsOf(mustAllocate(t, a, att("c", "eth0")))
			if !slices.Equal(got, []string{tt.want}) {
				t.Errorf("Allocate = %v, want %s", got, tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Allocate took %v", d)
			}
		})
	}
}

func TestHugeRangeWindowExhausted(t *testing.T) {
	dir := t.TempDir()
	rdir := filepath.Join(dir, "fd00::_64")
	writeFile(t, filepath.Join(rdir, "last_reserved"), "fd00::10")
	for i := 0x11; i <= 0x18; i++ {
		writeFile(t, filepath.Join(rdir, fmt.Sprintf("fd00::%x", i)), "other\neth0\n")
	}
	a := newAllocator(t, dir, "fd00::/64")
	a.scanLimit = 8 // the 8 candidates after the cursor are all held
	_, err := a.Allocate(att("c", "eth0"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate = %v, want ErrExhausted", err)
	}
	for _, want := range []string{"fd00::/64", "8 candidates", "after fd00::10", "8 addresses in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := len(mustInUse(t, a)); n != 8 {
		t.Errorf("InUse has %d entries, want 8", n)
	}
	a.scanLimit = 9
	if got, want := addrsOf(mustAllocate(t, a, att("c", "eth0"))), []string{"fd00::19"}; !slices.Equal(got, want) {
		t.Errorf("Allocate with a wider window = %v, want %v", got, want)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name   string
		ranges []netip.Prefix
		want   []string // substrings of the error
	}{
		{"no ranges", nil, []string{"no pod ranges"}},
		{"zero prefix", []netip.Prefix{{}}, []string{"not a valid prefix"}},
		{"host bits", prefixes(t, "10.244.1.5/24"), []string{"10.244.1.5/24", "10.244.1.0/24"}},
		{"ipv6 host bits", prefixes(t, "fd00::1/64"), []string{"fd00::1/64", "fd00::/64"}},
		{"ipv4 /31", prefixes(t, "10.0.0.0/31"), []string{"10.0.0.0/31", "/30"}},
		{"ipv4 /32", prefixes(t, "10.0.0.1/32"), []string{"10.0.0.1/32"}},
		{"ipv6 /127", prefixes(t, "fd00::/127"), []string{"fd00::/127", "/126"}},
		{"ipv6 /128", prefixes(t, "fd00::/128"), []string{"fd00::/128"}},
		{"two ipv4", prefixes(t, "10.0.0.0/24", "10.1.0.0/24"), []string{"10.0.0.0/24", "10.1.0.0/24", "IPv4"}},
		{"two ipv6", prefixes(t, "fd00::/64", "10.0.0.0/24", "fd01::/64"), []string{"fd00::/64", "fd01::/64", "IPv6"}},
		{"overlap", prefixes(t, "10.0.0.0/16", "10.0.1.0/24"), []string{"10.0.0.0/16", "10.0.1.0/24", "overlap"}},
		{"duplicate", prefixes(t, "fd00::/64", "fd00::/64"), []string{"fd00::/64", "overlap"}},
		{"ipv4-mapped", prefixes(t, "::ffff:10.0.0.0/120"), []string{"::ffff:10.0.0.0/120", "IPv4-mapped"}},
		{"bad second range", prefixes(t, "10.0.0.0/24", "fd00::/127"), []string{"fd00::/127"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(t.TempDir(), tt.ranges)
			if err == nil {
				t.Fatalf("New(%v) = %v, want an error", tt.ranges, a)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := New("", prefixes(t, "10.0.0.0/24")); err == nil {
		t.Error("New with no data directory succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, file, "")
	if _, err := New(filepath.Join(file, "sub"), prefixes(t, "10.0.0.0/24")); err == nil {
		t.Error("New with a data directory under a file succeeded")
	}
}

func TestNewAccepts(t *testing.T) {
	for _, rs := range [][]string{
		{"10.0.0.0/30"}, {"fd00::/126"}, {"10.244.1.0/24", "fd00:10:244:1::/64"}, {"0.0.0.0/0", "::/0"},
	} {
		dir := filepath.Join(t.TempDir(), "a", "b")
		if _, err := New(dir, prefixes(t, rs...)); err != nil {
			t.Errorf("New(%v): %v", rs, err)
			continue
		}
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("data directory mode %v, want 0700", st.Mode().Perm())
		}
	}
}

func TestGatewayOf(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.244.1.0/24", "10.244.1.1"},
		{"10.244.1.77/24", "10.244.1.1"}, // host bits ignored
		{"10.0.0.0/30", "10.0.0.1"},
		{"10.0.0.0/31", "10.0.0.1"},
		{"10.0.0.0/32", "invalid IP"},
		{"fd00:10:244:1::/64", "fd00:10:244:1::1"},
		{"::/0", "::1"},
		{"fd00::/128", "invalid IP"},
	}
	for _, tt := range tests {
		if got := GatewayOf(pfx(t, tt.in)).String(); got != tt.want {
			t.Errorf("GatewayOf(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
	if got := GatewayOf(netip.Prefix{}); got.IsValid() {
		t.Errorf("GatewayOf(zero) = %v, want the zero Addr", got)
	}
}

func TestInvalidAttachment(t *testing.T) {
	a := newAllocator(t, t.TempDir(), "10.0.0.0/24")
	for _, at := range []Attachment{att("", "eth0"), att("c1", ""), att("c\n1", "eth0"), att("c1", "eth0\n"), att("c1", "eth\x000")} {
		if _, err := a.Allocate(at); err == nil {
			t.Errorf("Allocate(%q) succeeded", at)
		}
		if _, err := a.Get(at); err == nil {
			t.Errorf("Get(%q) succeeded", at)
		}
		if err := a.Release(at); err == nil {
			t.Errorf("Release(%q) succeeded", at)
		}
	}
	if n := len(mustInUse(t, a)); n != 0 {
		t.Errorf("InUse has %d entries, want 0", n)
	}
}

func TestOnDiskLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ipam") // created by New
	a := newAllocator(t, dir, "10.244.1.0/24", "fd00:10:244:1::/64")
	mustAllocate(t, a, att("0123abcd", "eth0"))
	files := map[string]string{
		"10.244.1.0_24/10.244.1.2":            "0123abcd\neth0\n",
		"10.244.1.0_24/last_reserved":         "10.244.1.2\n",
		"fd00:10:244:1::_64/fd00:10:244:1::2": "0123abcd\neth0\n",
		"fd00:10:244:1::_64/last_reserved":    "fd00:10:244:1::2\n",
		"lock":                                "",
	}
	var found []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if info.Mode().Perm() != 0o700 {
				t.Errorf("%s: mode %v, want 0700", rel, info.Mode().Perm())
			}
			return nil
		}
		found = append(found, rel)
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", rel, info.Mode().Perm())
		}
		want, ok := files[rel]
		if !ok {
			t.Errorf("unexpected file %s", rel)
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if string(b) != want {
			t.Errorf("%s = %q, want %q", rel, b, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(files) {
		t.Errorf("files %v, want %d files", found, len(files))
	}
}

// TestOpenWithoutRanges: an allocator without ranges (DEL and GC on a node
// whose ranges are not known) releases and collects in every range directory
// but hands nothing out.
func TestOpenWithoutRanges(t *testing.T) {
	dir := t.TempDir()
	full := newAllocator(t, dir, "10.244.1.0/24", "fd00::/64")
	for _, at := range []Attachment{att("c1", "eth0"), att("c2", "eth0"), att("c3", "eth0")} {
		mustAllocate(t, full, at) // .2-.4, ::2-::4
	}
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Allocate(att("c9", "eth0")); err == nil || !strings.Contains(err.Error(), "no pod ranges") {
		t.Errorf("Allocate without ranges = %v, %v; want an error naming the missing ranges", got, err)
	}
	if err := a.Release(att("c1", "eth0")); err != nil {
		t.Fatal(err)
	}
	released, err := a.GC([]Attachment{att("c3", "eth0")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := addrsOf(released), []string{"10.244.1.3", "fd00::3"}; !slices.Equal(got, want) {
		t.Errorf("GC released %v, want %v", got, want)
	}
	if got, want := mustInUse(t, a), []string{"10.244.1.4", "fd00::4"}; !slices.Equal(got, want) {
		t.Errorf("InUse = %v, want %v", got, want)
	}
	if _, err := Open(""); err == nil {
		t.Error("Open without a directory: no error")
	}
}

// TestGCContinuesPastFailures: an allocation GC cannot remove (its range
// directory is read-only here) does not keep it from releasing the others,
// and the failure is reported.
func TestGCContinuesPastFailures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a read-only bind mount")
	}
	dir := t.TempDir()
	a := newAllocator(t, dir, "10.244.1.0/24", "fd00::/64")
	mustAllocate(t, a, att("gone", "eth0")) // 10.244.1.2, fd00::2
	ro := filepath.Join(dir, "10.244.1.0_24")
	if err := unix.Mount(ro, ro, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	if err := unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	released, err := a.GC(nil)
	if err == nil || !strings.Contains(err.Error(), "10.244.1.2") {
		t.Errorf("GC error %v, want one naming 10.244.1.2", err)
	}
	if got, want := addrsOf(released), []string{"fd00::2"}; !slices.Equal(got, want) {
		t.Errorf("GC released %v, want %v (the writable range's)", got, want)
	}
}
