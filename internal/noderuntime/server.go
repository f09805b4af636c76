package noderuntime

import (
	"bufio"
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	streaming "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// serveKubeletAPI serves the parts of the kubelet API that the apiserver proxies
// for kubectl: /containerLogs, /exec and /run, plus /healthz and /pods. It listens
// with TLS on the node address and accepts only clients with a certificate from
// the cluster CA (the apiserver's kubelet client certificate).
func (r *Runtime) serveKubeletAPI(ctx context.Context) error {
	if r.opts.TLSCertFile == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.opts.TLSCertFile, r.opts.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("kubelet serving certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(r.opts.ClientCAFile); err == nil {
		pool.AppendCertsFromPEM(ca)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /pods", r.handlePods)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", r.handleLogs)
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", r.handleExec)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", r.handleExec)
	mux.HandleFunc("POST /run/{ns}/{pod}/{container}", r.handleRun)
	mux.HandleFunc("POST /amime/cni-check/{ns}/{pod}", r.handleCNICheck)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
			// SPDY upgrades (exec) need HTTP/1.1.
			NextProtos: []string{"http/1.1"},
		},
	}
	var lns []net.Listener
	for _, ip := range r.opts.NodeIPs {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(r.opts.KubeletPort)))
		if err != nil {
			return fmt.Errorf("kubelet API listen: %w", err)
		}
		lns = append(lns, ln)
	}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func(ln net.Listener) { errc <- srv.ServeTLS(ln, "", "") }(ln)
	}
	err = <-errc
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (r *Runtime) handlePods(w http.ResponseWriter, _ *http.Request) {
	pods, _ := r.podLister.List(labels.Everything())
	list := corev1.PodList{}
	list.Kind, list.APIVersion = "PodList", "v1"
	for _, p := range pods {
		list.Items = append(list.Items, *p)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(list)
}

// findContainer locates a running pod's container by namespace, pod name and container name.
func (r *Runtime) findContainer(ns, podName, container string) (*podWorker, *containerState, error) {
	pod, err := r.podLister.Pods(ns).Get(podName)
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s not found on node %s", ns, podName, r.opts.NodeName)
	}
	w := r.worker(pod.UID)
	if w == nil {
		return nil, nil, fmt.Errorf("pod %s/%s is not running on node %s", ns, podName, r.opts.NodeName)
	}
	if container == "" && len(pod.Spec.Containers) > 0 {
		container = pod.Spec.Containers[0].Name
	}
	c, ok := w.lookup(container)
	if !ok {
		return nil, nil, fmt.Errorf("container %q not found in pod %s/%s", container, ns, podName)
	}
	return w, c, nil
}

func (r *Runtime) handleLogs(w http.ResponseWriter, req *http.Request) {
	_, c, err := r.findContainer(req.PathValue("ns"), req.PathValue("pod"), req.PathValue("container"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	q := req.URL.Query()
	restart := c.RestartCount
	if q.Get("previous") == "true" {
		if restart == 0 {
			http.Error(w, fmt.Sprintf("previous terminated container %q not found", c.name), http.StatusBadRequest)
			return
		}
		restart--
	}
	tail := -1
	if s := q.Get("tailLines"); s != "" {
		tail, _ = strconv.Atoi(s)
	}
	limit := int64(-1)
	if s := q.Get("limitBytes"); s != "" {
		limit, _ = strconv.ParseInt(s, 10, 64)
	}
	w.Header().Set("Content-Type", "text/plain")
	if err := streamLog(req.Context(), w, c.logPath(restart), tail, limit, q.Get("follow") == "true", func() bool { return c.running && c.RestartCount == restart }); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// streamLog writes a container log: the last tail lines (all when negative), at
// most limit bytes, and with follow, new lines until the container stops.
func streamLog(ctx context.Context, w io.Writer, path string, tail int, limit int64, follow bool, running func() bool) error {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	defer f.Close()
	if tail >= 0 {
		if err := seekTail(f, tail); err != nil {
			return err
		}
	}
	var out io.Writer = w
	if limit >= 0 {
		out = &limitWriter{w: w, n: limit}
	}
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	br := bufio.NewReader(f)
	for {
		_, err := io.Copy(out, br)
		if err != nil {
			return nil // the client left or the limit was reached
		}
		flush()
		if !follow || !running() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if n == 0 {
		_, err := f.Seek(size, io.SeekStart)
		return err
	}
	buf := make([]byte, 4096)
	lines := 0
	pos := size
	for pos > 0 {
		chunk := int64(len(buf))
		if pos < chunk {
			chunk = pos
		}
		pos -= chunk
		if _, err := f.ReadAt(buf[:chunk], pos); err != nil && err != io.EOF {
			return err
		}
		for i := chunk - 1; i >= 0; i-- {
			if buf[i] == '\n' && pos+i != size-1 {
				lines++
				if lines == n {
					_, err := f.Seek(pos+i+1, io.SeekStart)
					return err
				}
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

func (r *Runtime) handleExec(w http.ResponseWriter, req *http.Request) {
	ns, podName, container := req.PathValue("ns"), req.PathValue("pod"), req.PathValue("container")
	if _, _, err := r.findContainer(ns, podName, container); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := streaming.NewOptions(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := req.URL.Query()["command"]
	streaming.ServeExec(w, req, &executor{r: r, ns: ns}, podName, types.UID(req.PathValue("uid")), container, cmd, opts,
		4*time.Hour, 30*time.Second, remotecommandconsts.SupportedStreamingProtocols)
}

func (r *Runtime) handleRun(w http.ResponseWriter, req *http.Request) {
	_, c, err := r.findContainer(req.PathValue("ns"), req.PathValue("pod"), req.PathValue("container"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	cmd, err := containerCommand(req.Context(), c, strings.Fields(req.FormValue("cmd")))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := cmd.CombinedOutput()
	w.Write(out)
}

// handleCNICheck runs CNI CHECK for a pod on demand (`amime lab cni-check`): the
// plugins verify that the pod's interfaces, addresses and routes are as they set
// them up.
func (r *Runtime) handleCNICheck(w http.ResponseWriter, req *http.Request) {
	pod, err := r.podLister.Pods(req.PathValue("ns")).Get(req.PathValue("pod"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	pw := r.worker(pod.UID)
	if pw == nil {
		http.Error(w, "pod has no sandbox on this node", http.StatusNotFound)
		return
	}
	sb, err := pw.sandboxSnapshot()
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	if err := r.cni.check(req.Context(), sb); err != nil {
		http.Error(w, "CNI CHECK failed: "+err.Error(), http.StatusConflict)
		return
	}
	fmt.Fprintf(w, "CNI CHECK ok: pod %s/%s, network namespace %s, IPs %s\n", pod.Namespace, pod.Name, sb.Netns, strings.Join(sb.IPs, ", "))
}

// executor runs kubectl exec sessions in pod containers.
type executor struct {
	r  *Runtime
	ns string
}

func (e *executor) ExecInContainer(ctx context.Context, podName string, _ types.UID, container string, argv []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	_, c, err := e.r.findContainer(e.ns, podName, container)
	if err != nil {
		return err
	}
	cmd, err := containerCommand(ctx, c, argv)
	if err != nil {
		return err
	}
	if tty {
		f, err := pty.Start(cmd)
		if err != nil {
			return err
		}
		defer f.Close()
		go func() {
			for size := range resize {
				_ = pty.Setsize(f, &pty.Winsize{Rows: size.Height, Cols: size.Width})
			}
		}()
		if in != nil {
			go func() { _, _ = io.Copy(f, in) }()
		}
		if out != nil {
			_, _ = io.Copy(out, f)
		}
		return exitErr(cmd.Wait())
	}
	if in != nil {
		cmd.Stdin = in
	}
	cmd.Stdout, cmd.Stderr = out, errw
	return exitErr(cmd.Run())
}

// exitErr converts a process exit status into the error type the streaming
// library reports as the command's exit code.
func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return utilexec.CodeExitError{Err: err, Code: code}
	}
	return err
}
