package policy

import (
	"fmt"
	"io"
	"strings"
)

// Explain writes why a packet is allowed or denied: per direction, which
// policies isolate the pod and which of their rules allow the packet.
func Explain(w io.Writer, s *Snapshot, pkt Packet) Decision {
	d := s.Verdict(pkt)
	verdict := "DENIED"
	if d.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(w, "%s: %s\n", pkt, verdict)
	explainDir(w, "egress", "from", d.Egress)
	explainDir(w, "ingress", "to", d.Ingress)
	if dec := d.Deciding(); len(dec) > 0 {
		fmt.Fprintf(w, "deciding policies: %s\n", strings.Join(dec, ", "))
	} else {
		fmt.Fprintln(w, "deciding policies: none (no policy isolates either end)")
	}
	return d
}

func explainDir(w io.Writer, name, side string, d Direction) {
	switch {
	case d.Pod == nil:
		fmt.Fprintf(w, "  %s: allowed: the address %s is not a pod of the cluster (nothing is enforced for it)\n", name, side)
	case !d.Isolated:
		fmt.Fprintf(w, "  %s of %s: allowed: no policy selects the pod for %s\n", name, d.Pod.Key(), name)
	case d.Allowed:
		fmt.Fprintf(w, "  %s of %s: allowed: isolated by %s; allowed by %s\n", name, d.Pod.Key(), strings.Join(d.Selecting, ", "), joinRefs(d.AllowedBy))
	default:
		fmt.Fprintf(w, "  %s of %s: denied: isolated by %s; no rule of them allows this peer and port\n", name, d.Pod.Key(), strings.Join(d.Selecting, ", "))
	}
}

func joinRefs(rs []RuleRef) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return strings.Join(out, ", ")
}
