package dns

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestParseConfig: every key parses; a bad value names its key; the result of
// a failed parse is not used (the caller keeps its configuration).
func TestParseConfig(t *testing.T) {
	got, err := ParseConfig(Defaults(), map[string]string{
		"zone": "K8s.Example", "ttl": "30", "negative-ttl": "10",
		"upstreams":        "10.0.0.2, [fd00::53]:5353 10.0.0.3:53",
		"stub-domains":     "# comment\ncorp.internal 10.1.0.1 10.1.0.2\nAcme.Test. 10.2.0.1:5300\n",
		"upstream-timeout": "1500ms", "cache-size": "50", "cache-max-ttl": "10m", "cache-negative-max-ttl": "1m",
		"serve-stale": "0s", "autopath": "false", "autopath-search": "example.com, lan", "pods": "insecure",
		"log-namespaces": "team-a team-b",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Zone: "k8s.example.", TTL: 30, NegativeTTL: 10,
		Upstreams:       []string{"10.0.0.2:53", "[fd00::53]:5353", "10.0.0.3:53"},
		StubDomains:     map[string][]string{"corp.internal.": {"10.1.0.1:53", "10.1.0.2:53"}, "acme.test.": {"10.2.0.1:5300"}},
		UpstreamTimeout: 1500 * time.Millisecond, CacheSize: 50, CacheMaxTTL: 10 * time.Minute, CacheNegativeMaxTTL: time.Minute,
		ServeStale: 0, Autopath: false, AutopathSearch: []string{"example.com.", "lan."}, Pods: PodsInsecure,
		LogNamespaces: map[string]bool{"team-a": true, "team-b": true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		data map[string]string
		want string
	}{
		{map[string]string{"ttl": "soon"}, "ttl:"},
		{map[string]string{"ttl": "100000"}, "more than a day"},
		{map[string]string{"upstreams": "dns.google"}, "not an IP address"},
		{map[string]string{"stub-domains": "corp.internal"}, "line 1"},
		{map[string]string{"stub-domains": "x.cluster.local 10.0.0.1"}, "inside the cluster zone"},
		{map[string]string{"pods": "maybe"}, "pods \"maybe\""},
		{map[string]string{"cache-size": "-1"}, "must not be negative"},
		{map[string]string{"upstream-timeout": "0s"}, "must be positive"},
		{map[string]string{"colour": "blue"}, "colour: unknown key"},
		{map[string]string{"ttl": "x", "pods": "y"}, "pods"}, // every problem at once
	} {
		if _, err := ParseConfig(Defaults(), tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.data, err, tc.want)
		}
	}
}
