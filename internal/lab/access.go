package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/nsenter"
	"amime.dev/amime/internal/proc"
)

// ExecTarget names where `lab exec` and `lab logs` act: a pod container, a node,
// or the external namespace.
type ExecTarget struct {
	Namespace string
	Pod       string
	Container string
	Node      string
	External  bool
}

// containerDir finds the node-runtime directory of a pod's container.
func (l *Lab) containerDir(ctx context.Context, t ExecTarget) (string, *corev1.Pod, error) {
	cs, err := l.adminClient()
	if err != nil {
		return "", nil, err
	}
	pod, err := cs.CoreV1().Pods(t.Namespace).Get(ctx, t.Pod, metav1.GetOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("pod %s/%s: %w", t.Namespace, t.Pod, err)
	}
	if pod.Spec.NodeName == "" {
		return "", nil, fmt.Errorf("pod %s/%s is not scheduled yet", t.Namespace, t.Pod)
	}
	c := t.Container
	if c == "" {
		c = pod.Spec.Containers[0].Name
	}
	dir := l.path("nodes", pod.Spec.NodeName, "pods", string(pod.UID), "containers", c)
	if _, err := os.Stat(dir); err != nil {
		return "", nil, fmt.Errorf("container %q of pod %s/%s has not started on %s", c, t.Namespace, t.Pod, pod.Spec.NodeName)
	}
	return dir, pod, nil
}

// Exec runs argv in the target's namespaces with the terminal attached and
// returns the command's exit code.
func (l *Lab) Exec(ctx context.Context, t ExecTarget, argv []string) (int, error) {
	var args []string
	switch {
	case t.External:
		args = []string{"--net=" + netns.Path(l.ExternalNetns())}
	case t.Node != "":
		i := l.nodeIndex(t.Node)
		if i == 0 {
			return 0, fmt.Errorf("no node %q in lab %q (nodes: %s)", t.Node, l.Name, strings.Join(l.nodeNames(), ", "))
		}
		r, ok := l.nodeDaemon(i).running()
		if ok {
			// Join the node runtime's UTS (hostname) and mount (node-private
			// paths such as /etc/cni/net.d) namespaces, and the node's network
			// namespace by its pin: a process's /proc/PID/ns/net is its first
			// thread's, which is not the node's if that thread ever entered a
			// pod's namespace.
			args = []string{"--target", strconv.Itoa(r.Pid), "--net=" + netns.Path(l.NodeNetns(i)), "--uts", "--mount"}
		} else {
			args = []string{"--net=" + netns.Path(l.NodeNetns(i))}
		}
	default:
		dir, _, err := l.containerDir(ctx, t)
		if err != nil {
			return 0, err
		}
		r, err := proc.ReadFile(filepath.Join(dir, "container.pid"))
		if err != nil || !r.Alive() {
			return 0, fmt.Errorf("container of pod %s/%s is not running", t.Namespace, t.Pod)
		}
		cmd := nsenter.Command(ctx, r.Pid, argv)
		return runAttached(cmd)
	}
	return runAttached(exec.CommandContext(ctx, "nsenter", append(append(args, "--"), argv...)...))
}

// runAttached runs cmd on the caller's terminal and returns its exit code.
func runAttached(cmd *exec.Cmd) (int, error) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func (l *Lab) nodeIndex(name string) int {
	for i := 1; i <= l.Nodes; i++ {
		if l.NodeName(i) == name {
			return i
		}
	}
	return 0
}

func (l *Lab) nodeNames() []string {
	var out []string
	for i := 1; i <= l.Nodes; i++ {
		out = append(out, l.NodeName(i))
	}
	return out
}

// Logs prints a container's log from the node runtime's files.
func (l *Lab) Logs(ctx context.Context, w io.Writer, t ExecTarget, previous, follow bool) error {
	dir, _, err := l.containerDir(ctx, t)
	if err != nil {
		return err
	}
	var st struct {
		RestartCount int `json:"restartCount"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	n := st.RestartCount
	if previous {
		if n == 0 {
			return fmt.Errorf("previous terminated container of pod %s/%s not found", t.Namespace, t.Pod)
		}
		n--
	}
	f, err := os.Open(filepath.Join(dir, fmt.Sprintf("%d.log", n)))
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Status prints the lab's processes and nodes.
func (l *Lab) Status(ctx context.Context, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "lab %q (%d nodes, %s), state in %s\n\n", l.Name, l.Nodes, l.IPFamily, l.Dir())
	fmt.Fprintln(tw, "PROCESS\tPID\tSTATE")
	all := l.daemons()
	for i := 1; i <= l.Nodes; i++ {
		all = append(all, l.nodeDaemon(i))
	}
	for _, d := range all {
		r, ok := d.running()
		state := "running"
		if !ok {
			state = "NOT RUNNING (log: " + d.logPath + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", d.name, r.Pid, state)
	}
	tw.Flush()
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREADY\tINTERNAL-IP\tPOD-CIDRS")
	for _, n := range nodes.Items {
		ready := "False"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = string(c.Status)
			}
		}
		var ips []string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ips = append(ips, a.Address)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, ready, strings.Join(ips, ","), strings.Join(n.Spec.PodCIDRs, ","))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nexport KUBECONFIG=%s\n", l.KubeconfigPath())
	return nil
}

// CNICheck asks the node runtime of the pod's node to run CNI CHECK for it,
// authenticating with the apiserver's kubelet client certificate.
func (l *Lab) CNICheck(ctx context.Context, w io.Writer, namespace, pod string) error {
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	p, err := cs.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Status.HostIP == "" {
		return fmt.Errorf("pod %s/%s is not running on a node yet", namespace, pod)
	}
	cert, err := tls.LoadX509KeyPair(l.path("pki", "apiserver-kubelet-client.crt"), l.path("pki", "apiserver-kubelet-client.key"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(l.path("pki", "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}
	url := fmt.Sprintf("https://%s/amime/cni-check/%s/%s", net.JoinHostPort(p.Status.HostIP, "10250"), namespace, pod)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("node runtime of %s: %w", p.Spec.NodeName, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", strings.TrimSpace(string(body)))
	}
	_, err = w.Write(body)
	return err
}

// Kubectl is the kubectl the lab uses: the one on PATH, else the one built with
// the control plane.
func (l *Lab) Kubectl() (string, error) { return l.kubectl() }
