package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"amime.dev/amime/internal/ipam"
)

// TestStatusReportsExhaustion: STATUS answers 50 once one of the node's
// ranges has no free address, and succeeds again when one is released.
func TestStatusReportsExhaustion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ranges []string
		pods   int // that fill the smaller range
	}{
		{"IPv4 /30", []string{"10.9.9.0/30", "fd00:9::/64"}, 1},
		{"IPv6 /126", []string{"10.9.9.0/24", "fd00:9::/126"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"t","type":"amime","podCIDRs":[%q,%q],"dataDir":%q}`, tc.ranges[0], tc.ranges[1], dir)
			args := &skel.CmdArgs{StdinData: []byte(conf)}
			p := &plugin{}
			if err := p.status(args); err != nil {
				t.Fatalf("STATUS on empty ranges: %v", err)
			}
			alloc, err := ipam.New(dir, []netip.Prefix{netip.MustParsePrefix(tc.ranges[0]), netip.MustParsePrefix(tc.ranges[1])})
			if err != nil {
				t.Fatal(err)
			}
			var att ipam.Attachment
			for i := range tc.pods {
				if err := p.status(args); err != nil {
					t.Fatalf("STATUS with %d of %d in use: %v", i, tc.pods, err)
				}
				att = ipam.Attachment{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}
				if _, err := alloc.Allocate(att); err != nil {
					t.Fatal(err)
				}
			}
			err = p.status(args)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != 50 {
				t.Fatalf("STATUS with the range full: %v; want code 50", err)
			}
			if err := alloc.Release(att); err != nil {
				t.Fatal(err)
			}
			if err := p.status(args); err != nil {
				t.Fatalf("STATUS after the release: %v", err)
			}
		})
	}
}

// TestStatusNeedsTheAgent: with an agent socket configured, STATUS answers 50
// while nothing listens there, and succeeds once the agent does.
func TestStatusNeedsTheAgent(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "agent.sock")
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"t","type":"amime","podCIDRs":["10.9.9.0/24"],"dataDir":%q,"agentSocket":%q}`, dir, socket)
	args := &skel.CmdArgs{StdinData: []byte(conf)}
	p := &plugin{}
	err := p.status(args)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 50 || !strings.Contains(te.Msg, "agent does not answer") {
		t.Fatalf("STATUS without the agent: %v; want code 50 naming the agent", err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := p.status(args); err != nil {
		t.Fatalf("STATUS with the agent listening: %v", err)
	}
}
