package dns

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

const (
	sliceByService = "service"
	podByIP        = "ip"
)

// informerSource reads Services and EndpointSlices from informer caches.
type informerSource struct {
	svcs   cache.Indexer
	slices cache.Indexer
}

func (s informerSource) Services() ([]*corev1.Service, error) {
	objs := s.svcs.List()
	out := make([]*corev1.Service, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Service))
	}
	return out, nil
}

func (s informerSource) Service(ns, name string) (*corev1.Service, error) {
	o, ok, err := s.svcs.GetByKey(ns + "/" + name)
	if err != nil || !ok {
		return nil, err
	}
	return o.(*corev1.Service), nil
}

func (s informerSource) EndpointSlices(ns, service string) ([]*discoveryv1.EndpointSlice, error) {
	objs, err := s.slices.ByIndex(sliceByService, ns+"/"+service)
	if err != nil {
		return nil, err
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*discoveryv1.EndpointSlice))
	}
	return out, nil
}

// informerPods indexes pods by address (host-network pods left out).
type informerPods struct{ idx cache.Indexer }

func (p informerPods) Namespace(ip netip.Addr) (string, bool) {
	objs, err := p.idx.ByIndex(podByIP, ip.String())
	if err != nil || len(objs) == 0 {
		return "", false
	}
	ns := objs[0].(*corev1.Pod).Namespace
	for _, o := range objs[1:] {
		if o.(*corev1.Pod).Namespace != ns {
			return "", false // a reused address mid-change: do not guess
		}
	}
	return ns, true
}

func (p informerPods) InNamespace(ns string, ip netip.Addr) bool {
	objs, err := p.idx.ByIndex(podByIP, ip.String())
	if err != nil {
		return false
	}
	for _, o := range objs {
		if o.(*corev1.Pod).Namespace == ns {
			return true
		}
	}
	return false
}

// setupInformers registers the informers the server needs on factory, with
// indexes and transforms that keep only what DNS reads (so 50,000 endpoints
// and every pod of a cluster cost little memory). withPods adds the Pod
// informer (verified pod records, autopath, the per-namespace query log).
func setupInformers(factory informers.SharedInformerFactory, z *Zone, withPods bool) (Source, PodIndex, []cache.InformerSynced, error) {
	svcInf := factory.Core().V1().Services().Informer()
	sliceInf := factory.Discovery().V1().EndpointSlices().Informer()
	if err := svcInf.SetTransform(stripService); err != nil {
		return nil, nil, nil, err
	}
	if err := sliceInf.SetTransform(stripSlice); err != nil {
		return nil, nil, nil, err
	}
	if err := sliceInf.AddIndexers(cache.Indexers{sliceByService: func(o any) ([]string, error) {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
			return nil, nil
		}
		return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
	}}); err != nil {
		return nil, nil, nil, err
	}
	onSvc := func(o any) {
		if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = t.Obj
		}
		if s, ok := o.(*corev1.Service); ok {
			z.MarkService(s.Namespace, s.Name)
		}
	}
	onSlice := func(o any) {
		if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = t.Obj
		}
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			z.MarkSlice(s)
		}
	}
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onSvc, UpdateFunc: func(_, o any) { onSvc(o) }, DeleteFunc: onSvc}); err != nil {
		return nil, nil, nil, err
	}
	if _, err := sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onSlice, UpdateFunc: func(_, o any) { onSlice(o) }, DeleteFunc: onSlice}); err != nil {
		return nil, nil, nil, err
	}
	synced := []cache.InformerSynced{svcInf.HasSynced, sliceInf.HasSynced}
	src := informerSource{svcs: svcInf.GetIndexer(), slices: sliceInf.GetIndexer()}
	if !withPods {
		return src, nil, synced, nil
	}
	podInf := factory.Core().V1().Pods().Informer()
	if err := podInf.SetTransform(stripPod); err != nil {
		return nil, nil, nil, err
	}
	if err := podInf.AddIndexers(cache.Indexers{podByIP: func(o any) ([]string, error) {
		p, ok := o.(*corev1.Pod)
		if !ok || p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return nil, nil
		}
		var out []string
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				out = append(out, a.Unmap().String())
			}
		}
		return out, nil
	}}); err != nil {
		return nil, nil, nil, err
	}
	return src, informerPods{idx: podInf.GetIndexer()}, append(synced, podInf.HasSynced), nil
}

// The transforms below keep only what the zone reads, in new objects (so the
// decoded originals are garbage at once): 10,000 Services and 50,000
// endpoints then fit in a few tens of MiB (bench/RESULTS.md).

// stripService keeps a Service's identity, type, addresses, ports and
// publishNotReadyAddresses.
func stripService(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
		Spec: corev1.ServiceSpec{
			Type: s.Spec.Type, ClusterIP: s.Spec.ClusterIP, ExternalName: s.Spec.ExternalName,
			PublishNotReadyAddresses: s.Spec.PublishNotReadyAddresses,
		},
	}
	if len(s.Spec.ClusterIPs) > 1 || (len(s.Spec.ClusterIPs) == 1 && s.Spec.ClusterIPs[0] != s.Spec.ClusterIP) {
		out.Spec.ClusterIPs = s.Spec.ClusterIPs
	}
	for _, p := range s.Spec.Ports {
		if p.Name != "" { // unnamed ports have no SRV record
			out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
		}
	}
	return out, nil
}

// stripSlice keeps an EndpointSlice's identity, Service label, family, named
// ports, and per endpoint its addresses, readiness and hostname.
func stripSlice(o any) (any, error) {
	s, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return o, nil
	}
	out := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
		AddressType: s.AddressType,
	}
	if svc := s.Labels[discoveryv1.LabelServiceName]; svc != "" {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	for _, p := range s.Ports {
		if p.Name != nil && *p.Name != "" && p.Port != nil {
			out.Ports = append(out.Ports, discoveryv1.EndpointPort{Name: p.Name, Port: p.Port, Protocol: p.Protocol})
		}
	}
	out.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		out.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Hostname: e.Hostname,
			Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
	}
	return out, nil
}

// stripPod keeps a pod's name, namespace, addresses, phase and host network.
func stripPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
		Spec:       corev1.PodSpec{HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIPs: p.Status.PodIPs},
	}, nil
}
