package dns

import "amime.dev/amime/internal/configdoc"

// ConfigMapDoc documents every key ParseConfig accepts (a test checks that the
// two lists agree); docs/reference.md is generated from it.
func ConfigMapDoc() configdoc.ConfigMap {
	return configdoc.ConfigMap{Namespace: "kube-system", Name: "amime-dns",
		Consumer: "`amime dns` (`--configmap`); reloaded when it changes, a bad value is refused and the previous configuration kept",
		Keys: []configdoc.Key{
			configdoc.K(keyZone, "cluster.local (or $CLUSTER_DOMAIN)", "the cluster domain"),
			configdoc.K(keyTTL, "5", "TTL of the zone's records, in seconds"),
			configdoc.K(keyNegativeTTL, "5", "SOA TTL and minimum of negative answers: how long clients cache NXDOMAIN and NODATA"),
			configdoc.K(keyUpstreams, "", "servers for names outside the zone (IP or IP:port, comma or space separated); none: such names are REFUSED"),
			configdoc.K(keyStubDomains, "", "one line per domain, `<domain> <server>...`: names under the domain go to those servers"),
			configdoc.K(keyUpstreamTO, "2s", "time allowed for one exchange with one upstream"),
			configdoc.K(keyCacheSize, "10000", "upstream answers kept in the cache (0: no cache)"),
			configdoc.K(keyCacheMaxTTL, "1h", "longest time a positive upstream answer stays fresh"),
			configdoc.K(keyCacheNegMaxTTL, "5m", "longest time a negative upstream answer stays fresh"),
			configdoc.K(keyServeStale, "1h", "how long past expiry a cached answer may be served when every upstream fails (0s: never)"),
			configdoc.K(keyAutopath, "true", "server-side search-path completion"),
			configdoc.K(keyAutopathSearch, "", "search domains pods have after the cluster ones, tried before the bare name"),
			configdoc.K(keyPods, "verified", "pod records: verified, insecure or disabled"),
			configdoc.K(keyLogNamespaces, "", "log every query from pods of these namespaces (`*`: all clients)"),
		}}
}
