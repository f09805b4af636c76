package dns

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"amime.dev/amime/internal/syncloop"
)

// Source is what the zone is built from: the informer caches in production
// (informers.go), maps in tests. It never calls the apiserver.
type Source interface {
	// Services lists every Service.
	Services() ([]*corev1.Service, error)
	// Service returns one Service, or nil when there is none.
	Service(ns, name string) (*corev1.Service, error)
	// EndpointSlices returns the slices of one Service.
	EndpointSlices(ns, service string) ([]*discoveryv1.EndpointSlice, error)
}

// Zone keeps the current snapshot of the cluster's names. Informer events only
// mark Services dirty; Run rebuilds those (or everything, after Resync) at most
// once per interval and publishes the result atomically, so a query never waits
// for a sync and never sees half of one.
type Zone struct {
	src     Source
	log     *slog.Logger
	metrics *Metrics
	cur     atomic.Pointer[zoneData]

	mu    sync.Mutex
	dirty map[string]struct{} // "<service>.<ns>"
	full  bool
	kick  chan struct{}
	// synced is set after the first full build.
	synced atomic.Bool
}

// NewZone returns a Zone with an empty snapshot; it is not synced until the
// first Sync.
func NewZone(src Source, m *Metrics, log *slog.Logger) *Zone {
	z := &Zone{src: src, log: log, metrics: m, dirty: map[string]struct{}{}, full: true, kick: make(chan struct{}, 1)}
	z.cur.Store(emptyZone())
	return z
}

// MarkService marks one Service for rebuilding.
func (z *Zone) MarkService(ns, name string) {
	z.mu.Lock()
	z.dirty[strings.ToLower(name)+"."+strings.ToLower(ns)] = struct{}{}
	z.mu.Unlock()
	z.poke()
}

// MarkSlice marks the Service an EndpointSlice belongs to.
func (z *Zone) MarkSlice(s *discoveryv1.EndpointSlice) {
	if svc := s.Labels[discoveryv1.LabelServiceName]; svc != "" {
		z.MarkService(s.Namespace, svc)
	}
}

// Resync marks everything for rebuilding.
func (z *Zone) Resync() {
	z.mu.Lock()
	z.full = true
	z.mu.Unlock()
	z.poke()
}

func (z *Zone) poke() {
	syncloop.Signal(z.kick)
}

// Synced reports whether the zone has been built from synced caches once.
func (z *Zone) Synced() bool { return z.synced.Load() }

func (z *Zone) snapshot() *zoneData { return z.cur.Load() }

// Run syncs on every change, at most once per interval, until ctx ends.
func (z *Zone) Run(ctx context.Context, interval time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-z.kick:
		}
		if err := z.Sync(); err != nil {
			z.log.Error("zone sync", "err", err)
			z.Resync()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Sync rebuilds the dirty Services (or all of them) and publishes the result.
func (z *Zone) Sync() error {
	start := time.Now()
	z.mu.Lock()
	full, dirty := z.full, z.dirty
	z.full, z.dirty = false, map[string]struct{}{}
	z.mu.Unlock()
	var next *zoneData
	if full {
		svcs, err := z.src.Services()
		if err != nil {
			z.requeue(full, dirty)
			return fmt.Errorf("list services: %w", err)
		}
		changes := make(map[string]*serviceRecords, len(svcs))
		for _, svc := range svcs {
			rec, err := z.build(svc)
			if err != nil {
				z.requeue(full, dirty)
				return err
			}
			if rec != nil {
				changes[key(svc)] = rec
			}
		}
		next = emptyZone().with(changes)
	} else {
		if len(dirty) == 0 {
			return nil
		}
		changes := make(map[string]*serviceRecords, len(dirty))
		for k := range dirty {
			name, ns, _ := strings.Cut(k, ".")
			svc, err := z.src.Service(ns, name)
			if err != nil {
				z.requeue(full, dirty)
				return fmt.Errorf("service %s/%s: %w", ns, name, err)
			}
			var rec *serviceRecords
			if svc != nil {
				if rec, err = z.build(svc); err != nil {
					z.requeue(full, dirty)
					return err
				}
			}
			changes[k] = rec
		}
		next = z.cur.Load().with(changes)
	}
	next.serial = uint32(start.Unix())
	z.cur.Store(next)
	if full {
		z.synced.Store(true)
	}
	if z.metrics != nil {
		z.metrics.syncDuration.WithLabelValues(kindOf(full)).Observe(time.Since(start).Seconds())
		z.metrics.services.Set(float64(len(next.services)))
	}
	z.log.Debug("zone synced", "full", full, "changed", len(dirty), "services", len(next.services), "took", time.Since(start))
	return nil
}

func kindOf(full bool) string {
	if full {
		return "full"
	}
	return "partial"
}

func (z *Zone) requeue(full bool, dirty map[string]struct{}) {
	z.mu.Lock()
	z.full = z.full || full
	for k := range dirty {
		z.dirty[k] = struct{}{}
	}
	z.mu.Unlock()
}

func (z *Zone) build(svc *corev1.Service) (*serviceRecords, error) {
	var slices []*discoveryv1.EndpointSlice
	if isHeadless(svc) {
		var err error
		if slices, err = z.src.EndpointSlices(svc.Namespace, svc.Name); err != nil {
			return nil, fmt.Errorf("endpointslices of %s/%s: %w", svc.Namespace, svc.Name, err)
		}
	}
	return buildService(svc, slices), nil
}

func key(svc *corev1.Service) string {
	return strings.ToLower(svc.Name) + "." + strings.ToLower(svc.Namespace)
}
