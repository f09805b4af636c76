package cni

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// conf builds a network configuration from the fields given as JSON members,
// e.g. conf(`"mtu": 1450`); cniVersion, name and type come first unless
// overridden by a later member of the same name.
func conf(members ...string) []byte {
	all := append([]string{`"cniVersion": "1.1.0"`, `"name": "amime"`, `"type": "amime"`}, members...)
	return []byte("{" + strings.Join(all, ", ") + "}")
}

const prevResult = `"prevResult": {
	"cniVersion": "1.1.0",
	"interfaces": [{"name": "bond0", "mac": "02:00:00:00:00:01"}],
	"ips": [{"interface": 0, "address": "192.0.2.10/24", "gateway": "192.0.2.1"}],
	"routes": [{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}]
}`

func TestParseConf(t *testing.T) {
	tests := []struct {
		name  string
		stdin []byte
		// wantCode is the CNI error code, 0 for success; wantMsg are substrings
		// of the error message.
		wantCode uint
		wantMsg  []string
		// For success:
		wantRanges  []string
		wantMTU     int
		wantRoute   int // routeMTU
		wantDataDir string
		wantPrev    bool
	}{
		{
			name:       "dual-stack",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]`, `"mtu": 1450`, `"dataDir": "/run/ipam"`),
			wantRanges: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, wantMTU: 1450, wantDataDir: "/run/ipam",
		},
		{
			name:       "route MTU",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`, `"mtu": 1500`, `"routeMTU": 1450`),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: 1500, wantRoute: 1450, wantDataDir: DefaultDataDir,
		},
		{
			name:       "route MTU equal to the interface's: none",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`, `"mtu": 1450`, `"routeMTU": 1450`),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: 1450, wantDataDir: DefaultDataDir,
		},
		{
			name:       "ipv6 first",
			stdin:      conf(`"podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24"]`, `"mtu": 1430`),
			wantRanges: []string{"fd00:10:244:1::/64", "10.244.1.0/24"}, wantMTU: 1430, wantDataDir: DefaultDataDir,
		},
		{
			name:       "defaults",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: DefaultMTU, wantDataDir: DefaultDataDir,
		},
		{
			name:    "no podCIDRs yet",
			stdin:   conf(),
			wantMTU: 1500, wantDataDir: DefaultDataDir,
		},
		{
			name:       "unknown fields ignored",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`, `"capabilities": {"portMappings": true}`, `"future": 1`),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: 1500, wantDataDir: DefaultDataDir,
		},
		{
			name:       "mtu lower bound",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`, `"mtu": 576`),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: 576, wantDataDir: DefaultDataDir,
		},
		{
			name:       "mtu upper bound",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`, `"mtu": 65535`),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: 65535, wantDataDir: DefaultDataDir,
		},
		{
			name:       "prevResult",
			stdin:      conf(`"podCIDRs": ["10.244.1.0/24"]`, prevResult),
			wantRanges: []string{"10.244.1.0/24"}, wantMTU: 1500, wantDataDir: DefaultDataDir, wantPrev: true,
		},
		{
			name: "bad JSON", stdin: []byte(`{"cniVersion": "1.1.0", `),
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"failed to decode network configuration"},
		},
		{
			name: "empty stdin", stdin: nil,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"failed to decode"},
		},
		{
			name: "mtu of the wrong type", stdin: conf(`"mtu": "1450"`),
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"failed to decode"},
		},
		{
			name: "podCIDRs not a list", stdin: conf(`"podCIDRs": "10.244.1.0/24"`),
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"failed to decode"},
		},
		{
			name: "no cniVersion", stdin: []byte(`{"name": "amime", "type": "amime", "podCIDRs": ["10.244.1.0/24"]}`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "cniVersion" is required`},
		},
		{
			name: "no name", stdin: []byte(`{"cniVersion": "1.1.0", "type": "amime"}`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "name" is required`},
		},
		{
			name: "empty name", stdin: conf(`"name": ""`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "name" is required`},
		},
		{
			name: "not a CIDR", stdin: conf(`"podCIDRs": ["10.244.1.0/24", "10.244.2.1"]`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "podCIDRs[1]"`, `"10.244.2.1" is not a CIDR`},
		},
		{
			name: "garbage CIDR", stdin: conf(`"podCIDRs": ["pods"]`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "podCIDRs[0]"`, "is not a CIDR"},
		},
		{
			name: "host bits set", stdin: conf(`"podCIDRs": ["10.244.1.1/24"]`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "podCIDRs[0]"`, "10.244.1.1/24 has host bits set"},
		},
		{
			name: "ipv6 host bits set", stdin: conf(`"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::1/64"]`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "podCIDRs[1]"`, "has host bits set"},
		},
		{
			name: "two ipv4 ranges", stdin: conf(`"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "podCIDRs[1]"`, "second range of the same IP family"},
		},
		{
			name: "two ipv6 ranges", stdin: conf(`"podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24", "fd00:10:244:2::/64"]`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "podCIDRs[2]"`, "second range of the same IP family"},
		},
		{
			name: "route MTU above the interface's", stdin: conf(`"mtu": 1450`, `"routeMTU": 1500`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "routeMTU"`, "1500 is out of range 576-1450"},
		},
		{
			name: "route MTU too small", stdin: conf(`"routeMTU": 500`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "routeMTU"`, "500 is out of range"},
		},
		{
			name: "mtu too small", stdin: conf(`"mtu": 575`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "mtu"`, "575 is out of range"},
		},
		{
			name: "mtu negative", stdin: conf(`"mtu": -1`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "mtu"`, "-1 is out of range"},
		},
		{
			name: "mtu too large", stdin: conf(`"mtu": 65536`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`field "mtu"`, "65536 is out of range"},
		},
		{
			name: "bad prevResult", stdin: conf(`"prevResult": {"ips": [{"address": "not-an-address"}]}`),
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"failed to parse prevResult"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, cerr := parseConf(tt.stdin)
			if tt.wantCode != 0 {
				if cerr == nil {
					t.Fatalf("parseConf succeeded, want error code %d", tt.wantCode)
				}
				if c != nil {
					t.Errorf("parseConf returned a configuration with an error")
				}
				if cerr.Code != tt.wantCode {
					t.Errorf("error code %d (%v), want %d", cerr.Code, cerr, tt.wantCode)
				}
				for _, s := range tt.wantMsg {
					if !strings.Contains(cerr.Msg, s) {
						t.Errorf("error message %q does not contain %q", cerr.Msg, s)
					}
				}
				return
			}
			if cerr != nil {
				t.Fatalf("parseConf: %v", cerr)
			}
			var got []string
			for _, p := range c.ranges {
				got = append(got, p.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantRanges) {
				t.Errorf("ranges %v, want %v", got, tt.wantRanges)
			}
			if c.MTU != tt.wantMTU || c.RouteMTU != tt.wantRoute || c.DataDir != tt.wantDataDir {
				t.Errorf("mtu %d, routeMTU %d, dataDir %q; want %d, %d, %q", c.MTU, c.RouteMTU, c.DataDir, tt.wantMTU, tt.wantRoute, tt.wantDataDir)
			}
			if c.CNIVersion != "1.1.0" || c.Name != "amime" {
				t.Errorf("cniVersion %q, name %q", c.CNIVersion, c.Name)
			}
			if (c.PrevResult != nil) != tt.wantPrev {
				t.Fatalf("prevResult %v, want one: %v", c.PrevResult, tt.wantPrev)
			}
			if tt.wantPrev {
				prev, err := current.NewResultFromResult(c.PrevResult)
				if err != nil {
					t.Fatal(err)
				}
				if len(prev.Interfaces) != 1 || prev.Interfaces[0].Name != "bond0" || len(prev.IPs) != 1 ||
					prev.IPs[0].Address.String() != "192.0.2.10/24" || len(prev.Routes) != 1 {
					t.Errorf("prevResult parsed as %+v", prev)
				}
			}
		})
	}
}

func TestNeedRanges(t *testing.T) {
	empty := &parsedConf{}
	if cerr := empty.needRanges(); cerr == nil || cerr.Code != types.ErrTryAgainLater || !strings.Contains(cerr.Msg, "try again later") {
		t.Errorf("needRanges without ranges = %v, want code %d", cerr, types.ErrTryAgainLater)
	}
	c, cerr := parseConf(conf(`"podCIDRs": ["fd00:10:244:1::/64"]`))
	if cerr != nil {
		t.Fatal(cerr)
	}
	if cerr := c.needRanges(); cerr != nil {
		t.Errorf("needRanges with a range = %v", cerr)
	}
	c, cerr = parseConf(conf(`"podCIDRs": []`))
	if cerr != nil {
		t.Fatal(cerr)
	}
	if cerr := c.needRanges(); cerr == nil || cerr.Code != types.ErrTryAgainLater {
		t.Errorf("needRanges with an empty podCIDRs = %v", cerr)
	}
}

func TestAsCNIError(t *testing.T) {
	cniErr := types.NewError(types.ErrTryAgainLater, "later", "")
	tests := []struct {
		name     string
		err      error
		wantCode uint
		wantMsg  string
		wantDet  string
	}{
		{"CNI error kept", cniErr, types.ErrTryAgainLater, "later", ""},
		{"wrapped CNI error kept", fmt.Errorf("setup: %w", cniErr), types.ErrTryAgainLater, "later", ""},
		{"other error internal", errors.New("netlink: busy"), types.ErrInternal, "set up pod interface", "netlink: busy"},
	}
	for _, tt := range tests {
		got := asCNIError(tt.err, "set up pod interface")
		if got.Code != tt.wantCode || got.Msg != tt.wantMsg || got.Details != tt.wantDet {
			t.Errorf("%s: asCNIError = %+v, want code %d msg %q details %q", tt.name, got, tt.wantCode, tt.wantMsg, tt.wantDet)
		}
	}
}

func TestHostVethName(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"c1", "c2", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ""} {
		for _, ifname := range []string{"eth0", "eth1", "net1"} {
			name := HostVethName(id, ifname)
			if len(name) != 15 {
				t.Errorf("HostVethName(%q, %q) = %q: %d characters, want 15 (IFNAMSIZ-1)", id, ifname, name, len(name))
			}
			if !strings.HasPrefix(name, "amv") {
				t.Errorf("HostVethName(%q, %q) = %q: want prefix amv", id, ifname, name)
			}
			if strings.Trim(name[3:], "0123456789abcdef") != "" {
				t.Errorf("HostVethName(%q, %q) = %q: not hex after the prefix", id, ifname, name)
			}
			if again := HostVethName(id, ifname); again != name {
				t.Errorf("HostVethName(%q, %q) = %q, then %q", id, ifname, name, again)
			}
			key := id + "/" + ifname
			if other, ok := seen[name]; ok {
				t.Errorf("HostVethName: %s and %s both give %s", other, key, name)
			}
			seen[name] = key
		}
	}
	// Pinned ("amv" and the start of sha256("c1/eth0")): DEL and GC of
	// attachments made by an older plugin must find their veths.
	if got, want := HostVethName("c1", "eth0"), "amvd72e032fedd9"; got != want {
		t.Errorf("HostVethName(c1, eth0) = %s, want %s", got, want)
	}
}
