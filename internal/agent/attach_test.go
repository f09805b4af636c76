package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"amime.dev/amime/internal/attach"
)

func TestAttacher(t *testing.T) {
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = nodes.Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}}})
	pod := func(name, node string, host bool) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.PodSpec{NodeName: node, HostNetwork: host}}
	}
	_ = pods.Add(pod("a", "n1", false))
	_ = pods.Add(pod("remote", "n2", false))
	_ = pods.Add(pod("host", "n1", true))
	var programmed []string
	a := &attacher{node: "n1", pods: corelisters.NewPodLister(pods), nodes: corelisters.NewNodeLister(nodes), lookupWait: 50 * time.Millisecond,
		program: func(_ context.Context, ns, name, uid string, ips []netip.Addr) error {
			programmed = append(programmed, ns+"/"+name+" "+uid+" "+ips[0].String())
			return nil
		}}
	ips := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  attach.Request
		want string // "" = accepted
	}{
		{"local pod", attach.Request{Namespace: "x", Name: "a", UID: "uid-a", IPs: ips("10.244.1.5", "fd00:10:244:1::5")}, ""},
		{"without UID", attach.Request{Namespace: "x", Name: "a", IPs: ips("10.244.1.5")}, ""},
		{"other UID", attach.Request{Namespace: "x", Name: "a", UID: "old", IPs: ips("10.244.1.5")}, "has UID uid-a, not old"},
		{"other node", attach.Request{Namespace: "x", Name: "remote", IPs: ips("10.244.1.5")}, `bound to node "n2", not n1`},
		{"host network", attach.Request{Namespace: "x", Name: "host", IPs: ips("10.244.1.5")}, "uses the host network"},
		{"outside the ranges", attach.Request{Namespace: "x", Name: "a", IPs: ips("10.244.2.5")}, "address 10.244.2.5 of pod x/a is outside the pod ranges"},
		{"unknown pod", attach.Request{Namespace: "x", Name: "nope", IPs: ips("10.244.1.5")}, "pod x/nope not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			programmed = nil
			err := a.attach(context.Background(), tc.req)
			if tc.want == "" {
				if err != nil || len(programmed) != 1 || !strings.HasPrefix(programmed[0], "x/a uid-a 10.244.1.5") {
					t.Errorf("err %v, programmed %v", err, programmed)
				}
				return
			}
			var rej *attach.RejectedError
			if !errors.As(err, &rej) || !strings.Contains(err.Error(), tc.want) || len(programmed) != 0 {
				t.Errorf("err %v (want rejected with %q), programmed %v", err, tc.want, programmed)
			}
		})
	}
}
