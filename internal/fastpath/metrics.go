package fastpath

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector reads the program's counters and the controller's state at each
// scrape: counting in the kernel costs the packets nothing more.
type collector struct {
	counters             func() (map[string]uint64, error)
	status               func() Status
	packets              *prometheus.Desc
	endpoints, ifaces    *prometheus.Desc
	syncErrors, lastSync *prometheus.Desc
}

// NewCollector exposes the fast path's packets (counters) and the
// controller's state (status) as Prometheus metrics.
func NewCollector(counters func() (map[string]uint64, error), status func() Status) prometheus.Collector {
	return &collector{counters: counters, status: status,
		packets: prometheus.NewDesc("amime_fastpath_packets_total",
			"Packets seen by the fast path on pods' veths and the devices other nodes' packets come in on, by result: redirected (delivered into a pod of this node, skipping the node's stack), forwarded (sent towards another node's pod, skipping it), encapsulated (sent to another node's pod through the overlay, encapsulated by the program instead of the VXLAN device), decapsulated (taken out of the overlay by the program and delivered into a pod of this node), nat (left to the stack: their connection's addresses are rewritten), stack (left to the stack: anything else).",
			[]string{"result"}, nil),
		endpoints:  prometheus.NewDesc("amime_fastpath_endpoints", "Pod addresses the fast path delivers to and accepts from.", nil, nil),
		ifaces:     prometheus.NewDesc("amime_fastpath_interfaces", "Interfaces a fast path program is attached to: pod veths, and the devices other nodes' packets come in on.", nil, nil),
		syncErrors: prometheus.NewDesc("amime_fastpath_sync_failing", "1 while the last fast path sync failed.", nil, nil),
		lastSync:   prometheus.NewDesc("amime_fastpath_last_sync_timestamp_seconds", "Time of the last fast path sync.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.endpoints, c.ifaces, c.syncErrors, c.lastSync} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if counts, err := c.counters(); err == nil {
		for _, name := range counterNames {
			ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(counts[name]), name)
		}
	} else {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
	}
	st := c.status()
	failing := 0.0
	if st.LastError != "" {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.endpoints, prometheus.GaugeValue, float64(st.Endpoints))
	ch <- prometheus.MustNewConstMetric(c.ifaces, prometheus.GaugeValue, float64(st.Interfaces))
	ch <- prometheus.MustNewConstMetric(c.syncErrors, prometheus.GaugeValue, failing)
	if !st.LastSync.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.lastSync, prometheus.GaugeValue, float64(st.LastSync.Unix()))
	}
}
