package fastpath

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() (map[string]uint64, error) {
		return map[string]uint64{"redirected": 7, "forwarded": 3, "nat": 2, "stack": 40, "encapsulated": 5, "decapsulated": 6}, nil
	}, func() Status {
		return Status{Endpoints: 4, Interfaces: 3, LastSync: time.Unix(1700000000, 0), LastError: "boom"}
	}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"amime_fastpath_packets_total{result=redirected}":   7,
		"amime_fastpath_packets_total{result=forwarded}":    3,
		"amime_fastpath_packets_total{result=nat}":          2,
		"amime_fastpath_packets_total{result=stack}":        40,
		"amime_fastpath_packets_total{result=encapsulated}": 5,
		"amime_fastpath_packets_total{result=decapsulated}": 6,
		"amime_fastpath_endpoints":                          4,
		"amime_fastpath_interfaces":                         3,
		"amime_fastpath_sync_failing":                       1,
		"amime_fastpath_last_sync_timestamp_seconds":        1700000000,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}
