// Package lab runs a real Kubernetes cluster on one Linux machine: upstream etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler in the root network
// namespace, and nodes that are network namespaces on a lab bridge, each running the
// lab's node runtime (internal/noderuntime).
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
)

// IP families a lab can run with.
const (
	FamilyIPv4 = "ipv4"
	FamilyIPv6 = "ipv6"
	FamilyDual = "dual"
)

// Config describes one lab. It is written to the lab's state directory on `lab up`
// so that later commands (down, status, exec) act on exactly what was created.
type Config struct {
	Name     string `json:"name"`
	Nodes    int    `json:"nodes"`
	IPFamily string `json:"ipFamily"`
	// StateRoot holds one directory per lab.
	StateRoot string `json:"stateRoot"`

	// Underlay is the lab bridge network; the bridge takes the first host address,
	// node i takes host address 10+i, the external namespace takes 200.
	UnderlayV4 netip.Prefix `json:"underlayV4"`
	UnderlayV6 netip.Prefix `json:"underlayV6"`

	PodCIDRv4     netip.Prefix `json:"podCIDRv4"`
	PodCIDRv6     netip.Prefix `json:"podCIDRv6"`
	NodeMaskV4    int          `json:"nodeMaskV4"`
	NodeMaskV6    int          `json:"nodeMaskV6"`
	ServiceCIDRv4 netip.Prefix `json:"serviceCIDRv4"`
	ServiceCIDRv6 netip.Prefix `json:"serviceCIDRv6"`
	NodePortRange string       `json:"nodePortRange"`

	ClusterDomain string `json:"clusterDomain"`
	// RoutingMode is the amime agent's: overlay or native.
	RoutingMode string `json:"routingMode"`

	// Ports of the control plane. etcd listens on loopback, the apiserver on the
	// bridge address only.
	APIServerPort int `json:"apiServerPort"`
	EtcdPort      int `json:"etcdPort"`
}

// Defaults returns the configuration of the default lab.
func Defaults() Config {
	return Config{
		Name:          "lab",
		Nodes:         3,
		IPFamily:      FamilyIPv4,
		StateRoot:     "/var/lib/amime-lab",
		UnderlayV4:    netip.MustParsePrefix("172.30.0.0/24"),
		UnderlayV6:    netip.MustParsePrefix("fd00:a:e::/64"),
		PodCIDRv4:     netip.MustParsePrefix("10.244.0.0/16"),
		PodCIDRv6:     netip.MustParsePrefix("fd00:10:244::/56"),
		NodeMaskV4:    24,
		NodeMaskV6:    64,
		ServiceCIDRv4: netip.MustParsePrefix("10.96.0.0/16"),
		ServiceCIDRv6: netip.MustParsePrefix("fd00:10:96::/112"),
		NodePortRange: "30000-32767",
		ClusterDomain: "cluster.local",
		RoutingMode:   "overlay",
		APIServerPort: 6443,
		EtcdPort:      12379,
	}
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("lab name %q: must be 1-8 lowercase letters or digits, starting with a letter (it becomes part of interface names)", c.Name))
	}
	if c.Nodes < 1 || c.Nodes > 50 {
		errs = append(errs, fmt.Errorf("nodes %d: must be between 1 and 50", c.Nodes))
	}
	switch c.IPFamily {
	case FamilyIPv4, FamilyIPv6, FamilyDual:
	default:
		errs = append(errs, fmt.Errorf("ip family %q: must be ipv4, ipv6 or dual", c.IPFamily))
	}
	if !filepath.IsAbs(c.StateRoot) {
		errs = append(errs, fmt.Errorf("state root %q: must be an absolute path", c.StateRoot))
	}
	checkPrefix := func(what string, p netip.Prefix, v4 bool, maxBits int) {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("%s: not set", what))
		case p.Addr().Is4() != v4:
			errs = append(errs, fmt.Errorf("%s %s: wrong address family", what, p))
		case p.Masked() != p:
			errs = append(errs, fmt.Errorf("%s %s: host bits set (did you mean %s?)", what, p, p.Masked()))
		case p.Bits() > maxBits:
			errs = append(errs, fmt.Errorf("%s %s: too small, need at least a /%d", what, p, maxBits))
		}
	}
	if c.HasV4() {
		checkPrefix("IPv4 underlay", c.UnderlayV4, true, 24)
		checkPrefix("IPv4 pod CIDR", c.PodCIDRv4, true, c.NodeMaskV4)
		checkPrefix("IPv4 service CIDR", c.ServiceCIDRv4, true, 28)
		if c.NodeMaskV4 < c.PodCIDRv4.Bits() || c.NodeMaskV4 > 28 {
			errs = append(errs, fmt.Errorf("IPv4 node mask /%d: must be within the pod CIDR and at most /28", c.NodeMaskV4))
		} else if c.PodCIDRv4.IsValid() && c.Nodes > 1<<(c.NodeMaskV4-c.PodCIDRv4.Bits()) {
			errs = append(errs, fmt.Errorf("IPv4 pod CIDR %s holds only %d node ranges of /%d, lab wants %d", c.PodCIDRv4, 1<<(c.NodeMaskV4-c.PodCIDRv4.Bits()), c.NodeMaskV4, c.Nodes))
		}
		if c.PodCIDRv4.Overlaps(c.ServiceCIDRv4) || c.PodCIDRv4.Overlaps(c.UnderlayV4) || c.ServiceCIDRv4.Overlaps(c.UnderlayV4) {
			errs = append(errs, fmt.Errorf("IPv4 pod CIDR %s, service CIDR %s and underlay %s must not overlap", c.PodCIDRv4, c.ServiceCIDRv4, c.UnderlayV4))
		}
	}
	if c.HasV6() {
		checkPrefix("IPv6 underlay", c.UnderlayV6, false, 120)
		checkPrefix("IPv6 pod CIDR", c.PodCIDRv6, false, c.NodeMaskV6)
		checkPrefix("IPv6 service CIDR", c.ServiceCIDRv6, false, 124)
		if c.NodeMaskV6 < c.PodCIDRv6.Bits() || c.NodeMaskV6 > 120 {
			errs = append(errs, fmt.Errorf("IPv6 node mask /%d: must be within the pod CIDR and at most /120", c.NodeMaskV6))
		} else if c.PodCIDRv6.IsValid() && c.NodeMaskV6-c.PodCIDRv6.Bits() < 16 && c.Nodes > 1<<(c.NodeMaskV6-c.PodCIDRv6.Bits()) {
			errs = append(errs, fmt.Errorf("IPv6 pod CIDR %s has too few /%d node ranges for %d nodes", c.PodCIDRv6, c.NodeMaskV6, c.Nodes))
		}
		if c.ServiceCIDRv6.IsValid() && c.ServiceCIDRv6.Bits() < 108 {
			// The apiserver refuses service ranges larger than 2^20 addresses.
			errs = append(errs, fmt.Errorf("IPv6 service CIDR %s: must be /108 or smaller", c.ServiceCIDRv6))
		}
		if c.PodCIDRv6.Overlaps(c.ServiceCIDRv6) || c.PodCIDRv6.Overlaps(c.UnderlayV6) || c.ServiceCIDRv6.Overlaps(c.UnderlayV6) {
			errs = append(errs, fmt.Errorf("IPv6 pod CIDR %s, service CIDR %s and underlay %s must not overlap", c.PodCIDRv6, c.ServiceCIDRv6, c.UnderlayV6))
		}
	}
	if c.RoutingMode != "overlay" && c.RoutingMode != "native" {
		errs = append(errs, fmt.Errorf("routing mode %q: must be overlay or native", c.RoutingMode))
	}
	if c.ClusterDomain == "" {
		errs = append(errs, errors.New("cluster domain: must not be empty"))
	}
	for _, p := range []struct {
		what string
		port int
	}{{"apiserver port", c.APIServerPort}, {"etcd port", c.EtcdPort}} {
		if p.port < 1 || p.port > 65534 {
			errs = append(errs, fmt.Errorf("%s %d: out of range", p.what, p.port))
		}
	}
	return errors.Join(errs...)
}

// HasV4 reports whether the lab runs IPv4.
func (c Config) HasV4() bool { return c.IPFamily != FamilyIPv6 }

// HasV6 reports whether the lab runs IPv6.
func (c Config) HasV6() bool { return c.IPFamily != FamilyIPv4 }

// Dir is the lab's state directory.
func (c Config) Dir() string { return filepath.Join(c.StateRoot, c.Name) }

// NodeName is the Kubernetes name of node i (1-based).
func (c Config) NodeName(i int) string { return fmt.Sprintf("%s-node-%d", c.Name, i) }

// NodeNetns is the network namespace of node i.
func (c Config) NodeNetns(i int) string { return fmt.Sprintf("amime-%s-node-%d", c.Name, i) }

// ExternalNetns is the namespace of the client outside the cluster.
func (c Config) ExternalNetns() string { return fmt.Sprintf("amime-%s-external", c.Name) }

// PodNetnsPrefix starts the name of every pod network namespace of this lab, so that
// cleanup can find them after a crash.
func (c Config) PodNetnsPrefix() string { return fmt.Sprintf("amime-%s-pod-", c.Name) }

// BridgeName is the lab bridge (the underlay) in the root namespace.
func (c Config) BridgeName() string { return "am-" + c.Name }

// VethName is the root-namespace end of the link to node i; i == 0 is the external namespace.
func (c Config) VethName(i int) string {
	if i == 0 {
		return fmt.Sprintf("am-%s-x", c.Name)
	}
	return fmt.Sprintf("am-%s-%d", c.Name, i)
}

// hostAddr returns host number n of prefix p.
func hostAddr(p netip.Prefix, n int) netip.Addr {
	b := p.Addr().AsSlice()
	carry := n
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry
		b[i] = byte(sum)
		carry = sum >> 8
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// BridgeAddrs are the root namespace's addresses on the lab bridge (the apiserver's).
func (c Config) BridgeAddrs() []netip.Prefix { return c.addrs(1) }

// NodeAddrs are node i's underlay addresses.
func (c Config) NodeAddrs(i int) []netip.Prefix { return c.addrs(10 + i) }

// ExternalAddrs are the external namespace's underlay addresses.
func (c Config) ExternalAddrs() []netip.Prefix { return c.addrs(200) }

func (c Config) addrs(n int) []netip.Prefix {
	var out []netip.Prefix
	if c.HasV4() {
		out = append(out, netip.PrefixFrom(hostAddr(c.UnderlayV4, n), c.UnderlayV4.Bits()))
	}
	if c.HasV6() {
		out = append(out, netip.PrefixFrom(hostAddr(c.UnderlayV6, n), c.UnderlayV6.Bits()))
	}
	return out
}

// APIServerAddr is the address the apiserver listens on and advertises.
func (c Config) APIServerAddr() netip.Addr { return c.BridgeAddrs()[0].Addr() }

// APIServerURL is how nodes and users reach the apiserver.
func (c Config) APIServerURL() string {
	return "https://" + netip.AddrPortFrom(c.APIServerAddr(), uint16(c.APIServerPort)).String()
}

// ServiceCIDRs lists the Service ranges, primary family first.
func (c Config) ServiceCIDRs() []netip.Prefix {
	return c.pick(c.ServiceCIDRv4, c.ServiceCIDRv6)
}

// PodCIDRs lists the cluster pod ranges, primary family first.
func (c Config) PodCIDRs() []netip.Prefix { return c.pick(c.PodCIDRv4, c.PodCIDRv6) }

func (c Config) pick(v4, v6 netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	if c.HasV4() {
		out = append(out, v4)
	}
	if c.HasV6() {
		out = append(out, v6)
	}
	return out
}

// KubernetesServiceIP is the first address of the primary Service range, which the
// apiserver gives to the "kubernetes" Service.
func (c Config) KubernetesServiceIP() netip.Addr { return hostAddr(c.ServiceCIDRs()[0], 1) }

// DNSServiceIP is the conventional cluster DNS address: host 10 of the primary Service range.
func (c Config) DNSServiceIP() netip.Addr { return hostAddr(c.ServiceCIDRs()[0], 10) }

// Outside addresses stand for the world beyond the cluster: the external
// namespace holds them, and every node routes them via the external namespace,
// so that egress masquerade can be observed without leaving the lab.
var (
	OutsideV4 = netip.MustParsePrefix("198.51.100.0/24")
	OutsideV6 = netip.MustParsePrefix("2001:db8:5::/64")
)

// OutsideAddrs are the outside addresses of the external namespace.
func (c Config) OutsideAddrs() []netip.Prefix {
	var out []netip.Prefix
	if c.HasV4() {
		out = append(out, netip.PrefixFrom(hostAddr(OutsideV4, 1), 32))
	}
	if c.HasV6() {
		out = append(out, netip.PrefixFrom(hostAddr(OutsideV6, 1), 128))
	}
	return out
}
