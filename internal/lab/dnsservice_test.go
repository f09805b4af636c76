package lab

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestDNSService: kube-dns gets the kubelets' cluster DNS address first, and in
// dual-stack the IPv6 one too, with the family policy to match.
func TestDNSService(t *testing.T) {
	for _, tc := range []struct {
		family string
		ips    string
		policy corev1.IPFamilyPolicy
	}{
		{FamilyIPv4, "10.96.0.10", corev1.IPFamilyPolicySingleStack},
		{FamilyIPv6, "fd00:10:96::a", corev1.IPFamilyPolicySingleStack},
		{FamilyDual, "10.96.0.10,fd00:10:96::a", corev1.IPFamilyPolicyRequireDualStack},
	} {
		l := &Lab{Config: Defaults()}
		l.IPFamily = tc.family
		svc := l.dnsService()
		if got := strings.Join(svc.Spec.ClusterIPs, ","); got != tc.ips || svc.Spec.ClusterIP != l.DNSServiceIP().String() {
			t.Errorf("%s: clusterIPs %s (clusterIP %s), want %s starting with %s", tc.family, got, svc.Spec.ClusterIP, tc.ips, l.DNSServiceIP())
		}
		if *svc.Spec.IPFamilyPolicy != tc.policy || len(svc.Spec.IPFamilies) != len(svc.Spec.ClusterIPs) {
			t.Errorf("%s: policy %s families %v", tc.family, *svc.Spec.IPFamilyPolicy, svc.Spec.IPFamilies)
		}
		if svc.Spec.Selector["k8s-app"] != "kube-dns" || len(svc.Spec.Ports) != 3 {
			t.Errorf("%s: selector %v ports %v", tc.family, svc.Spec.Selector, svc.Spec.Ports)
		}
	}
}
