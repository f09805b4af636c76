package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"
)

func indexer() cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// TestAttachProgramsBeforeTheStatus: the addresses the CNI plugin reports for
// a pod whose status has none yet are programmed (known, and isolated by the
// pod's policies) by the sync Attach waits for; the status takes over when it
// comes; a report for a pod of another UID is ignored.
func TestAttachProgramsBeforeTheStatus(t *testing.T) {
	pods, nss, nps := indexer(), indexer(), indexer()
	_ = nss.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	_ = nps.Add(newPolicy("x", "deny", types(in, eg)))
	newPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "new", UID: "u1", ResourceVersion: "1"},
		Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	_ = pods.Add(newPod)
	fake := knftables.NewFake(knftables.InetFamily, Table)
	c := NewController(RenderConfig{NodeName: "node-1", LogGroup: DefaultLogGroup}, NewDataplane(fake, DefaultLogGroup),
		corelisters.NewPodLister(pods), corelisters.NewNamespaceLister(nss), networkinglisters.NewNetworkPolicyLister(nps),
		nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.SetPodCIDRs(func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")} })
	ctx := context.Background()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := elementsOf(fake, "known-v4"); slices.Contains(got, "10.0.1.5") {
		t.Fatalf("known before the report: %v", got)
	}

	// Attach waits for a sync that starts after it: none has yet.
	done := make(chan error, 1)
	go func() { done <- c.Attach(ctx, "x", "new", "u1", []netip.Addr{netip.MustParseAddr("10.0.1.5")}) }()
	select {
	case err := <-done:
		t.Fatalf("Attach returned before any sync: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The kick Attach sends is what the sync loop would act on.
	select {
	case <-c.kick:
	case <-time.After(time.Second):
		t.Fatal("Attach did not kick the sync loop")
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := elementsOf(fake, "known-v4"); !slices.Contains(got, "10.0.1.5") {
		t.Errorf("known-v4 %v lacks the reported address", got)
	}
	for _, m := range []string{"ingress-v4", "egress-v4"} {
		if fake.Table.Maps[m].FindElement("10.0.1.5") == nil {
			t.Errorf("%s lacks the reported address: the default-deny policy does not isolate it", m)
		}
	}

	// The status takes over (and the report is forgotten).
	withIP := newPod.DeepCopy()
	withIP.ResourceVersion, withIP.Status.PodIPs, withIP.Status.PodIP = "2", []corev1.PodIP{{IP: "10.0.1.6"}}, "10.0.1.6"
	_ = pods.Update(withIP)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := elementsOf(fake, "known-v4"); slices.Contains(got, "10.0.1.5") || !slices.Contains(got, "10.0.1.6") {
		t.Errorf("known-v4 %v: want the status's address only", got)
	}
	if len(c.attached) != 0 {
		t.Errorf("attachments left: %v", c.attached)
	}

	// A report naming another UID (a pod of the same name, recreated) is not used.
	_ = pods.Update(newPod)
	ctx2, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	go func() { done <- c.Attach(ctx2, "x", "new", "old-uid", []netip.Addr{netip.MustParseAddr("10.0.1.7")}) }()
	<-c.kick
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := elementsOf(fake, "known-v4"); slices.Contains(got, "10.0.1.7") {
		t.Errorf("known-v4 %v holds the address reported for another UID", got)
	}
}

// recordingGate records the gate calls with whether the pod's ingress rules
// were programmed at the time.
type recordingGate struct {
	fake       *failingFake
	calls      []string
	failNarrow bool
}

func (g *recordingGate) call(what string, unselected map[netip.Addr]bool) {
	isolated := false
	if tbl := g.fake.Table; tbl != nil && tbl.Maps["ingress-v4"] != nil {
		isolated = tbl.Maps["ingress-v4"].FindElement("10.0.1.5") != nil
	}
	g.calls = append(g.calls, fmt.Sprintf("%s %d isolated=%t", what, len(unselected), isolated))
}

func (g *recordingGate) Narrow(u map[netip.Addr]bool) error {
	g.call("narrow", u)
	if g.failNarrow {
		return errors.New("injected failure")
	}
	return nil
}

func (g *recordingGate) Widen(u map[netip.Addr]bool) { g.call("widen", u) }

// TestGateAroundTheRules: a pod a new policy selects leaves the gate before
// its rules are programmed and nothing widens it while they are not.
func TestGateAroundTheRules(t *testing.T) {
	pods, nss, nps := indexer(), indexer(), indexer()
	_ = nss.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	_ = pods.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p", UID: "u1"},
		Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.1.5", PodIPs: []corev1.PodIP{{IP: "10.0.1.5"}}}})
	fake := &failingFake{Fake: knftables.NewFake(knftables.InetFamily, Table)}
	c := NewController(RenderConfig{NodeName: "node-1", LogGroup: DefaultLogGroup}, NewDataplane(fake, DefaultLogGroup),
		corelisters.NewPodLister(pods), corelisters.NewNamespaceLister(nss), networkinglisters.NewNetworkPolicyLister(nps),
		nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	g := &recordingGate{fake: fake}
	c.SetGate(g)
	ctx := context.Background()
	step := func(name string, wantErr bool, want ...string) {
		t.Helper()
		g.calls = nil
		if err := c.Sync(ctx); (err != nil) != wantErr {
			t.Fatalf("%s: sync error %v", name, err)
		}
		if diff := cmp.Diff(want, g.calls); diff != "" {
			t.Errorf("%s: gate calls (-want +got):\n%s", name, diff)
		}
	}
	step("no policies", false, "narrow 1 isolated=false", "widen 1 isolated=false")
	_ = nps.Add(newPolicy("x", "deny", types(in)))
	fake.fail = true
	step("a policy selects the pod, the rules fail", true, "narrow 0 isolated=false")
	fake.fail = false
	step("the rules programmed", false, "narrow 0 isolated=false", "widen 0 isolated=true")
	_ = nps.Delete(newPolicy("x", "deny", types(in)))
	g.failNarrow = true
	step("the gate fails: nothing is programmed", true, "narrow 1 isolated=true")
	if c.Healthy() == nil {
		t.Error("healthy after a failed narrowing")
	}
	g.failNarrow = false
	step("the policy gone", false, "narrow 1 isolated=true", "widen 1 isolated=false")
}
