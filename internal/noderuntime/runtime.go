// Package noderuntime is the lab's node agent: a small kubelet. It registers its
// Node, renews its Lease, runs the Pods scheduled to it as host processes in their
// own network, mount and UTS namespaces, calls the CNI plugin through libcni as
// containerd does, runs probes, reports Pod status, deletes gracefully, and serves
// the kubelet API that `kubectl logs` and `kubectl exec` use. It keeps its state on
// disk so that a restarted node runtime adopts its running pods.
package noderuntime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"amime.dev/amime/internal/netns"
)

// Options configure one node runtime.
type Options struct {
	NodeName      string
	NodeIPs       []netip.Addr
	Kubeconfig    string
	StateDir      string
	TLSCertFile   string
	TLSKeyFile    string
	ClientCAFile  string
	ClusterDNS    []string
	ClusterDomain string
	// PodNetnsPrefix names pod network namespaces (the lab removes them by prefix).
	PodNetnsPrefix string
	Zone           string
	CNIBinDirs     []string
	CNIConfDir     string
	// CreatedLog records the paths the node runtime and its pods had to create
	// on the machine (mount points), for the lab to remove them again.
	CreatedLog string
	// PrivateMounts: the node runtime was started in a mount namespace of its
	// own and binds NodePrivatePaths from its state directory (the lab).
	PrivateMounts bool
	// HostMountNS is the machine's mount namespace (an open nsfs file handed
	// over by `lab up`), where pod network namespaces are pinned so that the
	// machine (and `lab down`) sees them.
	HostMountNS *os.File
	// Bin is the amime binary (the amime image).
	Bin string
	// PodBin runs container shims and built-in workloads: amime-pod next to
	// Bin when present (a few MB per process), else Bin itself.
	PodBin      string
	MaxPods     int
	KubeletPort int
	Logger      *slog.Logger
}

// Defaults fills unset options.
func (o *Options) Defaults() {
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.CNIConfDir == "" {
		o.CNIConfDir = "/etc/cni/net.d"
	}
	if len(o.CNIBinDirs) == 0 {
		o.CNIBinDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}
	}
	if o.MaxPods == 0 {
		o.MaxPods = 110
	}
	if o.KubeletPort == 0 {
		o.KubeletPort = 10250
	}
	if o.CreatedLog == "" {
		o.CreatedLog = filepath.Join(o.StateDir, "created-paths")
	}
	if o.PodNetnsPrefix == "" {
		o.PodNetnsPrefix = "amime-pod-"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Bin == "" {
		o.Bin, _ = os.Executable()
	}
	if o.PodBin == "" {
		o.PodBin = o.Bin
		if p := filepath.Join(filepath.Dir(o.Bin), "amime-pod"); fileExists(p) {
			o.PodBin = p
		}
	}
}

// Validate reports every missing or inconsistent option.
func (o *Options) Validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required"))
	}
	if len(o.NodeIPs) == 0 {
		errs = append(errs, errors.New("--node-ip is required"))
	}
	if o.Kubeconfig == "" {
		errs = append(errs, errors.New("--kubeconfig is required"))
	}
	if o.StateDir == "" || !filepath.IsAbs(o.StateDir) {
		errs = append(errs, errors.New("--state-dir must be an absolute path"))
	}
	return errors.Join(errs...)
}

// Runtime is a running node runtime.
type Runtime struct {
	opts     Options
	log      *slog.Logger
	client   kubernetes.Interface
	recorder record.EventRecorder

	podLister     corelisters.PodLister
	serviceLister corelisters.ServiceLister

	mu      sync.Mutex
	workers map[types.UID]*podWorker

	cni *cniRuntime
}

// Run runs the node runtime until ctx ends. Pods keep running after it returns:
// they are adopted by the next run.
func Run(ctx context.Context, opts Options) error {
	opts.Defaults()
	if err := opts.Validate(); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "amime-node/" + opts.NodeName
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	r := &Runtime{opts: opts, log: opts.Logger.With("node", opts.NodeName), client: client, workers: map[types.UID]*podWorker{}}
	if err := r.prepareHost(); err != nil {
		return err
	}
	r.cni = newCNIRuntime(opts)

	bcast := record.NewBroadcaster(record.WithContext(ctx))
	bcast.StartRecordingToSink(&eventSink{client: client})
	defer bcast.Shutdown()
	r.recorder = bcast.NewRecorder(schemeForEvents(), corev1.EventSource{Component: "kubelet", Host: opts.NodeName})

	if err := r.registerNode(ctx); err != nil {
		return err
	}

	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
		}))
	podInformer := podFactory.Core().V1().Pods()
	r.podLister = podInformer.Lister()
	podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.podChanged(obj) },
		UpdateFunc: func(_, obj any) { r.podChanged(obj) },
		DeleteFunc: func(obj any) { r.podChanged(obj) },
	})
	factory := informers.NewSharedInformerFactory(client, 0)
	r.serviceLister = factory.Core().V1().Services().Lister()
	podFactory.Start(ctx.Done())
	factory.Start(ctx.Done())
	for typ, ok := range podFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v informer", typ)
		}
	}
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v informer", typ)
		}
	}
	// Adopt what a previous run left: pods still bound here continue, the rest are
	// torn down by their workers.
	if err := r.adopt(); err != nil {
		r.log.Error("adopt pods from a previous run", "err", err)
	}
	go r.collectGarbage(ctx)
	for _, p := range mustList(r.podLister) {
		r.podChanged(p)
	}
	go r.heartbeat(ctx)
	go func() {
		if err := r.serveKubeletAPI(ctx); err != nil {
			r.log.Error("kubelet API server stopped", "err", err)
		}
	}()
	<-ctx.Done()
	r.mu.Lock()
	for _, w := range r.workers {
		w.stop()
	}
	r.mu.Unlock()
	return nil
}

// prepareHost sets what the node namespace needs: its hostname (the node runtime
// runs in its own UTS namespace) and forwarding, which pod routing requires.
// The root namespace is never touched.
func (r *Runtime) prepareHost() error {
	if r.opts.PrivateMounts {
		if err := privatizeNodePaths(r.opts.StateDir, r.opts.CreatedLog); err != nil {
			return err
		}
	}
	if err := syscall.Sethostname([]byte(r.opts.NodeName)); err != nil {
		r.log.Warn("set hostname", "err", err)
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
	} {
		if err := netns.Sysctl("", kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, d := range []string{r.podsDir(), r.opts.CNIConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runtime) podsDir() string { return filepath.Join(r.opts.StateDir, "pods") }

func mustList(l corelisters.PodLister) []*corev1.Pod {
	pods, _ := l.List(labels.Everything())
	return pods
}

// podChanged hands a pod event to the pod's worker, creating it on first sight.
func (r *Runtime) podChanged(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.workers[pod.UID]
	if !ok {
		w = newPodWorker(r, pod.Namespace, pod.Name, pod.UID)
		r.workers[pod.UID] = w
		go w.run()
	}
	w.kick()
}

// workerDone forgets a worker whose pod is fully gone.
func (r *Runtime) workerDone(uid types.UID) {
	r.mu.Lock()
	delete(r.workers, uid)
	r.mu.Unlock()
}

func (r *Runtime) worker(uid types.UID) *podWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[uid]
}

// collectGarbage runs CNI GC once the network configuration exists, with the
// sandboxes found on disk as the valid attachments, as containerd does on start.
func (r *Runtime) collectGarbage(ctx context.Context) {
	for ctx.Err() == nil {
		if ok, _ := r.networkReady(); ok {
			if err := r.cni.gc(ctx); err != nil {
				r.log.Warn("CNI GC", "err", err)
			} else {
				r.log.Info("CNI GC done")
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// adopt starts workers for the pods found on disk; their pod networks count as
// live attachments for CNI GC.
func (r *Runtime) adopt() error {
	entries, err := os.ReadDir(r.podsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		var sb sandboxState
		if err := readJSON(filepath.Join(r.podsDir(), e.Name(), "sandbox.json"), &sb); err != nil {
			// A pod directory without a sandbox record never got a network; clean it.
			r.log.Warn("remove pod directory without sandbox record", "dir", e.Name(), "err", err)
			_ = os.RemoveAll(filepath.Join(r.podsDir(), e.Name()))
			continue
		}
		r.log.Info("adopting pod from a previous run", "pod", sb.Namespace+"/"+sb.Name, "uid", sb.UID)
		if sb.CNIDone {
			r.cni.setActive(sb.ID, true)
		}
		r.mu.Lock()
		if _, ok := r.workers[types.UID(sb.UID)]; !ok {
			w := newPodWorker(r, sb.Namespace, sb.Name, types.UID(sb.UID))
			r.workers[w.uid] = w
			go w.run()
			w.kick()
		}
		r.mu.Unlock()
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
