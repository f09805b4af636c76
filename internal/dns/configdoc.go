package dns

import "amime.dev/amime/internal/configdoc"

// ConfigMapDoc documents every key ParseConfig accepts (a test checks that the
// two lists agree); docs/reference.md is generated from it.
func ConfigMapDoc() configdoc.ConfigMap {
	return configdoc.ConfigMap{Namespace: "kube-system", Name: "amime-dns",
		Consumer: "`amime dns` (`--configmap`); reloaded when it changes, a bad value is refused and the previous configuration kept",
		Keys: []configdoc.Key{
			{keyZone, "cluster.local (or $CLUSTER_DOMAIN)", "the cluster domain"},
			{keyTTL, "5", "TTL of the zone's records, in seconds"},
			{keyNegativeTTL, "5", "SOA TTL and minimum of negative answers: how long clients cache NXDOMAIN and NODATA"},
			{keyUpstreams, "", "servers for names outside the zone (IP or IP:port, comma or space separated); none: such names are REFUSED"},
			{keyStubDomains, "", "one line per domain, `<domain> <server>...`: names under the domain go to those servers"},
			{keyUpstreamTO, "2s", "time allowed for one exchange with one upstream"},
			{keyCacheSize, "10000", "upstream answers kept in the cache (0: no cache)"},
			{keyCacheMaxTTL, "1h", "longest time a positive upstream answer stays fresh"},
			{keyCacheNegMaxTTL, "5m", "longest time a negative upstream answer stays fresh"},
			{keyServeStale, "1h", "how long past expiry a cached answer may be served when every upstream fails (0s: never)"},
			{keyAutopath, "true", "server-side search-path completion"},
			{keyAutopathSearch, "", "search domains pods have after the cluster ones, tried before the bare name"},
			{keyPods, "verified", "pod records: verified, insecure or disabled"},
			{keyLogNamespaces, "", "log every query from pods of these namespaces (`*`: all clients)"},
		}}
}
