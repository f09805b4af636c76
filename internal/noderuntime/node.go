package noderuntime

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
)

// Version reported in the Node's nodeInfo: the Kubernetes release of the lab's
// control plane, and amime as the container runtime.
const (
	kubeletVersion = "v1.34.2"
	runtimeVersion = "amime://lab"
	leaseDuration  = 40 * time.Second
	leaseRenew     = 5 * time.Second
	statusInterval = 10 * time.Second
)

func (r *Runtime) nodeLabels() map[string]string {
	l := map[string]string{
		corev1.LabelHostname:   r.opts.NodeName,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: runtime.GOARCH,
		"amime.dev/lab-node":   "true",
	}
	if r.opts.Zone != "" {
		l[corev1.LabelTopologyZone] = r.opts.Zone
		l[corev1.LabelTopologyRegion] = "lab"
	}
	return l
}

// registerNode creates the Node, or takes over an existing one (a restart).
func (r *Runtime) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: r.opts.NodeName, Labels: r.nodeLabels()},
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := r.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("register node %s: %w", r.opts.NodeName, err)
		}
		r.log.Warn("register node, retrying", "err", err)
		time.Sleep(time.Second)
	}
	r.log.Info("node registered")
	return r.updateNodeStatus(ctx)
}

// networkReady reports whether a CNI configuration is present: until then the node
// is not Ready, as with the real kubelet.
func (r *Runtime) networkReady() (bool, string) {
	if _, err := r.cni.loadConfList(); err != nil {
		return false, "container runtime network not ready: " + err.Error()
	}
	return true, ""
}

func (r *Runtime) updateNodeStatus(ctx context.Context) error {
	node, err := r.client.CoreV1().Nodes().Get(ctx, r.opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	status := node.Status.DeepCopy()
	mem := memTotal()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(r.opts.MaxPods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("10Gi"),
	}
	status.Capacity = capacity
	status.Allocatable = capacity
	status.Addresses = nil
	for _, ip := range r.opts.NodeIPs {
		status.Addresses = append(status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	status.Addresses = append(status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: r.opts.NodeName})
	status.DaemonEndpoints.KubeletEndpoint.Port = int32(r.opts.KubeletPort)
	status.NodeInfo = corev1.NodeSystemInfo{
		MachineID: r.opts.NodeName, SystemUUID: r.opts.NodeName, BootID: bootID(),
		KernelVersion: kernelVersion(), OSImage: "amime lab node", OperatingSystem: "linux",
		Architecture: runtime.GOARCH, ContainerRuntimeVersion: runtimeVersion,
		KubeletVersion: kubeletVersion, KubeProxyVersion: "",
	}
	ready, msg := r.networkReady()
	readyCond := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "amime node runtime is posting ready status"}
	if !ready {
		readyCond = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady", Message: msg}
	}
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		readyCond,
	}
	for _, c := range conds {
		setNodeCondition(status, c, now)
	}
	node.Status = *status
	_, err = r.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// setNodeCondition updates heartbeat times and keeps the transition time when the
// status did not change.
func setNodeCondition(s *corev1.NodeStatus, c corev1.NodeCondition, now metav1.Time) {
	c.LastHeartbeatTime = now
	for i := range s.Conditions {
		if s.Conditions[i].Type == c.Type {
			c.LastTransitionTime = s.Conditions[i].LastTransitionTime
			if s.Conditions[i].Status != c.Status {
				c.LastTransitionTime = now
			}
			s.Conditions[i] = c
			return
		}
	}
	c.LastTransitionTime = now
	s.Conditions = append(s.Conditions, c)
}

// heartbeat renews the node Lease and posts node status, as the kubelet does.
func (r *Runtime) heartbeat(ctx context.Context) {
	leaseT := time.NewTicker(leaseRenew)
	statusT := time.NewTicker(statusInterval)
	defer leaseT.Stop()
	defer statusT.Stop()
	r.renewLease(ctx)
	wasReady, _ := r.networkReady()
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaseT.C:
			r.renewLease(ctx)
			// Post status at once when network readiness changes (the CNI config appeared).
			if ready, _ := r.networkReady(); ready != wasReady {
				wasReady = ready
				if err := r.updateNodeStatus(ctx); err != nil {
					r.log.Warn("update node status", "err", err)
				}
			}
		case <-statusT.C:
			if err := r.updateNodeStatus(ctx); err != nil {
				r.log.Warn("update node status", "err", err)
			}
		}
	}
}

func (r *Runtime) renewLease(ctx context.Context) {
	leases := r.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, r.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, nerr := r.client.CoreV1().Nodes().Get(ctx, r.opts.NodeName, metav1.GetOptions{})
		if nerr != nil {
			r.log.Warn("get node for lease owner", "err", nerr)
			return
		}
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: r.opts.NodeName, Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(r.opts.NodeName),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())),
				RenewTime:            &now,
			},
		}
		if _, err := leases.Create(ctx, l, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			r.log.Warn("create lease", "err", err)
		}
		return
	}
	if err != nil {
		r.log.Warn("get lease", "err", err)
		return
	}
	l.Spec.RenewTime = &now
	l.Spec.HolderIdentity = ptr.To(r.opts.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration.Seconds()))
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		r.log.Warn("renew lease", "err", err)
	}
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int64
	fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
	return kb * 1024
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return string(trimNL(b))
}

func kernelVersion() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return string(trimNL(b))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// eventSink posts events with the node's own client.
type eventSink struct{ client kubernetes.Interface }

func (s *eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Create(context.TODO(), e, metav1.CreateOptions{})
}
func (s *eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Update(context.TODO(), e, metav1.UpdateOptions{})
}
func (s *eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Patch(context.TODO(), e.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{})
}

func schemeForEvents() *k8sruntime.Scheme { return scheme.Scheme }
