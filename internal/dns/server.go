package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Options of `amime dns` that cannot change without a restart.
type Options struct {
	Kubeconfig string // empty: in-cluster
	// Listen is the DNS address (UDP and TCP).
	Listen string
	// HTTPListen serves /healthz, /ready and /metrics.
	HTTPListen string
	// ConfigMap is "<namespace>/<name>" of the configuration; empty: Base only.
	ConfigMap string
	// Base is the configuration before the ConfigMap's keys apply.
	Base Config
	// WatchPods enables the Pod informer (verified pod records, autopath, the
	// per-namespace query log); without it those features see no pods.
	WatchPods bool
	// Lameduck keeps answering this long after the stop signal, while the
	// Service proxies stop sending new queries to this replica.
	Lameduck time.Duration
	// SyncInterval is the least time between two zone syncs.
	SyncInterval time.Duration
	Logger       *slog.Logger
}

// Run serves DNS until ctx ends. It answers SERVFAIL until the informers have
// synced, and reports ready only then.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = 50 * time.Millisecond
	}
	if err := o.Base.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := o.Logger
	if os.Getenv("GOGC") == "" {
		// A cached answer allocates nothing, so the collector runs mostly
		// while informers deliver changes; a lower target keeps the resident
		// size near the live heap (10,000 Services and 50,000 endpoints: about
		// 40 MiB live, bench/RESULTS.md) for little CPU. GOGC overrides it.
		debug.SetGCPercent(25)
	}
	var restCfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		restCfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		restCfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	restCfg.UserAgent = "amime-dns"
	// Protobuf decodes with less garbage than JSON: the first list of 50,000
	// endpoints sets the process's peak memory.
	restCfg.ContentType = "application/vnd.kubernetes.protobuf"
	restCfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := NewMetrics(reg)

	factory := informers.NewSharedInformerFactory(client, 0)
	// The zone's source is the caches of the informers whose handlers mark it.
	z := NewZone(nil, m, log.With("component", "zone"))
	src, pods, synced, err := setupInformers(factory, z, o.WatchPods)
	if err != nil {
		return fmt.Errorf("informers: %w", err)
	}
	z.src = src
	h := NewHandler(o.Base, z, pods, m, log.With("component", "handler"))

	var cmFactory informers.SharedInformerFactory
	if o.ConfigMap != "" {
		ns, name, ok := strings.Cut(o.ConfigMap, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("--configmap %q: want <namespace>/<name>", o.ConfigMap)
		}
		cmFactory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.FieldSelector = "metadata.name=" + name }))
		cmInf := cmFactory.Core().V1().ConfigMaps().Informer()
		reload := func(obj any) {
			cm, ok := obj.(*corev1.ConfigMap)
			if !ok {
				return
			}
			cfg, err := ParseConfig(o.Base, cm.Data)
			if err != nil {
				m.reloads.WithLabelValues("error").Inc()
				log.Error("configuration rejected, keeping the previous one", "configmap", o.ConfigMap, "resourceVersion", cm.ResourceVersion, "err", err)
				return
			}
			h.SetConfig(cfg)
			m.reloads.WithLabelValues("ok").Inc()
			log.Info("configuration loaded", "configmap", o.ConfigMap, "resourceVersion", cm.ResourceVersion,
				"zone", cfg.Zone, "upstreams", cfg.Upstreams, "autopath", cfg.Autopath, "pods", cfg.Pods)
		}
		if _, err := cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    reload,
			UpdateFunc: func(_, o any) { reload(o) },
			DeleteFunc: func(any) {
				h.SetConfig(o.Base)
				log.Warn("configuration deleted, back to the defaults", "configmap", o.ConfigMap)
			},
		}); err != nil {
			return err
		}
		synced = append(synced, cmInf.HasSynced)
	}

	servers, err := listen(o.Listen, runtime.GOMAXPROCS(0), h)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Addr: o.HTTPListen, Handler: httpMux(reg, z), ReadHeaderTimeout: 5 * time.Second}
	httpLn, err := net.Listen("tcp", o.HTTPListen)
	if err != nil {
		shutdown(servers)
		return fmt.Errorf("listen %s: %w", o.HTTPListen, err)
	}
	go func() {
		if err := httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health and metrics server", "err", err)
		}
	}()
	errc := make(chan error, 2)
	go func() { errc <- servers.udp.Serve() }()
	go func() { errc <- servers.tcp.ActivateAndServe() }()
	log.Info("dns serving (SERVFAIL until the caches have synced)", "listen", o.Listen, "http", o.HTTPListen, "configmap", o.ConfigMap)

	factory.Start(ctx.Done())
	if cmFactory != nil {
		cmFactory.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		shutdown(servers)
		_ = httpSrv.Close()
		return ctx.Err()
	}
	if err := z.Sync(); err != nil {
		log.Error("first zone sync", "err", err)
		z.Resync()
	}
	go z.Run(ctx, o.SyncInterval)
	// The first lists (every Service and EndpointSlice, decoded at once) are
	// the largest the heap ever gets; give those pages back now rather than
	// keep them as the process's resident size (the answer path allocates
	// nothing, so the heap does not grow back to it).
	debug.FreeOSMemory()
	log.Info("caches synced: answering", "services", len(z.snapshot().services))

	select {
	case <-ctx.Done():
	case err := <-errc:
		shutdown(servers)
		_ = httpSrv.Close()
		return fmt.Errorf("dns server: %w", err)
	}
	// Lame duck: keep answering while the endpoint is withdrawn everywhere.
	log.Info("stopping", "lameduck", o.Lameduck)
	time.Sleep(o.Lameduck)
	shutdown(servers)
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	return nil
}

// servers are the UDP and TCP servers of one address.
type servers struct {
	udp *udpServer
	tcp *mdns.Server
}

// listen opens UDP (udpSockets sockets) and TCP on addr, so that a port in
// use fails at start. TCP gets the port UDP was given when addr's port is 0.
func listen(addr string, udpSockets int, h *Handler) (*servers, error) {
	u, err := listenUDP(addr, udpSockets, h)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", u.LocalAddr().String())
	if err != nil {
		u.Shutdown()
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return &servers{
		udp: u,
		tcp: &mdns.Server{Listener: ln, Handler: h, MsgAcceptFunc: acceptRequest, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
	}, nil
}

func shutdown(s *servers) {
	s.udp.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = s.tcp.ShutdownContext(ctx)
	cancel()
}

func httpMux(reg *prometheus.Registry, z *Zone) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !z.Synced() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
