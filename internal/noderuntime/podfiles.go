package noderuntime

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Limits the kubelet applies to resolv.conf (validation.MaxDNSNameservers etc.).
const (
	maxDNSNameservers = 3
	maxDNSSearches    = 32
)

// dnsSettings is the content of a pod's /etc/resolv.conf.
type dnsSettings struct {
	Nameservers []string
	Searches    []string
	Options     []string // "name" or "name:value"
}

// String renders resolv.conf.
func (d dnsSettings) String() string {
	var b strings.Builder
	if len(d.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Searches, " "))
	}
	for _, ns := range d.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	return b.String()
}

// parseResolvConf reads the node's resolv.conf (for dnsPolicy Default).
func parseResolvConf(content string) dnsSettings {
	var d dnsSettings
	for _, line := range strings.Split(content, "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			d.Nameservers = append(d.Nameservers, f[1])
		case "search", "domain":
			d.Searches = f[1:]
		case "options":
			d.Options = append(d.Options, f[1:]...)
		}
	}
	return d
}

// podDNS computes a pod's resolv.conf as the kubelet does (pkg/kubelet/network/dns):
// ClusterFirst points at cluster DNS with the namespace search path and ndots:5;
// hostNetwork pods with ClusterFirst fall back to Default; None uses only dnsConfig;
// dnsConfig is merged on top of the policy's settings in every case.
func podDNS(pod *corev1.Pod, clusterDNS []string, clusterDomain string, node dnsSettings) dnsSettings {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	var d dnsSettings
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		if len(clusterDNS) == 0 {
			// As the kubelet: without cluster DNS configured, fall back to the node's.
			d = node
			break
		}
		d.Nameservers = append([]string{}, clusterDNS...)
		d.Searches = []string{pod.Namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
		d.Searches = append(d.Searches, node.Searches...)
		d.Options = []string{"ndots:5"}
	case corev1.DNSDefault:
		d = dnsSettings{
			Nameservers: append([]string{}, node.Nameservers...),
			Searches:    append([]string{}, node.Searches...),
			Options:     append([]string{}, node.Options...),
		}
	case corev1.DNSNone:
	}
	if c := pod.Spec.DNSConfig; c != nil {
		d.Nameservers = append(d.Nameservers, c.Nameservers...)
		d.Searches = append(d.Searches, c.Searches...)
		d.Options = mergeDNSOptions(d.Options, c.Options)
	}
	d.Nameservers = dedupe(d.Nameservers)
	d.Searches = dedupe(d.Searches)
	if len(d.Nameservers) > maxDNSNameservers {
		d.Nameservers = d.Nameservers[:maxDNSNameservers]
	}
	if len(d.Searches) > maxDNSSearches {
		d.Searches = d.Searches[:maxDNSSearches]
	}
	return d
}

// mergeDNSOptions lets dnsConfig options override same-named ones.
func mergeDNSOptions(base []string, extra []corev1.PodDNSConfigOption) []string {
	out := append([]string{}, base...)
	index := map[string]int{}
	for i, o := range out {
		index[strings.SplitN(o, ":", 2)[0]] = i
	}
	for _, o := range extra {
		s := o.Name
		if o.Value != nil && *o.Value != "" {
			s += ":" + *o.Value
		}
		if i, ok := index[o.Name]; ok {
			out[i] = s
			continue
		}
		index[o.Name] = len(out)
		out = append(out, s)
	}
	return out
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// podHostname returns the pod's hostname and, when it has a subdomain, its FQDN.
func podHostname(pod *corev1.Pod, clusterDomain string) (hostname, fqdn string) {
	hostname = pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > 63 {
		// The kubelet truncates to the DNS label limit and trims trailing '-' and '.'.
		hostname = strings.TrimRight(hostname[:63], "-.")
	}
	if pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc.%s", hostname, pod.Spec.Subdomain, pod.Namespace, clusterDomain)
	}
	return hostname, fqdn
}

// podHostsFile renders the kubelet-managed /etc/hosts.
func podHostsFile(pod *corev1.Pod, podIPs []string, clusterDomain string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	hostname, fqdn := podHostname(pod, clusterDomain)
	for _, ip := range podIPs {
		if fqdn != "" {
			fmt.Fprintf(&b, "%s\t%s\t%s\n", ip, fqdn, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.String()
}

// serviceEnv returns the Docker-links-style variables the kubelet injects for each
// Service: for Services of the pod's namespace when enableServiceLinks is on, and
// always for the "kubernetes" Service of the default namespace.
func serviceEnv(pod *corev1.Pod, services []*corev1.Service) []corev1.EnvVar {
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	chosen := map[string]*corev1.Service{}
	for _, s := range services {
		if !corev1helperIsServiceIPSet(s) {
			continue
		}
		if s.Namespace == metav1NamespaceDefault && s.Name == "kubernetes" {
			// As the kubelet: a "kubernetes" Service of the pod's own namespace wins.
			if _, taken := chosen[s.Name]; !taken {
				chosen[s.Name] = s
			}
			continue
		}
		if s.Namespace == pod.Namespace && links {
			chosen[s.Name] = s
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []corev1.EnvVar
	for _, n := range names {
		s := chosen[n]
		prefix := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		host := s.Spec.ClusterIP
		out = append(out, corev1.EnvVar{Name: prefix + "_SERVICE_HOST", Value: host})
		if len(s.Spec.Ports) == 0 {
			continue
		}
		first := s.Spec.Ports[0]
		out = append(out, corev1.EnvVar{Name: prefix + "_SERVICE_PORT", Value: fmt.Sprint(first.Port)})
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				out = append(out, corev1.EnvVar{Name: prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), Value: fmt.Sprint(p.Port)})
			}
		}
		hostPort := host
		if strings.Contains(host, ":") {
			hostPort = "[" + host + "]"
		}
		proto := strings.ToLower(string(first.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		out = append(out, corev1.EnvVar{Name: prefix + "_PORT", Value: fmt.Sprintf("%s://%s:%d", proto, hostPort, first.Port)})
		for _, p := range s.Spec.Ports {
			pr := string(p.Protocol)
			if pr == "" {
				pr = "TCP"
			}
			base := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(pr))
			out = append(out,
				corev1.EnvVar{Name: base, Value: fmt.Sprintf("%s://%s:%d", strings.ToLower(pr), hostPort, p.Port)},
				corev1.EnvVar{Name: base + "_PROTO", Value: strings.ToLower(pr)},
				corev1.EnvVar{Name: base + "_PORT", Value: fmt.Sprint(p.Port)},
				corev1.EnvVar{Name: base + "_ADDR", Value: host},
			)
		}
	}
	return out
}

const metav1NamespaceDefault = "default"

func corev1helperIsServiceIPSet(s *corev1.Service) bool {
	return s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone
}

// expandVars expands $(VAR) references as Kubernetes does for env values, command
// and args: $$ escapes a dollar, unknown references are left as written.
func expandVars(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				// An incomplete reference is kept as written; expansion goes on
				// after it (so "$$" later in s still escapes).
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
