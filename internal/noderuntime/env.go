package noderuntime

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// containerEnv builds a container's environment as the kubelet does: Service
// variables first, then envFrom, then env (later entries win), with $(VAR)
// references in values expanded against what came before.
func (w *podWorker) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	services, _ := w.r.serviceLister.List(labels.Everything())
	vars := newEnvList()
	for _, e := range serviceEnv(pod, services) {
		vars.set(e.Name, e.Value)
	}
	for _, from := range c.EnvFrom {
		data, err := w.envFromSource(ctx, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			vars.set(from.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			var err error
			v, err = w.envValueFrom(ctx, pod, c, e.ValueFrom)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			if v == "\x00skip" {
				continue
			}
		} else {
			v = expandVars(v, vars.lookup)
		}
		vars.set(e.Name, v)
	}
	hostname, _ := podHostname(pod, w.r.opts.ClusterDomain)
	if pod.Spec.HostNetwork {
		hostname = w.r.opts.NodeName
	}
	// What a container runtime adds on its own.
	for _, kv := range [][2]string{{"PATH", defaultPath}, {"HOSTNAME", hostname}, {"HOME", "/root"}} {
		if _, ok := vars.lookup(kv[0]); !ok {
			vars.set(kv[0], kv[1])
		}
	}
	return vars.environ(), nil
}

// envList keeps insertion order, as the kubelet does.
type envList struct {
	order []string
	vals  map[string]string
}

func newEnvList() *envList { return &envList{vals: map[string]string{}} }

func (l *envList) set(k, v string) {
	if _, ok := l.vals[k]; !ok {
		l.order = append(l.order, k)
	}
	l.vals[k] = v
}

func (l *envList) lookup(k string) (string, bool) {
	v, ok := l.vals[k]
	return v, ok
}

func (l *envList) environ() []string {
	out := make([]string, 0, len(l.order))
	for _, k := range l.order {
		out = append(out, k+"="+l.vals[k])
	}
	return out
}

func envLookup(env []string) func(string) (string, bool) {
	m := map[string]string{}
	for _, kv := range env {
		if i := strings.IndexByte(kv, '='); i > 0 {
			m[kv[:i]] = kv[i+1:]
		}
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func (w *podWorker) envFromSource(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := w.r.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
				return nil, nil
			}
			return nil, fmt.Errorf("configmap %q: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		s, err := w.r.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
				return nil, nil
			}
			return nil, fmt.Errorf("secret %q: %w", from.SecretRef.Name, err)
		}
		out := map[string]string{}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func (w *podWorker) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		return w.fieldRef(pod, src.FieldRef.FieldPath)
	case src.ResourceFieldRef != nil:
		return w.resourceField(c, src.ResourceFieldRef), nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := w.r.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if v, ok := cm.Data[ref.Key]; ok {
				return v, nil
			}
			err = fmt.Errorf("key %q not found in configmap %q", ref.Key, ref.Name)
		}
		if ref.Optional != nil && *ref.Optional {
			return "\x00skip", nil
		}
		return "", err
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := w.r.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if v, ok := s.Data[ref.Key]; ok {
				return string(v), nil
			}
			err = fmt.Errorf("key %q not found in secret %q", ref.Key, ref.Name)
		}
		if ref.Optional != nil && *ref.Optional {
			return "\x00skip", nil
		}
		return "", err
	}
	return "", nil
}

// fieldRef resolves the downward API fields the kubelet supports.
func (w *podWorker) fieldRef(pod *corev1.Pod, path string) (string, error) {
	var podIPs []string
	if w.sandbox != nil {
		podIPs = w.sandbox.IPs
	}
	var hostIPs []string
	for _, ip := range w.r.opts.NodeIPs {
		hostIPs = append(hostIPs, ip.String())
	}
	return downwardField(pod, path, podIPs, hostIPs)
}

func downwardField(pod *corev1.Pod, path string, podIPs, hostIPs []string) (string, error) {
	first := func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[0]
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return first(podIPs), nil
	case "status.podIPs":
		return strings.Join(podIPs, ","), nil
	case "status.hostIP":
		return first(hostIPs), nil
	case "status.hostIPs":
		return strings.Join(hostIPs, ","), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	for _, p := range []struct {
		prefix string
		m      map[string]string
	}{{"metadata.labels['", pod.Labels}, {"metadata.annotations['", pod.Annotations}} {
		if strings.HasPrefix(path, p.prefix) && strings.HasSuffix(path, "']") {
			return p.m[path[len(p.prefix):len(path)-2]], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceField answers limits/requests; without a limit it reports the node's
// allocatable, as the kubelet does.
func (w *podWorker) resourceField(c *corev1.Container, ref *corev1.ResourceFieldSelector) string {
	var q resource.Quantity
	name := corev1.ResourceName(strings.TrimPrefix(strings.TrimPrefix(ref.Resource, "limits."), "requests."))
	if strings.HasPrefix(ref.Resource, "requests.") {
		q = c.Resources.Requests[name]
	} else {
		q = c.Resources.Limits[name]
	}
	if q.IsZero() {
		switch name {
		case corev1.ResourceCPU:
			q = *resource.NewQuantity(int64(numCPU()), resource.DecimalSI)
		case corev1.ResourceMemory:
			q = *resource.NewQuantity(memTotal(), resource.BinarySI)
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == corev1.ResourceCPU {
		v := (q.MilliValue() + divisor.MilliValue() - 1) / divisor.MilliValue()
		return fmt.Sprint(v)
	}
	return fmt.Sprint((q.Value() + divisor.Value() - 1) / divisor.Value())
}
