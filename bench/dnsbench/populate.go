package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// populate: -kubeconfig K -namespace N -services S -endpoints E -headless-every H.
// Creates S Services s<i> (every H-th one headless, h<i>), each with one
// selector-less EndpointSlice of E ready endpoints; existing objects are kept.
func populate(args []string) error {
	fs := flag.NewFlagSet("populate", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	ns := fs.String("namespace", "dnsbench", "namespace")
	services := fs.Int("services", 10000, "Services")
	endpoints := fs.Int("endpoints", 5, "endpoints per Service")
	every := fs.Int("headless-every", 10, "every Nth Service is headless")
	workers := fs.Int("workers", 16, "concurrent creates")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after")
	_ = fs.Parse(args)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 2000, 2000
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: *ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	var done, failed atomic.Int64
	var firstErr atomic.Value
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := createOne(ctx, c, *ns, i, *endpoints, *every); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				if n := done.Add(1); n%2000 == 0 {
					fmt.Printf("populate: %d Services in %.0f s\n", n, time.Since(start).Seconds())
				}
			}
		}()
	}
	for i := 1; i <= *services; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	fmt.Printf("populate: %d Services (%d failed), %d endpoints, in %.0f s\n", done.Load(), failed.Load(), done.Load()*int64(*endpoints), time.Since(start).Seconds())
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("first error: %w", e.(error))
	}
	return nil
}

func createOne(ctx context.Context, c kubernetes.Interface, ns string, i, endpoints, every int) error {
	name := fmt.Sprintf("s%d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if every > 0 && i%every == 0 {
		name = fmt.Sprintf("h%d", i)
		svc.Name = name
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	portName, port, proto := "http", int32(8080), corev1.ProtocolTCP
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	ready := true
	for e := range endpoints {
		// 10.(128+e).x.y: unique per Service and endpoint up to 65,000 Services.
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+e, i/250, i%250+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}
