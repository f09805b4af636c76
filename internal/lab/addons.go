package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// applyAddons applies the manifests of deploy/ exactly as an operator of a real
// cluster would (kubectl apply), then waits until every DaemonSet and Deployment in
// kube-system is available. This way the lab proves the real-cluster path each
// time it starts.
func (l *Lab) applyAddons(ctx context.Context, cs *kubernetes.Clientset) error {
	if err := l.writeAgentConfig(ctx, cs); err != nil {
		return err
	}
	if err := l.ensureDNSService(ctx, cs); err != nil {
		return err
	}
	files, err := addonFiles(l.DeployDir)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no add-on manifests in %q: the lab needs deploy/ (the amime agent makes the nodes Ready)", l.DeployDir)
	}
	kubectl, err := l.kubectl()
	if err != nil {
		return err
	}
	for i, f := range files {
		if i > 0 {
			// The first manifest is the agent, which makes the nodes Ready. The
			// others wait for it: a Deployment scheduled while one node is Ready
			// would put all its replicas there (kube-dns's anti-affinity is only
			// preferred, and the scheduler does not move pods later).
			if err := waitFor(ctx, 180*time.Second, daemon{}, func() error { return l.nodesReady(ctx, cs) }); err != nil {
				return fmt.Errorf("nodes Ready before %s: %w", filepath.Base(f), err)
			}
		}
		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", l.KubeconfigPath(), "apply", "--server-side", "--force-conflicts", "-f", f)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl apply -f %s: %v: %s", f, err, strings.TrimSpace(string(out)))
		}
	}
	return waitFor(ctx, 180*time.Second, daemon{}, func() error {
		dss, err := cs.AppsV1().DaemonSets("kube-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ds := range dss.Items {
			if ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberAvailable < ds.Status.DesiredNumberScheduled {
				return fmt.Errorf("daemonset %s: %d of %d available", ds.Name, ds.Status.NumberAvailable, ds.Status.DesiredNumberScheduled)
			}
		}
		deps, err := cs.AppsV1().Deployments("kube-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, d := range deps.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.AvailableReplicas < want {
				return fmt.Errorf("deployment %s: %d of %d available", d.Name, d.Status.AvailableReplicas, want)
			}
		}
		return l.nodesReady(ctx, cs)
	})
}

// writeAgentConfig creates kube-system/amime-config, the amime agent's
// configuration, from the lab's settings. The agent reaches the apiserver
// directly: the in-cluster Service address needs the proxy the agent provides.
func (l *Lab) writeAgentConfig(ctx context.Context, cs *kubernetes.Clientset) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "amime-config", Namespace: "kube-system"},
		Data: map[string]string{
			"cluster-cidr":        joinPrefixes(l.PodCIDRs()),
			"service-cidr":        joinPrefixes(l.ServiceCIDRs()),
			"routing-mode":        l.RoutingMode,
			"apiserver-host":      l.APIServerAddr().String(),
			"apiserver-port":      strconv.Itoa(l.APIServerPort),
			"non-masquerade-cidr": "",
			"cluster-domain":      l.ClusterDomain,
		},
	}
	_, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("write kube-system/amime-config: %w", err)
	}
	return nil
}

// addonFiles lists the manifests to apply, in name order (the files are numbered).
func addonFiles(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// kubectl finds a kubectl: the one on PATH, else the one built with the control plane.
func (l *Lab) kubectl() (string, error) {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p, nil
	}
	p := filepath.Join(filepath.Dir(l.ControlPlaneBin), "kubectl")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("kubectl not found: run `make deps`")
}

// controlPlaneUp reports whether the lab's control-plane processes run and its
// apiserver answers.
func (l *Lab) controlPlaneUp(ctx context.Context) error {
	for _, d := range l.daemons() {
		if _, ok := d.running(); !ok {
			return fmt.Errorf("%s is not running", d.name)
		}
	}
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return fmt.Errorf("apiserver not ready: %w", err)
	}
	return nil
}
