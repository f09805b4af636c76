package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"amime.dev/amime/internal/lab"
	"amime.dev/amime/internal/noderuntime"
	"amime.dev/amime/internal/shim"
)

func newLabCommand() *cobra.Command {
	cfg := lab.Defaults()
	var cpBin, deployDir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A real local Kubernetes cluster whose nodes and pods are network namespaces",
	}
	cmd.PersistentFlags().StringVar(&cfg.Name, "name", cfg.Name, "lab name (1-8 lowercase letters or digits)")
	cmd.PersistentFlags().StringVar(&cfg.StateRoot, "state-root", cfg.StateRoot, "directory that holds the state of every lab")
	newLab := func() (*lab.Lab, error) {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		l := &lab.Lab{Config: cfg, Bin: self, ControlPlaneBin: cpBin, DeployDir: deployDir, Out: os.Stdout}
		if l.ControlPlaneBin == "" {
			l.ControlPlaneBin = filepath.Join(filepath.Dir(self), "amime-controlplane")
		}
		if l.DeployDir == "" {
			if d := filepath.Join(filepath.Dir(self), "..", "deploy"); isDir(d) {
				l.DeployDir = filepath.Clean(d)
			}
		}
		return l, nil
	}
	// existing loads the configuration a lab was started with.
	existing := func() (*lab.Lab, error) {
		l, err := newLab()
		if err != nil {
			return nil, err
		}
		c, err := lab.LoadConfig(cfg.StateRoot, cfg.Name)
		if err != nil {
			if os.IsNotExist(err) {
				return nil, fmt.Errorf("lab %q is not up: run `amime lab up` (or `make lab`)", cfg.Name)
			}
			return nil, err
		}
		l.Config = c
		return l, nil
	}

	up := &cobra.Command{
		Use:   "up",
		Short: "Bring the lab up (no-op when it runs; cleans up after a crash first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLab()
			if err != nil {
				return err
			}
			return l.Up(cmd.Context())
		},
	}
	up.Flags().IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "number of nodes")
	up.Flags().StringVar(&cfg.IPFamily, "ip-family", cfg.IPFamily, "ipv4, ipv6 or dual")
	up.Flags().StringVar(&cpBin, "controlplane-bin", "", "amime-controlplane binary (default: next to amime)")
	up.Flags().StringVar(&deployDir, "deploy-dir", "", "add-on manifests to apply (default: ../deploy next to the binary)")
	prefixFlag(up, &cfg.PodCIDRv4, "pod-cidr", "IPv4 pod range")
	prefixFlag(up, &cfg.PodCIDRv6, "pod-cidr-v6", "IPv6 pod range")
	prefixFlag(up, &cfg.ServiceCIDRv4, "service-cidr", "IPv4 Service range")
	prefixFlag(up, &cfg.ServiceCIDRv6, "service-cidr-v6", "IPv6 Service range")
	prefixFlag(up, &cfg.UnderlayV4, "underlay", "IPv4 range of the lab bridge")
	prefixFlag(up, &cfg.UnderlayV6, "underlay-v6", "IPv6 range of the lab bridge")
	up.Flags().IntVar(&cfg.APIServerPort, "apiserver-port", cfg.APIServerPort, "apiserver port on the lab bridge")
	up.Flags().IntVar(&cfg.EtcdPort, "etcd-port", cfg.EtcdPort, "etcd client port on loopback (peer port is the next one)")
	up.Flags().StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "cluster DNS domain")
	up.Flags().StringVar(&cfg.RoutingMode, "routing", cfg.RoutingMode, "how pods reach other nodes: overlay (VXLAN) or native (routes over the lab bridge)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove every process, namespace, link, mount and file of the lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := existing()
			if err != nil {
				if strings.Contains(err.Error(), "is not up") {
					fmt.Printf("lab %q is not up; nothing to do\n", cfg.Name)
					return nil
				}
				return err
			}
			start := time.Now()
			if err := l.Down(); err != nil {
				return err
			}
			fmt.Printf("lab %q is down (%.1fs)\n", cfg.Name, time.Since(start).Seconds())
			return nil
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's processes and nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := existing()
			if err != nil {
				return err
			}
			return l.Status(cmd.Context(), os.Stdout)
		},
	}

	kubeconfig := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the lab's admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := existing()
			if err != nil {
				return err
			}
			fmt.Println(l.KubeconfigPath())
			return nil
		},
	}

	var ns, node, container string
	var external bool
	exec := &cobra.Command{
		Use:   "exec [-n NS] POD -- CMD [ARGS...] | exec --node NODE -- CMD... | exec --external -- CMD...",
		Short: "Run a command in a pod's, a node's or the external client's namespaces",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := existing()
			if err != nil {
				return err
			}
			dash := cmd.ArgsLenAtDash()
			target := lab.ExecTarget{Namespace: ns, Node: node, External: external, Container: container}
			argv := args
			if dash >= 0 {
				if dash > 1 {
					return fmt.Errorf("expected at most one pod name before --")
				}
				if dash == 1 {
					target.Pod = args[0]
				}
				argv = args[dash:]
			} else if node == "" && !external {
				target.Pod, argv = args[0], args[1:]
			}
			if len(argv) == 0 {
				return fmt.Errorf("no command given: amime lab exec POD -- CMD")
			}
			code, err := l.Exec(cmd.Context(), target, argv)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	exec.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the pod")
	exec.Flags().StringVarP(&container, "container", "c", "", "container (default: the first)")
	exec.Flags().StringVar(&node, "node", "", "run in this node's network namespace")
	exec.Flags().BoolVar(&external, "external", false, "run in the external client's namespace (outside the cluster)")

	var previous, follow bool
	logs := &cobra.Command{
		Use:   "logs [-n NS] POD [-c CONTAINER]",
		Short: "Print a pod container's log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := existing()
			if err != nil {
				return err
			}
			return l.Logs(cmd.Context(), os.Stdout, lab.ExecTarget{Namespace: ns, Pod: args[0], Container: container}, previous, follow)
		},
	}
	logs.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the pod")
	logs.Flags().StringVarP(&container, "container", "c", "", "container (default: the first)")
	logs.Flags().BoolVarP(&previous, "previous", "p", false, "the previous instance of the container")
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")

	cniCheck := &cobra.Command{
		Use:   "cni-check [-n NS] POD",
		Short: "Run CNI CHECK for a pod (the node runtime calls the plugins, as a runtime would)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := existing()
			if err != nil {
				return err
			}
			return l.CNICheck(cmd.Context(), os.Stdout, ns, args[0])
		},
	}
	cniCheck.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the pod")

	cmd.AddCommand(up, down, status, kubeconfig, exec, logs, cniCheck, newTourCommand(existing), newNodeCommand())
	return cmd
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// prefixValue is a pflag.Value for netip.Prefix.
type prefixValue struct{ p *netip.Prefix }

func (v prefixValue) String() string {
	if v.p == nil || !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}
func (v prefixValue) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("not a CIDR: %w", err)
	}
	*v.p = p
	return nil
}
func (v prefixValue) Type() string { return "cidr" }

func prefixFlag(c *cobra.Command, p *netip.Prefix, name, usage string) {
	c.Flags().Var(prefixValue{p}, name, usage)
}

// newNodeCommand runs the node runtime; `lab up` starts one per node namespace.
func newNodeCommand() *cobra.Command {
	var o noderuntime.Options
	var ips, dns []string
	var debug bool
	hostMountFD := -1
	c := &cobra.Command{
		Use:    "node",
		Short:  "Run the lab's node runtime (started by `lab up` inside a node namespace)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range ips {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("--node-ip %q: %w", s, err)
				}
				o.NodeIPs = append(o.NodeIPs, a)
			}
			o.ClusterDNS = dns
			if hostMountFD >= 0 {
				o.HostMountNS = os.NewFile(uintptr(hostMountFD), "host-mount-ns")
			}
			o.Logger = newLogger(debug)
			return noderuntime.Run(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.NodeName, "node-name", "", "name of the Node")
	f.StringSliceVar(&ips, "node-ip", nil, "node addresses (InternalIP), comma-separated")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig with the node's credentials")
	f.StringVar(&o.StateDir, "state-dir", "", "directory for the node's pods, CNI configuration and state")
	f.StringVar(&o.TLSCertFile, "tls-cert-file", "", "kubelet API serving certificate")
	f.StringVar(&o.TLSKeyFile, "tls-private-key-file", "", "kubelet API serving key")
	f.StringVar(&o.ClientCAFile, "client-ca-file", "", "CA of clients allowed on the kubelet API")
	f.StringSliceVar(&dns, "cluster-dns", nil, "cluster DNS addresses for pods with dnsPolicy ClusterFirst")
	f.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain")
	f.StringVar(&o.PodNetnsPrefix, "pod-netns-prefix", "", "name prefix of pod network namespaces")
	f.StringVar(&o.Zone, "zone", "", "topology zone label of the node")
	f.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "CNI configuration directory (default: <state-dir>/etc/cni/net.d)")
	f.StringSliceVar(&o.CNIBinDirs, "cni-bin-dir", nil, "CNI plugin directories")
	f.IntVar(&o.KubeletPort, "port", 10250, "kubelet API port")
	f.StringVar(&o.CreatedLog, "created-log", "", "file recording the paths created on the machine (default: <state-dir>/created-paths)")
	f.BoolVar(&o.PrivateMounts, "private-mounts", false, "bind the node's state over "+strings.Join(noderuntime.NodePrivatePaths, ", ")+" (needs a mount namespace of its own)")
	f.IntVar(&hostMountFD, "host-mount-ns-fd", -1, "open file descriptor of the mount namespace in which to pin pod network namespaces (with --private-mounts: the machine's)")
	f.BoolVar(&debug, "debug", false, "debug logging")
	return c
}

func newShimCommand() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:    "shim --dir DIR",
		Short:  "Run one container (started by the node runtime)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if code := shim.Run(dir); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "container state directory")
	return c
}
