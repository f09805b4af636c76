package noderuntime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"amime.dev/amime/internal/atomicfile"
)

// Volume contents are refreshed this often, as the kubelet's sync period does for
// ConfigMaps, Secrets and projected tokens.
const volumeRefresh = 30 * time.Second

func (w *podWorker) filesDir() string { return filepath.Join(w.dir, "files") }
func (w *podWorker) volumeDir(name string) string {
	return filepath.Join(w.dir, "volumes", name)
}

// writePodFiles writes resolv.conf, hosts and hostname, and fills the volumes.
func (w *podWorker) writePodFiles(ctx context.Context, pod *corev1.Pod) error {
	if time.Since(w.filesAt) < volumeRefresh {
		return nil
	}
	nodeConf, _ := os.ReadFile("/etc/resolv.conf")
	dns := podDNS(pod, w.r.opts.ClusterDNS, w.r.opts.ClusterDomain, parseResolvConf(string(nodeConf)))
	hostname, _ := podHostname(pod, w.r.opts.ClusterDomain)
	files := map[string]string{
		"resolv.conf": dns.String(),
		"hostname":    hostname + "\n",
		"hosts":       podHostsFile(pod, w.sandbox.IPs, w.r.opts.ClusterDomain),
	}
	for name, content := range files {
		if err := atomicfile.Write(filepath.Join(w.filesDir(), name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, v := range pod.Spec.Volumes {
		if err := w.fillVolume(ctx, pod, v); err != nil {
			w.r.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed for volume %q: %v", v.Name, err)
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	w.filesAt = time.Now()
	return nil
}

func (w *podWorker) fillVolume(ctx context.Context, pod *corev1.Pod, v corev1.Volume) error {
	dir := w.volumeDir(v.Name)
	switch {
	case v.EmptyDir != nil:
		return os.MkdirAll(dir, 0o777)
	case v.HostPath != nil:
		src := filepath.Clean(v.HostPath.Path)
		t := corev1.HostPathUnset
		if v.HostPath.Type != nil {
			t = *v.HostPath.Type
		}
		switch t {
		case corev1.HostPathDirectoryOrCreate:
			return os.MkdirAll(src, 0o755)
		case corev1.HostPathFileOrCreate:
			if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(src, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		case corev1.HostPathDirectory, corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
			if _, err := os.Stat(src); err != nil {
				return fmt.Errorf("hostPath %s (%s): %w", v.HostPath.Path, t, err)
			}
		}
		return nil
	case v.ConfigMap != nil:
		data, err := w.configMapData(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Optional)
		if err != nil {
			return err
		}
		return writeVolumeFiles(dir, selectItems(data, v.ConfigMap.Items))
	case v.Secret != nil:
		data, err := w.secretData(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Optional)
		if err != nil {
			return err
		}
		return writeVolumeFiles(dir, selectItems(data, v.Secret.Items))
	case v.DownwardAPI != nil:
		files, err := w.downwardFiles(pod, v.DownwardAPI.Items)
		if err != nil {
			return err
		}
		return writeVolumeFiles(dir, files)
	case v.Projected != nil:
		files := map[string][]byte{}
		for _, src := range v.Projected.Sources {
			var part map[string][]byte
			var err error
			switch {
			case src.ServiceAccountToken != nil:
				part, err = w.tokenFile(ctx, pod, src.ServiceAccountToken)
			case src.ConfigMap != nil:
				var data map[string][]byte
				data, err = w.configMapData(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Optional)
				part = selectItems(data, src.ConfigMap.Items)
			case src.Secret != nil:
				var data map[string][]byte
				data, err = w.secretData(ctx, pod.Namespace, src.Secret.Name, src.Secret.Optional)
				part = selectItems(data, src.Secret.Items)
			case src.DownwardAPI != nil:
				part, err = w.downwardFiles(pod, src.DownwardAPI.Items)
			default:
				err = fmt.Errorf("projected source not supported by the amime lab")
			}
			if err != nil {
				return err
			}
			for k, b := range part {
				files[k] = b
			}
		}
		return writeVolumeFiles(dir, files)
	}
	return fmt.Errorf("volume type not supported by the amime lab (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)")
}

func (w *podWorker) configMapData(ctx context.Context, ns, name string, optional *bool) (map[string][]byte, error) {
	cm, err := w.r.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && optional != nil && *optional {
			return nil, nil
		}
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	out := map[string][]byte{}
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		out[k] = v
	}
	return out, nil
}

func (w *podWorker) secretData(ctx context.Context, ns, name string, optional *bool) (map[string][]byte, error) {
	s, err := w.r.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && optional != nil && *optional {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return s.Data, nil
}

func selectItems(data map[string][]byte, items []corev1.KeyToPath) map[string][]byte {
	if len(items) == 0 {
		return data
	}
	out := map[string][]byte{}
	for _, it := range items {
		if b, ok := data[it.Key]; ok {
			out[it.Path] = b
		}
	}
	return out
}

func (w *podWorker) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, it := range items {
		if it.FieldRef == nil {
			continue
		}
		v, err := w.fieldRef(pod, it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		out[it.Path] = []byte(v)
	}
	return out, nil
}

// tokenFile requests a bound ServiceAccount token for the pod (TokenRequest), and
// renews it when 80% of its lifetime has passed, as the kubelet does.
func (w *podWorker) tokenFile(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (map[string][]byte, error) {
	key := p.Path + "|" + p.Audience
	tokPath := filepath.Join(w.dir, "tokens", strings.ReplaceAll(key, "/", "_"))
	if exp, ok := w.tokenExpiry[key]; ok && time.Now().Before(exp) {
		if b, err := os.ReadFile(tokPath); err == nil {
			return map[string][]byte{p.Path: b}, nil
		}
	}
	exp := int64(3600)
	if p.ExpirationSeconds != nil {
		exp = *p.ExpirationSeconds
	}
	var aud []string
	if p.Audience != "" {
		aud = []string{p.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := w.r.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences: aud, ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request token for service account %s: %w", sa, err)
	}
	lifetime := time.Until(tr.Status.ExpirationTimestamp.Time)
	w.tokenExpiry[key] = time.Now().Add(lifetime * 8 / 10)
	if err := atomicfile.Write(tokPath, []byte(tr.Status.Token), 0o600); err != nil {
		return nil, err
	}
	return map[string][]byte{p.Path: []byte(tr.Status.Token)}, nil
}

// writeVolumeFiles makes dir hold exactly files (paths relative to dir).
func writeVolumeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for rel, b := range files {
		if strings.Contains(rel, "..") {
			return fmt.Errorf("path %q must not contain '..'", rel)
		}
		if err := atomicfile.Write(filepath.Join(dir, rel), b, 0o644); err != nil {
			return err
		}
	}
	// Remove keys that disappeared (compared cleaned: a key "./a" is file "a").
	keep := map[string]bool{}
	for rel := range files {
		keep[filepath.Clean(rel)] = true
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if !keep[rel] {
			return os.Remove(p)
		}
		return nil
	})
}

// containerMounts lists the bind mounts of a container: the kubelet-managed files
// and the volume mounts.
func (w *podWorker) containerMounts(pod *corev1.Pod, c *corev1.Container) ([]shimMount, error) {
	mounts := []shimMount{{Source: filepath.Join(w.filesDir(), "resolv.conf"), Target: "/etc/resolv.conf", File: true}}
	if !pod.Spec.HostNetwork {
		mounts = append(mounts,
			shimMount{Source: filepath.Join(w.filesDir(), "hosts"), Target: "/etc/hosts", File: true},
			shimMount{Source: filepath.Join(w.filesDir(), "hostname"), Target: "/etc/hostname", File: true})
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %q: no such volume", m.Name)
		}
		src := w.volumeDir(m.Name)
		if v.HostPath != nil {
			src = filepath.Clean(v.HostPath.Path)
		}
		if m.SubPath != "" {
			if strings.Contains(m.SubPath, "..") || filepath.IsAbs(m.SubPath) {
				return nil, fmt.Errorf("volume mount %q: invalid subPath %q", m.Name, m.SubPath)
			}
			src = filepath.Join(src, m.SubPath)
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("volume mount %q: %w", m.Name, err)
		}
		mounts = append(mounts, shimMount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly, File: !st.IsDir()})
	}
	return mounts, nil
}

func sortStrings(s []string) { sort.Strings(s) }

func numCPU() int { return runtime.NumCPU() }
