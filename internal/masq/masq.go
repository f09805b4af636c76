// Package masq masquerades pod traffic that leaves the cluster: packets from a
// pod to anything outside the cluster's pod ranges and the non-masquerade
// ranges (the node network by default, extendable as ip-masq-agent does) leave
// with the node's address. Traffic between pods and from pods to nodes keeps its
// source address.
//
// It owns one nftables table, `inet amime-masq`: a static postrouting chain and
// two interval sets per family whose contents change; a sync rewrites the sets
// and the chain in one transaction, so there is never a moment without the rule
// and nothing is flushed on restart.
package masq

import (
	"context"
	"fmt"
	"net/netip"

	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/cidr"
)

// Table is the nftables table this package owns.
const Table = "amime-masq"

// Config is the desired masquerade state.
type Config struct {
	// PodCIDRs are the cluster's pod ranges: sources that are masqueraded.
	PodCIDRs []netip.Prefix
	// NonMasquerade are destinations reached with the pod's own address: the
	// pod ranges themselves are always added.
	NonMasquerade []netip.Prefix
}

// Sync programs the table for cfg in one transaction.
func Sync(ctx context.Context, nft knftables.Interface, cfg Config) error {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("amime: masquerade of pod traffic leaving the cluster")})
	for _, fam := range []string{"4", "6"} {
		typ := "ipv4_addr"
		if fam == "6" {
			typ = "ipv6_addr"
		}
		for _, set := range []string{"pod-cidrs-v" + fam, "no-masq-v" + fam} {
			tx.Add(&knftables.Set{Name: set, Type: typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
			tx.Flush(&knftables.Set{Name: set})
		}
	}
	tx.Add(&knftables.Chain{
		Name: "postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority),
	})
	tx.Flush(&knftables.Chain{Name: "postrouting"})
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ip saddr @pod-cidrs-v4 ip daddr != @no-masq-v4 masquerade fully-random",
		Comment: knftables.PtrTo("pod to outside the cluster")})
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ip6 saddr @pod-cidrs-v6 ip6 daddr != @no-masq-v6 masquerade fully-random",
		Comment: knftables.PtrTo("pod to outside the cluster")})
	for _, p := range cidr.Normalize(cfg.PodCIDRs) {
		tx.Add(&knftables.Element{Set: "pod-cidrs-v" + family(p), Key: []string{p.String()}})
	}
	for _, p := range cidr.Normalize(append(append([]netip.Prefix{}, cfg.PodCIDRs...), cfg.NonMasquerade...)) {
		tx.Add(&knftables.Element{Set: "no-masq-v" + family(p), Key: []string{p.String()}})
	}
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program table inet %s: %w", Table, err)
	}
	return nil
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "4"
	}
	return "6"
}

// New returns the real nftables interface for the table.
func New() (knftables.Interface, error) {
	return knftables.New(knftables.InetFamily, Table)
}

// Delete removes the table (used by `lab down` paths and tests).
func Delete(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	return nft.Run(ctx, tx)
}
