package podmac

import (
	"net/netip"
	"testing"
)

func TestFor(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	for _, c := range []struct {
		addrs []netip.Addr
		want  string
	}{
		{addrs("10.244.1.7"), "0a:58:0a:f4:01:07"},
		{addrs("fd00:10:244:1::1:c"), "0a:58:00:01:00:0c"},
		{addrs("fd00:10:244:1::1:c", "10.244.1.7"), "0a:58:0a:f4:01:07"}, // IPv4 first, whatever the order
		{addrs("10.244.1.7", "fd00:10:244:1::1:c"), "0a:58:0a:f4:01:07"},
		{addrs("::ffff:10.244.1.8"), "0a:58:0a:f4:01:08"},
		{nil, ""},
	} {
		if got := For(c.addrs).String(); got != c.want {
			t.Errorf("For(%v) = %q, want %q", c.addrs, got, c.want)
		}
	}
}
