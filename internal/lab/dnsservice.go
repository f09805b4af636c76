package lab

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// dnsFieldManager owns the clusterIPs of kube-dns, so that the server-side
// apply of deploy/ (which sets no clusterIP) leaves them as they are.
const dnsFieldManager = "amime-lab"

// ensureDNSService creates kube-system/kube-dns, when absent, with the lab's
// cluster DNS addresses: the kubelets' --cluster-dns (host 10 of the primary
// Service range) and, in dual-stack, host 10 of the other range. The manifest
// in deploy/ has no clusterIP (a real cluster's operator picks it), and a
// Service's clusterIP cannot change once allocated, so it must exist first.
func (l *Lab) ensureDNSService(ctx context.Context, cs *kubernetes.Clientset) error {
	_, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get kube-system/kube-dns: %w", err)
	}
	svc := l.dnsService()
	if _, err := cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{FieldManager: dnsFieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create kube-system/kube-dns with clusterIPs %v: %w", svc.Spec.ClusterIPs, err)
	}
	return nil
}

// dnsService is kube-dns as the lab creates it (ports and selector as in
// deploy/20-amime-dns.yaml).
func (l *Lab) dnsService() *corev1.Service {
	var ips []string
	var families []corev1.IPFamily
	for _, p := range l.ServiceCIDRs() {
		ips = append(ips, hostAddr(p, 10).String())
		if p.Addr().Is4() {
			families = append(families, corev1.IPv4Protocol)
		} else {
			families = append(families, corev1.IPv6Protocol)
		}
	}
	policy := corev1.IPFamilyPolicySingleStack
	if len(ips) > 1 {
		policy = corev1.IPFamilyPolicyRequireDualStack
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system",
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "amime-dns"}},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"k8s-app": "kube-dns"},
			ClusterIP:      ips[0],
			ClusterIPs:     ips,
			IPFamilies:     families,
			IPFamilyPolicy: &policy,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
		},
	}
}
