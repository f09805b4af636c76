package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	restclient "k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"amime.dev/amime/internal/golden"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func node(name, ip, cidr string, ready bool) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: []string{cidr}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
		},
	}
}

func pod(name, nodeName, ip string, lbls map[string]string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: nodeName},
		Status:     corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

// proxyResponse answers a fake pod-proxy call with a fixed body.
type proxyResponse struct {
	body []byte
	err  error
}

func (r proxyResponse) DoRaw(context.Context) ([]byte, error) { return r.body, r.err }
func (r proxyResponse) Stream(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(r.body)), r.err
}

func agentDoc(node string, ready bool, proxyErr string) []byte {
	a := Agent{Node: node, RoutingMode: "overlay", Ready: ready, Components: []Component{
		{Name: "routing", Programmed: map[string]int{"routes": 3, "remoteNodes": 2}, LastSync: t0.Add(-5 * time.Second)},
		{Name: "proxy", Programmed: map[string]int{"services": 4, "endpoints": 7}, LastSync: t0.Add(-2 * time.Second), LastError: proxyErr},
		{Name: "fastpath", Programmed: map[string]int{"endpoints": 6, "interfaces": 4}, LastSync: t0.Add(-time.Second)},
	}}
	if !ready {
		a.NotReady = "service proxy has not synced yet"
	}
	b, _ := json.Marshal(a)
	return b
}

func TestCollectAndPrint(t *testing.T) {
	agentLabels := map[string]string{"app.kubernetes.io/name": "amime-agent"}
	dnsLabels := map[string]string{"k8s-app": "kube-dns"}
	two := int32(2)
	cs := fake.NewClientset(
		node("n1", "172.30.0.11", "10.244.0.0/24", true),
		node("n2", "172.30.0.12", "10.244.1.0/24", true),
		node("n3", "172.30.0.13", "10.244.2.0/24", false),
		node("n4", "172.30.0.14", "10.244.3.0/24", false),
		pod("agent-a", "n1", "172.30.0.11", agentLabels, true),
		pod("agent-b", "n2", "172.30.0.12", agentLabels, false),
		pod("agent-c", "n3", "172.30.0.13", agentLabels, false),
		pod("dns-1", "n1", "10.244.0.5", dnsLabels, true),
		pod("dns-2", "n2", "10.244.1.5", dnsLabels, false),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: Namespace},
			Spec: corev1.ServiceSpec{Selector: dnsLabels, ClusterIPs: []string{"10.96.0.10"},
				Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 53, Protocol: corev1.ProtocolTCP}}}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "amime-dns", Namespace: Namespace},
			Spec: appsv1.DeploymentSpec{Replicas: &two, Selector: &metav1.LabelSelector{MatchLabels: dnsLabels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dnsLabels}}},
			Status: appsv1.DeploymentStatus{AvailableReplicas: 1}},
	)
	var asked []string
	cs.PrependProxyReactor("pods", func(a k8stesting.Action) (bool, restclient.ResponseWrapper, error) {
		pa := a.(k8stesting.ProxyGetAction)
		asked = append(asked, pa.GetName()+":"+pa.GetPort()+pa.GetPath())
		switch pa.GetName() {
		case "agent-a":
			return true, proxyResponse{body: agentDoc("n1", true, "")}, nil
		case "agent-b":
			return true, proxyResponse{body: agentDoc("n2", false, "nft: transaction refused")}, nil
		default:
			return true, proxyResponse{err: errors.New("dial tcp 172.30.0.13:9962: connection refused")}, nil
		}
	})
	r, err := Collect(context.Background(), cs, "https://172.30.0.1:6443")
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 3 || !strings.HasSuffix(asked[0], ":9962/status") {
		t.Errorf("agents asked: %v, want the three agent pods' :9962/status", asked)
	}
	if r.DNS.Replicas != 2 || r.DNS.Ready != 1 || r.DNS.Deployment == nil || r.DNS.Deployment.Desired != 2 {
		t.Errorf("DNS report %+v", r.DNS)
	}
	var text bytes.Buffer
	if err := Print(&text, r, t0); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "print", text.String())
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "report-json", string(js)+"\n")
}

func TestCollectWithoutDNS(t *testing.T) {
	cs := fake.NewClientset(node("n1", "172.30.0.11", "10.244.0.0/24", true))
	r, err := Collect(context.Background(), cs, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Nodes[0].AgentError == "" || r.DNS.Error == "" {
		t.Errorf("want errors for the missing agent and DNS, got %+v", r)
	}
	var text bytes.Buffer
	if err := Print(&text, r, t0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "DNS: service kube-system/kube-dns") || !strings.Contains(text.String(), "no amime-agent pod on this node") {
		t.Errorf("output does not say what is missing:\n%s", text.String())
	}
}

func TestAgo(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{0, "<1s"}, {1500 * time.Millisecond, "1s"}, {90 * time.Second, "1m"}, {3 * time.Hour, "3h"}} {
		if got := ago(tt.d); got != tt.want {
			t.Errorf("ago(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
