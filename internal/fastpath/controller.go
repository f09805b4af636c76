// Package fastpath takes packets between pods off the nodes' IP stacks: a tc
// program on each pod's node-side veth hands them straight to the destination
// pod (bpf_redirect_peer) or towards the other node (bpf_redirect, natively or
// wrapped in the overlay's VXLAN headers by the program itself) when the stack
// would do nothing to them but forward them (program.go says exactly when);
// programs on the devices other nodes' packets come in on deliver them, taking
// the overlay's headers off on the underlay. The controller keeps the
// programs' maps equal to the node's pods that no NetworkPolicy selects, the
// pod ranges and the VXLAN device's forwarding entries, and the programs
// attached to every pod veth and those devices.
package fastpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"time"

	"amime.dev/amime/internal/status"
	"amime.dev/amime/internal/syncloop"
)

// Dataplane is the kernel side (Kernel; a fake in tests).
type Dataplane interface {
	Endpoints() (map[netip.Addr]Endpoint, error)
	Put(netip.Addr, Endpoint) error
	Delete(netip.Addr) error
	Ranges() (map[netip.Prefix]bool, error)
	PutRange(p netip.Prefix, remote bool) error
	DeleteRange(netip.Prefix) error
	Attached() map[int]Role
	Attach(ifindex int, role Role) error
	Detach(ifindex int) error
	Tunnel() (Tunnel, error)
	SetTunnel(Tunnel) error
	VTEPs() (map[MAC]netip.Addr, error)
	PutVTEP(MAC, netip.Addr) error
	DeleteVTEP(MAC) error
}

// Local is the node as the controller programs it.
type Local struct {
	// Endpoints are the node's pods, by address.
	Endpoints map[netip.Addr]Endpoint
	// Uplinks are the devices the node's routes to other nodes' pod ranges go
	// out of (the VXLAN device; the underlay in native mode): packets from
	// other nodes' pods come in on them.
	Uplinks map[int]bool
	// Ranges are pod ranges: true for the cluster's (another node's unless
	// more specific false one matches), false for this node's.
	Ranges map[netip.Prefix]bool
	// Tunnel is the overlay's VXLAN device, when the programs can write its
	// encapsulation (zero otherwise); Underlay is the device its packets
	// come in on, and VTEPs its forwarding entries: another node's VTEP MAC
	// → that node's underlay address.
	Tunnel   Tunnel
	Underlay int
	VTEPs    map[MAC]netip.Addr
}

// Controller programs the fast path from the node's pod veths (discover) and,
// when NetworkPolicy is enforced, the pods no policy selects.
type Controller struct {
	dp       Dataplane
	discover func() (Local, error)
	log      *slog.Logger
	kick     chan struct{}

	mu sync.Mutex
	// gated: only eligible addresses may be programmed (NetworkPolicy is
	// enforced); otherwise every pod of the node is.
	gated    bool
	eligible map[netip.Addr]bool
	status   Status
}

// Status is what `amime status` shows of the fast path.
type Status struct {
	Endpoints  int // addresses programmed
	Interfaces int // pod veths and uplinks a program is attached to
	LastSync   time.Time
	LastError  string
}

// NewController returns a controller. discover reads the node.
func NewController(dp Dataplane, discover func() (Local, error), log *slog.Logger) *Controller {
	return &Controller{dp: dp, discover: discover, log: log, kick: make(chan struct{}, 1)}
}

// Gate makes the controller program only the addresses the policy controller
// reports through Narrow and Widen; none before its first report.
func (c *Controller) Gate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gated, c.eligible = true, map[netip.Addr]bool{}
}

// Narrow is called before the policy rules computed with unselected are
// programmed: every programmed address not in it leaves the fast path now, so
// that no packet of a pod a new policy selects skips its rules.
func (c *Controller) Narrow(unselected map[netip.Addr]bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gated {
		return nil
	}
	for a := range c.eligible {
		if !unselected[a] {
			delete(c.eligible, a)
		}
	}
	programmed, err := c.dp.Endpoints()
	if err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	var errs []error
	for a := range programmed {
		if !c.eligible[a] {
			errs = append(errs, c.dp.Delete(a))
		}
	}
	return errors.Join(errs...)
}

// Widen is called once those rules are programmed: the fast path may take
// exactly the unselected pods (the next sync adds them).
func (c *Controller) Widen(unselected map[netip.Addr]bool) {
	c.mu.Lock()
	if c.gated {
		c.eligible = maps.Clone(unselected)
	}
	c.mu.Unlock()
	c.OnChange()
}

// OnChange asks for a sync.
func (c *Controller) OnChange() { syncloop.Signal(c.kick) }

// Run syncs on changes, at most every minInterval, and every resync.
func (c *Controller) Run(ctx context.Context, minInterval, resync time.Duration) {
	syncloop.Loop{MinInterval: minInterval, Resync: resync, MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second,
		Sync: c.Sync, Kick: c.OnChange,
		Failed: func(err error) {
			c.log.Warn("fast path sync failed; the packets it would take go through the stack", "err", err)
		},
	}.Run(ctx, c.kick)
}

// Sync attaches the program to every pod veth and programs the endpoints of
// the eligible pods, removing the rest.
func (c *Controller) Sync(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.sync()
	c.status.LastSync = time.Now()
	c.status.LastError = ""
	if err != nil {
		c.status.LastError = err.Error()
	}
	return err
}

func (c *Controller) sync() error {
	local, err := c.discover()
	if err != nil {
		return fmt.Errorf("read the node's pod veths and routes: %w", err)
	}
	// The ranges and the tunnel first: the pod programs need them to forward
	// to other nodes.
	errs := []error{c.syncRanges(local.Ranges), c.syncTunnel(local)}
	roles := map[int]Role{}
	for _, ep := range local.Endpoints {
		roles[ep.IfIndex] = FromPod
	}
	if local.Tunnel.IfIndex != 0 && local.Underlay != 0 {
		roles[local.Underlay] = FromTunnel
	}
	for idx := range local.Uplinks {
		roles[idx] = FromNodes
	}
	errs = append(errs, applyDiff(c.dp.Attached(), roles, c.dp.Attach, c.dp.Detach)...)
	programmed, err := c.dp.Endpoints()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	want := map[netip.Addr]Endpoint{}
	for a, ep := range local.Endpoints {
		if !c.gated || c.eligible[a] {
			want[a] = ep
		}
	}
	errs = append(errs, applyDiff(programmed, want, c.dp.Put, c.dp.Delete)...)
	c.status.Endpoints, c.status.Interfaces = len(want), len(c.dp.Attached())
	return errors.Join(errs...)
}

// syncTunnel programs the VTEPs, then the tunnel: a VTEP missing only sends
// its packets through the stack.
func (c *Controller) syncTunnel(local Local) error {
	programmed, err := c.dp.VTEPs()
	if err != nil {
		return err
	}
	errs := applyDiff(programmed, local.VTEPs, c.dp.PutVTEP, c.dp.DeleteVTEP)
	cur, err := c.dp.Tunnel()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if cur != local.Tunnel {
		errs = append(errs, c.dp.SetTunnel(local.Tunnel))
	}
	return errors.Join(errs...)
}

func (c *Controller) syncRanges(want map[netip.Prefix]bool) error {
	programmed, err := c.dp.Ranges()
	if err != nil {
		return err
	}
	return errors.Join(applyDiff(programmed, want, c.dp.PutRange, c.dp.DeleteRange)...)
}

// applyDiff makes programmed contents (a map's, the attachments) the wanted
// ones. Removals come first: an address that moved to another veth must not
// be delivered to the old one meanwhile.
func applyDiff[K, V comparable](programmed, want map[K]V, put func(K, V) error, del func(K) error) []error {
	var errs []error
	for k := range programmed {
		if _, ok := want[k]; !ok {
			errs = append(errs, del(k))
		}
	}
	for k, v := range want {
		if cur, ok := programmed[k]; !ok || cur != v {
			errs = append(errs, put(k, v))
		}
	}
	return errs
}

// Status returns the state of the last sync.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Component is the fast path's part of the agent's /status document.
func (c *Controller) Component() status.Component {
	st := c.Status()
	comp := status.Component{Name: "fastpath", LastError: st.LastError,
		Programmed: map[string]int{"endpoints": st.Endpoints, "interfaces": st.Interfaces}}
	if st.LastError == "" {
		comp.LastSync = st.LastSync
	}
	return comp
}
