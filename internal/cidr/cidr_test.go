package cidr

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestNormalize(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		in   []netip.Prefix
		want []netip.Prefix
	}{
		{"empty", nil, nil},
		{"masks host bits", []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("10.244.1.7"), 24)}, []netip.Prefix{p("10.244.1.0/24")}},
		{"drops covered", []netip.Prefix{p("10.244.0.0/16"), p("10.0.0.0/8"), p("10.244.3.0/24")}, []netip.Prefix{p("10.0.0.0/8")}},
		{"keeps disjoint sorted", []netip.Prefix{p("192.168.0.0/16"), p("10.0.0.0/8")}, []netip.Prefix{p("10.0.0.0/8"), p("192.168.0.0/16")}},
		{"duplicates", []netip.Prefix{p("fd00::/64"), p("fd00::/64")}, []netip.Prefix{p("fd00::/64")}},
		{"mixed families", []netip.Prefix{p("fd00::/64"), p("10.0.0.0/8")}, []netip.Prefix{p("10.0.0.0/8"), p("fd00::/64")}},
		{"invalid dropped", []netip.Prefix{{}, p("10.0.0.0/8")}, []netip.Prefix{p("10.0.0.0/8")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Normalize(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Normalize(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
