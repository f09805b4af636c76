package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corelisters "k8s.io/client-go/listers/core/v1"

	"amime.dev/amime/internal/attach"
)

// attacher answers the CNI plugin's reports of new pods (internal/attach):
// it checks the report against the API and the node, then has the policy
// controller program the pod's addresses before ADD returns.
type attacher struct {
	node  string
	pods  corelisters.PodLister
	nodes corelisters.NodeLister
	// program makes the addresses known to the policy dataplane; nil when
	// policy enforcement is off (then there is nothing to wait for).
	program func(ctx context.Context, namespace, name, uid string, ips []netip.Addr) error
	// lookupWait bounds how long a pod the informer has not delivered yet is
	// waited for.
	lookupWait time.Duration
}

func (a *attacher) attach(ctx context.Context, req attach.Request) error {
	pod, err := a.pod(ctx, req.Namespace, req.Name)
	if err != nil {
		return err
	}
	switch {
	case req.UID != "" && string(pod.UID) != req.UID:
		return &attach.RejectedError{Reason: fmt.Sprintf("pod %s/%s has UID %s, not %s", req.Namespace, req.Name, pod.UID, req.UID)}
	case pod.Spec.NodeName != a.node:
		return &attach.RejectedError{Reason: fmt.Sprintf("pod %s/%s is bound to node %q, not %s", req.Namespace, req.Name, pod.Spec.NodeName, a.node)}
	case pod.Spec.HostNetwork:
		return &attach.RejectedError{Reason: fmt.Sprintf("pod %s/%s uses the host network", req.Namespace, req.Name)}
	}
	ranges := a.podCIDRs()
	for _, ip := range req.IPs {
		if !slices.ContainsFunc(ranges, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return &attach.RejectedError{Reason: fmt.Sprintf("address %s of pod %s/%s is outside the pod ranges %v of node %s", ip, req.Namespace, req.Name, ranges, a.node)}
		}
	}
	if a.program == nil {
		return nil
	}
	return a.program(ctx, req.Namespace, req.Name, string(pod.UID), req.IPs)
}

// pod gets the pod from the informer cache, waiting a little for a pod the
// runtime learnt of before this agent's watch did.
func (a *attacher) pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	deadline := time.Now().Add(a.lookupWait)
	for {
		pod, err := a.pods.Pods(namespace).Get(name)
		if err == nil {
			return pod, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, &attach.RejectedError{Reason: fmt.Sprintf("pod %s/%s not found", namespace, name)}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// podCIDRs are the node's pod ranges as its Node object says.
func (a *attacher) podCIDRs() []netip.Prefix {
	n, err := a.nodes.Get(a.node)
	if err != nil {
		return nil
	}
	return toNode(n).PodCIDRs
}
