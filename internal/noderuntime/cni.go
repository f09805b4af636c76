package noderuntime

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// cniRuntime calls the node's CNI plugins through libcni exactly as containerd
// does: the first configuration file of the conf dir in name order, interface eth0,
// and the K8S_POD_* arguments.
type cniRuntime struct {
	confDir string
	cni     *libcni.CNIConfig

	// The spec forbids GC while ADD or DEL run: they hold mu for reading, GC
	// for writing. active holds every attachment added and not deleted since
	// this process started or adopted it, so GC never releases a live one.
	mu       sync.RWMutex
	activeMu sync.Mutex
	active   map[string]bool
}

func newCNIRuntime(o Options) *cniRuntime {
	return &cniRuntime{
		confDir: o.CNIConfDir,
		cni:     libcni.NewCNIConfigWithCacheDir(o.CNIBinDirs, filepath.Join(o.StateDir, "var/lib/cni/cache"), nil),
		active:  map[string]bool{},
	}
}

// loadConfList reads the network configuration containerd would pick.
func (c *cniRuntime) loadConfList() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(c.confDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI configuration in %s", c.confDir)
	}
	f := files[0]
	if filepath.Ext(f) == ".conflist" {
		return libcni.ConfListFromFile(f)
	}
	conf, err := libcni.ConfFromFile(f)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(conf)
}

func runtimeConf(sb *sandboxState) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: sb.ID,
		NetNS:       "/run/netns/" + sb.Netns,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", sb.Namespace},
			{"K8S_POD_NAME", sb.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sb.ID},
			{"K8S_POD_UID", sb.UID},
		},
	}
}

// add attaches the sandbox to the pod network and returns its IPs.
func (c *cniRuntime) add(ctx context.Context, sb *sandboxState) ([]string, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.setActive(sb.ID, true)
	list, err := c.loadConfList()
	if err != nil {
		return nil, err
	}
	res, err := c.cni.AddNetworkList(ctx, list, runtimeConf(sb))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD (%s): %w", list.Name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI result: %w", err)
	}
	var ips []string
	for _, ip := range r.IPs {
		ips = append(ips, ip.Address.IP.String())
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("CNI ADD (%s) returned no IP", list.Name)
	}
	// Primary family first, as the kubelet reports podIPs (IPv4 first when both).
	sort.SliceStable(ips, func(i, j int) bool { return isV4(ips[i]) && !isV4(ips[j]) })
	return ips, nil
}

// del detaches the sandbox. It uses the configuration cached at ADD time when the
// current one is gone, so a changed conf dir never leaks addresses.
func (c *cniRuntime) del(ctx context.Context, sb *sandboxState) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	rt := runtimeConf(sb)
	list, err := c.loadConfList()
	if err != nil {
		cached, cachedRT, cerr := c.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: "amime"}, rt)
		if cerr != nil || cached == nil {
			return err
		}
		list, err = libcni.ConfListFromBytes(cached)
		if err != nil {
			return err
		}
		rt = cachedRT
	}
	if err := c.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL (%s): %w", list.Name, err)
	}
	c.setActive(sb.ID, false)
	return nil
}

// setActive records an attachment; callers hold mu for reading, so the map has
// its own lock.
func (c *cniRuntime) setActive(id string, on bool) {
	c.activeMu.Lock()
	defer c.activeMu.Unlock()
	if on {
		c.active[id] = true
	} else {
		delete(c.active, id)
	}
}

// check asks the plugins whether the sandbox's network is still as they set it up.
func (c *cniRuntime) check(ctx context.Context, sb *sandboxState) error {
	list, err := c.loadConfList()
	if err != nil {
		return err
	}
	return c.cni.CheckNetworkList(ctx, list, runtimeConf(sb))
}

// gc tells the plugins which attachments are still valid, so that they release
// whatever a crash left behind (CNI GC, spec 1.1).
func (c *cniRuntime) gc(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	list, err := c.loadConfList()
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for id := range c.active {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	return c.cni.GCNetworkList(ctx, list, args)
}

func isV4(ip string) bool {
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return false
		}
	}
	return true
}
