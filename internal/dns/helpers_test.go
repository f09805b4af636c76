package dns

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeSource is a Source over maps.
type fakeSource struct {
	svcs   map[string]*corev1.Service // ns/name
	slices map[string][]*discoveryv1.EndpointSlice
}

func newFakeSource() *fakeSource {
	return &fakeSource{svcs: map[string]*corev1.Service{}, slices: map[string][]*discoveryv1.EndpointSlice{}}
}

func (f *fakeSource) Services() ([]*corev1.Service, error) {
	var out []*corev1.Service
	for _, s := range f.svcs {
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeSource) Service(ns, name string) (*corev1.Service, error) {
	return f.svcs[ns+"/"+name], nil
}

func (f *fakeSource) EndpointSlices(ns, svc string) ([]*discoveryv1.EndpointSlice, error) {
	return append([]*discoveryv1.EndpointSlice(nil), f.slices[ns+"/"+svc]...), nil
}

func (f *fakeSource) add(s *corev1.Service) { f.svcs[s.Namespace+"/"+s.Name] = s }

func (f *fakeSource) addSlice(s *discoveryv1.EndpointSlice) {
	k := s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]
	f.slices[k] = append(f.slices[k], s)
}

// fakePods is a PodIndex over a map of address → namespace.
type fakePods map[netip.Addr]string

func (p fakePods) Namespace(ip netip.Addr) (string, bool) { ns, ok := p[ip]; return ns, ok }
func (p fakePods) InNamespace(ns string, ip netip.Addr) bool {
	got, ok := p[ip]
	return ok && got == ns
}

// Builders with tweak functions.
type svcTweak func(*corev1.Service)

func svc(ns, name string, tweaks ...svcTweak) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
	for _, t := range tweaks {
		t(s)
	}
	return s
}

func clusterIP(ips ...string) svcTweak {
	return func(s *corev1.Service) { s.Spec.ClusterIP = ips[0]; s.Spec.ClusterIPs = ips }
}

func headless() svcTweak {
	return func(s *corev1.Service) { s.Spec.ClusterIP = "None"; s.Spec.ClusterIPs = []string{"None"} }
}

func port(name string, proto corev1.Protocol, n int32) svcTweak {
	return func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: name, Protocol: proto, Port: n})
	}
}

func externalName(target string) svcTweak {
	return func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName; s.Spec.ExternalName = target }
}

func publishNotReady() svcTweak {
	return func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }
}

type ep struct {
	ip, host string
	ready    *bool
}

func bp(b bool) *bool { return &b }

func slice(ns, svcName, name string, family discoveryv1.AddressType, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: family,
	}
	for n, p := range ports {
		n, p := n, p
		proto := corev1.ProtocolTCP
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &n, Port: &p, Protocol: &proto})
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.host != "" {
			h := e.host
			x.Hostname = &h
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestHandler builds a synced zone over src and a handler with cfg.
func newTestHandler(t *testing.T, src Source, pods PodIndex, cfg Config, opts ...HandlerOption) *Handler {
	t.Helper()
	z := NewZone(src, nil, quietLog())
	if err := z.Sync(); err != nil {
		t.Fatal(err)
	}
	return NewHandler(cfg, z, pods, nil, quietLog(), opts...)
}

// query asks h for (name, type) from client over UDP with no EDNS.
func query(h *Handler, name string, qtype uint16, client string) *mdns.Msg {
	req := new(mdns.Msg)
	req.SetQuestion(name, qtype)
	var c netip.Addr
	if client != "" {
		c = netip.MustParseAddr(client)
	}
	resp, _ := h.Answer(context.Background(), req, c, false)
	return resp
}

// rrs renders records without the owner's TTL variations, sorted, so that
// tables can compare sets (headless answers rotate).
func rrs(in []mdns.RR) []string {
	var out []string
	for _, rr := range in {
		if rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	sort.Strings(out)
	return out
}
