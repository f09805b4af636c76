package noderuntime

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// containerView is what status computation needs to know about one container.
type containerView struct {
	Name         string
	Image        string
	ID           string
	Running      bool
	StartedAt    time.Time
	Ready        bool
	Started      bool
	RestartCount int32
	LastExit     *exitState
	PrevExit     *exitState
	Waiting      string
	WaitMsg      string
	Known        bool // the runtime has tried to start it
}

// podView is the runtime's view of a pod for status computation.
type podView struct {
	SandboxReady bool
	SandboxErr   string
	IPs          []string
	HostIPs      []string
	Containers   map[string]containerView
	Terminating  bool
}

// computeStatus derives the pod status the kubelet would report: phase,
// conditions, IPs and container statuses. It is pure so it can be table-tested.
func computeStatus(pod *corev1.Pod, v podView, now metav1.Time) corev1.PodStatus {
	old := pod.Status
	s := *old.DeepCopy()
	if s.StartTime == nil {
		s.StartTime = &now
	}
	if len(v.HostIPs) > 0 {
		s.HostIP = v.HostIPs[0]
		s.HostIPs = nil
		for _, ip := range v.HostIPs {
			s.HostIPs = append(s.HostIPs, corev1.HostIP{IP: ip})
		}
	}
	if len(v.IPs) > 0 {
		s.PodIP = v.IPs[0]
		s.PodIPs = nil
		for _, ip := range v.IPs {
			s.PodIPs = append(s.PodIPs, corev1.PodIP{IP: ip})
		}
	}

	s.InitContainerStatuses = nil
	initDone := true
	// As the kubelet: once a regular container has run, a restarting sidecar does
	// not put the pod back into initialization (and Pending).
	regularStarted := someStarted(pod, v)
	for _, c := range pod.Spec.InitContainers {
		cv := v.Containers[c.Name]
		cs := containerStatus(c, cv)
		s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if sidecar {
			if (!cv.Running || !cv.Started) && !regularStarted {
				initDone = false
			}
		} else if cv.Running || cv.LastExit == nil || cv.LastExit.ExitCode != 0 {
			initDone = false
		}
	}
	s.ContainerStatuses = nil
	allReady := true
	anyRunning, allTerminated, anyFailed := false, true, false
	for _, c := range pod.Spec.Containers {
		cv := v.Containers[c.Name]
		cs := containerStatus(c, cv)
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
		if !cs.Ready {
			allReady = false
		}
		if cv.Running {
			anyRunning = true
		}
		if cv.Running || cv.LastExit == nil {
			allTerminated = false
		} else if cv.LastExit.ExitCode != 0 {
			anyFailed = true
		}
	}
	for i, c := range pod.Spec.InitContainers {
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if sidecar && !s.InitContainerStatuses[i].Ready {
			allReady = false
		}
	}

	// Phase.
	restarts := func(failed bool) bool {
		switch pod.Spec.RestartPolicy {
		case corev1.RestartPolicyNever:
			return false
		case corev1.RestartPolicyOnFailure:
			return failed
		}
		return true
	}
	switch {
	case old.Phase == corev1.PodSucceeded || old.Phase == corev1.PodFailed:
		s.Phase = old.Phase // terminal phases never change
	case allTerminated && len(pod.Spec.Containers) > 0 && !restarts(anyFailed) && (!anyFailed || pod.Spec.RestartPolicy == corev1.RestartPolicyNever):
		if anyFailed {
			s.Phase = corev1.PodFailed
		} else {
			s.Phase = corev1.PodSucceeded
		}
	case initFailedForGood(pod, v):
		s.Phase = corev1.PodFailed
	case initDone && (anyRunning || someStarted(pod, v)):
		s.Phase = corev1.PodRunning
	default:
		s.Phase = corev1.PodPending
	}
	if s.Phase == corev1.PodFailed || s.Phase == corev1.PodSucceeded {
		allReady = false
	}

	// Conditions.
	cond := func(t corev1.PodConditionType, ok bool, reason string) {
		status := corev1.ConditionFalse
		if ok {
			status = corev1.ConditionTrue
			reason = ""
		}
		setPodCondition(&s, corev1.PodCondition{Type: t, Status: status, Reason: reason}, now)
	}
	cond(corev1.PodReadyToStartContainers, v.SandboxReady, "")
	cond(corev1.PodInitialized, initDone, "ContainersNotInitialized")
	cond(corev1.ContainersReady, allReady && initDone, "ContainersNotReady")
	gatesOK := true
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range old.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			gatesOK = false
		}
	}
	readyReason := "ContainersNotReady"
	if allReady && initDone && !gatesOK {
		readyReason = "ReadinessGatesNotReady"
	}
	cond(corev1.PodReady, allReady && initDone && gatesOK, readyReason)
	return s
}

func someStarted(pod *corev1.Pod, v podView) bool {
	for _, c := range pod.Spec.Containers {
		if cv := v.Containers[c.Name]; cv.Running || cv.LastExit != nil {
			return true
		}
	}
	return false
}

// initFailedForGood: an init container failed and the policy forbids retries.
// Sidecars (restartPolicy Always) are restarted whatever the pod's policy.
func initFailedForGood(pod *corev1.Pod, v podView) bool {
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		return false
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			continue
		}
		cv := v.Containers[c.Name]
		if !cv.Running && cv.LastExit != nil && cv.LastExit.ExitCode != 0 {
			return true
		}
	}
	return false
}

func containerStatus(c corev1.Container, cv containerView) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{
		Name:         c.Name,
		Image:        c.Image,
		ImageID:      "amime-lab://" + c.Image,
		RestartCount: cv.RestartCount,
		Ready:        cv.Running && cv.Ready,
		Started:      ptrBool(cv.Running && cv.Started),
	}
	if cv.ID != "" && (cv.Running || cv.LastExit != nil) {
		cs.ContainerID = "amime://" + cv.ID
	}
	term := func(e *exitState) *corev1.ContainerStateTerminated {
		reason := "Completed"
		if e.ExitCode != 0 {
			reason = "Error"
		}
		return &corev1.ContainerStateTerminated{
			ExitCode: int32(e.ExitCode), Reason: reason, Message: e.Error,
			StartedAt: metav1.NewTime(e.StartedAt), FinishedAt: metav1.NewTime(e.FinishedAt),
			ContainerID: cs.ContainerID,
		}
	}
	switch {
	case cv.Running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(cv.StartedAt)}
		if cv.PrevExit != nil {
			cs.LastTerminationState.Terminated = term(cv.PrevExit)
		}
	case cv.Waiting != "":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: cv.Waiting, Message: cv.WaitMsg}
		if cv.LastExit != nil {
			cs.LastTerminationState.Terminated = term(cv.LastExit)
		}
	case cv.LastExit != nil:
		cs.State.Terminated = term(cv.LastExit)
		if cv.PrevExit != nil {
			cs.LastTerminationState.Terminated = term(cv.PrevExit)
		}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	return cs
}

func ptrBool(b bool) *bool { return &b }

// setPodCondition keeps lastTransitionTime unless the status changes.
func setPodCondition(s *corev1.PodStatus, c corev1.PodCondition, now metav1.Time) {
	for i := range s.Conditions {
		if s.Conditions[i].Type == c.Type {
			if s.Conditions[i].Status == c.Status {
				c.LastTransitionTime = s.Conditions[i].LastTransitionTime
			} else {
				c.LastTransitionTime = now
			}
			c.LastProbeTime = s.Conditions[i].LastProbeTime
			s.Conditions[i] = c
			return
		}
	}
	c.LastTransitionTime = now
	s.Conditions = append(s.Conditions, c)
}

// view snapshots the worker's state for computeStatus.
func (w *podWorker) view() podView {
	v := podView{Containers: map[string]containerView{}, Terminating: w.terminating}
	for _, ip := range w.r.opts.NodeIPs {
		v.HostIPs = append(v.HostIPs, ip.String())
	}
	if w.sandbox != nil && (w.sandbox.CNIDone || w.sandbox.HostNetwork) {
		v.SandboxReady = true
		v.IPs = w.sandbox.IPs
	}
	v.SandboxErr = w.sandboxErr
	for name, c := range w.containers {
		c.mu.Lock()
		id := ""
		if w.sandbox != nil {
			id = w.sandbox.ID[:16] + "-" + name + "-" + itoa(int(c.RestartCount))
		}
		v.Containers[name] = containerView{
			Name: name, Running: c.running, StartedAt: c.startedAt, Ready: c.ready, Started: c.started,
			RestartCount: c.RestartCount, LastExit: c.lastExit, PrevExit: c.prevExit,
			Waiting: c.waiting, WaitMsg: c.waitMsg, Known: true, ID: id,
		}
		c.mu.Unlock()
	}
	return v
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}

// postStatus writes the pod status when it changed. Like the kubelet's status
// manager it sends a patch computed against the status it last saw, so that a
// concurrent writer (the scheduler, another controller adding a readiness-gate
// condition) never makes it fail with a conflict, and it skips a status it has
// already sent while the informer has not caught up yet.
func (w *podWorker) postStatus(ctx context.Context, pod *corev1.Pod) {
	now := metav1.Now()
	s := computeStatus(pod, w.view(), now)
	if w.sandboxErr != "" {
		// Surface sandbox failures the way kubectl describe shows them.
		for i := range s.ContainerStatuses {
			if st := s.ContainerStatuses[i].State.Waiting; st != nil && st.Reason == "ContainerCreating" {
				st.Message = w.sandboxErr
			}
		}
	}
	if apiequality.Semantic.DeepEqual(s, pod.Status) {
		w.lastSent = nil
		return
	}
	if w.lastSent != nil && apiequality.Semantic.DeepEqual(s, *w.lastSent) {
		return
	}
	patch, err := statusPatch(pod, s)
	if err != nil {
		w.log.Error("compute status patch", "err", err)
		return
	}
	if _, err := w.r.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		w.log.Debug("patch pod status", "err", err)
		w.lastSent = nil
		w.kick()
		return
	}
	w.lastSent = &s
}

// statusPatch is a strategic merge patch from the pod's status to s, with the
// pod's UID as precondition so that it never lands on a new pod of the same name.
func statusPatch(pod *corev1.Pod, s corev1.PodStatus) ([]byte, error) {
	oldJSON, err := json.Marshal(corev1.Pod{Status: pod.Status})
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(corev1.Pod{Status: s})
	if err != nil {
		return nil, err
	}
	p, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return nil, err
	}
	m["metadata"] = map[string]any{"uid": string(pod.UID)}
	return json.Marshal(m)
}
