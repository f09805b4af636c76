package fastpath

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ConntrackTimeouts are the timeouts the programs give the conntrack entries
// of the connections they take, as the stack's packets would have: the
// node's net.netfilter sysctls of the same names. Zero leaves an entry's
// timeout as it is.
type ConntrackTimeouts struct {
	TCPEstablished time.Duration // nf_conntrack_tcp_timeout_established
	UDPStream      time.Duration // nf_conntrack_udp_timeout_stream: a replied flow older than two seconds
	UDP            time.Duration // nf_conntrack_udp_timeout: a younger one
}

// ReadConntrackTimeouts reads them from procSysNet (/proc/sys/net of the
// node's network namespace).
func ReadConntrackTimeouts(procSysNet string) (ConntrackTimeouts, error) {
	var t ConntrackTimeouts
	for name, d := range map[string]*time.Duration{
		"nf_conntrack_tcp_timeout_established": &t.TCPEstablished,
		"nf_conntrack_udp_timeout_stream":      &t.UDPStream,
		"nf_conntrack_udp_timeout":             &t.UDP,
	} {
		path := filepath.Join(procSysNet, "netfilter", name)
		b, err := os.ReadFile(path)
		if err != nil {
			return ConntrackTimeouts{}, fmt.Errorf("conntrack timeouts: %w", err)
		}
		s, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return ConntrackTimeouts{}, fmt.Errorf("conntrack timeouts: %s: %w", path, err)
		}
		*d = time.Duration(s) * time.Second
	}
	return t, nil
}

// milliseconds is d as bpf_ct_change_timeout takes it, at most what a u32
// holds (49 days).
func milliseconds(d time.Duration) uint32 {
	return uint32(min(d.Milliseconds(), math.MaxUint32))
}

func (t ConntrackTimeouts) marshal() []byte {
	b := make([]byte, timeoutsSize)
	binary.NativeEndian.PutUint32(b[timeoutTCPEstablished:], milliseconds(t.TCPEstablished))
	binary.NativeEndian.PutUint32(b[timeoutUDPStream:], milliseconds(t.UDPStream))
	binary.NativeEndian.PutUint32(b[timeoutUDP:], milliseconds(t.UDP))
	return b
}

func unmarshalConntrackTimeouts(b []byte) ConntrackTimeouts {
	ms := func(off int) time.Duration {
		return time.Duration(binary.NativeEndian.Uint32(b[off:])) * time.Millisecond
	}
	return ConntrackTimeouts{TCPEstablished: ms(timeoutTCPEstablished), UDPStream: ms(timeoutUDPStream), UDP: ms(timeoutUDP)}
}

// ConntrackTimeouts returns the timeouts the programs give.
func (k *Kernel) ConntrackTimeouts() (ConntrackTimeouts, error) {
	b, err := k.value(mapTimeouts, "conntrack timeouts")
	if err != nil {
		return ConntrackTimeouts{}, err
	}
	return unmarshalConntrackTimeouts(b), nil
}

// SetConntrackTimeouts sets them.
func (k *Kernel) SetConntrackTimeouts(t ConntrackTimeouts) error {
	return k.setValue(mapTimeouts, "conntrack timeouts", t.marshal())
}
