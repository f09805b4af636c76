package fastpath

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"amime.dev/amime/internal/netns"
)

// ctEntry is what /proc/net/nf_conntrack of the fixture's namespace says of
// the flow from podA:40000 to podB:8080 over proto ("tcp", "udp"): seconds
// left, and whether it is assured.
func (fx *fixture) ctEntry(t *testing.T, proto string) (timeout int, assured bool) {
	t.Helper()
	var table []byte
	if err := netns.Do(netns.Path(fx.ns), func() (err error) {
		table, err = os.ReadFile("/proc/thread-self/net/nf_conntrack")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := "src=" + podA.String() + " dst=" + podB.String() + " sport=40000 dport=8080 "
	for line := range strings.Lines(string(table)) {
		f := strings.Fields(line)
		if len(f) < 5 || f[2] != proto || !strings.Contains(line, want) {
			continue
		}
		timeout, err := strconv.Atoi(f[4])
		if err != nil {
			t.Fatalf("conntrack entry %q: %v", line, err)
		}
		return timeout, strings.Contains(line, "[ASSURED]")
	}
	t.Fatalf("no %s entry for %s in\n%s", proto, want, table)
	return 0, false
}

// TestProgramRefreshesConntrack: re-judging a flow it takes, the program
// sets its entry's timeout as the stack's packets would have; a UDP flow
// becomes an assured stream once it has lived two seconds.
func TestProgramRefreshesConntrack(t *testing.T) {
	fx := newFixture(t, "cttimeout", map[netip.Addr]Endpoint{podA: epA, podB: epB}, podsNetns...)
	tcp, udp := fx.twoFlows(t)
	// Unset timeouts leave the entry alone: the stack gave it days.
	if ret, _ := fx.run(t, FromPod, tcp.bytes()); ret != tcActRedirect {
		t.Fatalf("tcp: returned %d, want %d", ret, tcActRedirect)
	}
	if s, _ := fx.ctEntry(t, "tcp"); s < 400000 {
		t.Errorf("tcp with no timeouts set: %d s left, want the stack's days", s)
	}
	timeouts := ConntrackTimeouts{TCPEstablished: 777 * time.Second, UDPStream: 555 * time.Second, UDP: 444 * time.Second}
	if err := fx.k.SetConntrackTimeouts(timeouts); err != nil {
		t.Fatal(err)
	}
	if ret, _ := fx.run(t, FromPod, udp.bytes()); ret != tcActRedirect {
		t.Fatalf("udp: returned %d, want %d", ret, tcActRedirect)
	}
	if s, assured := fx.ctEntry(t, "udp"); s < 440 || s > 444 || assured {
		t.Errorf("young udp flow: %d s left, assured %v; want 444 s, not assured", s, assured)
	}
	// Past both the verdict's lifetime and the two seconds.
	time.Sleep(2100 * time.Millisecond)
	for _, f := range []frame{tcp, udp} {
		if ret, _ := fx.run(t, FromPod, f.bytes()); ret != tcActRedirect {
			t.Fatalf("proto %d again: returned %d, want %d", f.proto, ret, tcActRedirect)
		}
	}
	if s, _ := fx.ctEntry(t, "tcp"); s < 770 || s > 777 {
		t.Errorf("established tcp: %d s left, want 777", s)
	}
	if s, assured := fx.ctEntry(t, "udp"); s < 550 || s > 555 || !assured {
		t.Errorf("udp stream: %d s left, assured %v; want 555 s, assured", s, assured)
	}
	got, err := fx.k.ConntrackTimeouts()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(timeouts, got); diff != "" {
		t.Errorf("timeouts read back (-want +got):\n%s", diff)
	}
}

func TestReadConntrackTimeouts(t *testing.T) {
	write := func(files map[string]string) string {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "netfilter"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range files {
			if err := os.WriteFile(filepath.Join(dir, "netfilter", name), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	all := map[string]string{
		"nf_conntrack_tcp_timeout_established": "432000\n",
		"nf_conntrack_udp_timeout_stream":      "120\n",
		"nf_conntrack_udp_timeout":             "30\n",
	}
	for _, tc := range []struct {
		name    string
		change  map[string]string
		want    ConntrackTimeouts
		wantErr string
	}{
		{name: "defaults", want: ConntrackTimeouts{TCPEstablished: 120 * time.Hour, UDPStream: 2 * time.Minute, UDP: 30 * time.Second}},
		{name: "missing", change: map[string]string{"nf_conntrack_udp_timeout": ""}, wantErr: "nf_conntrack_udp_timeout: no such file"},
		{name: "not a number", change: map[string]string{"nf_conntrack_udp_timeout_stream": "two minutes"}, wantErr: "nf_conntrack_udp_timeout_stream: strconv.ParseUint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := maps.Clone(all)
			for k, v := range tc.change {
				if v == "" {
					delete(files, k)
				} else {
					files[k] = v
				}
			}
			got, err := ReadConntrackTimeouts(write(files))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestConntrackTimeoutsMarshal: what bpf_ct_change_timeout takes is
// milliseconds in a u32; longer timeouts are cut to what fits.
func TestConntrackTimeoutsMarshal(t *testing.T) {
	in := ConntrackTimeouts{TCPEstablished: 60 * 24 * time.Hour, UDPStream: 120 * time.Second, UDP: 1500 * time.Millisecond}
	got := unmarshalConntrackTimeouts(in.marshal())
	want := ConntrackTimeouts{TCPEstablished: 4294967295 * time.Millisecond, UDPStream: 120 * time.Second, UDP: 1500 * time.Millisecond}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
