package policy

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// LogRecord is one entry of the verdict log: the kernel's verdict for a
// packet (from the NFLOG prefix) and the policies that decided it (computed
// by Verdict on the state the rules were programmed from).
type LogRecord struct {
	Time      time.Time `json:"time"`
	Node      string    `json:"node"`
	Verdict   string    `json:"verdict"`   // allow or deny
	Direction string    `json:"direction"` // ingress or egress
	Pod       string    `json:"pod,omitempty"`
	Src       string    `json:"src"`
	Dst       string    `json:"dst"`
	Protocol  string    `json:"protocol"`
	SrcPort   uint16    `json:"srcPort,omitempty"`
	DstPort   uint16    `json:"dstPort,omitempty"`
	Policies  []string  `json:"policies,omitempty"`
}

func (r LogRecord) String() string {
	pols := strings.Join(r.Policies, ",")
	if pols == "" {
		pols = "-"
	}
	return fmt.Sprintf("%s %s %s %s pod=%s %s %s:%d -> %s:%d policies=%s", r.Time.Format(time.RFC3339Nano), r.Node,
		strings.ToUpper(r.Verdict), r.Direction, r.Pod, r.Protocol, r.Src, r.SrcPort, r.Dst, r.DstPort, pols)
}

// parsePacket reads the 5-tuple from an IPv4 or IPv6 packet (the headers the
// kernel copies into the log message).
func parsePacket(b []byte) (src, dst netip.Addr, proto string, sport, dport uint16, err error) {
	if len(b) < 1 {
		return src, dst, "", 0, 0, fmt.Errorf("empty packet")
	}
	var l4 byte
	var rest []byte
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < 20 || len(b) < ihl {
			return src, dst, "", 0, 0, fmt.Errorf("short IPv4 header")
		}
		src, _ = netip.AddrFromSlice(b[12:16])
		dst, _ = netip.AddrFromSlice(b[16:20])
		l4, rest = b[9], b[ihl:]
	case 6:
		if len(b) < 40 {
			return src, dst, "", 0, 0, fmt.Errorf("short IPv6 header")
		}
		src, _ = netip.AddrFromSlice(b[8:24])
		dst, _ = netip.AddrFromSlice(b[24:40])
		l4, rest = b[6], b[40:]
	default:
		return src, dst, "", 0, 0, fmt.Errorf("not an IP packet")
	}
	switch l4 {
	case 6:
		proto = "tcp"
	case 17:
		proto = "udp"
	case 132:
		proto = "sctp"
	case 1, 58:
		return src, dst, "icmp", 0, 0, nil
	default:
		return src, dst, fmt.Sprint(l4), 0, 0, nil
	}
	if len(rest) >= 4 {
		sport, dport = binary.BigEndian.Uint16(rest[0:2]), binary.BigEndian.Uint16(rest[2:4])
	}
	return src, dst, proto, sport, dport, nil
}

// Record judges a logged packet: prefix is the NFLOG prefix of the rule that
// logged it, payload the packet.
func Record(s *Snapshot, node, prefix string, payload []byte, now time.Time) (LogRecord, error) {
	verdict, dir, ok := parsePrefix(prefix)
	if !ok {
		return LogRecord{}, fmt.Errorf("prefix %q is not amime's", prefix)
	}
	src, dst, proto, sport, dport, err := parsePacket(payload)
	if err != nil {
		return LogRecord{}, err
	}
	r := LogRecord{Time: now, Node: node, Verdict: verdict, Direction: dir, Src: src.String(), Dst: dst.String(), Protocol: proto, SrcPort: sport, DstPort: dport}
	if s == nil {
		return r, nil
	}
	d := s.Verdict(Packet{Src: src, Dst: dst, Protocol: corev1.Protocol(strings.ToUpper(proto)), Port: dport})
	side := d.Ingress
	if dir == "egress" {
		side = d.Egress
	}
	if side.Pod != nil {
		r.Pod = side.Pod.Key()
	}
	if verdict == "allow" {
		for _, ref := range side.AllowedBy {
			r.Policies = appendUnique(r.Policies, ref.Policy)
		}
	} else {
		r.Policies = side.Selecting
	}
	return r, nil
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func parsePrefix(p string) (verdict, dir string, ok bool) {
	p = strings.TrimSpace(p)
	for _, v := range []struct{ pfx, verdict string }{{pfxAllow, "allow"}, {pfxDeny, "deny"}} {
		if d, found := strings.CutPrefix(p, v.pfx); found && (d == "ingress" || d == "egress") {
			return v.verdict, d, true
		}
	}
	return "", "", false
}

// LogRing keeps the last records for /policy/log.
type LogRing struct {
	mu   sync.Mutex
	max  int
	recs []LogRecord
}

// NewLogRing keeps up to max records.
func NewLogRing(max int) *LogRing { return &LogRing{max: max} }

// Add appends a record, dropping the oldest beyond the limit.
func (l *LogRing) Add(r LogRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	if len(l.recs) > l.max {
		l.recs = append([]LogRecord(nil), l.recs[len(l.recs)-l.max:]...)
	}
}

// Records returns a copy of the records, oldest first.
func (l *LogRing) Records() []LogRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogRecord{}, l.recs...)
}

// ServeHTTP answers the records as a JSON array.
func (l *LogRing) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(l.Records())
}
