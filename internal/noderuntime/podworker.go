package noderuntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/syncloop"
)

// Container restart back-off, as the kubelet: the first restart is immediate, then
// 10s doubling up to 5 minutes; a container that ran 10 minutes resets it.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// podWorker owns one pod on this node. All changes to the pod's processes and
// sandbox happen in its goroutine; informer events and process exits only kick it.
type podWorker struct {
	r        *Runtime
	ns, name string
	uid      types.UID
	dir      string
	log      *slog.Logger

	kickCh chan struct{}
	stopCh chan struct{}
	once   sync.Once

	loaded     bool
	sandbox    *sandboxState
	sandboxErr string
	// containers is written only by the worker goroutine, under cmu; other
	// goroutines (the kubelet API) read it under cmu through lookup.
	containers map[string]*containerState
	cmu        sync.Mutex

	lastSent     *corev1.PodStatus // the status last patched, until the informer shows it
	terminating  bool
	termDeadline time.Time
	killed       chan struct{}
	filesAt      time.Time
	tokenExpiry  map[string]time.Time
}

func newPodWorker(r *Runtime, ns, name string, uid types.UID) *podWorker {
	return &podWorker{
		r: r, ns: ns, name: name, uid: uid,
		dir:         filepath.Join(r.podsDir(), string(uid)),
		log:         r.log.With("pod", ns+"/"+name),
		kickCh:      make(chan struct{}, 1),
		stopCh:      make(chan struct{}),
		containers:  map[string]*containerState{},
		tokenExpiry: map[string]time.Time{},
	}
}

func (w *podWorker) kick() {
	syncloop.Signal(w.kickCh)
}

func (w *podWorker) stop() { w.once.Do(func() { close(w.stopCh) }) }

func (w *podWorker) run() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if done := w.sync(); done {
			w.stopProbes()
			w.r.workerDone(w.uid)
			return
		}
		select {
		case <-w.stopCh:
			w.stopProbes()
			return
		case <-w.kickCh:
		case <-t.C:
		}
	}
}

func (w *podWorker) stopProbes() {
	for _, c := range w.containers {
		c.mu.Lock()
		if c.probes != nil {
			c.probes.stop()
			c.probes = nil
		}
		c.mu.Unlock()
	}
}

// currentPod returns the pod from the informer cache, or nil when it is gone
// (or replaced by a pod of the same name with another UID).
func (w *podWorker) currentPod() *corev1.Pod {
	pod, err := w.r.podLister.Pods(w.ns).Get(w.name)
	if err != nil || pod.UID != w.uid {
		return nil
	}
	return pod
}

// sync moves the pod one step towards its desired state; it returns true once the
// pod is gone and everything it had is cleaned up.
func (w *podWorker) sync() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w.loadOnce()
	pod := w.currentPod()
	if pod == nil {
		// Gone from the API (force-deleted, or our own final delete): kill and clean.
		w.killAll(2 * time.Second)
		w.teardownSandbox(ctx)
		if err := os.RemoveAll(w.dir); err != nil {
			w.log.Warn("remove pod directory", "err", err)
		}
		return true
	}
	w.pollContainers()
	if pod.DeletionTimestamp != nil {
		return w.terminate(ctx, pod)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		// Terminal: the containers are done; release the network but keep logs.
		w.killAll(time.Second)
		w.teardownSandbox(ctx)
		return false
	}
	t0 := time.Now()
	if err := w.ensureSandbox(ctx, pod); err != nil {
		w.sandboxErr = err.Error()
		w.log.Warn("pod sandbox", "err", err)
		w.r.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
		w.postStatus(ctx, pod)
		return false
	}
	w.sandboxErr = ""
	t1 := time.Now()
	w.log.Debug("sandbox ready", "took", t1.Sub(t0))
	if err := w.writePodFiles(ctx, pod); err != nil {
		w.log.Warn("pod files", "err", err)
	}
	t2 := time.Now()
	w.syncContainers(ctx, pod)
	t3 := time.Now()
	w.postStatus(ctx, pod)
	w.log.Debug("pod synced", "files", t2.Sub(t1), "containers", t3.Sub(t2), "status", time.Since(t3))
	return false
}

func (w *podWorker) loadOnce() {
	if w.loaded {
		return
	}
	w.loaded = true
	var sb sandboxState
	if err := readJSON(filepath.Join(w.dir, "sandbox.json"), &sb); err == nil {
		w.sandbox = &sb
	}
	entries, _ := os.ReadDir(filepath.Join(w.dir, "containers"))
	for _, e := range entries {
		c := w.container(e.Name(), false)
		c.load()
	}
}

// container returns the state of a container, creating it on first use.
func (w *podWorker) container(name string, init bool) *containerState {
	c, ok := w.containers[name]
	if !ok {
		c = &containerState{name: name, dir: filepath.Join(w.dir, "containers", name), started: true}
		w.cmu.Lock()
		w.containers[name] = c
		w.cmu.Unlock()
	}
	if init {
		c.init = true
	}
	return c
}

// lookup returns a container for readers outside the worker goroutine.
func (w *podWorker) lookup(name string) (*containerState, bool) {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	c, ok := w.containers[name]
	return c, ok
}

func (w *podWorker) pollContainers() {
	for _, c := range w.containers {
		c.mu.Lock()
		if c.poll() {
			w.log.Info("container exited", "container", c.name, "exitCode", c.lastExit.ExitCode)
			if c.probes != nil {
				c.probes.stop()
				c.probes = nil
			}
			c.ready = false
		}
		c.mu.Unlock()
	}
}

func sandboxID(uid types.UID, created time.Time) string {
	h := sha256.Sum256([]byte(string(uid) + created.String()))
	return hex.EncodeToString(h[:])
}

// ensureSandbox creates the pod's network namespace and calls CNI ADD once.
func (w *podWorker) ensureSandbox(ctx context.Context, pod *corev1.Pod) error {
	if w.sandbox != nil && (w.sandbox.CNIDone || w.sandbox.HostNetwork) {
		return nil
	}
	if w.sandbox == nil {
		now := time.Now()
		sb := &sandboxState{
			Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID),
			ID: sandboxID(pod.UID, now), HostNetwork: pod.Spec.HostNetwork, Created: now,
		}
		if !sb.HostNetwork {
			sb.Netns = w.r.opts.PodNetnsPrefix + string(pod.UID)
		} else {
			for _, ip := range w.r.opts.NodeIPs {
				sb.IPs = append(sb.IPs, ip.String())
			}
		}
		if err := os.MkdirAll(w.dir, 0o755); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(w.dir, "sandbox.json"), sb); err != nil {
			return err
		}
		w.sandbox = sb
	}
	if w.sandbox.HostNetwork {
		return nil
	}
	if ok, msg := w.r.networkReady(); !ok {
		return fmt.Errorf("%s", msg)
	}
	if err := netns.AddIn(w.r.opts.HostMountNS, w.sandbox.Netns); err != nil {
		return err
	}
	addStart := time.Now()
	ips, err := w.r.cni.add(ctx, w.sandbox)
	if err != nil {
		// Undo the half-done ADD so that a retry starts clean and nothing leaks.
		if derr := w.r.cni.del(ctx, w.sandbox); derr != nil {
			w.log.Warn("CNI DEL after failed ADD", "err", derr)
		}
		return err
	}
	w.sandbox.IPs = ips
	w.sandbox.CNIDone = true
	w.log.Info("pod network ready", "ips", ips, "cniAdd", time.Since(addStart).Round(time.Millisecond))
	return writeJSON(filepath.Join(w.dir, "sandbox.json"), w.sandbox)
}

// sandboxSnapshot returns the persisted sandbox of a pod with a network of its own.
func (w *podWorker) sandboxSnapshot() (*sandboxState, error) {
	var sb sandboxState
	if err := readJSON(filepath.Join(w.dir, "sandbox.json"), &sb); err != nil {
		return nil, err
	}
	if sb.HostNetwork {
		return nil, fmt.Errorf("pod uses the node's network; there is no CNI attachment to check")
	}
	if !sb.CNIDone {
		return nil, fmt.Errorf("pod network is not set up")
	}
	return &sb, nil
}

// teardownSandbox releases the pod's network (CNI DEL, namespace).
func (w *podWorker) teardownSandbox(ctx context.Context) {
	sb := w.sandbox
	if sb == nil || sb.HostNetwork || sb.Netns == "" {
		return
	}
	if sb.CNIDone || netns.Exists(sb.Netns) {
		if err := w.r.cni.del(ctx, sb); err != nil {
			w.log.Warn("CNI DEL", "err", err)
		}
	}
	if err := netns.DeleteIn(w.r.opts.HostMountNS, sb.Netns); err != nil {
		w.log.Warn("delete pod network namespace", "err", err)
	}
	sb.CNIDone = false
	sb.Netns = ""
	_ = writeJSON(filepath.Join(w.dir, "sandbox.json"), sb)
}

func (w *podWorker) killAll(grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range w.containers {
		if !c.running {
			continue
		}
		wg.Add(1)
		go func(c *containerState) {
			defer wg.Done()
			c.kill(grace)
		}(c)
	}
	wg.Wait()
	w.pollContainers()
}

// syncContainers runs init containers in order, then the app containers, and
// applies the restart policy with back-off.
func (w *podWorker) syncContainers(ctx context.Context, pod *corev1.Pod) {
	policy := pod.Spec.RestartPolicy
	for i := range pod.Spec.InitContainers {
		ic := &pod.Spec.InitContainers[i]
		c := w.container(ic.Name, true)
		sidecar := ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if sidecar {
			w.syncOne(ctx, pod, ic, c, corev1.RestartPolicyAlways)
			if !c.running || !c.started {
				return
			}
			continue
		}
		if c.lastExit != nil && c.lastExit.ExitCode == 0 && !c.running {
			continue // completed
		}
		p := policy
		if p == corev1.RestartPolicyAlways {
			p = corev1.RestartPolicyOnFailure // init containers retry only on failure
		}
		w.syncOne(ctx, pod, ic, c, p)
		return // the next init container waits for this one
	}
	for i := range pod.Spec.Containers {
		sc := &pod.Spec.Containers[i]
		w.syncOne(ctx, pod, sc, w.container(sc.Name, false), policy)
	}
}

// syncOne starts, restarts or leaves one container.
func (w *podWorker) syncOne(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *containerState, policy corev1.RestartPolicy) {
	c.mu.Lock()
	livenessFailure := c.livenessFailure
	if c.running && c.probes == nil {
		// Adopted from a previous run: resume probing, and keep the readiness the
		// pod last reported so that a node runtime restart does not drop traffic.
		c.started = true
		c.ready = spec.ReadinessProbe == nil || reportedReady(pod, c.name)
		c.probes = w.startProbes(pod, spec, c)
	}
	c.mu.Unlock()
	if c.running {
		if livenessFailure != "" {
			w.log.Info("liveness probe failed, restarting container", "container", c.name, "reason", livenessFailure)
			w.r.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Container %s failed liveness probe, will be restarted", c.name)
			c.kill(gracePeriod(pod))
			w.pollContainers()
		} else {
			return
		}
	}
	if c.lastExit != nil {
		restart := policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && c.lastExit.ExitCode != 0)
		if !restart {
			return
		}
		now := time.Now()
		if c.lastExit.FinishedAt.Sub(c.lastExit.StartedAt) > backoffReset {
			c.Backoff = 0
		}
		if c.nextStart.IsZero() {
			c.nextStart = c.lastExit.FinishedAt.Add(c.Backoff)
		}
		if now.Before(c.nextStart) {
			c.waiting = "CrashLoopBackOff"
			c.waitMsg = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", c.Backoff, c.name, pod.Name, pod.Namespace, pod.UID)
			return
		}
		c.nextStart = time.Time{}
		if c.Backoff == 0 {
			c.Backoff = backoffInitial
		} else if c.Backoff *= 2; c.Backoff > backoffMax {
			c.Backoff = backoffMax
		}
		c.RestartCount++
	}
	w.startContainer(ctx, pod, spec, c)
}

func reportedReady(pod *corev1.Pod, name string) bool {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for _, cs := range list {
			if cs.Name == name {
				return cs.Ready
			}
		}
	}
	return false
}

func gracePeriod(pod *corev1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

func (w *podWorker) startContainer(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *containerState) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		w.log.Error("container directory", "err", err)
		return
	}
	argv, err := containerArgv(spec, w.r.opts.Bin, w.r.opts.PodBin, nil)
	if err != nil {
		if c.waiting != ErrImageNotMapped {
			w.r.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %v", spec.Image, err)
		}
		c.waiting, c.waitMsg = ErrImageNotMapped, err.Error()
		return
	}
	env, err := w.containerEnv(ctx, pod, spec)
	if err != nil {
		c.waiting, c.waitMsg = "CreateContainerConfigError", err.Error()
		return
	}
	lookup := envLookup(env)
	for i := range argv {
		argv[i] = expandVars(argv[i], lookup)
	}
	mounts, err := w.containerMounts(pod, spec)
	if err != nil {
		c.waiting, c.waitMsg = "CreateContainerConfigError", err.Error()
		return
	}
	hostname, _ := podHostname(pod, w.r.opts.ClusterDomain)
	s := &shimSpec{Argv: argv, Env: env, Dir: spec.WorkingDir, Mounts: mounts, CreatedLog: w.r.opts.CreatedLog}
	if !pod.Spec.HostNetwork {
		s.Hostname = hostname
	}
	netnsName := ""
	if !pod.Spec.HostNetwork {
		netnsName = w.sandbox.Netns
	}
	c.ImageRef = spec.Image
	if err := c.start(w.r.opts.PodBin, s, netnsName, !pod.Spec.HostNetwork, w.kick); err != nil {
		c.waiting, c.waitMsg = "RunContainerError", err.Error()
		w.log.Error("start container", "container", c.name, "err", err)
		return
	}
	w.log.Info("container started", "container", c.name, "argv", argv, "restartCount", c.RestartCount)
	if c.RestartCount == 0 {
		w.r.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s", c.name)
	}
	c.mu.Lock()
	c.started = spec.StartupProbe == nil
	c.ready = spec.ReadinessProbe == nil && c.started
	c.probes = w.startProbes(pod, spec, c)
	c.mu.Unlock()
	if spec.Lifecycle != nil && spec.Lifecycle.PostStart != nil {
		go func() {
			if err := w.runHandler(pod, spec, c, spec.Lifecycle.PostStart, 30*time.Second); err != nil {
				w.log.Warn("postStart hook failed", "container", c.name, "err", err)
			}
		}()
	}
}

// terminate deletes the pod gracefully: preStop hooks and SIGTERM, SIGKILL after
// the grace period, then the network is released and the pod object removed.
// Meanwhile the pod keeps running and reporting status, so that its endpoints
// stay around as terminating, as in a real cluster.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod) bool {
	if !w.terminating {
		w.terminating = true
		grace := gracePeriod(pod)
		w.termDeadline = time.Now().Add(grace)
		w.killed = make(chan struct{})
		w.log.Info("terminating pod", "grace", grace)
		specs := map[string]*corev1.Container{}
		for i := range pod.Spec.Containers {
			specs[pod.Spec.Containers[i].Name] = &pod.Spec.Containers[i]
		}
		for i := range pod.Spec.InitContainers {
			specs[pod.Spec.InitContainers[i].Name] = &pod.Spec.InitContainers[i]
		}
		go func() {
			defer close(w.killed)
			defer w.kick()
			var wg sync.WaitGroup
			for _, c := range w.containers {
				if !c.running {
					continue
				}
				wg.Add(1)
				go func(c *containerState) {
					defer wg.Done()
					if s := specs[c.name]; s != nil && s.Lifecycle != nil && s.Lifecycle.PreStop != nil {
						if err := w.runHandler(pod, s, c, s.Lifecycle.PreStop, time.Until(w.termDeadline)); err != nil {
							w.log.Warn("preStop hook failed", "container", c.name, "err", err)
						}
					}
					c.kill(max(time.Until(w.termDeadline), 0))
				}(c)
			}
			wg.Wait()
		}()
	}
	select {
	case <-w.killed:
	default:
		w.postStatus(ctx, pod)
		return false
	}
	w.pollContainers()
	w.stopProbes()
	w.teardownSandbox(ctx)
	w.postStatus(ctx, pod)
	// The final delete, with the UID as precondition as the kubelet does.
	err := w.r.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.log.Warn("final delete of pod", "err", err)
		return false
	}
	if err := os.RemoveAll(w.dir); err != nil {
		w.log.Warn("remove pod directory", "err", err)
	}
	return true
}
