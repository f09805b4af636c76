package cni

// CNI conformance test: the plugin as a container runtime drives it, through
// libcni, with real network namespaces. It needs root and iproute2.
//
// The machine is shared, so nothing here touches the root network namespace:
// every plugin call runs inside a throwaway "node" namespace
// (amime-cnitest-node-<pid>), the pods are throwaway namespaces of their own
// (amime-cnitest-pod-<pid>-<n>), and every namespace is deleted, by its exact
// name, when the test ends. The plugin is this test binary itself (see TestMain),
// reached through a symlink named "amime" in a temporary CNI bin directory.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/podmac"
)

const (
	confV4Range   = "10.250.1.0/24"
	confV6Range   = "fd00:250:1::/64"
	confV4Gateway = "10.250.1.1"
	confV6Gateway = "fe80::1"
	confMTU       = 1400
	confRouteMTU  = 1350
	confNetName   = "amime-test"
	confTuningBin = "/usr/lib/cni/tuning"
	confTimeout   = 60 * time.Second
)

// confEnv is one run of the conformance test.
type confEnv struct {
	node     string // name of the node namespace
	binDir   string
	cacheDir string
	cni      *libcni.CNIConfig
	pods     atomic.Int64
}

func confSetup(t *testing.T) *confEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the CNI conformance test needs root (it creates network namespaces)")
	}
	if _, err := os.Stat(confTuningBin); err != nil {
		t.Skipf("the CNI conformance test needs the reference plugins: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("the CNI conformance test needs iproute2: %v", err)
	}
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	e := &confEnv{
		node:     fmt.Sprintf("amime-cnitest-node-%d", os.Getpid()),
		binDir:   filepath.Join(tmp, "bin"),
		cacheDir: filepath.Join(tmp, "cache"),
	}
	if err := os.Mkdir(e.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(e.binDir, "amime")); err != nil {
		t.Fatal(err)
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{e.binDir, "/usr/lib/cni"}, e.cacheDir, nil)
	confAddNS(t, e.node)
	confIP(t, "-n", e.node, "link", "set", "lo", "up")
	return e
}

// confAddNS creates the named namespace and deletes it (by that exact name) when
// t ends.
func confAddNS(t *testing.T, name string) {
	t.Helper()
	if _, err := os.Stat(netns.Path(name)); err == nil {
		t.Fatalf("network namespace %s exists already (left over by an earlier run?)", name)
	}
	confIP(t, "netns", "add", name)
	t.Cleanup(func() {
		if _, err := os.Stat(netns.Path(name)); err != nil {
			return
		}
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
}

// newPod creates a pod namespace that lives until t ends.
func (e *confEnv) newPod(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("amime-cnitest-pod-%d-%d", os.Getpid(), e.pods.Add(1))
	confAddNS(t, name)
	return name
}

// confIP runs ip(8) and returns its output.
func confIP(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNode runs fn on a thread inside the node namespace; plugins it starts
// inherit the namespace.
func (e *confEnv) inNode(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
	defer cancel()
	return netns.Do(netns.Path(e.node), func() error { return fn(ctx) })
}

func confRT(pod, containerID, ifname string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns.Path(pod), IfName: ifname}
}

func (e *confEnv) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*types100.Result, error) {
	var res types.Result
	err := e.inNode(func(ctx context.Context) error {
		var err error
		res, err = e.cni.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return types100.NewResultFromResult(res)
}

// mustAdd is add that fails the test on error and DELs the attachment (best
// effort) when t ends.
func (e *confEnv) mustAdd(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) *types100.Result {
	t.Helper()
	res, err := e.add(list, rt)
	if err != nil {
		t.Fatalf("ADD %s/%s: %v", rt.ContainerID, rt.IfName, err)
	}
	e.delOnCleanup(t, list, rt)
	return res
}

func (e *confEnv) delOnCleanup(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	t.Cleanup(func() { _ = e.del(list, rt) })
}

func (e *confEnv) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return e.inNode(func(ctx context.Context) error { return e.cni.CheckNetworkList(ctx, list, rt) })
}

func (e *confEnv) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return e.inNode(func(ctx context.Context) error { return e.cni.DelNetworkList(ctx, list, rt) })
}

// confListOpts describe a network configuration list.
type confListOpts struct {
	version   string   // cniVersion; 1.1.0 if empty
	podCIDRs  []string // the plugin's podCIDRs; the test ranges if nil
	dataDir   string
	tuningDir string // if set, the tuning plugin is chained after amime (with this dataDir)
}

func confList(t *testing.T, o confListOpts) *libcni.NetworkConfigList {
	t.Helper()
	if o.version == "" {
		o.version = "1.1.0"
	}
	if o.podCIDRs == nil {
		o.podCIDRs = []string{confV4Range, confV6Range}
	}
	cidrs, err := json.Marshal(o.podCIDRs)
	if err != nil {
		t.Fatal(err)
	}
	dataDir, _ := json.Marshal(o.dataDir)
	plugins := fmt.Sprintf(`{"type":"amime","podCIDRs":%s,"mtu":%d,"routeMTU":%d,"dataDir":%s}`, cidrs, confMTU, confRouteMTU, dataDir)
	if o.tuningDir != "" {
		tuningDir, _ := json.Marshal(o.tuningDir)
		plugins += fmt.Sprintf(`,{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"0"},"dataDir":%s}`, tuningDir)
	}
	b := []byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, o.version, confNetName, plugins))
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("ConfListFromBytes(%s): %v", b, err)
	}
	return list
}

// confAllocs reads the IPAM directory: address -> "<container ID>/<ifname>".
func confAllocs(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ranges, err := os.ReadDir(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if !r.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dataDir, r.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if _, err := netip.ParseAddr(f.Name()); err != nil {
				continue // last_reserved and friends
			}
			data, err := os.ReadFile(filepath.Join(dataDir, r.Name(), f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[f.Name()] = strings.ReplaceAll(strings.TrimSuffix(string(data), "\n"), "\n", "/")
		}
	}
	return out
}

// confOwned returns the addresses of confAllocs owned by containerID/ifname.
func confOwned(allocs map[string]string, containerID, ifname string) []string {
	var out []string
	for a, o := range allocs {
		if o == containerID+"/"+ifname {
			out = append(out, a)
		}
	}
	return out
}

// confWithHandle runs fn with a netlink handle in the named namespace. The
// handle is closed afterwards, so it never keeps a namespace alive.
func confWithHandle(t *testing.T, nsName string, fn func(h *netlink.Handle)) {
	t.Helper()
	ns, err := vnetns.GetFromPath(netns.Path(nsName))
	if err != nil {
		t.Fatalf("open namespace %s: %v", nsName, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", nsName, err)
	}
	defer h.Close()
	fn(h)
}

// confLinkExists reports whether the named link exists in the namespace.
func confLinkExists(t *testing.T, nsName, link string) bool {
	t.Helper()
	var exists bool
	confWithHandle(t, nsName, func(h *netlink.Handle) {
		_, err := h.LinkByName(link)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil:
			exists = true
		case errors.As(err, &nf):
		default:
			t.Fatalf("look up %s in %s: %v", link, nsName, err)
		}
	})
	return exists
}

// confHostVeths lists the amime node-side veths in the namespace.
func confHostVeths(t *testing.T, nsName string) []string {
	t.Helper()
	var out []string
	confWithHandle(t, nsName, func(h *netlink.Handle) {
		links, err := h.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "amv") {
				out = append(out, l.Attrs().Name)
			}
		}
	})
	return out
}

// confSysctl reads a sysctl inside the named namespace.
func confSysctl(t *testing.T, nsName, key string) string {
	t.Helper()
	var out []byte
	err := netns.Do(netns.Path(nsName), func() error {
		var err error
		out, err = os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		return err
	})
	if err != nil {
		t.Fatalf("sysctl %s in %s: %v", key, nsName, err)
	}
	return strings.TrimSpace(string(out))
}

func confIsDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

func confHasAddr(addrs []netlink.Addr, want netip.Prefix) bool {
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if ok && ip.Unmap() == want.Addr() && ones == want.Bits() {
			return true
		}
	}
	return false
}

// confHasDefaultVia reports whether routes holds a default route via gw on link.
func confHasDefaultVia(routes []netlink.Route, linkIndex int, gw string) bool {
	for _, r := range routes {
		if confIsDefault(r.Dst) && r.Gw != nil && r.Gw.Equal(net.ParseIP(gw)) && r.LinkIndex == linkIndex {
			return true
		}
	}
	return false
}

// confCode returns the CNI error code carried by err.
func confCode(err error) (uint, bool) {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code, true
	}
	return 0, false
}

// assertWired checks one attachment's ADD result and the kernel state it
// describes: the pod end with its addresses and default routes, the node end
// with the host routes, the gateways. host is the index of the node end in
// res.Interfaces (the pod end follows it); mtuField says whether the result
// was a CNI 1.1.0 one, whose interfaces carry their MTU. It returns the pod's
// addresses.
func (e *confEnv) assertWired(t *testing.T, res *types100.Result, host int, mtuField bool, pod, containerID, ifname string) (v4, v6 netip.Addr) {
	t.Helper()
	hostName := HostVethName(containerID, ifname)
	podPath := netns.Path(pod)

	// The result.
	if len(res.Interfaces) < host+2 {
		t.Fatalf("result has %d interfaces, want the node end and the pod end at %d and %d: %+v", len(res.Interfaces), host, host+1, res)
	}
	hi, pi := res.Interfaces[host], res.Interfaces[host+1]
	if hi.Name != hostName || hi.Sandbox != "" {
		t.Errorf("result interface %d = %+v, want the node end %s without a sandbox", host, hi, hostName)
	}
	if pi.Name != ifname || pi.Sandbox != podPath {
		t.Errorf("result interface %d = %+v, want %s in sandbox %s", host+1, pi, ifname, podPath)
	}
	// The interface "mtu" field is new in CNI 1.1.0; 1.0.0 results do not carry it.
	if mtuField && (pi.Mtu != confMTU || hi.Mtu != confMTU) {
		t.Errorf("result: interface mtu %d (node end %d), want %d", pi.Mtu, hi.Mtu, confMTU)
	}
	v4Range, v6Range := netip.MustParsePrefix(confV4Range), netip.MustParsePrefix(confV6Range)
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != host+1 {
			continue
		}
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		a = a.Unmap()
		ones, bits := ipc.Address.Mask.Size()
		switch {
		case a.Is4():
			if v4.IsValid() {
				t.Errorf("result: a second IPv4 address %s for %s", a, ifname)
			}
			v4 = a
			if !v4Range.Contains(a) || ones != 32 || bits != 32 || !ipc.Gateway.Equal(net.ParseIP(confV4Gateway)) {
				t.Errorf("result: IPv4 %s gateway %s, want a /32 in %s via %s", ipc.Address.String(), ipc.Gateway, confV4Range, confV4Gateway)
			}
		default:
			if v6.IsValid() {
				t.Errorf("result: a second IPv6 address %s for %s", a, ifname)
			}
			v6 = a
			if !v6Range.Contains(a) || ones != 128 || bits != 128 || !ipc.Gateway.Equal(net.ParseIP(confV6Gateway)) {
				t.Errorf("result: IPv6 %s gateway %s, want a /128 in %s via %s", ipc.Address.String(), ipc.Gateway, confV6Range, confV6Gateway)
			}
		}
	}
	if !v4.IsValid() || !v6.IsValid() {
		t.Fatalf("result: IPs %v, want one IPv4 and one IPv6 address on interface %d", res.IPs, host+1)
	}
	// Route "mtu" is new in CNI 1.1.0 too.
	wantMTU := func(r *types.Route) bool { return !mtuField || r.MTU == confRouteMTU }
	var def4, def6, range4, range6 bool
	for _, r := range res.Routes {
		if confIsDefault(&r.Dst) && r.GW.Equal(net.ParseIP(confV4Gateway)) && wantMTU(r) {
			def4 = true
		}
		if confIsDefault(&r.Dst) && r.GW.Equal(net.ParseIP(confV6Gateway)) && wantMTU(r) {
			def6 = true
		}
		range4 = range4 || (r.Dst.String() == confV4Range && r.MTU == 0)
		range6 = range6 || (r.Dst.String() == confV6Range && r.MTU == 0)
	}
	if !def4 || !def6 || !range4 || !range6 {
		t.Errorf("result routes %v: want default routes via %s and %s with mtu %d, and routes to %s and %s without", res.Routes, confV4Gateway, confV6Gateway, confRouteMTU, confV4Range, confV6Range)
	}

	// The pod end.
	confWithHandle(t, pod, func(h *netlink.Handle) {
		link, err := h.LinkByName(ifname)
		if err != nil {
			t.Fatalf("pod %s: %s: %v", pod, ifname, err)
		}
		la := link.Attrs()
		if la.MTU != confMTU {
			t.Errorf("pod %s: MTU %d, want %d", ifname, la.MTU, confMTU)
		}
		if la.Flags&net.FlagUp == 0 {
			t.Errorf("pod %s is not up", ifname)
		}
		if la.HardwareAddr.String() != pi.Mac {
			t.Errorf("pod %s: MAC %s, result says %s", ifname, la.HardwareAddr, pi.Mac)
		}
		if want := podmac.For([]netip.Addr{v6, v4}).String(); pi.Mac != want {
			t.Errorf("pod %s: MAC %s, want %s (derived from its addresses, as the fast path expects)", ifname, pi.Mac, want)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)} {
			if !confHasAddr(addrs, want) {
				t.Errorf("pod %s: address %s missing; has %v", ifname, want, addrs)
			}
		}
		for _, f := range []struct {
			family int
			gw     string
		}{{netlink.FAMILY_V4, confV4Gateway}, {netlink.FAMILY_V6, confV6Gateway}} {
			routes, err := h.RouteList(link, f.family)
			if err != nil {
				t.Fatal(err)
			}
			if !confHasDefaultVia(routes, la.Index, f.gw) {
				t.Errorf("pod: no default route via %s dev %s; routes %v", f.gw, ifname, routes)
			}
			// Off the node, the tunnel's MTU; to the node's own range, the interface's.
			for _, r := range routes {
				switch {
				case confIsDefault(r.Dst) && r.MTU != confRouteMTU:
					t.Errorf("pod: default route %v: mtu %d, want %d", r, r.MTU, confRouteMTU)
				case r.Dst != nil && (r.Dst.String() == confV4Range || r.Dst.String() == confV6Range) && r.MTU != 0:
					t.Errorf("pod: route %v to the node's own range: mtu %d, want none", r, r.MTU)
				}
			}
		}
	})

	// The node end.
	confWithHandle(t, e.node, func(h *netlink.Handle) {
		link, err := h.LinkByName(hostName)
		if err != nil {
			t.Fatalf("node: %s: %v", hostName, err)
		}
		la := link.Attrs()
		if link.Type() != "veth" || la.Flags&net.FlagUp == 0 {
			t.Errorf("node: %s is a %s with flags %v, want an up veth", hostName, link.Type(), la.Flags)
		}
		if la.HardwareAddr.String() != hi.Mac {
			t.Errorf("node %s: MAC %s, result says %s", hostName, la.HardwareAddr, hi.Mac)
		}
		for _, a := range []netip.Addr{v4, v6} {
			dst := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
			routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range routes {
				if r.LinkIndex == la.Index {
					found = true
				}
			}
			if !found {
				t.Errorf("node: no route to %s dev %s; routes to it: %v", dst, hostName, routes)
			}
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		if !confHasAddr(addrs, netip.MustParsePrefix(confV6Gateway+"/64")) {
			t.Errorf("node: %s/64 missing on %s; has %v", confV6Gateway, hostName, addrs)
		}
		lo, err := h.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		addrs, err = h.AddrList(lo, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if !confHasAddr(addrs, netip.MustParsePrefix(confV4Gateway+"/32")) {
			t.Errorf("node: %s/32 missing on lo; has %v", confV4Gateway, addrs)
		}
	})

	// Nothing leaked into the root namespace (a read-only look).
	if _, err := netlink.LinkByName(hostName); err == nil {
		t.Errorf("node end %s exists in the test's own (root) namespace", hostName)
	}
	return v4, v6
}

// confResultAddr returns the result's address of the given family on interface idx.
func confResultAddr(res *types100.Result, idx int, v4 bool) netip.Addr {
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != idx {
			continue
		}
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() == v4 {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// confNoVeths fails if node-side veths are left over from an earlier case, so
// that what a case sees is its own doing.
func (e *confEnv) confNoVeths(t *testing.T) {
	t.Helper()
	if v := confHostVeths(t, e.node); len(v) != 0 {
		t.Fatalf("node namespace has node-side veths left over: %v", v)
	}
}

func TestConformance(t *testing.T) {
	e := confSetup(t)
	tmp := t.TempDir()

	// Cases 1-4 share one attachment, ADDed once.
	t.Run("lifecycle", func(t *testing.T) {
		dataDir := filepath.Join(tmp, "ipam-lifecycle")
		list := confList(t, confListOpts{dataDir: dataDir})
		pod := e.newPod(t)
		const cid = "conformance-lifecycle"
		rt := confRT(pod, cid, "eth0")
		hostName := HostVethName(cid, "eth0")
		res := e.mustAdd(t, list, rt)
		v4 := confResultAddr(res, 1, true)

		t.Run("1-add", func(t *testing.T) {
			if res.CNIVersion != "1.1.0" {
				t.Errorf("result cniVersion %q, want 1.1.0", res.CNIVersion)
			}
			if len(res.Interfaces) != 2 || len(res.IPs) != 2 || len(res.Routes) != 4 {
				t.Errorf("result has %d interfaces, %d IPs, %d routes; want 2, 2, 4 (default and own range, per family): %s",
					len(res.Interfaces), len(res.IPs), len(res.Routes), res)
			}
			if !strings.HasPrefix(hostName, "amv") {
				t.Errorf("HostVethName = %q, want an amv… name", hostName)
			}
			a4, a6 := e.assertWired(t, res, 0, true, pod, cid, "eth0")
			if want := netip.MustParseAddr("10.250.1.2"); a4 != want {
				t.Errorf("pod IPv4 %s, want %s (the first address after the gateway)", a4, want)
			}
			if a6 == netip.MustParseAddr("fd00:250:1::") || a6 == netip.MustParseAddr("fd00:250:1::1") {
				t.Errorf("pod IPv6 %s is the network or the gateway address", a6)
			}
			got := confOwned(confAllocs(t, dataDir), cid, "eth0")
			if len(got) != 2 || !strings.Contains(strings.Join(got, " "), a4.String()) || !strings.Contains(strings.Join(got, " "), a6.String()) {
				t.Errorf("IPAM holds %v for the attachment, want %s and %s", got, a4, a6)
			}
		})

		t.Run("2-check", func(t *testing.T) {
			if err := e.check(list, rt); err != nil {
				t.Errorf("CHECK right after ADD: %v", err)
			}
		})

		t.Run("3-second-add-fails", func(t *testing.T) {
			before := confAllocs(t, dataDir)
			_, err := e.add(list, rt)
			if err == nil {
				t.Fatal("a second ADD of the same container and interface succeeded")
			}
			if _, ok := confCode(err); !ok || !strings.Contains(err.Error(), "already exists") {
				t.Errorf("second ADD: %v; want a CNI error saying the interface already exists", err)
			}
			after := confAllocs(t, dataDir)
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("IPAM changed by the failed ADD: before %v, after %v", before, after)
			}
			if _, err := os.Stat(filepath.Join(dataDir, "10.250.1.0_24", v4.String())); err != nil {
				t.Errorf("the first attachment's address is no longer reserved: %v", err)
			}
			e.assertWired(t, res, 0, true, pod, cid, "eth0")
			if err := e.check(list, rt); err != nil {
				t.Errorf("CHECK after the failed second ADD: %v", err)
			}
		})

		t.Run("4-check-detects-damage", func(t *testing.T) {
			if err := e.check(list, rt); err != nil {
				t.Fatalf("CHECK before the damage: %v", err)
			}
			// A spare address keeps eth0's IPv4 routes in place when the pod's
			// own address goes (removing the last one would flush them), so the
			// address is all that is wrong.
			const spare = "192.0.2.1/32"
			confIP(t, "-n", pod, "addr", "add", spare, "dev", "eth0")
			confIP(t, "-n", pod, "addr", "del", v4.String()+"/32", "dev", "eth0")
			confWithHandle(t, pod, func(h *netlink.Handle) {
				link, err := h.LinkByName("eth0")
				if err != nil {
					t.Fatal(err)
				}
				routes, err := h.RouteList(link, netlink.FAMILY_V4)
				if err != nil {
					t.Fatal(err)
				}
				if !confHasDefaultVia(routes, link.Attrs().Index, confV4Gateway) {
					t.Fatalf("the default route went with the address: %v", routes)
				}
			})
			err := e.check(list, rt)
			if err == nil || !strings.Contains(err.Error(), v4.String()) || !strings.Contains(err.Error(), "address") {
				t.Errorf("CHECK with the pod's IPv4 address removed: %v; want an error about the address %s", err, v4)
			}
			confIP(t, "-n", pod, "addr", "add", v4.String()+"/32", "dev", "eth0")
			confIP(t, "-n", pod, "addr", "del", spare, "dev", "eth0")
			if err := e.check(list, rt); err != nil {
				t.Fatalf("CHECK after restoring the address: %v", err)
			}

			// A route of the result: the pod's IPv4 default route.
			confIP(t, "-n", pod, "route", "del", "default", "via", confV4Gateway, "dev", "eth0")
			err = e.check(list, rt)
			if err == nil || !strings.Contains(err.Error(), "route 0.0.0.0/0 via "+confV4Gateway) {
				t.Errorf("CHECK with the pod's default route removed: %v; want an error about that route", err)
			}
			confIP(t, "-n", pod, "route", "add", "default", "via", confV4Gateway, "dev", "eth0")
			if err := e.check(list, rt); err != nil {
				t.Fatalf("CHECK after restoring the default route: %v", err)
			}

			confIP(t, "-n", e.node, "route", "del", v4.String()+"/32", "dev", hostName)
			err = e.check(list, rt)
			if err == nil || !strings.Contains(err.Error(), v4.String()) || !strings.Contains(err.Error(), "route") {
				t.Errorf("CHECK with the node route to the pod removed: %v; want an error about the route to %s", err, v4)
			}
		})
	})

	t.Run("5-del", func(t *testing.T) {
		e.confNoVeths(t)
		dataDir := filepath.Join(tmp, "ipam-del")
		list := confList(t, confListOpts{dataDir: dataDir})

		pod := e.newPod(t)
		const cid = "conformance-del"
		rt := confRT(pod, cid, "eth0")
		hostName := HostVethName(cid, "eth0")
		res := e.mustAdd(t, list, rt)
		e.assertWired(t, res, 0, true, pod, cid, "eth0")
		if got := confOwned(confAllocs(t, dataDir), cid, "eth0"); len(got) != 2 {
			t.Fatalf("IPAM holds %v after ADD, want two addresses", got)
		}
		if err := e.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if confLinkExists(t, e.node, hostName) {
			t.Errorf("node end %s still exists after DEL", hostName)
		}
		if confLinkExists(t, pod, "eth0") {
			t.Errorf("pod end eth0 still exists after DEL")
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("IPAM still holds %v after DEL", got)
		}
		if err := e.del(list, rt); err != nil {
			t.Errorf("second DEL: %v", err)
		}

		// DEL after the runtime deleted the pod's namespace. Something (here:
		// this test) still holds the namespace, so the veth pair lives on and the
		// node end must be removed by DEL itself, not by the kernel.
		gone := e.newPod(t)
		const cidGone = "conformance-del-gone"
		rtGone := confRT(gone, cidGone, "eth0")
		hostGone := HostVethName(cidGone, "eth0")
		res = e.mustAdd(t, list, rtGone)
		e.assertWired(t, res, 0, true, gone, cidGone, "eth0")
		held, err := vnetns.GetFromPath(rtGone.NetNS)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		confIP(t, "netns", "delete", gone)
		if _, err := os.Stat(rtGone.NetNS); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("namespace path %s still there after ip netns delete: %v", rtGone.NetNS, err)
		}
		if !confLinkExists(t, e.node, hostGone) {
			t.Fatalf("node end %s went with the namespace although the namespace is still held", hostGone)
		}
		if err := e.del(list, rtGone); err != nil {
			t.Errorf("DEL with the namespace gone: %v", err)
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("IPAM still holds %v after DEL with the namespace gone", got)
		}
		if confLinkExists(t, e.node, hostGone) {
			t.Errorf("node end %s still exists after DEL with the namespace gone", hostGone)
		}
		if err := e.del(list, rtGone); err != nil {
			t.Errorf("second DEL with the namespace gone: %v", err)
		}

		// A namespace path that is no namespace (any more): DEL cannot enter
		// it, but deleting the node end deletes the pair.
		podOdd := e.newPod(t)
		rtOdd := confRT(podOdd, "conformance-del-odd", "eth0")
		e.mustAdd(t, list, rtOdd)
		rtOdd.NetNS = filepath.Join(tmp, "not-a-netns")
		if err := os.WriteFile(rtOdd.NetNS, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.del(list, rtOdd); err != nil {
			t.Errorf("DEL with a namespace path that is no namespace: %v", err)
		}
		if confLinkExists(t, e.node, HostVethName(rtOdd.ContainerID, "eth0")) || confLinkExists(t, podOdd, "eth0") {
			t.Errorf("the veth pair outlived DEL with a namespace path that is no namespace")
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("IPAM still holds %v after DEL with a namespace path that is no namespace", got)
		}
	})

	t.Run("6-chaining", func(t *testing.T) {
		e.confNoVeths(t)
		dataDir := filepath.Join(tmp, "ipam-chain")
		// The chained list says cniVersion 1.0.0: the Debian tuning plugin
		// (containernetworking-plugins 1.1.1) rejects 1.1.0 as incompatible.
		chained := confList(t, confListOpts{version: "1.0.0", dataDir: dataDir, tuningDir: filepath.Join(tmp, "tuning")})
		plain := confList(t, confListOpts{dataDir: dataDir})
		pod := e.newPod(t)
		// New interfaces start with rp_filter=1, so only tuning can make it 0.
		if err := netns.Sysctl(netns.Path(pod), "net.ipv4.conf.default.rp_filter", "1"); err != nil {
			t.Fatal(err)
		}
		const cid = "conformance-chain"
		rt := confRT(pod, cid, "eth0")
		res := e.mustAdd(t, chained, rt)
		if len(res.Interfaces) != 2 || len(res.IPs) != 2 {
			t.Errorf("chained result has %d interfaces and %d IPs, want amime's 2 and 2: %s", len(res.Interfaces), len(res.IPs), res)
		}
		v4, v6 := e.assertWired(t, res, 0, false, pod, cid, "eth0")
		if got := confSysctl(t, pod, "net.ipv4.conf.eth0.rp_filter"); got != "0" {
			t.Errorf("rp_filter of eth0 = %s, want 0 (set by the chained tuning plugin)", got)
		}
		if got := confSysctl(t, pod, "net.ipv4.conf.default.rp_filter"); got != "1" {
			t.Errorf("default rp_filter = %s, want 1 (untouched)", got)
		}
		if err := e.check(chained, rt); err != nil {
			t.Errorf("CHECK of the chained list: %v", err)
		}

		// A second attachment in the same pod.
		rt2 := confRT(pod, cid, "net1")
		res2 := e.mustAdd(t, plain, rt2)
		w4, w6 := e.assertWired(t, res2, 0, true, pod, cid, "net1")
		if w4 == v4 || w6 == v6 {
			t.Errorf("net1 got %s and %s, eth0 has %s and %s: want different addresses", w4, w6, v4, v6)
		}
		allocs := confAllocs(t, dataDir)
		if len(allocs) != 4 || len(confOwned(allocs, cid, "eth0")) != 2 || len(confOwned(allocs, cid, "net1")) != 2 {
			t.Errorf("IPAM holds %v, want two addresses each for eth0 and net1", allocs)
		}
		// The second attachment leaves the first one as it was: its default
		// routes included, and it still passes CHECK.
		e.assertWired(t, res, 0, false, pod, cid, "eth0")
		if err := e.check(chained, rt); err != nil {
			t.Errorf("CHECK of eth0 after the ADD of net1: %v", err)
		}
		if err := e.check(plain, rt2); err != nil {
			t.Errorf("CHECK of net1: %v", err)
		}

		if err := e.del(plain, rt2); err != nil {
			t.Errorf("DEL net1: %v", err)
		}
		if confLinkExists(t, pod, "net1") || confLinkExists(t, e.node, HostVethName(cid, "net1")) {
			t.Errorf("net1 or its node end still exists after DEL")
		}
		e.assertWired(t, res, 0, false, pod, cid, "eth0")
		if err := e.check(chained, rt); err != nil {
			t.Errorf("CHECK of eth0 after the DEL of net1: %v", err)
		}
		if err := e.del(chained, rt); err != nil {
			t.Errorf("DEL of the chained list: %v", err)
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("IPAM still holds %v after DEL of both attachments", got)
		}
	})

	t.Run("7-gc", func(t *testing.T) {
		e.confNoVeths(t)
		dataDir := filepath.Join(tmp, "ipam-gc")
		list := confList(t, confListOpts{dataDir: dataDir})
		podA, podB := e.newPod(t), e.newPod(t)
		rtA := confRT(podA, "conformance-gc-a", "eth0")
		rtB := confRT(podB, "conformance-gc-b", "eth0")
		hostA, hostB := HostVethName(rtA.ContainerID, "eth0"), HostVethName(rtB.ContainerID, "eth0")
		resA := e.mustAdd(t, list, rtA)
		resB := e.mustAdd(t, list, rtB)
		a4, a6 := e.assertWired(t, resA, 0, true, podA, rtA.ContainerID, "eth0")
		e.assertWired(t, resB, 0, true, podB, rtB.ContainerID, "eth0")
		// A veth that is not amime's: GC must leave it alone.
		confIP(t, "-n", e.node, "link", "add", "confgc0", "type", "veth", "peer", "name", "confgc1")
		valid := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rtA.ContainerID, IfName: "eth0"}}}

		assertOnlyA := func(t *testing.T, when string) {
			t.Helper()
			allocs := confAllocs(t, dataDir)
			if got := confOwned(allocs, rtB.ContainerID, "eth0"); len(got) != 0 {
				t.Errorf("%s: B's addresses %v are still reserved", when, got)
			}
			if got := confOwned(allocs, rtA.ContainerID, "eth0"); len(got) != 2 || len(allocs) != 2 {
				t.Errorf("%s: IPAM holds %v, want A's %s and %s only", when, allocs, a4, a6)
			}
			if confLinkExists(t, e.node, hostB) {
				t.Errorf("%s: B's node end %s still exists", when, hostB)
			}
			if confLinkExists(t, podB, "eth0") {
				t.Errorf("%s: B's pod end still exists", when)
			}
			if !confLinkExists(t, e.node, hostA) {
				t.Errorf("%s: A's node end %s was removed", when, hostA)
			}
			if !confLinkExists(t, e.node, "confgc0") {
				t.Errorf("%s: a foreign veth was removed", when)
			}
			if err := e.check(list, rtA); err != nil {
				t.Errorf("%s: CHECK of A: %v", when, err)
			}
		}

		// A runtime with an empty attachment cache: libcni has nothing to DEL,
		// so only the plugin's own GC can release B.
		gcCNI := libcni.NewCNIConfigWithCacheDir([]string{e.binDir, "/usr/lib/cni"}, filepath.Join(tmp, "gc-cache"), nil)
		if err := e.inNode(func(ctx context.Context) error { return gcCNI.GCNetworkList(ctx, list, valid) }); err != nil {
			t.Fatalf("GC (plugin only): %v", err)
		}
		assertOnlyA(t, "after the plugin's GC")

		// The ordinary runtime: libcni DELs B from its cache, then GCs.
		if err := e.inNode(func(ctx context.Context) error { return e.cni.GCNetworkList(ctx, list, valid) }); err != nil {
			t.Fatalf("GC (through the libcni cache): %v", err)
		}
		assertOnlyA(t, "after libcni's GC")
		confIP(t, "-n", e.node, "link", "del", "confgc0")
	})

	t.Run("8-status-and-errors", func(t *testing.T) {
		e.confNoVeths(t)
		dataDir := filepath.Join(tmp, "ipam-status")
		good := confList(t, confListOpts{dataDir: dataDir})
		empty := confList(t, confListOpts{dataDir: dataDir, podCIDRs: []string{}})
		bad := confList(t, confListOpts{dataDir: dataDir, podCIDRs: []string{"nope"}})

		status := func(list *libcni.NetworkConfigList) error {
			return e.inNode(func(ctx context.Context) error { return e.cni.GetStatusNetworkList(ctx, list) })
		}
		if err := status(good); err != nil {
			t.Errorf("STATUS: %v", err)
		}
		if err := status(empty); err == nil {
			t.Errorf("STATUS without podCIDRs succeeded")
		} else if code, _ := confCode(err); code != 50 {
			t.Errorf("STATUS without podCIDRs: %v; want code 50", err)
		}

		pod := e.newPod(t)
		rt := confRT(pod, "conformance-errors", "eth0")
		e.delOnCleanup(t, good, rt)
		_, err := e.add(empty, rt)
		if code, _ := confCode(err); err == nil || code != uint(types.ErrTryAgainLater) {
			t.Errorf("ADD without podCIDRs: %v; want code %d", err, types.ErrTryAgainLater)
		}
		_, err = e.add(bad, rt)
		if code, _ := confCode(err); err == nil || code != uint(types.ErrInvalidNetworkConfig) || !strings.Contains(err.Error(), "podCIDRs[0]") {
			t.Errorf("ADD with podCIDRs [\"nope\"]: %v; want code %d naming podCIDRs[0]", err, types.ErrInvalidNetworkConfig)
		}
		if confLinkExists(t, pod, "eth0") || confLinkExists(t, e.node, HostVethName(rt.ContainerID, "eth0")) {
			t.Errorf("a failed ADD left interfaces behind")
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("a failed ADD left addresses reserved: %v", got)
		}
		// The runtime DELs after a failed ADD, with the same configuration:
		// no pod range is no reason to fail it.
		if err := e.del(empty, rt); err != nil {
			t.Errorf("DEL without podCIDRs after the failed ADD: %v", err)
		}
		// What was attached with a range, DEL and GC without one release.
		e.mustAdd(t, good, rt)
		if err := e.del(empty, rt); err != nil {
			t.Errorf("DEL without podCIDRs: %v", err)
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("DEL without podCIDRs left addresses reserved: %v", got)
		}
		if confLinkExists(t, e.node, HostVethName(rt.ContainerID, "eth0")) {
			t.Errorf("DEL without podCIDRs left the node end")
		}
		e.mustAdd(t, good, rt)
		gcCNI := libcni.NewCNIConfigWithCacheDir([]string{e.binDir}, filepath.Join(tmp, "gc-cache-empty"), nil)
		if err := e.inNode(func(ctx context.Context) error { return gcCNI.GCNetworkList(ctx, empty, &libcni.GCArgs{}) }); err != nil {
			t.Errorf("GC without podCIDRs: %v", err)
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("GC without podCIDRs left addresses reserved: %v", got)
		}
	})

	t.Run("9-concurrent-add", func(t *testing.T) {
		e.confNoVeths(t)
		dataDir := filepath.Join(tmp, "ipam-concurrent")
		list := confList(t, confListOpts{dataDir: dataDir})
		const n = 20
		pods := make([]string, n)
		rts := make([]*libcni.RuntimeConf, n)
		for i := range n {
			pods[i] = e.newPod(t)
			rts[i] = confRT(pods[i], fmt.Sprintf("conformance-parallel-%02d", i), "eth0")
			e.delOnCleanup(t, list, rts[i])
		}
		results := make([]*types100.Result, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { results[i], errs[i] = e.add(list, rts[i]) })
		}
		wg.Wait()
		seen4, seen6 := map[netip.Addr]int{}, map[netip.Addr]int{}
		for i := range n {
			if errs[i] != nil {
				t.Errorf("ADD %d: %v", i, errs[i])
				continue
			}
			v4, v6 := e.assertWired(t, results[i], 0, true, pods[i], rts[i].ContainerID, "eth0")
			if j, dup := seen4[v4]; dup {
				t.Errorf("containers %d and %d both got %s", j, i, v4)
			}
			if j, dup := seen6[v6]; dup {
				t.Errorf("containers %d and %d both got %s", j, i, v6)
			}
			seen4[v4], seen6[v6] = i, i
		}
		if len(seen4) != n {
			t.Errorf("%d distinct IPv4 addresses for %d containers", len(seen4), n)
		}
		if got := confAllocs(t, dataDir); len(got) != 2*n {
			t.Errorf("IPAM holds %d addresses, want %d", len(got), 2*n)
		}
		for i := range n {
			wg.Go(func() { errs[i] = e.del(list, rts[i]) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("DEL %d: %v", i, err)
			}
		}
		if got := confAllocs(t, dataDir); len(got) != 0 {
			t.Errorf("IPAM still holds %v after DEL of all", got)
		}
		if v := confHostVeths(t, e.node); len(v) != 0 {
			t.Errorf("node-side veths left after DEL of all: %v", v)
		}
	})
}
