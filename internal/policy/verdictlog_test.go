package policy

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
)

// ipv4TCP builds an IPv4 header and the start of a TCP header.
func ipv4TCP(src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, 24)
	b[0] = 0x45
	b[9] = 6
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func TestRecordNamesDecidingPolicies(t *testing.T) {
	s := NewSnapshot(modelPods(), modelNamespaces(), []*networkingv1.NetworkPolicy{
		newPolicy("x", "deny", types(in)),
		newPolicy("x", "from-y", selecting("pod", "a"), ingressRule(ports(port(tcp, 80)), nsPeer(labelsSel("ns", "y")))),
	})
	now := time.Unix(0, 0).UTC()
	r, err := Record(s, "node-1", "amime:deny:ingress ", ipv4TCP([4]byte{10, 0, 3, 2}, [4]byte{10, 0, 1, 1}, 40000, 80), now)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.String(); got != "1970-01-01T00:00:00Z node-1 DENY ingress pod=x/a tcp 10.0.3.2:40000 -> 10.0.1.1:80 policies=x/deny,x/from-y" {
		t.Errorf("deny record: %s", got)
	}
	r, err = Record(s, "node-1", "amime:allow:ingress ", ipv4TCP([4]byte{10, 0, 2, 2}, [4]byte{10, 0, 1, 1}, 40000, 80), now)
	if err != nil || strings.Join(r.Policies, ",") != "x/from-y" || r.Verdict != "allow" {
		t.Errorf("allow record: %+v %v", r, err)
	}
	if _, err := Record(s, "node-1", "someone else", ipv4TCP([4]byte{1, 1, 1, 1}, [4]byte{2, 2, 2, 2}, 1, 2), now); err == nil {
		t.Errorf("a foreign prefix was accepted")
	}
	if _, err := Record(s, "node-1", "amime:deny:egress", []byte{0x45, 0}, now); err == nil {
		t.Errorf("a truncated packet was accepted")
	}
	ring := NewLogRing(2)
	for i := 0; i < 3; i++ {
		ring.Add(LogRecord{DstPort: uint16(i)})
	}
	if rs := ring.Records(); len(rs) != 2 || rs[0].DstPort != 1 {
		t.Errorf("ring kept %+v", rs)
	}
}
