package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/netns"
)

// The netlink writer must program exactly what the nft binary compiles from the
// same sync: two proxiers over the same caches, one through nft and one through
// netlink, each in its own throwaway network namespace, give the same table
// (as nft lists it) after a full sync, after each kind of change, and after a
// restart over the previous table.
func TestNetlinkWriterMatchesNft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (it creates network namespaces and programs nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skipf("needs the nft binary: %v", err)
	}
	e := newEnv(t, clusterServices()...)
	e.versioned = true
	type side struct {
		ns string
		p  *Proxier
	}
	var sides []*side
	newProxier := func(s *side, useNetlink bool) {
		t.Helper()
		err := netns.Do(netns.Path(s.ns), func() error {
			nft, err := knftables.New(knftables.InetFamily, Table)
			if err != nil {
				return err
			}
			s.p = NewProxier(testConfig, nft, corelisters.NewServiceLister(e.svcs), discoverylisters.NewEndpointSliceLister(e.slices),
				nil, nil, slog.New(slog.DiscardHandler))
			if useNetlink {
				s.p.UseNetlink()
			}
			// Where a chain's endpoint slots lie depends on the order the
			// caches list Services in; both sides share one allocator so that
			// their listings compare line by line.
			if len(sides) > 0 {
				s.p.slots = sides[0].p.slots
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, kind := range []string{"nft", "netlink"} {
		s := &side{ns: fmt.Sprintf("amime-proxytest-%s-%d", kind, os.Getpid())}
		_ = netns.Delete(s.ns)
		if err := netns.Add(s.ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netns.Delete(s.ns) })
		newProxier(s, kind == "netlink")
		sides = append(sides, s)
	}
	compare := func(step string) {
		t.Helper()
		var dumps []string
		for _, s := range sides {
			if err := netns.Do(netns.Path(s.ns), func() error { return s.p.Sync(context.Background()) }); err != nil {
				t.Fatalf("%s: sync in %s: %v", step, s.ns, err)
			}
			out, err := exec.Command("ip", "netns", "exec", s.ns, "nft", "list", "table", "inet", Table).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: nft list in %s: %v: %s", step, s.ns, err, out)
			}
			dumps = append(dumps, normalizeListing(string(out)))
		}
		if diff := cmp.Diff(dumps[0], dumps[1]); diff != "" {
			t.Errorf("%s: (-nft +netlink):\n%s", step, diff)
		}
		if !strings.Contains(dumps[1], "dnat ip to") {
			t.Errorf("%s: the table has no DNAT rules:\n%s", step, dumps[1])
		}
	}
	compare("full sync")
	// The Services of the test cover every rule shape.
	out, _ := exec.Command("ip", "netns", "exec", sides[1].ns, "nft", "list", "table", "inet", Table).CombinedOutput()
	for _, shape := range []string{"dnat ip6 to", "numgen random mod", "update @", "fib saddr type local goto", "ip6 saddr != @cluster-cidrs-v6", "goto drop-chain", "meta l4proto udp"} {
		if !strings.Contains(string(out), shape) {
			t.Errorf("the full sync has no rule with %q", shape)
		}
	}
	for _, st := range changeSteps(e) {
		st.change()
		compare(st.name)
	}
	// A restarted agent finds the previous table: its first sync is full.
	e.delete(newService("default", "web", nil))
	newProxier(sides[1], true)
	compare("restart")
}

var elementsRE = regexp.MustCompile(`(?s)elements = \{(.*?)\}`)

// normalizeListing sorts the elements of each set and map: nft lists them in
// the kernel's hash order, which differs between two tables with the same
// contents.
func normalizeListing(s string) string {
	return elementsRE.ReplaceAllStringFunc(s, func(m string) string {
		inner := elementsRE.FindStringSubmatch(m)[1]
		var els []string
		for _, el := range strings.Split(inner, ",") {
			if el = strings.Join(strings.Fields(el), " "); el != "" {
				els = append(els, el)
			}
		}
		sort.Strings(els)
		return "elements = { " + strings.Join(els, ", ") + " }"
	})
}
