// Package cni is the amime CNI plugin (CNI specification 1.1): ADD, DEL, CHECK,
// GC, STATUS and VERSION. Each pod gets a veth pair: the pod end (named by
// CNI_IFNAME) holds the pod's /32 and /128 addresses and a default route via the
// node; the node end has a host route to the pod. There is no bridge and no
// shared broadcast domain: the node routes every packet, which is what lets the
// Service proxy and the policy engine see and steer all pod traffic.
//
// The node's pod ranges, the MTU and the IPAM directory come from the network
// configuration that `amime agent` writes once it knows the node's podCIDRs.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// NetConf is the plugin's configuration (one entry of a conflist's plugins).
type NetConf struct {
	types.PluginConf
	// PodCIDRs are the node's pod ranges, one per IP family (spec.podCIDRs).
	PodCIDRs []string `json:"podCIDRs"`
	// MTU of the pod interface and of its route to the node's own pod ranges.
	MTU int `json:"mtu,omitempty"`
	// RouteMTU, when set, is the MTU of the pod's routes off the node: the
	// underlay's minus its encapsulation, so that pods of one node still talk
	// in full-size packets. Not above mtu.
	RouteMTU int `json:"routeMTU,omitempty"`
	// DataDir holds the IPAM state; it must survive plugin and agent restarts.
	DataDir string `json:"dataDir,omitempty"`
	// AgentSocket is where the node's agent takes reports of new pods; ADD
	// waits (a bounded time) until the agent has programmed the pod's
	// addresses, so that its first packets meet its policies. Empty: no report.
	AgentSocket string `json:"agentSocket,omitempty"`
}

// Defaults of the configuration.
const (
	DefaultDataDir = "/var/lib/amime/ipam"
	DefaultMTU     = 1500
)

// ranges is the validated form of PodCIDRs.
type parsedConf struct {
	NetConf
	ranges []netip.Prefix
}

// parseConf decodes and validates the configuration. Errors carry the spec's
// error codes and name the offending field.
func parseConf(stdin []byte) (*parsedConf, *types.Error) {
	var c parsedConf
	if err := json.Unmarshal(stdin, &c.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to decode network configuration", err.Error())
	}
	if c.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration: field \"cniVersion\" is required", "")
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration: field \"name\" is required", "")
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network configuration: field \"mtu\": %d is out of range 576-65535", c.MTU), "")
	}
	if c.RouteMTU != 0 && (c.RouteMTU < 576 || c.RouteMTU > c.MTU) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network configuration: field \"routeMTU\": %d is out of range 576-%d (mtu)", c.RouteMTU, c.MTU), "")
	}
	if c.RouteMTU == c.MTU {
		c.RouteMTU = 0
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	seen := map[bool]bool{}
	for i, s := range c.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network configuration: field \"podCIDRs[%d]\": %q is not a CIDR", i, s), err.Error())
		}
		if p.Masked() != p {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network configuration: field \"podCIDRs[%d]\": %s has host bits set", i, s), "")
		}
		if seen[p.Addr().Is4()] {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network configuration: field \"podCIDRs[%d]\": a second range of the same IP family", i), "")
		}
		seen[p.Addr().Is4()] = true
		c.ranges = append(c.ranges, p)
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
		}
	}
	return &c, nil
}

// needRanges is the check ADD and STATUS make: without a podCIDR the node cannot
// give out addresses yet, which is worth a retry, not a failure.
func (c *parsedConf) needRanges() *types.Error {
	if len(c.ranges) == 0 {
		return types.NewError(types.ErrTryAgainLater, "the node has no pod range yet (spec.podCIDRs is empty): try again later", "")
	}
	return nil
}

// asCNIError keeps a *types.Error as it is and wraps anything else as internal.
func asCNIError(err error, msg string) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInternal, msg, err.Error())
}
