package noderuntime

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	statusT0  = metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	statusNow = metav1.NewTime(time.Date(2025, 1, 2, 3, 10, 0, 0, time.UTC))
)

func ctr(name string) corev1.Container { return corev1.Container{Name: name, Image: "img-" + name} }

func sidecarCtr(name string) corev1.Container {
	c := ctr(name)
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return c
}

// View shorthands.
var (
	vRunning         = containerView{Running: true, Started: true, Ready: true}
	vRunningNotReady = containerView{Running: true, Started: true}
	vNotStarted      = containerView{Running: true} // startup probe pending
)

func vExited(code int) containerView { return containerView{LastExit: &exitState{ExitCode: code}} }

func vCrashLoop(code int) containerView {
	return containerView{LastExit: &exitState{ExitCode: code}, Waiting: "CrashLoopBackOff"}
}

// condSummary maps each condition type to "True" or "False/<reason>".
func condSummary(conds []corev1.PodCondition) map[corev1.PodConditionType]string {
	out := map[corev1.PodConditionType]string{}
	for _, c := range conds {
		s := string(c.Status)
		if c.Reason != "" {
			s += "/" + c.Reason
		}
		out[c.Type] = s
	}
	return out
}

// conds builds the expected summary of the four conditions computeStatus manages.
func conds(sandbox, initialized, containersReady, ready string) map[corev1.PodConditionType]string {
	return map[corev1.PodConditionType]string{
		corev1.PodReadyToStartContainers: sandbox,
		corev1.PodInitialized:            initialized,
		corev1.ContainersReady:           containersReady,
		corev1.PodReady:                  ready,
	}
}

const (
	condTrue        = "True"
	condFalse       = "False"
	notInitialized  = "False/ContainersNotInitialized"
	notReady        = "False/ContainersNotReady"
	gatesNotReadyRs = "False/ReadinessGatesNotReady"
)

func TestComputeStatusPhaseAndConditions(t *testing.T) {
	one := []corev1.Container{ctr("app")}
	two := []corev1.Container{ctr("app"), ctr("helper")}
	gate := []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}
	tests := []struct {
		name       string
		policy     corev1.RestartPolicy
		inits      []corev1.Container
		containers []corev1.Container
		gates      []corev1.PodReadinessGate
		oldPhase   corev1.PodPhase
		oldConds   []corev1.PodCondition
		noSandbox  bool
		view       map[string]containerView
		wantPhase  corev1.PodPhase
		wantConds  map[corev1.PodConditionType]string
	}{
		{
			name: "nothing started, no sandbox", containers: one, noSandbox: true,
			wantPhase: corev1.PodPending, wantConds: conds(condFalse, condTrue, notReady, notReady),
		},
		{
			name: "sandbox ready, container creating", containers: one,
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "running and ready", containers: one, view: map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, condTrue, condTrue),
		},
		{
			name: "running, not ready", containers: one, view: map[string]containerView{"app": vRunningNotReady},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "running, startup probe pending", containers: one, view: map[string]containerView{"app": vNotStarted},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "one of two running and ready", containers: two, view: map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "two running and ready", containers: two, view: map[string]containerView{"app": vRunning, "helper": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, condTrue, condTrue),
		},

		// restartPolicy Never.
		{
			name: "Never, exit 0", policy: corev1.RestartPolicyNever, containers: one, view: map[string]containerView{"app": vExited(0)},
			wantPhase: corev1.PodSucceeded, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Never, exit 1", policy: corev1.RestartPolicyNever, containers: one, view: map[string]containerView{"app": vExited(1)},
			wantPhase: corev1.PodFailed, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Never, one done, one running", policy: corev1.RestartPolicyNever, containers: two,
			view:      map[string]containerView{"app": vExited(0), "helper": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Never, one failed, one running", policy: corev1.RestartPolicyNever, containers: two,
			view:      map[string]containerView{"app": vExited(3), "helper": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Never, one succeeded, one failed", policy: corev1.RestartPolicyNever, containers: two,
			view:      map[string]containerView{"app": vExited(0), "helper": vExited(2)},
			wantPhase: corev1.PodFailed, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Never, both succeeded", policy: corev1.RestartPolicyNever, containers: two,
			view:      map[string]containerView{"app": vExited(0), "helper": vExited(0)},
			wantPhase: corev1.PodSucceeded, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},

		// restartPolicy OnFailure.
		{
			name: "OnFailure, exit 0", policy: corev1.RestartPolicyOnFailure, containers: one, view: map[string]containerView{"app": vExited(0)},
			wantPhase: corev1.PodSucceeded, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "OnFailure, exit 1 restarting", policy: corev1.RestartPolicyOnFailure, containers: one, view: map[string]containerView{"app": vCrashLoop(1)},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "OnFailure, one succeeded, one failed", policy: corev1.RestartPolicyOnFailure, containers: two,
			view:      map[string]containerView{"app": vExited(0), "helper": vExited(1)},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},

		// restartPolicy Always (and the default).
		{
			name: "Always, exit 0", policy: corev1.RestartPolicyAlways, containers: one, view: map[string]containerView{"app": vExited(0)},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Always, crash loop", policy: corev1.RestartPolicyAlways, containers: one, view: map[string]containerView{"app": vCrashLoop(137)},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "default policy, exit 0", containers: one, view: map[string]containerView{"app": vExited(0)},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},

		// Terminal phases are never left.
		{
			name: "Succeeded stays Succeeded", policy: corev1.RestartPolicyNever, containers: one, oldPhase: corev1.PodSucceeded,
			view:      map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodSucceeded, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Failed stays Failed", policy: corev1.RestartPolicyAlways, containers: one, oldPhase: corev1.PodFailed,
			view:      map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodFailed, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "Running can become Succeeded", policy: corev1.RestartPolicyNever, containers: one, oldPhase: corev1.PodRunning,
			view:      map[string]containerView{"app": vExited(0)},
			wantPhase: corev1.PodSucceeded, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},

		// Init containers.
		{
			name: "init not started", inits: []corev1.Container{ctr("init")}, containers: one,
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "init running", inits: []corev1.Container{ctr("init")}, containers: one,
			view:      map[string]containerView{"init": vRunning},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "first init done, second running", inits: []corev1.Container{ctr("init1"), ctr("init2")}, containers: one,
			view:      map[string]containerView{"init1": vExited(0), "init2": vRunning},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "init done, app not started yet", inits: []corev1.Container{ctr("init")}, containers: one,
			view:      map[string]containerView{"init": vExited(0)},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "init done, app running", inits: []corev1.Container{ctr("init1"), ctr("init2")}, containers: one,
			view:      map[string]containerView{"init1": vExited(0), "init2": vExited(0), "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, condTrue, condTrue),
		},
		{
			name: "init failed, Never", policy: corev1.RestartPolicyNever, inits: []corev1.Container{ctr("init")}, containers: one,
			view:      map[string]containerView{"init": vExited(1)},
			wantPhase: corev1.PodFailed, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "second init failed, Never", policy: corev1.RestartPolicyNever, inits: []corev1.Container{ctr("init1"), ctr("init2")}, containers: one,
			view:      map[string]containerView{"init1": vExited(0), "init2": vExited(2)},
			wantPhase: corev1.PodFailed, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "init failed, OnFailure retries", policy: corev1.RestartPolicyOnFailure, inits: []corev1.Container{ctr("init")}, containers: one,
			view:      map[string]containerView{"init": vCrashLoop(1)},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "init failed, Always retries", policy: corev1.RestartPolicyAlways, inits: []corev1.Container{ctr("init")}, containers: one,
			view:      map[string]containerView{"init": vCrashLoop(1)},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "init retried, now running", policy: corev1.RestartPolicyOnFailure, inits: []corev1.Container{ctr("init")}, containers: one,
			view:      map[string]containerView{"init": vRunning},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},

		// Sidecars (init containers with restartPolicy Always).
		{
			name: "sidecar starting", inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vNotStarted},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "sidecar not started at all", inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "sidecar started, app not yet", inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vRunning},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "sidecar and app ready", inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vRunning, "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, condTrue, condTrue),
		},
		{
			name: "sidecar not ready", inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vRunningNotReady, "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "sidecar then regular init", inits: []corev1.Container{sidecarCtr("proxy"), ctr("migrate")}, containers: one,
			view:      map[string]containerView{"proxy": vRunning, "migrate": vRunning},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			name: "sidecar then regular init done, app ready", inits: []corev1.Container{sidecarCtr("proxy"), ctr("migrate")}, containers: one,
			view:      map[string]containerView{"proxy": vRunning, "migrate": vExited(0), "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, condTrue, condTrue),
		},
		{
			// A sidecar restarting after the app started does not send the pod back
			// to Pending (kubelet: HasAnyRegularContainerStarted).
			name: "sidecar restarting after app started", policy: corev1.RestartPolicyAlways,
			inits: []corev1.Container{sidecarCtr("proxy")}, containers: one, oldPhase: corev1.PodRunning,
			view:      map[string]containerView{"proxy": vCrashLoop(137), "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			// Sidecars restart whatever the pod's restartPolicy: a crashed sidecar
			// does not fail a restartPolicy Never pod.
			name: "sidecar crashed, Never", policy: corev1.RestartPolicyNever,
			inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vCrashLoop(1), "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "sidecar crashed before app started, Never", policy: corev1.RestartPolicyNever,
			inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vCrashLoop(1)},
			wantPhase: corev1.PodPending, wantConds: conds(condTrue, notInitialized, notReady, notReady),
		},
		{
			// A not-running sidecar is not ready even if its last probe said so.
			name: "sidecar exited with stale readiness", inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": {Ready: true, Started: true, LastExit: &exitState{ExitCode: 1}}, "app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "app succeeded, sidecar still running, Never", policy: corev1.RestartPolicyNever,
			inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vRunning, "app": vExited(0)},
			wantPhase: corev1.PodSucceeded, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "app failed, sidecar still running, Never", policy: corev1.RestartPolicyNever,
			inits: []corev1.Container{sidecarCtr("proxy")}, containers: one,
			view:      map[string]containerView{"proxy": vRunning, "app": vExited(1)},
			wantPhase: corev1.PodFailed, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},

		// Readiness gates.
		{
			name: "gate condition missing", containers: one, gates: gate,
			view:      map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, condTrue, gatesNotReadyRs),
		},
		{
			name: "gate condition True", containers: one, gates: gate,
			oldConds:  []corev1.PodCondition{{Type: "example.com/gate", Status: corev1.ConditionTrue}},
			view:      map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodRunning,
			wantConds: withCond(conds(condTrue, condTrue, condTrue, condTrue), "example.com/gate", condTrue),
		},
		{
			name: "gate condition False", containers: one, gates: gate,
			oldConds:  []corev1.PodCondition{{Type: "example.com/gate", Status: corev1.ConditionFalse}},
			view:      map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodRunning,
			wantConds: withCond(conds(condTrue, condTrue, condTrue, gatesNotReadyRs), "example.com/gate", condFalse),
		},
		{
			name: "gate condition True, containers not ready", containers: one, gates: gate,
			oldConds:  []corev1.PodCondition{{Type: "example.com/gate", Status: corev1.ConditionTrue}},
			view:      map[string]containerView{"app": vRunningNotReady},
			wantPhase: corev1.PodRunning,
			wantConds: withCond(conds(condTrue, condTrue, notReady, notReady), "example.com/gate", condTrue),
		},
		{
			name: "gate missing and containers not ready", containers: one, gates: gate,
			view:      map[string]containerView{"app": vRunningNotReady},
			wantPhase: corev1.PodRunning, wantConds: conds(condTrue, condTrue, notReady, notReady),
		},
		{
			name: "one of two gates True", containers: one,
			gates:     []corev1.PodReadinessGate{{ConditionType: "a"}, {ConditionType: "b"}},
			oldConds:  []corev1.PodCondition{{Type: "a", Status: corev1.ConditionTrue}},
			view:      map[string]containerView{"app": vRunning},
			wantPhase: corev1.PodRunning,
			wantConds: withCond(conds(condTrue, condTrue, condTrue, gatesNotReadyRs), "a", condTrue),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
				Spec: corev1.PodSpec{
					RestartPolicy:  tt.policy,
					InitContainers: tt.inits,
					Containers:     tt.containers,
					ReadinessGates: tt.gates,
				},
				Status: corev1.PodStatus{Phase: tt.oldPhase, Conditions: tt.oldConds},
			}
			view := podView{SandboxReady: !tt.noSandbox, Containers: tt.view}
			s := computeStatus(pod, view, statusNow)
			if s.Phase != tt.wantPhase {
				t.Errorf("phase = %s, want %s", s.Phase, tt.wantPhase)
			}
			if diff := cmp.Diff(tt.wantConds, condSummary(s.Conditions)); diff != "" {
				t.Errorf("conditions mismatch (-want +got):\n%s", diff)
			}
			if len(s.ContainerStatuses) != len(tt.containers) || len(s.InitContainerStatuses) != len(tt.inits) {
				t.Errorf("got %d container and %d init container statuses, want %d and %d",
					len(s.ContainerStatuses), len(s.InitContainerStatuses), len(tt.containers), len(tt.inits))
			}
		})
	}
}

func withCond(m map[corev1.PodConditionType]string, t corev1.PodConditionType, v string) map[corev1.PodConditionType]string {
	m[t] = v
	return m
}

func TestContainerStatus(t *testing.T) {
	started := time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)
	prevStart, prevEnd := started.Add(-time.Minute), started.Add(-30*time.Second)
	lastStart, lastEnd := started.Add(time.Minute), started.Add(2*time.Minute)
	c := corev1.Container{Name: "app", Image: "busybox:1.36"}
	base := corev1.ContainerStatus{Name: "app", Image: "busybox:1.36", ImageID: "amime-lab://busybox:1.36", Started: ptrBool(false)}
	with := func(f func(*corev1.ContainerStatus)) corev1.ContainerStatus {
		s := *base.DeepCopy()
		f(&s)
		return s
	}
	tests := []struct {
		name string
		view containerView
		want corev1.ContainerStatus
	}{
		{
			name: "unknown container is creating",
			view: containerView{},
			want: with(func(s *corev1.ContainerStatus) {
				s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			}),
		},
		{
			name: "running and ready",
			view: containerView{ID: "0123456789abcdef-app-0", Running: true, StartedAt: started, Ready: true, Started: true},
			want: with(func(s *corev1.ContainerStatus) {
				s.ContainerID = "amime://0123456789abcdef-app-0"
				s.Ready = true
				s.Started = ptrBool(true)
				s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}
			}),
		},
		{
			name: "running, not started, without ID",
			view: containerView{Running: true, StartedAt: started, Ready: true},
			want: with(func(s *corev1.ContainerStatus) {
				s.Ready = true
				s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}
			}),
		},
		{
			name: "running after a restart",
			view: containerView{ID: "id-2", Running: true, StartedAt: started, Started: true, RestartCount: 2,
				PrevExit: &exitState{ExitCode: 1, Error: "boom", StartedAt: prevStart, FinishedAt: prevEnd}},
			want: with(func(s *corev1.ContainerStatus) {
				s.ContainerID = "amime://id-2"
				s.RestartCount = 2
				s.Started = ptrBool(true)
				s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}
				s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
					ExitCode: 1, Reason: "Error", Message: "boom",
					StartedAt: metav1.NewTime(prevStart), FinishedAt: metav1.NewTime(prevEnd), ContainerID: "amime://id-2",
				}
			}),
		},
		{
			name: "crash loop back-off",
			view: containerView{ID: "id-3", RestartCount: 3, Waiting: "CrashLoopBackOff", WaitMsg: "back-off 40s",
				LastExit: &exitState{ExitCode: 2, StartedAt: lastStart, FinishedAt: lastEnd}},
			want: with(func(s *corev1.ContainerStatus) {
				s.ContainerID = "amime://id-3"
				s.RestartCount = 3
				s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s"}
				s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
					ExitCode: 2, Reason: "Error",
					StartedAt: metav1.NewTime(lastStart), FinishedAt: metav1.NewTime(lastEnd), ContainerID: "amime://id-3",
				}
			}),
		},
		{
			name: "image not mapped",
			view: containerView{ID: "id-0", Waiting: ErrImageNotMapped, WaitMsg: "not mapped", Known: true},
			want: with(func(s *corev1.ContainerStatus) {
				s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not mapped"}
			}),
		},
		{
			name: "completed",
			view: containerView{ID: "id-0", Ready: true, Started: true, LastExit: &exitState{ExitCode: 0, StartedAt: lastStart, FinishedAt: lastEnd}},
			want: with(func(s *corev1.ContainerStatus) {
				s.ContainerID = "amime://id-0"
				s.State.Terminated = &corev1.ContainerStateTerminated{
					ExitCode: 0, Reason: "Completed",
					StartedAt: metav1.NewTime(lastStart), FinishedAt: metav1.NewTime(lastEnd), ContainerID: "amime://id-0",
				}
			}),
		},
		{
			name: "terminated after a restart",
			view: containerView{ID: "id-1", RestartCount: 1,
				LastExit: &exitState{ExitCode: 137, Signal: "killed", Error: "shim ended", StartedAt: lastStart, FinishedAt: lastEnd},
				PrevExit: &exitState{ExitCode: 0, StartedAt: prevStart, FinishedAt: prevEnd}},
			want: with(func(s *corev1.ContainerStatus) {
				s.ContainerID = "amime://id-1"
				s.RestartCount = 1
				s.State.Terminated = &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "Error", Message: "shim ended",
					StartedAt: metav1.NewTime(lastStart), FinishedAt: metav1.NewTime(lastEnd), ContainerID: "amime://id-1",
				}
				s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
					ExitCode: 0, Reason: "Completed",
					StartedAt: metav1.NewTime(prevStart), FinishedAt: metav1.NewTime(prevEnd), ContainerID: "amime://id-1",
				}
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := containerStatus(c, tt.view)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("containerStatus() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestComputeStatusContainerStatusesInSpecOrder(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{ctr("i2"), sidecarCtr("i1")},
		Containers:     []corev1.Container{ctr("z"), ctr("a")},
	}}
	s := computeStatus(pod, podView{Containers: map[string]containerView{"a": vRunning, "i2": vExited(0), "i1": vRunning}}, statusNow)
	var names []string
	for _, cs := range s.InitContainerStatuses {
		names = append(names, cs.Name)
	}
	for _, cs := range s.ContainerStatuses {
		names = append(names, cs.Name)
	}
	if diff := cmp.Diff([]string{"i2", "i1", "z", "a"}, names); diff != "" {
		t.Errorf("status order (-want +got):\n%s", diff)
	}
	if s.InitContainerStatuses[0].State.Terminated == nil || s.InitContainerStatuses[1].State.Running == nil ||
		s.ContainerStatuses[0].State.Waiting == nil || s.ContainerStatuses[1].State.Running == nil {
		t.Errorf("states do not follow the view: %+v %+v", s.InitContainerStatuses, s.ContainerStatuses)
	}
}

func TestComputeStatusReplacesStatuses(t *testing.T) {
	// Statuses of containers no longer in the spec are not carried over.
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{Containers: []corev1.Container{ctr("app")}},
		Status: corev1.PodStatus{
			ContainerStatuses:     []corev1.ContainerStatus{{Name: "old"}, {Name: "app", RestartCount: 9}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "gone"}},
		},
	}
	s := computeStatus(pod, podView{Containers: map[string]containerView{"app": vRunning}}, statusNow)
	if len(s.InitContainerStatuses) != 0 {
		t.Errorf("init container statuses = %+v, want none", s.InitContainerStatuses)
	}
	if len(s.ContainerStatuses) != 1 || s.ContainerStatuses[0].Name != "app" || s.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("container statuses = %+v, want only app with restartCount 0", s.ContainerStatuses)
	}
}

func TestComputeStatusIPs(t *testing.T) {
	tests := []struct {
		name        string
		old         corev1.PodStatus
		view        podView
		wantPodIP   string
		wantPodIPs  []corev1.PodIP
		wantHostIP  string
		wantHostIPs []corev1.HostIP
	}{
		{
			name:      "dual stack",
			view:      podView{IPs: []string{"10.244.1.5", "fd00:10:244:1::5"}, HostIPs: []string{"172.30.0.11", "fd00:a:e::b"}},
			wantPodIP: "10.244.1.5", wantPodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}},
			wantHostIP: "172.30.0.11", wantHostIPs: []corev1.HostIP{{IP: "172.30.0.11"}, {IP: "fd00:a:e::b"}},
		},
		{
			name:      "IPv6 only",
			view:      podView{IPs: []string{"fd00:10:244:1::5"}, HostIPs: []string{"fd00:a:e::b"}},
			wantPodIP: "fd00:10:244:1::5", wantPodIPs: []corev1.PodIP{{IP: "fd00:10:244:1::5"}},
			wantHostIP: "fd00:a:e::b", wantHostIPs: []corev1.HostIP{{IP: "fd00:a:e::b"}},
		},
		{
			name:       "no IPs yet",
			view:       podView{HostIPs: []string{"172.30.0.11"}},
			wantHostIP: "172.30.0.11", wantHostIPs: []corev1.HostIP{{IP: "172.30.0.11"}},
		},
		{
			name: "new IPs replace the old ones",
			old: corev1.PodStatus{PodIP: "10.244.9.9", PodIPs: []corev1.PodIP{{IP: "10.244.9.9"}, {IP: "fd00::9"}},
				HostIP: "172.30.0.99", HostIPs: []corev1.HostIP{{IP: "172.30.0.99"}}},
			view:      podView{IPs: []string{"10.244.1.5"}, HostIPs: []string{"172.30.0.11"}},
			wantPodIP: "10.244.1.5", wantPodIPs: []corev1.PodIP{{IP: "10.244.1.5"}},
			wantHostIP: "172.30.0.11", wantHostIPs: []corev1.HostIP{{IP: "172.30.0.11"}},
		},
		{
			name: "reported IPs are kept when the view has none",
			old: corev1.PodStatus{PodIP: "10.244.9.9", PodIPs: []corev1.PodIP{{IP: "10.244.9.9"}},
				HostIP: "172.30.0.99", HostIPs: []corev1.HostIP{{IP: "172.30.0.99"}}},
			view:      podView{},
			wantPodIP: "10.244.9.9", wantPodIPs: []corev1.PodIP{{IP: "10.244.9.9"}},
			wantHostIP: "172.30.0.99", wantHostIPs: []corev1.HostIP{{IP: "172.30.0.99"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ctr("app")}}, Status: tt.old}
			s := computeStatus(pod, tt.view, statusNow)
			if s.PodIP != tt.wantPodIP || s.HostIP != tt.wantHostIP {
				t.Errorf("podIP, hostIP = %q, %q, want %q, %q", s.PodIP, s.HostIP, tt.wantPodIP, tt.wantHostIP)
			}
			if diff := cmp.Diff(tt.wantPodIPs, s.PodIPs); diff != "" {
				t.Errorf("podIPs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantHostIPs, s.HostIPs); diff != "" {
				t.Errorf("hostIPs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestComputeStatusStartTime(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ctr("app")}}}
	s := computeStatus(pod, podView{}, statusNow)
	if s.StartTime == nil || !s.StartTime.Equal(&statusNow) {
		t.Errorf("startTime = %v, want %v", s.StartTime, statusNow)
	}
	pod.Status.StartTime = &statusT0
	s = computeStatus(pod, podView{}, statusNow)
	if s.StartTime == nil || !s.StartTime.Equal(&statusT0) {
		t.Errorf("startTime = %v, want the original %v", s.StartTime, statusT0)
	}
}

func TestComputeStatusConditionTimes(t *testing.T) {
	probe := metav1.NewTime(statusT0.Add(time.Second))
	oldAllTrue := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
		{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: statusT0, LastProbeTime: probe},
	}
	tests := []struct {
		name  string
		gates []corev1.PodReadinessGate
		old   []corev1.PodCondition
		view  map[string]containerView
		want  []corev1.PodCondition
	}{
		{
			name: "new pod: conditions appended in order, all transitioned now",
			view: map[string]containerView{"app": vRunning},
			want: []corev1.PodCondition{
				{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
			},
		},
		{
			name: "unchanged statuses keep their transition time and probe time",
			old:  oldAllTrue,
			view: map[string]containerView{"app": vRunning},
			want: oldAllTrue,
		},
		{
			name: "changed statuses transition now",
			old:  oldAllTrue,
			view: map[string]containerView{"app": vRunningNotReady},
			want: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
				{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: statusT0},
				{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: statusNow},
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: statusNow, LastProbeTime: probe},
			},
		},
		{
			name:  "a reason change alone keeps the transition time",
			gates: []corev1.PodReadinessGate{{ConditionType: "missing"}},
			old: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "old message", LastTransitionTime: statusT0},
			},
			view: map[string]containerView{"app": vRunning},
			want: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ReadinessGatesNotReady", LastTransitionTime: statusT0},
				{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: statusNow},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				Spec:   corev1.PodSpec{Containers: []corev1.Container{ctr("app")}, ReadinessGates: tt.gates},
				Status: corev1.PodStatus{Conditions: tt.old},
			}
			s := computeStatus(pod, podView{SandboxReady: true, Containers: tt.view}, statusNow)
			if diff := cmp.Diff(tt.want, s.Conditions); diff != "" {
				t.Errorf("conditions mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestComputeStatusDoesNotModifyPod(t *testing.T) {
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{Containers: []corev1.Container{ctr("app")}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodPending,
			PodIPs:     []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: statusT0}},
		},
	}
	before := pod.DeepCopy()
	_ = computeStatus(pod, podView{SandboxReady: true, IPs: []string{"10.0.0.2"}, Containers: map[string]containerView{"app": vRunning}}, statusNow)
	if diff := cmp.Diff(before, pod); diff != "" {
		t.Errorf("computeStatus modified the pod (-before +after):\n%s", diff)
	}
}

func TestPodWorkerView(t *testing.T) {
	w := &podWorker{
		r:       &Runtime{opts: Options{}},
		sandbox: &sandboxState{ID: "0123456789abcdef0123", CNIDone: true, IPs: []string{"10.244.1.5"}},
		containers: map[string]*containerState{
			"app": {name: "app", RestartCount: 12, running: true, ready: true, started: true},
		},
		terminating: true,
	}
	v := w.view()
	if !v.SandboxReady || !v.Terminating {
		t.Errorf("view sandboxReady=%v terminating=%v, want both true", v.SandboxReady, v.Terminating)
	}
	if diff := cmp.Diff([]string{"10.244.1.5"}, v.IPs); diff != "" {
		t.Errorf("IPs (-want +got):\n%s", diff)
	}
	got := v.Containers["app"]
	if got.ID != "0123456789abcdef-app-12" || !got.Known || !got.Running || !got.Ready || !got.Started || got.RestartCount != 12 {
		t.Errorf("container view = %+v", got)
	}

	// Before CNI is done the sandbox is not ready and its IPs are not reported.
	w.sandbox.CNIDone = false
	if v := w.view(); v.SandboxReady || v.IPs != nil {
		t.Errorf("view before CNI: sandboxReady=%v IPs=%v", v.SandboxReady, v.IPs)
	}
	// hostNetwork sandboxes are ready without CNI.
	w.sandbox.HostNetwork = true
	if v := w.view(); !v.SandboxReady {
		t.Error("hostNetwork sandbox not ready")
	}
}

func TestItoa(t *testing.T) {
	for _, i := range []int{0, 1, 9, 10, 42, 100, 1234567} {
		if got, want := itoa(i), strconv.Itoa(i); got != want {
			t.Errorf("itoa(%d) = %q, want %q", i, got, want)
		}
	}
}
