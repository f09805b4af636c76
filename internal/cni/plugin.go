package cni

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"amime.dev/amime/internal/attach"
	"amime.dev/amime/internal/ipam"
)

// Main runs the plugin as the runtime invokes it (CNI_COMMAND and friends in the
// environment, the configuration on stdin) and returns the exit code. Errors are
// printed on stdout as the spec's error structure.
func Main(about string) int {
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		// The skeleton answers with its own protocol version; the spec asks
		// for the one the input names.
		return printVersion(os.Stdin, os.Stdout)
	}
	if os.Getenv("CNI_PATH") == "" && cmd != "GC" {
		// Optional for every verb but GC in the spec, required by the
		// skeleton. The plugin delegates to nothing; its own directory
		// stands in.
		if exe, err := os.Executable(); err == nil {
			os.Setenv("CNI_PATH", filepath.Dir(exe))
		}
	}
	p := &plugin{}
	if e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add: p.add, Del: p.del, Check: p.check, GC: p.gc, Status: p.status,
	}, version.All, about); e != nil {
		if err := printError(os.Stdout, p.cniVersion, e); err != nil {
			fmt.Fprintln(os.Stderr, "amime cni: write error:", err)
		}
		return 1
	}
	return 0
}

// printVersion answers VERSION: the versions the plugin supports, under the
// cniVersion of the input (the current one when the input names none).
func printVersion(stdin io.Reader, stdout io.Writer) int {
	var in string
	if b, err := io.ReadAll(stdin); err == nil && len(bytes.TrimSpace(b)) > 0 {
		if in, err = cniVersionOf(b); err != nil {
			_ = printError(stdout, "", types.NewError(types.ErrDecodingFailure, "failed to decode the VERSION input", err.Error()))
			return 1
		}
	}
	if in == "" {
		in = version.Current()
	}
	out := struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}{in, version.All.SupportedVersions()}
	if err := json.NewEncoder(stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "amime cni: write version:", err)
		return 1
	}
	return 0
}

// cniVersionOf is the cniVersion a JSON input names ("" when none).
func cniVersionOf(b []byte) (string, error) {
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	err := json.Unmarshal(b, &v)
	return v.CNIVersion, err
}

// printError writes the spec's error structure, with the protocol version in
// use: the configuration's, or the current one when the error came before
// the configuration was read.
func printError(w io.Writer, cniVersion string, e *types.Error) error {
	if cniVersion == "" {
		cniVersion = version.Current()
	}
	return json.NewEncoder(w).Encode(struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{cniVersion, e})
}

type plugin struct {
	cniVersion string // of the configuration, once it parsed
}

// parse parses the configuration and remembers its version for the error
// structure, also when the rest of it is wrong. (The skeleton has checked
// that the version is one the plugin speaks.)
func (p *plugin) parse(stdin []byte) (*parsedConf, *types.Error) {
	conf, cerr := parseConf(stdin)
	if cerr == nil {
		p.cniVersion = conf.CNIVersion
	} else if v, err := cniVersionOf(stdin); err == nil {
		p.cniVersion = v
	}
	return conf, cerr
}

// hostVethPrefix starts every node-side veth name (routing.PodVethPrefix
// spells it for the agent).
const hostVethPrefix = "amv"

// HostVethName is the node-side name of a pod's veth: a hash of the attachment, so
// that DEL and GC find it without any state.
func HostVethName(containerID, ifname string) string {
	h := sha256.Sum256([]byte(containerID + "/" + ifname))
	return hostVethPrefix + hex.EncodeToString(h[:])[:12]
}

// v6Gateway is the link-local address of every node-side veth: the pods' IPv6
// default gateway. A link-local gateway needs no address from the pod range and
// answers neighbour solicitations on its own link.
var v6Gateway = netip.MustParseAddr("fe80::1")

func (p *plugin) add(args *skel.CmdArgs) error {
	conf, cerr := p.parse(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if cerr := conf.needRanges(); cerr != nil {
		return cerr
	}
	if conf.PrevResult != nil {
		// Chaining: the previous plugins' result must come through.
		if _, err := current.NewResultFromResult(conf.PrevResult); err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult cannot be converted to the result type of this version", err.Error())
		}
	}
	if args.Netns == "" {
		// Code 4, the spec's for a bad environment variable (the library's
		// 8 is in the reserved range the spec does not define).
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD", "")
	}
	if exists, err := podLinkExists(args.Netns, args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS: cannot open network namespace %s", args.Netns), err.Error())
	} else if exists {
		// The spec: an interface of the requested name must not exist yet. The
		// addresses of the existing attachment are left as they are.
		return types.NewError(types.ErrInternal, fmt.Sprintf("interface %q already exists in container %s", args.IfName, args.ContainerID), "")
	}
	alloc, err := ipam.New(conf.DataDir, conf.ranges)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid IPAM configuration", err.Error())
	}
	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	allocs, err := alloc.Allocate(att)
	if err != nil {
		if errors.Is(err, ipam.ErrExhausted) {
			return types.NewError(types.ErrTryAgainLater, "no free pod address on this node", err.Error())
		}
		return types.NewError(types.ErrIOFailure, "allocate pod address", err.Error())
	}
	ok := false
	defer func() {
		if !ok {
			// Roll back: nothing of a failed ADD may stay behind.
			_ = teardownPod(args.Netns, args.IfName, HostVethName(args.ContainerID, args.IfName))
			_ = alloc.Release(att)
		}
	}()
	hostName := HostVethName(args.ContainerID, args.IfName)
	links, err := setupPod(args.Netns, args.IfName, hostName, conf.MTU, conf.RouteMTU, allocs)
	if err != nil {
		return asCNIError(err, "set up pod interface")
	}
	res := buildResult(conf, links, args.Netns, allocs)
	ok = true
	reportToAgent(conf.AgentSocket, args, allocs)
	return types.PrintResult(res, conf.CNIVersion)
}

// statusDialTimeout bounds how long STATUS waits for the agent's socket.
const statusDialTimeout = time.Second

// attachTimeout bounds how long ADD waits for the agent.
const attachTimeout = 5 * time.Second

// reportToAgent tells the node's agent which addresses the pod got and waits
// until they are programmed. Its failure does not fail ADD: the policy table
// drops the pod's traffic until the agent learns the addresses from the
// pod's status (fail closed), so the pod only starts later, never unprotected.
func reportToAgent(socket string, args *skel.CmdArgs, allocs []ipam.Allocation) {
	ns, name, uid := podOf(args.Args)
	if socket == "" || ns == "" || name == "" {
		return
	}
	req := attach.Request{Namespace: ns, Name: name, UID: uid, ContainerID: args.ContainerID}
	for _, a := range allocs {
		req.IPs = append(req.IPs, a.Addr)
	}
	if err := attach.Notify(socket, req, attachTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "amime cni: warning:", err)
	}
}

// podOf reads the pod's identity from CNI_ARGS (K8S_POD_NAMESPACE,
// K8S_POD_NAME, K8S_POD_UID, as Kubernetes runtimes pass them).
func podOf(cniArgs string) (namespace, name, uid string) {
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		case "K8S_POD_UID":
			uid = v
		}
	}
	return namespace, name, uid
}

// buildResult describes what ADD made; with a prevResult (chaining) it appends to it.
func buildResult(conf *parsedConf, links podLinks, netns string, allocs []ipam.Allocation) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		if prev, err := current.NewResultFromResult(conf.PrevResult); err == nil {
			res = prev
		}
	}
	hostIdx := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces,
		&current.Interface{Name: links.hostName, Mac: links.hostMAC, Mtu: conf.MTU},
		&current.Interface{Name: links.podName, Mac: links.podMAC, Mtu: conf.MTU, Sandbox: netns})
	podIdx := hostIdx + 1
	for _, a := range allocs {
		bits := a.Addr.BitLen()
		gw := a.Gateway
		if a.Addr.Is6() {
			gw = v6Gateway
		}
		res.IPs = append(res.IPs, &current.IPConfig{
			Interface: &podIdx,
			Address:   net.IPNet{IP: a.Addr.AsSlice(), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw.AsSlice(),
		})
		// The routes through the gateway, as setupPod made them.
		for _, r := range podRoutes(0, a, conf.RouteMTU) {
			if r.Gw != nil {
				res.Routes = append(res.Routes, &types.Route{Dst: *r.Dst, GW: r.Gw, MTU: r.MTU})
			}
		}
	}
	return res
}

func (p *plugin) del(args *skel.CmdArgs) error {
	conf, cerr := p.parse(args.StdinData)
	if cerr != nil {
		return cerr
	}
	// DEL succeeds when the namespace, the interface or the address is gone
	// already. It needs no pod range: the runtime deletes after a failed ADD
	// too, also one that failed because the node had no range yet.
	if err := teardownPod(args.Netns, args.IfName, HostVethName(args.ContainerID, args.IfName)); err != nil {
		return asCNIError(err, "remove pod interface")
	}
	alloc, err := ipam.Open(conf.DataDir)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM state", err.Error())
	}
	if err := alloc.Release(ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return types.NewError(types.ErrIOFailure, "release pod address", err.Error())
	}
	return nil
}

func (p *plugin) check(args *skel.CmdArgs) error {
	conf, cerr := p.parse(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs the prevResult of the ADD", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to convert prevResult", err.Error())
	}
	alloc, err := ipam.New(conf.DataDir, conf.ranges)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid IPAM configuration", err.Error())
	}
	held, err := alloc.Get(ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read IPAM state", err.Error())
	}
	want, err := expectedFromResult(prev, args.Netns, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInternal, "CHECK failed", err.Error())
	}
	for _, w := range want.addrs {
		a := w.Addr()
		found := false
		for _, h := range held {
			if h.Addr == a {
				found = true
			}
		}
		if !found {
			return types.NewError(types.ErrInternal, fmt.Sprintf("CHECK failed: address %s is not reserved in IPAM for this attachment", a), "")
		}
	}
	if err := checkPod(args.Netns, args.IfName, HostVethName(args.ContainerID, args.IfName), want); err != nil {
		return types.NewError(types.ErrInternal, "CHECK failed: "+err.Error(), "")
	}
	return nil
}

func (p *plugin) gc(args *skel.CmdArgs) error {
	conf, cerr := p.parse(args.StdinData)
	if cerr != nil {
		return cerr
	}
	// Like DEL, GC needs no pod range: it collects in every range directory.
	alloc, err := ipam.Open(conf.DataDir)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM state", err.Error())
	}
	valid := make([]ipam.Attachment, 0, len(conf.ValidAttachments))
	keep := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid = append(valid, ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
		keep[HostVethName(a.ContainerID, a.IfName)] = true
	}
	var errs []error
	if _, err := alloc.GC(valid); err != nil {
		errs = append(errs, err)
	}
	// Node-side veths of attachments that are gone (their pod end went with the
	// namespace, but a crashed DEL can leave the node end of a live namespace).
	if err := removeStaleHostVeths(keep); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrIOFailure, "GC", err.Error())
	}
	return nil
}

func (p *plugin) status(args *skel.CmdArgs) error {
	conf, cerr := p.parse(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if len(conf.ranges) == 0 {
		return types.NewError(50, "the plugin is not available: the node has no pod range yet", "")
	}
	if err := os.MkdirAll(conf.DataDir, 0o700); err != nil {
		return types.NewError(50, "the plugin is not available: IPAM directory unusable", err.Error())
	}
	if conf.AgentSocket != "" {
		// ADD relies on the agent: a pod it has not programmed stays cut
		// off by policy (fail closed). The spec asks STATUS to say so.
		c, err := net.DialTimeout("unix", conf.AgentSocket, statusDialTimeout)
		if err != nil {
			return types.NewError(50, "the plugin is not available: the node's amime agent does not answer on "+conf.AgentSocket, err.Error())
		}
		c.Close()
	}
	// A full range cannot serve ADD (the spec asks STATUS to say so).
	alloc, err := ipam.New(conf.DataDir, conf.ranges)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid IPAM configuration", err.Error())
	}
	inUse, err := alloc.InUse()
	if err != nil {
		return types.NewError(50, "the plugin is not available: IPAM state unreadable", err.Error())
	}
	for _, r := range conf.ranges {
		hostBits := r.Addr().BitLen() - r.Bits()
		if hostBits > 32 {
			continue // an IPv6 node range of ordinary size (a /64) does not run out
		}
		// Network, gateway and (IPv4) broadcast are never handed out.
		capacity := 1<<hostBits - 2
		if r.Addr().Is4() {
			capacity--
		}
		n := 0
		for _, a := range inUse {
			if a.Range == r {
				n++
			}
		}
		if n >= capacity {
			return types.NewError(50, fmt.Sprintf("the plugin is not available: all %d addresses of %s are in use", capacity, r), "")
		}
	}
	return nil
}
