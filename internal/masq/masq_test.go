package masq

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"amime.dev/amime/internal/cidr"
	"amime.dev/amime/internal/golden"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func mustSync(t *testing.T, nft knftables.Interface, cfg Config) {
	t.Helper()
	if err := Sync(context.Background(), nft, cfg); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// elements lists a set's elements.
func elements(t *testing.T, fake *knftables.Fake, set string) []string {
	t.Helper()
	es, err := fake.ListElements(context.Background(), "set", set)
	if err != nil {
		t.Fatalf("list set %s: %v", set, err)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, strings.Join(e.Key, " "))
	}
	slices.Sort(out)
	return out
}

var sets = []string{"pod-cidrs-v4", "no-masq-v4", "pod-cidrs-v6", "no-masq-v6"}

// checkSets verifies that the sets hold exactly want (missing sets: empty) and
// that no set has overlapping elements, which interval sets refuse.
func checkSets(t *testing.T, fake *knftables.Fake, want map[string][]string) {
	t.Helper()
	for _, set := range sets {
		got := elements(t, fake, set)
		w := append([]string{}, want[set]...)
		slices.Sort(w)
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("set %s (-want +got):\n%s", set, diff)
		}
		for i, a := range got {
			for _, b := range got[i+1:] {
				if netip.MustParsePrefix(a).Overlaps(netip.MustParsePrefix(b)) {
					t.Errorf("set %s: %s and %s overlap", set, a, b)
				}
			}
		}
	}
}

func TestSync(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want map[string][]string
	}{
		{
			name: "ipv4",
			cfg:  Config{PodCIDRs: prefixes("10.244.0.0/16"), NonMasquerade: prefixes("192.168.1.0/24")},
			want: map[string][]string{
				"pod-cidrs-v4": {"10.244.0.0/16"},
				"no-masq-v4":   {"10.244.0.0/16", "192.168.1.0/24"},
			},
		},
		{
			name: "dual-stack",
			cfg: Config{
				PodCIDRs:      prefixes("10.244.0.0/16", "fd00:10:244::/56"),
				NonMasquerade: prefixes("192.168.1.0/24", "fd00:1::/64"),
			},
			want: map[string][]string{
				"pod-cidrs-v4": {"10.244.0.0/16"},
				"no-masq-v4":   {"10.244.0.0/16", "192.168.1.0/24"},
				"pod-cidrs-v6": {"fd00:10:244::/56"},
				"no-masq-v6":   {"fd00:10:244::/56", "fd00:1::/64"},
			},
		},
		{
			name: "ipv6",
			cfg:  Config{PodCIDRs: prefixes("fd00:10:244::/56"), NonMasquerade: prefixes("fd00:1::/64")},
			want: map[string][]string{
				"pod-cidrs-v6": {"fd00:10:244::/56"},
				"no-masq-v6":   {"fd00:10:244::/56", "fd00:1::/64"},
			},
		},
		{
			// 10.0.0.0/8 covers the pod range and the service range; 192.168.0.0/16
			// covers the node network given with host bits; a duplicate and an
			// IPv6 range covering the IPv6 pod range.
			name: "overlapping",
			cfg: Config{
				PodCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/56"),
				NonMasquerade: prefixes("10.96.0.0/12", "192.168.1.11/24", "10.0.0.0/8", "192.168.0.0/16",
					"172.16.0.0/12", "172.16.0.0/12", "fd00::/8", "fd00:1::/64"),
			},
			want: map[string][]string{
				"pod-cidrs-v4": {"10.244.0.0/16"},
				"no-masq-v4":   {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"},
				"pod-cidrs-v6": {"fd00:10:244::/56"},
				"no-masq-v6":   {"fd00::/8"},
			},
		},
		{
			// Overlapping pod ranges (an expanded cluster CIDR) are merged too.
			name: "overlapping-pod-ranges",
			cfg:  Config{PodCIDRs: prefixes("10.244.0.0/16", "10.244.128.0/17", "10.240.0.0/12")},
			want: map[string][]string{
				"pod-cidrs-v4": {"10.240.0.0/12"},
				"no-masq-v4":   {"10.240.0.0/12"},
			},
		},
		{
			name: "empty",
			cfg:  Config{},
			want: map[string][]string{},
		},
		{
			name: "overlay",
			cfg:  Config{PodCIDRs: prefixes("10.244.0.0/16"), NonMasquerade: prefixes("192.168.1.0/24"), TunnelPort: 8472},
			want: map[string][]string{
				"pod-cidrs-v4": {"10.244.0.0/16"},
				"no-masq-v4":   {"10.244.0.0/16", "192.168.1.0/24"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := knftables.NewFake(knftables.InetFamily, Table)
			mustSync(t, fake, tt.cfg)
			golden.Check(t, "sync-"+tt.name, fake.Dump())
			checkSets(t, fake, tt.want)
			rules, err := fake.ListRules(context.Background(), "postrouting")
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) != 2 {
				t.Errorf("%d rules in postrouting, want 2", len(rules))
			}
			wantTunnel := 0
			if tt.cfg.TunnelPort != 0 {
				wantTunnel = 1
			}
			for _, chain := range []string{"tunnel-prerouting", "tunnel-output"} {
				rules, err := fake.ListRules(context.Background(), chain)
				if err != nil {
					t.Fatal(err)
				}
				if len(rules) != wantTunnel {
					t.Errorf("%d rules in %s, want %d", len(rules), chain, wantTunnel)
				}
			}
			// A second Sync of the same configuration changes nothing.
			before := fake.Dump()
			mustSync(t, fake, tt.cfg)
			if diff := cmp.Diff(before, fake.Dump()); diff != "" {
				t.Errorf("second Sync changed the table (-before +after):\n%s", diff)
			}
		})
	}
}

// A Sync replaces the contents of the sets and the chain: nothing of the
// previous configuration stays.
func TestSyncReplaces(t *testing.T) {
	first := Config{
		PodCIDRs:      prefixes("10.244.0.0/16", "fd00:10:244::/56"),
		NonMasquerade: prefixes("192.168.1.0/24", "172.16.0.0/12", "fd00:1::/64"),
	}
	first.TunnelPort = 8472 // overlay, then native: the tunnel rules go
	second := Config{
		PodCIDRs:      prefixes("10.32.0.0/16"),
		NonMasquerade: prefixes("192.168.2.0/24"),
	}
	fake := knftables.NewFake(knftables.InetFamily, Table)
	mustSync(t, fake, first)
	mustSync(t, fake, second)

	fresh := knftables.NewFake(knftables.InetFamily, Table)
	mustSync(t, fresh, second)
	if diff := cmp.Diff(fresh.Dump(), fake.Dump()); diff != "" {
		t.Errorf("table after two Syncs differs from one after only the second (-want +got):\n%s", diff)
	}
	checkSets(t, fake, map[string][]string{
		"pod-cidrs-v4": {"10.32.0.0/16"},
		"no-masq-v4":   {"10.32.0.0/16", "192.168.2.0/24"},
	})
	golden.Check(t, "sync-replaced", fake.Dump())
}

func TestSyncError(t *testing.T) {
	err := Sync(context.Background(), refusing{knftables.NewFake(knftables.InetFamily, Table)}, Config{PodCIDRs: prefixes("10.244.0.0/16")})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "inet "+Table) {
		t.Errorf("Sync error = %v, want one naming the table", err)
	}
}

// refusing fails every transaction.
type refusing struct{ *knftables.Fake }

func (refusing) Run(context.Context, *knftables.Transaction) error {
	return os.ErrPermission
}

func TestDelete(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	mustSync(t, fake, Config{PodCIDRs: prefixes("10.244.0.0/16")})
	if err := Delete(context.Background(), fake); err != nil {
		t.Fatal(err)
	}
	if d := fake.Dump(); d != "" {
		t.Errorf("table left after Delete:\n%s", d)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name string
		in   []netip.Prefix
		want []string
	}{
		{"nil", nil, nil},
		{"invalid dropped", []netip.Prefix{{}}, nil},
		{"one", prefixes("10.244.0.0/16"), []string{"10.244.0.0/16"}},
		{"masked", prefixes("192.168.1.11/24", "fd00:1::11/64"), []string{"192.168.1.0/24", "fd00:1::/64"}},
		{"sorted", prefixes("192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12"), []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
		{"covered after", prefixes("10.0.0.0/8", "10.244.0.0/16"), []string{"10.0.0.0/8"}},
		{"covered before", prefixes("10.244.0.0/16", "10.96.0.0/12", "10.0.0.0/8"), []string{"10.0.0.0/8"}},
		{"same address, shorter wins", prefixes("10.244.0.0/24", "10.244.0.0/16"), []string{"10.244.0.0/16"}},
		{"duplicates", prefixes("10.244.0.0/16", "10.244.0.0/16", "10.244.1.1/16"), []string{"10.244.0.0/16"}},
		{"adjacent kept", prefixes("10.0.0.0/9", "10.128.0.0/9"), []string{"10.0.0.0/9", "10.128.0.0/9"}},
		{"host routes", prefixes("10.0.0.1/32", "10.0.0.0/31"), []string{"10.0.0.0/31"}},
		{"everything", prefixes("10.0.0.0/8", "0.0.0.0/0", "::/0", "fd00::/8"), []string{"0.0.0.0/0", "::/0"}},
		{"families apart", prefixes("::/0", "10.244.0.0/16", "fd00::/8"), []string{"10.244.0.0/16", "::/0"}},
		{"ipv6 covered", prefixes("fd00:10:244:1::/64", "fd00:10:244::/56", "fd00:1::/64"), []string{"fd00:1::/64", "fd00:10:244::/56"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			var got []string
			for _, p := range cidr.Normalize(tt.in) {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("normalize(%v) (-want +got):\n%s", tt.in, diff)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("normalize changed its input: %v, was %v", tt.in, in)
			}
		})
	}
}
