package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"amime.dev/amime/internal/fastpath"
	"amime.dev/amime/internal/policy"
)

// startFastPath loads the fast path and runs its controller until ctx ends;
// with NetworkPolicy enforced (pol), only pods no policy selects take it, and a
// pod leaves it before rules selecting it are programmed. Where the kernel
// cannot load it the node works without it (nil): every packet takes the
// stack, as it does for pods that policies select.
func startFastPath(ctx context.Context, cfg Config, podCIDRs func() []netip.Prefix, pol *policy.Controller, m *metrics, log *slog.Logger) *fastpath.Controller {
	log = log.With("controller", "fastpath")
	k, err := fastpath.LoadKernel()
	if err != nil {
		log.Warn("fast path unavailable: packets between pods take the stack", "err", err)
		return nil
	}
	// Conntrack sees a fast connection's first and last segments only; its
	// window tracking would find the FIN out of window, leave the entry
	// established (for days) and mark the FIN invalid.
	const liberal = "netfilter/nf_conntrack_tcp_be_liberal"
	if err := cfg.sysctl(liberal, "1"); err != nil {
		log.Warn("fast path: conntrack cannot follow the ends of fast connections", "sysctl", liberal, "err", err)
	}
	// The programs keep the entries of the connections they take alive as
	// those connections' packets would in the stack.
	t, err := fastpath.ReadConntrackTimeouts(cfg.ProcSysNet)
	if err == nil {
		err = k.SetConntrackTimeouts(t)
	}
	if err != nil {
		log.Warn("fast path: conntrack entries of fast connections expire as if idle", "err", err)
	}
	c := fastpath.NewController(k, fastpath.Discover(cfg.ClusterCIDRs, podCIDRs), log)
	if pol != nil {
		c.Gate()
		pol.SetGate(c)
	}
	m.reg.MustRegister(fastpath.NewCollector(k.Counters, c.Status))
	go func() {
		// Pod veths and their routes come and go with CNI ADD and DEL.
		if err := fastpath.Watch(ctx, c.OnChange); err != nil {
			log.Warn("fast path: route watch failed; new pods wait for the resync", "err", err)
		}
	}()
	go func() {
		c.Run(ctx, 50*time.Millisecond, 30*time.Second)
		if err := k.Close(); err != nil {
			log.Warn("fast path: detach", "err", err)
		}
	}()
	return c
}
