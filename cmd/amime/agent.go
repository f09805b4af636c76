package main

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"amime.dev/amime/internal/agent"
	"amime.dev/amime/internal/cni"
	"amime.dev/amime/internal/routing"
)

func newAgentCommand() *cobra.Command {
	var cfg agent.Config
	var mode string
	var clusterCIDRs, nonMasq, serviceCIDRs []string
	var debug bool
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the per-node agent: pod routing (overlay or native), masquerade, CNI configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mode == "" {
				mode = string(routing.Overlay)
			}
			m, err := routing.ParseMode(mode)
			if err != nil {
				return err
			}
			cfg.Mode = m
			if cfg.ClusterCIDRs, err = parsePrefixes("--cluster-cidr", clusterCIDRs); err != nil {
				return err
			}
			if cfg.NonMasquerade, err = parsePrefixes("--non-masquerade-cidr", nonMasq); err != nil {
				return err
			}
			if cfg.ServiceCIDRs, err = parsePrefixes("--service-cidr", serviceCIDRs); err != nil {
				return err
			}
			cfg.Logger = newLogger(debug)
			cfg.Version = version
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default: $NODE_NAME)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster configuration)")
	f.StringVar(&mode, "routing-mode", string(routing.Overlay), "how pods reach other nodes: overlay (VXLAN) or native (routes via node addresses on a shared link)")
	f.StringSliceVar(&clusterCIDRs, "cluster-cidr", nil, "the cluster's pod ranges, comma-separated (masquerade sources)")
	f.StringSliceVar(&serviceCIDRs, "service-cidr", nil, "the cluster's Service ranges, comma-separated (routed onto the node's underlay link)")
	f.BoolVar(&cfg.Proxy, "proxy", true, "run the Service proxy (in place of kube-proxy)")
	f.BoolVar(&cfg.NetworkPolicy, "network-policy", true, "enforce NetworkPolicies for the node's pods")
	f.BoolVar(&cfg.FastPath, "fast-path", true, "move the packets of established connections between pods that no NetworkPolicy selects past the node's stack (tc BPF), into the pod or towards its node; where the kernel cannot, they take the stack")
	f.Uint16Var(&cfg.PolicyLogGroup, "policy-log-group", 9962, "NFLOG group of the NetworkPolicy verdict log")
	f.StringSliceVar(&nonMasq, "non-masquerade-cidr", nil, "extra destinations pods reach without masquerade (pod ranges and node networks are always included)")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "where the agent writes the CNI configuration")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "where the agent installs the CNI plugin")
	f.StringVar(&cfg.IPAMDir, "ipam-dir", "/var/lib/amime/ipam", "IPAM state directory (written into the CNI configuration)")
	f.StringVar(&cfg.AttachSocket, "attach-socket", "/var/lib/amime/agent.sock", "unix socket where the CNI plugin reports new pods and waits until their policies are programmed (written into the CNI configuration)")
	f.StringVar(&cfg.ProcSysNet, "proc-sys-net", "/proc/sys/net", "the node's /proc/sys/net (mounted from the host)")
	f.StringVar(&cfg.Listen, "listen", ":9962", "address of /healthz, /readyz, /metrics and /status")
	f.BoolVar(&debug, "debug", false, "debug logging")
	return c
}

func parsePrefixes(flag string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		if s == "" {
			continue // an empty ConfigMap value means "none"
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flag, s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func newCNICommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cni",
		Short: "Run the CNI plugin (runtimes call the binary as \"amime\" with CNI_COMMAND set)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if code := cni.Main(cniAbout()); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
}

func cniAbout() string { return "amime CNI plugin " + version }
