package noderuntime

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"amime.dev/amime/internal/nsenter"
)

// probeSet runs the probes of one running container.
type probeSet struct {
	cancel context.CancelFunc
}

func (p *probeSet) stop() { p.cancel() }

// startProbes starts the container's startup, readiness and liveness probes. Each
// result updates the container state and kicks the pod worker.
func (w *podWorker) startProbes(pod *corev1.Pod, spec *corev1.Container, c *containerState) *probeSet {
	ctx, cancel := context.WithCancel(context.Background())
	ps := &probeSet{cancel: cancel}
	startupDone := make(chan struct{})
	if spec.StartupProbe == nil {
		close(startupDone)
	} else {
		go w.probeLoop(ctx, pod, spec, c, spec.StartupProbe, func(ok bool, msg string) bool {
			if ok {
				c.mu.Lock()
				c.started = true
				c.mu.Unlock()
				close(startupDone)
				w.kick()
				return false // a startup probe stops after its first success
			}
			c.mu.Lock()
			c.livenessFailure = "startup probe failed: " + msg
			c.mu.Unlock()
			w.kick()
			return false
		}, nil)
	}
	if spec.ReadinessProbe != nil {
		go w.probeLoop(ctx, pod, spec, c, spec.ReadinessProbe, func(ok bool, _ string) bool {
			c.mu.Lock()
			changed := c.ready != ok
			c.ready = ok
			c.mu.Unlock()
			if changed {
				w.kick()
			}
			return true
		}, startupDone)
	}
	if spec.LivenessProbe != nil {
		go w.probeLoop(ctx, pod, spec, c, spec.LivenessProbe, func(ok bool, msg string) bool {
			if ok {
				return true
			}
			c.mu.Lock()
			c.livenessFailure = msg
			c.mu.Unlock()
			w.r.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "Liveness probe failed: %s", msg)
			w.kick()
			return false
		}, startupDone)
	}
	return ps
}

// probeLoop runs one probe with the kubelet's timing and thresholds. report gets
// each threshold-crossing result and says whether to keep probing.
func (w *podWorker) probeLoop(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *containerState, p *corev1.Probe, report func(ok bool, msg string) bool, after <-chan struct{}) {
	if after != nil {
		select {
		case <-after:
		case <-ctx.Done():
			return
		}
	}
	period := secondsOr(p.PeriodSeconds, 10)
	timeout := secondsOr(p.TimeoutSeconds, 1)
	success := int(max(p.SuccessThreshold, 1))
	failure := int(max(p.FailureThreshold, 3))
	select {
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	case <-ctx.Done():
		return
	}
	var okRun, failRun int
	last := -1 // -1 unknown, 0 failed, 1 ok
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		err := w.runProbe(ctx, pod, spec, c, &p.ProbeHandler, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
			if okRun >= success && last != 1 {
				last = 1
				if !report(true, "") {
					return
				}
			}
		} else {
			okRun, failRun = 0, failRun+1
			if failRun >= failure && last != 0 {
				last = 0
				if !report(false, err.Error()) {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func secondsOr(s int32, def int) time.Duration {
	if s <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(s) * time.Second
}

// runProbe performs one probe attempt from the node, as the kubelet does.
func (w *podWorker) runProbe(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *containerState, h *corev1.ProbeHandler, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		return w.execInContainer(ctx, c, h.Exec.Command)
	case h.HTTPGet != nil:
		return w.httpGet(ctx, pod, spec, h.HTTPGet)
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, spec)
		if err != nil {
			return err
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = w.podIP()
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.GRPC != nil:
		return fmt.Errorf("gRPC probes are not supported by the amime lab node runtime")
	}
	return fmt.Errorf("probe has no handler")
}

func (w *podWorker) podIP() string {
	if w.sandbox != nil && len(w.sandbox.IPs) > 0 {
		return w.sandbox.IPs[0]
	}
	return "127.0.0.1"
}

func (w *podWorker) httpGet(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, g *corev1.HTTPGetAction) error {
	port, err := resolvePort(g.Port, spec)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = w.podIP()
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if ref, err := url.Parse(path); err == nil {
		u = u.ResolveReference(ref)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.34")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 || r.URL.Hostname() != host {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

// resolvePort turns a numeric or named port into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container %s", p.StrVal, c.Name)
}

// execInContainer runs a command in the container's namespaces and environment.
func (w *podWorker) execInContainer(ctx context.Context, c *containerState, argv []string) error {
	cmd, err := containerCommand(ctx, c, argv)
	if err != nil {
		return err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("command %q failed: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// containerCommand prepares argv to run inside a running container: its network,
// mount and UTS namespaces, its environment and working directory.
func containerCommand(ctx context.Context, c *containerState, argv []string) (*exec.Cmd, error) {
	r, ok := c.containerPid()
	if !ok {
		return nil, fmt.Errorf("container %s is not running", c.name)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("empty command")
	}
	return nsenter.Command(ctx, r.Pid, argv), nil
}

// runHandler runs a lifecycle hook (exec, httpGet, sleep) with a deadline.
func (w *podWorker) runHandler(pod *corev1.Pod, spec *corev1.Container, c *containerState, h *corev1.LifecycleHandler, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	switch {
	case h.Exec != nil:
		return w.execInContainer(ctx, c, h.Exec.Command)
	case h.HTTPGet != nil:
		return w.httpGet(ctx, pod, spec, h.HTTPGet)
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-ctx.Done():
		}
		return nil
	case h.TCPSocket != nil:
		return fmt.Errorf("tcpSocket lifecycle hooks are deprecated and not run")
	}
	return nil
}
