package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"amime.dev/amime/internal/policy"
)

func newPolicyCommand() *cobra.Command {
	var kubeconfig string
	c := &cobra.Command{Use: "policy", Short: "NetworkPolicy: explain a verdict, read the verdict log"}
	c.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG, then ~/.kube/config)")
	client := func() (*kubernetes.Clientset, error) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if kubeconfig != "" {
			rules.ExplicitPath = kubeconfig
		}
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes client config: %w", err)
		}
		return kubernetes.NewForConfig(cfg)
	}

	var from, to, port string
	explain := &cobra.Command{
		Use:   "explain --from NS/POD|IP --to NS/POD|IP --port PORT[/PROTO]",
		Short: "Print whether a connection is allowed and which policies decide it, computed by the code that programs the agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := client()
			if err != nil {
				return err
			}
			s, err := clusterSnapshot(cmd.Context(), cs)
			if err != nil {
				return err
			}
			pkt := policy.Packet{}
			if pkt.Src, err = endpointAddr(s, from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if pkt.Dst, err = endpointAddr(s, to); err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if pkt.Protocol, pkt.Port, err = parsePortProto(port); err != nil {
				return fmt.Errorf("--port: %w", err)
			}
			policy.Explain(cmd.OutOrStdout(), s, pkt)
			for _, p := range s.Problems() {
				fmt.Fprintln(cmd.OutOrStdout(), "note:", p)
			}
			return nil
		},
	}
	explain.Flags().StringVar(&from, "from", "", "source: namespace/pod or an IP address")
	explain.Flags().StringVar(&to, "to", "", "destination: namespace/pod or an IP address")
	explain.Flags().StringVar(&port, "port", "", "destination port and protocol, e.g. 80/tcp (default tcp)")
	for _, f := range []string{"from", "to", "port"} {
		_ = explain.MarkFlagRequired(f)
	}

	var node string
	var follow bool
	logCmd := &cobra.Command{
		Use:   "log",
		Short: "Print the verdict log of the agents (namespaces annotated " + policy.LogAnnotation + "=deny|all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := client()
			if err != nil {
				return err
			}
			return printPolicyLog(cmd.Context(), cs, node, follow)
		},
	}
	logCmd.Flags().StringVar(&node, "node", "", "only this node's agent")
	logCmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records")
	c.AddCommand(explain, logCmd)
	return c
}

// clusterSnapshot lists pods, namespaces and policies, as the agents' caches hold them.
func clusterSnapshot(ctx context.Context, cs kubernetes.Interface) (*policy.Snapshot, error) {
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	nps, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list network policies: %w", err)
	}
	var pp []*corev1.Pod
	for i := range pods.Items {
		pp = append(pp, &pods.Items[i])
	}
	var np []*corev1.Namespace
	for i := range nss.Items {
		np = append(np, &nss.Items[i])
	}
	var pols = make([]*networkingv1.NetworkPolicy, 0, len(nps.Items))
	for i := range nps.Items {
		pols = append(pols, &nps.Items[i])
	}
	s, _ := policy.BuildSnapshot(pp, np, pols)
	return s, nil
}

func endpointAddr(s *policy.Snapshot, v string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(v); err == nil {
		return a, nil
	}
	ns, name, ok := strings.Cut(v, "/")
	if !ok {
		return netip.Addr{}, fmt.Errorf("%q: want namespace/pod or an IP address", v)
	}
	p := s.PodByName(ns, name)
	if p == nil || len(p.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("pod %s: not found, on the host network, or without an address", v)
	}
	return p.IPs[0], nil
}

func parsePortProto(v string) (corev1.Protocol, uint16, error) {
	p, proto, _ := strings.Cut(v, "/")
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: not a port", v)
	}
	switch strings.ToLower(proto) {
	case "", "tcp":
		return corev1.ProtocolTCP, uint16(n), nil
	case "udp":
		return corev1.ProtocolUDP, uint16(n), nil
	case "sctp":
		return corev1.ProtocolSCTP, uint16(n), nil
	}
	return "", 0, fmt.Errorf("%q: protocol must be tcp, udp or sctp", v)
}

// printPolicyLog reads each agent's /policy/log through the apiserver's pod
// proxy (the agents run on the host network, port 9962), merges the records
// by time and prints them.
func printPolicyLog(ctx context.Context, cs kubernetes.Interface, node string, follow bool) error {
	seen := map[string]bool{}
	for {
		pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=amime-agent"})
		if err != nil {
			return fmt.Errorf("list agents: %w", err)
		}
		var recs []policy.LogRecord
		for _, p := range pods.Items {
			if node != "" && p.Spec.NodeName != node {
				continue
			}
			raw, err := cs.CoreV1().RESTClient().Get().Namespace("kube-system").Resource("pods").
				Name(p.Name + ":9962").SubResource("proxy").Suffix("policy/log").DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(os.Stderr, "amime: agent %s on %s: %v\n", p.Name, p.Spec.NodeName, err)
				continue
			}
			var rs []policy.LogRecord
			if err := json.Unmarshal(raw, &rs); err != nil {
				return fmt.Errorf("agent %s: %w", p.Name, err)
			}
			recs = append(recs, rs...)
		}
		sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
		for _, r := range recs {
			if k := r.String(); !seen[k] {
				seen[k] = true
				fmt.Println(k)
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
