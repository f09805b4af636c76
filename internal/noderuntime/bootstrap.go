package noderuntime

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"

	"amime.dev/amime/internal/atomicfile"
)

// bootstrapNet is the lab's stand-in pod network until the amime CNI plugin takes
// over: a conflist for Debian's bridge + host-local plugins over the node's
// podCIDRs, and one route per remote node's podCIDR via its InternalIP (the nodes
// share the lab bridge). It is temporary glue and is enabled by --bootstrap-cni only.
type bootstrapNet struct {
	opts  Options
	log   *slog.Logger
	nodes corelisters.NodeLister
	ch    chan struct{}
}

func (b *bootstrapNet) kick() {
	select {
	case b.ch <- struct{}{}:
	default:
	}
}

func (b *bootstrapNet) run(ctx context.Context) {
	b.ch = make(chan struct{}, 1)
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		if err := b.sync(); err != nil {
			b.log.Warn("bootstrap pod network", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-b.ch:
		case <-t.C:
		}
	}
}

func (b *bootstrapNet) sync() error {
	nodes, err := b.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Name == b.opts.NodeName {
			if len(n.Spec.PodCIDRs) > 0 {
				if err := b.writeConf(n.Spec.PodCIDRs); err != nil {
					return err
				}
			}
			continue
		}
		if err := b.routeTo(n); err != nil {
			b.log.Warn("route to node", "node", n.Name, "err", err)
		}
	}
	return nil
}

func (b *bootstrapNet) writeConf(podCIDRs []string) error {
	var ranges [][]map[string]string
	var routes []map[string]string
	for _, c := range podCIDRs {
		ranges = append(ranges, []map[string]string{{"subnet": c}})
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is6() {
			routes = append(routes, map[string]string{"dst": "::/0"})
		} else {
			routes = append(routes, map[string]string{"dst": "0.0.0.0/0"})
		}
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "amime-lab-bootstrap",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type": "host-local", "ranges": ranges, "routes": routes,
					"dataDir": filepath.Join(b.opts.StateDir, "var/lib/cni/networks"),
				},
			},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(b.opts.CNIConfDir, "10-amime-lab-bootstrap.conflist")
	return atomicfile.Write(path, data, 0o644)
}

// routeTo routes node n's pod ranges via its underlay address of the same family.
func (b *bootstrapNet) routeTo(n *corev1.Node) error {
	link, err := netlink.LinkByName("eth0")
	if err != nil {
		return err
	}
	for _, c := range n.Spec.PodCIDRs {
		_, dst, err := net.ParseCIDR(c)
		if err != nil {
			continue
		}
		for _, a := range n.Status.Addresses {
			gw := net.ParseIP(a.Address)
			if a.Type != corev1.NodeInternalIP || gw == nil || (gw.To4() == nil) != (dst.IP.To4() == nil) {
				continue
			}
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw}); err != nil {
				return err
			}
		}
	}
	return nil
}
