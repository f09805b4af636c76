package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"amime.dev/amime/internal/ipam"
)

// TestStatusReportsExhaustion: STATUS answers 50 once the node's IPv4 range has
// no free address, and succeeds again when one is released.
func TestStatusReportsExhaustion(t *testing.T) {
	dir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"t","type":"amime","podCIDRs":["10.9.9.0/30","fd00:9::/64"],"dataDir":%q}`, dir)
	args := &skel.CmdArgs{StdinData: []byte(conf)}
	p := &plugin{}
	if err := p.status(args); err != nil {
		t.Fatalf("STATUS on an empty range: %v", err)
	}
	alloc, err := ipam.New(dir, []netip.Prefix{netip.MustParsePrefix("10.9.9.0/30"), netip.MustParsePrefix("fd00:9::/64")})
	if err != nil {
		t.Fatal(err)
	}
	att := ipam.Attachment{ContainerID: "c1", IfName: "eth0"}
	if _, err := alloc.Allocate(att); err != nil {
		t.Fatal(err)
	}
	err = p.status(args)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 50 {
		t.Fatalf("STATUS with the /30 full: %v; want code 50", err)
	}
	if err := alloc.Release(att); err != nil {
		t.Fatal(err)
	}
	if err := p.status(args); err != nil {
		t.Fatalf("STATUS after the release: %v", err)
	}
}
