package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// PodMode says whether and how `a-b-c-d.<ns>.pod.<zone>` names are answered.
type PodMode string

const (
	// PodsDisabled answers no pod names (NXDOMAIN).
	PodsDisabled PodMode = "disabled"
	// PodsVerified answers only for an address that belongs to a pod of that
	// namespace (needs a watch of Pods).
	PodsVerified PodMode = "verified"
	// PodsInsecure answers any well-formed address, as spec 1.1.0 §2.6 words it.
	PodsInsecure PodMode = "insecure"
)

// Config is what the ConfigMap (and the flags) set. It is replaced as a whole on
// reload; the handler reads one Config per query.
type Config struct {
	// Zone is the cluster domain, as a lower-case FQDN ("cluster.local.").
	Zone string
	// TTL of the records of the zone.
	TTL uint32
	// NegativeTTL is the SOA minimum and SOA TTL of negative answers (RFC 2308).
	NegativeTTL uint32
	// Upstreams receive queries outside the zone and the stub domains; none
	// means out-of-zone queries are refused.
	Upstreams []string // host:port
	// StubDomains send queries under a suffix (lower-case FQDN) to their own servers.
	StubDomains map[string][]string
	// UpstreamTimeout bounds one exchange with one upstream.
	UpstreamTimeout time.Duration
	// CacheSize bounds the number of cached upstream answers (0: no cache).
	CacheSize int
	// CacheMaxTTL caps how long a positive upstream answer is kept fresh.
	CacheMaxTTL time.Duration
	// CacheNegativeMaxTTL caps how long a negative upstream answer is kept fresh.
	CacheNegativeMaxTTL time.Duration
	// ServeStale is how long past its expiry a cached answer may be served when
	// every upstream fails (RFC 8767); 0 disables it.
	ServeStale time.Duration
	// Autopath completes the search path on the server (see autopath.go).
	Autopath bool
	// AutopathSearch are the search domains pods have after the cluster ones
	// (the node's own search list), tried before the bare name.
	AutopathSearch []string
	// Pods says how pod names are answered.
	Pods PodMode
	// LogNamespaces logs every query from pods of these namespaces ("*": all clients).
	LogNamespaces map[string]bool
}

// Defaults returns the configuration used when the ConfigMap sets nothing:
// the cluster.local zone, no upstream (nothing leaves the cluster unless an
// operator says where to), verified pod records, autopath on.
func Defaults() Config {
	return Config{
		Zone:                "cluster.local.",
		TTL:                 5,
		NegativeTTL:         5,
		UpstreamTimeout:     2 * time.Second,
		CacheSize:           10000,
		CacheMaxTTL:         time.Hour,
		CacheNegativeMaxTTL: 5 * time.Minute,
		ServeStale:          time.Hour,
		Autopath:            true,
		Pods:                PodsVerified,
		StubDomains:         map[string][]string{},
		LogNamespaces:       map[string]bool{},
	}
}

// ConfigMap keys, documented in docs/dns.md.
const (
	keyZone           = "zone"
	keyTTL            = "ttl"
	keyNegativeTTL    = "negative-ttl"
	keyUpstreams      = "upstreams"
	keyStubDomains    = "stub-domains"
	keyUpstreamTO     = "upstream-timeout"
	keyCacheSize      = "cache-size"
	keyCacheMaxTTL    = "cache-max-ttl"
	keyCacheNegMaxTTL = "cache-negative-max-ttl"
	keyServeStale     = "serve-stale"
	keyAutopath       = "autopath"
	keyAutopathSearch = "autopath-search"
	keyPods           = "pods"
	keyLogNamespaces  = "log-namespaces"
)

var knownKeys = map[string]bool{keyZone: true, keyTTL: true, keyNegativeTTL: true, keyUpstreams: true,
	keyStubDomains: true, keyUpstreamTO: true, keyCacheSize: true, keyCacheMaxTTL: true, keyCacheNegMaxTTL: true,
	keyServeStale: true, keyAutopath: true, keyAutopathSearch: true, keyPods: true, keyLogNamespaces: true}

// ParseConfig applies the keys of a ConfigMap's data to base and validates the
// result. It reports every problem at once; on error the caller keeps its
// previous configuration.
func ParseConfig(base Config, data map[string]string) (Config, error) {
	c := base
	c.StubDomains = map[string][]string{}
	for k, v := range base.StubDomains {
		c.StubDomains[k] = v
	}
	c.LogNamespaces = map[string]bool{}
	for k, v := range base.LogNamespaces {
		c.LogNamespaces[k] = v
	}
	var errs []error
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(data[k])
		var err error
		switch k {
		case keyZone:
			c.Zone = mdns.CanonicalName(v)
		case keyTTL:
			c.TTL, err = parseTTL(v)
		case keyNegativeTTL:
			c.NegativeTTL, err = parseTTL(v)
		case keyUpstreams:
			c.Upstreams, err = parseServers(v)
		case keyStubDomains:
			c.StubDomains, err = parseStubDomains(v)
		case keyUpstreamTO:
			c.UpstreamTimeout, err = time.ParseDuration(v)
		case keyCacheSize:
			c.CacheSize, err = strconv.Atoi(v)
		case keyCacheMaxTTL:
			c.CacheMaxTTL, err = time.ParseDuration(v)
		case keyCacheNegMaxTTL:
			c.CacheNegativeMaxTTL, err = time.ParseDuration(v)
		case keyServeStale:
			c.ServeStale, err = time.ParseDuration(v)
		case keyAutopath:
			c.Autopath, err = strconv.ParseBool(v)
		case keyAutopathSearch:
			c.AutopathSearch = nil
			for _, d := range fields(v) {
				c.AutopathSearch = append(c.AutopathSearch, mdns.CanonicalName(d))
			}
		case keyPods:
			c.Pods = PodMode(v)
		case keyLogNamespaces:
			c.LogNamespaces = map[string]bool{}
			for _, ns := range fields(v) {
				c.LogNamespaces[ns] = true
			}
		default:
			if !knownKeys[k] {
				err = errors.New("unknown key")
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
	}
	// Names are compared in lower case, as FQDNs.
	c.Zone = mdns.CanonicalName(c.Zone)
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if _, ok := mdns.IsDomainName(c.Zone); !ok || c.Zone == "." {
		errs = append(errs, fmt.Errorf("zone %q: not a domain name", c.Zone))
	}
	switch c.Pods {
	case PodsDisabled, PodsVerified, PodsInsecure:
	default:
		errs = append(errs, fmt.Errorf("pods %q: must be disabled, verified or insecure", c.Pods))
	}
	if c.UpstreamTimeout <= 0 {
		errs = append(errs, fmt.Errorf("upstream-timeout %s: must be positive", c.UpstreamTimeout))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("cache-size %d: must not be negative", c.CacheSize))
	}
	if c.CacheMaxTTL < 0 || c.CacheNegativeMaxTTL < 0 || c.ServeStale < 0 {
		errs = append(errs, errors.New("cache durations must not be negative"))
	}
	for d := range c.StubDomains {
		if mdns.IsSubDomain(c.Zone, d) {
			errs = append(errs, fmt.Errorf("stub domain %q: inside the cluster zone %q", d, c.Zone))
		}
	}
	return errors.Join(errs...)
}

func parseTTL(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, err
	}
	if n > 86400 {
		return 0, fmt.Errorf("%d s: more than a day", n)
	}
	return uint32(n), nil
}

// fields splits on commas and white space.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// parseServers parses "10.0.0.1, [fd00::1]:5353, 10.0.0.2:53" into host:port
// addresses (port 53 by default). Names are refused: resolving them would need
// the resolver this server is.
func parseServers(s string) ([]string, error) {
	var out []string
	for _, f := range fields(s) {
		if ap, err := netip.ParseAddrPort(f); err == nil {
			out = append(out, ap.String())
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(f, "[]"))
		if err != nil {
			return nil, fmt.Errorf("%q: not an IP address or IP:port", f)
		}
		out = append(out, net.JoinHostPort(a.String(), "53"))
	}
	return out, nil
}

// parseStubDomains parses one stub domain a line: "<domain> <server>...".
func parseStubDomains(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d %q: want \"<domain> <server>...\"", i+1, line)
		}
		if _, ok := mdns.IsDomainName(f[0]); !ok {
			return nil, fmt.Errorf("line %d: %q is not a domain name", i+1, f[0])
		}
		srv, err := parseServers(strings.Join(f[1:], " "))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		out[mdns.CanonicalName(f[0])] = srv
	}
	return out, nil
}
