package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"amime.dev/amime/internal/dns"
)

func newDNSCommand() *cobra.Command {
	var o dns.Options
	var zone string
	var debug bool
	c := &cobra.Command{
		Use:   "dns",
		Short: "Run the cluster DNS server (the Kubernetes DNS specification 1.1.0, behind the kube-dns Service)",
		Long: `Run the cluster DNS server. It answers the names of the Kubernetes DNS-Based
Service Discovery specification 1.1.0 for the cluster zone from informer caches
(never waiting on the apiserver), forwards other names to configured upstreams
through a cache, and completes pods' search paths on the server (autopath).

Settings that can change at run time come from a ConfigMap (--configmap),
reloaded when it changes; see docs/dns.md for its keys. Nothing is forwarded
unless the ConfigMap names upstreams.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Base = dns.Defaults()
			if zone != "" {
				o.Base.Zone = zone
			}
			cfg, err := dns.ParseConfig(o.Base, nil) // canonicalises and validates the flags
			if err != nil {
				return err
			}
			o.Base = cfg
			o.Logger = newLogger(debug)
			return dns.Run(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster configuration)")
	f.StringVar(&o.Listen, "listen", ":53", "DNS address, UDP and TCP")
	f.StringVar(&o.HTTPListen, "http-listen", ":9153", "address of /healthz, /ready and /metrics")
	f.StringVar(&o.ConfigMap, "configmap", defaultConfigMap(), "NAMESPACE/NAME of the ConfigMap with the run-time settings (empty: defaults and flags only)")
	f.StringVar(&zone, "zone", os.Getenv("CLUSTER_DOMAIN"), "the cluster domain (default: $CLUSTER_DOMAIN, else cluster.local); the ConfigMap's zone key overrides it")
	f.BoolVar(&o.WatchPods, "watch-pods", true, "watch Pods (needed for verified pod records, autopath and the per-namespace query log)")
	f.DurationVar(&o.Lameduck, "lameduck", 3*time.Second, "keep answering this long after SIGTERM, while the Service proxies withdraw this replica")
	f.BoolVar(&debug, "debug", false, "debug logging")
	return c
}

// defaultConfigMap is amime-dns in the pod's own namespace (POD_NAMESPACE), else kube-system.
func defaultConfigMap() string {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "kube-system"
	}
	return ns + "/amime-dns"
}
