package agent

import "amime.dev/amime/internal/configdoc"

// ConfigMapDoc documents kube-system/amime-config, which the manifests of
// deploy/ turn into the agent's flags (and the DNS server's zone); a test checks
// that it names exactly the keys the manifests read.
func ConfigMapDoc() configdoc.ConfigMap {
	return configdoc.ConfigMap{Namespace: "kube-system", Name: "amime-config",
		Consumer: "the manifests of deploy/, as environment variables of the agent DaemonSet and the DNS Deployment (`amime lab up` writes it); a change takes effect when their pods restart",
		Keys: []configdoc.Key{
			configdoc.K("cluster-cidr", "", "the cluster's pod ranges, comma-separated (required; masquerade sources): the agent's --cluster-cidr"),
			configdoc.K("service-cidr", "", "the cluster's Service ranges, comma-separated: the agent's --service-cidr"),
			configdoc.K("routing-mode", "overlay", "overlay (VXLAN) or native (routes via node addresses on a shared link): the agent's --routing-mode"),
			configdoc.K("non-masquerade-cidr", "", "extra destinations pods reach without masquerade: the agent's --non-masquerade-cidr"),
			configdoc.K("apiserver-host", "", "address of the apiserver for the agent (the in-cluster Service address needs the proxy the agent provides)"),
			configdoc.K("apiserver-port", "", "port of the apiserver for the agent"),
			configdoc.K("cluster-domain", "cluster.local", "the cluster DNS domain, the default zone of amime dns"),
		}}
}
